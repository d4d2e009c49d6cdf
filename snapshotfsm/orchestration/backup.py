"""Backing a snapshot up to secondary storage, or deciding not to (spec §5.4 steps 7-8, §5.8, §5.9, §7.3).

``cleanup_on_backup_failure`` is ``cleanupOnSnapshotBackupFailure``: the sync backup runs it at once and the async
backup task after its last try, so it is written once, here.
"""

from __future__ import annotations

import contextlib
import logging

import attrs

from snapshotfsm.chains import image_ref_in_zone
from snapshotfsm.describe import snapshot_object_str, snapshot_str
from snapshotfsm.drivers.base import Answer
from snapshotfsm.drivers.primary import CLVM_POOL_TYPES
from snapshotfsm.errors import (
    CloudException,
    CloudRuntimeException,
    NeverAnswered,
    NoTransitionException,
    NullPointerException,
)
from snapshotfsm.names import RefEvent, RefState, SnapshotEvent, SnapshotState, Take, Task
from snapshotfsm.objects import AnswerType, missing_store_ref, snapshot_event, store_ref_event
from snapshotfsm.orchestration import reconcile
from snapshotfsm.orchestration.contexts import BackupTaskContext, Machine, TakeContext
from snapshotfsm.orchestration.contract import Reply, StepTable, Turn
from snapshotfsm.orchestration.runtime import Runtime
from snapshotfsm.orchestration.take import find_image_store, new_image_ref
from snapshotfsm.store.records import Snapshot, SnapshotDetail, SnapshotStoreRef, StoragePool
from snapshotfsm.strategies.base import (
    BackupKind,
    BackupPlan,
    Operation,
    SnapshotStrategy,
    SnapshotTake,
    primary_ref,
)
from snapshotfsm.strategies.default import MS_ID

log = logging.getLogger(__name__)

CALLBACK_THREW = (
    "java.lang.RuntimeException: InvocationTargetException when invoking RPC callback for command: "
    "copySnapshotAsyncCallback"
)
"""``e.toString()`` of what ``AsyncCallbackDispatcher.dispatch`` makes of an exception thrown by the copy callback."""


@attrs.define(eq=False)
class SnapshotVO:
    """A ``SnapshotObject``'s in-memory VO: the snapshot as the code holding the object last saw it.

    Each Snapshot event the object fires moves it, even when the transaction around that event is rolled back
    afterwards (``cleanupOnSnapshotBackupFailure``, spec §21.2), and a later event is checked against it.
    """

    snapshot: Snapshot


NULL_COPY_ANSWER = "copy of the snapshot to secondary storage answered null"
"""The failure a hardened ``copySnapshotAsyncCallback`` gives a null answer (``failed_backup_matches_answer``)."""


def choose(t: Turn[TakeContext]) -> str:
    """The TAKE strategy's ``backupSnapshot`` decides how (spec §5.4 step 7: the same strategy object backs up)."""
    ctx = t.ctx
    ctx.backup_plan = ctx.strategy.backup_plan(t.rt.strategy_env, ctx.take)
    return Take.Copy if ctx.backup_plan.kind is BackupKind.COPY else Take.MarkBackedUp


