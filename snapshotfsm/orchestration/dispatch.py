"""Attached or detached (spec §4.3): a work job on the VM's queue of size 1, or a direct call.

The only thing that decides is whether the volume's VM row exists: a Stopped VM's volume also goes through the
queue. Work jobs of one VM run one at a time; the API job waits for its work job's outcome and wakes on the
``job.state`` message as soon as the work job completes.
"""

from __future__ import annotations

import json

from snapshotfsm.names import JobEvent, Take, WorkEvent, WorkState
from snapshotfsm.orchestration.contexts import TakeContext
from snapshotfsm.orchestration.contract import StepTable, Turn, job_thread
from snapshotfsm.orchestration.jobs import complete
from snapshotfsm.orchestration.runner import Runner
from snapshotfsm.orchestration.runtime import Runtime
from snapshotfsm.store.records import AsyncJob, VmWorkJob
from snapshotfsm.strategies.base import finally_unless_crash

VM_WORK_TAKE_VOLUME_SNAPSHOT = "com.cloud.vm.VmWorkTakeVolumeSnapshot"


def enqueue(t: Turn[TakeContext]) -> None:
    """``takeVolumeSnapshotThroughJobQueue``: a VmWorkTakeVolumeSnapshot work job, queued on the VM (§4.3).

    ``submitAsyncJob(workJob, "VmWorkJobQueue", vmId)`` (spec §21.2, ``CreateSnapshotCmd.execute`` row): under
    ``op_lock vm_instance<vmId>`` (``lockInLockTable``, its own commit, released in a finally), the ``async_job``
    row and its queue item (here the ``vm_work_job`` row) in one transaction.

    The lock is taken or refused at once (audit E-16): CloudStack waits up to ``vm.job.lock.timeout`` (1800 s) for
    it. In the model only a server that died inside this step can hold it, and a peer's node-left cleanup then frees
    it within that wait, so a refusal is taken as the end of such a wait: the job is submitted all the same.
    """
    rt, ctx = t.rt, t.ctx
    vm_id = ctx.queue_vm_id
    info = {
        "userId": ctx.caller_id,
        "accountId": ctx.account_id,
        "vmId": vm_id,
        "handlerName": "VolumeApiServiceImpl",
        "volumeId": ctx.volume_id,
        "policyId": ctx.request.policy_id,
        "snapshotId": ctx.snapshot_id,
        "quiesceVm": ctx.request.quiescevm,
        "locationType": ctx.location_type,
        "asyncBackup": ctx.request.async_backup,
        "zoneIds": list(ctx.zone_ids),
        "poolIds": list(ctx.pool_ids),
    }
    env = rt.strategy_env
    key = f"vm_instance{vm_id}"
    locked = env.acquire_lock(key)

    def unlock() -> None:
        if locked:
            env.release_lock(key)

    with finally_unless_crash(unlock), rt.store.atomic():
        job = rt.store.insert(
            AsyncJob(
                uuid=rt.new_uuid(),
                job_dispatcher="VmWorkJobDispatcher",
                # callingUser: the system user (1) for a scheduled snapshot, which runs in the owner's account.
                user_id=ctx.user_id,
                account_id=ctx.account_id,
                job_cmd=VM_WORK_TAKE_VOLUME_SNAPSHOT,
                job_cmd_info=json.dumps(info, sort_keys=True),
                related=str(ctx.job_id),
                job_init_msid=rt.ms_id,
                created=rt.clock.timestamp(),
                last_updated=rt.clock.timestamp(),
            )
        )
        rt.store.insert(VmWorkJob(id=job.id, vm_instance_id=vm_id, state=WorkState.Queued))
    ctx.work_job_id = job.id
    dispatch_next(t, vm_id)


def dispatch_next(t: Turn[TakeContext], vm_id: int) -> None:
    """Give the VM's slot to its oldest queued work job, unless one holds it (queue size limit 1).

    The slot is taken here, when the queue hands it out (the work job moves to Running), so that a second job
    queued before the first one starts cannot be handed the same slot. The queue is CloudStack's ``sync_queue``, in
    the database (spec §4.3): the server that frees the slot checks it at once (``releaseSyncSource`` →
    ``checkQueue``) and every server's heartbeat dequeues from any queue (``dequeueFromAny``), so the next work
    job runs whichever server queued it. In the model a take runs on the server that holds it in memory: a work
    job another live server holds is handed to that server (its heartbeat's pick-up, at once); one whose take no
    live server holds any more (its server crashed) is passed over, as before.
    """
    store = t.rt.store
    if store.count(VmWorkJob, "vm_instance_id = ? AND state = ?", (vm_id, WorkState.Running)):
        return
    for work in store.find(VmWorkJob, "vm_instance_id = ? AND state = ?", (vm_id, WorkState.Queued)):
        run = next((r for r in t.live(TakeContext) if r.ctx.work_job_id == work.id), None)
        if run is not None:
            store.transit(work, WorkEvent.Dispatch, job_id=run.ctx.job_id)
            t.post(run, Take.Dispatch, label=f"VM {vm_id} slot to work job {work.id}")
            return
        peer = _peer_holding(t.rt, work.id)
        if peer is not None:
            _hand_over(peer, vm_id, work.id)
            return


