"""Deleting a snapshot: ``SnapshotManagerImpl.deleteSnapshot(id, zoneId)`` (spec §9.4, §8).

This is the ``delete_snapshot`` machine.

Through the API, ``@ActionEvent(SNAPSHOT.DELETE, "deleting snapshot", async=true)`` brackets the manager method:
``ApiServer`` writes Scheduled ("Deleting Snapshot with ID: <uuid>") when it submits the job; ``DeleteSnapshotCmd``
sets the event details "Snapshot ID: <uuid>", so the interceptor writes Started ("Deleting snapshot. Snapshot ID:
<uuid>") and Completed, "Successfully completed deleting snapshot. Snapshot ID: <uuid>" when the method returns (true
or false) or, at level ERROR, "Error while deleting snapshot. Snapshot ID: <uuid>" when it throws. Retention and the
start-up re-delete call the method on ``this``: no such events.

The DELETE strategy's code is a generator (``SnapshotStrategy.delete``) that yields where CloudStack blocks on a
driver's future answered by another thread. ``delete.start`` is a generator step around it: the job waits in
``Deleting`` for each answer and ``delete.answered`` resumes it there. The suspended step lives in the run's memory,
as CloudStack's thread holds its stack: a crash loses it. The Default strategy's deletes are answered on the job's
own thread inside ``deleteSnapshotInfos``' transaction (spec §21.3), so it yields only where a delete never answers
and the job waits for ever.
"""

from __future__ import annotations

import json

from snapshotfsm.definitions import project_definitions
from snapshotfsm.describe import snapshot_str
from snapshotfsm.errors import (
    ApiError,
    CloudException,
    CloudRuntimeException,
    InvalidParameterValueException,
    PermissionDeniedException,
)
from snapshotfsm.names import Delete, JobEvent, RefState, SnapshotState
from snapshotfsm.orchestration import accounting
from snapshotfsm.orchestration.api_errors import ACCOUNT_ERROR, INTERNAL_ERROR, PARAM_ERROR
from snapshotfsm.orchestration.contexts import DeleteContext, Machine, RefBefore
from snapshotfsm.orchestration.contract import Resumes, StepGen, StepTable, Turn
from snapshotfsm.orchestration.jobs import CREATE_SNAPSHOT_CMD, complete, insert_api_job, serialized_response
from snapshotfsm.orchestration.lookups import check_access, store_resource_type
from snapshotfsm.orchestration.runner import Runner
from snapshotfsm.orchestration.runtime import Runtime
from snapshotfsm.store.records import (
    SYSTEM_ACCOUNT_ID,
    Account,
    AsyncJob,
    ImageStore,
    ManagementServer,
    Snapshot,
    SnapshotStoreRef,
    StoragePool,
    TransitionLog,
    Zone,
)
from snapshotfsm.strategies.base import Operation

SNAPSHOT_MACHINE = project_definitions()["snapshot"].name
REF_MACHINE = project_definitions()["snapshot_store_ref"].name
DELETE_SNAPSHOT_CMD = "org.apache.cloudstack.api.command.user.snapshot.DeleteSnapshotCmd"
EVENT_DESCRIPTION = "deleting snapshot"
"""The ``@ActionEvent`` description of ``SnapshotManagerImpl.deleteSnapshot``."""


def submit_api_job(runner: Runner, snapshot_id: int, zone_id: int | None, caller_id: int) -> AsyncJob:
    """``deleteSnapshot`` API: an async job (DeleteSnapshotCmd), dispatched at once on the simulated clock.

    Before the job is submitted, ``ParamProcessWorker`` checks the caller's access to a live snapshot (the ``id``
    parameter's ``@ACL(OperateEntry)``): a refusal is answered at once, ACCOUNT_ERROR, and no job is created.
    Then ``onScheduledActionEvent`` (the caller's user, the entity owner's account: the system's for a snapshot
    ``findById`` does not find) and the job.

    Raises:
        ApiError: the caller may not operate on the snapshot (531).
    """
    rt = runner.rt
    live = rt.store.first(Snapshot, "id = ? AND removed IS NULL", (snapshot_id,))
    if live is not None:
        try:
            check_access(rt.store.get(Account, caller_id), live.account_id)
        except PermissionDeniedException as exc:
            raise ApiError(ACCOUNT_ERROR, exc.message, exception=exc) from None
    accounting.action_event(
        rt,
        "SNAPSHOT.DELETE",
        f"Deleting Snapshot with ID: {_resource_uuid(rt, snapshot_id)}",
        user_id=caller_id,
        account_id=live.account_id if live is not None else SYSTEM_ACCOUNT_ID,
        resource_id=snapshot_id,
        state="Scheduled",
    )
    job = insert_api_job(
        rt,
        DELETE_SNAPSHOT_CMD,
        {"id": snapshot_id, "zoneid": zone_id},
        user_id=caller_id,
        account_id=caller_id,
        snapshot_id=snapshot_id,
    )
    ctx = DeleteContext(job_id=job.id, snapshot_id=snapshot_id, caller_id=caller_id, zone_id=zone_id, api=True)
    run = runner.start(Machine.DELETE, ctx)
    runner.fire_later(run, Delete.Start, label=f"dispatch job {job.id}")
    return job


