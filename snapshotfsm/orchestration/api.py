"""The createSnapshot API: its create phase (spec §5.1) and its execute-phase checks (spec §5.2).

Also the error codes the API layer gives their exceptions (spec §5.2, appendix B).

The create phase runs in the caller's thread: a refusal is answered synchronously and nothing is written. The
execute phase runs in the async job; ``CreateSnapshotCmd.execute`` turns any exception into a ServerApiException,
UNSUPPORTED_ACTION_ERROR when its *cause* is an UnsupportedOperationException and INTERNAL_ERROR otherwise.
"""

from __future__ import annotations

from snapshotfsm.describe import volume_str
from snapshotfsm.drivers.base import CAN_COPY_SNAPSHOT_BETWEEN_ZONES_AND_SAME_POOL_TYPE
from snapshotfsm.errors import (
    ApiError,
    CloudException,
    CloudRuntimeException,
    ConcurrentOperationException,
    InvalidParameterValueException,
    NullPointerException,
    PermissionDeniedException,
    ResourceAllocationException,
    ServerApiException,
    UnsupportedOperationException,
)
from snapshotfsm.names import SnapshotState, Take, TakeState, VolumeState
from snapshotfsm.orchestration import accounting
from snapshotfsm.orchestration.runner import Run, step
from snapshotfsm.orchestration.runtime import Runtime
from snapshotfsm.store.records import (
    Account,
    AsyncJob,
    Cluster,
    Snapshot,
    SnapshotPolicy,
    SnapshotPolicyDetail,
    StoragePool,
    Template,
    VmInstance,
    VmSnapshot,
    Volume,
    Zone,
)

PARAM_ERROR = 431
UNSUPPORTED_ACTION_ERROR = 432
INTERNAL_ERROR = 530
ACCOUNT_ERROR = 531
ACCOUNT_RESOURCE_LIMIT_ERROR = 532
RESOURCE_ALLOCATION_ERROR = 535
USER_ERROR_MESSAGE = "Internal error executing command, please contact your system administrator"

SNAPSHOT_TYPES = ("MANUAL", "RECURRING", "TEMPLATE", "HOURLY", "DAILY", "WEEKLY", "MONTHLY", "GROUP", "FROM_GROUP")
"""``Snapshot.Type`` in ordinal order; a policy's interval (HOURLY=0 ...) maps to HOURLY + interval."""


# --- error codes ---------------------------------------------------------------------------------------------------


def create_phase_error(exc: CloudException, caller: Account | None) -> tuple[int, str]:
    """``ApiServer``'s mapping of an exception thrown by ``create()`` (appendix B): code and text.

    Internal errors hide their message from callers that are not root admins.
    """
    if isinstance(exc, ServerApiException):
        return exc.code, exc.message
    if isinstance(exc, InvalidParameterValueException):
        return PARAM_ERROR, exc.message
    if isinstance(exc, PermissionDeniedException):
        return ACCOUNT_ERROR, exc.message
    if isinstance(exc, ResourceAllocationException):
        return RESOURCE_ALLOCATION_ERROR, exc.message
    admin = caller is not None and caller.type == 1
    return INTERNAL_ERROR, exc.message if admin else USER_ERROR_MESSAGE


def execute_error(exc: CloudException, volume_uuid: str) -> tuple[int, str]:
    """``CreateSnapshotCmd.execute``'s catch: UNSUPPORTED_ACTION_ERROR when the cause is an UOE (spec §5.2)."""
    if isinstance(exc.cause, UnsupportedOperationException):
        return UNSUPPORTED_ACTION_ERROR, f"Failed to create Snapshot due to unsupported operation: {exc.cause.message}"
    return (
        INTERNAL_ERROR,
        f"Failed to create Snapshot due to an internal error creating Snapshot for volume {volume_uuid}",
    )


