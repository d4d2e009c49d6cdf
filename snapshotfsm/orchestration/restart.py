"""A management server's crash, its restart cleanup, a peer's cleanup after it, and the storage GC (spec §10).

A crash drops what the server held in memory (its runs, pending driver answers, retries, pollers) and keeps what it
persisted; its database sessions end, and with them its GlobalLocks (spec §21.1). At start, CloudStack cleans up
after itself in this order: its ``op_lock`` rows (the lock controller's ``cleanupThisServer``), left-over jobs and
the snapshots they were creating, snapshots still carrying its ``MS_ID`` detail, failed volume work jobs and its
left-over work-job rows, Destroying snapshots (deleted again), orphan policies, then every policy is rescheduled. A
peer that sees a server leave frees its ``op_lock`` rows and runs the job cleanup for it (``onManagementNodeLeft``).
"""

from __future__ import annotations

import contextlib
import json
import logging

from snapshotfsm.errors import CloudException, NoTransitionException
from snapshotfsm.faults import RESTART_PHASES
from snapshotfsm.names import (
    JobEvent,
    JobState,
    RefEvent,
    RefState,
    SnapshotEvent,
    SnapshotState,
    VolumeEvent,
    VolumeState,
    WorkEvent,
    WorkState,
)
from snapshotfsm.objects import snapshot_event, store_ref_event, volume_transit
from snapshotfsm.orchestration import delete as deletes
from snapshotfsm.orchestration import policies, reconcile
from snapshotfsm.orchestration.api_errors import INTERNAL_ERROR
from snapshotfsm.orchestration.copy_api import COPY_SNAPSHOT_CMD
from snapshotfsm.orchestration.delete import DELETE_SNAPSHOT_CMD
from snapshotfsm.orchestration.dispatch import VM_WORK_TAKE_VOLUME_SNAPSHOT
from snapshotfsm.orchestration.jobs import CREATE_SNAPSHOT_CMD
from snapshotfsm.orchestration.runner import Runner
from snapshotfsm.orchestration.runtime import Runtime
from snapshotfsm.store.records import (
    SYSTEM_ACCOUNT_ID,
    AsyncJob,
    ManagementServer,
    NamedLock,
    OpLock,
    Snapshot,
    SnapshotDetail,
    SnapshotPolicy,
    SnapshotSchedule,
    SnapshotStoreRef,
    TransitionLog,
    VmWorkJob,
    Volume,
)
from snapshotfsm.strategies.base import store_zone
from snapshotfsm.strategies.default import MS_ID

log = logging.getLogger(__name__)

CANCELLED_TEXT = "job cancelled because of management server restart or shutdown"
START_THREAD = "ManagementServer-start"
"""The thread that runs the start-up cleanup (and the re-delete of Destroying snapshots in it)."""


def mark_server(rt: Runtime, ms_id: int, state: str) -> None:
    """The ``mshost`` row of a server: Up when it starts, Down when it crashes."""
    row = rt.store.first(ManagementServer, "msid = ?", (ms_id,))
    if row is None:
        rt.store.insert(ManagementServer(msid=ms_id, name=f"ms{ms_id}", state=state, last_update=rt.clock.timestamp()))
    else:
        rt.store.update(row, state=state, last_update=rt.clock.timestamp())


def crash(runner: Runner) -> int:
    """Drop what this server holds only in memory; returns how many scheduled tasks were lost.

    Storage keeps working: an operation a driver already started still completes on the array, but its answer to
    this server is lost (the drivers check the server's incarnation).
    """
    rt = runner.rt
    rt.incarnation += 1
    rt.down = True
    dropped = len(rt.scheduler.drop_owned_by(rt.ms_id))
    runner.live.clear()
    runner.awaiting.clear()
    rt.store.current_job_id = None
    rt.strategy_env.thread = ""
    end_sessions(rt, rt.ms_id)
    mark_server(rt, rt.ms_id, "Down")
    return dropped


def end_sessions(rt: Runtime, ms_id: int) -> int:
    """The crashed server's database sessions end: MySQL frees the GlobalLocks they held (spec §21.1).

    That a crashed process's session ends and frees its ``GET_LOCK`` locks is MySQL behaviour, UNVERIFIED in the
    spec. Its ``op_lock`` rows stay: only its restart or a peer's node-left cleanup removes them. Returns how many
    named locks went.
    """
    held = rt.store.find(NamedLock, "ms_id = ?", (ms_id,))
    for lock in held:
        rt.store.delete(lock, by="MySQL session end (GET_LOCK released)")
    return len(held)


