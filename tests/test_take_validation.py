"""createSnapshot refused: by the create phase (spec §5.1), the execute phase (§5.2), orchestration (§5.3), or Python.

A create-phase refusal is answered at once with CloudStack's error code and text (``ApiError``). Every check of §5.1
comes before the snapshot's insert, so CloudStack's tables are as before but for ``allocSnapshot``'s ERROR action
event; the model's take workflow ends ``Rejected`` with its failure (``Cloud.refused``). Refusals in the job fail it
with CloudStack's code and text and leave what CloudStack leaves: the Allocated snapshot and the incremented counters.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from cloud import GIB, SHAPES, SIZE, Cloud

from snapshotfsm.errors import ApiError, InvalidValue
from snapshotfsm.store.records import Snapshot, VmInstance, Volume, Zone

GENERIC = "Internal error executing command, please contact your system administrator"
KVM_DISABLED = (
    "KVM Snapshot is not supported for Running VMs. It is disabled by default due to a possible volume corruption in "
    "certain cases. To enable it set global settings kvm.snapshot.enabled to True. See the documentation for more "
    "details."
)
OTHER_SNAPSHOTS = (
    "There is other active snapshot tasks on the instance to which the volume is attached, please try again later"
)
OTHER_VM_SNAPSHOTS = (
    "There is other active Instance Snapshot tasks on the Instance to which the volume is attached, please try again "
    "later"
)
ENCRYPTED = "Volume snapshots for encrypted volumes are not supported if VM is running"
ALLOCATED = {"snapshot": 1, "primary_storage": 0, "secondary_storage": SIZE}
"""What allocation counted and a refusal in the job leaves in place."""
NOTHING = {"snapshot": 0, "primary_storage": 0, "secondary_storage": 0}


def volume_vo(v: Volume) -> str:
    """``VolumeVO.toString`` as CloudStack's messages print it: JSON style (a null prints ``null``), fields in the order
    VolumeVO declares them (commons-lang3 3.11 does not sort them).
    """
    instance = "null" if v.instance_id is None else v.instance_id
    return (
        f'Volume {{"id":{v.id},"name":"{v.name}","instanceId":{instance},"volumeType":"{v.volume_type}",'
        f'"uuid":"{v.uuid}"}}'
    )


def refused(cloud: Cloud, volume_id: int, **kwargs: object) -> ApiError:
    """Call createSnapshot expecting a create-phase refusal from inside ``allocSnapshot``: see ``Cloud.refused``."""
    return cloud.refused(volume_id, **kwargs)


def other_zone(cloud: Cloud, **kwargs: object) -> Zone:
    """A second zone with its image store."""
    zone = cloud.engine.add_zone("zone2", **kwargs)  # type: ignore[arg-type]
    cloud.engine.add_image_store(zone, "secondary2")
    return zone


# --- the create phase (§5.1) ---------------------------------------------------------------------------------------

Case = Callable[[Cloud], tuple[int, dict[str, object], int, str]]
"""Builds a cloud's refused call: (volume id, createSnapshot arguments, expected code, expected text)."""


def _missing(c: Cloud) -> tuple[int, dict[str, object], int, str]:
    return 99, {"caller": c.alice}, 431, "Creating snapshot failed due to volume:99 doesn't exist"


def _zone_disabled(c: Cloud) -> tuple[int, dict[str, object], int, str]:
    v = c.volume("xen-nfs")
    c.engine.store.update(c.zone, allocation_state="Disabled")
    return v.id, {}, 531, "Cannot perform this operation, Zone is currently disabled: zone1"


def _not_ready(c: Cloud) -> tuple[int, dict[str, object], int, str]:
    v = c.volume("xen-nfs", state="Allocated")
    return v.id, {}, 431, f"Volume: {volume_vo(v)} is not in Ready state but Allocated. Cannot take snapshot."


def _dir_format(c: Cloud) -> tuple[int, dict[str, object], int, str]:
    v = c.volume("xen-nfs", format="DIR")
    return v.id, {}, 431, f"Snapshot not supported for volume: {volume_vo(v)}"