def through_work_job(exc: CloudException) -> CloudException:
    """How ``takeSnapshotInternal`` rethrows a work job's exception (spec §4.3).

    ConcurrentOperationException and ResourceAllocationException are rethrown as they are; anything else is
    wrapped in ``RuntimeException("Unexpected exception")`` whose cause is the original.
    """
    if isinstance(exc, (ConcurrentOperationException, ResourceAllocationException)):
        return exc
    return CloudException("Unexpected exception", cause=exc)


# --- lookups shared by both phases -----------------------------------------------------------------------------------


def live(rt: Runtime, cls: type[Volume | Zone | StoragePool | VmInstance], row_id: int | None) -> object:
    """A row that exists and is not soft-removed, or None (the DAOs' ``findById``)."""
    if row_id is None:
        return None
    return rt.store.first(cls, "id = ? AND removed IS NULL", (row_id,))


def volume_hypervisor(rt: Runtime, volume: Volume) -> str:
    """``VolumeInfo.getHypervisorType``: the VM's hypervisor, else the pool's (zone-wide) or its cluster's."""
    if volume.instance_id is not None:
        vm = rt.store.first(VmInstance, "id = ?", (volume.instance_id,))
        if vm is not None:
            return vm.hypervisor_type
    if volume.pool_id is not None:
        pool = rt.store.get(StoragePool, volume.pool_id)
        if pool.hypervisor:
            return pool.hypervisor
        if pool.cluster_id is not None:
            return rt.store.get(Cluster, pool.cluster_id).hypervisor_type
    return "None"


def check_access(rt: Runtime, caller: Account, owner_id: int) -> None:
    """``AccountManager.checkAccess``: an account acts on its own resources; a root admin on any."""
    del rt
    if caller.type != 1 and caller.id != owner_id:
        raise PermissionDeniedException("Caller does not have permission to operate with provided resource.")


def parse_location_type(raw: str | None, volume_id: int) -> str | None:
    """``CreateSnapshotCmd.getLocationType``: case-insensitive PRIMARY/SECONDARY, else CloudRuntimeException."""
    if raw is None:
        return None
    value = raw.strip().upper()
    if value not in ("PRIMARY", "SECONDARY"):
        raise CloudRuntimeException(
            f"Invalid locationType {raw}Specified for volume {volume_id} Valid values are: primary,secondary "
        )
    return value


def add_pools_for_copy_to_primary(
    rt: Runtime, volume: Volume | None, zone_ids: list[int], pool_ids: list[int], replicate: bool
) -> list[int]:
    """``SnapshotHelper.addStoragePoolsForCopyToPrimary`` (spec §5.2 step 1); clears ``zone_ids`` when replicating."""
    if not replicate:
        return pool_ids
    if volume is None:
        raise InvalidParameterValueException("Could not find volume of a snapshot")
    pool = rt.store.get(StoragePool, volume.pool_id) if volume.pool_id is not None else None
    if pool is None or CAN_COPY_SNAPSHOT_BETWEEN_ZONES_AND_SAME_POOL_TYPE not in rt.strategy_env.capabilities(pool):
        raise InvalidParameterValueException("The storage pool does not support copy between zones")
    if not zone_ids:
        raise InvalidParameterValueException("There is no destination zone provided")
    if not pool_ids:
        pool_ids = []
        for zone_id in zone_ids:
            candidates = rt.store.find(
                StoragePool, "pool_type = ? AND data_center_id = ? AND removed IS NULL", (pool.pool_type, zone_id)
            )
            if candidates:
                chosen = [p for p in candidates if rt.config.flag("use.storage.replication", pool=p.id)]
                if not chosen:
                    raise CloudException("No value present (java.util.NoSuchElementException from findFirst().get())")
                pool_ids.append(chosen[0].id)
        if not pool_ids:
            raise InvalidParameterValueException(
                "Cannot copy snapshot to primary storage. There aren't storage pools that support this operation"
            )
    zone_ids.clear()
    return pool_ids


