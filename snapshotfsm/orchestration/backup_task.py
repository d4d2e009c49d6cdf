"""The async backup task, ``SnapshotManagerImpl.BackupSnapshotTask`` (spec §7.2), as the ``backup_task`` machine.

The take job completes as soon as the task is scheduled; the task then backs the snapshot up on the simulated clock
(or copies it to pools), retrying on failure. It is held only in the scheduling server's memory: a crash drops it.
"""

from __future__ import annotations

import logging
from typing import ClassVar

from snapshotfsm.errors import CloudException, CloudRuntimeException
from snapshotfsm.names import MachineNames
from snapshotfsm.orchestration.backup import (
    cleanup_on_backup_failure,
    finish_backup,
    start_backup,
)
from snapshotfsm.orchestration.runner import Run, step
from snapshotfsm.orchestration.runtime import Runtime
from snapshotfsm.store.records import Snapshot, StoragePool, Volume
from snapshotfsm.strategies.base import BackupPlan, primary_ref
from snapshotfsm.strategies.base import Take as TakeState

log = logging.getLogger(__name__)


class Task(MachineNames, machine="backup_task", kind="event"):
    """Events of the async backup task (states/backup_task.toml)."""

    Run: ClassVar[str]
    Backup: ClassVar[str]
    MarkBackedUp: ClassVar[str]
    CopyOnPools: ClassVar[str]
    CopyAnswered: ClassVar[str]
    CopyToZones: ClassVar[str]
    ZoneCopiesDone: ClassVar[str]
    PoolCopiesDone: ClassVar[str]
    Finish: ClassVar[str]
    Retry: ClassVar[str]
    CleanUp: ClassVar[str]


def _start(take_run: Run, snapshot: Snapshot, *, copy_only: bool) -> None:
    rt = take_run.rt
    assert take_run.take is not None and take_run.payload is not None
    task = rt.runner.start(
        "backup_task",
        {
            "job_id": take_run.job_id,
            "snapshot_id": snapshot.id,
            "volume_id": snapshot.volume_id,
            "account_id": snapshot.account_id,
            "strategy": take_run.strategy,
            "payload": take_run.payload,
            "flags": {
                "attempts": rt.config.number("backup.retry") - 1,
                "zone_ids": list(take_run.payload.zone_ids),
                "pool_ids": list(take_run.payload.pool_ids),
                "pool_id": take_run.take.pool.id,
                "copy_only": copy_only,
            },
        },
    )
    rt.runner.fire_later(task, Task.Run, label=f"BackupSnapshotTask for snapshot {snapshot.id}")


def schedule_backup_task(take_run: Run) -> None:
    """``backupSnapshotToSecondary(async=true)``: schedule the task with ``attempts = backup.retry - 1``, delay 0."""
    assert take_run.take is not None
    _start(take_run, take_run.take.snapshot, copy_only=False)


def schedule_copy_task(take_run: Run, snapshot: Snapshot) -> None:
    """Backup off with pool ids and asyncbackup (spec §5.4 step 8): a task that only copies to the pools."""
    _start(take_run, snapshot, copy_only=True)


def _take(rt: Runtime, run: Run) -> TakeState:
    assert run.payload is not None
    snapshot = rt.store.get(Snapshot, run.snapshot_id or 0)
    volume = rt.store.get(Volume, snapshot.volume_id)
    pool = rt.store.get(StoragePool, run.flags["pool_id"])
    return TakeState(snapshot=snapshot, volume=volume, pool=pool, payload=run.payload)


@step("backup_task.run")
def run_task(run: Run) -> str:
    """``runInContext``: back up when backup is on and there are no pool ids; copy to pools when there are."""
    rt = run.rt
    if run.flags["pool_ids"]:
        return Task.CopyOnPools
    if rt.config.flag("snapshot.backup.to.secondary") and not run.flags["copy_only"]:
        assert run.strategy is not None
        plan = run.strategy.backup_plan(rt.strategy_env, _take(rt, run))
        run.flags["backup_plan"] = {"kind": plan.kind, "full": plan.full}
        return Task.MarkBackedUp if plan.kind == "mark_backed_up" else Task.Backup
    return Task.Finish


@step("backup_task.backup")
def backup(run: Run) -> None:
    """``strategy.backupSnapshot`` with asyncBackup set: start the copy and wait for its answer (spec §5.8)."""
    rt = run.rt

    def answered(answer: object) -> None:
        run.answer = answer
        rt.runner.fire(run, Task.CopyAnswered)

    _, dest = start_backup(rt, _take(rt, run), BackupPlan(**run.flags["backup_plan"]), answered)
    run.flags["image_ref_id"] = dest.id


