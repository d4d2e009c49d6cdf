"""The take-snapshot workflow's successful runs through the API, against spec §4-§6 and the walkthroughs of §13.

Each test takes one snapshot in a fresh :class:`cloud.Cloud` (shared through :func:`scenario` when the test only
reads it) and checks what a user would look at afterwards: the jobs, the snapshot, its store refs and their install
paths, the details, the entity machines' transition log in order (the ``take_snapshot`` workflow's own rows are left
out), the account's resource counts and the usage events.
In a fresh cloud the ids are small and fixed: the API job is 1, its work job 2, the snapshot 1, the volume 1, the
primary ref 1 and the image ref 2.
"""

from __future__ import annotations

import functools
import json

import pytest
from cloud import GIB, PHYSICAL, SIZE, Cloud, Taken, new_engine
from lifecycle_cloud import stored

from snapshotfsm.engine import Engine
from snapshotfsm.store.records import ImageStore, SnapshotZoneRef, StoragePool, VmInstance, Workflow
from snapshotfsm.testing.invariants import share

ON_PRIMARY = ("SNAPSHOT.ON_PRIMARY", SIZE, SIZE)
"""Usage when the snapshot is on primary: the snapshot's size (the volume's), twice (spec §5.6 step 7)."""
CREATE = ("SNAPSHOT.CREATE", PHYSICAL, SIZE)
"""Usage after post-processing: the Ready ref's physical size and the volume's size (spec §5.4 step 11)."""
BACKED_UP_ON_SECONDARY = {"snapshot": 1, "primary_storage": 0, "secondary_storage": PHYSICAL}
"""Allocation adds the volume's size to secondary_storage; step 12 takes back size minus physical size."""
KEPT_ON_PRIMARY = {"snapshot": 1, "primary_storage": PHYSICAL, "secondary_storage": 0}

JOBS_QUEUED = [
    ("snapshot", 1, "", "create", "Allocated"),  # create phase (§5.1)
    ("async_job", 1, "", "create", "IN_PROGRESS"),  # the API job (§4.2)
    ("async_job", 2, "", "create", "IN_PROGRESS"),  # the VmWorkTakeVolumeSnapshot work job (§4.3)
    ("vm_work_job", 2, "", "create", "Queued"),
    ("vm_work_job", 2, "Queued", "Dispatch", "Running"),  # the VM's single slot
]
ON_PRIMARY_LOG = [
    ("volume", 1, "Ready", "SnapshotRequested", "Snapshotting"),  # §5.5 step 3, under the snapshot's lock
    ("snapshot_store_ref", 1, "", "create", "Allocated"),  # §5.6 step 1: primaryStore.create
    ("snapshot", 1, "Allocated", "CreateRequested", "Creating"),  # §5.6 step 2
    ("snapshot_store_ref", 1, "Allocated", "CreateOnlyRequested", "Creating"),  # §5.6 step 3
    ("snapshot_store_ref", 1, "Creating", "OperationSucceeded", "Ready"),  # §5.6 step 5: the driver's callback
    ("snapshot", 1, "Creating", "OperationSucceeded", "CreatedOnPrimary"),
]
VOLUME_READY = [("volume", 1, "Snapshotting", "OperationSucceeded", "Ready")]  # §5.5 step 5 (the finally block)
JOBS_DONE = [
    ("vm_work_job", 2, "Running", "Complete", "Done"),
    ("async_job", 2, "IN_PROGRESS", "CompleteSucceeded", "SUCCEEDED"),  # the work job first ...
    ("async_job", 1, "IN_PROGRESS", "CompleteSucceeded", "SUCCEEDED"),  # ... then the API job (§13.1 step 9)
]
SYNC_BACKUP_LOG = [
    ("snapshot", 1, "CreatedOnPrimary", "BackupToSecondary", "BackingUp"),  # §5.8 step 1
    ("snapshot_store_ref", 2, "", "create", "Allocated"),  # §5.8 step 2: the image ref
    ("snapshot_store_ref", 2, "Allocated", "CreateOnlyRequested", "Creating"),
    ("snapshot_store_ref", 2, "Creating", "OperationSucceeded", "Ready"),  # §5.8 step 4: the copy's callback
    ("snapshot", 1, "BackingUp", "OperationSucceeded", "BackedUp"),
]
NOT_BACKED_UP_LOG = [("snapshot", 1, "CreatedOnPrimary", "OperationNotPerformed", "BackedUp")]  # markBackedUp
MARKED_BACKED_UP_LOG = [  # StorageSystemSnapshotStrategy.markAsBackedUp (§5.7)
    ("snapshot", 1, "CreatedOnPrimary", "BackupToSecondary", "BackingUp"),
    ("snapshot", 1, "BackingUp", "OperationSucceeded", "BackedUp"),
]