def _system_template(vm_type: str | None) -> Case:
    def case(c: Cloud) -> tuple[int, dict[str, object], int, str]:
        template = c.engine.add_template("systemvm", system=True)
        vm = c.vm("KVM", user_vm_type=vm_type)
        v = c.volume("kvm-nfs", vm=vm, template=template, volume_type="ROOT")
        text = f"Volume: {volume_vo(v)} is for System VM , Creating snapshot against System VM volumes is not supported"
        return v.id, {}, 431, text

    return case


def _location_on_unmanaged(c: Cloud) -> tuple[int, dict[str, object], int, str]:
    v = c.volume("xen-nfs")
    return (
        v.id,
        {"location_type": "primary"},
        431,
        f"VolumeId: {v.id} LocationType is supported only for managed storage",
    )


def _location_invalid(c: Cloud) -> tuple[int, dict[str, object], int, str]:
    v = c.volume("solidfire")
    return v.id, {"location_type": "tape"}, 530, GENERIC


def _zone_ids(**zone: object) -> Callable[[Cloud], tuple[int, dict[str, object], int, str]]:
    """zoneids naming a second zone; the case's text and the volume's shape follow from ``zone``."""

    def case(c: Cloud) -> tuple[int, dict[str, object], int, str]:
        shape = str(zone.pop("shape", "xen-nfs"))
        code, text = zone.pop("code", 431), str(zone.pop("text"))
        extra = dict(zone.pop("extra", {}))  # type: ignore[call-overload]
        v = c.volume(shape)
        dest = other_zone(c, **zone)
        return v.id, {"zone_ids": [dest.id], **extra}, int(code), text  # type: ignore[call-overload]

    return case


def _zone_ids_missing(c: Cloud) -> tuple[int, dict[str, object], int, str]:
    v = c.volume("xen-nfs")
    return v.id, {"zone_ids": [42]}, 431, "Unable to find the specified zone"


def _ovm(c: Cloud) -> tuple[int, dict[str, object], int, str]:
    v = c.volume("ovm-nfs")
    return v.id, {}, 431, "Ovm won't support taking snapshot"


def _kvm_host_without_capability(c: Cloud) -> tuple[int, dict[str, object], int, str]:
    c.engine.store.update(c.host("KVM"), capabilities="hvm")
    v = c.volume("kvm-nfs")
    return v.id, {}, 530, GENERIC


def _vm_destroyed(c: Cloud) -> tuple[int, dict[str, object], int, str]:
    v = c.volume("kvm-nfs", vm_state="Destroyed")
    return v.id, {}, 530, GENERIC


def _vm_snapshot(state: str) -> Case:
    def case(c: Cloud) -> tuple[int, dict[str, object], int, str]:
        v = c.volume("xen-nfs")
        c.engine.add_vm_snapshot(c.engine.get(VmInstance, v.instance_id or 0), state=state)
        return v.id, {}, 530, GENERIC

    return case


def _other_account(c: Cloud) -> tuple[int, dict[str, object], int, str]:
    v = c.volume("xen-nfs")
    return v.id, {"caller": c.bob}, 531, "Caller does not have permission to operate with provided resource."


def _limit(resource: str, limit: int, shown: str) -> Case:
    def case(c: Cloud) -> tuple[int, dict[str, object], int, str]:
        c.engine.set_limit(c.alice, resource, limit)
        v = c.volume("xen-nfs")
        text = (
            f"Maximum amount of resources of Type = '{resource}', tag = 'null' for Account Name = alice in Domain Id ="
            f" 1 is exceeded: {shown}."
        )
        return v.id, {}, 535, text

    return case


