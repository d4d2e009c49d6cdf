"""Deleting a snapshot: ``SnapshotManagerImpl.deleteSnapshot(id, zoneId)`` (spec §9.4, §8).

This is the ``delete_snapshot`` machine.

The DELETE strategy's code is a generator (``SnapshotStrategy.delete``) that yields where CloudStack blocks on a
driver's future; the job waits in ``Deleting`` for the answer and resumes the generator with it. The generator is
held in the run's memory, as CloudStack's thread holds its stack: a crash loses it.
"""

from __future__ import annotations

from typing import Any, ClassVar

from snapshotfsm.describe import snapshot_str
from snapshotfsm.drivers.base import Answer
from snapshotfsm.errors import (
    ApiError,
    CloudException,
    CloudRuntimeException,
    InvalidParameterValueException,
    PermissionDeniedException,
)
from snapshotfsm.names import JobEvent, MachineNames
from snapshotfsm.orchestration import accounting, driver_waits
from snapshotfsm.orchestration.api import ACCOUNT_ERROR, INTERNAL_ERROR, PARAM_ERROR, check_access
from snapshotfsm.orchestration.jobs import complete, insert_api_job, serialized_response
from snapshotfsm.orchestration.runner import Run, step
from snapshotfsm.orchestration.runtime import Runtime
from snapshotfsm.store.records import Account, AsyncJob, ImageStore, Snapshot, SnapshotStoreRef, StoragePool, Zone
from snapshotfsm.strategies.base import Operation

DELETE_SNAPSHOT_CMD = "org.apache.cloudstack.api.command.user.snapshot.DeleteSnapshotCmd"


class Delete(MachineNames, machine="delete_snapshot", kind="event"):
    """Events of the delete workflow (states/delete_snapshot.toml)."""

    Start: ClassVar[str]
    DriverAnswered: ClassVar[str]
    Finish: ClassVar[str]
    GiveUp: ClassVar[str]
    Fail: ClassVar[str]


def submit_api_job(rt: Runtime, snapshot_id: int, zone_id: int | None, caller_id: int) -> AsyncJob:
    """``deleteSnapshot`` API: an async job (DeleteSnapshotCmd), dispatched at once on the simulated clock.

    Before the job is submitted, ``ParamProcessWorker`` checks the caller's access to a live snapshot (the ``id``
    parameter's ``@ACL(OperateEntry)``): a refusal is answered at once, ACCOUNT_ERROR, and no job is created.

    Raises:
        ApiError: the caller may not operate on the snapshot (531).
    """
    live = rt.store.first(Snapshot, "id = ? AND removed IS NULL", (snapshot_id,))
    if live is not None:
        try:
            check_access(rt, rt.store.get(Account, caller_id), live.account_id)
        except PermissionDeniedException as exc:
            raise ApiError(ACCOUNT_ERROR, exc.message, exception=exc) from None
    job = insert_api_job(
        rt,
        DELETE_SNAPSHOT_CMD,
        {"id": snapshot_id, "zoneid": zone_id},
        user_id=caller_id,
        account_id=caller_id,
        snapshot_id=snapshot_id,
    )
    run = rt.runner.start(
        "delete_snapshot",
        {
            "job_id": job.id,
            "snapshot_id": snapshot_id,
            "caller_id": caller_id,
            "flags": {"zone_id": zone_id, "api": True},
        },
    )
    rt.store.update(run.workflow, job_id=job.id)
    rt.runner.fire_later(run, Delete.Start, label=f"dispatch job {job.id}")
    return job


def start_child(parent: Run, snapshot_id: int, *, resume_event: str, caller_id: int | None = None) -> Run:
    """A delete that ``parent`` waits for (retention), run as ``caller_id`` (default: the parent's caller)."""
    child = parent.rt.runner.start_child(
        parent,
        "delete_snapshot",
        {"snapshot_id": snapshot_id, "caller_id": caller_id or parent.caller_id, "flags": {"zone_id": None}},
        resume_event=resume_event,
    )
    parent.rt.runner.fire(child, Delete.Start)
    return child


def start_detached(rt: Runtime, snapshot_id: int, *, caller_id: int) -> Run:
    """A delete nobody waits for (the restart cleanup of Destroying snapshots, spec §10.3)."""
    run = rt.runner.start(
        "delete_snapshot", {"snapshot_id": snapshot_id, "caller_id": caller_id, "flags": {"zone_id": None}}
    )
    rt.runner.fire(run, Delete.Start)
    return run