def release_locks(rt: Runtime, ms_id: int, *, by: str) -> int:
    """The ``op_lock`` rows of server ``ms_id`` go: ``Merovingian2.cleanupThisServer`` or ``cleanupForServer``.

    Spec §21.1: the lock controller does it over its own connection, each delete on its own, apart from (and before)
    the job manager's cleanup transaction. Returns how many rows went.
    """
    held = rt.store.find(OpLock, "ms_id = ?", (ms_id,))
    for lock in held:
        rt.store.delete(lock, by=by)
    return len(held)


def restart(runner: Runner) -> dict[str, int]:
    """The start-up cleanup of spec §10, in order, for this server; returns what each step touched."""
    rt = runner.rt
    rt.note("restart", f"ms{rt.ms_id}", f"ms{rt.ms_id}", "starts again: start-up cleanup (§10)")
    rt.config.reload()
    rt.down = False
    mark_server(rt, rt.ms_id, "Up")
    _phase(rt, "release_locks")
    released = release_locks(rt, rt.ms_id, by="Merovingian2.cleanupThisServer")
    _phase(rt, "cleanup_left_over_jobs")
    report = {"locks_released": released, **cleanup_left_over_jobs(rt, rt.ms_id)}
    _phase(rt, "cleanup_storage_jobs")
    report["storage_jobs"] = cleanup_storage_jobs(rt, rt.ms_id)
    _phase(rt, "expunge_left_over_work_jobs")
    report["work_jobs_expunged"] = expunge_left_over_work_jobs(rt, rt.ms_id)
    _phase(rt, "redelete_destroying")
    report["destroying_redeleted"] = redelete_destroying(runner)
    _phase(rt, "remove_orphan_policies")
    report["orphan_policies"] = remove_orphan_policies(rt)
    _phase(rt, "reschedule_policies")
    policies.configure(rt)
    policies.reschedule_all(rt)
    rt.strategy_env.end_thread(START_THREAD)
    return report


def _phase(rt: Runtime, phase: str) -> None:
    """The crash point before a phase of the cleanup (``restart.<phase>``, one of ``faults.RESTART_PHASES``)."""
    where = f"restart.{phase}"
    if phase not in RESTART_PHASES:
        raise ValueError(f"{where} is not a restart phase of the fault catalogue")
    rt.crash_point(where)


def node_left(rt: Runtime, peer_ms_id: int) -> dict[str, int]:
    """A peer left the cluster: its ``op_lock`` rows go, then its left-over jobs are cleaned up.

    Two listeners (spec §21.1, §10.1): the lock controller's ``LockControllerListener.onManagementNodeLeft`` frees
    the peer's locks (``cleanupForServer``), whatever the profile; ``AsyncJobManagerImpl.onManagementNodeLeft`` runs
    ``cleanupLeftOverJobs`` for it. Under a profile without ``peer_cleanup_on_node_left`` (the code as read at U,
    where the job manager is never registered as a listener) the jobs are not cleaned, and wait for that server's
    own restart.
    """
    rt.note("node_left", f"ms{rt.ms_id}", f"ms{peer_ms_id}", "onManagementNodeLeft: takes over its left-over jobs")
    mark_server(rt, peer_ms_id, "Down")
    released = release_locks(rt, peer_ms_id, by="Merovingian2.cleanupForServer")
    if not rt.profile.peer_cleanup_on_node_left:
        return {"locks_released": released, "jobs_failed": 0, "ms_id_details": 0}
    return {"locks_released": released, **cleanup_left_over_jobs(rt, peer_ms_id)}