def can_copy_on_primary(rt: Runtime, pool_ids: list[int], volume: Volume) -> bool:
    """``VolumeApiServiceImpl.canCopyOnPrimary`` and ``checkIfThereAreMoreThanOnePoolInTheZone``."""
    if not pool_ids:
        return False
    volume_pool = rt.store.get(StoragePool, volume.pool_id) if volume.pool_id is not None else None
    for pool_id in pool_ids:
        pool = rt.store.first(StoragePool, "id = ?", (pool_id,))
        if (
            pool is not None
            and CAN_COPY_SNAPSHOT_BETWEEN_ZONES_AND_SAME_POOL_TYPE not in rt.strategy_env.capabilities(pool)
            and volume_pool is not None
            and pool.pool_type != volume_pool.pool_type
            and volume.pool_id == pool_id
        ):
            raise InvalidParameterValueException(
                f"The specified pool doesn't support copying snapshots between zones{pool_id}"
            )
    zones = [p.data_center_id for i in pool_ids if (p := rt.store.first(StoragePool, "id = ?", (i,))) is not None]
    if sum(1 for z in zones if zones.count(z) > 1) > 1:
        raise CloudRuntimeException("Cannot copy the snapshot on multiple storage pools in one zone")
    return True


def refuse_system_template_volume(rt: Runtime, volume: Volume, vm: VmInstance | None) -> None:
    """``isOperationSupported``: a volume made from a SYSTEM template can't be snapshotted, nor given a policy (§5.1).

    It tests ``!CKS || !SHAREDFS``, true for every VM type: no such volume passes, although the intent (and spec
    §5.1) exempts CKS and SharedFS VMs.

    Raises:
        InvalidParameterValueException: the volume's template is a SYSTEM one.
    """
    if volume.template_id is None:
        return
    template = rt.store.first(Template, "id = ?", (volume.template_id,))
    user_vm_type = vm.user_vm_type if vm is not None else None
    if (
        template is not None
        and template.type == "SYSTEM"
        and (user_vm_type is None or user_vm_type != "CKSNode" or user_vm_type != "SharedFSVM")
    ):
        raise InvalidParameterValueException(
            f"Volume: {volume_str(volume)} is for System VM , Creating snapshot against System VM volumes is not"
            " supported"
        )


# --- the create phase (§5.1) -------------------------------------------------------------------------------------


@step("api.allocate")
def allocate(run: Run) -> str:
    """``VolumeApiServiceImpl.allocSnapshot`` then ``SnapshotManagerImpl.allocSnapshot`` (spec §5.1)."""
    rt, p = run.rt, run.params
    caller = rt.store.get(Account, run.caller_id or 0)
    volume_id: int = p["volume_id"]
    location_type = parse_location_type(p.get("location_type"), volume_id)
    volume = live(rt, Volume, volume_id)
    if not isinstance(volume, Volume):
        raise InvalidParameterValueException(f"Creating snapshot failed due to volume:{volume_id} doesn't exist")
    run.volume_id = volume.id
    zone = live(rt, Zone, volume.data_center_id)
    if not isinstance(zone, Zone):
        raise InvalidParameterValueException(f"Can't find zone for the volume ID: {volume.uuid}")
    if zone.allocation_state == "Disabled" and caller.type != 1:
        raise PermissionDeniedException(f"Cannot perform this operation, Zone is currently disabled: {zone.name}")
    if volume.state != VolumeState.Ready:
        raise InvalidParameterValueException(
            f"Volume: {volume_str(volume)} is not in Ready state but {volume.state}. Cannot take snapshot."
        )
    if volume.format == "DIR":
        raise InvalidParameterValueException(f"Snapshot not supported for volume: {volume_str(volume)}")
    vm = live(rt, VmInstance, volume.instance_id)
    refuse_system_template_volume(rt, volume, vm if isinstance(vm, VmInstance) else None)
    zone_ids = list(p.get("zone_ids", ()))
    pool_ids = list(p.get("storage_ids", ()))
    replicate = bool(p.get("use_storage_replication", False))
    add_pools_for_copy_to_primary(rt, volume, zone_ids, list(pool_ids), replicate)
    can_copy_on_primary(rt, pool_ids, volume)
    pool = rt.store.first(StoragePool, "id = ?", (volume.pool_id,)) if volume.pool_id is not None else None
    if pool is None:
        raise NullPointerException("storagePoolVO is null (the volume has no pool)")
    if not pool.is_managed and location_type is not None:
        raise InvalidParameterValueException(
            f"VolumeId: {volume_id} LocationType is supported only for managed storage"
        )
    if pool.is_managed and location_type is None:
        location_type = "PRIMARY"
    _check_zone_ids(rt, caller, zone, zone_ids, p, location_type, replicate)
    _check_kboss(rt, vm, volume)
    policy_id = int(p.get("policy_id") or 0)
    snapshot = _alloc(rt, run, caller, volume, policy_id, location_type, vm if isinstance(vm, VmInstance) else None)
    run.snapshot_id = snapshot.id
    run.account_id = snapshot.account_id
    run.flags["location_type"] = location_type
    return Take.Submit


