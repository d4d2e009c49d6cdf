"""Attached or detached (spec §4.3): a work job on the VM's queue of size 1, or a direct call.

The only thing that decides is whether the volume's VM row exists: a Stopped VM's volume also goes through the
queue. Work jobs of one VM run one at a time; the API job waits for its work job's outcome and wakes on the
``job.state`` message as soon as the work job completes.
"""

from __future__ import annotations

import json

from snapshotfsm.names import JobEvent, Take, WorkEvent, WorkState
from snapshotfsm.orchestration.jobs import complete
from snapshotfsm.orchestration.runner import Run, step
from snapshotfsm.orchestration.runtime import Runtime
from snapshotfsm.store.records import AsyncJob, VmWorkJob
from snapshotfsm.strategies.base import Payload

VM_WORK_TAKE_VOLUME_SNAPSHOT = "com.cloud.vm.VmWorkTakeVolumeSnapshot"


@step("dispatch.enqueue")
def enqueue(run: Run) -> None:
    """``takeVolumeSnapshotThroughJobQueue``: a VmWorkTakeVolumeSnapshot work job, queued on the VM (§4.3)."""
    rt = run.rt
    info = {
        "userId": run.caller_id,
        "accountId": run.account_id,
        "vmId": run.vm_id,
        "handlerName": "VolumeApiServiceImpl",
        "volumeId": run.volume_id,
        "policyId": int(run.params.get("policy_id") or 0),
        "snapshotId": run.snapshot_id,
        "quiesceVm": bool(run.params.get("quiescevm")),
        "locationType": run.flags.get("location_type"),
        "asyncBackup": bool(run.params.get("async_backup")),
        "zoneIds": run.flags.get("zone_ids", []),
        "poolIds": run.flags.get("pool_ids", []),
    }
    job = rt.store.insert(
        AsyncJob(
            uuid=rt.new_uuid(),
            job_dispatcher="VmWorkJobDispatcher",
            # callingUser: the system user (1) for a scheduled snapshot, which runs in the owner's account.
            user_id=run.user_id if run.user_id is not None else run.caller_id or 0,
            account_id=run.account_id or 0,
            job_cmd=VM_WORK_TAKE_VOLUME_SNAPSHOT,
            job_cmd_info=json.dumps(info, sort_keys=True),
            related=str(run.job_id),
            job_init_msid=rt.ms_id,
            created=rt.clock.timestamp(),
            last_updated=rt.clock.timestamp(),
        )
    )
    rt.store.insert(VmWorkJob(id=job.id, vm_instance_id=run.vm_id or 0, state=WorkState.Queued))
    run.work_job_id = job.id
    run.flags["through_work_job"] = True
    dispatch_next(rt, run.vm_id or 0)


def dispatch_next(rt: Runtime, vm_id: int) -> None:
    """Give the VM's slot to its oldest queued work job, unless one holds it (queue size limit 1).

    The slot is taken here, when the queue hands it out (the work job moves to Running), so that a second job
    queued before the first one starts cannot be handed the same slot.
    """
    store = rt.store
    if store.count(VmWorkJob, "vm_instance_id = ? AND state = ?", (vm_id, WorkState.Running)):
        return
    for work in store.find(VmWorkJob, "vm_instance_id = ? AND state = ?", (vm_id, WorkState.Queued)):
        run = next((r for r in rt.runner.live.values() if r.work_job_id == work.id), None)
        if run is not None:
            store.transit(work, WorkEvent.Dispatch, job_id=run.job_id)
            rt.runner.fire_later(run, Take.Dispatch, label=f"VM {vm_id} slot to work job {work.id}")
            return


@step("dispatch.start_work")
def start_work(run: Run) -> str:
    """``VmWorkJobDispatcher.runJob``: the work job, holding the VM's slot, runs on this server."""
    rt = run.rt
    job = rt.store.get(AsyncJob, run.work_job_id or 0)
    rt.store.update(job, job_executing_msid=rt.ms_id, last_updated=rt.clock.timestamp())
    return Take.Orchestrate


@step("dispatch.run_direct")
def run_direct(run: Run) -> str:
    """Detached volume: the payload is built inline and ``volService.takeSnapshot`` called directly (spec §4.3).

    The payload gets no locationType and there is no encryption check on this path.
    """
    run.payload = Payload(
        snapshot_id=run.snapshot_id or 0,
        account_id=run.account_id or 0,
        policy_id=int(run.params.get("policy_id") or 0),
        quiescevm=bool(run.params.get("quiescevm")),
        location_type=None,
        async_backup=bool(run.params.get("async_backup")),
        zone_ids=tuple(run.flags.get("zone_ids", ())),
        pool_ids=tuple(run.flags.get("pool_ids", ())),
    )
    return Take.Prepare


def _finish_work(run: Run, work_event: str, job_event: str, code: int, result: str | None) -> None:
    rt = run.rt
    work = rt.store.get(VmWorkJob, run.work_job_id or 0)
    if work.state == WorkState.Running:
        rt.store.transit(work, work_event)
    complete(rt, rt.store.get(AsyncJob, run.work_job_id or 0), job_event, code, result)
    dispatch_next(rt, work.vm_instance_id)


def marshalled(java_class: str, value: object) -> str:
    """``JobSerializerHelper.toObjectSerializedString`` stands in here as ``<class>:<value>``.

    CloudStack stores the Base64 of a Java serialisation; the model keeps the class and the value readable.
    """
    return f"{java_class}:{value}"


@step("dispatch.complete_work")
def complete_work(run: Run) -> None:
    """The work job returns (SUCCEEDED, marshalled snapshot id), frees the slot; the API job wakes (§4.3)."""
    _finish_work(run, WorkEvent.Complete, JobEvent.CompleteSucceeded, 0, marshalled("java.lang.Long", run.snapshot_id))
    run.rt.runner.fire_later(run, Take.Complete, label=f"job.state of work job {run.work_job_id}")


@step("dispatch.fail_work")
def fail_work(run: Run) -> None:
    """The work job fails with the marshalled exception and result code 0, frees the slot; the API job wakes."""
    error = run.error
    result = marshalled(error.java_name, error.message) if error else None
    _finish_work(run, WorkEvent.Fail, JobEvent.CompleteFailed, 0, result)
    run.rt.runner.fire_later(run, Take.Fail, label=f"job.state of work job {run.work_job_id}")
