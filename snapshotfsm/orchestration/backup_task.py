"""The async backup task, ``SnapshotManagerImpl.BackupSnapshotTask`` (spec §7.2), as the ``backup_task`` machine.

The take job completes as soon as the task is scheduled; the task then backs the snapshot up on the simulated clock
(or copies it to pools), retrying on failure. It is held only in the scheduling server's memory: a crash drops it.
"""

from __future__ import annotations

import logging

from snapshotfsm.drivers.base import Answer
from snapshotfsm.errors import CloudException, CloudRuntimeException
from snapshotfsm.names import RefState, Task
from snapshotfsm.orchestration import copies, reconcile
from snapshotfsm.orchestration.accounting import SECONDARY_STORAGE, change_count
from snapshotfsm.orchestration.backup import (
    SnapshotVO,
    after_backup,
    backed_up_without_copy,
    cleanup_on_backup_failure,
    finish_backup,
    keep_on_primary,
    start_backup,
)
from snapshotfsm.orchestration.contexts import BackupTaskContext, Machine
from snapshotfsm.orchestration.contract import StepTable, Turn
from snapshotfsm.orchestration.lookups import store_resource_type
from snapshotfsm.orchestration.runtime import Runtime
from snapshotfsm.store.records import (
    SYSTEM_ACCOUNT_ID,
    SYSTEM_USER_ID,
    Snapshot,
    SnapshotStoreRef,
    StoragePool,
    Volume,
    Zone,
)
from snapshotfsm.strategies.base import BackupKind, SnapshotTake

log = logging.getLogger(__name__)


def _take(rt: Runtime, ctx: BackupTaskContext) -> SnapshotTake:
    """The take as the strategies see it, re-read: the task runs long after the take job."""
    snapshot = rt.store.get(Snapshot, ctx.snapshot_id)
    volume = rt.store.get(Volume, snapshot.volume_id)
    pool = rt.store.get(StoragePool, ctx.pool_id)
    return SnapshotTake(snapshot=snapshot, volume=volume, pool=pool, payload=ctx.payload)


def run_task(t: Turn[BackupTaskContext]) -> str:
    """``runInContext``: back up when backup is on and there are no pool ids; copy to pools when there are.

    Hardened (``async_pool_copy_backs_up_first``, departs from spec §7.2): with backup on, the task backs up whatever
    the pool ids; the copies to the pools follow the backup (:func:`_after_backup`). A retry after a try whose
    backup completed (its pool copy failed; the zone copies' failures never fail a try) goes straight to the pools:
    backing up again would make a second image ref on the same store, charged to no one.
    """
    rt, ctx = t.rt, t.ctx
    backup_on = rt.config.flag("snapshot.backup.to.secondary") and not ctx.copy_only
    if ctx.pool_ids and not (backup_on and rt.profile.async_pool_copy_backs_up_first):
        return Task.CopyOnPools
    if _pools_after_backup(rt, ctx) and _backed_up_by_an_earlier_try(rt, ctx):
        return Task.CopyOnPools
    if backup_on:
        ctx.backup_plan = ctx.strategy.backup_plan(rt.strategy_env, _take(rt, ctx))
        return Task.Backup if ctx.backup_plan.kind is BackupKind.COPY else Task.MarkBackedUp
    return Task.Finish


def backup(t: Turn[BackupTaskContext]) -> None:
    """``strategy.backupSnapshot`` with asyncBackup set: start the copy and wait for its answer (spec §5.8)."""
    rt, ctx = t.rt, t.ctx
    _, dest, orig_state = start_backup(rt, _take(rt, ctx), ctx.plan, t.reply(Task.CopyAnswered), async_backup=True)
    ctx.image_ref_id = dest.id
    ctx.backup_orig_state = orig_state


def mark_backed_up(t: Turn[BackupTaskContext]) -> str | None:
    """Backed up without a copy: StorageSystem's mark (spec §5.7) or XenServer's empty delta (§16.2)."""
    rt, ctx = t.rt, t.ctx
    take = _take(rt, ctx)
    backed_up_without_copy(rt, take, ctx.plan)
    return _after_backup(rt, ctx, take)


def answered(t: Turn[BackupTaskContext]) -> str | None:
    """The copy answered; a failure (the row already soft-removed, spec §5.8) counts down the attempts."""
    rt, ctx = t.rt, t.ctx
    take = _take(rt, ctx)
    if rt.profile.correction_on_charged_counter:
        failure = _finish_and_correct(rt, ctx, take, t.answer)
    else:
        failure = finish_backup(
            rt, take, ctx.image_ref_id, t.answer, async_backup=True, orig_state=ctx.backup_orig_state
        )
    if failure is not None:
        raise CloudRuntimeException(failure)
    return _after_backup(rt, ctx, take)