CREATE_PHASE: dict[str, Case] = {
    "volume missing": _missing,
    "zone disabled": _zone_disabled,
    "volume not Ready": _not_ready,
    "DIR format": _dir_format,
    "SYSTEM template": _system_template(None),
    # isOperationSupported tests `!CKS || !SHAREDFS`, true for every VM: CKS and SharedFS VMs are refused too.
    "SYSTEM template, CKS node": _system_template("CKSNode"),
    "SYSTEM template, SharedFS VM": _system_template("SharedFSVM"),
    "locationType on an unmanaged pool": _location_on_unmanaged,
    "invalid locationType": _location_invalid,
    "zoneids with a policy": _zone_ids(
        extra={"policy_id": 1}, text="zoneids parameter can not be specified with policyid parameter"
    ),
    "zoneids with PRIMARY": _zone_ids(
        shape="solidfire", text="zoneids cannot be specified with snapshot locationtype as PRIMARY"
    ),
    "zoneids, destination missing": _zone_ids_missing,
    "zoneids, destination disabled": _zone_ids(
        enabled=False, code=531, text="Cannot perform this operation, Zone is currently disabled: zone2"
    ),
    # The %s is never filled in upstream: the message is verbatim.
    "zoneids, destination Edge": _zone_ids(type="Edge", text="Snapshot functionality is not supported on zone %s"),
    "Ovm": _ovm,
    "KVM host without the snapshot capability": _kvm_host_without_capability,
    "VM Destroyed": _vm_destroyed,
    "VM snapshot Creating": _vm_snapshot("Creating"),
    "VM snapshot Reverting": _vm_snapshot("Reverting"),
    "VM snapshot Expunging": _vm_snapshot("Expunging"),
    "another account's volume": _other_account,
    "snapshot count limit": _limit(
        "snapshot",
        0,
        "Account Resource Limit = 0, Current Account Resource Amount = 0, Current Account Resource Reservation = 0, "
        "Requested Resource Amount = 1",
    ),
    "secondary storage limit": _limit(
        "secondary_storage",
        GIB,
        "Account Resource Limit = (1.00 GB) 1073741824, Current Account Resource Amount = (0 bytes) 0, Current "
        "Account Resource Reservation = (0 bytes) 0, Requested Resource Amount = (10.00 GB) 10737418240",
    ),
}


EXCEPTION_OF_CODE = {
    431: "InvalidParameterValueException",
    530: "CloudRuntimeException",
    531: "PermissionDeniedException",
    535: "ResourceAllocationException",
}
"""The exception CloudStack threw, which decides the code (spec appendix B)."""


NOT_INTERCEPTED = {"invalid locationType"}
"""Refused by ``CreateSnapshotCmd.getLocationType()``, an argument of the call: before ``allocSnapshot`` runs, so
without its ERROR event."""


@pytest.mark.parametrize("case", list(CREATE_PHASE))
def test_create_phase_refusal(case: str) -> None:
    """Each check of spec §5.1 answers with CloudStack's code and text; only the ERROR event is written.

    ``ApiError.exception`` is the exception CloudStack threw; ``str()`` shows code, class and text.
    """
    cloud = Cloud()
    volume_id, kwargs, code, text = CREATE_PHASE[case](cloud)
    error = refused(cloud, volume_id, intercepted=case not in NOT_INTERCEPTED, **kwargs)
    assert (error.code, error.text) == (code, text)
    assert type(error.exception).__name__ == EXCEPTION_OF_CODE[code]
    assert str(error) == f"{code} {EXCEPTION_OF_CODE[code]}: {text}"


INTERNAL_TEXTS = {
    "invalid locationType": "Invalid locationType tapeSpecified for volume {id} Valid values are: primary,secondary ",
    "KVM host without the snapshot capability": KVM_DISABLED,
}


@pytest.mark.parametrize("case", list(INTERNAL_TEXTS))
def test_internal_errors_show_their_text_to_the_volume_owner_only_if_admin(case: str) -> None:
    """A CloudRuntimeException is 530 for everyone; only a root admin sees its message (spec appendix B).

    The admin must act on a volume that is theirs or any: root may act on alice's volume.
    """
    cloud = Cloud()
    volume_id, kwargs, _, _ = CREATE_PHASE[case](cloud)
    error = refused(cloud, volume_id, intercepted=case not in NOT_INTERCEPTED, **{**kwargs, "caller": cloud.root})
    assert (error.code, error.text) == (530, INTERNAL_TEXTS[case].format(id=volume_id))


def test_vm_destroyed_text() -> None:
    """The Destroyed VM's refusal names the volume and the VM (shown to a root admin)."""
    cloud = Cloud()
    volume = cloud.volume("kvm-nfs", vm_state="Destroyed")
    vm = cloud.engine.get(VmInstance, volume.instance_id or 0)
    error = refused(cloud, volume.id, caller=cloud.root)
    vm_vo = (
        f'VM instance {{"id":{vm.id},"state":"Destroyed","instanceName":"{vm.name}","type":"User","uuid":"{vm.uuid}"}}'
    )
    assert error.text == (
        f"Creating snapshot failed due to volume: {volume_vo(volume)} is associated with vm: {vm_vo} is in Destroyed"
        " state"
    )