@functools.cache
def scenario(shape: str) -> tuple[Cloud, Taken]:
    """One snapshot of a new attached volume of ``shape`` in a fresh cloud, run until idle.

    Cached: each shape runs once per session, and the tests only read what it left; its world is judged by the
    invariants in :func:`test_each_scenario_is_judged`, on a world of its own.
    """
    cloud, taken = _scenario(shape)
    share(cloud.engine)
    return cloud, taken


def _scenario(shape: str) -> tuple[Cloud, Taken]:
    cloud = Cloud()
    return cloud, cloud.take(cloud.volume(shape))


def strategy_of(cloud: Cloud, job_id: int) -> str:
    """The TAKE strategy the factory chose for the job, as the workflow row recorded it."""
    flow = cloud.engine.store.first(Workflow, "job_id = ? AND machine = 'take_snapshot'", (job_id,))
    assert flow is not None
    return str(json.loads(flow.context)["strategy"])


def primary_path(cloud: Cloud, shape: str, taken: object) -> str:
    """Where the default driver puts a snapshot on a file-based pool: ``<pool uuid>/<volume path>/snapshots/<uuid>``."""
    pool = cloud.pools[shape]
    return f"{pool.uuid}/{taken.volume.path}/snapshots/{taken.snapshot.uuid}"  # type: ignore[attr-defined]


def image_path(taken: object) -> str:
    """``snapshots/<account id>/<volume id>/<uuid>`` on the image store (spec §3)."""
    s = taken.snapshot  # type: ignore[attr-defined]
    return f"snapshots/{s.account_id}/{s.volume_id}/{s.uuid}"


class TestXenServerSyncBackup:
    """Spec §13.1: an attached VHD volume on a XenServer NFS pool, backed up to secondary synchronously."""

    def test_the_log_follows_the_walkthrough(self) -> None:
        """Snapshot, volume, refs and jobs move in §13.1's order (§5.6's order within step 4)."""
        _cloud, taken = scenario("xen-nfs")
        assert taken.log() == JOBS_QUEUED + ON_PRIMARY_LOG + VOLUME_READY + SYNC_BACKUP_LOG + JOBS_DONE

    def test_jobs_snapshot_and_refs(self) -> None:
        """Both jobs succeed; the snapshot is BackedUp with a Ready ref on primary and one on the image store."""
        cloud, taken = scenario("xen-nfs")
        assert (taken.status, taken.job.job_result_code) == ("SUCCEEDED", 0)
        assert taken.response == {
            "id": taken.snapshot.uuid,
            "name": "vm1_vol2_20260101000000",  # <VM host name>_<volume name>_<creation time, GMT>
            "state": "BackedUp",
            "snapshottype": "MANUAL",
        }
        assert taken.work_state == ("SUCCEEDED", "Done")
        assert taken.work_result == "java.lang.Long:1"
        snapshot = taken.snapshot
        assert (snapshot.status, snapshot.removed, snapshot.hypervisor_type) == ("BackedUp", None, "XenServer")
        assert (snapshot.location_type, snapshot.size, snapshot.version) == (None, SIZE, "2.2")
        assert taken.volume.state == "Ready"
        assert taken.refs() == [
            ("Primary", "Ready", primary_path(cloud, "xen-nfs", taken)),
            ("Image", "Ready", image_path(taken)),
        ]
        assert taken.ref("Primary").physical_size == PHYSICAL
        assert taken.ref("Image").physical_size == PHYSICAL
        assert strategy_of(cloud, taken.job_id) == "DefaultSnapshotStrategy"
        assert cloud.engine.store.count(SnapshotZoneRef, "snapshot_id = 1 AND zone_id = ?", (cloud.zone.id,)) == 1

    def test_ms_id_is_recorded_on_primary_and_removed_after_the_backup(self) -> None:
        """MS_ID is added when the snapshot reaches primary (§5.5 step 6) and postSnapshotCreation removes it."""
        cloud = Cloud()
        taken = cloud.create(cloud.volume("xen-nfs"))
        cloud.engine.run(until_ms=10_000)  # on primary at 2 s, the copy answers at 32 s
        assert taken.snapshot.status == "BackingUp"
        assert taken.details() == {"MS_ID": "1"}
        cloud.engine.run()
        assert taken.details() == {}

    def test_counters_and_usage(self) -> None:
        """One snapshot counted; secondary_storage holds the physical size after step 12's correction."""
        cloud, taken = scenario("xen-nfs")
        assert cloud.counts() == BACKED_UP_ON_SECONDARY
        assert taken.usage() == [ON_PRIMARY, CREATE]
        assert taken.failures() == []

    def test_the_snapshot_is_on_both_stores(self) -> None:
        """The simulated storage holds the snapshot on the pool and its backup on the image store."""
        cloud, taken = scenario("xen-nfs")
        assert [o.path for o in taken.objects("primary")] == [primary_path(cloud, "xen-nfs", taken)]
        assert [(o.path, o.physical_size) for o in taken.objects("image")] == [(image_path(taken), PHYSICAL)]

    def test_the_backup_runs_with_the_volume_ready(self) -> None:
        """The volume is Snapshotting only while the driver takes the snapshot (spec §2.4), not during the copy."""
        _cloud, taken = scenario("xen-nfs")
        rows = taken.rows()
        ready_at = next(r.at_ms for r in rows if r.machine == "volume" and r.dest == "Ready")
        backed_up_at = next(r.at_ms for r in rows if r.machine == "snapshot" and r.dest == "BackedUp")
        assert (ready_at, backed_up_at) == (2_000, 32_000)