def _check_zone_ids(
    rt: Runtime,
    caller: Account,
    zone: Zone,
    zone_ids: list[int],
    p: dict[str, object],
    location_type: str | None,
    replicate: bool,
) -> None:
    """Spec §5.1 step 4."""
    if not zone_ids:
        return
    if int(p.get("policy_id") or 0) > 0:  # type: ignore[call-overload]
        raise InvalidParameterValueException("zoneids parameter can not be specified with policyid parameter")
    if location_type == "PRIMARY":
        raise InvalidParameterValueException("zoneids cannot be specified with snapshot locationtype as PRIMARY")
    if not rt.config.flag("snapshot.backup.to.secondary") and not replicate:
        raise InvalidParameterValueException(
            "Backing up of snapshot has been disabled. Snapshot can not be taken for multiple zones"
        )
    if zone.type == "Edge":
        raise InvalidParameterValueException(
            "Backing up of snapshot is not supported by the zone of the volume. Snapshot can not be taken for "
            "multiple zones"
        )
    for zone_id in zone_ids:
        dest = live(rt, Zone, zone_id)
        if not isinstance(dest, Zone):
            raise InvalidParameterValueException("Unable to find the specified zone")
        if dest.allocation_state == "Disabled" and caller.type != 1:
            raise PermissionDeniedException(f"Cannot perform this operation, Zone is currently disabled: {dest.name}")
        if dest.type == "Edge":
            raise InvalidParameterValueException("Snapshot functionality is not supported on zone %s")


def _check_kboss(rt: Runtime, vm: object, volume: Volume) -> None:
    """Spec §5.1 step 5: a KVM VM with KVM incremental snapshots on and KBOSS backups can't be snapshotted.

    "Has backups" is modelled as the VM having a backup offering (``vm_instance.backup_offering_id``).
    """
    if not isinstance(vm, VmInstance) or vm.hypervisor_type != "KVM" or vm.backup_offering_id is None:
        return
    pool = rt.store.get(StoragePool, volume.pool_id or 0)
    zone = rt.store.get(Zone, vm.data_center_id)
    if rt.config.flag("kvm.incremental.snapshot", cluster=pool.cluster_id) and (zone.backup_provider or "") == "kboss":
        raise CloudRuntimeException(f"VM [{vm.uuid}] has KBOSS backups, cannot take incremental snapshots of it.")


def snapshot_type(rt: Runtime, policy_id: int) -> str:
    """``getSnapshotType``: MANUAL for policy 0, else HOURLY..MONTHLY from the policy's interval.

    A deleted policy is dereferenced all the same, so the scheduler's tick for it fails here (spec §9.2).

    Raises:
        NullPointerException: the policy does not exist.
    """
    if policy_id == 0:
        return "MANUAL"
    policy = rt.store.first(SnapshotPolicy, "id = ?", (policy_id,))
    if policy is None:
        raise NullPointerException(
            'Cannot invoke "com.cloud.storage.SnapshotPolicyVO.getInterval()" because the return value of '
            '"com.cloud.storage.dao.SnapshotPolicyDao.findById(Object)" is null'
        )
    return SNAPSHOT_TYPES[SNAPSHOT_TYPES.index("HOURLY") + policy.interval]


