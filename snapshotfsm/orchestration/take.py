"""The take itself: ``orchestrateTakeVolumeSnapshot`` (spec §5.3) and ``SnapshotManagerImpl.takeSnapshot`` (§5.4).

Preparation, the strategy, the outer catch's rollback, and post-processing.
"""

from __future__ import annotations

import logging

from snapshotfsm.chains import end_current_chain, end_last_chain, image_parent, volume_cluster_id
from snapshotfsm.describe import snapshot_object_str, snapshot_str, volume_str
from snapshotfsm.drivers.base import STORAGE_SYSTEM_SNAPSHOT
from snapshotfsm.drivers.image import ImageStoreDriver
from snapshotfsm.errors import (
    CloudException,
    CloudRuntimeException,
    InvalidParameterValueException,
    NullPointerException,
    UnsupportedOperationException,
)
from snapshotfsm.names import RefEvent, RefState, Retention, SnapshotState, Take, VolumeState
from snapshotfsm.objects import store_ref_event
from snapshotfsm.orchestration import accounting, copies, retention
from snapshotfsm.orchestration.contexts import Machine, TakeContext
from snapshotfsm.orchestration.contract import StepTable, Turn
from snapshotfsm.orchestration.lookups import (
    backup_to_secondary_for_zone,
    live,
    store_resource_type,
    volume_hypervisor,
    volume_pool,
)
from snapshotfsm.orchestration.runtime import Runtime
from snapshotfsm.store.records import (
    ImageStore,
    Snapshot,
    SnapshotSchedule,
    SnapshotStoreRef,
    StoragePool,
    VmInstance,
    Volume,
    Zone,
)
from snapshotfsm.strategies.base import Operation, SnapshotTake

log = logging.getLogger(__name__)

FILE_BASED_POOLS = ("SharedMountPoint", "NetworkFilesystem", "Filesystem")
REFUSED_TAKE = "CreateSnapshotCmd.execute (hardened: the refused take's rows)"
"""How the log names ``refused_take_gives_back``'s writes (direct, as upstream's ``cleanupSnapshot``'s)."""


def attached_or_direct(ctx: TakeContext, attached: str, direct: str) -> str:
    """The next event on the work-job path or on the detached path."""
    return attached if ctx.attached else direct


def orchestrate(t: Turn[TakeContext]) -> str:
    """``orchestrateTakeVolumeSnapshot`` (spec §5.3): Ready re-check, the encrypted-volume rule, the payload."""
    rt, ctx = t.rt, t.ctx
    volume = live(rt, Volume, ctx.volume_id)
    if volume is None:
        raise InvalidParameterValueException(f"Creating snapshot failed due to volume:{ctx.volume_id} doesn't exist")
    if volume.state != VolumeState.Ready:
        raise InvalidParameterValueException(
            f"Volume: {volume_str(volume)} is not in Ready state but {volume.state}. Cannot take snapshot."
        )
    pool = volume_pool(rt, volume)
    # The flag is named isSnapshotOnStorPoolOnly, yet it is true when backup to secondary is ENABLED (spec §5.3).
    storpool_only = pool.pool_type == "StorPool" and rt.config.flag("snapshot.backup.to.secondary")
    vm = rt.store.first(VmInstance, "id = ?", (volume.instance_id,)) if volume.instance_id is not None else None
    if volume.encrypt_format is not None and vm is not None and vm.state != "Stopped" and not storpool_only:
        raise UnsupportedOperationException("Volume snapshots for encrypted volumes are not supported if VM is running")
    ctx.payload = ctx.new_payload(location_type=ctx.location_type)
    return Take.Prepare


def kvm_file_based(rt: Runtime, volume: Volume, pool: StoragePool) -> bool:
    """``isHypervisorKvmAndFileBasedStorage`` (spec §5.4 step 2)."""
    return volume_hypervisor(rt, volume) == "KVM" and pool.pool_type in FILE_BASED_POOLS


def find_image_store(rt: Runtime, snapshot: Snapshot) -> ImageStore | None:
    """``findSnapshotImageStore``: a writable store of the zone with room (spec §5.4 step 3, §16.2 item 3).

    For a delta it first looks for a Ready image ref of the snapshot itself, which never exists when it is asked, so
    a delta can land on another store than its parent (a quirk the model cannot show with one store per zone). With
    several candidates CloudStack picks one with free capacity; the model takes the first by id, so that runs are
    reproducible.
    """
    stores = rt.store.find(
        ImageStore,
        "data_center_id = ? AND removed IS NULL AND readonly = 0 AND role = 'Image'",
        (snapshot.data_center_id,),
    )
    for store in stores:
        if store.total_size == 0 or store.total_size - store.used_bytes >= snapshot.size:
            return store
    return None