class TestKvmFileBased:
    """Spec §13.2: KVM on a file-based pool with backup on: the host writes the snapshot straight to secondary."""

    @pytest.mark.parametrize("shape", ["kvm-nfs", "kvm-smp"])
    def test_the_log_follows_the_walkthrough(self, shape: str) -> None:
        """The image ref is pre-created Allocated, set Ready directly, the snapshot marked BackedUp, the primary
        ref row deleted."""
        _cloud, taken = scenario(shape)
        assert taken.log() == [
            *JOBS_QUEUED,
            *ON_PRIMARY_LOG,
            ("snapshot_store_ref", 2, "", "create", "Allocated"),  # updateSnapSizeAndCheckpointPathIfPossible
            *VOLUME_READY,
            ("snapshot_store_ref", 2, "Allocated", "postSnapshotDirectlyToSecondary", "Ready"),
            *NOT_BACKED_UP_LOG,
            ("snapshot_store_ref", 1, "Ready", "postSnapshotDirectlyToSecondary (removeBySnapshotStore)", ""),
            *JOBS_DONE,
        ]
        assert ("direct", "postSnapshotDirectlyToSecondary", "Ready") in taken.kinds("snapshot_store_ref")

    def test_only_the_image_ref_is_left(self) -> None:
        """The snapshot is BackedUp with a single Ready image ref; MS_ID is gone."""
        _cloud, taken = scenario("kvm-nfs")
        assert taken.result[:2] == ("SUCCEEDED", 0)
        assert taken.snapshot.status == "BackedUp"
        assert taken.refs() == [("Image", "Ready", image_path(taken))]
        assert taken.ref("Image").physical_size == PHYSICAL
        assert taken.details() == {}

    def test_the_object_is_written_on_the_image_store(self) -> None:
        """Nothing is written on the pool: the object lives on the image store only."""
        cloud, taken = scenario("kvm-nfs")
        assert taken.objects("primary") == []
        [obj] = taken.objects("image")
        image = cloud.engine.store.first(ImageStore)
        assert image is not None
        assert (obj.store_id, obj.path, obj.physical_size) == (image.id, image_path(taken), PHYSICAL)

    def test_counters_and_usage(self) -> None:
        """The role of the usage lookup is Image: secondary_storage holds the physical size."""
        cloud, taken = scenario("kvm-nfs")
        assert cloud.counts() == BACKED_UP_ON_SECONDARY
        assert taken.usage() == [ON_PRIMARY, CREATE]

    @pytest.mark.violates("usage-matches-objects")
    def test_async_backup_is_ignored(self) -> None:
        """asyncbackup changes nothing on this path (spec §5.4 step 7)."""
        cloud = Cloud()
        taken = cloud.take(cloud.volume("kvm-nfs"), async_backup=True)
        assert taken.refs() == [("Image", "Ready", image_path(taken))]
        assert cloud.counts() == BACKED_UP_ON_SECONDARY