def test_vm_snapshot_text() -> None:
    """An active VM snapshot's refusal, as a root admin sees it."""
    cloud = Cloud()
    volume_id, _, _, _ = _vm_snapshot("Creating")(cloud)
    assert refused(cloud, volume_id, caller=cloud.root).text == OTHER_VM_SNAPSHOTS


@pytest.mark.violates("counts-match-recount", params=["destination zone disabled"])
@pytest.mark.parametrize(
    "setup",
    [
        lambda c: (
            c.volume("xen-nfs"),
            {"zone_ids": []},
            lambda: c.engine.store.update(c.zone, allocation_state="Disabled"),
        ),
        lambda c: (c.volume("xen-nfs"), {"zone_ids": [other_zone(c, enabled=False).id]}, lambda: None),
        lambda c: (c.volume("xen-nfs"), {}, lambda: None),
    ],
    ids=["zone disabled", "destination zone disabled", "another account's volume"],
)
def test_root_admin_passes_what_users_are_refused(
    setup: Callable[[Cloud], tuple[Volume, dict[str, object], Callable[[], object]]],
) -> None:
    """Disabled zones and other accounts' volumes stop users, not a root admin; the snapshot is the owner's."""
    cloud = Cloud()
    volume, kwargs, after = setup(cloud)
    after()
    taken = cloud.take(volume, caller=cloud.root, **kwargs)
    assert (taken.status, taken.snapshot.status, taken.snapshot.account_id) == ("SUCCEEDED", "BackedUp", cloud.alice.id)
    assert cloud.counts(cloud.alice)["snapshot"] == 1
    assert cloud.counts(cloud.root)["snapshot"] == 0


def test_a_root_admin_is_not_limited() -> None:
    """Root admins pass the resource checks (``checkResourceLimit``) even with a zero limit."""
    cloud = Cloud()
    cloud.engine.set_limit(cloud.root, "snapshot", 0)
    taken = cloud.take(cloud.volume("xen-nfs", account=cloud.root))
    assert taken.status == "SUCCEEDED"
    assert cloud.counts(cloud.root)["snapshot"] == 1


def test_a_limit_reached_by_earlier_snapshots() -> None:
    """A limit of one snapshot admits the first and refuses the second, counting the first."""
    cloud = Cloud()
    cloud.engine.set_limit(cloud.alice, "snapshot", 1)
    volume = cloud.volume("xen-nfs")
    cloud.take(volume)
    error = refused(cloud, volume.id)
    assert error.code == 535
    assert "Current Account Resource Amount = 1, Current Account Resource Reservation = 0" in error.text
    assert cloud.counts()["snapshot"] == 1


class TestKvmSnapshotEnabled:
    """``kvm.snapshot.enabled`` and the host's ``snapshot`` capability (spec §5.1 step 6).

    CloudStack's ``hostSupportsSnapsthotForVolume`` checks the key for VMs not Stopped/Destroyed, then the capability.
    """

    @pytest.mark.violates("usage-matches-objects")
    @pytest.mark.parametrize("vm_state", ["Running", "Stopped"])
    def test_enabled_with_the_capability(self, vm_state: str) -> None:
        """The default: a KVM host advertising ``snapshot`` takes snapshots of running and stopped VMs."""
        cloud = Cloud()
        assert cloud.host("KVM").capabilities == "hvm,snapshot"
        assert cloud.take(cloud.volume("kvm-nfs", vm_state=vm_state)).status == "SUCCEEDED"

    def test_disabled_refuses_a_running_vm(self) -> None:
        """With the key false a Running VM's volume is refused (530, the real text for an admin)."""
        cloud = Cloud()
        cloud.engine.set_config("kvm.snapshot.enabled", value=False)
        volume = cloud.volume("kvm-nfs")
        assert (refused(cloud, volume.id).code, refused(cloud, volume.id).text) == (530, GENERIC)
        assert refused(cloud, volume.id, caller=cloud.root).text == KVM_DISABLED

    @pytest.mark.violates("counts-match-recount", "usage-matches-objects", params=["detached"])
    @pytest.mark.violates("usage-matches-objects", params=["stopped"])
    @pytest.mark.parametrize("kwargs", [{"vm_state": "Stopped"}, {"vm": False}], ids=["stopped", "detached"])
    def test_disabled_allows_stopped_and_detached(self, kwargs: dict[str, object]) -> None:
        """The key concerns VMs that are not Stopped or Destroyed; stopped VMs and detached volumes pass."""
        cloud = Cloud()
        cloud.engine.set_config("kvm.snapshot.enabled", value=False)
        assert cloud.take(cloud.volume("kvm-nfs", **kwargs)).status == "SUCCEEDED"

    @pytest.mark.parametrize("enabled", [True, False])
    def test_without_the_capability_even_a_stopped_vm_is_refused(self, enabled: bool) -> None:
        """The capability is checked whatever the key and the VM's state: no ``snapshot`` token, no snapshot."""
        cloud = Cloud()
        cloud.engine.set_config("kvm.snapshot.enabled", value=enabled)
        cloud.engine.store.update(cloud.host("KVM"), capabilities="hvm")
        volume = cloud.volume("kvm-nfs", vm_state="Stopped")
        assert refused(cloud, volume.id, caller=cloud.root).text == KVM_DISABLED

    @pytest.mark.violates("usage-matches-objects")
    def test_any_token_containing_snapshot_will_do(self) -> None:
        """CloudStack tests ``token.contains("snapshot")``."""
        cloud = Cloud()
        cloud.engine.store.update(cloud.host("KVM"), capabilities="hvm,incremental-snapshot-v2")
        assert cloud.take(cloud.volume("kvm-nfs")).status == "SUCCEEDED"