def cleanup_left_over_jobs(rt: Runtime, ms_id: int) -> dict[str, int]:
    """``cleanupLeftOverJobs(msid)`` then ``cleanupFailedSnapshotsCreatedWithDefaultStrategy(msid)``, one transaction.

    Spec §10.1, §21.2 (restart row), §21.5, §21.7 on §10.1. ``getResetJobs`` takes every IN_PROGRESS job this server
    executed (or created, when nobody executed it), removed rows included, oldest first, VM work jobs too; each is set
    FAILED (530) and soft-deleted, whatever its resource cleanup did (``cleanupResources`` catches per job). Then the
    ``MS_ID`` cleanup, in the same transaction: a CloudStack exception escaping it (any but NoTransition, which it
    absorbs per snapshot) rolls back the whole cleanup, every job included, and is only logged by the outer catch;
    the jobs stay IN_PROGRESS until the next restart or node-left (spec: UNVERIFIED at runtime).

    Not modelled: CloudStack's flat nesting, where an SQL failure inside one DAO call rolls back everything so far
    and the rest runs in autocommit (the model's writes do not fail that way, ``Store.atomic``).
    """
    store = rt.store
    jobs_failed = 0
    try:
        with store.atomic():
            # The work jobs still queued or running, each checked against its own job row: listing the server's
            # jobs first would read every job it ever ran.
            for work in store.find(
                VmWorkJob,
                "state IN (?, ?) AND EXISTS (SELECT 1 FROM async_job j WHERE j.id = vm_work_job.id"
                " AND (j.job_init_msid = ? OR j.job_executing_msid = ?))",
                (WorkState.Queued, WorkState.Running, ms_id, ms_id),
            ):
                store.transit(work, WorkEvent.Cancel)
            pending = store.find(
                AsyncJob,
                "job_status = ? AND (job_executing_msid = ? OR (job_executing_msid IS NULL AND job_init_msid = ?))",
                (JobState.ordinal(JobState.IN_PROGRESS), ms_id, ms_id),
                order_by="created, id",
            )
            hardened = rt.profile.restart_resolves_left_over_jobs
            for job in pending:
                if hardened and _resolved_otherwise(rt, job, ms_id):
                    continue
                try:
                    _cleanup_resources(rt, job)
                except CloudException as exc:
                    log.warning(
                        "Error while cleaning up resource: [%s] with Id: %s: %s",
                        job.instance_type,
                        job.instance_id,
                        exc,
                    )
                failed = store.transit(job, JobEvent.CompleteFailed)
                now = rt.clock.timestamp()
                store.update(
                    failed,
                    job_result_code=INTERNAL_ERROR,
                    job_result=CANCELLED_TEXT,
                    job_complete_msid=ms_id,
                    last_updated=now,
                    removed=now,
                )
                jobs_failed += 1
                if hardened:
                    _undo(rt, failed, ms_id)
            if hardened:
                reconcile.drop_jobless_allocations(rt, ms_id)
            details = _cleanup_ms_id_details(rt, ms_id)
            if hardened:
                _finish_lost_backup_tasks(rt, ms_id)
                _fail_lost_copies(rt, ms_id)
    except CloudException as exc:
        log.warning("Unexpected exception while cleaning up left over jobs for management server %s: %s", ms_id, exc)
        return {"jobs_failed": 0, "ms_id_details": 0}
    return {"jobs_failed": jobs_failed, "ms_id_details": details}


def _resolved_otherwise(rt: Runtime, job: AsyncJob, ms_id: int) -> bool:
    """Hardened (``restart_resolves_left_over_jobs``): a delete job is finished rather than failed.

    Its snapshot already gone (``Destroyed`` or removed): the job answers SUCCEEDED. Still ``Destroying``: the job
    is left IN_PROGRESS and the re-delete of §10.3 (:func:`redelete_destroying`) runs under it and answers it. A
    FAILED answer for a delete that moved rows is what upstream gives (spec §10.1, §21.4.1).
    """
    if job.job_cmd != DELETE_SNAPSHOT_CMD or job.instance_id is None:
        return False
    snapshot = rt.store.first(Snapshot, "id = ?", (job.instance_id,))
    if snapshot is None or snapshot.removed is not None or snapshot.status == SnapshotState.Destroyed:
        reconcile.finish_delete_job(rt, job)
        if snapshot is not None:
            reconcile.recount_account(rt, snapshot.account_id, ms_id)
        return True
    if snapshot.status != SnapshotState.Destroying:
        return _finish_if_refs_went(rt, job, snapshot, ms_id)
    if rt.store.count(SnapshotStoreRef, "snapshot_id = ? AND state != ?", (snapshot.id, RefState.Destroyed)) == 0:
        # Every file is gone and the crash fell before the snapshot's own write: that write, then the answer.
        snapshot_event(rt.store, snapshot, SnapshotEvent.OperationSucceeded)
        reconcile.finish_delete_job(rt, job)
        reconcile.recount_account(rt, snapshot.account_id, ms_id)
    return True