def start_backup(
    rt: Runtime, take: SnapshotTake, plan: BackupPlan, on_answer: Reply, *, async_backup: bool = False
) -> tuple[Snapshot, SnapshotStoreRef, str]:
    """``SnapshotServiceImpl.backupSnapshot`` up to ``copyAsync`` (spec §5.8 steps 1-3), as ``plan`` says.

    Returns the snapshot as the backup holds it (BackingUp), the image ref (Creating) and ``origState``, the
    snapshot's state before: :func:`finish_backup` needs it when the copy's callback throws. An exception before
    the copy starts puts the snapshot back (:func:`_not_copied`); the failure is then rethrown. Hardened
    (``failed_backup_matches_answer``), a try of the async task that fails so leaves the snapshot on primary
    (:func:`keep_on_primary`) instead of in Error: its take already answered SUCCEEDED.
    """
    snapshot = rt.store.get(Snapshot, take.snapshot.id)
    orig_state = snapshot.status
    try:
        snapshot = snapshot_event(rt.store, snapshot, SnapshotEvent.BackupToSecondary)
        image = find_image_store(rt, snapshot)
        if image is None:
            raise CloudRuntimeException("can not find an image stores")
        if snapshot.removed is not None:
            # ObjectInDataStoreManagerImpl.create builds the install path from snapshotDao.findById, which skips the
            # row an earlier failed async copy soft-removed: every retry after that fails here (spec §5.9).
            raise NullPointerException(
                'Cannot invoke "com.cloud.storage.SnapshotVO.getAccountId()" because the return value of '
                '"com.cloud.storage.dao.SnapshotDao.findById(Object)" is null'
            )
        dest = new_image_ref(rt, snapshot, image.id)
        moved = store_ref_event(rt.store, dest, RefEvent.CreateOnlyRequested)
        src = primary_ref(rt.store, snapshot.id, take.pool.id)
        if src is None or src.install_path is None:
            raise CloudRuntimeException(f"no snapshot on primary storage to back up for {snapshot_str(snapshot)}")
        parent = None if plan.full else image_ref_in_zone(rt.store, moved.parent_snapshot_id, image.data_center_id)
        driver = rt.drivers.primary(take.pool)
        driver.backup_snapshot(
            snapshot,
            src.install_path,
            rt.drivers.image(image),
            moved.install_path or "",
            on_answer,
            full=plan.full,
            parent_path=parent.install_path if parent is not None else None,
            # Hardened (failed_backup_matches_answer): a failed try keeps the snapshot on primary (keep_on_primary).
            keep_source=async_backup and rt.profile.failed_backup_matches_answer,
        )
    except CloudException as exc:
        if async_backup and rt.profile.failed_backup_matches_answer:
            keep_on_primary(rt, snapshot.id)
        else:
            _not_copied(rt, snapshot, orig_state)
        raise CloudRuntimeException(f"Failed to copy snapshot:{exc.java_name}: {exc.message}", cause=exc) from exc
    return snapshot, moved, orig_state


def keep_on_primary(rt: Runtime, snapshot_id: int) -> None:
    """Hardened (``failed_backup_matches_answer``): a failed try of the async backup keeps the snapshot on primary.

    Departs from spec §5.8 step 3-4 and §7.2: upstream soft-removes the snapshot of a take that answered SUCCEEDED
    (or sends it to Error when the copy could not start), and its last try's ``cleanupOnSnapshotBackupFailure``
    then fails on the removed row and rolls back. Here the image refs the try was writing go
    (``deleteIfNotReady``) and the snapshot is BackedUp on primary only (OperationNotPerformed, as with
    ``snapshot.backup.to.secondary`` off, §5.4 step 8), which is what the SUCCEEDED answer promised: the next try
    backs it up from there (BackedUp to BackingUp, §5.8 step 1), and after the last it stays so.
    """
    snapshot = rt.store.first(Snapshot, "id = ? AND removed IS NULL", (snapshot_id,))
    if snapshot is not None and snapshot.status in (SnapshotState.CreatedOnPrimary, SnapshotState.BackingUp):
        reconcile.finish_backup(rt, snapshot, by="BackupSnapshotTask (hardened: failed try)")


def _not_copied(rt: Runtime, held: Snapshot, orig_state: str) -> None:
    """``backupSnapshot``'s catch: the snapshot it holds in memory, put back (spec §5.8 step 3, §21.2).

    OperationNotPerformed when it was BackedUp before (an archived original must not be deleted), else
    OperationFailed (BackingUp to Error). The event is checked against ``held``, the state in memory; a refused
    one is only logged.
    """
    event = (
        SnapshotEvent.OperationNotPerformed if orig_state == SnapshotState.BackedUp else SnapshotEvent.OperationFailed
    )
    try:
        snapshot_event(rt.store, held, event)
    except NoTransitionException as exc:
        log.debug("Failed to change state: %s: %s", exc.java_name, exc.message)


