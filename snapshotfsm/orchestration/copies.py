"""Copies of a snapshot to other zones (secondary) and other pools (primary) (spec §7.4, §8).

This is the ``copy_snapshot`` machine.

A caller starts a copy workflow with its targets and waits for it; the workflow copies each zone's missing part of
the snapshot chain, oldest first, through the zone's image store (``queryCopySnapshot`` for a download URL, then
``createAsync``), and each pool through the COPY strategy. A target that fails is logged and skipped.

A zone is planned when its turn comes (``copySnapshotChainToZone``): the chain, the destination store and the
secondary-storage reservation, after the zones before it were copied. What CloudStack throws rather than returns
(a zone with no image store, a strategy that throws) ends the workflow there, with the exception kept in the
context's ``thrown`` for the caller: the take job and the backup task log it, the copySnapshot API job fails with it.
"""

from __future__ import annotations

import contextlib
import logging

import attrs

from snapshotfsm.chains import chain_parent, image_parent, volume_cluster_id
from snapshotfsm.drivers.base import Answer
from snapshotfsm.errors import (
    CloudException,
    CloudRuntimeException,
    NoTransitionException,
    NullPointerException,
    ResourceAllocationException,
    StorageUnavailableException,
)
from snapshotfsm.names import Copy, RefEvent, RefState, SnapshotEvent
from snapshotfsm.objects import snapshot_event, store_ref_event
from snapshotfsm.orchestration import accounting
from snapshotfsm.orchestration.contexts import CopyContext, PoolTarget, Thrown, ZoneTarget
from snapshotfsm.orchestration.contract import StepTable, Turn
from snapshotfsm.orchestration.runtime import Runtime
from snapshotfsm.store.records import (
    SYSTEM_ACCOUNT_ID,
    Account,
    ImageStore,
    Snapshot,
    SnapshotStoreRef,
    SnapshotZoneRef,
    StoragePool,
    Volume,
    Zone,
)
from snapshotfsm.strategies.base import Operation, SnapshotStrategy, copies_snapshots, primary_ref

log = logging.getLogger(__name__)


def zone_image_store(rt: Runtime, snapshot_id: int, zone_id: int) -> ImageStore | None:
    """``getSnapshotZoneImageStore``: an image store of the zone holding a Ready ref of the snapshot."""
    for ref in rt.store.find(
        SnapshotStoreRef, "snapshot_id = ? AND store_role = 'Image' AND state = ?", (snapshot_id, RefState.Ready)
    ):
        store = rt.store.get(ImageStore, ref.store_id)
        if store.data_center_id == zone_id and store.removed is None:
            return store
    return None


def _plan_zone(rt: Runtime, snapshot: Snapshot, src: ImageStore | None, zone: Zone | None, target: ZoneTarget) -> None:
    """``copySnapshotChainToZone``: the chain back to a snapshot already in the zone, oldest first, and where to.

    Raises:
        NullPointerException: no source image store (the copySnapshot API with pool copies only reaches here so), or
            a destination zone that does not exist.
        StorageUnavailableException: the zone has no image store (this aborts the remaining zones).
        ResourceAllocationException: the chain's size would exceed the owner's secondary storage limit.
    """
    if src is None:
        raise NullPointerException(
            'Cannot invoke "org.apache.cloudstack.engine.subsystem.api.storage.DataStore.getId()" because '
            '"srcSecStore" is null'
        )
    if zone is None:
        raise NullPointerException('Cannot invoke "com.cloud.dc.DataCenterVO.getId()" because "destZone" is null')
    current = rt.store.first(
        SnapshotStoreRef, "snapshot_id = ? AND store_role = 'Image' AND store_id = ?", (snapshot.id, src.id)
    )
    chain: list[int] = []
    size = 0
    dest: ImageStore | None = None
    incremental = current is not None and current.kvm_checkpoint_path is not None
    while current is not None:
        dest = zone_image_store(rt, current.snapshot_id, zone.id)
        if dest is not None:
            if current.snapshot_id == snapshot.id:
                _already_in_store(rt, current.snapshot_id, dest)
            break
        chain.append(current.snapshot_id)
        size += current.size
        parent = current.parent_snapshot_id
        current = (
            None
            if parent == 0 or incremental
            else rt.store.first(
                SnapshotStoreRef, "snapshot_id = ? AND store_role = 'Image' AND store_id = ?", (parent, src.id)
            )
        )
    if dest is None and chain:
        stores = rt.store.find(
            ImageStore, "data_center_id = ? AND removed IS NULL AND readonly = 0 AND role = 'Image'", (zone.id,)
        )
        if not stores:
            raise StorageUnavailableException(
                "Destination zone is not ready, no image store associated", scope="DataCenter", resource_id=zone.id
            )
        dest = stores[0]
    if chain:
        # The CheckedReservation of the chain's size, for the snapshot's owner (root admins pass).
        owner = rt.store.get(Account, snapshot.account_id)
        accounting.check_limit(rt, owner, accounting.SECONDARY_STORAGE, size)
    chain.reverse()
    target.planned = True
    target.chain = tuple(chain)
    target.size = size
    target.dest = dest.id if dest is not None else None
    target.incremental = incremental