def supported_by_hypervisor(rt: Runtime, volume: Volume, pool: StoragePool) -> None:
    """``SnapshotManagerImpl.supportedByHypervisor`` (spec §5.1 step 6)."""
    hypervisor = pool.hypervisor or "None" if pool.scope == "ZONE" else volume_hypervisor(rt, volume)
    if hypervisor == "Ovm":
        raise InvalidParameterValueException("Ovm won't support taking snapshot")
    if hypervisor == "KVM" and pool.scope != "HOST":
        from snapshotfsm.store.records import Host  # noqa: PLC0415

        if pool.scope == "ZONE":
            hosts = rt.store.find(
                Host,
                "data_center_id = ? AND hypervisor_type = 'KVM' AND status = 'Up' AND removed IS NULL",
                (volume.data_center_id,),
            )
        else:
            hosts = rt.store.find(Host, "cluster_id = ? AND removed IS NULL", (pool.cluster_id,))
        if hosts and not _host_supports_snapshot(rt, hosts[0], volume):
            raise CloudRuntimeException(
                "KVM Snapshot is not supported for Running VMs. It is disabled by default due to a possible volume "
                "corruption in certain cases. To enable it set global settings kvm.snapshot.enabled to True. See the"
                " documentation for more details."
            )
    if volume.instance_id is None:
        return
    vm = rt.store.first(VmInstance, "id = ? AND removed IS NULL", (volume.instance_id,))
    if vm is None:
        return
    if vm.state in ("Destroyed", "Expunging"):
        from snapshotfsm.describe import vm_str  # noqa: PLC0415

        raise CloudRuntimeException(
            f"Creating snapshot failed due to volume: {volume_str(volume)} is associated with vm: {vm_str(vm)} is in"
            f" {vm.state} state"
        )
    if vm.hypervisor_type in ("VMware", "KVM"):
        ongoing = rt.store.count(
            Snapshot,
            "removed IS NULL AND status IN (?, ?, ?) AND volume_id IN"
            " (SELECT id FROM volumes WHERE instance_id = ? AND state = 'Ready' AND removed IS NULL)",
            (SnapshotState.Creating, SnapshotState.CreatedOnPrimary, SnapshotState.BackingUp, vm.id),
        )
        if ongoing:
            raise InvalidParameterValueException(
                "There is other active snapshot tasks on the instance to which the volume is attached, please try "
                "again later"
            )
    if rt.store.count(
        VmSnapshot, "vm_id = ? AND removed IS NULL AND state IN ('Creating', 'Reverting', 'Expunging')", (vm.id,)
    ):
        raise CloudRuntimeException(
            "There is other active Instance Snapshot tasks on the Instance to which the volume is attached, please "
            "try again later"
        )


def _host_supports_snapshot(rt: Runtime, host: object, volume: Volume) -> bool:
    """``hostSupportsSnapsthotForVolume``: kvm.snapshot.enabled for live VMs, and a ``snapshot`` host capability."""
    from snapshotfsm.store.records import Host  # noqa: PLC0415

    assert isinstance(host, Host)
    if host.hypervisor_type != "KVM":
        return True
    if volume.instance_id is not None:
        vm = rt.store.first(VmInstance, "id = ?", (volume.instance_id,))
        if vm is not None and vm.state not in ("Stopped", "Destroyed") and not rt.config.flag("kvm.snapshot.enabled"):
            return False
    return any("snapshot" in token for token in host.capabilities.split(","))