def request(t: Turn[TakeContext]) -> None:
    """Start the sync backup (spec §5.8 steps 1-3) and wait for the copy's answer."""
    ctx = t.ctx
    snapshot, dest, orig_state = start_backup(t.rt, ctx.take, ctx.plan, t.reply(Take.BackupAnswered))
    ctx.take.snapshot = snapshot
    ctx.image_ref_id = dest.id
    ctx.backup_orig_state = orig_state


def finish_backup(
    rt: Runtime, take: SnapshotTake, dest_id: int, answer: Answer | None, *, async_backup: bool, orig_state: str
) -> str | None:
    """``copySnapshotAsyncCallback`` (spec §5.8 step 4), as ``backupSnapshot`` sees it; the failure text, or None.

    What the callback throws (a ref event that fails, ``cleanupOnSnapshotBackupFailure`` rolled back) is wrapped by
    ``AsyncCallbackDispatcher.dispatch`` and, as ``AncientDataMotionStrategy.copyAsync`` completes the callback
    outside its try, reaches ``backupSnapshot``'s catch (spec §21.2): that fires OperationFailed (OperationNotPerformed
    when ``orig_state`` is BackedUp) on the snapshot as the callback left it in memory, a write of its own.

    Raises:
        CloudRuntimeException: the callback threw ("Failed to copy snapshot:java.lang.RuntimeException: ...").
    """
    vo = SnapshotVO(rt.store.get(Snapshot, take.snapshot.id))
    try:
        return _copy_callback(rt, take, vo, dest_id, answer, async_backup=async_backup)
    except CloudException as exc:
        log.debug("Failed to copy snapshot: %s: %s", exc.java_name, exc.message)
        _not_copied(rt, vo.snapshot, orig_state)
        raise CloudRuntimeException(f"Failed to copy snapshot:{CALLBACK_THREW}", cause=exc) from exc


def _copy_callback(
    rt: Runtime, take: SnapshotTake, vo: SnapshotVO, dest_id: int, answer: Answer | None, *, async_backup: bool
) -> str | None:
    """``copySnapshotAsyncCallback``: the failure text the future completes with, or None.

    Success: the image ref Ready with the answer, the snapshot BackedUp; what that throws fails the future (a null
    answer is not a failed result: the answer's NullPointerException is caught here). Failure with async backup:
    the snapshot row is soft-removed, the image ref fails (and is deleted), the snapshot stays BackingUp. Failure
    with sync backup: the image ref fails, then ``cleanupOnSnapshotBackupFailure``.

    Raises:
        CloudRuntimeException: the failed image ref's event, or ``cleanupOnSnapshotBackupFailure``, threw.
        NullPointerException: the failed image ref was gone (``processEvent``'s finally block).
    """
    dest = rt.store.get(SnapshotStoreRef, dest_id)
    snapshot = vo.snapshot
    hardened = rt.profile.failed_backup_matches_answer
    if hardened and answer is None:
        # Hardened: a null answer is a failed copy, not a success whose ref event throws and leaves it Creating.
        answer = Answer(result=False, details=NULL_COPY_ANSWER)
    if answer is not None and not answer.result:
        if async_backup and hardened:
            store_ref_event(rt.store, dest, RefEvent.OperationFailed)
            keep_on_primary(rt, snapshot.id)
        elif async_backup:
            rt.store.remove(snapshot, by="copySnapshotAsyncCallback (async backup failed)")
            store_ref_event(rt.store, dest, RefEvent.OperationFailed)
            log.debug("Failed to create backup: Failed in creating backup of snapshot %s", snapshot_str(snapshot))
        else:
            store_ref_event(rt.store, dest, RefEvent.OperationFailed)
            cleanup_on_backup_failure(rt, vo, take.pool)
        return answer.details
    try:
        store_ref_event(rt.store, dest, RefEvent.OperationSucceeded, answer, answer_type=AnswerType.COPY_CMD)
        vo.snapshot = take.snapshot = snapshot_event(rt.store, snapshot, SnapshotEvent.OperationSucceeded)
    except CloudException as exc:
        return f"{exc.java_name}: {exc.message}"
    return None