def _peer_holding(rt: Runtime, work_job_id: int) -> Runner | None:
    """The runner of another live management server whose take waits on ``work_job_id``, if any."""
    for ms_id, member in sorted(rt.scheduler.members.items()):
        runner = getattr(member, "runner", None)
        if ms_id == rt.ms_id or not isinstance(runner, Runner) or runner.rt.down:
            continue
        if any(isinstance(r.ctx, TakeContext) and r.ctx.work_job_id == work_job_id for r in runner.live_runs()):
            return runner
    return None


def _hand_over(runner: Runner, vm_id: int, work_job_id: int) -> None:
    """The holding server dispatches the work job from its own memory, if the slot is still free when it looks."""
    rt = runner.rt
    incarnation = rt.incarnation

    def go() -> None:
        if rt.down or rt.incarnation != incarnation:
            return
        store = rt.store
        if store.count(VmWorkJob, "vm_instance_id = ? AND state = ?", (vm_id, WorkState.Running)):
            return
        work = store.get(VmWorkJob, work_job_id)
        run = next(
            (r for r in runner.live_runs() if isinstance(r.ctx, TakeContext) and r.ctx.work_job_id == work_job_id),
            None,
        )
        if work.state != WorkState.Queued or run is None:
            return
        store.transit(work, WorkEvent.Dispatch, job_id=run.ctx.job_id)
        runner.fire(run, Take.Dispatch)

    rt.scheduler.call_later(0, go, label=f"VM {vm_id} slot to work job {work_job_id}", owner=rt.ms_id)


def start_work(t: Turn[TakeContext]) -> str:
    """``VmWorkJobDispatcher.runJob``: the work job, holding the VM's slot, runs on this server, on its own thread."""
    rt = t.rt
    job = rt.store.get(AsyncJob, t.ctx.work_job)
    t.ctx.thread = job_thread(job.id)
    rt.store.update(job, job_executing_msid=rt.ms_id, last_updated=rt.clock.timestamp())
    return Take.Orchestrate


def run_direct(t: Turn[TakeContext]) -> str:
    """Detached volume: the payload is built inline and ``volService.takeSnapshot`` called directly (spec §4.3).

    The payload gets no locationType and there is no encryption check on this path.
    """
    t.ctx.payload = t.ctx.new_payload(location_type=None)
    return Take.Prepare


def _finish_work(t: Turn[TakeContext], work_event: str, job_event: str, code: int, result: str | None) -> None:
    rt = t.rt
    work = rt.store.get(VmWorkJob, t.ctx.work_job)
    if work.state == WorkState.Running:
        rt.store.transit(work, work_event)
    complete(rt, rt.store.get(AsyncJob, work.id), job_event, code, result)
    t.ctx.thread = ""  # the work job's thread has ended; the API job's own thread goes on
    dispatch_next(t, work.vm_instance_id)


def marshalled(java_class: str, value: object) -> str:
    """``JobSerializerHelper.toObjectSerializedString`` stands in here as ``<class>:<value>``.

    CloudStack stores the Base64 of a Java serialisation; the model keeps the class and the value readable.
    """
    return f"{java_class}:{value}"


def complete_work(t: Turn[TakeContext]) -> None:
    """The work job returns (SUCCEEDED, marshalled snapshot id), frees the slot; the API job wakes (§4.3)."""
    ctx = t.ctx
    _finish_work(t, WorkEvent.Complete, JobEvent.CompleteSucceeded, 0, marshalled("java.lang.Long", ctx.snapshot_id))
    t.later(Take.Complete, label=f"job.state of work job {ctx.work_job_id}")


def fail_work(t: Turn[TakeContext]) -> None:
    """The work job fails with the marshalled exception and result code 0, frees the slot; the API job wakes."""
    error = t.ctx.failure()
    _finish_work(t, WorkEvent.Fail, JobEvent.CompleteFailed, 0, marshalled(error.java_name, error.message))
    t.later(Take.Fail, label=f"job.state of work job {t.ctx.work_job_id}")


STEPS: StepTable = {
    "dispatch.enqueue": enqueue,
    "dispatch.start_work": start_work,
    "dispatch.run_direct": run_direct,
    "dispatch.complete_work": complete_work,
    "dispatch.fail_work": fail_work,
}