def _already_in_store(rt: Runtime, snapshot_id: int, dest: ImageStore) -> bool:
    """``checkAndProcessSnapshotAlreadyExistInStore``: whether the snapshot is already in the store.

    Ready (made displayable) or Hidden (set Ready) count as copied; a stale or errored ref is removed so that the copy
    runs again.
    """
    ref = rt.store.first(
        SnapshotStoreRef, "snapshot_id = ? AND store_role = 'Image' AND store_id = ?", (snapshot_id, dest.id)
    )
    if ref is None:
        return False
    if ref.state == RefState.Ready:
        if not ref.display:
            rt.store.update(ref, display=True)
        return True
    if ref.state == RefState.Hidden:
        ref = rt.store.update(ref, display=True)
        rt.store.write_state_directly(ref, RefState.Ready, by="checkAndProcessSnapshotAlreadyExistInStore")
        return True
    if ref.state not in (RefState.Creating, RefState.Copying):
        rt.store.delete(ref, by="checkAndProcessSnapshotAlreadyExistInStore (removeBySnapshotStore)")
    return False


def _copy_context(
    snapshot: Snapshot, targets: list[ZoneTarget | PoolTarget], *, user_id: int, account_id: int, job_id: int
) -> CopyContext:
    return CopyContext(
        job_id=job_id,
        snapshot_id=snapshot.id,
        volume_id=snapshot.volume_id,
        account_id=snapshot.account_id,
        calling_user_id=user_id,
        calling_account_id=account_id,
        targets=targets,
    )


def zone_copies(
    rt: Runtime, snapshot: Snapshot, zone_ids: list[int], *, user_id: int, account_id: int, job_id: int
) -> CopyContext:
    """``copyNewSnapshotToZones`` up to its copy loop: the action event started, the copy workflow's context.

    The action events are the calling user's and account's (the system's in the async backup task). The caller
    spawns the workflow with :func:`next_target` and waits for it.
    """
    accounting.action_event(
        rt,
        "SNAPSHOT.COPY",
        f"Copying snapshot ID: {snapshot.uuid}",
        user_id=user_id,
        account_id=account_id,
        resource_id=snapshot.id,
        state="Started",
    )
    src = zone_image_store(rt, snapshot.id, snapshot.data_center_id)
    ctx = _copy_context(snapshot, [], user_id=user_id, account_id=account_id, job_id=job_id)
    ctx.zone_ids = tuple(zone_ids)
    ctx.action_event = True
    if src is None:
        log.error(
            "Unable to find an image store for zone %s where snapshot %s is in Ready state",
            snapshot.data_center_id,
            snapshot.id,
        )
        ctx.failed_zones = list(zone_ids)
    else:
        ctx.src = src.id
        ctx.targets = [ZoneTarget(zone_id=zone_id) for zone_id in zone_ids]
    return ctx


def pool_copies(
    rt: Runtime,
    snapshot: Snapshot,
    pool_ids: list[int],
    *,
    strategy: SnapshotStrategy | None = None,
    user_id: int,
    account_id: int,
    job_id: int,
) -> CopyContext:
    """``copySnapshotOnPool`` for each pool, with ``strategy``: what the async backup task was given (spec §7.2).

    Without one, ``copyNewSnapshotToZonesOnPrimary``: the COPY strategy, looked up once; none found is only logged.
    """
    if strategy is None:
        targets, strategy = _pool_targets(rt, snapshot, pool_ids)
    else:
        targets = [PoolTarget(pool_id) for pool_id in pool_ids]
    ctx = _copy_context(snapshot, list(targets), user_id=user_id, account_id=account_id, job_id=job_id)
    ctx.strategy = strategy
    return ctx