def _finish_if_refs_went(rt: Runtime, job: AsyncJob, snapshot: Snapshot, ms_id: int) -> bool:
    """Hardened: a delete that destroyed every ref it was asked to, but crashed before its end, answers SUCCEEDED.

    A zone delete leaves the snapshot BackedUp (spec §9.4), and StorPool writes Destroyed only once every ref went
    (§8), so neither finds its snapshot Destroying. When the job moved refs and none of its scope (the zone, or the
    whole snapshot) is left but Destroyed or Destroying (whose file the storage GC's sweep deletes, §10.5), its work
    is done: a whole delete's snapshot is written Destroyed, as the
    strategies' ``updateSnapshotToDestroyed`` does, the job SUCCEEDED, the account recounted. A job that moved
    nothing, or left a ref, is failed as upstream does (its FAILED answer is then true, or the re-delete runs).
    """
    store = rt.store
    moved = store.count(TransitionLog, "job_id = ? AND machine = 'snapshot_store_ref'", (job.id,))
    if not moved:
        return False
    zone_id = json.loads(job.job_cmd_info).get("zoneid")
    scope = [
        r
        for r in store.find(SnapshotStoreRef, "snapshot_id = ?", (snapshot.id,))
        if zone_id is None or store_zone(store, r) == zone_id
    ]
    if any(r.state not in (RefState.Destroyed, RefState.Destroying) for r in scope):
        return False
    if zone_id is None and snapshot.status != SnapshotState.Destroyed:
        with store.acting_for(job.id):
            store.write_state_directly(snapshot, SnapshotState.Destroyed, by=reconcile.FINISH_DELETE)
    reconcile.finish_delete_job(rt, job)
    reconcile.recount_account(rt, snapshot.account_id, ms_id)
    return True


def _undo(rt: Runtime, job: AsyncJob, ms_id: int) -> None:
    """Hardened (``restart_resolves_left_over_jobs``): what a FAILED take or copy left is undone; counts recounted.

    Upstream's ``cleanupSnapshot`` only soft-removes an Allocated snapshot and fails a Creating one, leaving
    CreatedOnPrimary, BackingUp and BackedUp snapshots live under a FAILED job, the volume Snapshotting, refs
    Creating and the counts as far as the job got (spec §10.1, §21.4.3).
    """
    if job.instance_type != "Snapshot" or job.instance_id is None:
        return
    snapshot = rt.store.first(Snapshot, "id = ?", (job.instance_id,))
    if job.job_cmd == CREATE_SNAPSHOT_CMD:
        reconcile.undo_take(rt, job.instance_id)
        executed = rt.store.count(
            TransitionLog, "job_id = ? AND machine = 'take_snapshot' AND event = 'Execute'", (job.id,)
        )
        if snapshot is not None and snapshot.status == SnapshotState.Allocated and not executed:
            # The job never ran: only allocSnapshot's charges exist, and they go back exactly (no recount to defer).
            reconcile.settle_allocation(rt, snapshot, ms_id)
            return
    elif job.job_cmd == COPY_SNAPSHOT_CMD:
        reconcile.undo_copy(rt, job)
    if snapshot is not None:
        reconcile.recount_account(rt, snapshot.account_id, ms_id)


def _cleanup_resources(rt: Runtime, job: AsyncJob) -> None:
    """``cleanupResources(job)`` by ``instance_type``; work jobs have none and are skipped."""
    if job.instance_type == "Snapshot" and job.instance_id is not None:
        _cleanup_snapshot(rt, job.instance_id)
    elif job.instance_type == "Volume" and job.instance_id is not None:
        volume = rt.store.first(Volume, "id = ?", (job.instance_id,))
        if volume is not None and rt.store.definitions["volume"].state_def(volume.state).transitional:
            volume_transit(rt.store, job.instance_id, VolumeEvent.OperationFailed)


