"""The take on primary storage (spec §5.5, §5.6, §5.7).

The strategy around ``SnapshotServiceImpl.takeSnapshot``, and the driver's asynchronous answer.
"""

from __future__ import annotations

import contextlib

from snapshotfsm.chains import incremental_parent, primary_parent
from snapshotfsm.describe import snapshot_object_str
from snapshotfsm.drivers.base import Answer
from snapshotfsm.drivers.primary import DefaultPrimaryDriver
from snapshotfsm.errors import (
    CloudException,
    CloudRuntimeException,
    NoTransitionException,
    NullPointerException,
)
from snapshotfsm.names import RefEvent, RefState, SnapshotEvent, Take
from snapshotfsm.objects import AnswerType, snapshot_event, store_ref_event
from snapshotfsm.orchestration import accounting
from snapshotfsm.orchestration.contexts import TakeContext
from snapshotfsm.orchestration.contract import StepTable, Turn
from snapshotfsm.orchestration.runtime import Runtime
from snapshotfsm.orchestration.take import new_image_ref
from snapshotfsm.store.records import ImageStore, Snapshot, SnapshotStoreRef
from snapshotfsm.strategies.base import SnapshotTake, primary_ref


def begin(t: Turn[TakeContext]) -> str:
    """The strategy's checks, lock and the volume's SnapshotRequested (spec §5.5 steps 1-3, §5.7)."""
    t.ctx.strategy.before_take(t.rt.strategy_env, t.ctx.take)
    return Take.RequestPrimary


def request(t: Turn[TakeContext]) -> None:
    """``SnapshotServiceImpl.takeSnapshot`` up to the driver call (spec §5.6 steps 1-4); then wait for the answer."""
    rt, ctx = t.rt, t.ctx
    take = ctx.take
    original = take.snapshot
    parent_id = primary_parent(
        rt.store,
        original,
        take.pool.id,
        kvm_incremental=rt.config.flag("kvm.incremental.snapshot", cluster=take.cluster_id),
        to_image=ctx.image_store_id is not None,
    )
    ref = rt.store.insert(
        SnapshotStoreRef(
            store_id=take.pool.id,
            store_role="Primary",
            snapshot_id=original.id,
            volume_id=take.volume.id,
            state=RefState.Allocated,
            size=take.volume.size,
            physical_size=take.volume.size,
            parent_snapshot_id=parent_id,
            created=rt.clock.timestamp(),
            last_updated=rt.clock.timestamp(),
        )
    )
    try:
        take.snapshot = snapshot_event(rt.store, original, SnapshotEvent.CreateRequested)
    except NoTransitionException as exc:
        raise CloudRuntimeException(exc.message, cause=exc) from exc
    try:
        moved = store_ref_event(rt.store, ref, RefEvent.CreateOnlyRequested)
    except CloudException as exc:
        with contextlib.suppress(NoTransitionException):
            take.snapshot = snapshot_event(rt.store, take.snapshot, SnapshotEvent.OperationFailed)
        raise CloudRuntimeException(exc.message, cause=exc) from exc
    ctx.primary_ref_id = moved.id
    image_id = ctx.image_store_id
    driver = rt.drivers.primary(take.pool)
    target = rt.drivers.image(rt.store.get(ImageStore, image_id)) if image_id is not None else None
    try:
        parent = _parent_ref(rt, take, parent_id)
        parent_path = parent.install_path if parent is not None else None
        if take.payload.kvm_incremental and isinstance(driver, DefaultPrimaryDriver):
            driver.take_incremental_snapshot(
                take.snapshot, take.volume, t.reply(Take.PrimaryAnswered), to_image=target, parent_path=parent_path
            )
        else:
            driver.take_snapshot(
                take.snapshot, take.volume, t.reply(Take.PrimaryAnswered), to_image=target, parent_path=parent_path
            )
    except CloudException as exc:
        # The catch fires OperationFailed on the ORIGINAL SnapshotObject, whose in-memory state is still
        # Allocated: NoTransition, caught, and the row stays Creating (spec §5.6 step 4). Hardened
        # (fail_take_on_current_snapshot): on the snapshot as the take moved it, and its primary ref too.
        held = take.snapshot if rt.profile.fail_take_on_current_snapshot else original
        with contextlib.suppress(NoTransitionException):
            take.snapshot = snapshot_event(rt.store, held, SnapshotEvent.OperationFailed)
        if rt.profile.fail_take_on_current_snapshot:
            with contextlib.suppress(CloudException):
                store_ref_event(rt.store, moved, RefEvent.OperationFailed)
        text = snapshot_object_str(original, take.pool.id, take.image_store_id)
        raise CloudRuntimeException(f"Failed to take snapshot {text}", cause=exc) from exc


def _parent_ref(rt: Runtime, take: SnapshotTake, parent_id: int) -> SnapshotStoreRef | None:
    """The parent the driver's TO names (``SnapshotObject.getParent``, spec §16.1, §16.4).

    The parent's ref on this pool; for KVM, the parent's first ref with a checkpoint, on whichever store the
    parent search found it (the pre-selected image store's kind, ``returnNullIfNotOnSameTypeOfStoreRole``).
    """
    if not parent_id:
        return None
    if take.snapshot.hypervisor_type == "KVM":
        return incremental_parent(rt.store, parent_id)
    return primary_ref(rt.store, parent_id, take.pool.id)