def api_copies(
    rt: Runtime,
    snapshot: Snapshot,
    *,
    zone_ids: list[int],
    pool_ids: list[int],
    src_store_id: int | None,
    user_id: int,
    account_id: int,
    job_id: int,
) -> CopyContext:
    """The copySnapshot API's copies (spec §7.4): the pools first, then the zones, in one workflow.

    ``copySnapshotToPrimaryDifferentZone`` (``copyNewSnapshotToZonesOnPrimary``), then ``copySnapshotToZones`` from
    the image store ``src_store_id`` (None when the snapshot is on no image store of the source zone: a zone copy
    then dereferences it). Unlike ``copyNewSnapshotToZones`` this writes no SNAPSHOT.COPY action events of its own
    (the API's ``@ActionEvent`` does).
    """
    pools, strategy = _pool_targets(rt, snapshot, pool_ids)
    targets: list[ZoneTarget | PoolTarget] = [*pools]
    targets.extend(ZoneTarget(zone_id=z) for z in zone_ids)
    ctx = _copy_context(snapshot, targets, user_id=user_id, account_id=account_id, job_id=job_id)
    ctx.strategy = strategy
    ctx.zone_ids = tuple(zone_ids)
    ctx.src = src_store_id
    return ctx


def _pool_targets(
    rt: Runtime, snapshot: Snapshot, pool_ids: list[int]
) -> tuple[list[PoolTarget], SnapshotStrategy | None]:
    """``copyNewSnapshotToZonesOnPrimary``: the COPY strategy, and the pools to copy to with it (none without one)."""
    if not pool_ids:
        return [], None
    strategy = rt.factory.best(rt.strategy_env, snapshot, Operation.COPY)
    if strategy is None:
        log.info("Unable to find snapshot strategy to handle the copy of a snapshot with id %s", snapshot.uuid)
        return [], None
    return [PoolTarget(pool_id) for pool_id in pool_ids], strategy


def next_target(rt: Runtime, ctx: CopyContext) -> str:
    """The event for the next target, or Finish.

    A zone is planned when its turn comes, and snapshots of its chain already in the destination store
    (``checkAndProcessSnapshotAlreadyExistInStore``: Ready, or Hidden made Ready) are passed over without a copy.
    """
    while ctx.position < len(ctx.targets):
        target = ctx.targets[ctx.position]
        if isinstance(target, PoolTarget):
            return Copy.CopyToPool
        if not target.planned and not _plan(rt, ctx, target):
            continue
        while ctx.chain_index < len(target.chain):
            dest = rt.store.get(ImageStore, _dest(target))
            if not _already_in_store(rt, target.chain[ctx.chain_index], dest):
                return Copy.CopyToZone
            ctx.chain_index += 1
        _zone_done(ctx, target)
    return Copy.Finish


def _dest(target: ZoneTarget) -> int:
    if target.dest is None:
        raise CloudRuntimeException(f"zone {target.zone_id} has a chain to copy but no destination image store")
    return target.dest


def _plan(rt: Runtime, ctx: CopyContext, target: ZoneTarget) -> bool:
    """Plan the zone ``target``; False when the zone failed (reservation refused) or the workflow was aborted."""
    snapshot = rt.store.get(Snapshot, ctx.snapshot_id)
    src = rt.store.first(ImageStore, "id = ?", (ctx.src,))
    zone = rt.store.first(Zone, "id = ?", (target.zone_id,))
    try:
        _plan_zone(rt, snapshot, src, zone, target)
    except ResourceAllocationException as exc:
        log.warning("Unable to allocate secondary storage resources for snapshot chain for %s: %s", snapshot.id, exc)
        _zone_failed(ctx, target, exc.message)
        return False
    except CloudException as exc:
        abort(ctx, exc)
        return False
    return True


def abort(ctx: CopyContext, exc: CloudException) -> None:
    """What CloudStack throws out of the copy loop: the remaining targets are skipped; the caller gets ``exc``."""
    log.error("Error while copying snapshot %s: %s: %s", ctx.snapshot_id, exc.java_name, exc.message)
    ctx.thrown = Thrown(
        type=exc.java_name,
        message=exc.message,
        # copyNewSnapshotToZones catches these and goes on to its completed action event.
        caught_by_zone_copies=isinstance(
            exc, (ResourceAllocationException, StorageUnavailableException, CloudRuntimeException)
        ),
    )
    ctx.position = len(ctx.targets)
    ctx.chain_index = 0


