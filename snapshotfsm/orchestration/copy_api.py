"""The copySnapshot API: ``SnapshotManagerImpl.copySnapshot(CopySnapshotCmd)`` in its async job (spec §7.4, §8).

This is the ``copy_snapshot_job`` machine.

``CopySnapshotCmd`` is a ``BaseAsyncCmd``: the call is answered with a job at once, and every check runs in the job,
in CloudStack's order. The job then starts one ``copy_snapshot`` workflow, the pools first
(``copySnapshotToPrimaryDifferentZone``: pools whose driver advertises
``CAN_COPY_SNAPSHOT_BETWEEN_ZONES_AND_SAME_POOL_TYPE`` go through the COPY strategy), then the zones
(``copySnapshotToZones``: the secondary chain copy), and waits for it. It fails only if every zone failed and there
was no pool copy; what the copies throw fails it too.

Error codes are ``ApiAsyncJobDispatcher.runJob``'s: an InvalidParameterValueException is PARAM_ERROR (431), a
ServerApiException keeps its code (``CopySnapshotCmd.execute`` turns a StorageUnavailableException into
RESOURCE_UNAVAILABLE_ERROR, 534), anything else, PermissionDeniedException included, is INTERNAL_ERROR (530) with the
exception's message. ``@ActionEvent(SNAPSHOT.COPY, "copying snapshot")`` writes a completed event once the manager
method was entered: "Successfully completed copying snapshot. <details>" or, at level ERROR, "Error while copying
snapshot. <details>".
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from snapshotfsm.drivers.base import CAN_COPY_SNAPSHOT_BETWEEN_ZONES_AND_SAME_POOL_TYPE
from snapshotfsm.errors import (
    CloudException,
    CloudRuntimeException,
    InvalidParameterValueException,
    InvalidValue,
    NullPointerException,
    PermissionDeniedException,
    ServerApiException,
    StorageUnavailableException,
)
from snapshotfsm.names import CopyJob, JobEvent, SnapshotState
from snapshotfsm.orchestration import accounting, copies
from snapshotfsm.orchestration.api_errors import (
    INTERNAL_ERROR,
    PARAM_ERROR,
    RESOURCE_ALLOCATION_ERROR,
    RESOURCE_UNAVAILABLE_ERROR,
)
from snapshotfsm.orchestration.contexts import CopyJobContext, CopyRequest, Machine, Thrown
from snapshotfsm.orchestration.contract import StepTable, Turn
from snapshotfsm.orchestration.jobs import complete, insert_api_job, serialized_response, succeed_with_snapshot
from snapshotfsm.orchestration.lookups import add_pools_for_copy_to_primary, check_access, check_one_pool_per_zone
from snapshotfsm.orchestration.runner import Runner
from snapshotfsm.orchestration.runtime import Runtime
from snapshotfsm.store.records import (
    SYSTEM_ACCOUNT_ID,
    Account,
    AsyncJob,
    Snapshot,
    StoragePool,
    Volume,
    Zone,
)
from snapshotfsm.strategies.base import primary_ref

log = logging.getLogger(__name__)

COPY_SNAPSHOT_CMD = "org.apache.cloudstack.api.command.user.snapshot.CopySnapshotCmd"
EVENT_DESCRIPTION = "copying snapshot"
"""The ``@ActionEvent`` description of ``SnapshotManagerImpl.copySnapshot``."""


def check_params(
    snapshot_id: object,
    dest_zone_ids: object,
    source_zone_id: object,
    storage_ids: object,
    use_storage_replication: object,
) -> CopyRequest:
    """Python-level argument checks (the tool's own bad input), before anything runs; returns the job's request.

    Raises:
        InvalidValue: an argument of the wrong type.
    """

    def one_id(name: str, value: object, expected: str = "an integer id") -> int:
        if not isinstance(value, int) or isinstance(value, bool):
            raise InvalidValue(f"copySnapshot {name}", value, expected)
        return value

    def ids(name: str, values: object) -> tuple[int, ...]:
        if isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
            raise InvalidValue(f"copySnapshot {name}", values, "a list of integer ids")
        out = list(values)
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in out):
            raise InvalidValue(f"copySnapshot {name}", out, "a list of integer ids")
        return tuple(out)

    snapshot = one_id("id", snapshot_id)
    source = None if source_zone_id is None else one_id("sourcezoneid", source_zone_id, "an integer id or None")
    if not isinstance(use_storage_replication, bool):
        raise InvalidValue("copySnapshot usestoragereplication", use_storage_replication, "a bool")
    return CopyRequest(
        id=snapshot,
        sourcezoneid=source,
        destzoneids=ids("destzoneids", dest_zone_ids),
        storageids=ids("storageids", storage_ids),
        usestoragereplication=use_storage_replication,
    )


def submit_api_job(runner: Runner, request: CopyRequest, *, caller_id: int) -> AsyncJob:
    """``ApiServer.queueCommand`` for copySnapshot: the Scheduled action event, the job, dispatched at once.

    The snapshot is looked up only in the job, as ``deleteSnapshot``'s is: an unknown or removed id fails the job
    with "Unable to find snapshot with id".
    """
    rt = runner.rt
    snapshot = rt.store.first(Snapshot, "id = ?", (request.id,))
    live = snapshot if snapshot is not None and snapshot.removed is None else None
    job = insert_api_job(
        rt, COPY_SNAPSHOT_CMD, request.cmd_info(), user_id=caller_id, account_id=caller_id, snapshot_id=request.id
    )
    # onScheduledActionEvent: the caller's user, the entity owner's account (the system's for an unknown snapshot).
    accounting.action_event(
        rt,
        "SNAPSHOT.COPY",
        event_details(rt, request),
        user_id=caller_id,
        account_id=live.account_id if live is not None else SYSTEM_ACCOUNT_ID,
        resource_id=request.id,
        state="Scheduled",
    )
    ctx = CopyJobContext(job_id=job.id, snapshot_id=request.id, request=request, caller_id=caller_id, user_id=caller_id)
    run = runner.start(Machine.COPY_JOB, ctx)
    runner.fire_later(run, CopyJob.Start, label=f"dispatch job {job.id}")
    return job


def event_details(rt: Runtime, request: CopyRequest) -> str:
    """``CopySnapshotCmd.getEventDescription``, quirks included.

    Each zone uuid is followed by ", " and then only the last character (the space) is deleted:
    ``Copying snapshot with ID: <uuid> to zones: [<uuid1>, <uuid2>,]``; with no zones the ``[`` is deleted instead.
    """
    snapshot = rt.store.first(Snapshot, "id = ?", (request.id,))
    text = f"Copying snapshot with ID: {snapshot.uuid if snapshot else request.id} to zones: ["
    for zone_id in request.destzoneids:
        zone = rt.store.first(Zone, "id = ?", (zone_id,))
        text += f"{zone.uuid if zone else zone_id}, "
    return text[:-1] + "]"


def start(t: Turn[CopyJobContext]) -> None:
    """``CopySnapshotCmd.execute`` then ``SnapshotManagerImpl.copySnapshot`` up to the copies, which it starts."""
    rt, ctx = t.rt, t.ctx
    request = ctx.request
    job = rt.store.get(AsyncJob, ctx.job_id)
    rt.store.update(job, job_executing_msid=rt.ms_id, last_updated=rt.clock.timestamp())
    replicate = request.usestoragereplication
    dest_zone_ids = list(request.destzoneids)
    # CopySnapshotCmd.execute's own check: its condition requires usestoragereplication. (Its other check, destzoneid
    # and destzoneids together, cannot arise: the model has the one list parameter.)
    if not dest_zone_ids and replicate:
        raise ServerApiException(PARAM_ERROR, "Either destzoneid or destzoneids parameters have to be specified.")
    ctx.in_manager = True  # from here on the @ActionEvent interceptor writes the completed event
    caller = rt.store.get(Account, ctx.caller_id)
    snapshot = rt.store.first(Snapshot, "id = ? AND removed IS NULL", (request.id,))
    if snapshot is None:
        raise InvalidParameterValueException("Unable to find snapshot with id")
    source_zone_id = _checked_snapshot_for_copy(rt, snapshot, dest_zone_ids, request.sourcezoneid, replicate)
    volume = rt.store.first(Volume, "id = ?", (snapshot.volume_id,))  # volFactory.getVolume: removed rows too
    pool_ids = add_pools_for_copy_to_primary(rt, volume, dest_zone_ids, list(request.storageids), replicate)
    can_copy = bool(pool_ids) and _can_copy_on_primary(rt, pool_ids, snapshot)
    zones: dict[int, Zone] = {}
    for zone_id in dest_zone_ids:
        zones[zone_id] = _checked_destination_zone(rt, zone_id, admin=caller.type == 1)
    check_access(caller, snapshot.account_id)
    src = copies.zone_image_store(rt, snapshot.id, source_zone_id)
    if src is None and not can_copy:
        raise InvalidParameterValueException(f"There is no snapshot ID: {snapshot.uuid} ready on image store")
    if can_copy:
        check_one_pool_per_zone(rt, pool_ids)
        if volume is None:
            raise CloudRuntimeException(f"Failed to find volume with id: {snapshot.volume_id}")
    ctx.dest_zone_count = len(dest_zone_ids)
    ctx.pool_ids = tuple(pool_ids) if can_copy else ()
    ctx.can_copy = can_copy
    # The destination zones are the values of a HashMap<Long, DataCenterVO>: one copy per zone, in the map's
    # iteration order, which for small ids is ascending.
    ctx.copies = copies.api_copies(
        rt,
        snapshot,
        zone_ids=sorted(zones),
        pool_ids=pool_ids if can_copy else [],
        src_store_id=src.id if src is not None else None,
        user_id=ctx.user_id,
        account_id=ctx.caller_id,
        job_id=ctx.job_id,
    )
    t.spawn(Machine.COPY, ctx.copies, copies.next_target, resume=CopyJob.Copied)


def _checked_snapshot_for_copy(
    rt: Runtime, snapshot: Snapshot, dest_zone_ids: list[int], source_zone_id: int | None, replicate: bool
) -> int:
    """``getCheckedSnapshotForCopy``: BackedUp and on secondary (unless replicating), the zones; the source zone."""
    if snapshot.status != SnapshotState.BackedUp and not replicate:
        raise InvalidParameterValueException("Snapshot is not backed up")
    if snapshot.location_type is not None and snapshot.location_type != "SECONDARY" and not replicate:
        raise InvalidParameterValueException("Snapshot is not backed up")
    if source_zone_id is None:
        volume = rt.store.first(Volume, "id = ? AND removed IS NULL", (snapshot.volume_id,))
        if volume is None:
            raise NullPointerException(
                'Cannot invoke "com.cloud.storage.Volume.getDataCenterId()" because "volume" is null'
            )
        source_zone_id = volume.data_center_id
    if not dest_zone_ids:
        raise InvalidParameterValueException("Please specify valid destination zone(s).")
    if source_zone_id in dest_zone_ids:
        raise InvalidParameterValueException("Please specify different source and destination zones.")
    if rt.store.first(Zone, "id = ? AND removed IS NULL", (source_zone_id,)) is None:
        raise InvalidParameterValueException("Please specify a valid source zone.")
    return source_zone_id


def _can_copy_on_primary(rt: Runtime, pool_ids: list[int], snapshot: Snapshot) -> bool:
    """``SnapshotManagerImpl.canCopyOnPrimary``: drops pools from ``pool_ids`` (in place); whether any is left.

    Dropped: a pool that does not exist, one already holding a ref of the snapshot, any pool when the snapshot's
    volume is gone, and a pool whose driver advertises capabilities but not
    ``CAN_COPY_SNAPSHOT_BETWEEN_ZONES_AND_SAME_POOL_TYPE`` while its pool type differs from the volume's.
    """
    dropped: list[int] = []
    for pool_id in pool_ids:
        pool = rt.store.first(StoragePool, "id = ? AND removed IS NULL", (pool_id,))
        if pool is None:
            dropped.append(pool_id)
            continue
        if primary_ref(rt.store, snapshot.id, pool_id):
            log.debug("Snapshot [%s] already exist on pool [%s]", snapshot.uuid, pool.name)
            continue  # upstream logs it and keeps the pool in the list
        volume = rt.store.first(Volume, "id = ? AND removed IS NULL", (snapshot.volume_id,))
        if volume is None:
            dropped.append(pool_id)
            continue
        volume_pool = rt.store.first(StoragePool, "id = ?", (volume.pool_id,))
        capabilities = rt.strategy_env.capabilities(pool)
        if (
            capabilities
            and CAN_COPY_SNAPSHOT_BETWEEN_ZONES_AND_SAME_POOL_TYPE not in capabilities
            and (volume_pool is None or pool.pool_type != volume_pool.pool_type)
        ):
            dropped.append(pool_id)
    pool_ids[:] = [p for p in pool_ids if p not in dropped]
    return bool(pool_ids)


def _checked_destination_zone(rt: Runtime, zone_id: int, *, admin: bool) -> Zone:
    """``getCheckedDestinationZoneForSnapshotCopy``."""
    zone = rt.store.first(Zone, "id = ? AND removed IS NULL", (zone_id,))
    if zone is None:
        raise InvalidParameterValueException("Please specify a valid destination zone.")
    if zone.allocation_state == "Disabled" and not admin:
        raise PermissionDeniedException(f"Cannot perform this operation, Zone is currently disabled: {zone.name}")
    if zone.type == "Edge":
        log.error("Edge zone %s specified for snapshot copy", zone.name)
        raise InvalidParameterValueException(f"Snapshot copy is not supported by zone {zone.name}")
    return zone


def succeed(t: Turn[CopyJobContext]) -> None:
    """The copies ended: what they threw fails the job; else it fails only if every zone failed and no pool copy.

    A zone without an image store throws StorageUnavailableException out of ``copySnapshotToZones``, which
    ``CopySnapshotCmd.execute`` answers with RESOURCE_UNAVAILABLE_ERROR; zones copied before it stay copied.
    """
    rt, ctx = t.rt, t.ctx
    result = ctx.copies
    if result is not None and result.thrown is not None:
        raise _rethrown(result.thrown)
    failed = result.failed_zones if result is not None else []
    if not (ctx.dest_zone_count > len(failed) or ctx.can_copy):
        raise CloudRuntimeException("Failed to copy snapshot")
    if failed:
        names = ", ".join(z.name for i in failed if (z := rt.store.first(Zone, "id = ?", (i,))) is not None)
        log.error("There were failures when copying snapshot to zones: %s", names)
    snapshot = rt.store.get(Snapshot, ctx.snapshot_id)
    succeed_with_snapshot(rt, ctx.job_id, snapshot)
    _completed_event(t, f"Successfully completed {EVENT_DESCRIPTION}. {event_details(rt, ctx.request)}", "INFO")


def _rethrown(thrown: Thrown) -> CloudException:
    """What the copies threw, as ``CopySnapshotCmd.execute`` lets it out of the job."""
    kind, message = thrown.type, thrown.message
    if kind == StorageUnavailableException.java_name:
        return ServerApiException(RESOURCE_UNAVAILABLE_ERROR, message)
    if kind == "com.cloud.exception.ResourceAllocationException":
        return ServerApiException(RESOURCE_ALLOCATION_ERROR, message)
    if kind == NullPointerException.java_name:
        return NullPointerException(message)
    return CloudRuntimeException(message)


def fail(t: Turn[CopyJobContext]) -> None:
    """The job FAILED with ``ApiAsyncJobDispatcher``'s code and text; the ERROR action event if copySnapshot ran."""
    rt, ctx = t.rt, t.ctx
    error = ctx.failure()
    if isinstance(error, ServerApiException):
        code = error.code
    elif isinstance(error, InvalidParameterValueException):
        code = PARAM_ERROR
    else:
        code = INTERNAL_ERROR
    ctx.api_error = (code, error.message)
    body = {"uuidList": [], "errorcode": code, "errortext": error.message}
    result = serialized_response("ExceptionResponse", "null", body)
    complete(rt, rt.store.get(AsyncJob, ctx.job_id), JobEvent.CompleteFailed, code, result)
    if ctx.in_manager:
        _completed_event(t, f"Error while {EVENT_DESCRIPTION}. {event_details(rt, ctx.request)}", "ERROR")


def _completed_event(t: Turn[CopyJobContext], text: str, level: str) -> None:
    """``interceptComplete`` / ``interceptException``: the calling user's and account's completed event."""
    ctx = t.ctx
    accounting.action_event(
        t.rt,
        "SNAPSHOT.COPY",
        text,
        user_id=ctx.user_id,
        account_id=ctx.caller_id,
        resource_id=ctx.snapshot_id,
        state="Completed",
        level=level,
    )


STEPS: StepTable = {"copy_api.start": start, "copy_api.succeed": succeed, "copy_api.fail": fail}