class TestOngoingSnapshotOnTheVm:
    """VMware and KVM refuse a snapshot while another of the same VM is ongoing (spec §1.3, §5.1 step 6)."""

    @staticmethod
    def _ongoing(cloud: Cloud, volume: Volume, state: str) -> None:
        cloud.engine.add(
            Snapshot(
                data_center_id=volume.data_center_id,
                account_id=volume.account_id,
                volume_id=volume.id,
                name="earlier",
                status=state,
                size=volume.size,
            )
        )

    @pytest.mark.violates("counts-match-recount", params=["kvm-nfs-CreatedOnPrimary", "vmware-nfs-CreatedOnPrimary"])
    @pytest.mark.violates(
        "counts-match-recount",
        "no-transitional-state",
        params=["kvm-nfs-BackingUp", "kvm-nfs-Creating", "vmware-nfs-BackingUp", "vmware-nfs-Creating"],
    )
    @pytest.mark.parametrize("state", ["Creating", "CreatedOnPrimary", "BackingUp"])
    @pytest.mark.parametrize("shape", ["kvm-nfs", "vmware-nfs"])
    def test_refused(self, shape: str, state: str) -> None:
        """A snapshot of another volume of the VM in an ongoing state refuses the new one (431)."""
        cloud = Cloud()
        vm = cloud.vm(SHAPES[shape].hypervisor)
        first, second = cloud.volume(shape, vm=vm), cloud.volume(shape, vm=vm)
        self._ongoing(cloud, first, state)
        error = refused(cloud, second.id)
        assert (error.code, error.text) == (431, OTHER_SNAPSHOTS)

    @pytest.mark.violates("counts-match-recount", "usage-matches-objects", params=["Allocated", "BackedUp"])
    @pytest.mark.violates("usage-matches-objects", params=["Error"])
    @pytest.mark.parametrize("state", ["Allocated", "BackedUp", "Error"])
    def test_finished_or_unstarted_snapshots_do_not_count(self, state: str) -> None:
        """Only Creating, CreatedOnPrimary and BackingUp are ongoing."""
        cloud = Cloud()
        vm = cloud.vm("KVM")
        first, second = cloud.volume("kvm-nfs", vm=vm), cloud.volume("kvm-nfs", vm=vm)
        self._ongoing(cloud, first, state)
        assert cloud.take(second).status == "SUCCEEDED"

    @pytest.mark.violates("counts-match-recount", "no-transitional-state")
    def test_xenserver_is_not_checked(self) -> None:
        """XenServer VMs are not checked: the new snapshot is accepted."""
        cloud = Cloud()
        vm = cloud.vm("XenServer")
        first, second = cloud.volume("xen-nfs", vm=vm), cloud.volume("xen-nfs", vm=vm)
        self._ongoing(cloud, first, "BackingUp")
        assert cloud.take(second).status == "SUCCEEDED"

    @pytest.mark.violates("answer-matches-state", "counts-match-recount", "no-transitional-state")
    def test_a_snapshot_left_creating_blocks_the_kvm_vm(self) -> None:
        """A driver that threw leaves its snapshot Creating (spec §5.6 step 4): the VM takes no snapshot after it."""
        cloud = Cloud()
        cloud.faults.fail("default.takeSnapshot", kind="exception")
        volume = cloud.volume("kvm-rbd")
        first = cloud.take(volume)
        assert (first.status, first.snapshot.status, first.volume.state) == ("FAILED", "Creating", "Ready")
        error = refused(cloud, volume.id)
        assert (error.code, error.text) == (431, OTHER_SNAPSHOTS)

    def test_a_volume_snapshotting_is_not_counted(self) -> None:
        """``listByInstanceId`` joins volumes in state Ready: while the driver runs the volume is Snapshotting and
        its Creating snapshot is not seen, so a second snapshot of another volume of the VM is accepted."""
        cloud = Cloud()
        vm = cloud.vm("KVM")
        first, second = cloud.volume("kvm-rbd", vm=vm), cloud.volume("kvm-rbd", vm=vm)
        taken = cloud.create(first)
        cloud.engine.run(until_ms=1_000)
        assert (taken.snapshot.status, taken.volume.state) == ("Creating", "Snapshotting")
        assert cloud.take(second).status == "SUCCEEDED"