def new_image_ref(rt: Runtime, snapshot: Snapshot, image_store_id: int) -> SnapshotStoreRef:
    """``ObjectInDataStoreManagerImpl.create`` on an image store: an Allocated ref at the snapshot's install path.

    Its parent is looked up in the store's zone (spec §16.1), with ``kvm.incremental.snapshot`` of the cluster of
    the volume's host (``findClusterIdByVolumeInfo``).
    """
    volume = rt.store.get(Volume, snapshot.volume_id)
    cluster_id = volume_cluster_id(rt.store, volume)
    zone_id = rt.store.get(ImageStore, image_store_id).data_center_id
    incremental = rt.config.flag("kvm.incremental.snapshot", cluster=cluster_id)
    return rt.store.insert(
        SnapshotStoreRef(
            store_id=image_store_id,
            store_role="Image",
            snapshot_id=snapshot.id,
            volume_id=snapshot.volume_id,
            state=RefState.Allocated,
            size=snapshot.size,
            install_path=ImageStoreDriver.install_path(snapshot),
            parent_snapshot_id=image_parent(rt.store, snapshot, zone_id, kvm_incremental=incremental),
            created=rt.clock.timestamp(),
            last_updated=rt.clock.timestamp(),
        )
    )


def prepare(t: Turn[TakeContext]) -> str:
    """Spec §5.4 steps 1-4: flags, the pre-selected image store (KVM file-based), ``updateSnapshotPayload``.

    Step 3 runs before SnapshotManagerImpl's try block: its failure gives nothing back (``take.abandon``).
    """
    rt, ctx = t.rt, t.ctx
    snapshot = rt.store.get(Snapshot, ctx.snapshot_id)
    volume = rt.store.get(Volume, ctx.volume_id)
    pool = volume_pool(rt, volume)
    zone = rt.store.get(Zone, volume.data_center_id)
    cluster_id = volume_cluster_id(rt.store, volume)
    file_based = kvm_file_based(rt, volume, pool)
    backup_on = backup_to_secondary_for_zone(rt, zone)
    ctx.kvm_file_based, ctx.backup_on = file_based, backup_on
    if file_based and backup_on:
        image = find_image_store(rt, snapshot)
        if image is None:
            text = snapshot_object_str(snapshot, pool.id)
            raise CloudRuntimeException(f"Could not find any secondary storage to allocate snapshot [{text}].")
        ctx.image_store_id = image.id
    payload = ctx.payload
    if pool.is_managed and payload.location_type is None:
        payload.location_type = "PRIMARY"
    elif not pool.is_managed:
        payload.location_type = None
    if file_based and rt.config.flag("kvm.incremental.snapshot", cluster=cluster_id):
        payload.kvm_incremental = True
    ctx.take = SnapshotTake(
        snapshot=snapshot,
        volume=volume,
        pool=pool,
        payload=payload,
        cluster_id=cluster_id,
        image_store_id=ctx.image_store_id,
    )
    return Take.ChooseStrategy


def abandon(t: Turn[TakeContext]) -> str:
    """Nothing to give back: the exception was thrown before SnapshotManagerImpl's try (spec §5.4 step 3)."""
    return attached_or_direct(t.ctx, Take.FailWork, Take.Fail)


def choose_strategy(t: Turn[TakeContext]) -> str:
    """Spec §5.4 step 5: the factory's TAKE strategy; none soft-removes the row and throws an UOE."""
    rt, ctx = t.rt, t.ctx
    snapshot = ctx.take.snapshot
    if rt.store.first(Snapshot, "id = ? AND removed IS NULL", (snapshot.id,)) is None:
        # getSnapshot(snapshotId, store) wraps findById's null for a row soft-removed meanwhile (a deleteSnapshot
        # of the Allocated snapshot while its work job waited in the VM's queue): canHandle dereferences it.
        raise NullPointerException(f"snapshot {snapshot.id} was removed before its take began (null SnapshotVO)")
    strategy = rt.factory.best(rt.strategy_env, snapshot, Operation.TAKE)
    if strategy is None:
        rt.store.remove(snapshot, by="SnapshotManagerImpl.takeSnapshot (no strategy)")
        raise UnsupportedOperationException(
            f"Unable to find a snapshot strategy to create snapshot [{snapshot_str(snapshot)}] of volume "
            f"[{ctx.take.volume.uuid}]. Please check the logs."
        )
    ctx.strategy = strategy
    return Take.BeginTake


