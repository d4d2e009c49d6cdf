"""The storage garbage collector's snapshot work (spec §10.5), as the ``storage_gc`` machine.

Each phase is CloudStack's synchronous code with its errors logged and swallowed; where it blocks on a driver's
delete, the collector waits in ``Collecting``.
"""

from __future__ import annotations

import logging
from collections.abc import Generator
from typing import ClassVar

from snapshotfsm.drivers.base import Answer
from snapshotfsm.errors import CloudException
from snapshotfsm.names import MachineNames
from snapshotfsm.orchestration import driver_waits
from snapshotfsm.orchestration.runner import Run, step
from snapshotfsm.orchestration.runtime import Runtime
from snapshotfsm.store.records import ImageStore, OpLock, Snapshot, SnapshotStoreRef
from snapshotfsm.strategies.base import DeleteRun, DriverDelete, service_delete

log = logging.getLogger(__name__)
GC_LOCK = "storagemgr.cleanup"

Collection = Generator[DriverDelete, Answer | None, None]


class Gc(MachineNames, machine="storage_gc", kind="event"):
    """Events of the storage GC (states/storage_gc.toml)."""

    Start: ClassVar[str]
    DriverAnswered: ClassVar[str]
    Finish: ClassVar[str]


def run_once(rt: Runtime) -> Run | None:
    """One ``cleanupStorage`` pass, if the ``storagemgr.cleanup`` lock is free.

    The collector is a single executor thread that blocks on each delete, so no pass starts while this server's
    previous one still waits: the lock's re-entrancy for its holder does not apply here.
    """
    if rt.store.first(OpLock, "key = ?", (GC_LOCK,)) is not None:
        return None
    rt.strategy_env.acquire_lock(GC_LOCK, owner="StorageGarbageCollector")
    run = rt.runner.start("storage_gc", {"flags": {"deleted_refs": 0, "removed_refs": 0, "expunged": 0}})
    rt.runner.fire(run, Gc.Start)
    return run


def start_collector(rt: Runtime) -> None:
    """Every ``storage.cleanup.interval`` s after ``storage.cleanup.delay`` s, when ``storage.cleanup.enabled``."""
    if not rt.config.flag("storage.cleanup.enabled"):
        return
    incarnation = rt.incarnation

    def tick() -> None:
        if rt.incarnation != incarnation:
            return
        run_once(rt)
        interval = rt.config.number("storage.cleanup.interval") * 1000
        rt.scheduler.call_later(interval, tick, label="StorageGarbageCollector", owner=rt.ms_id, periodic=True)

    delay = rt.config.number("storage.cleanup.delay") * 1000
    rt.scheduler.call_later(delay, tick, label="StorageGarbageCollector", owner=rt.ms_id, periodic=True)


def _collect(rt: Runtime, run: Run) -> Collection:
    env = rt.strategy_env
    store = rt.store
    for ref in store.find(SnapshotStoreRef, "state = 'Destroying'"):
        if store.first(Snapshot, "id = ? AND removed IS NULL", (ref.snapshot_id,)) is None:
            continue
        yield from _quietly(service_delete(env, ref))
        run.flags["deleted_refs"] += 1
    for ref in store.find(SnapshotStoreRef, "state = 'Destroyed' AND store_role = 'Image'"):
        child = store.first(
            SnapshotStoreRef,
            "store_id = ? AND store_role = 'Image' AND parent_snapshot_id = ? AND state != 'Destroyed'",
            (ref.store_id, ref.snapshot_id),
        )
        if child is not None or store.first(ImageStore, "id = ? AND removed IS NULL", (ref.store_id,)) is None:
            continue
        if store.count(SnapshotStoreRef, "snapshot_id = ? AND store_role = 'Image'", (ref.snapshot_id,)) <= 1:
            snapshot = store.first(Snapshot, "id = ? AND removed IS NULL", (ref.snapshot_id,))
            if snapshot is not None:
                store.remove(snapshot, by="StorageManagerImpl.cleanupSecondaryStorage")
        primary = store.first(
            SnapshotStoreRef, "snapshot_id = ? AND store_role = 'Primary' AND state = 'Destroyed'", (ref.snapshot_id,)
        )
        if primary is not None:
            store.delete(primary, by="StorageManagerImpl.cleanupSecondaryStorage")
        store.delete(ref, by="StorageManagerImpl.cleanupSecondaryStorage")
        run.flags["removed_refs"] += 1
    for snapshot in store.find(Snapshot, "status = 'Error'"):
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
            run.flags["expunged"] += 1
        except CloudException as exc:
            log.warning("Unable to destroy snapshot %s due to: %s", snapshot.id, exc)


def _quietly(deletion: DeleteRun) -> Collection:
    """A storage delete whose failure is only logged (``deleteSnapshot``'s catch in StorageManagerImpl)."""
    try:
        yield from deletion
    except CloudException as exc:
        log.warning("Failed to delete snapshot from storage due to: %s", exc)


def _advance(run: Run, answer: Answer | None) -> str | None:
    """Resume the collector with ``answer``; finished when it has nothing left to wait for."""
    return None if driver_waits.resume(run, answer, Gc.DriverAnswered) is None else Gc.Finish


@step("gc.start")
def start(run: Run) -> str | None:
    """Destroying refs, then Destroyed image refs, then snapshots in Error (StorageManagerImpl.cleanupStorage)."""
    run.continuation = _collect(run.rt, run)
    return _advance(run, None)


@step("gc.answered")
def answered(run: Run) -> str | None:
    """A driver answered a delete: the collector goes on."""
    return _advance(run, run.answer)


@step("gc.finish")
def finish(run: Run) -> None:
    """The pass is over; the lock is released."""
    run.rt.strategy_env.release_lock(GC_LOCK)