def _finish_and_correct(rt: Runtime, ctx: BackupTaskContext, take: SnapshotTake, answer: Answer | None) -> str | None:
    """Hardened: the copy's callback and the backup's size correction (:func:`_correct_to_backup`) commit together.

    A crash between them would leave the snapshot BackedUp, which no restart looks at again, with its charge at the
    primary file's size. What the callback throws is rethrown once its writes (the failure path's) are committed.

    Raises:
        CloudRuntimeException: the callback threw (:func:`snapshotfsm.orchestration.backup.finish_backup`).
    """
    thrown: CloudException | None = None
    with rt.store.atomic():
        try:
            failure = finish_backup(
                rt, take, ctx.image_ref_id, answer, async_backup=True, orig_state=ctx.backup_orig_state
            )
        except CloudException as exc:
            thrown, failure = exc, None
        if thrown is None and failure is None:
            _correct_to_backup(rt, ctx)
    if thrown is not None:
        raise thrown
    return failure


def _correct_to_backup(rt: Runtime, ctx: BackupTaskContext) -> None:
    """Hardened: the take corrected the charge to the primary file's size; the backup's may be smaller (§5.4 step 12).

    A delta backup (§16.2) holds less than the primary file, and the recount counts the backup's ``physical_size``
    (§19.2): the difference comes off ``secondary_storage``, the counter the allocation charged (§5.1). A sync
    take corrects by the backup's size at once (its role is ``Image``), so only the task needs this.
    """
    image = rt.store.first(SnapshotStoreRef, "id = ? AND state = ?", (ctx.image_ref_id, RefState.Ready))
    primary = rt.store.first(
        SnapshotStoreRef, "snapshot_id = ? AND store_role = 'Primary' AND state = ?", (ctx.snapshot_id, RefState.Ready)
    )
    if image is None or primary is None or image.physical_size == primary.physical_size:
        return
    snapshot = rt.store.get(Snapshot, ctx.snapshot_id)
    if (
        store_resource_type(rt, rt.store.get(Zone, snapshot.data_center_id), snapshot.location_type)
        != SECONDARY_STORAGE
    ):
        return
    delta = image.physical_size - primary.physical_size
    change_count(rt, snapshot.account_id, SECONDARY_STORAGE, delta, owner_id=snapshot.account_id)


def _after_backup(rt: Runtime, ctx: BackupTaskContext, take: SnapshotTake) -> str | None:
    """postSnapshotCreation, the CLVM primary ref removal, then the zone copies (spec §7.2).

    None (the task waits for good) when postSnapshotCreation never returns (``backup.after_backup``).
    """
    if not after_backup(rt, ctx.strategy, take):
        return None
    if ctx.zone_ids:
        return Task.CopyToZones
    return Task.CopyOnPools if _pools_after_backup(rt, ctx) else Task.Finish


def _backed_up_by_an_earlier_try(rt: Runtime, ctx: BackupTaskContext) -> bool:
    """Whether an earlier try of this task left its image ref Ready (its backup completed)."""
    if not ctx.image_ref_id:
        return False
    ref = rt.store.first(SnapshotStoreRef, "id = ?", (ctx.image_ref_id,))
    return ref is not None and ref.state == RefState.Ready


def _pools_after_backup(rt: Runtime, ctx: BackupTaskContext) -> bool:
    """Hardened (``async_pool_copy_backs_up_first``): the backed-up snapshot still has its pool copies to make."""
    return rt.profile.async_pool_copy_backs_up_first and bool(ctx.pool_ids) and not ctx.copy_only


def copy_to_zones(t: Turn[BackupTaskContext]) -> None:
    """``copyNewSnapshotToZones`` for the task's zone ids, in the system's context; the task waits for the copies."""
    rt, ctx = t.rt, t.ctx
    snapshot = rt.store.get(Snapshot, ctx.snapshot_id)
    ctx.copies = copies.zone_copies(
        rt, snapshot, list(ctx.zone_ids), user_id=SYSTEM_USER_ID, account_id=SYSTEM_ACCOUNT_ID, job_id=ctx.job_id
    )
    resume = Task.CopyOnPools if _pools_after_backup(rt, ctx) else Task.ZoneCopiesDone
    t.spawn(Machine.COPY, ctx.copies, copies.next_target, resume=resume)


def copy_on_pools(t: Turn[BackupTaskContext]) -> None:
    """``copySnapshotOnPool`` for each pool id with the task's strategy (no secondary backup then, spec §7.2).

    With backup on that is the TAKE strategy (spec §6.1): Default and StorageSystem have no copy of their own, so
    the first pool's copy never completes and the task waits for good (no retry, no cleanup). Hardened
    (``async_pool_copy_backs_up_first``), after the backup, the COPY strategy is looked up as the synchronous take's
    ``copyNewSnapshotToZonesOnPrimary`` does (§5.4 step 13).
    """
    rt, ctx = t.rt, t.ctx
    snapshot = rt.store.get(Snapshot, ctx.snapshot_id)
    ctx.copies = copies.pool_copies(
        rt,
        snapshot,
        list(ctx.pool_ids),
        strategy=None if _pools_after_backup(rt, ctx) else ctx.strategy,
        user_id=SYSTEM_USER_ID,
        account_id=SYSTEM_ACCOUNT_ID,
        job_id=ctx.job_id,
    )
    t.spawn(Machine.COPY, ctx.copies, copies.next_target, resume=Task.PoolCopiesDone)


