"""The API's async job: submitted after the create phase, completed SUCCEEDED or FAILED (spec §4.1, §4.2).

The createSnapshot action events are those ``ActionEventInterceptor`` and ``ApiServer`` write (spec §5.10): Created
after ``allocSnapshot`` (INFO, or ERROR when it throws), Scheduled when the API submits the job (the scheduler
writes its own instead, spec §9.2), Started when ``takeSnapshot`` is entered, and Completed when it returns (INFO)
or throws (ERROR). ``@ActionEvent`` sets no event details on this path, so the descriptions carry none.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from snapshotfsm.errors import ServerApiException
from snapshotfsm.names import JobEvent, JobState, Take
from snapshotfsm.orchestration import accounting
from snapshotfsm.orchestration.api_errors import INTERNAL_ERROR, execute_error, through_work_job
from snapshotfsm.orchestration.contexts import TakeContext
from snapshotfsm.orchestration.contract import StepTable, Turn, job_thread
from snapshotfsm.orchestration.runtime import Runtime
from snapshotfsm.orchestration.take import give_back_refused
from snapshotfsm.store.records import AsyncJob, ResourceTag, Snapshot, Volume

CREATE_SNAPSHOT_CMD = "org.apache.cloudstack.api.command.user.snapshot.CreateSnapshotCmd"


def insert_api_job(
    rt: Runtime, cmd: str, params: Mapping[str, Any], *, user_id: int, account_id: int, snapshot_id: int | None
) -> AsyncJob:
    """The IN_PROGRESS ``async_job`` row of an API command on a snapshot, as ``ApiServer.queueCommand`` writes it."""
    return rt.store.insert(
        AsyncJob(
            uuid=rt.new_uuid(),
            user_id=user_id,
            account_id=account_id,
            job_cmd=cmd,
            job_cmd_info=json.dumps(params, sort_keys=True),
            instance_type="Snapshot",
            instance_id=snapshot_id,
            job_init_msid=rt.ms_id,
            created=rt.clock.timestamp(),
            last_updated=rt.clock.timestamp(),
        )
    )


def create_event(rt: Runtime, ctx: TakeContext, description: str, *, state: str, level: str = "INFO") -> None:
    """A SNAPSHOT.CREATE event of an ``@ActionEvent`` method: the calling user's, filed under the calling account.

    ``ActionEventUtils.getOwnerAccountId`` keeps the calling account (there are no projects here): the create
    phase's caller (the system account for the scheduler), then the account the job runs as. The resource is the
    snapshot once it is inserted (``allocSnapshot`` puts it in the CallContext), none before.
    """
    accounting.action_event(
        rt,
        "SNAPSHOT.CREATE",
        description,
        user_id=ctx.user_id,
        account_id=ctx.caller_id,
        resource_id=ctx.snapshot_id or None,
        state=state,
        level=level,
    )


def submit(t: Turn[TakeContext]) -> None:
    """``ApiServer.processAsyncCmd``: the Scheduled event, then ``submitAsyncJob``; the dispatcher picks the job up.

    The job insert is its own transaction (``submitAsyncJob``, spec §21.2 row ``CreateSnapshotCmd.execute``; an API
    job has no sync-queue item). ``onScheduledActionEvent`` runs before it, as the calling user, filed under the
    command's entity owner, the volume's account. A job of the scheduler gets no such event (spec §9.2).
    """
    rt, ctx = t.rt, t.ctx
    if not ctx.scheduled:
        volume = rt.store.get(Volume, ctx.volume_id)
        accounting.action_event(
            rt,
            "SNAPSHOT.CREATE",
            f"Creating Snapshot for volume: {volume.uuid}",
            user_id=ctx.user_id,
            account_id=volume.account_id,
            resource_id=ctx.snapshot_id,
            state="Scheduled",
        )
    if ctx.execute_account_id:
        ctx.caller_id = ctx.execute_account_id
    with rt.store.atomic():
        job = insert_api_job(
            rt,
            CREATE_SNAPSHOT_CMD,
            ctx.request.cmd_info(),
            user_id=ctx.user_id,
            account_id=ctx.caller_id,
            snapshot_id=ctx.snapshot_id,
        )
    ctx.job_id = job.id
    t.later(Take.Execute, label=f"dispatch job {job.id}")


def mark_executing(rt: Runtime, job_id: int) -> None:
    """The job starts executing on this server (``job_executing_msid``)."""
    job = rt.store.get(AsyncJob, job_id)
    rt.store.update(job, job_executing_msid=rt.ms_id, last_updated=rt.clock.timestamp())


def complete(rt: Runtime, job: AsyncJob, event: str, code: int, result: str | None) -> AsyncJob:
    """``AsyncJobManagerImpl.completeAsyncJob`` (spec §4.1): only a job that is IN_PROGRESS (and not removed) changes.

    In one transaction it sets the status, code, result and completing server, clears ``job_executing_msid`` and
    soft-deletes the job row at once (``removed``). Then the job's thread context closes: the locks it still holds
    go (``Merovingian2.cleanupThread``, spec §21.1), each on its own.
    """
    if job.removed is None and rt.store.state_of(job) == JobState.IN_PROGRESS:
        with rt.store.atomic():
            job = rt.store.transit(job, event)
            now = rt.clock.timestamp()
            job = rt.store.update(
                job,
                job_result_code=code,
                job_result=result,
                job_complete_msid=rt.ms_id,
                job_executing_msid=None,
                last_updated=now,
                removed=now,
            )
    rt.strategy_env.end_thread(job_thread(job.id))
    return job


def serialized_response(kind: str, name: str, body: Mapping[str, object]) -> str:
    """``ApiSerializerHelper.toSerializedString``: ``<response class>/<object name>/<json>``."""
    return f"org.apache.cloudstack.api.response.{kind}/{name}/{json.dumps(body, separators=(',', ':'))}"


def succeed_with_snapshot(rt: Runtime, job_id: int, snapshot: Snapshot) -> None:
    """The job SUCCEEDED with the ``SnapshotResponse`` the command sets (the fields the model keeps of it)."""
    response = {
        "id": snapshot.uuid,
        "name": snapshot.name,
        "state": snapshot.status,
        "snapshottype": snapshot.type_description,
    }
    result = serialized_response("SnapshotResponse", "snapshot", response)
    complete(rt, rt.store.get(AsyncJob, job_id), JobEvent.CompleteSucceeded, 0, result)


def succeed(t: Turn[TakeContext]) -> None:
    """``VolumeApiServiceImpl.takeSnapshot`` returns: the tags, its Completed event, then the job SUCCEEDED (§5.2).

    The tags are one transaction (``TaggedResourceManagerImpl.createTags``, spec §21.2 row
    ``CreateSnapshotCmd.execute``). On the attached path the snapshot is re-read with ``findById``, which skips
    removed rows: a snapshot removed by then gets no tags, ``takeSnapshot`` still returns (its Completed event says
    so) and ``execute()`` throws, so the job fails (530) with no ERROR event.
    """
    rt, ctx = t.rt, t.ctx
    snapshot = rt.store.get(Snapshot, ctx.snapshot_id)
    found = not (ctx.attached and snapshot.removed is not None)
    if found and ctx.request.tags:
        with rt.store.atomic():
            for key, value in sorted(ctx.request.tags):
                rt.store.insert(
                    ResourceTag(
                        uuid=rt.new_uuid(),
                        key=key,
                        value=value,
                        resource_id=snapshot.id,
                        resource_uuid=snapshot.uuid,
                        resource_type="Snapshot",
                        account_id=snapshot.account_id,
                        domain_id=snapshot.domain_id,
                    )
                )
    create_event(rt, ctx, "Successfully completed taking snapshot", state="Completed")
    ctx.intercepted = False
    if not found:
        raise ServerApiException(
            INTERNAL_ERROR, f"Snapshot from volume [{ctx.request.volume_id}] was not found in database."
        )
    succeed_with_snapshot(rt, ctx.job_id, snapshot)


def fail(t: Turn[TakeContext]) -> None:
    """The API job FAILED with ``CreateSnapshotCmd.execute``'s code and text (spec §5.2).

    On the attached path the exception comes back through the work job and is rethrown as ``takeSnapshotInternal``
    rethrows it, which is why an UnsupportedOperationException is a 432 there and a 530 on the detached path. An
    exception that left ``takeSnapshot`` gets its ERROR event first (``interceptException``), before the job
    completes.
    """
    rt, ctx = t.rt, t.ctx
    error = ctx.failure()
    if ctx.attached and not isinstance(error, ServerApiException):
        error = through_work_job(error)
    volume = rt.store.get(Volume, ctx.volume_id)
    code, text = execute_error(error, volume.uuid)
    ctx.api_error = (code, text)
    if ctx.intercepted:
        create_event(rt, ctx, "Error while taking snapshot", state="Completed", level="ERROR")
        ctx.intercepted = False
    if rt.profile.refused_take_gives_back:
        # Hardened: CreateSnapshotCmd.execute's catch only maps the error (spec §5.2); the take's charges and its
        # Allocated row go before the job answers FAILED.
        give_back_refused(rt, ctx)
    result = serialized_response("ExceptionResponse", "null", {"uuidList": [], "errorcode": code, "errortext": text})
    complete(rt, rt.store.get(AsyncJob, ctx.job_id), JobEvent.CompleteFailed, code, result)


STEPS: StepTable = {"jobs.submit": submit, "jobs.succeed": succeed, "jobs.fail": fail}