def _zone_done(ctx: CopyContext, target: ZoneTarget) -> None:
    ctx.done.append(target.zone_id)
    ctx.position += 1
    ctx.chain_index = 0


def _zone_failed(ctx: CopyContext, target: ZoneTarget, why: str) -> None:
    log.error("Failed to copy snapshot %s to zone %s: %s", ctx.snapshot_id, target.zone_id, why)
    ctx.failed_zones.append(target.zone_id)
    ctx.position += 1
    ctx.chain_index = 0


def start_zone_copy(t: Turn[CopyContext]) -> None:
    """``copySnapshotToZone`` for one snapshot of the chain: the download URL, then the destination ref and copy."""
    rt, ctx = t.rt, t.ctx
    target = ctx.zone_target()
    snapshot = rt.store.get(Snapshot, target.chain[ctx.chain_index])
    dest = rt.store.get(ImageStore, _dest(target))
    src_store = rt.store.get(ImageStore, ctx.src) if ctx.src is not None else None
    if src_store is None:
        raise NullPointerException('Cannot invoke "DataStore.getId()" because "srcSecStore" is null')
    src_ref = rt.store.first(
        SnapshotStoreRef, "snapshot_id = ? AND store_role = 'Image' AND store_id = ?", (snapshot.id, src_store.id)
    )
    if src_ref is None:
        raise NullPointerException(f"snapshot {snapshot.id} has no ref on image store {src_store.id} to copy from")
    source = rt.drivers.image(src_store)
    path, physical = src_ref.install_path, src_ref.physical_size
    if target.incremental:
        try:
            converted = convert_if_needed(rt, snapshot, src_store, src_ref)
        except CloudException as exc:
            abort(ctx, exc)
            raise
        if converted is not None:
            path, physical = converted.path, converted.physical_size
            ctx.converted = converted.path
    query = source.call_sync(
        "querySnapshotZoneCopy",
        lambda: Answer(result=True, path=f"https://ssvm-{src_store.data_center_id}/copy/{path}"),
    )
    if not query.result or not query.path:
        raise CloudRuntimeException(
            f"Unable to prepare URL for copy for snapshot ID: {snapshot.id} on store: {src_store.name}"
        )
    volume = rt.store.get(Volume, snapshot.volume_id)
    incremental = rt.config.flag("kvm.incremental.snapshot", cluster=volume_cluster_id(rt.store, volume))
    ref = rt.store.insert(
        SnapshotStoreRef(
            store_id=dest.id,
            store_role="Image",
            snapshot_id=snapshot.id,
            volume_id=snapshot.volume_id,
            state=RefState.Allocated,
            size=src_ref.size,
            physical_size=physical,
            parent_snapshot_id=image_parent(rt.store, snapshot, dest.data_center_id, kvm_incremental=incremental),
            created=rt.clock.timestamp(),
            last_updated=rt.clock.timestamp(),
        )
    )
    moved = store_ref_event(rt.store, ref, RefEvent.CreateOnlyRequested)
    ctx.dest_ref_id = moved.id
    try:
        rt.drivers.image(dest).copy_from(snapshot, query.path, src_ref.size, physical, t.reply(Copy.ZoneAnswered))
    except CloudException:
        # SnapshotServiceImpl.copySnapshot(snapshot, url, store) catches a createAsync that throws: the new ref
        # OperationFailed (its row deleted), and the future fails with the message.
        store_ref_event(rt.store, moved, RefEvent.OperationFailed)
        raise


def convert_if_needed(
    rt: Runtime, snapshot: Snapshot, src_store: ImageStore, src_ref: SnapshotStoreRef
) -> Answer | None:
    """``SnapshotHelper.convertSnapshotIfNeeded`` (spec §16.7): a KVM delta is converted before it is copied.

    A KVM snapshot with a parent (the parent's ref with a checkpoint, on any store) cannot be read alone; a chain
    root is used as it is (None).

    Raises:
        CloudRuntimeException: the parent has refs but none with a checkpoint; or the conversion failed.
    """
    if snapshot.hypervisor_type != "KVM" or chain_parent(rt.store, src_ref) is None:
        return None
    return convert_snapshot(rt, snapshot, src_store, src_ref)


