"""The storage garbage collector's snapshot work (spec §10.5), as the ``storage_gc`` machine.

Each phase is CloudStack's synchronous code with its errors logged and swallowed. ``gc.start`` is a generator step:
where the collector blocks on a driver's delete it yields, the run waits in ``Collecting``, and ``gc.answered``
resumes it there with the answer.
"""

from __future__ import annotations

import logging
from collections.abc import Generator

from snapshotfsm.drivers.base import Answer
from snapshotfsm.errors import CloudException
from snapshotfsm.names import Gc, RefState, SnapshotState
from snapshotfsm.orchestration import reconcile
from snapshotfsm.orchestration.contexts import GcContext, Machine
from snapshotfsm.orchestration.contract import Resumes, StepGen, StepTable, Turn
from snapshotfsm.orchestration.runner import Runner
from snapshotfsm.orchestration.runtime import Runtime
from snapshotfsm.store.records import ImageStore, Snapshot, SnapshotStoreRef
from snapshotfsm.strategies.base import DeleteRun, DeleteWait, service_delete

log = logging.getLogger(__name__)
GC_LOCK = "storagemgr.cleanup"
"""The ``GlobalLock`` of ``cleanupStorage`` (a MySQL named lock, not an ``op_lock`` row: spec §21.1, §21.7 on §11)."""
GC_THREAD = "StorageGarbageCollector"
"""The collector's executor thread: the thread of every pass."""

Collection = Generator[DeleteWait, Answer | None, None]


def run_once(runner: Runner) -> None:
    """One ``cleanupStorage`` pass, if the GlobalLock ``storagemgr.cleanup`` is free (no transaction: spec §21.2).

    The collector is a single executor thread that blocks on each delete, so no pass starts while this server's
    previous one still waits. A server that crashed mid-pass held the lock by its database session, which the crash
    ended: a peer's pass then runs (``StrategyEnv.global_lock``).
    """
    rt = runner.rt
    if not rt.strategy_env.global_lock(GC_LOCK, owner=GC_THREAD):
        return
    runner.fire(runner.start(Machine.GC, GcContext(thread=GC_THREAD)), Gc.Start)


def start_collector(runner: Runner) -> None:
    """Every ``storage.cleanup.interval`` s after ``storage.cleanup.delay`` s, when ``storage.cleanup.enabled``."""
    rt = runner.rt
    if not rt.config.flag("storage.cleanup.enabled"):
        return
    incarnation = rt.incarnation

    def tick() -> None:
        if rt.incarnation != incarnation:
            return
        rt.crash_point("tick.StorageGarbageCollector")
        run_once(runner)
        interval = rt.config.number("storage.cleanup.interval") * 1000
        rt.scheduler.call_later(interval, tick, label="StorageGarbageCollector", owner=rt.ms_id, periodic=True)

    delay = rt.config.number("storage.cleanup.delay") * 1000
    rt.scheduler.call_later(delay, tick, label="StorageGarbageCollector", owner=rt.ms_id, periodic=True)