def answered(t: Turn[TakeContext]) -> str:
    """``createSnapshotAsyncCallback``, the size update, usage ON_PRIMARY, then the strategy (spec §5.6 5-7).

    A failed result throws only after the callback and the usage event, as ``DefaultSnapshotStrategy`` throws
    ``CloudRuntimeException(result)`` once ``SnapshotServiceImpl.takeSnapshot`` has returned.
    """
    rt, ctx = t.rt, t.ctx
    take = ctx.take
    answer = t.answer
    ref = rt.store.get(SnapshotStoreRef, ctx.primary_ref_id)
    failure = _callback(rt, ctx, ref, answer)
    if answer is None:
        raise NullPointerException("answer is null in updateSnapSizeAndCheckpointPathIfPossible")
    if answer.result:
        _update_size(rt, ctx, answer)
    snapshot = rt.store.get(Snapshot, take.snapshot.id)
    if not rt.profile.usage_only_for_objects or (failure is None and ctx.image_store_id is None):
        # Hardened (usage_only_for_objects): only a take that succeeded and left its file on primary storage
        # bills it; KVM file-based storage with backup on writes straight to secondary (§13.2).
        accounting.usage(rt, "SNAPSHOT.ON_PRIMARY", snapshot, size=snapshot.size, virtual_size=snapshot.size)
    if failure is not None:
        raise CloudRuntimeException(failure)
    take.snapshot = snapshot
    ctx.strategy.after_take(rt.strategy_env, take, ok=True)
    return backup_decision(ctx)


def _callback(rt: Runtime, ctx: TakeContext, ref: SnapshotStoreRef, answer: Answer | None) -> str | None:
    """``createSnapshotAsyncCallback``: the events on the snapshot and its primary ref; the failure text, if any."""
    take = ctx.take
    if answer is not None and not answer.result:
        try:
            take.snapshot = snapshot_event(rt.store, take.snapshot, SnapshotEvent.OperationFailed)
            store_ref_event(rt.store, ref, RefEvent.OperationFailed)
        except CloudException:
            pass
        return answer.details
    try:
        # The answer's fields and the ref's event are two commits (spec §21.2); a null answer throws on the first.
        store_ref_event(rt.store, ref, RefEvent.OperationSucceeded, answer, answer_type=AnswerType.CREATE_OBJECT)
        take.snapshot = snapshot_event(rt.store, take.snapshot, SnapshotEvent.OperationSucceeded)
    except CloudException as exc:
        with contextlib.suppress(NoTransitionException):
            take.snapshot = snapshot_event(rt.store, take.snapshot, SnapshotEvent.OperationFailed)
        if rt.profile.fail_take_on_current_snapshot:
            # Hardened: a null answer fails the primary ref too, which upstream leaves Creating (§5.6 item 6).
            current = rt.store.first(SnapshotStoreRef, "id = ? AND state = ?", (ref.id, RefState.Creating))
            if current is not None:
                with contextlib.suppress(CloudException):
                    store_ref_event(rt.store, current, RefEvent.OperationFailed)
        return f"{exc.java_name}: {exc.message}"
    return None


def _update_size(rt: Runtime, ctx: TakeContext, answer: Answer) -> None:
    """``updateSnapSizeAndCheckpointPathIfPossible`` (spec §16.4): the pre-selected image ref, or the primary ref.

    The image ref is created here when an image store was pre-selected (KVM file-based, backup on). One update
    writes the answer's physical size (when above 0: a KVM incremental delta's own size) and its checkpoint path
    (None for every take but a KVM incremental one).
    """
    snapshot = ctx.take.snapshot
    if ctx.image_store_id is not None:
        ref = new_image_ref(rt, snapshot, ctx.image_store_id)
        ctx.image_ref_id = ref.id
    else:
        ref = rt.store.get(SnapshotStoreRef, ctx.primary_ref_id)
    fields: dict[str, object] = {"kvm_checkpoint_path": answer.checkpoint_path}
    if answer.physical_size > 0:
        fields["physical_size"] = answer.physical_size
    rt.store.update(ref, **fields)


def backup_decision(ctx: TakeContext) -> str:
    """Spec §5.4 steps 7-8: which way the snapshot goes once it is on primary."""
    if not ctx.backup_on:
        return Take.SkipBackup
    if ctx.kvm_file_based:
        return Take.BackUpDirectly
    return Take.BackUpLater if ctx.payload.async_backup else Take.BackUp


def abort(t: Turn[TakeContext]) -> str:
    """The strategy's finally block with a failed result: volume OperationFailed, lock (spec §5.5 step 5)."""
    t.ctx.strategy.after_take(t.rt.strategy_env, t.ctx.take, ok=False)
    return Take.Unwind


STEPS: StepTable = {
    "primary.begin": begin,
    "primary.request": request,
    "primary.answered": answered,
    "primary.abort": abort,
}