def _cleanup_snapshot(rt: Runtime, snapshot_id: int) -> None:
    """``AsyncJobManagerImpl.cleanupSnapshot``: Allocated is soft-removed; Creating is failed; others are left.

    Creating goes through ``updateOperationFailed``: for each live ref the volume, the snapshot and the ref get
    OperationFailed; a refused event sets the snapshot Error directly. Any other error goes up to
    ``cleanupResources``, which only logs it.
    """
    store = rt.store
    snapshot = store.first(Snapshot, "id = ? AND removed IS NULL", (snapshot_id,))
    if snapshot is None:
        log.warning("Snapshot not found. Skip Cleanup. SnapshotId: %s", snapshot_id)
        return
    if snapshot.status == SnapshotState.Allocated:
        store.remove(snapshot, by="AsyncJobManagerImpl.cleanupSnapshot")
        return
    if snapshot.status != SnapshotState.Creating:
        return
    try:
        for ref in store.find(SnapshotStoreRef, "snapshot_id = ? AND state != ?", (snapshot_id, RefState.Destroyed)):
            volume_transit(store, snapshot.volume_id, VolumeEvent.OperationFailed)
            snapshot_event(store, store.get(Snapshot, snapshot_id), SnapshotEvent.OperationFailed)
            store_ref_event(store, store.get(SnapshotStoreRef, ref.id), RefEvent.OperationFailed)
    except NoTransitionException:
        store.write_state_directly(
            store.get(Snapshot, snapshot_id), SnapshotState.Error, by="AsyncJobManagerImpl.cleanupSnapshot"
        )


def _cleanup_ms_id_details(rt: Runtime, ms_id: int) -> int:
    """``cleanupFailedSnapshotsCreatedWithDefaultStrategy``: OperationFailed on snapshots with this server's MS_ID.

    BackingUp and Creating go to Error, Destroying back to BackedUp; CreatedOnPrimary and BackedUp have no such
    transition (only logged). A removed snapshot, or one with no primary ref, only loses the detail.
    """
    store = rt.store
    details = store.find(SnapshotDetail, "name = ? AND value = ? AND display = 0", (MS_ID, str(ms_id)))
    for detail in details:
        snapshot = store.first(Snapshot, "id = ? AND removed IS NULL", (detail.snapshot_id,))
        if (
            rt.profile.restart_resolves_left_over_jobs
            and snapshot is not None
            and snapshot.status in (SnapshotState.CreatedOnPrimary, SnapshotState.BackingUp)
        ):
            # Hardened: the async backup task died with this server (spec §7.2); its snapshot ends BackedUp.
            reconcile.finish_backup(rt, snapshot)
            reconcile.recount_account(rt, snapshot.account_id, ms_id)
            store.delete(detail, by="cleanupFailedSnapshotsCreatedWithDefaultStrategy")
            continue
        on_primary = store.first(SnapshotStoreRef, "snapshot_id = ? AND store_role = 'Primary'", (detail.snapshot_id,))
        if snapshot is not None and on_primary is not None:
            with contextlib.suppress(NoTransitionException):
                snapshot_event(store, snapshot, SnapshotEvent.OperationFailed)
        store.delete(detail, by="cleanupFailedSnapshotsCreatedWithDefaultStrategy")
    return len(details)


def _finish_lost_backup_tasks(rt: Runtime, ms_id: int) -> int:
    """Hardened (``restart_resolves_left_over_jobs``): a lost backup task that left no MS_ID detail ends too.

    StorageSystem's take writes no MS_ID detail (spec §5.7), so the cleanup above never finds the snapshot of its
    async backup task (§7.2) once the server that ran it is gone: a SUCCEEDED take whose snapshot is still
    CreatedOnPrimary or BackingUp, its job run by that server, has no task left anywhere. It ends as a lost task's
    does (:func:`reconcile.finish_backup`), and its account is recounted. Returns how many.
    """
    store = rt.store
    lost = store.find(
        Snapshot,
        "removed IS NULL AND status IN (?, ?) AND id IN (SELECT instance_id FROM async_job WHERE job_cmd = ?"
        " AND instance_type = 'Snapshot' AND job_status = ? AND COALESCE(job_executing_msid, job_init_msid) = ?)",
        (
            SnapshotState.CreatedOnPrimary,
            SnapshotState.BackingUp,
            CREATE_SNAPSHOT_CMD,
            JobState.ordinal(JobState.SUCCEEDED),
            ms_id,
        ),
    )
    for snapshot in lost:
        reconcile.finish_backup(rt, snapshot)
        reconcile.recount_account(rt, snapshot.account_id, ms_id)
    return len(lost)