def answered(t: Turn[TakeContext]) -> str | None:
    """The copy answered: finish the backup; on success ``postSnapshotCreation`` and the CLVM ref removal.

    Waits for good (returns None) when ``postSnapshotCreation`` blocks the job's thread (:func:`after_backup`).
    """
    rt, ctx = t.rt, t.ctx
    failure = finish_backup(
        rt, ctx.take, ctx.image_ref_id, t.answer, async_backup=False, orig_state=ctx.backup_orig_state
    )
    if failure is not None:
        raise CloudRuntimeException(failure)
    if not after_backup(rt, ctx.strategy, ctx.take):
        return None
    return Take.PostProcess


def after_backup(rt: Runtime, strategy: SnapshotStrategy, take: SnapshotTake) -> bool:
    """After a backup: ``postSnapshotCreation`` (errors only logged, spec §5.9), then the CLVM primary ref removal.

    ``removeClvmPrimarySnapshotStoreRefIfNeeded`` deletes a CLVM snapshot's primary ref once it is on secondary.
    False when ``postSnapshotCreation`` never returns (:func:`post_snapshot_creation`): the caller's step then waits
    for good, with nothing pending, and the job never ends.
    """
    if not post_snapshot_creation(rt, strategy, take):
        return False
    if take.pool.pool_type in CLVM_POOL_TYPES:
        ref = primary_ref(rt.store, take.snapshot.id, take.pool.id)
        if ref is not None:
            rt.store.delete(ref, by="SnapshotManagerImpl.removeClvmPrimarySnapshotStoreRefIfNeeded")
    return True


def post_snapshot_creation(rt: Runtime, strategy: SnapshotStrategy, take: SnapshotTake) -> bool:
    """The strategy's ``postSnapshotCreation``; its errors are only logged (spec §5.9).

    False when it blocked the thread for good: StorageSystem's delete from primary storage of a SECONDARY snapshot
    waits on the caller's thread for a driver that never answers. What it wrote before stays. The Default strategy
    catches its own errors inside its transaction, after the MS_ID delete (spec §21.2,
    ``DefaultSnapshotStrategy.post_snapshot_creation``), so nothing of it reaches this catch.
    """
    try:
        strategy.post_snapshot_creation(rt.strategy_env, take)
    except CloudException as exc:
        log.debug("postSnapshotCreation failed: %s", exc)
    except NeverAnswered as blocked:
        log.warning("postSnapshotCreation of snapshot %s never returns: %s", take.snapshot.id, blocked)
        return False
    return True


def cleanup_on_backup_failure(rt: Runtime, vo: SnapshotVO, pool: StoragePool) -> None:
    """``cleanupOnSnapshotBackupFailure`` (spec §5.8 step 4), in one transaction (§21.2 ``backupSnapshot`` row).

    Primary ref DestroyRequested then OperationSucceeded (Destroyed), snapshot OperationFailed (Error), the MS_ID
    detail removed, the snapshot soft-removed. Any exception rolls all five writes back: a ref event's failure as
    ``processEvent`` throws it (no primary ref included), a refused Snapshot event as "Failed to backup snapshot...".
    ``vo`` keeps the snapshot as the Snapshot event left it in memory, rolled back or not.

    Raises:
        CloudRuntimeException: a ref event failed ("Failed to update state: ..."), or the Snapshot event was
            refused ("Failed to backup snapshot...").
    """
    snapshot = vo.snapshot
    with rt.store.atomic():
        ref = primary_ref(rt.store, snapshot.id, pool.id)
        if ref is None:
            raise missing_store_ref(rt.store, snapshot.id, pool.id)
        moved = store_ref_event(rt.store, ref, RefEvent.DestroyRequested)
        store_ref_event(rt.store, moved, RefEvent.OperationSucceeded)
        try:
            vo.snapshot = snapshot_event(rt.store, snapshot, SnapshotEvent.OperationFailed)
        except NoTransitionException as exc:
            log.debug("Failed to create backup %s: %s", exc.java_name, exc.message)
            raise CloudRuntimeException(f"Failed to backup snapshot{snapshot_object_str(snapshot, pool.id)}") from exc
        for detail in rt.store.find(SnapshotDetail, "snapshot_id = ? AND name = ?", (snapshot.id, MS_ID)):
            rt.store.delete(detail, by="SnapshotDetailsDao.removeDetail")
        rt.store.remove(snapshot, by="cleanupOnSnapshotBackupFailure")