def store_resource_type(rt: Runtime, zone: Zone, location_type: str | None) -> str:
    """``getStoreResourceType``: secondary storage unless backup is off for the zone or the location is PRIMARY."""
    if not backup_to_secondary_for_zone(rt, zone) or location_type == "PRIMARY":
        return accounting.PRIMARY_STORAGE
    return accounting.SECONDARY_STORAGE


def backup_to_secondary_for_zone(rt: Runtime, zone: Zone) -> bool:
    """``isBackupSnapshotToSecondaryForZone``: the switch is on and the zone is not Edge (spec §5.4 step 2)."""
    return rt.config.flag("snapshot.backup.to.secondary") and zone.type != "Edge"


def _alloc(
    rt: Runtime,
    run: Run,
    caller: Account,
    volume: Volume,
    policy_id: int,
    location_type: str | None,
    vm: VmInstance | None,
) -> Snapshot:
    """``SnapshotManagerImpl.allocSnapshot``: checks, the Allocated row, and the two counters (spec §5.1 step 6)."""
    pool = rt.store.get(StoragePool, volume.pool_id or 0)
    supported_by_hypervisor(rt, volume, pool)
    check_access(rt, caller, volume.account_id)
    kind = snapshot_type(rt, policy_id)
    owner = rt.store.get(Account, volume.account_id)
    name = run.params.get("name") or f"{vm.host_name or vm.name if vm else 'detached'}_{volume.name}_" + (
        rt.clock.now().strftime("%Y%m%d%H%M%S")
    )
    if pool.scope == "ZONE":
        hypervisor = pool.hypervisor or "None"
        if pool.is_managed and hypervisor == "Any":
            hypervisor = {"VHD": "XenServer", "OVA": "VMware", "QCOW2": "KVM"}.get(volume.format, hypervisor)
    else:
        hypervisor = volume_hypervisor(rt, volume)
    zone = rt.store.get(Zone, volume.data_center_id)
    store_type = store_resource_type(rt, zone, location_type)
    try:
        accounting.check_limit(rt, owner, accounting.SNAPSHOT, 1)
        accounting.check_limit(rt, owner, store_type, volume.size)
    except ResourceAllocationException:
        if kind != "MANUAL":
            msg = f"Snapshot resource limit exceeded for account id : {owner.id}. Failed to create recurring snapshots"
            accounting.alert(rt, "ALERT_TYPE_UPDATE_RESOURCE_COUNT", msg, None)
        raise
    snapshot = rt.store.insert(
        Snapshot(
            uuid=rt.new_uuid(),
            data_center_id=volume.data_center_id,
            account_id=volume.account_id,
            domain_id=volume.domain_id,
            volume_id=volume.id,
            name=str(name),
            status=SnapshotState.Allocated,
            snapshot_type=SNAPSHOT_TYPES.index(kind),
            type_description=kind,
            size=volume.size,
            location_type=location_type,
            hypervisor_type=hypervisor,
            created=rt.clock.timestamp(),
        )
    )
    accounting.change_count(rt, volume.account_id, accounting.SNAPSHOT, 1)
    accounting.change_count(rt, volume.account_id, store_type, volume.size)
    accounting.action_event(
        rt,
        "SNAPSHOT.CREATE",
        f"Successfully created entity for allocating snapshot: {snapshot.name}",
        account_id=volume.account_id,
        resource_id=snapshot.id,
        state="Created",
    )
    return snapshot


@step("api.reject")
def reject(run: Run) -> None:
    """The API answers the refusal (``ApiServer``'s mapping); the engine rolls the create transaction back."""
    caller = run.rt.store.first(Account, "id = ?", (run.caller_id,))
    assert run.error is not None
    run.flags["api_error"] = create_phase_error(run.error, caller)


# --- the execute phase (§5.2) ------------------------------------------------------------------------------------


