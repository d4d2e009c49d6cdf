"""Retention after a recurring snapshot (spec §9.3), as the ``retention`` machine the take job waits for."""

from __future__ import annotations

from typing import ClassVar

from snapshotfsm.describe import snapshot_str
from snapshotfsm.names import MachineNames
from snapshotfsm.orchestration import accounting
from snapshotfsm.orchestration.delete import start_child as start_delete
from snapshotfsm.orchestration.runner import Run, step
from snapshotfsm.orchestration.runtime import Runtime
from snapshotfsm.store.records import Snapshot, SnapshotPolicy


class Retention(MachineNames, machine="retention", kind="event"):
    """Events of retention (states/retention.toml)."""

    DeleteOldest: ClassVar[str]
    Deleted: ClassVar[str]
    Finish: ClassVar[str]


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
        "volume_id = ? AND snapshot_type = ? AND status != 'Destroyed' AND removed IS NULL",
        (snapshot.volume_id, snapshot.snapshot_type),
    )
    return [s.id for s in rows]


def start(parent: Run, snapshot: Snapshot, policy_id: int, *, resume_event: str) -> bool:
    """Start retention if anything must go; True when ``parent`` must wait for it."""
    rt = parent.rt
    most = limit(rt, snapshot, policy_id)
    snaps = counted(rt, snapshot)
    if not (len(snaps) > most and len(snaps) > 1):
        return False
    child = rt.runner.start_child(
        parent,
        "retention",
        {
            "snapshot_id": snapshot.id,
            "volume_id": snapshot.volume_id,
            "caller_id": parent.caller_id,
            "flags": {"snaps": snaps, "max": most, "deleted": []},
        },
        resume_event=resume_event,
    )
    rt.runner.fire(child, Retention.DeleteOldest)
    return True


@step("retention.delete_oldest")
def delete_oldest(run: Run) -> None:
    """``deleteSnapshot(snaps[0], null)`` through the full delete path; retention waits for it.

    The row is read first, as the list CloudStack walks holds it: the action event prints it as it was.
    """
    oldest = run.flags["snaps"][0]
    run.flags["oldest"] = snapshot_str(run.rt.store.get(Snapshot, oldest))
    start_delete(run, oldest, resume_event=Retention.Deleted)


@step("retention.deleted")
def deleted(run: Run) -> str:
    """The oldest one's delete ended: a thrown error ends retention; true writes the action event."""
    child = run.children[-1]
    if child.state == "Failed" and child.error is not None:
        raise child.error
    snaps: list[int] = run.flags["snaps"]
    gone = snaps.pop(0)
    if child.flags.get("result"):
        run.flags["deleted"].append(gone)
        snapshot = run.rt.store.get(Snapshot, gone)
        # onCompletedActionEvent(User.UID_SYSTEM, ...): the internal deleteSnapshot call has no @ActionEvent of its
        # own (a call on ``this`` bypasses the interceptor), so this is the one event of a retention delete.
        accounting.action_event(
            run.rt,
            "SNAPSHOT.DELETE",
            f"Successfully deleted oldest snapshot: {run.flags['oldest']}",
            account_id=snapshot.account_id,
            resource_id=gone,
            state="Completed",
        )
    if len(snaps) > run.flags["max"] and len(snaps) > 1:
        return Retention.DeleteOldest
    return Retention.Finish


@step("retention.finish")
def finish(run: Run) -> None:
    """Nothing more to delete."""
    del run


@step("retention.fail")
def fail(run: Run) -> None:
    """The error stays on the run, for the take job's post-processing to see."""
    del run
