"""Inputs CloudStack refuses, refused here with CloudStack's message, and Python misuse refused with a clear one.

Every refusal leaves the database as it was.
"""

from __future__ import annotations

import pytest

from snapshotfsm import ApiError, Engine, InvalidValue
from snapshotfsm.store.records import Account, ImageStore, Snapshot, StoragePool, Volume, Zone

GIB = 1 << 30
LONG = "x" * 10_000


@pytest.fixture
def engine() -> Engine:
    engine = Engine.open(":memory:")
    zone = engine.add_zone("zone1")
    engine.add_image_store(zone, "secondary1")
    return engine


def _rows(engine: Engine) -> dict[str, int]:
    return {cls.table: engine.store.count(cls) for cls in (Zone, ImageStore, StoragePool, Account, Volume, Snapshot)}


class TestAttachToAnotherAccountsVm:
    def test_refused_with_cloudstacks_same_owner_message(self, engine: Engine) -> None:
        """``checkAccess(caller, null, true, volume, vm)``: 531, the VM and the volume named, nothing written."""
        zone = engine.store.first(Zone)
        assert zone is not None
        cluster = engine.add_cluster(zone, "c", hypervisor="KVM")
        pool = engine.add_pool(zone, "p", cluster=cluster)
        alice, bob = engine.add_account("alice"), engine.add_account("bob")
        vm = engine.add_vm(bob, zone, "bobs-vm", host=engine.add_host(cluster, "h"))
        before = _rows(engine)
        with pytest.raises(ApiError) as refused:
            engine.add_volume(alice, pool, "data", size=GIB, vm=vm)
        assert refused.value.code == 531
        assert str(refused.value).startswith(
            '531 PermissionDeniedException: Entity VM instance {"id":1,"state":"Running","instanceName":"bobs-vm"'
        )
        assert 'and entity Volume {"id":0,"name":"data"' in refused.value.text
        assert refused.value.text.endswith("belong to different accounts")
        assert _rows(engine) == before

    def test_the_owners_vm_is_fine(self, engine: Engine) -> None:
        zone = engine.store.first(Zone)
        assert zone is not None
        cluster = engine.add_cluster(zone, "c", hypervisor="KVM")
        alice = engine.add_account("alice")
        vm = engine.add_vm(alice, zone, "vm", host=engine.add_host(cluster, "h"))
        volume = engine.add_volume(alice, engine.add_pool(zone, "p", cluster=cluster), "data", size=GIB, vm=vm)
        assert volume.instance_id == vm.id


class TestUniqueNames:
    def test_a_second_zone_of_one_name(self, engine: Engine) -> None:
        """``createZone``'s message, 431; the first zone stays the only one."""
        with pytest.raises(ApiError) as refused:
            engine.add_zone("zone1")
        assert str(refused.value) == (
            "431 InvalidParameterValueException: A zone with that name already exists. "
            "Please specify a unique zone name."
        )
        assert engine.store.count(Zone) == 1

    def test_a_second_image_store_of_one_name(self, engine: Engine) -> None:
        zone = engine.add_zone("zone2")
        with pytest.raises(ApiError) as refused:
            engine.add_image_store(zone, "secondary1")
        assert (
            refused.value.text == "The image store with name secondary1 already exists, try creating with another name"
        )
        assert engine.store.count(ImageStore) == 1

    def test_a_second_account_of_one_name(self, engine: Engine) -> None:
        engine.add_account("alice")
        with pytest.raises(ApiError) as refused:
            engine.add_account("alice")
        assert str(refused.value) == "431 InvalidParameterValueException: The specified account: alice already exists"


class TestNameLengths:
    """``ParamProcessWorker``: a string parameter longer than its ``length()`` (255) is refused before the command."""

    @pytest.mark.parametrize(
        ("call", "param"),
        [
            ("zone", "zoneName"),
            ("image_store", "name"),
            ("cluster", "clusterName"),
            ("pool", "storagePoolName"),
            ("account", "accountName"),
            ("volume", "volumeName"),
        ],
    )
    def test_inventory_names(self, engine: Engine, call: str, param: str) -> None:
        zone = engine.store.first(Zone)
        assert zone is not None
        cluster = engine.add_cluster(zone, "c", hypervisor="KVM")
        pool = engine.add_pool(zone, "p", cluster=cluster)
        alice = engine.add_account("alice")
        calls = {
            "zone": lambda: engine.add_zone(LONG),
            "image_store": lambda: engine.add_image_store(zone, LONG),
            "cluster": lambda: engine.add_cluster(zone, LONG),
            "pool": lambda: engine.add_pool(zone, LONG, cluster=cluster),
            "account": lambda: engine.add_account(LONG),
            "volume": lambda: engine.add_volume(alice, pool, LONG, size=GIB),
        }
        before = _rows(engine)
        with pytest.raises(ApiError) as refused:
            calls[call]()
        assert str(refused.value) == (
            f"431 InvalidParameterValueException: Value greater than max allowed length 255 for param: {param}"
        )
        assert _rows(engine) == before

    def test_255_characters_are_accepted(self, engine: Engine) -> None:
        assert engine.add_zone("z" * 255).name == "z" * 255

    def test_a_10000_character_snapshot_name(self, engine: Engine) -> None:
        """createSnapshot's ``name`` (field ``snapshotName``): refused before the create phase, no row, no event."""
        zone = engine.store.first(Zone)
        assert zone is not None
        cluster = engine.add_cluster(zone, "c", hypervisor="KVM")
        alice = engine.add_account("alice")
        volume = engine.add_volume(alice, engine.add_pool(zone, "p", cluster=cluster), "v", size=GIB)
        log = len(engine.history())
        with pytest.raises(ApiError) as refused:
            engine.create_snapshot(volume.id, name=LONG)
        assert refused.value.text == "Value greater than max allowed length 255 for param: snapshotName"
        assert engine.store.count(Snapshot) == 0
        assert len(engine.history()) == log


class TestPythonMisuse:
    def test_a_size_given_as_text(self, engine: Engine) -> None:
        zone = engine.store.first(Zone)
        assert zone is not None
        cluster = engine.add_cluster(zone, "c", hypervisor="KVM")
        alice = engine.add_account("alice")
        pool = engine.add_pool(zone, "p", cluster=cluster)
        with pytest.raises(InvalidValue) as refused:
            engine.add_volume(alice, pool, "v", size="10")  # type: ignore[arg-type]
        assert str(refused.value) == (
            "volume size must be an integer number of bytes (e.g. 10 << 30 for 10 GiB) (got '10' that is a str)"
        )
        assert engine.store.count(Volume) == 0

    def test_run_until_given_as_text(self, engine: Engine) -> None:
        with pytest.raises(InvalidValue) as refused:
            engine.run(until_ms="10")  # type: ignore[arg-type]
        assert str(refused.value) == "run until_ms must be an integer number of milliseconds (got '10' that is a str)"
        assert engine.clock.now_ms == 0