def unwind(t: Turn[TakeContext]) -> str:
    """The outer catch of SnapshotManagerImpl.takeSnapshot (spec §5.4 step 14).

    It gives back the snapshot count and the store size, wraps what is neither a CloudRuntimeException nor an UOE,
    and rethrows. Snapshot rows stay as the failure left them.
    """
    rt, ctx = t.rt, t.ctx
    error = ctx.failure()
    volume = rt.store.get(Volume, ctx.volume_id)
    zone = rt.store.get(Zone, volume.data_center_id)
    account_id = ctx.payload.account_id
    owner = rt.store.get(Snapshot, ctx.snapshot_id).account_id
    accounting.change_count(rt, account_id, accounting.SNAPSHOT, -1, owner_id=owner)
    store_type = store_resource_type(rt, zone, ctx.payload.location_type)
    accounting.change_count(rt, account_id, store_type, -volume.size, owner_id=owner)
    ctx.given_back = True
    if not isinstance(error, (CloudRuntimeException, UnsupportedOperationException)):
        ctx.error = CloudRuntimeException("Failed to create snapshot", cause=error)
    return attached_or_direct(ctx, Take.FailWork, Take.Fail)


def give_back_refused(rt: Runtime, ctx: TakeContext) -> None:
    """Hardened (``refused_take_gives_back``): a failed take leaves nothing of its allocation (departs from §5.2, §5.4).

    Called when the API job fails. A refusal before ``SnapshotManagerImpl.takeSnapshot``'s try (the checks of
    ``takeSnapshotInternal`` and ``orchestrateTakeVolumeSnapshot``, §5.2 and §5.3; no image store, §5.4 step 3) never
    reached the outer catch: the ``snapshot`` count and the store size ``allocSnapshot`` charged (§5.1) are given back
    here, by the row's size on the store type its location type gave. A take that failed before the snapshot left
    ``Allocated`` (a strategy's refusal, a volume no longer Ready at ``SnapshotRequested``) leaves its row live: it is
    soft-removed, as ``cleanupSnapshot`` (§10.1) and a delete of an ``Allocated`` snapshot (§9.4) remove one. A row a
    delete removed meanwhile gave nothing back under this flag (``delete.finish``): its charges are given back here.
    A snapshot refused after its file was made (``CreatedOnPrimary``: a backup the strategy refuses, §5.7) is undone
    as the restart undoes a failed take (``reconcile.undo_take``): Ready refs to the GC, snapshot ``Error``.
    """
    snapshot = rt.store.first(Snapshot, "id = ?", (ctx.snapshot_id,))
    if snapshot is None:
        return
    if not ctx.given_back:
        zone = rt.store.get(Zone, snapshot.data_center_id)
        store_type = store_resource_type(rt, zone, snapshot.location_type)
        owner = snapshot.account_id
        accounting.change_count(rt, owner, accounting.SNAPSHOT, -1, owner_id=owner)
        accounting.change_count(rt, owner, store_type, -snapshot.size, owner_id=owner)
        ctx.given_back = True
    if snapshot.removed is not None:
        return
    if snapshot.status == SnapshotState.Allocated:
        rt.store.remove(snapshot, by=REFUSED_TAKE)
    elif snapshot.status == SnapshotState.CreatedOnPrimary:
        # Refused after the file was made (StorageSystem's archive, spec §5.7): undone as a restart undoes a take,
        # its files to the GC (Destroying refs, snapshot Error as cleanupSnapshot writes it, §10.1, §10.5).
        for ref in rt.store.find(SnapshotStoreRef, "snapshot_id = ? AND state = ?", (snapshot.id, RefState.Ready)):
            store_ref_event(rt.store, ref, RefEvent.DestroyRequested)
        rt.store.write_state_directly(snapshot, SnapshotState.Error, by=REFUSED_TAKE)