def _fail_lost_copies(rt: Runtime, ms_id: int) -> int:
    """Hardened (``restart_resolves_left_over_jobs``): the copies a lost backup task was making end as failed ones.

    After its backup, ``BackupSnapshotTask`` copies the snapshot to the take's other zones
    (``copyNewSnapshotToZones``) or to its pools, in that server's memory only, under the take's SUCCEEDED job and
    after ``postSnapshotCreation`` removed the MS_ID detail (spec §7.2, §7.4): no cleanup finds the destination ref
    it was writing, which stays Creating (or Allocated) for good, and a later delete refuses it. Each store ref the
    dead server created and left so, once its jobs are cleaned up, is failed as a copy's own failure path fails it
    (OperationFailed, then ``deleteIfNotReady``); a file the store made for it is the storage GC's. A copy that
    reached Ready committed whole (``zone_copy_is_atomic``). Returns how many refs went.
    """
    store = rt.store
    lost = store.find(
        SnapshotStoreRef,
        "state IN (?, ?) AND id IN (SELECT entity_id FROM transition_log WHERE machine = 'snapshot_store_ref'"
        " AND kind = 'create' AND ms_id = ?)",
        (*reconcile.UNMADE, ms_id),
    )
    for ref in lost:
        with contextlib.suppress(CloudException):
            reconcile.fail_unmade_ref(store, ref, by="BackupSnapshotTask (hardened: lost with its server)")
    return len(lost)


def cleanup_storage_jobs(rt: Runtime, ms_id: int) -> int:
    """``VolumeOrchestrator.cleanupStorageJobs`` (§10.2): FAILED VmWorkTakeVolumeSnapshot jobs of this server.

    ``findFailureAsyncJobs`` lists through ``GenericDaoBase.search``, which adds ``removed IS NULL``, and every job
    completion soft-deletes the job row, so at upstream U this finds nothing in practice and
    ``cleanupVolumeDuringSnapshotFailure`` does not run. The model queries the same way.
    """
    store = rt.store
    jobs = store.find(
        AsyncJob,
        "job_status = ? AND job_init_msid = ? AND job_cmd = ? AND removed IS NULL",
        (JobState.ordinal(JobState.FAILED), ms_id, VM_WORK_TAKE_VOLUME_SNAPSHOT),
    )
    for job in jobs:
        info = json.loads(job.job_cmd_info)
        _cleanup_volume_during_snapshot_failure(rt, info["volumeId"], info["snapshotId"])
    return len(jobs)


def _cleanup_volume_during_snapshot_failure(rt: Runtime, volume_id: int, snapshot_id: int) -> None:
    """``cleanupVolumeDuringSnapshotFailure``: a snapshot that is not BackedUp loses its refs and its row.

    A Snapshotting volume is set Ready directly.
    """
    store = rt.store
    snapshot = store.first(Snapshot, "id = ? AND removed IS NULL", (snapshot_id,))
    if snapshot is not None and snapshot.status != SnapshotState.BackedUp:
        for ref in store.find(SnapshotStoreRef, "snapshot_id = ? AND state != ?", (snapshot_id, RefState.Destroyed)):
            store.delete(ref, by="cleanupVolumeDuringSnapshotFailure")
        store.remove(snapshot, by="cleanupVolumeDuringSnapshotFailure")
    volume = store.first(Volume, "id = ?", (volume_id,))
    if volume is not None and volume.state == VolumeState.Snapshotting:
        store.write_state_directly(volume, VolumeState.Ready, by="cleanupVolumeDuringSnapshotFailure")


def expunge_left_over_work_jobs(rt: Runtime, ms_id: int) -> int:
    """``expungeLeftoverWorkJobs(msid)``: this server's work jobs are hard-deleted, in every status.

    Both rows go: ``vm_work_job`` and ``async_job``.
    """
    store = rt.store
    jobs = store.find(
        AsyncJob,
        "job_init_msid = ? AND job_dispatcher IN ('VmWorkJobDispatcher', 'VmWorkJobPlaceHolder')",
        (ms_id,),
    )
    with store.atomic():
        for work in store.find(
            VmWorkJob,
            "id IN (SELECT id FROM async_job WHERE job_init_msid = ? AND job_dispatcher"
            " IN ('VmWorkJobDispatcher', 'VmWorkJobPlaceHolder'))",
            (ms_id,),
        ):
            store.delete(work, by="VmWorkJobDaoImpl.expungeLeftoverWorkJobs")
        for job in jobs:
            store.delete(job, by="VmWorkJobDaoImpl.expungeLeftoverWorkJobs")
    return len(jobs)