def _resource_uuid(rt: Runtime, snapshot_id: int) -> str:
    """``getResourceUuid(ID)``: the uuid the call named (removed rows included), else the id as given."""
    snapshot = rt.store.first(Snapshot, "id = ?", (snapshot_id,))
    return snapshot.uuid if snapshot is not None else str(snapshot_id)


def _event(t: Turn[DeleteContext], text: str, *, state: str, level: str = "INFO") -> None:
    """An event of the ``@ActionEvent`` interceptor: the calling user's, filed under the calling account."""
    ctx = t.ctx
    accounting.action_event(
        t.rt,
        "SNAPSHOT.DELETE",
        f"{text}. Snapshot ID: {_resource_uuid(t.rt, ctx.snapshot_id)}",
        user_id=ctx.caller_id,
        account_id=ctx.caller_id,
        resource_id=ctx.snapshot_id,
        state=state,
        level=level,
    )


def start_detached(runner: Runner, snapshot_id: int, *, caller_id: int, thread: str) -> None:
    """A delete nobody waits for (the restart cleanup of Destroying snapshots, spec §10.3), run on ``thread``."""
    ctx = DeleteContext(snapshot_id=snapshot_id, caller_id=caller_id, thread=thread, resumed=True)
    runner.fire(runner.start(Machine.DELETE, ctx), Delete.Start)


def resume_job(runner: Runner, job: AsyncJob, *, thread: str) -> None:
    """Hardened (``restart_resolves_left_over_jobs``): a left-over delete job runs again on ``thread`` and answers.

    Upstream fails the job at restart and re-deletes the Destroying snapshot without one (spec §10.1, §10.3): the
    user reads FAILED while the snapshot goes. Here the re-delete is the job's, and its answer is the delete's.
    """
    params = json.loads(job.job_cmd_info)
    ctx = DeleteContext(
        job_id=job.id,
        snapshot_id=int(params["id"]),
        caller_id=job.account_id,
        zone_id=params.get("zoneid"),
        api=True,
        thread=thread,
        resumed=True,
    )
    runner.fire(runner.start(Machine.DELETE, ctx), Delete.Start)


def start(t: Turn[DeleteContext]) -> StepGen:
    """``SnapshotManagerImpl.deleteSnapshot`` (spec §9.4): its checks, then the strategy's delete, to the end.

    What the strategy raises leaves ``SnapshotManagerImpl.deleteSnapshot`` wrapped in its catch-all.
    """
    rt, ctx = t.rt, t.ctx
    if ctx.api:
        job = rt.store.get(AsyncJob, ctx.job_id)
        rt.store.update(job, job_executing_msid=rt.ms_id, last_updated=rt.clock.timestamp())
        # interceptStart, after DeleteSnapshotCmd.execute set the details: the description capitalised.
        _event(t, EVENT_DESCRIPTION.capitalize(), state="Started")
    snapshot_id, zone_id = ctx.snapshot_id, ctx.zone_id
    snapshot = rt.store.first(Snapshot, "id = ? AND removed IS NULL", (snapshot_id,))
    if snapshot is None:
        raise InvalidParameterValueException(f"unable to find a snapshot with id {snapshot_id}")
    if snapshot.type_description == "GROUP":
        raise InvalidParameterValueException(
            f"The snapshot [{snapshot_str(snapshot)}] is part of a [GROUP] snapshots and cannot be deleted separately"
        )
    if snapshot.status == SnapshotState.Destroyed:
        raise InvalidParameterValueException(f"Snapshot [{snapshot_str(snapshot)}] is already destroyed")
    check_access(rt.store.get(Account, ctx.caller_id), snapshot.account_id)
    strategy = rt.factory.best(rt.strategy_env, snapshot, Operation.DELETE, zone_id)
    if strategy is None:
        ctx.result = False
        return Delete.GiveUp
    ctx.strategy = strategy
    if zone_id is not None and rt.store.first(Zone, "id = ? AND removed IS NULL", (zone_id,)) is None:
        raise InvalidParameterValueException("Unable to find a zone with the specified id")
    for ref in rt.store.find(SnapshotStoreRef, "snapshot_id = ?", (snapshot_id,)):
        found = _found(t, REF_MACHINE, ref.id, ref.state)
        if found == RefState.Destroyed:
            continue
        ref_zone = _zone_of(rt, ref)
        if zone_id is not None and ref_zone != zone_id:
            continue
        ctx.refs_before.append(RefBefore(ref.store_role, found, ref.physical_size))
        if rt.profile.delete_bills_only_made_copies and found == RefState.Allocated:
            # Hardened: a copy's destination not yet made (spec §7.4) has no object in its zone to stop billing.
            continue
        if ref_zone not in ctx.zones:
            ctx.zones.append(ref_zone)
    ctx.pre_state = _found(t, SNAPSHOT_MACHINE, snapshot.id, snapshot.status)
    ctx.account_id = snapshot.account_id
    if rt.profile.storage_charged_as_recounted:
        image = rt.store.first(SnapshotStoreRef, "snapshot_id = ? AND store_role = 'Image'", (snapshot_id,))
        ctx.backed_up = image is not None
    try:
        result = yield from strategy.delete(rt.strategy_env, snapshot_id, zone_id)
    except CloudException as exc:
        raise CloudRuntimeException(f"Failed to delete snapshot:{exc.java_name}: {exc.message}", cause=exc) from exc
    ctx.result = bool(result)
    return Delete.Finish if result else Delete.GiveUp