def pools_after_zones(t: Turn[BackupTaskContext]) -> None:
    """Hardened (``async_pool_copy_backs_up_first``): after the zone copies, the copies to the pools (spec §7.2).

    The zone copies are judged as :func:`copies_done` judges them; then :func:`copy_on_pools` (§5.4 step 13).

    Raises:
        CloudRuntimeException: a zone copy threw what ``copyNewSnapshotToZones`` does not catch.
    """
    thrown = t.ctx.copies.thrown if t.ctx.copies is not None else None
    if thrown is not None and not thrown.caught_by_zone_copies:
        raise CloudRuntimeException(f"{thrown.type}: {thrown.message}")
    copy_on_pools(t)


def copies_done(t: Turn[BackupTaskContext]) -> None:
    """The copies ended: what escaped them fails this try, as it reaches ``runInContext``'s catch (spec §7.2).

    ``copyNewSnapshotToZones`` catches what a zone copy throws but a NullPointerException; ``copySnapshotOnPool``
    catches nothing the strategy throws.
    """
    ctx = t.ctx
    thrown = ctx.copies.thrown if ctx.copies is not None else None
    if thrown is None or (not ctx.pool_ids and thrown.caught_by_zone_copies):
        _end_try(t)
        return
    raise CloudRuntimeException(f"{thrown.type}: {thrown.message}")


def finish(t: Turn[BackupTaskContext]) -> None:
    """The task ends, and its try's thread context closes."""
    _end_try(t)


def _end_try(t: Turn[BackupTaskContext]) -> None:
    """The end of ``runInContext``: the try's thread context closes; locks it still holds go (spec §21.1)."""
    t.rt.strategy_env.end_thread(t.ctx.thread)


def decrease_attempts(t: Turn[BackupTaskContext]) -> str | None:
    """``decriseBackupSnapshotAttempts``: retry after ``backup.retry.interval`` while attempts >= 0, else clean up."""
    rt, ctx = t.rt, t.ctx
    attempts = ctx.attempts
    if attempts >= 0:
        _end_try(t)
        ctx.attempts = attempts - 1
        ctx.thread = ctx.try_thread()  # the retry is a fresh task, on a thread of its own
        delay = rt.config.number("backup.retry.interval") * 1000
        t.later(Task.Retry, delay_ms=delay, label=f"BackupSnapshotTask retry, attempts {attempts - 1}")
        return None
    return Task.CleanUp


def cleanup(t: Turn[BackupTaskContext]) -> None:
    """``cleanupOnSnapshotBackupFailure`` after the last try; its own failure only ends the executor's task."""
    rt, ctx = t.rt, t.ctx
    if rt.profile.failed_backup_matches_answer:
        # Hardened: the take answered SUCCEEDED; the snapshot stays on primary (``backup.keep_on_primary``). It was
        # charged for secondary storage at allocation (spec §5.1): the recount moves the charge where it now is, in
        # the same transaction (a crash between them would leave a BackedUp snapshot that no restart recounts).
        with rt.store.atomic():
            keep_on_primary(rt, ctx.snapshot_id)
            reconcile.recount_account_at_rest(rt, ctx.snapshot_id, ctx.account_id)
        _end_try(t)
        return
    snapshot = rt.store.first(Snapshot, "id = ?", (ctx.snapshot_id,))
    try:
        if snapshot is None:
            raise CloudRuntimeException(f"snapshot {ctx.snapshot_id} is gone (expunged while the task waited)")
        cleanup_on_backup_failure(rt, SnapshotVO(snapshot), rt.store.get(StoragePool, ctx.pool_id))
    except CloudException as exc:
        log.warning("BackupSnapshotTask cleanup failed: %s", exc)
        ctx.cleanup_failed = exc.message
    _end_try(t)


STEPS: StepTable = {
    "backup_task.run": run_task,
    "backup_task.backup": backup,
    "backup_task.mark_backed_up": mark_backed_up,
    "backup_task.answered": answered,
    "backup_task.copy_to_zones": copy_to_zones,
    "backup_task.copy_on_pools": copy_on_pools,
    "backup_task.pools_after_zones": pools_after_zones,
    "backup_task.copies_done": copies_done,
    "backup_task.finish": finish,
    "backup_task.decrease_attempts": decrease_attempts,
    "backup_task.cleanup": cleanup,
}