def redelete_destroying(runner: Runner) -> int:
    """``SnapshotManagerImpl.start``: every Destroying snapshot goes through deleteSnapshot again (§10.3).

    On the start-up thread: a lock a failed delete leaves (``deleteSnapshotInfos``) is held until the start ends. A
    re-delete whose storage delete never answers would block CloudStack's start for ever; the model parks that
    delete (its job-less run waits in Deleting) and goes on with the start.
    """
    rt = runner.rt
    destroying = rt.store.find(Snapshot, "status = ? AND removed IS NULL", (SnapshotState.Destroying,))
    for snapshot in destroying:
        job = _left_over_delete(rt, snapshot.id) if rt.profile.restart_resolves_left_over_jobs else None
        if job is not None:
            # Hardened: the delete job this server left runs again and answers (``_resolved_otherwise``).
            deletes.resume_job(runner, job, thread=START_THREAD)
            continue
        if rt.profile.restart_resolves_left_over_jobs and _delete_job_left(rt, snapshot.id):
            # Hardened: another server's left-over delete job of it is re-run by that server's restart; a second,
            # job-less re-delete here would race it for the same rows.
            continue
        if rt.profile.interrupted_delete_completes and _files_gone(rt, snapshot):
            continue
        deletes.start_detached(runner, snapshot.id, caller_id=SYSTEM_ACCOUNT_ID, thread=START_THREAD)
    return len(destroying)


def _files_gone(rt: Runtime, snapshot: Snapshot) -> bool:
    """Hardened (``interrupted_delete_completes``): a Destroying snapshot with no ref left but Destroyed is finished.

    The crash fell after the last file went and before the snapshot's own write (a StorageSystem delete, which
    retention runs under the take's job, spec §9.3): upstream's re-delete finds no DELETE strategy for it (none
    handles a snapshot without a Ready ref, §6.2) and it stays Destroying for good (§10.3). Here it gets that write,
    and its account is recounted, as no one knows how far the delete's give-backs went (§19.2).
    """
    if rt.store.count(SnapshotStoreRef, "snapshot_id = ? AND state != ?", (snapshot.id, RefState.Destroyed)):
        return False
    snapshot_event(rt.store, snapshot, SnapshotEvent.OperationSucceeded)
    reconcile.recount_account(rt, snapshot.account_id, rt.ms_id)
    return True


def _left_over_delete(rt: Runtime, snapshot_id: int) -> AsyncJob | None:
    """The IN_PROGRESS delete job of the snapshot that this server ran (or created), if any."""
    return rt.store.first(
        AsyncJob,
        "job_cmd = ? AND instance_id = ? AND job_status = ?"
        " AND (job_executing_msid = ? OR (job_executing_msid IS NULL AND job_init_msid = ?))",
        (DELETE_SNAPSHOT_CMD, snapshot_id, JobState.ordinal(JobState.IN_PROGRESS), rt.ms_id, rt.ms_id),
    )


def _delete_job_left(rt: Runtime, snapshot_id: int) -> bool:
    """Whether an IN_PROGRESS delete job of the snapshot is left, of any server (hardened re-delete, §10.3)."""
    return (
        rt.store.count(
            AsyncJob,
            "job_cmd = ? AND instance_id = ? AND job_status = ?",
            (DELETE_SNAPSHOT_CMD, snapshot_id, JobState.ordinal(JobState.IN_PROGRESS)),
        )
        > 0
    )


def remove_orphan_policies(rt: Runtime) -> int:
    """``cleanupOrphanSnapshotPolicies`` (§10.3): active policies of missing or Expunged volumes are deleted.

    The volume lookup includes removed rows; the policy's waiting schedule goes with it.
    """
    removed = 0
    for policy in rt.store.find(SnapshotPolicy, "active = 1"):
        volume = rt.store.first(Volume, "id = ?", (policy.volume_id,))
        if volume is None or volume.state == VolumeState.Expunged:
            for row in rt.store.find(SnapshotSchedule, "policy_id = ? AND async_job_id IS NULL", (policy.id,)):
                rt.store.delete(row, by="SnapshotManagerImpl.deletePolicy")
            rt.store.delete(policy, by="SnapshotManagerImpl.deletePolicy")
            removed += 1
    return removed