def mark_storage_system_backed_up(rt: Runtime, take: SnapshotTake) -> None:
    """``StorageSystemSnapshotStrategy.markAsBackedUp``: BackupToSecondary then OperationSucceeded, no copy.

    A refused event is answered with OperationFailed, itself only logged when refused.
    """
    snapshot = rt.store.get(Snapshot, take.snapshot.id)
    try:
        snapshot = snapshot_event(rt.store, snapshot, SnapshotEvent.BackupToSecondary)
        snapshot = snapshot_event(rt.store, snapshot, SnapshotEvent.OperationSucceeded)
    except NoTransitionException:
        with contextlib.suppress(NoTransitionException):
            snapshot = snapshot_event(rt.store, snapshot, SnapshotEvent.OperationFailed)
    take.snapshot = snapshot


def backed_up_without_copy(rt: Runtime, take: SnapshotTake, plan: BackupPlan) -> None:
    """A backup that copies nothing: XenServer's empty delta (spec §16.2), or StorageSystem's mark (§5.7)."""
    if plan.kind is BackupKind.EMPTY_DELTA:
        empty_delta(rt, take, plan)
    else:
        mark_storage_system_backed_up(rt, take)


def empty_delta(rt: Runtime, take: SnapshotTake, plan: BackupPlan) -> None:
    """The take answered with its parent's path: nothing to copy (spec §16.2 item 1, ``backupSnapshot``).

    An image ref is created on the store of the parent's image ref, CreateOnlyRequested, then OperationSucceeded
    with a ``CreateObjectAnswer`` carrying the parent's install path (no physical size: the ref keeps its 0), and
    the snapshot is OperationNotPerformed (CreatedOnPrimary to BackedUp). Each a write of its own.

    Raises:
        CloudRuntimeException: a ref event failed ("Failed to update state: ..."), or the snapshot event was refused
            (the NoTransitionException's text).
    """
    assert plan.parent_ref_id is not None  # an EMPTY_DELTA plan always names the parent's image ref
    parent = rt.store.get(SnapshotStoreRef, plan.parent_ref_id)
    snapshot = rt.store.get(Snapshot, take.snapshot.id)
    dest = new_image_ref(rt, snapshot, parent.store_id)
    moved = store_ref_event(rt.store, dest, RefEvent.CreateOnlyRequested)
    answer = Answer(result=True, path=parent.install_path)
    store_ref_event(rt.store, moved, RefEvent.OperationSucceeded, answer, answer_type=AnswerType.CREATE_OBJECT)
    try:
        take.snapshot = snapshot_event(rt.store, snapshot, SnapshotEvent.OperationNotPerformed)
    except NoTransitionException as exc:
        raise CloudRuntimeException(f"{exc.java_name}: {exc.message}", cause=exc) from exc


def mark_as_backed_up(t: Turn[TakeContext]) -> str | None:
    """Backed up without a copy (:func:`backed_up_without_copy`), then postSnapshotCreation."""
    ctx = t.ctx
    backed_up_without_copy(t.rt, ctx.take, ctx.plan)
    if not post_snapshot_creation(t.rt, ctx.strategy, ctx.take):
        return None
    return Take.PostProcess


def mark_backed_up(rt: Runtime, snapshot: Snapshot) -> Snapshot:
    """``SnapshotObject.markBackedUp``: OperationNotPerformed (CreatedOnPrimary to BackedUp)."""
    try:
        return snapshot_event(rt.store, snapshot, SnapshotEvent.OperationNotPerformed)
    except NoTransitionException as exc:
        raise CloudRuntimeException(exc.message, cause=exc) from exc