class TestBackupOff:
    """Spec §13.3: ``snapshot.backup.to.secondary`` false, or an Edge zone: the snapshot stays on primary."""

    def test_the_key_takes_effect_at_the_next_start(self) -> None:
        """The key is not dynamic: CloudStack reads it when the server starts, so only a restart applies it."""
        cloud = Cloud()
        cloud.engine.set_config("snapshot.backup.to.secondary", value=False)
        first = cloud.take(cloud.volume("xen-nfs"))
        assert [role for role, _, _ in first.refs()] == ["Primary", "Image"]
        cloud.engine.restart()
        second = cloud.take(cloud.volume("xen-nfs"))
        assert [role for role, _, _ in second.refs()] == ["Primary"]

    @pytest.mark.parametrize(
        ("shape", "zone_type", "config"),
        [
            ("xen-nfs", "Core", {"snapshot.backup.to.secondary": False}),
            ("kvm-nfs", "Core", {"snapshot.backup.to.secondary": False}),
            ("xen-nfs", "Edge", {}),
            ("kvm-nfs", "Edge", {}),
        ],
        ids=["xen-backup-off", "kvm-nfs-backup-off", "xen-edge", "kvm-nfs-edge"],
    )
    def test_only_the_primary_ref_ready(self, shape: str, zone_type: str, config: dict[str, object]) -> None:
        """Allocated, Creating, CreatedOnPrimary, BackedUp by OperationNotPerformed; MS_ID is left behind."""
        cloud = Cloud(zone_type=zone_type, config=config)
        taken = cloud.take(cloud.volume(shape))
        assert taken.log() == JOBS_QUEUED + ON_PRIMARY_LOG + VOLUME_READY + NOT_BACKED_UP_LOG + JOBS_DONE
        assert taken.result[:2] == ("SUCCEEDED", 0)
        assert taken.refs() == [("Primary", "Ready", primary_path(cloud, shape, taken))]
        assert taken.details() == {"MS_ID": "1"}
        assert taken.objects("image") == []

    @pytest.mark.parametrize(
        ("zone_type", "config"), [("Core", {"snapshot.backup.to.secondary": False}), ("Edge", {})], ids=["off", "edge"]
    )
    def test_counted_on_primary_storage(self, zone_type: str, config: dict[str, object]) -> None:
        """Allocation counts the volume on primary_storage; the correction leaves the physical size there."""
        cloud = Cloud(zone_type=zone_type, config=config)
        taken = cloud.take(cloud.volume("xen-nfs"))
        assert cloud.counts() == KEPT_ON_PRIMARY
        assert taken.usage() == [ON_PRIMARY, CREATE]