def _found(t: Turn[DeleteContext], machine: str, entity_id: int, now: str) -> str:
    """The state the delete found a row in: ``now``, or, for a job the restart runs again, before its first move.

    Hardened (``interrupted_delete_completes``, departs from spec §10.3): upstream's re-delete reads the rows as the
    crash left them, so a ref its first run had moved to Destroying or Destroyed is given back by neither run. The
    job's own first move of the row (``transition_log``) says what the first run found.
    """
    ctx = t.ctx
    if not (ctx.resumed and t.rt.profile.interrupted_delete_completes):
        return now
    first = t.rt.store.first(
        TransitionLog, "job_id = ? AND machine = ? AND entity_id = ?", (ctx.job_id, machine, entity_id)
    )
    if first is None or not first.source:
        return now
    return first.overwrote if first.overwrote is not None else first.source


def _ended_by_another_run(t: Turn[DeleteContext]) -> bool:
    """Hardened (``interrupted_delete_completes``): another run wrote the end of the snapshot a re-delete ends too.

    Each server's restart re-deletes every Destroying snapshot (spec §10.3): two servers that restart together both
    run a job-less delete of the same snapshot, and StorPool's ``updateSnapshotToDestroyed`` is a direct write that
    neither refuses: both runs would give back the ``snapshot`` count (§9.4), twice. Here only the run that wrote
    the snapshot's Destroyed (this server, no job) gives it back; each ref's storage is given back by the run that
    moved it from Ready, as the refs' own writes compare and swap.
    """
    rt, ctx = t.rt, t.ctx
    if not (rt.profile.interrupted_delete_completes and ctx.resumed and not ctx.api):
        return False
    end = rt.store.find(
        TransitionLog,
        "machine = ? AND entity_id = ? AND dest = ?",
        (SNAPSHOT_MACHINE, ctx.snapshot_id, SnapshotState.Destroyed),
        order_by="id DESC",
        limit=1,
    )
    return bool(end) and (end[0].ms_id != rt.ms_id or end[0].job_id is not None)


def _zone_of(rt: Runtime, ref: SnapshotStoreRef) -> int:
    if ref.store_role == "Primary":
        return rt.store.get(StoragePool, ref.store_id).data_center_id
    return rt.store.get(ImageStore, ref.store_id).data_center_id