# --- the execute phase (§5.2) -----------------------------------------------------------------------------------


@pytest.mark.violates(
    "answer-matches-state", "counts-match-recount", params=["attached-DestroyRequested", "detached-DestroyRequested"]
)
@pytest.mark.violates(
    "answer-matches-state",
    "counts-match-recount",
    "no-transitional-state",
    params=["attached-ResizeRequested", "detached-ResizeRequested"],
)
@pytest.mark.parametrize("event", ["ResizeRequested", "DestroyRequested"])
@pytest.mark.parametrize("attached", [True, False], ids=["attached", "detached"])
def test_volume_no_longer_ready_when_the_job_runs(attached: bool, event: str) -> None:
    """takeSnapshotInternal re-checks the volume: 530 with the generic text; the Allocated snapshot and the counters
    stay as allocation left them."""
    cloud = Cloud()
    volume = cloud.volume("xen-nfs", vm=attached)
    taken = cloud.create(volume)
    moved = cloud.engine.store.transit(cloud.engine.get(Volume, volume.id), event)
    cloud.engine.run()
    assert taken.status == "FAILED"
    assert taken.error == (
        530,
        f"Failed to create Snapshot due to an internal error creating Snapshot for volume {volume.uuid}",
    )
    assert taken.work_job is None
    assert (taken.snapshot.status, taken.snapshot.removed) == ("Allocated", None)
    assert cloud.counts() == ALLOCATED
    assert taken.usage() == []
    assert taken.failures() == [
        (
            "api.validate",
            "InvalidParameterValueException",
            f"Volume: {volume_vo(moved)} is not in Ready state but {moved.state}. Cannot take snapshot.",
        )
    ]


@pytest.mark.violates("answer-matches-state", "counts-match-recount")
def test_an_access_change_before_the_job_runs() -> None:
    """The job re-checks access with the caller of the create phase: a volume given to another account fails it."""
    cloud = Cloud()
    volume = cloud.volume("xen-nfs", vm=False)
    taken = cloud.create(volume)
    cloud.engine.store.update(cloud.engine.get(Volume, volume.id), account_id=cloud.bob.id)
    cloud.engine.run()
    assert taken.error[0] == 530
    assert taken.failures()[0][1:] == (
        "PermissionDeniedException",
        "Caller does not have permission to operate with provided resource.",
    )


# --- orchestrateTakeVolumeSnapshot (§5.3): encrypted volumes ---------------------------------------------------