class TestDetached:
    """Spec §4.3: a volume with no VM row is taken directly, without a work job."""

    def test_no_work_job(self) -> None:
        """The API job alone moves; the take runs in it and completes it."""
        cloud = Cloud()
        taken = cloud.take(cloud.volume("xen-nfs", vm=False))
        assert taken.work_job is None
        assert taken.log("async_job", "vm_work_job") == [
            ("async_job", 1, "", "create", "IN_PROGRESS"),
            ("async_job", 1, "IN_PROGRESS", "CompleteSucceeded", "SUCCEEDED"),
        ]
        assert taken.log("snapshot", "volume") == [
            ("snapshot", 1, "", "create", "Allocated"),
            ("volume", 1, "Ready", "SnapshotRequested", "Snapshotting"),
            ("snapshot", 1, "Allocated", "CreateRequested", "Creating"),
            ("snapshot", 1, "Creating", "OperationSucceeded", "CreatedOnPrimary"),
            ("volume", 1, "Snapshotting", "OperationSucceeded", "Ready"),
            ("snapshot", 1, "CreatedOnPrimary", "BackupToSecondary", "BackingUp"),
            ("snapshot", 1, "BackingUp", "OperationSucceeded", "BackedUp"),
        ]
        assert taken.snapshot.name.startswith("detached_vol1_")
        assert cloud.counts() == BACKED_UP_ON_SECONDARY

    @pytest.mark.violates("counts-match-recount", "usage-matches-objects")
    def test_encrypted_volume_is_not_checked(self) -> None:
        """The detached path runs no encryption check: an encrypted volume is snapshotted."""
        cloud = Cloud()
        taken = cloud.take(cloud.volume("kvm-nfs", vm=False, encrypted=True))
        assert taken.result[:2] == ("SUCCEEDED", 0)
        assert taken.snapshot.status == "BackedUp"

    @pytest.mark.violates("counts-match-recount", "usage-matches-objects")
    def test_a_removed_vm_counts_as_detached(self) -> None:
        """A VM row that is soft-removed is not found (``findById``): the volume is taken directly, and the VM's
        DiskAndMemory snapshots do not stop the Default strategy, which looks the VM up the same way."""
        cloud = Cloud()
        volume = cloud.volume("kvm-nfs")
        vm = cloud.engine.get(VmInstance, volume.instance_id or 0)
        cloud.engine.add_vm_snapshot(vm, type="DiskAndMemory")
        cloud.engine.store.remove(vm, by="test")
        taken = cloud.take(volume)
        assert taken.work_job is None
        assert (taken.status, taken.snapshot.status) == ("SUCCEEDED", "BackedUp")


class TestStorPool:
    """Spec §8: StorPool TAKE goes to the Default strategy with the StorPool driver doing the work."""

    def test_default_strategy_storpool_path_and_details(self) -> None:
        """The primary ref's path is a StorPool device; ``<uuid>`` and ``spStoragePoolId`` details are added."""
        cloud, taken = scenario("storpool")
        pool = cloud.pools["storpool"]
        snapshot = taken.snapshot
        device = f"/dev/storpool-byid/{pool.id}.{snapshot.id}.{snapshot.uuid[:8]}"
        assert strategy_of(cloud, taken.job_id) == "DefaultSnapshotStrategy"
        assert (taken.status, snapshot.status) == ("SUCCEEDED", "BackedUp")
        assert taken.refs() == [("Primary", "Ready", device), ("Image", "Ready", image_path(taken))]
        assert taken.details() == {snapshot.uuid: device, "spStoragePoolId": str(pool.id)}
        assert taken.log() == JOBS_QUEUED + ON_PRIMARY_LOG + VOLUME_READY + SYNC_BACKUP_LOG + JOBS_DONE
        assert cloud.counts() == BACKED_UP_ON_SECONDARY


MANAGED = {
    "solidfire": "solidfire:{volume}:snap-{snapshot}",
    "solidfire-cluster": "solidfire-cluster:{volume}:snap-{snapshot}",
    "ontap": "ontap:{volume}:snap-{snapshot}",
    "powerflex": "powerflex:powerflex/{snapshot}",
}


class TestStorageSystem:
    """Spec §5.7, §6.2: pools whose driver advertises STORAGE_SYSTEM_SNAPSHOT (SolidFire, ONTAP, PowerFlex)."""

    @pytest.mark.parametrize("shape", list(MANAGED))
    def test_marked_backed_up_on_primary(self, shape: str) -> None:
        """StorageSystem strategy, location PRIMARY, markAsBackedUp; no MS_ID; counted and used on primary."""
        cloud, taken = scenario(shape)
        snapshot = taken.snapshot
        assert strategy_of(cloud, taken.job_id) == "StorageSystemSnapshotStrategy"
        assert (taken.status, snapshot.status, snapshot.location_type) == ("SUCCEEDED", "BackedUp", "PRIMARY")
        assert taken.log() == JOBS_QUEUED + ON_PRIMARY_LOG + VOLUME_READY + MARKED_BACKED_UP_LOG + JOBS_DONE
        path = MANAGED[shape].format(volume=taken.volume.path, snapshot=snapshot.uuid)
        assert taken.refs() == [("Primary", "Ready", path)]
        assert "MS_ID" not in taken.details()
        assert taken.details() == {"takeSnapshot": "true"}  # CAN_CREATE_VOLUME_FROM_SNAPSHOT and QCOW2/RAW
        assert cloud.counts() == KEPT_ON_PRIMARY
        assert taken.usage() == [ON_PRIMARY, CREATE]
        assert taken.objects("image") == []

    def test_zone_wide_any_pool_takes_the_hypervisor_from_the_format(self) -> None:
        """A managed zone-wide pool with hypervisor Any maps VHD to XenServer (spec §5.1 step 6)."""
        cloud = Cloud()
        taken = cloud.take(cloud.volume("solidfire", format="VHD"))
        assert cloud.engine.get(StoragePool, cloud.pools["solidfire"].id).hypervisor == "Any"
        assert taken.snapshot.hypervisor_type == "XenServer"