def skip(t: Turn[TakeContext]) -> str:
    """Backup off (spec §5.4 step 8): ``markBackedUp`` always, after scheduling a COPY task if asked for one.

    With pool ids and asyncbackup, the COPY strategy is looked up first; only when there is one is a
    BackupSnapshotTask scheduled, carrying it. The MS_ID detail is left behind (spec §13.3).
    """
    rt, ctx = t.rt, t.ctx
    snapshot = rt.store.get(Snapshot, ctx.take.snapshot.id)
    if ctx.payload.pool_ids and ctx.payload.async_backup:
        strategy = rt.factory.best(rt.strategy_env, snapshot, Operation.COPY)
        if strategy is not None:
            _schedule_task(t, snapshot, strategy, copy_only=True)
    ctx.take.snapshot = mark_backed_up(rt, snapshot)
    return Take.PostProcess


def post_directly(t: Turn[TakeContext]) -> str:
    """``postSnapshotDirectlyToSecondary`` (KVM file-based, backup on; spec §5.4 step 7, §13.2).

    The pre-created Allocated image ref gets the path and is set Ready directly; the snapshot is markBackedUp; the
    primary ref row is deleted and the MS_ID detail removed. asyncbackup is ignored on this path.
    """
    rt, ctx = t.rt, t.ctx
    snapshot = rt.store.get(Snapshot, ctx.take.snapshot.id)
    image_ref = rt.store.first(
        SnapshotStoreRef, "snapshot_id = ? AND store_role = 'Image' AND state = ?", (snapshot.id, RefState.Allocated)
    )
    primary = primary_ref(rt.store, snapshot.id, ctx.take.pool.id)
    if image_ref is None or primary is None:
        raise CloudRuntimeException(f"no Allocated image ref for {snapshot_str(snapshot)}")
    image_ref = rt.store.update(image_ref, install_path=primary.install_path)
    rt.store.write_state_directly(image_ref, RefState.Ready, by="postSnapshotDirectlyToSecondary")
    ctx.take.snapshot = mark_backed_up(rt, snapshot)
    rt.store.delete(primary, by="postSnapshotDirectlyToSecondary (removeBySnapshotStore)")
    for detail in rt.store.find(SnapshotDetail, "snapshot_id = ? AND name = ?", (snapshot.id, MS_ID)):
        rt.store.delete(detail, by="SnapshotDetailsDao.removeDetail")
    return Take.PostProcess


def schedule(t: Turn[TakeContext]) -> str:
    """asyncbackup: a BackupSnapshotTask is scheduled with delay 0 and the API job goes on (spec §7.2)."""
    _schedule_task(t, t.ctx.take.snapshot, t.ctx.strategy, copy_only=False)
    return Take.PostProcess


def _schedule_task(t: Turn[TakeContext], snapshot: Snapshot, strategy: SnapshotStrategy, *, copy_only: bool) -> None:
    """A BackupSnapshotTask with ``attempts = backup.retry - 1`` and ``strategy`` (spec §7.2).

    ``backupSnapshotToSecondary(async=true)`` hands it the TAKE strategy, which also copies to the pool ids (spec
    §6.1); with ``copy_only`` (backup off, pool ids and asyncbackup, spec §5.4 step 8) it carries the COPY strategy
    and only copies to the pools.
    """
    ctx = t.ctx
    task = BackupTaskContext(
        job_id=ctx.job_id,
        snapshot_id=snapshot.id,
        volume_id=snapshot.volume_id,
        account_id=snapshot.account_id,
        strategy=strategy,
        payload=ctx.payload,
        pool_id=ctx.take.pool.id,
        attempts=t.rt.config.number("backup.retry") - 1,
        zone_ids=ctx.payload.zone_ids,
        pool_ids=ctx.payload.pool_ids,
        copy_only=copy_only,
    )
    t.schedule(Machine.BACKUP_TASK, task, Task.Run, label=f"BackupSnapshotTask for snapshot {snapshot.id}")


STEPS: StepTable = {
    "backup.choose": choose,
    "backup.request": request,
    "backup.answered": answered,
    "backup.mark_as_backed_up": mark_as_backed_up,
    "backup.skip": skip,
    "backup.post_directly": post_directly,
    "backup.schedule": schedule,
}