@step("api.validate")
def validate(run: Run) -> str:
    """``takeSnapshotInternal``'s checks, in its order (spec §5.2), then the attached/detached branch (§4.3)."""
    rt, p = run.rt, run.params
    from snapshotfsm.orchestration.jobs import mark_executing  # noqa: PLC0415

    mark_executing(run)
    caller = rt.store.get(Account, run.caller_id or 0)
    volume_obj = live(rt, Volume, p["volume_id"])
    volume = volume_obj if isinstance(volume_obj, Volume) else None
    zone_ids = list(p.get("zone_ids", ()))
    pool_ids = list(p.get("storage_ids", ()))
    pool_ids = add_pools_for_copy_to_primary(rt, volume, zone_ids, pool_ids, bool(p.get("use_storage_replication")))
    if volume is not None:
        can_copy_on_primary(rt, pool_ids, volume)
    if volume is None:
        raise InvalidParameterValueException(f"Creating snapshot failed due to volume:{p['volume_id']} doesn't exist")
    if volume_hypervisor(rt, volume) == "External":
        raise InvalidParameterValueException("Snapshot operations are not allowed for External hypervisor type")
    policy_id = int(p.get("policy_id") or 0)
    if policy_id > 0:
        if zone_ids:
            raise InvalidParameterValueException(
                "zoneids can not be specified for snapshots linked with snapshot policy"
            )
        details = rt.store.find(SnapshotPolicyDetail, "policy_id = ?", (policy_id,))
        zone_ids = [int(d.value) for d in details if d.name == "zoneid"]
        if pool_ids:
            raise InvalidParameterValueException(
                "storageids can not be specified for snapshots linked with snapshot policy"
            )
        pool_ids = [int(d.value) for d in details if d.name == "storageid"]
    for zone_id in zone_ids:
        if rt.store.first(Zone, "id = ?", (zone_id,)) is None:
            raise InvalidParameterValueException("Please specify a valid destination zone.")
    check_access(rt, caller, volume.account_id)
    if volume.state != VolumeState.Ready:
        raise InvalidParameterValueException(
            f"Volume: {volume_str(volume)} is not in Ready state but {volume.state}. Cannot take snapshot."
        )
    location_type = parse_location_type(p.get("location_type"), volume.id)
    pool = rt.store.get(StoragePool, volume.pool_id or 0)
    if pool.is_managed and location_type is None:
        location_type = "PRIMARY"
    run.flags.update(location_type=location_type, zone_ids=zone_ids, pool_ids=pool_ids)
    vm = live(rt, VmInstance, volume.instance_id)
    if isinstance(vm, VmInstance):
        check_access(rt, caller, vm.account_id)
        run.vm_id = vm.id
        return Take.Enqueue
    return Take.RunDirect


def submit_create(
    rt: Runtime, params: dict[str, object], *, caller_id: int, user_id: int, execute_account_id: int | None = None
) -> AsyncJob:
    """``ApiServer.processAsyncCmd`` for createSnapshot: the create phase now, in one transaction, then the job.

    ``execute_account_id`` is the account the job runs as when it differs from the create phase's caller (the
    scheduler creates as the system account and runs the job in the volume owner's account, spec §9.2).

    Raises:
        ApiError: the create phase refused the call (spec §5.1); nothing was written.
    """
    run: Run | None = None
    try:
        with rt.store.atomic():
            run = rt.runner.start(
                "take_snapshot",
                {
                    "params": params,
                    "caller_id": caller_id,
                    "user_id": user_id,
                    "flags": {"execute_account_id": execute_account_id} if execute_account_id else {},
                },
            )
            rt.runner.fire(run, Take.Allocate)
            if run.state == TakeState.Rejected:
                _refuse()
    except _Refused:
        assert run is not None
        assert run.error is not None
        rt.runner.live.pop(run.workflow.id, None)
        code, text = run.flags["api_error"]
        raise ApiError(code, text, exception=run.error) from None
    assert run.job_id is not None
    return rt.store.get(AsyncJob, run.job_id)


class _Refused(Exception):
    """Raised inside the create transaction so that a refused call writes nothing."""


def _refuse() -> None:
    raise _Refused
