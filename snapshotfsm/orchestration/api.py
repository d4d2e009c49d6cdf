"""The createSnapshot API: its create phase (spec §5.1) and its execute-phase checks (spec §5.2).

The create phase runs in the caller's thread with no transaction of its own (spec §21.2, row
``CreateSnapshotCmd.create → allocSnapshot``): each write commits on its own, and what was written before a failure
stays (spec §21.4.3). Every refusal of §5.1 comes before the ``snapshots`` insert, so a refused call leaves no
CloudStack row but the ERROR event of ``allocSnapshot``'s ``@ActionEvent`` and, for a recurring snapshot over its
limit, the alert; the model keeps the take workflow, ``Rejected``, with its ``failure`` row. The execute phase runs
in the async job. The error codes of both are in ``api_errors``.
"""

from __future__ import annotations

import contextlib

from snapshotfsm.describe import vm_str, volume_str
from snapshotfsm.errors import (
    ApiError,
    CloudException,
    CloudRuntimeException,
    InvalidParameterValueException,
    NullPointerException,
    PermissionDeniedException,
    ResourceAllocationException,
)
from snapshotfsm.names import SnapshotState, Take, TakeState, VolumeState
from snapshotfsm.orchestration import accounting
from snapshotfsm.orchestration.api_errors import create_phase_error
from snapshotfsm.orchestration.contexts import Machine, SnapshotRequest, TakeContext
from snapshotfsm.orchestration.contract import StepTable, Turn
from snapshotfsm.orchestration.jobs import create_event, mark_executing
from snapshotfsm.orchestration.lookups import (
    add_pools_for_copy_to_primary,
    can_copy_on_primary,
    check_access,
    live,
    parse_location_type,
    refuse_system_template_volume,
    store_resource_type,
    volume_hypervisor,
    volume_pool,
)
from snapshotfsm.orchestration.runner import Runner
from snapshotfsm.orchestration.runtime import Runtime
from snapshotfsm.store.records import (
    Account,
    AsyncJob,
    Host,
    Snapshot,
    SnapshotPolicy,
    SnapshotPolicyDetail,
    StoragePool,
    VmInstance,
    VmSnapshot,
    Volume,
    Zone,
)

SNAPSHOT_TYPES = ("MANUAL", "RECURRING", "TEMPLATE", "HOURLY", "DAILY", "WEEKLY", "MONTHLY", "GROUP", "FROM_GROUP")
"""``Snapshot.Type`` in ordinal order; a policy's interval (HOURLY=0 ...) maps to HOURLY + interval."""


# --- the create phase (§5.1) -------------------------------------------------------------------------------------


def allocate(t: Turn[TakeContext]) -> str:
    """``VolumeApiServiceImpl.allocSnapshot`` then ``SnapshotManagerImpl.allocSnapshot`` (spec §5.1).

    No transaction (spec §21.2, row ``CreateSnapshotCmd.create → allocSnapshot``): the ``snapshots`` insert, each
    count increment (its own transaction, ``accounting.change_count``) and the Created action event commit one by
    one, so a failure or a crash after the insert leaves the ``Allocated`` row and the increments done so far
    (spec §21.4.3).
    """
    rt, ctx = t.rt, t.ctx
    request = ctx.request
    caller = rt.store.get(Account, ctx.caller_id)
    volume_id = request.volume_id
    # CreateSnapshotCmd.getLocationType() is an argument of the call: it throws before the @ActionEvent method runs.
    location_type = parse_location_type(request.location_type, volume_id)
    ctx.intercepted = True
    volume = live(rt, Volume, volume_id)
    if volume is None:
        raise InvalidParameterValueException(f"Creating snapshot failed due to volume:{volume_id} doesn't exist")
    ctx.volume_id = volume.id
    zone = live(rt, Zone, volume.data_center_id)
    if zone is None:
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
    refuse_system_template_volume(rt, volume, vm)
    zone_ids = list(request.zone_ids)
    pool_ids = list(request.storage_ids)
    replicate = request.use_storage_replication
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
    _check_zone_ids(rt, caller, zone, zone_ids, request.policy_id, location_type, replicate)
    _check_kboss(rt, vm, volume)
    _alloc(rt, ctx, caller, volume, location_type, vm)
    ctx.location_type = location_type
    # interceptComplete of allocSnapshot (create=true): the calling user's and account's Created event.
    create_event(rt, ctx, "Successfully created entity for allocating snapshot", state="Created")
    ctx.intercepted = False
    return Take.Submit