def _collect(rt: Runtime, ctx: GcContext) -> Collection:
    env = rt.strategy_env
    store = rt.store
    for ref in store.find(SnapshotStoreRef, "state = ?", (RefState.Destroying,)):
        if store.first(Snapshot, "id = ? AND removed IS NULL", (ref.snapshot_id,)) is None:
            continue
        yield from _quietly(service_delete(env, ref))
        ctx.deleted_refs += 1
    for ref in store.find(SnapshotStoreRef, "state = ? AND store_role = 'Image'", (RefState.Destroyed,)):
        child = store.first(
            SnapshotStoreRef,
            "store_id = ? AND store_role = 'Image' AND parent_snapshot_id = ? AND state != ?",
            (ref.store_id, ref.snapshot_id, RefState.Destroyed),
        )
        if child is not None or store.first(ImageStore, "id = ? AND removed IS NULL", (ref.store_id,)) is None:
            continue
        if store.count(SnapshotStoreRef, "snapshot_id = ? AND store_role = 'Image'", (ref.snapshot_id,)) <= 1:
            snapshot = store.first(Snapshot, "id = ? AND removed IS NULL", (ref.snapshot_id,))
            if snapshot is not None and not _left_to_its_delete(rt, snapshot):
                store.remove(snapshot, by="StorageManagerImpl.cleanupSecondaryStorage")
        primary = store.first(
            SnapshotStoreRef,
            "snapshot_id = ? AND store_role = 'Primary' AND state = ?",
            (ref.snapshot_id, RefState.Destroyed),
        )
        if primary is not None:
            store.delete(primary, by="StorageManagerImpl.cleanupSecondaryStorage")
        store.delete(ref, by="StorageManagerImpl.cleanupSecondaryStorage")
        ctx.removed_refs += 1
    for snapshot in store.find(Snapshot, "status = ?", (SnapshotState.Error,)):
        try:
            for ref in store.find(SnapshotStoreRef, "snapshot_id = ?", (snapshot.id,)):
                # StorageManagerImpl.deleteSnapshot runs for every ref, whatever its state: a Destroyed ref
                # (cleanupOnSnapshotBackupFailure's primary ref) is DestroyRequested again and deleted on storage; a
                # ref with no DestroyRequested transition (Creating) fails there, which is only logged.
                yield from _quietly(service_delete(env, ref))
                # expunge(id) of a row another thread expunged meanwhile (a deleteSnapshot of the Error snapshot)
                # deletes nothing.
                current = store.first(SnapshotStoreRef, "id = ?", (ref.id,))
                if current is not None:
                    store.delete(current, by="StorageManagerImpl.removeSnapshotsInErrorStatus")
            current_snapshot = store.first(Snapshot, "id = ?", (snapshot.id,))
            if current_snapshot is not None:
                store.delete(current_snapshot, by="StorageManagerImpl.removeSnapshotsInErrorStatus (expunge)")
            ctx.expunged += 1
        except CloudException as exc:
            log.warning("Unable to destroy snapshot %s due to: %s", snapshot.id, exc)


def _left_to_its_delete(rt: Runtime, snapshot: Snapshot) -> bool:
    """Hardened (``storpool_delete_marks_snapshot``): a Destroying snapshot is its delete's to finish, not the GC's.

    Upstream's ``cleanupSecondaryStorage`` soft-removes the snapshot of the last image ref it drops (spec §10.5),
    whatever its state. A StorPool delete commits its refs Destroying one by one, so while it waits (or after a
    crash) the GC takes them all and removes the snapshot still Destroying; nothing then writes its end. Here the row
    is left to the delete that is under way, or to the start-up re-delete (§10.3, ``interrupted_delete_completes``).
    """
    return rt.profile.storpool_delete_marks_snapshot and snapshot.status == SnapshotState.Destroying


def _quietly(deletion: DeleteRun) -> Collection:
    """A storage delete whose failure is only logged (``deleteSnapshot``'s catch in StorageManagerImpl)."""
    try:
        yield from deletion
    except CloudException as exc:
        log.warning("Failed to delete snapshot from storage due to: %s", exc)


def start(t: Turn[GcContext]) -> StepGen:
    """Destroying refs, then Destroyed image refs, then snapshots in Error (StorageManagerImpl.cleanupStorage).

    Hardened (``gc_reconciles_storage``): then what no row owns is deleted and the bills of what went are closed
    (:mod:`snapshotfsm.orchestration.reconcile`); upstream stops at the rows (spec §10.5). Hardened
    (``gc_drops_refs_of_deleted_files``): before that, the primary refs whose file a host deleted on its own go
    (spec §5.9, §16.2 item 5), so that their bills are closed in the same pass.
    """
    yield from _collect(t.rt, t.ctx)
    if t.rt.profile.gc_drops_refs_of_deleted_files:
        reconcile.drop_refs_of_deleted_files(t.rt)
    if t.rt.profile.gc_reconciles_storage:
        reconcile.delete_orphans(t.rt)
        reconcile.close_bills(t.rt)
    return Gc.Finish


def finish(t: Turn[GcContext]) -> None:
    """The pass is over: the lock is released, and the pass's thread context closes (``cleanupThread``)."""
    env = t.rt.strategy_env
    env.global_unlock(GC_LOCK)
    env.end_thread(GC_THREAD)


STEPS: StepTable = {"gc.start": start, "gc.answered": Resumes(start), "gc.finish": finish}