def convert_snapshot(rt: Runtime, snapshot: Snapshot, src_store: ImageStore, src_ref: SnapshotStoreRef) -> Answer:
    """``SnapshotServiceImpl.convertSnapshot`` (spec §16.7): BackupToSecondary, the host converts, then back.

    The snapshot goes BackedUp to BackingUp while the KVM host writes ``<path>_temp`` on the image store, then
    OperationSucceeded, or OperationNotPerformed when the conversion failed, back to BackedUp (each a write of its
    own; a refused event is only logged). The converted path is the copy's, in memory only: the refs keep theirs.

    Raises:
        CloudRuntimeException: "Failed to convert snapshot [<uuid>] due to [<details>]." (without the cause when
            the snapshot could not go BackingUp), or the driver's exception.
    """
    held = rt.store.get(Snapshot, snapshot.id)
    answer: Answer | None = None
    try:
        held = snapshot_event(rt.store, held, SnapshotEvent.BackupToSecondary)
        answer = rt.drivers.image(src_store).convert_snapshot(src_ref.install_path or "")
    except NoTransitionException as exc:
        log.debug("Failed to change snapshot %s state: %s", snapshot.uuid, exc.message)
    finally:
        ok = answer is not None and answer.result
        try:
            snapshot_event(
                rt.store, held, SnapshotEvent.OperationSucceeded if ok else SnapshotEvent.OperationNotPerformed
            )
        except NoTransitionException as exc:
            log.debug("Failed to change snapshot %s state: %s", snapshot.uuid, exc.message)
    if answer is not None and answer.result:
        return answer
    due = f" due to [{answer.details}]" if answer is not None else ""
    raise CloudRuntimeException(f"Failed to convert snapshot [{snapshot.uuid}]{due}.")


def zone_answered(t: Turn[CopyContext]) -> str:
    """The copy's answer: the destination ref Ready and the bookkeeping of one copied snapshot, or a failure.

    Upstream each write commits alone (spec §7.4, §21.2): the ref's path and size, its OperationSucceeded, the
    ``snapshot_zone_ref`` row, the ``secondary_storage`` increment and the SNAPSHOT.COPY event. Hardened
    (``zone_copy_is_atomic``) they commit together, so that a crash leaves either a ``Creating`` ref (which the
    restart fails) or a copy whose charge and zone row are made.
    """
    rt, ctx = t.rt, t.ctx
    target = ctx.zone_target()
    snapshot = rt.store.get(Snapshot, target.chain[ctx.chain_index])
    ref = rt.store.get(SnapshotStoreRef, ctx.dest_ref_id)
    answer = t.answer
    if answer is None or not answer.result:
        store_ref_event(rt.store, ref, RefEvent.OperationFailed)
        raise CloudRuntimeException(
            f"Copy snapshot ID: {snapshot.id} failed for image store {target.dest}: "
            f"{answer.details if answer else 'null answer'}"
        )
    with rt.store.atomic() if rt.profile.zone_copy_is_atomic else contextlib.nullcontext():
        _zone_copied(rt, snapshot, ref, answer, target.zone_id)
    if ctx.converted is not None and ctx.src is not None:
        rt.drivers.image(rt.store.get(ImageStore, ctx.src)).delete_extract_url(ctx.converted)
        ctx.converted = None
    ctx.chain_index += 1
    return next_target(rt, ctx)


def _zone_copied(rt: Runtime, snapshot: Snapshot, ref: SnapshotStoreRef, answer: Answer, zone_id: int) -> None:
    """The writes of a zone copy that succeeded: the ref Ready, the zone row, the charge, the usage (spec §7.4)."""
    # copySnapshotZoneAsyncCallback fires OperationSucceeded without the answer: the path and size come from the image
    # store driver's own update of the ref with the DownloadAnswer (createSnapshotAsyncCallback), a commit before.
    fields: dict[str, object] = {}
    if answer.path is not None:
        fields["install_path"] = answer.path
    if answer.physical_size > 0:
        fields["physical_size"] = answer.physical_size
    ref = rt.store.update(ref, **fields)
    store_ref_event(rt.store, ref, RefEvent.OperationSucceeded)
    add_to_zone(rt, snapshot.id, zone_id)
    # Hardened (storage_charged_as_recounted): the copy is charged what it stored, as the recount counts it (§19.2).
    charge = ref.physical_size if rt.profile.storage_charged_as_recounted else ref.size
    accounting.change_count(rt, snapshot.account_id, accounting.SECONDARY_STORAGE, charge, owner_id=snapshot.account_id)
    if snapshot.account_id != SYSTEM_ACCOUNT_ID:
        accounting.usage(
            rt,
            "SNAPSHOT.COPY",
            snapshot,
            size=snapshot.size,
            virtual_size=snapshot.size,
            zone_id=zone_id,
            named=False,
        )