def finish(t: Turn[DeleteContext]) -> None:
    """The strategy returned true: usage SNAPSHOT.DELETE per zone (if it was BackedUp) and the counters (§9.4)."""
    rt, ctx = t.rt, t.ctx
    snapshot = rt.store.get(Snapshot, ctx.snapshot_id)
    if ctx.pre_state == SnapshotState.BackedUp:
        for zone_id in ctx.zones:
            accounting.usage(rt, "SNAPSHOT.DELETE", snapshot, size=0, zone_id=zone_id)
    after = rt.store.first(Snapshot, "id = ? AND removed IS NULL", (snapshot.id,))
    # Hardened (refused_take_gives_back): an Allocated row's take job is still to run, and fails on the removed row;
    # it gives back what allocSnapshot charged, both counts, once (take.give_back_refused), so the delete does not.
    # A row whose take will never run (its server died before submitting it) is given back here, both counts.
    taken_back_by_take = rt.profile.refused_take_gives_back and ctx.pre_state == SnapshotState.Allocated
    if taken_back_by_take and _take_never_runs(rt, snapshot):
        zone = rt.store.get(Zone, snapshot.data_center_id)
        store_type = store_resource_type(rt, zone, snapshot.location_type)
        accounting.change_count(rt, ctx.account_id, accounting.SNAPSHOT, -1, owner_id=snapshot.account_id)
        accounting.change_count(rt, ctx.account_id, store_type, -snapshot.size, owner_id=snapshot.account_id)
    if (
        (after is None or after.status == SnapshotState.Destroyed)
        and ctx.pre_state
        not in (
            SnapshotState.Error,
            SnapshotState.Destroyed,
        )
        and not taken_back_by_take
        and not _ended_by_another_run(t)
    ):
        accounting.change_count(rt, ctx.account_id, accounting.SNAPSHOT, -1, owner_id=snapshot.account_id)
    for ref in ctx.refs_before:
        if ref.state == RefState.Ready and ref.role != "Primary":
            accounting.change_count(
                rt, ctx.account_id, accounting.SECONDARY_STORAGE, -ref.physical_size, owner_id=snapshot.account_id
            )
        elif ref.state == RefState.Ready and rt.profile.storage_charged_as_recounted and not ctx.backed_up:
            # Hardened: primary_storage is never given back upstream (spec §9.4); a primary file of a snapshot with
            # no backup was charged its physical size (§5.4 step 12, §7.4), and that is what goes.
            accounting.change_count(
                rt, ctx.account_id, accounting.PRIMARY_STORAGE, -ref.physical_size, owner_id=snapshot.account_id
            )
    if ctx.api:
        _event(t, f"Successfully completed {EVENT_DESCRIPTION}", state="Completed")
        result = serialized_response("SuccessResponse", "null", {"success": True})
        complete(rt, rt.store.get(AsyncJob, ctx.job_id), JobEvent.CompleteSucceeded, 0, result)


def _take_never_runs(rt: Runtime, snapshot: Snapshot) -> bool:
    """Hardened: an Allocated snapshot no take job names, allocated by a server that is down (spec §4.2, §21.2).

    ``allocSnapshot`` and ``submitAsyncJob`` run on one API thread: a row no job names whose server is down was left
    by a crash between them, and no take will ever give its charges back (the restart's job-less cleanup,
    ``restart_resolves_left_over_jobs``, finds it removed). A row of a live server's API thread is left to its take.
    """
    if rt.store.count(
        AsyncJob, "instance_type = 'Snapshot' AND instance_id = ? AND job_cmd = ?", (snapshot.id, CREATE_SNAPSHOT_CMD)
    ):
        return False
    created = rt.store.first(
        TransitionLog, "machine = 'snapshot' AND entity_id = ? AND kind = 'create'", (snapshot.id,)
    )
    if created is None:
        return False
    return rt.store.count(ManagementServer, "msid = ? AND state = 'Up'", (created.ms_id,)) == 0


def give_up(t: Turn[DeleteContext]) -> None:
    """The manager returned false: its Completed event all the same, then "Failed to delete Snapshot" (530)."""
    if t.ctx.api:
        _event(t, f"Successfully completed {EVENT_DESCRIPTION}", state="Completed")
        _fail_job(t, INTERNAL_ERROR, "Failed to delete Snapshot")


def fail(t: Turn[DeleteContext]) -> None:
    """A refusal or a wrapped strategy error: the ERROR event, the API job fails 431 (InvalidParameterValue) or 530."""
    error = t.ctx.failure()
    if t.ctx.api:
        _event(t, f"Error while {EVENT_DESCRIPTION}", state="Completed", level="ERROR")
        code = PARAM_ERROR if isinstance(error, InvalidParameterValueException) else INTERNAL_ERROR
        _fail_job(t, code, error.message)


def _fail_job(t: Turn[DeleteContext], code: int, text: str) -> None:
    result = serialized_response("ExceptionResponse", "null", {"uuidList": [], "errorcode": code, "errortext": text})
    complete(t.rt, t.rt.store.get(AsyncJob, t.ctx.job_id), JobEvent.CompleteFailed, code, result)


STEPS: StepTable = {
    "delete.start": start,
    "delete.answered": Resumes(start),
    "delete.finish": finish,
    "delete.give_up": give_up,
    "delete.fail": fail,
}