class TestEncryptedVolume:
    """Spec §5.3: an encrypted volume attached to a VM that is not Stopped is refused, unless StorPool backs up."""

    @pytest.mark.violates("answer-matches-state", "counts-match-recount")
    def test_refused_on_a_running_vm(self) -> None:
        """432 with the UOE's text; the snapshot stays Allocated and the counters are not given back."""
        cloud = Cloud()
        taken = cloud.take(cloud.volume("kvm-nfs", encrypted=True))
        assert (taken.status, taken.job.job_result_code) == ("FAILED", 432)
        assert taken.error == (432, f"Failed to create Snapshot due to unsupported operation: {ENCRYPTED}")
        assert taken.work_state == ("FAILED", "Failed")
        assert taken.work_result == f"java.lang.UnsupportedOperationException:{ENCRYPTED}"
        assert (taken.snapshot.status, taken.snapshot.removed) == ("Allocated", None)
        assert taken.volume.state == "Ready"
        assert taken.refs() == []
        assert cloud.counts() == ALLOCATED
        assert taken.usage() == []
        assert taken.failures() == [("take.orchestrate", "UnsupportedOperationException", ENCRYPTED)]
        assert taken.log("volume", "snapshot", "snapshot_store_ref") == [("snapshot", 1, "", "create", "Allocated")]

    @pytest.mark.violates("answer-matches-state", "counts-match-recount")
    @pytest.mark.parametrize("vm_state", ["Running", "Starting", "Stopping", "Migrating"])
    def test_any_state_but_stopped_refuses(self, vm_state: str) -> None:
        """The rule is "not Stopped", not "Running"."""
        cloud = Cloud()
        taken = cloud.take(cloud.volume("xen-nfs", encrypted=True, vm_state=vm_state))
        assert taken.error[0] == 432

    @pytest.mark.violates("usage-matches-objects")
    def test_a_stopped_vm_is_snapshotted(self) -> None:
        """A Stopped VM's encrypted volume goes through."""
        cloud = Cloud()
        taken = cloud.take(cloud.volume("kvm-nfs", encrypted=True, vm_state="Stopped"))
        assert (taken.status, taken.snapshot.status) == ("SUCCEEDED", "BackedUp")

    def test_storpool_with_backup_to_secondary_is_snapshotted_while_running(self) -> None:
        """``isSnapshotOnStorPoolOnly`` is true when backup to secondary is ON: the running VM's volume passes."""
        cloud = Cloud()
        taken = cloud.take(cloud.volume("storpool", encrypted=True))
        assert (taken.status, taken.snapshot.status) == ("SUCCEEDED", "BackedUp")

    @pytest.mark.violates("answer-matches-state", "counts-match-recount")
    def test_storpool_without_backup_to_secondary_is_refused(self) -> None:
        """With backup off the StorPool exception does not apply."""
        cloud = Cloud(config={"snapshot.backup.to.secondary": False})
        taken = cloud.take(cloud.volume("storpool", encrypted=True))
        assert taken.error == (432, f"Failed to create Snapshot due to unsupported operation: {ENCRYPTED}")


# --- Python-level bad arguments ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"volume_id": "1"}, "createSnapshot volume_id must be an integer volume id (got '1' that is a str)"),
        ({"volume_id": True}, "createSnapshot volume_id must be an integer volume id (got True that is a bool)"),
        ({"async_backup": "yes"}, "createSnapshot async_backup must be a bool (got 'yes' that is a str)"),
        ({"quiescevm": 1}, "createSnapshot quiescevm must be a bool (got 1 that is a int)"),
        (
            {"location_type": 1},
            "createSnapshot location_type must be 'primary', 'secondary' or None (got 1 that is a int)",
        ),
        ({"zone_ids": "2"}, "createSnapshot zone_ids must be a list of integer ids (got '2' that is a str)"),
        ({"zone_ids": [1.5]}, "createSnapshot zone_ids must be a list of integer ids (got [1.5] that is a list)"),
        (
            {"tags": {"k": 1}},
            "createSnapshot tags must be a mapping of strings to strings (got {'k': 1} that is a dict)",
        ),
    ],
    ids=["volume-str", "volume-bool", "async-str", "quiesce-int", "location-int", "zones-str", "zones-float", "tags"],
)
def test_wrong_types_raise_invalid_value_and_write_nothing(kwargs: dict[str, object], message: str) -> None:
    """The tool's own bad input is an InvalidValue (a TypeError) naming the argument and the value."""
    cloud = Cloud()
    volume = cloud.volume("xen-nfs")
    before = cloud.dump()
    call = {"volume_id": volume.id, **kwargs}
    with pytest.raises(InvalidValue) as info:
        cloud.engine.create_snapshot(**call)  # type: ignore[arg-type]
    assert str(info.value) == message
    assert isinstance(info.value, TypeError)
    assert cloud.dump() == before