def data_store_role(rt: Runtime, ctx: TakeContext, snapshot: Snapshot) -> str:
    """Spec §5.4 step 10: Primary for an async backup; else ``SnapshotHelper.getDataStoreRole`` when backup is on."""
    if ctx.payload.async_backup and ctx.backup_on and not ctx.kvm_file_based:
        return "Primary"
    if not ctx.backup_on:
        return "Primary"
    primary = rt.store.first(SnapshotStoreRef, "snapshot_id = ? AND store_role = 'Primary'", (snapshot.id,))
    if primary is None:
        return "Image"
    pool = rt.store.get(StoragePool, primary.store_id)
    volume = rt.store.get(Volume, snapshot.volume_id)
    backup_config = rt.config.flag("snapshot.backup.to.secondary")
    if (pool.pool_type in ("RBD", "PowerFlex") or volume_hypervisor(rt, volume) == "KVM") and not backup_config:
        return "Primary"
    if STORAGE_SYSTEM_SNAPSHOT in rt.strategy_env.capabilities(pool):
        return "Primary"
    return "Image"


def post_create(t: Turn[TakeContext]) -> str | None:
    """``postCreateSnapshot`` (spec §5.4 step 9, §9.3): the policy's schedule, then retention.

    A snapshot row removed meanwhile stops it after the schedule's update, as the row is read with ``findById``.

    Retention deletes older recurring snapshots through the delete workflow; the job waits for them. Any failure
    here ends the post-processing ("post process snapshot failed" is only logged).
    """
    rt, ctx = t.rt, t.ctx
    snapshot = rt.store.get(Snapshot, ctx.snapshot_id)
    try:
        policy_id = ctx.payload.policy_id
        if policy_id:
            # getCurrentSchedule(volumeId, policyId, executing=true): the schedule whose job is running, so a
            # manual createSnapshot naming the policy leaves the policy's pending schedule alone.
            schedule = rt.store.first(
                SnapshotSchedule,
                "volume_id = ? AND policy_id = ? AND async_job_id IS NOT NULL",
                (snapshot.volume_id, policy_id),
            )
            if schedule is not None:
                rt.store.update(schedule, snapshot_id=snapshot.id)
        if snapshot.removed is not None:
            return Take.Retained  # snapshotDao.findById finds no removed row: no retention, no chain end
        if snapshot.type_description in ("HOURLY", "DAILY", "WEEKLY", "MONTHLY"):
            plan = retention.plan(rt, snapshot, policy_id, caller_id=ctx.caller_id, job_id=ctx.job_id)
            if plan is not None:
                ctx.retention = plan
                t.spawn(Machine.RETENTION, plan, Retention.DeleteOldest, resume=Take.Retained)
                return None
    except CloudException as exc:
        _post_process_failed(ctx, exc)
    return Take.Retained


def _post_process_failed(ctx: TakeContext, exc: CloudException) -> None:
    log.debug("post process snapshot failed: %s", exc)
    ctx.post_process_failed = f"{exc.java_name}: {exc.message}"


def _completion(ctx: TakeContext) -> str:
    return attached_or_direct(ctx, Take.CompleteWork, Take.Complete)


def post_process(t: Turn[TakeContext]) -> str:
    """Spec §5.4 steps 9-12 (zone, role, usage SNAPSHOT.CREATE, correction), then the copies of step 13."""
    ctx = t.ctx
    if ctx.retention is not None and ctx.retention.error is not None:
        _post_process_failed(ctx, ctx.retention.error)
    if ctx.post_process_failed:
        return _completion(ctx)
    try:
        end_chain(t.rt, ctx)
        _post_process(t.rt, ctx)
    except CloudException as exc:
        _post_process_failed(ctx, exc)
        return _completion(ctx)
    return _next_copy(ctx, zones_done=False)


def end_chain(rt: Runtime, ctx: TakeContext) -> None:
    """The end of ``postCreateSnapshot`` (spec §9.3 item 3, §16.6): where a KVM snapshot chain ends.

    After retention, for a KVM snapshot whose row is still there: with ``kvm.incremental.snapshot`` on for the
    volume's cluster (read when the take began), ``endCurrentChainIfNeeded`` ends the chain once it holds
    ``snapshot.delta.max`` snapshots; off, ``endLastChainIfNeeded`` ends the chain an earlier incremental period left,
    so that turning incremental on again starts a new one. What this throws fails the post-processing: with
    incremental off, a volume with no VM, or whose VM has no host, has no cluster, and the unboxing of that null
    cluster id throws (quirk): no zone row, no SNAPSHOT.CREATE usage, no storage count correction, no copies.
    Hardened (``chain_end_without_cluster``), the null cluster is not unboxed: ``endLastChainIfNeeded`` needs the
    cluster only to read ``kvm.incremental.snapshot``, already read at its global value here (spec §16.6).
    """
    snapshot = rt.store.first(Snapshot, "id = ? AND removed IS NULL", (ctx.snapshot_id,))
    if snapshot is None or snapshot.hypervisor_type != "KVM":
        return
    cluster_id = ctx.take.cluster_id
    if rt.config.flag("kvm.incremental.snapshot", cluster=cluster_id):
        end_current_chain(rt.store, snapshot, rt.config.number("snapshot.delta.max"))
        return
    if cluster_id is None and not rt.profile.chain_end_without_cluster:
        # endLastChainIfNeeded(long clusterId, long volumeId) is handed findClusterIdByVolumeInfo's null Long.
        raise NullPointerException('Cannot invoke "java.lang.Long.longValue()" because "clusterId" is null')
    end_last_chain(rt.store, snapshot.volume_id)