@step("delete.start")
def start(run: Run) -> str | None:
    """``SnapshotManagerImpl.deleteSnapshot`` up to the strategy (spec §9.4), then the strategy's delete."""
    rt = run.rt
    if run.flags.get("api"):
        job = rt.store.get(AsyncJob, run.job_id or 0)
        rt.store.update(job, job_executing_msid=rt.ms_id, last_updated=rt.clock.timestamp())
    snapshot_id = run.snapshot_id or 0
    zone_id = run.flags.get("zone_id")
    snapshot = rt.store.first(Snapshot, "id = ? AND removed IS NULL", (snapshot_id,))
    if snapshot is None:
        raise InvalidParameterValueException(f"unable to find a snapshot with id {snapshot_id}")
    if snapshot.type_description == "GROUP":
        raise InvalidParameterValueException(
            f"The snapshot [{snapshot_str(snapshot)}] is part of a [GROUP] snapshots and cannot be deleted separately"
        )
    if snapshot.status == "Destroyed":
        raise InvalidParameterValueException(f"Snapshot [{snapshot_str(snapshot)}] is already destroyed")
    check_access(rt, rt.store.get(Account, run.caller_id or 0), snapshot.account_id)
    strategy = rt.factory.best(rt.strategy_env, snapshot, Operation.DELETE, zone_id)
    if strategy is None:
        run.flags["result"] = False
        return Delete.GiveUp
    run.strategy = strategy
    if zone_id is not None and rt.store.first(Zone, "id = ? AND removed IS NULL", (zone_id,)) is None:
        raise InvalidParameterValueException("Unable to find a zone with the specified id")
    refs = [r for r in rt.store.find(SnapshotStoreRef, "snapshot_id = ?", (snapshot_id,)) if r.state != "Destroyed"]
    zones: list[int] = []
    before: list[dict[str, Any]] = []
    for ref in refs:
        ref_zone = _zone_of(rt, ref)
        if zone_id is not None and ref_zone != zone_id:
            continue
        before.append({"role": ref.store_role, "state": ref.state, "physical_size": ref.physical_size})
        if ref_zone not in zones:
            zones.append(ref_zone)
    run.flags.update(
        strategy=strategy.name,
        pre_state=snapshot.status,
        zones=zones,
        refs_before=before,
        account_id=snapshot.account_id,
    )
    run.continuation = strategy.delete(rt.strategy_env, snapshot_id, zone_id)
    return _advance(run, None)


def _zone_of(rt: Runtime, ref: SnapshotStoreRef) -> int:
    if ref.store_role == "Primary":
        return rt.store.get(StoragePool, ref.store_id).data_center_id
    return rt.store.get(ImageStore, ref.store_id).data_center_id


def _advance(run: Run, answer: Answer | None) -> str | None:
    """Resume the strategy's delete with ``answer``; wait on the next driver delete, or finish.

    What the strategy raises leaves ``SnapshotManagerImpl.deleteSnapshot`` wrapped in its catch-all.
    """
    try:
        done = driver_waits.resume(run, answer, Delete.DriverAnswered)
    except CloudException as exc:
        raise CloudRuntimeException(f"Failed to delete snapshot:{exc.java_name}: {exc.message}", cause=exc) from exc
    if done is None:
        return None
    run.flags["result"] = bool(done.value)
    return Delete.Finish if done.value else Delete.GiveUp


@step("delete.answered")
def answered(run: Run) -> str | None:
    """The driver's delete answered: the strategy goes on (``deleteSnapshotCallback`` runs inside it)."""
    return _advance(run, run.answer)


@step("delete.finish")
def finish(run: Run) -> None:
    """The strategy returned true: usage SNAPSHOT.DELETE per zone (if it was BackedUp) and the counters (§9.4)."""
    rt = run.rt
    flags = run.flags
    snapshot = rt.store.get(Snapshot, run.snapshot_id or 0)
    if flags["pre_state"] == "BackedUp":
        for zone_id in flags["zones"]:
            accounting.usage(rt, "SNAPSHOT.DELETE", snapshot, size=0, zone_id=zone_id)
    after = rt.store.first(Snapshot, "id = ? AND removed IS NULL", (snapshot.id,))
    if (after is None or after.status == "Destroyed") and flags["pre_state"] not in ("Error", "Destroyed"):
        accounting.change_count(rt, flags["account_id"], accounting.SNAPSHOT, -1)
    for ref in flags["refs_before"]:
        if ref["state"] == "Ready" and ref["role"] != "Primary":
            accounting.change_count(rt, flags["account_id"], accounting.SECONDARY_STORAGE, -ref["physical_size"])
    if flags.get("api"):
        # @ActionEvent(SNAPSHOT.DELETE) fires only through the API's proxy: retention and the start-up re-delete
        # call deleteSnapshot on ``this`` and write no such event.
        accounting.action_event(
            rt,
            "SNAPSHOT.DELETE",
            f"Successfully completed deleting snapshot: {snapshot.id}",
            account_id=snapshot.account_id,
            resource_id=snapshot.id,
            state="Completed",
        )
        result = serialized_response("SuccessResponse", "null", {"success": True})
        complete(rt, rt.store.get(AsyncJob, run.job_id or 0), JobEvent.CompleteSucceeded, 0, result)


@step("delete.give_up")
def give_up(run: Run) -> None:
    """DeleteSnapshot returned false; DeleteSnapshotCmd answers "Failed to delete Snapshot" (530)."""
    if run.flags.get("api"):
        _fail_job(run, INTERNAL_ERROR, "Failed to delete Snapshot")


@step("delete.fail")
def fail(run: Run) -> None:
    """A refusal or a wrapped strategy error; the API job fails 431 (InvalidParameterValue) or 530."""
    assert run.error is not None
    if run.flags.get("api"):
        code = PARAM_ERROR if isinstance(run.error, InvalidParameterValueException) else INTERNAL_ERROR
        _fail_job(run, code, run.error.message)


def _fail_job(run: Run, code: int, text: str) -> None:
    result = serialized_response("ExceptionResponse", "null", {"uuidList": [], "errorcode": code, "errortext": text})
    complete(run.rt, run.rt.store.get(AsyncJob, run.job_id or 0), JobEvent.CompleteFailed, code, result)