class TestCeph:
    """Spec §6.2: Ceph RBD TAKE goes to Default (the Ceph strategy only reverts); backed up by a copy."""

    def test_default_strategy_and_copy(self) -> None:
        """RBD is not file-based: the snapshot stays on the pool as ``pool/image@snap`` and is copied."""
        cloud, taken = scenario("kvm-rbd")
        snapshot = taken.snapshot
        assert strategy_of(cloud, taken.job_id) == "DefaultSnapshotStrategy"
        assert (taken.status, snapshot.status) == ("SUCCEEDED", "BackedUp")
        assert taken.log() == JOBS_QUEUED + ON_PRIMARY_LOG + VOLUME_READY + SYNC_BACKUP_LOG + JOBS_DONE
        rbd = f"kvm-rbd/{taken.volume.path}@{snapshot.uuid}"
        assert taken.refs() == [("Primary", "Ready", rbd), ("Image", "Ready", image_path(taken))]
        assert taken.details() == {}
        assert cloud.counts() == BACKED_UP_ON_SECONDARY
        assert taken.usage() == [ON_PRIMARY, CREATE]


class TestKvmHostDeletesAfterCopy:
    """``KVMStorageProcessor.backupSnapshot`` deletes the snapshot on primary once it is copied, but on RBD."""

    @pytest.mark.parametrize(("shape", "kept"), [("kvm-clvm", False), ("kvm-rbd", True)])
    def test_the_copy_leaves_the_primary_snapshot_only_on_rbd(self, shape: str, kept: bool) -> None:
        cloud, taken = scenario(shape)
        assert stored(cloud.engine, taken.snapshot.id) == [("primary", kept), ("image", True)]

    def test_a_xenserver_snapshot_stays_on_primary(self) -> None:
        """Not a KVM host: the primary snapshot is the next delta's parent (spec §16.2)."""
        cloud, taken = scenario("xen-nfs")
        assert stored(cloud.engine, taken.snapshot.id) == [("primary", True), ("image", True)]


@pytest.mark.parametrize("size", [1 * GIB, 3 * GIB + 1])
def test_usage_and_counts_follow_the_volume_size(size: int) -> None:
    """Usage and the step-12 correction use the driver's physical size (half the volume here) for any size."""
    cloud = Cloud()
    taken = cloud.take(cloud.volume("xen-nfs", size=size))
    physical = size // 2
    assert taken.usage() == [("SNAPSHOT.ON_PRIMARY", size, size), ("SNAPSHOT.CREATE", physical, size)]
    assert cloud.counts() == {"snapshot": 1, "primary_storage": 0, "secondary_storage": physical}


def test_the_cloud_engine_is_a_fresh_engine() -> None:
    """The builder's engine (a copied empty schema) holds what ``Engine.open(":memory:")`` holds, row for row."""
    built, opened = new_engine(), Engine.open(":memory:")
    assert list(built.store.conn.iterdump()) == list(opened.store.conn.iterdump())
    assert built.store.conn.execute("PRAGMA user_version").fetchone() == (
        opened.store.conn.execute("PRAGMA user_version").fetchone()
    )


@pytest.mark.violates("usage-matches-objects", params=["kvm-clvm", "kvm-nfs", "kvm-smp"])
@pytest.mark.parametrize(
    "shape", sorted({"xen-nfs", "kvm-nfs", "kvm-smp", "kvm-rbd", "kvm-clvm", "storpool", *MANAGED})
)
def test_each_scenario_is_judged(shape: str) -> None:
    """The cached scenarios' worlds, built again here so that the invariants judge them at this test's end."""
    assert _scenario(shape)[1].status == "SUCCEEDED"