def _check_zone_ids(
    rt: Runtime,
    caller: Account,
    zone: Zone,
    zone_ids: list[int],
    policy_id: int,
    location_type: str | None,
    replicate: bool,
) -> None:
    """Spec §5.1 step 4."""
    if not zone_ids:
        return
    if policy_id > 0:
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
        if dest is None:
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
    pool = volume_pool(rt, volume)
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
        raise CloudRuntimeException(
            f"Creating snapshot failed due to volume: {volume_str(volume)} is associated with vm: {vm_str(vm)} is in"
            f" {vm.state} state"
        )
    if vm.hypervisor_type in ("VMware", "KVM"):
        ongoing = rt.store.count(
            Snapshot,
            "removed IS NULL AND status IN (?, ?, ?) AND volume_id IN"
            " (SELECT id FROM volumes WHERE instance_id = ? AND state = ? AND removed IS NULL)",
            (SnapshotState.Creating, SnapshotState.CreatedOnPrimary, SnapshotState.BackingUp, vm.id, VolumeState.Ready),
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


def _host_supports_snapshot(rt: Runtime, host: Host, volume: Volume) -> bool:
    """``hostSupportsSnapsthotForVolume``: kvm.snapshot.enabled for live VMs, and a ``snapshot`` host capability."""
    if host.hypervisor_type != "KVM":
        return True
    if volume.instance_id is not None:
        vm = rt.store.first(VmInstance, "id = ?", (volume.instance_id,))
        if vm is not None and vm.state not in ("Stopped", "Destroyed") and not rt.config.flag("kvm.snapshot.enabled"):
            return False
    return any("snapshot" in token for token in host.capabilities.split(","))


def _alloc(
    rt: Runtime, ctx: TakeContext, caller: Account, volume: Volume, location_type: str | None, vm: VmInstance | None
) -> None:
    """``SnapshotManagerImpl.allocSnapshot``: checks, the Allocated row, and the two counters (spec §5.1 step 6).

    Every check comes before the insert. The insert and each increment commit on their own (spec §21.4.3): an
    increment that throws (no ``resource_count`` row) leaves the row ``Allocated`` and the earlier increment.
    """
    request = ctx.request
    policy_id = request.policy_id
    pool = volume_pool(rt, volume)
    supported_by_hypervisor(rt, volume, pool)
    check_access(caller, volume.account_id)
    kind = snapshot_type(rt, policy_id)
    owner = rt.store.get(Account, volume.account_id)
    name = request.name or f"{vm.host_name or vm.name if vm else 'detached'}_{volume.name}_" + (
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
            accounting.alert(rt, accounting.ALERT_TYPE_UPDATE_RESOURCE_COUNT, msg)
        raise
    # Hardened (allocation_is_atomic): the row and its two charges commit together, or none of them does.
    try:
        with rt.store.atomic() if rt.profile.allocation_is_atomic else contextlib.nullcontext():
            _insert_and_charge(rt, ctx, volume, name, kind, location_type, hypervisor, store_type)
    except CloudException:
        if rt.profile.allocation_is_atomic:
            ctx.snapshot_id = ctx.account_id = 0  # the row went with the rollback
        raise


def _insert_and_charge(
    rt: Runtime,
    ctx: TakeContext,
    volume: Volume,
    name: str,
    kind: str,
    location_type: str | None,
    hypervisor: str,
    store_type: str,
) -> None:
    """The ``snapshots`` insert, then the ``snapshot`` and store-type increments (spec §5.1 step 6)."""
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
    # From here on a failure leaves the row: the ids are known to the take (and to its ERROR event).
    ctx.snapshot_id = snapshot.id
    ctx.account_id = snapshot.account_id
    accounting.change_count(rt, volume.account_id, accounting.SNAPSHOT, 1, owner_id=snapshot.account_id)
    accounting.change_count(rt, volume.account_id, store_type, volume.size, owner_id=snapshot.account_id)


def reject(t: Turn[TakeContext]) -> None:
    """The create phase failed: ``allocSnapshot``'s ERROR event, then the API's answer (``ApiServer``'s mapping).

    ``interceptException`` of ``allocSnapshot`` (create=true) writes a Created event at level ERROR, the calling
    user's and account's, naming the snapshot only if it was inserted. Nothing written before is undone.
    """
    rt, ctx = t.rt, t.ctx
    if ctx.intercepted:
        create_event(rt, ctx, "Error while creating entity for allocating snapshot", state="Created", level="ERROR")
        ctx.intercepted = False
    caller = rt.store.first(Account, "id = ?", (ctx.caller_id,))
    ctx.api_error = create_phase_error(ctx.failure(), caller)


# --- the execute phase (§5.2) ------------------------------------------------------------------------------------


def validate(t: Turn[TakeContext]) -> str:
    """``takeSnapshotInternal``'s checks, in its order (spec §5.2), then the attached/detached branch (§4.3)."""
    rt, ctx = t.rt, t.ctx
    request = ctx.request
    mark_executing(rt, ctx.job_id)
    caller = rt.store.get(Account, ctx.caller_id)
    volume = live(rt, Volume, request.volume_id)
    if volume is None:
        # CreateSnapshotCmd.execute() reads getEntityOwnerId() for takeSnapshot's arguments: a removed volume throws
        # there, before the @ActionEvent method, so no Started and no ERROR event. (takeSnapshotInternal's own
        # "doesn't exist" check would need the volume removed between the two reads.)
        raise InvalidParameterValueException(f"Unable to find volume by id={request.volume_id}")
    # interceptStart of takeSnapshot (async=true): the Started event, the description capitalised.
    ctx.intercepted = True
    create_event(rt, ctx, "Taking snapshot", state="Started")
    zone_ids = list(request.zone_ids)
    pool_ids = list(request.storage_ids)
    pool_ids = add_pools_for_copy_to_primary(rt, volume, zone_ids, pool_ids, request.use_storage_replication)
    can_copy_on_primary(rt, pool_ids, volume)
    if volume_hypervisor(rt, volume) == "External":
        raise InvalidParameterValueException("Snapshot operations are not allowed for External hypervisor type")
    policy_id = request.policy_id
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
    check_access(caller, volume.account_id)
    if volume.state != VolumeState.Ready:
        raise InvalidParameterValueException(
            f"Volume: {volume_str(volume)} is not in Ready state but {volume.state}. Cannot take snapshot."
        )
    location_type = parse_location_type(request.location_type, volume.id)
    pool = volume_pool(rt, volume)
    if pool.is_managed and location_type is None:
        location_type = "PRIMARY"
    ctx.location_type = location_type
    ctx.zone_ids = tuple(zone_ids)
    ctx.pool_ids = tuple(pool_ids)
    vm = live(rt, VmInstance, volume.instance_id)
    if vm is not None:
        check_access(caller, vm.account_id)
        ctx.vm_id = vm.id
        return Take.Enqueue
    return Take.RunDirect


def submit_create(
    runner: Runner,
    request: SnapshotRequest,
    *,
    caller_id: int,
    user_id: int,
    execute_account_id: int | None = None,
    scheduled: bool = False,
) -> AsyncJob:
    """``ApiServer.processAsyncCmd`` for createSnapshot: the create phase now, then the job (spec §4.2).

    No transaction wraps the call (spec §21.2): ``api.allocate``'s writes commit one by one, then ``jobs.submit``
    inserts the job. ``execute_account_id`` is the account the job runs as when it differs from the create phase's
    caller, and ``scheduled`` marks a call of the scheduler, which writes its own Scheduled event (spec §9.2).

    Raises:
        ApiError: the create phase refused or failed (spec §5.1, §21.4.3). What it wrote stays: nothing of
            CloudStack's for a refusal but ``allocSnapshot``'s ERROR event (and a recurring snapshot's limit alert),
            the ``Allocated`` row and the increments done for a failure after the insert; the take workflow ends
            ``Rejected`` with its ``failure`` row.
    """
    rt = runner.rt
    ctx = TakeContext(
        request=request,
        caller_id=caller_id,
        user_id=user_id,
        execute_account_id=execute_account_id,
        scheduled=scheduled,
    )
    run = runner.start(Machine.TAKE, ctx)
    runner.fire(run, Take.Allocate)
    if run.state == TakeState.Rejected:
        code, text = ctx.refusal()
        raise ApiError(code, text, exception=ctx.failure())
    return rt.store.get(AsyncJob, ctx.job_id)


STEPS: StepTable = {"api.allocate": allocate, "api.reject": reject, "api.validate": validate}