def _next_copy(ctx: TakeContext, *, zones_done: bool) -> str:
    """Step 13: without asyncbackup, zone copies when backup is on, then pool copies."""
    payload = ctx.payload
    if payload.async_backup:
        return _completion(ctx)
    if not zones_done and ctx.backup_on and payload.zone_ids:
        return Take.CopyToZones
    if payload.pool_ids and not ctx.pools_copied:
        return Take.CopyToPools
    return _completion(ctx)


def copy_to_zones(t: Turn[TakeContext]) -> None:
    """``copyNewSnapshotToZones``: the job waits for the copy workflow (spec §7.4)."""
    rt, ctx = t.rt, t.ctx
    snapshot = rt.store.get(Snapshot, ctx.snapshot_id)
    ctx.copies = copies.zone_copies(
        rt, snapshot, list(ctx.payload.zone_ids), user_id=ctx.user_id, account_id=ctx.caller_id, job_id=ctx.job_id
    )
    t.spawn(Machine.COPY, ctx.copies, copies.next_target, resume=Take.ZonesCopied)


def copy_to_pools(t: Turn[TakeContext]) -> None:
    """``copyNewSnapshotToZonesOnPrimary``: the job waits for the copy workflow (spec §7.4, §8)."""
    rt, ctx = t.rt, t.ctx
    ctx.pools_copied = True
    snapshot = rt.store.get(Snapshot, ctx.snapshot_id)
    ctx.copies = copies.pool_copies(
        rt, snapshot, list(ctx.payload.pool_ids), user_id=ctx.user_id, account_id=ctx.caller_id, job_id=ctx.job_id
    )
    t.spawn(Machine.COPY, ctx.copies, copies.next_target, resume=Take.PoolsCopied)


def copies_done(t: Turn[TakeContext]) -> str:
    """A copy workflow ended; failed targets were only logged. Pool copies follow zone copies."""
    return _next_copy(t.ctx, zones_done=True)


def _post_process(rt: Runtime, ctx: TakeContext) -> None:
    payload = ctx.payload
    snapshot = rt.store.get(Snapshot, ctx.snapshot_id)
    volume = rt.store.get(Volume, snapshot.volume_id)
    copies.add_to_zone(rt, snapshot.id, snapshot.data_center_id)
    role = data_store_role(rt, ctx, snapshot)
    ready = rt.store.find(
        SnapshotStoreRef, "snapshot_id = ? AND store_role = ? AND state = ?", (snapshot.id, role, RefState.Ready)
    )
    if not ready:
        raise CloudRuntimeException(f"Could not find snapshot {snapshot_str(snapshot)} on [{payload.location_type}]")
    ref = ready[0]
    accounting.usage(rt, "SNAPSHOT.CREATE", snapshot, size=ref.physical_size, virtual_size=volume.size)
    store_type = accounting.SECONDARY_STORAGE if role == "Image" else accounting.PRIMARY_STORAGE
    if rt.profile.correction_on_charged_counter:
        # Hardened: the correction comes off the counter allocSnapshot charged, not the role's (spec §5.4 step 12).
        store_type = store_resource_type(rt, rt.store.get(Zone, snapshot.data_center_id), snapshot.location_type)
    accounting.decrement(
        rt, payload.account_id, store_type, volume.size - ref.physical_size, owner_id=snapshot.account_id
    )
    ctx.data_store_role = role


STEPS: StepTable = {
    "take.orchestrate": orchestrate,
    "take.prepare": prepare,
    "take.abandon": abandon,
    "take.choose_strategy": choose_strategy,
    "take.unwind": unwind,
    "take.post_create": post_create,
    "take.post_process": post_process,
    "take.copy_to_zones": copy_to_zones,
    "take.copy_to_pools": copy_to_pools,
    "take.copies_done": copies_done,
}