@step("backup_task.mark_backed_up")
def mark_backed_up(run: Run) -> str:
    """A StorageSystem snapshot that is not SECONDARY is marked BackedUp without a copy (spec §5.7)."""
    from snapshotfsm.orchestration.backup import mark_storage_system_backed_up  # noqa: PLC0415

    rt = run.rt
    take = _take(rt, run)
    mark_storage_system_backed_up(rt, take)
    return _after_backup(run, take)


@step("backup_task.answered")
def answered(run: Run) -> str:
    """The copy answered; a failure (the row already soft-removed, spec §5.8) counts down the attempts."""
    rt = run.rt
    take = _take(rt, run)
    failure = finish_backup(rt, take, run.flags["image_ref_id"], run.answer, async_backup=True)
    if failure is not None:
        raise CloudRuntimeException(failure)
    return _after_backup(run, take)


def _after_backup(run: Run, take: TakeState) -> str:
    """postSnapshotCreation, the CLVM primary ref removal, then the zone copies (spec §7.2)."""
    rt = run.rt
    assert run.strategy is not None
    try:
        run.strategy.post_snapshot_creation(rt.strategy_env, take)
    except CloudException as exc:
        log.debug("postSnapshotCreation failed: %s", exc)
    if take.pool.pool_type == "CLVM":
        ref = primary_ref(rt.store, take.snapshot.id, take.pool.id)
        if ref is not None:
            rt.store.delete(ref, by="SnapshotManagerImpl.removeClvmPrimarySnapshotStoreRefIfNeeded")
    return Task.CopyToZones if run.flags["zone_ids"] else Task.Finish


@step("backup_task.copy_to_zones")
def copy_to_zones(run: Run) -> None:
    """``copyNewSnapshotToZones`` for the task's zone ids; the task waits for the copies."""
    from snapshotfsm.orchestration import copies  # noqa: PLC0415

    snapshot = run.rt.store.get(Snapshot, run.snapshot_id or 0)
    copies.start_zone_copies(run, snapshot, run.flags["zone_ids"], resume_event=Task.ZoneCopiesDone)


@step("backup_task.copy_on_pools")
def copy_on_pools(run: Run) -> None:
    """``copySnapshotOnPool`` for each pool id (no secondary backup in this case, spec §7.2)."""
    from snapshotfsm.orchestration import copies  # noqa: PLC0415

    snapshot = run.rt.store.get(Snapshot, run.snapshot_id or 0)
    copies.start_pool_copies(run, snapshot, run.flags["pool_ids"], resume_event=Task.PoolCopiesDone)


@step("backup_task.copies_done")
def copies_done(run: Run) -> None:
    """The copies ended: what escaped them fails this try, as it reaches ``runInContext``'s catch (spec §7.2).

    ``copyNewSnapshotToZones`` catches what a zone copy throws but a NullPointerException; ``copySnapshotOnPool``
    catches nothing the strategy throws.
    """
    thrown = run.children[-1].flags.get("thrown")
    if thrown is None or (not run.flags["pool_ids"] and thrown["caught_by_zone_copies"]):
        return
    raise CloudRuntimeException(f"{thrown['type']}: {thrown['message']}")


@step("backup_task.finish")
def finish(run: Run) -> None:
    """The task ends."""
    del run


@step("backup_task.decrease_attempts")
def decrease_attempts(run: Run) -> str | None:
    """``decriseBackupSnapshotAttempts``: retry after ``backup.retry.interval`` while attempts >= 0, else clean up."""
    rt = run.rt
    attempts = run.flags["attempts"]
    if attempts >= 0:
        run.flags["attempts"] = attempts - 1
        delay = rt.config.number("backup.retry.interval") * 1000
        rt.runner.fire_later(
            run, Task.Retry, delay_ms=delay, label=f"BackupSnapshotTask retry, attempts {attempts - 1}"
        )
        return None
    return Task.CleanUp


@step("backup_task.cleanup")
def cleanup(run: Run) -> None:
    """``cleanupOnSnapshotBackupFailure`` after the last try; its own failure only ends the executor's task."""
    rt = run.rt
    snapshot = rt.store.first(Snapshot, "id = ?", (run.snapshot_id,))
    try:
        if snapshot is None:
            raise CloudRuntimeException(f"snapshot {run.snapshot_id} is gone (expunged while the task waited)")
        cleanup_on_backup_failure(rt, snapshot, rt.store.get(StoragePool, run.flags["pool_id"]))
    except CloudException as exc:
        log.warning("BackupSnapshotTask cleanup failed: %s", exc)
        run.flags["cleanup_failed"] = exc.message
