"""Retention after a recurring snapshot (spec §9.3), as the ``retention`` machine the take job waits for."""

from __future__ import annotations

from snapshotfsm.describe import snapshot_str
from snapshotfsm.names import Delete, Retention, SnapshotState
from snapshotfsm.orchestration import accounting
from snapshotfsm.orchestration.contexts import DeleteContext, Machine, RetentionContext
from snapshotfsm.orchestration.contract import StepTable, Turn
from snapshotfsm.orchestration.runtime import Runtime
from snapshotfsm.store.records import Snapshot, SnapshotPolicy


def limit(rt: Runtime, snapshot: Snapshot, policy_id: int) -> int:
    """``Type.max`` (``snapshot.max.<type>``, read at start), lowered to the policy's ``max_snaps`` if smaller."""
    most = rt.config.number(f"snapshot.max.{snapshot.type_description.lower()}")
    policy = rt.store.first(SnapshotPolicy, "id = ?", (policy_id,)) if policy_id else None
    if policy is not None and policy.max_snaps < most:
        most = policy.max_snaps
    return most


def counted(rt: Runtime, snapshot: Snapshot) -> list[int]:
    """The snapshots that count: all of the volume and recurring type that are not Destroyed, oldest first.

    Not only this policy's, and Error or Allocated ones too; id order is the DAO's default order (spec §9.3 marks it
    UNVERIFIED).
    """
    rows = rt.store.find(
        Snapshot,
        "volume_id = ? AND snapshot_type = ? AND status != ? AND removed IS NULL",
        (snapshot.volume_id, snapshot.snapshot_type, SnapshotState.Destroyed),
    )
    return [s.id for s in rows]


def plan(rt: Runtime, snapshot: Snapshot, policy_id: int, *, caller_id: int, job_id: int) -> RetentionContext | None:
    """Retention's context when anything must go (the caller spawns it and waits); None when nothing must."""
    most = limit(rt, snapshot, policy_id)
    snaps = counted(rt, snapshot)
    if not (len(snaps) > most and len(snaps) > 1):
        return None
    return RetentionContext(
        job_id=job_id,
        snapshot_id=snapshot.id,
        volume_id=snapshot.volume_id,
        caller_id=caller_id,
        snaps=snaps,
        most=most,
    )


def delete_oldest(t: Turn[RetentionContext]) -> None:
    """``deleteSnapshot(snaps[0], null)`` through the full delete path; retention waits for it.

    The row is read first, as the list CloudStack walks holds it: the action event prints it as it was.
    """
    ctx = t.ctx
    oldest = ctx.snaps[0]
    ctx.oldest = snapshot_str(t.rt.store.get(Snapshot, oldest))
    ctx.delete = DeleteContext(job_id=ctx.job_id, snapshot_id=oldest, caller_id=ctx.caller_id)
    t.spawn(Machine.DELETE, ctx.delete, Delete.Start, resume=Retention.Deleted)


def deleted(t: Turn[RetentionContext]) -> str:
    """The oldest one's delete ended: a thrown error ends retention; true writes the action event."""
    ctx = t.ctx
    child = ctx.delete
    if child is not None and child.error is not None:
        raise child.error
    gone = ctx.snaps.pop(0)
    if child is not None and child.result:
        ctx.deleted.append(gone)
        snapshot = t.rt.store.get(Snapshot, gone)
        # onCompletedActionEvent(User.UID_SYSTEM, ...): the internal deleteSnapshot call has no @ActionEvent of its
        # own (a call on ``this`` bypasses the interceptor), so this is the one event of a retention delete.
        accounting.action_event(
            t.rt,
            "SNAPSHOT.DELETE",
            f"Successfully deleted oldest snapshot: {ctx.oldest}",
            account_id=snapshot.account_id,
            resource_id=gone,
            state="Completed",
        )
    if len(ctx.snaps) > ctx.most and len(ctx.snaps) > 1:
        return Retention.DeleteOldest
    return Retention.Finish


def finish(t: Turn[RetentionContext]) -> None:
    """Nothing more to delete."""
    del t


def fail(t: Turn[RetentionContext]) -> None:
    """The error stays on the context, for the take job's post-processing to see."""
    del t


STEPS: StepTable = {
    "retention.delete_oldest": delete_oldest,
    "retention.deleted": deleted,
    "retention.finish": finish,
    "retention.fail": fail,
}