def zone_failed(t: Turn[CopyContext]) -> str:
    """A zone's copy failed: the rest of its chain is skipped and the next target tried.

    A failed conversion is thrown, not returned (spec §16.7): it ended the workflow (:func:`abort`), no zone failed.
    A converted file stays on the source store: only a copy that succeeded deletes it.
    """
    ctx = t.ctx
    ctx.converted = None
    if ctx.thrown is not None:
        return next_target(t.rt, ctx)
    _zone_failed(ctx, ctx.zone_target(), ctx.failure().message)
    return next_target(t.rt, ctx)


def add_to_zone(rt: Runtime, snapshot_id: int, zone_id: int) -> None:
    """``snapshotZoneDao.addSnapshotToZone``: a ``snapshot_zone_ref`` row, once."""
    if rt.store.first(SnapshotZoneRef, "snapshot_id = ? AND zone_id = ? AND removed IS NULL", (snapshot_id, zone_id)):
        return
    rt.store.insert(
        SnapshotZoneRef(
            zone_id=zone_id, snapshot_id=snapshot_id, created=rt.clock.timestamp(), last_updated=rt.clock.timestamp()
        )
    )


def _charge_pool_copy(rt: Runtime, snapshot: Snapshot, dest: SnapshotStoreRef) -> None:
    """Hardened: a pool copy charges its owner the copy's physical size, unless the snapshot is backed up (§7.4).

    Upstream charges the calling user's id (the system's charges no one) the snapshot's size; the recount (§19.2)
    counts a primary file only for a snapshot with no ``Image`` ref, and for the owner.
    """
    if rt.store.first(SnapshotStoreRef, "snapshot_id = ? AND store_role = 'Image'", (snapshot.id,)) is not None:
        return
    owner = snapshot.account_id
    accounting.change_count(rt, owner, accounting.PRIMARY_STORAGE, dest.physical_size, owner_id=owner)


def copy_to_pool(t: Turn[CopyContext]) -> str | None:
    """``copySnapshotOnPool`` (spec §7.4): destination primary ref, the strategy's copy, then the bookkeeping.

    The strategy is the one the caller was given (``CopyContext.strategy``). One with no copy of its own (Default,
    StorageSystem: the interface's empty ``copySnapshot``) never completes the callback: the destination ref stays
    Creating and the workflow waits for good, with nothing pending (``future.get()`` has no timeout).
    """
    rt, ctx = t.rt, t.ctx
    target = ctx.target()
    if not isinstance(target, PoolTarget):
        raise CloudRuntimeException(f"copy target {ctx.position} is not a pool")
    snapshot = rt.store.get(Snapshot, ctx.snapshot_id)
    pool = rt.store.get(StoragePool, target.pool_id)
    strategy = ctx.strategy
    src = rt.store.first(
        SnapshotStoreRef,
        "snapshot_id = ? AND store_role = 'Primary' AND store_id != ?",
        (snapshot.id, pool.id),
    )
    dest = primary_ref(rt.store, snapshot.id, pool.id)
    if dest is None:
        dest = rt.store.insert(
            SnapshotStoreRef(
                store_id=pool.id,
                store_role="Primary",
                snapshot_id=snapshot.id,
                volume_id=snapshot.volume_id,
                state=RefState.Allocated,
                size=snapshot.size,
                physical_size=snapshot.size,
                created=rt.clock.timestamp(),
                last_updated=rt.clock.timestamp(),
            )
        )
    ctx.position += 1
    ctx.pool_id = pool.id
    if src is None or strategy is None:
        raise CloudRuntimeException(f"Failed to copy snapshot{dest.id}")
    if dest.state == RefState.Allocated:
        moved = store_ref_event(rt.store, dest, RefEvent.CreateOnlyRequested)
    elif src.state == RefState.Ready:
        moved = store_ref_event(rt.store, dest, RefEvent.CopyRequested)
    else:
        raise CloudRuntimeException(
            f"Cannot copy snapshot to another storage in different zone. It's not in the right state {src.state}"
        )
    if not copies_snapshots(strategy):
        log.debug("%s has no copySnapshot: the copy to pool %s never completes", strategy.name, pool.id)
        return None
    try:
        error = strategy.copy_snapshot(rt.strategy_env, snapshot, src, pool)
    except CloudException as exc:
        # SnapshotServiceImpl.copySnapshot: a strategy that throws fails the destination ref and throws on, out of
        # copySnapshotOnPool and the loop over the pools (the remaining targets are not tried).
        store_ref_event(rt.store, moved, RefEvent.OperationFailed)
        thrown = CloudRuntimeException(f"Failed to copy snapshot{snapshot.id}", cause=exc)
        abort(ctx, thrown)
        raise thrown from exc
    if error is not None:
        store_ref_event(rt.store, moved, RefEvent.OperationFailed)
        raise CloudRuntimeException(f"Copy snapshot ID: {snapshot.id} failed for primary storage {pool.id}: {error}")
    moved = rt.store.update(moved, install_path=src.install_path)
    store_ref_event(rt.store, moved, RefEvent.OperationSucceeded)
    add_to_zone(rt, snapshot.id, pool.data_center_id)
    # The increment passes the calling *user* id where an account id is expected (spec §7.4), so the system's user
    # charges no one; the usage event, written unless that user id is 1, goes to the calling account, not the owner.
    user_id, account_id = ctx.calling_user_id, ctx.calling_account_id
    if rt.profile.storage_charged_as_recounted:
        _charge_pool_copy(rt, snapshot, moved)
    else:
        accounting.change_count(rt, user_id, accounting.PRIMARY_STORAGE, snapshot.size, owner_id=snapshot.account_id)
    if user_id != SYSTEM_ACCOUNT_ID:
        accounting.usage(
            rt,
            "SNAPSHOT.COPY",
            attrs.evolve(snapshot, account_id=account_id),
            size=snapshot.size,
            virtual_size=snapshot.size,
            zone_id=pool.data_center_id,
            named=False,
        )
    ctx.copied_pools.append(pool.id)
    return next_target(rt, ctx)


def pool_failed(t: Turn[CopyContext]) -> str:
    """A pool copy failed: logged, next target."""
    ctx = t.ctx
    log.debug("pool copy failed: %s", ctx.failure().message)
    ctx.failed_pools.append(ctx.pool_id)
    return next_target(t.rt, ctx)


def finish(t: Turn[CopyContext]) -> None:
    """All targets tried; for ``copyNewSnapshotToZones``, the completed action event.

    INFO "Completed copying ..." when fewer zones failed than were asked for, else ERROR "... failed". Upstream
    filters the zone names it lists by comparing each zone's *uuid* with the failed zones' *names*, so every
    destination zone is listed, failed ones included; and a zone without an image store aborts the loop with
    nothing counted as failed, so the event says "Completed" then too.
    """
    rt, ctx = t.rt, t.ctx
    if not ctx.action_event:
        return
    if ctx.thrown is not None and not ctx.thrown.caught_by_zone_copies:
        return  # the exception escapes copyNewSnapshotToZones before its completed event
    snapshot = rt.store.get(Snapshot, ctx.snapshot_id)
    if len(ctx.failed_zones) < len(ctx.zone_ids):
        names = ", ".join(zone.name for z in ctx.zone_ids if (zone := rt.store.first(Zone, "id = ?", (z,))) is not None)
        text, level = f"Completed copying snapshot ID: {snapshot.uuid} to zone(s): {names}", "INFO"
    else:
        text, level = f"Copying snapshot ID: {snapshot.uuid} failed", "ERROR"
    accounting.action_event(
        rt,
        "SNAPSHOT.COPY",
        text,
        user_id=ctx.calling_user_id,
        account_id=ctx.calling_account_id,
        resource_id=snapshot.id,
        state="Completed",
        level=level,
    )


STEPS: StepTable = {
    "copies.start_zone_copy": start_zone_copy,
    "copies.zone_answered": zone_answered,
    "copies.zone_failed": zone_failed,
    "copies.copy_to_pool": copy_to_pool,
    "copies.pool_failed": pool_failed,
    "copies.finish": finish,
}
