"""Snapshot policies and the scheduler that runs them (spec §9.1, §9.2).

``create_policy`` is ``SnapshotManagerImpl.createPolicy`` (a synchronous API call). The scheduler is
``SnapshotSchedulerImpl``: at start every policy is rescheduled, then a poll every ``snapshot.poll.interval`` seconds
reschedules the policies whose last job ended and dispatches ``createSnapshot`` for the schedules that are due, in
the volume owner's account as the system user. Times follow ``DateUtil.getNextRunTime``, on the simulated clock.
"""

from __future__ import annotations

import calendar
import datetime as dt
import logging
import zoneinfo

from snapshotfsm.describe import volume_str
from snapshotfsm.errors import (
    ApiError,
    CloudException,
    CloudRuntimeException,
    InvalidParameterValueException,
    PermissionDeniedException,
    UnsupportedOperationException,
)
from snapshotfsm.names import JobState, VolumeState
from snapshotfsm.orchestration import accounting
from snapshotfsm.orchestration.api import submit_create
from snapshotfsm.orchestration.api_errors import create_phase_error
from snapshotfsm.orchestration.contexts import SnapshotRequest
from snapshotfsm.orchestration.lookups import (
    add_pools_for_copy_to_primary,
    can_copy_on_primary,
    check_access,
    refuse_system_template_volume,
)
from snapshotfsm.orchestration.runner import Runner
from snapshotfsm.orchestration.runtime import Runtime
from snapshotfsm.store.records import (
    SYSTEM_USER_ID,
    Account,
    AsyncJob,
    SnapshotPolicy,
    SnapshotPolicyDetail,
    SnapshotSchedule,
    StoragePool,
    VmInstance,
    Volume,
    Zone,
)
from snapshotfsm.strategies.base import finally_unless_crash

log = logging.getLogger(__name__)

INTERVALS = ("HOURLY", "DAILY", "WEEKLY", "MONTHLY")
"""``DateUtil.IntervalType``: a policy's ``interval`` column holds the ordinal."""
POLL_LOCK = "snapshot.poll"
"""The poller's ``GlobalLock`` (a MySQL named lock, not an ``op_lock`` row: spec §21.1, §21.7 on §11)."""
POLL_THREAD = "SnapshotPollTask"
"""The scheduler's timer thread (``ManagedContextTimerTask``): the thread of every poll."""
API_THREAD = "ApiServer"
"""The API request thread of a synchronous call (``createSnapshotPolicy``)."""
TIMESTAMP = "%Y-%m-%d %H:%M:%S"
DECEMBER = 12
MAX_MONTHLY_DAY = 28
"""``DateUtil.getNextRunTime`` refuses a monthly schedule on a later day."""


# --- DateUtil.getNextRunTime ---------------------------------------------------------------------------------------


def _zone(timezone: str) -> dt.tzinfo:
    """``TimeZone.getTimeZone``: an unknown id means GMT."""
    try:
        return zoneinfo.ZoneInfo(timezone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return dt.UTC


def next_run_time(interval: str, schedule: str, timezone: str, start: dt.datetime, now: dt.datetime) -> dt.datetime:
    """``DateUtil.getNextRunTime(type, schedule, timezone, startDate)`` on the simulated clock (spec §9.1).

    ``schedule`` is ``MM`` (hourly), ``MM:HH`` (daily), ``MM:HH:D`` (weekly, D = 1 Sunday .. 7 Saturday) or
    ``MM:HH:DD`` (monthly, day of month, at most 28). Only the parts the interval needs are read. Out-of-range numbers
    roll over as Java's lenient ``Calendar`` does (minute 75 is an hour and 15 minutes later, day 0 the last day of
    the month before); the run is moved one interval on when it is not after ``start`` or is before ``now``: an hour
    of elapsed time, or a day, a week or a month of wall-clock time in ``timezone``.

    Raises:
        CloudRuntimeException: too few parts, a needed part that is not an integer, or a monthly day above 28.
    """
    parts = schedule.split(":")
    needed = {"HOURLY": 1, "DAILY": 2, "WEEKLY": 3, "MONTHLY": 3}[interval]
    if len(parts) < needed:
        raise CloudRuntimeException(f"Incorrect schedule format: {schedule} for interval type:{interval}")
    numbers: list[int] = []
    for part in parts[:needed]:
        try:
            numbers.append(int(part))
        except ValueError as exc:
            raise CloudRuntimeException(f'For input string: "{part}"') from exc
    minute, hour, day = [*numbers, 0, 0][:3]
    if interval == "MONTHLY" and day > MAX_MONTHLY_DAY:
        raise CloudRuntimeException("Day cannot be greater than 28 for monthly schedule")
    local = start.astimezone(_zone(timezone))
    midnight = local.replace(hour=0, minute=0, second=0, microsecond=0)
    if interval == "HOURLY":
        run = local.replace(minute=0, second=0, microsecond=0) + dt.timedelta(minutes=minute)
    elif interval == "DAILY":
        run = midnight + dt.timedelta(hours=hour, minutes=minute)
    elif interval == "WEEKLY":
        sunday = midnight - dt.timedelta(days=(local.weekday() + 1) % 7)
        run = sunday + dt.timedelta(days=day - 1, hours=hour, minutes=minute)
    else:
        run = midnight.replace(day=1) + dt.timedelta(days=day - 1, hours=hour, minutes=minute)
    if run < now or run <= start:
        run = _add_interval(run, interval)
    return run.astimezone(dt.UTC)


def _add_interval(when: dt.datetime, interval: str) -> dt.datetime:
    if interval == "HOURLY":
        # Calendar.add(HOUR_OF_DAY, 1) adds 3,600,000 ms; the others add wall-clock days, weeks or months.
        return (when.astimezone(dt.UTC) + dt.timedelta(hours=1)).astimezone(when.tzinfo)
    if interval == "DAILY":
        return when + dt.timedelta(days=1)
    if interval == "WEEKLY":
        return when + dt.timedelta(days=7)
    year, month = (when.year + 1, 1) if when.month == DECEMBER else (when.year, when.month + 1)
    return when.replace(year=year, month=month, day=min(when.day, calendar.monthrange(year, month)[1]))


# --- createSnapshotPolicy --------------------------------------------------------------------------------------------


def create_policy(
    rt: Runtime,
    *,
    caller_id: int,
    volume_id: int,
    interval: str,
    schedule: str,
    timezone: str,
    max_snaps: int,
    display: bool = True,
    zone_ids: list[int] | None = None,
    storage_ids: list[int] | None = None,
    use_storage_replication: bool = False,
) -> SnapshotPolicy:
    """``createSnapshotPolicy``: validate, then create or update the one policy per (volume, interval) (§9.1).

    Not one transaction (spec §21.2, policy-create row): the policy, its schedule and the action event are each
    written on their own, the details in one ``saveDetails`` transaction, all under the GlobalLock
    ``createSnapshotPolicy_<volumeId>`` (§18.6). Every refusal comes before the first write, so a refused call
    writes nothing.

    Raises:
        ApiError: a refusal, with the API layer's code.
    """
    caller = rt.store.get(Account, caller_id)
    try:
        return _create_policy(
            rt,
            caller,
            volume_id,
            interval,
            schedule,
            timezone,
            max_snaps,
            display,
            list(zone_ids or ()),
            list(storage_ids or ()),
            use_storage_replication,
        )
    except CloudException as exc:
        code, text = create_phase_error(exc, caller)
        raise ApiError(code, text, exception=exc) from None


def _create_policy(
    rt: Runtime,
    caller: Account,
    volume_id: int,
    interval: str,
    schedule: str,
    timezone: str,
    max_snaps: int,
    display: bool,
    zone_ids: list[int],
    storage_ids: list[int],
    replicate: bool,
) -> SnapshotPolicy:
    volume = rt.store.first(Volume, "id = ? AND removed IS NULL", (volume_id,))
    if volume is None:
        raise InvalidParameterValueException(
            f"Failed to create snapshot policy, unable to find a volume with id {volume_id}"
        )
    if volume.encrypt_format is not None:
        raise UnsupportedOperationException(
            f"Encrypted volumes don't support snapshot schedules, cannot create snapshot policy for the volume "
            f"[{volume.uuid}]"
        )
    check_access(caller, volume.account_id)
    if volume.state != VolumeState.Ready and display:
        raise InvalidParameterValueException(
            f"Volume: {volume_str(volume)} is not in Ready state but {volume.state}. Cannot take snapshot."
        )
    vm = rt.store.first(VmInstance, "id = ?", (volume.instance_id,)) if volume.instance_id is not None else None
    refuse_system_template_volume(rt, volume, vm)
    if volume.instance_id is not None and (vm is None or vm.type != "User"):
        raise InvalidParameterValueException(
            f"Failed to create snapshot policy [{interval}] for volume {volume_str(volume)}; Snapshots of volumes "
            "attached to System or router VM are not allowed."
        )
    kind = interval.upper()
    if kind not in INTERVALS:
        raise InvalidParameterValueException(f"Unsupported interval type {interval}")
    tz_id = timezone if isinstance(_zone(timezone), zoneinfo.ZoneInfo) else "GMT"
    now = rt.clock.now()
    try:
        next_run_time(kind, schedule, tz_id, now, now)
    except CloudException:
        raise InvalidParameterValueException(
            f"{volume_str(volume)} has an invalid schedule [{schedule}] for interval type [{interval}]."
        ) from None
    if max_snaps <= 0:
        raise InvalidParameterValueException(
            f"maxSnaps [{max_snaps}] for volume {volume_str(volume)} should be greater than 0."
        )
    most = rt.config.number(f"snapshot.max.{kind.lower()}")
    if max_snaps > most:
        raise InvalidParameterValueException(
            f"maxSnaps [{max_snaps}] for volume {volume_str(volume)} exceeds limit [{most}] for interval type "
            f"[{interval}]."
        )
    owner = rt.store.get(Account, volume.account_id)
    if display and owner.type != 1:
        limit = accounting.limit_of(rt, owner, accounting.SNAPSHOT)
        domain_limit = rt.config.number("max.domain.snapshots")
        if (limit != -1 and max_snaps > limit) or (domain_limit != -1 and max_snaps > domain_limit):
            raise InvalidParameterValueException(
                "Max number of snapshots shouldn't exceed the domain/account level snapshot limit"
            )
    pool_ids = add_pools_for_copy_to_primary(rt, volume, zone_ids, list(storage_ids), replicate)
    _validate_policy_zones(rt, zone_ids, pool_ids, volume, caller)
    env = rt.strategy_env
    name = policy_lock(volume.id)
    if not env.global_lock(name, owner=API_THREAD):
        raise CloudRuntimeException(
            f"Unable to acquire lock for creating snapshot policy [{kind}] for {volume_str(volume)}"
        )
    with finally_unless_crash(lambda: env.global_unlock(name)):
        return _persist(rt, volume, schedule, tz_id, INTERVALS.index(kind), max_snaps, display, zone_ids, pool_ids)


def policy_lock(volume_id: int) -> str:
    """The GlobalLock ``persistSnapshotPolicy`` takes (spec §18.6, §21.1): one per volume."""
    return f"createSnapshotPolicy_{volume_id}"


def _validate_policy_zones(
    rt: Runtime, zone_ids: list[int], pool_ids: list[int], volume: Volume, caller: Account
) -> None:
    """``validatePolicyZones``: copies need backup on (or pools), a Core source zone, valid destinations."""
    if not zone_ids and not pool_ids:
        return
    if not rt.config.flag("snapshot.backup.to.secondary") and zone_ids and not pool_ids:
        raise InvalidParameterValueException(
            "Backing up of snapshot has been disabled. Snapshot can not be taken for multiple zones"
        )
    if rt.store.get(Zone, volume.data_center_id).type == "Edge":
        raise InvalidParameterValueException(
            "Backing up of snapshot is not supported by the zone of the volume. Snapshots can not be taken for "
            "multiple zones"
        )
    admin = caller.type == 1
    for zone_id in zone_ids:
        zone = rt.store.first(Zone, "id = ? AND removed IS NULL", (zone_id,))
        if zone is None:
            raise InvalidParameterValueException("Please specify a valid destination zone.")
        if zone.allocation_state == "Disabled" and not admin:
            raise PermissionDeniedException(f"Cannot perform this operation, Zone is currently disabled: {zone.name}")
        if zone.type == "Edge":
            raise InvalidParameterValueException(f"Snapshot copy is not supported by zone {zone.name}")
    if pool_ids:
        can_copy_on_primary(rt, pool_ids, volume)
        for pool_id in pool_ids:
            pool = rt.store.first(StoragePool, "id = ? AND removed IS NULL", (pool_id,))
            if pool is None:
                raise InvalidParameterValueException("Please specify a valid destination pool.")
            if pool.status != "Up" and not admin:
                raise PermissionDeniedException(
                    "Cannot perform this operation, the storage pool is not in Up state or the user is not the Root "
                    f"Admin {pool.name}"
                )
            if rt.store.get(Zone, pool.data_center_id).type == "Edge":
                raise InvalidParameterValueException(f"Snapshot copy is not supported by zone {pool.name}")


def _persist(
    rt: Runtime,
    volume: Volume,
    schedule: str,
    timezone: str,
    interval: int,
    max_snaps: int,
    display: bool,
    zone_ids: list[int],
    pool_ids: list[int],
) -> SnapshotPolicy:
    """``persistSnapshotPolicy``: one policy per (volume, interval): an existing one is updated (§9.1, §18.6).

    An update replaces the zone details when zones are given, then the pool details when pools are given, each a
    ``saveDetails`` of the policy's other details plus the new ones; without them the old details stay. Each write
    commits on its own but the details, one ``saveDetails`` transaction each (spec §21.2).
    """
    policy = rt.store.first(SnapshotPolicy, "volume_id = ? AND interval = ?", (volume.id, interval))
    if policy is None:
        policy = rt.store.insert(
            SnapshotPolicy(
                uuid=rt.new_uuid(),
                volume_id=volume.id,
                schedule=schedule,
                timezone=timezone,
                interval=interval,
                max_snaps=max_snaps,
                account_id=volume.account_id,
                domain_id=volume.domain_id,
                display=display,
            )
        )
        details = [("zoneid", str(i)) for i in zone_ids] + [("storageid", str(i)) for i in pool_ids]
        _save_details(rt, policy.id, details)
        schedule_next(rt, policy)
    else:
        was_displayed = policy.display
        policy = rt.store.update(
            policy, schedule=schedule, timezone=timezone, max_snaps=max_snaps, active=True, display=display
        )
        for name, ids in (("zoneid", zone_ids), ("storageid", pool_ids)):
            if ids:
                kept = [(d.name, d.value) for d in rt.store.find(SnapshotPolicyDetail, "policy_id = ?", (policy.id,))]
                _save_details(rt, policy.id, [d for d in kept if d[0] != name] + [(name, str(i)) for i in ids])
        if policy.display != was_displayed:
            if policy.display:
                schedule_next(rt, policy)
            else:
                _remove_schedule(rt, policy)
    accounting.action_event(
        rt,
        "SNAPSHOTPOLICY.CREATE",
        f"creating snapshot policy for volume {volume.uuid}",
        account_id=volume.account_id,
        resource_id=policy.id,
        state="Completed",
    )
    return policy


def _save_details(rt: Runtime, policy_id: int, details: list[tuple[str, str]]) -> None:
    """``SnapshotPolicyDetailsDao.saveDetails``: in one transaction, the policy's details deleted, the list inserted.

    Spec §21.2 (policy-create row), §21.5: all or nothing. An empty list writes nothing.
    """
    if not details:
        return
    with rt.store.atomic():
        for row in rt.store.find(SnapshotPolicyDetail, "policy_id = ?", (policy_id,)):
            rt.store.delete(row, by="SnapshotPolicyDetailsDao.saveDetails")
        for name, value in details:
            rt.store.insert(SnapshotPolicyDetail(policy_id=policy_id, name=name, value=value))


def _remove_schedule(rt: Runtime, policy: SnapshotPolicy) -> None:
    for row in rt.store.find(SnapshotSchedule, "policy_id = ? AND async_job_id IS NULL", (policy.id,)):
        rt.store.delete(row, by="SnapshotSchedulerImpl.removeSchedule")


# --- SnapshotSchedulerImpl -------------------------------------------------------------------------------------------


def schedule_next(rt: Runtime, policy: SnapshotPolicy) -> SnapshotSchedule | None:
    """``scheduleNextSnapshotJob(policy)``: the policy's next run on its schedule row (spec §9.2)."""
    if not policy.display:
        _remove_schedule(rt, policy)
        return None
    if rt.store.first(Volume, "id = ? AND removed IS NULL", (policy.volume_id,)) is None:
        _remove_schedule(rt, policy)
        return None
    now = rt.clock.now()
    start = now if rt.scheduler_timestamp_ms is None else rt.clock.at(rt.scheduler_timestamp_ms)
    when = next_run_time(INTERVALS[policy.interval], policy.schedule, policy.timezone, start, now)
    when_text = when.strftime(TIMESTAMP)
    row = rt.store.first(SnapshotSchedule, "volume_id = ? AND policy_id = ?", (policy.volume_id, policy.id))
    if row is None:
        return rt.store.insert(
            SnapshotSchedule(
                uuid=rt.new_uuid(), volume_id=policy.volume_id, policy_id=policy.id, scheduled_timestamp=when_text
            )
        )
    return rt.store.update(row, scheduled_timestamp=when_text, async_job_id=None, snapshot_id=None)


def reschedule_all(rt: Runtime) -> None:
    """``SnapshotSchedulerImpl.start``: every policy is rescheduled (spec §9.2, §10.4)."""
    for policy in rt.store.find(SnapshotPolicy):
        schedule_next(rt, policy)


def poll(runner: Runner) -> list[AsyncJob]:
    """One ``SnapshotPollTask`` run under the ``snapshot.poll`` GlobalLock; returns the jobs it submitted (spec §9.2).

    The lock is released in a finally, and the timer task's thread context then closes (``cleanupThread``); a crash
    does neither: the server is gone, and its session's end frees the GlobalLock (``restart.crash``).
    """
    rt = runner.rt
    rt.scheduler_timestamp_ms = rt.clock.now_ms
    env = rt.strategy_env
    with finally_unless_crash(lambda: env.end_thread(POLL_THREAD)):
        if not env.global_lock(POLL_LOCK, owner=POLL_THREAD):
            return []
        with finally_unless_crash(lambda: env.global_unlock(POLL_LOCK)):
            _reschedule_finished(rt)
            return _dispatch_due(runner)


def _reschedule_finished(rt: Runtime) -> None:
    """Schedules with a job: a finished (or missing) job means the next run is scheduled; IN_PROGRESS waits.

    In the order the jobs were dispatched (CloudStack's search names no order): read through the job id's index,
    a poll reads the schedules in flight, not every policy's row.
    """
    for row in rt.store.find(SnapshotSchedule, "async_job_id IS NOT NULL", order_by="async_job_id, id"):
        job = rt.store.first(AsyncJob, "id = ?", (row.async_job_id,))
        if job is not None and rt.store.state_of(job) == JobState.IN_PROGRESS:
            continue
        policy = rt.store.first(SnapshotPolicy, "id = ?", (row.policy_id,))
        if policy is None:
            rt.store.delete(row, by="SnapshotSchedulerImpl.scheduleNextSnapshotJob (policy removed)")
        else:
            schedule_next(rt, policy)


def _dispatch_due(runner: Runner) -> list[AsyncJob]:
    """``scheduleSnapshots``: each due schedule without a job becomes a createSnapshot job as the system user."""
    rt = runner.rt
    submitted: list[AsyncJob] = []
    now = rt.clock.timestamp()
    for row in rt.store.find(SnapshotSchedule, "scheduled_timestamp < ? AND async_job_id IS NULL", (now,)):
        volume = rt.store.get(Volume, row.volume_id)
        if not _can_schedule(rt, row, volume):
            continue
        accounting.action_event(
            rt,
            "SNAPSHOT.CREATE",
            f"creating snapshot for volume Id:{volume.uuid}",
            account_id=volume.account_id,
            resource_id=volume.id,
            state="Scheduled",
        )
        request = SnapshotRequest(volume_id=volume.id, policy_id=row.policy_id)
        try:
            job = submit_create(
                runner,
                request,
                caller_id=SYSTEM_USER_ID,
                user_id=SYSTEM_USER_ID,
                execute_account_id=volume.account_id,
                scheduled=True,
            )
        except ApiError as exc:
            log.warning("The scheduling of snapshot [%s] for volume [%s] failed due to [%s].", row.id, volume.id, exc)
            continue
        current = rt.store.first(SnapshotSchedule, "id = ?", (row.id,))
        if current is not None:
            rt.store.update(current, async_job_id=job.id)
        submitted.append(job)
    return submitted


def _can_schedule(rt: Runtime, row: SnapshotSchedule, volume: Volume) -> bool:
    """``canSnapshotBeScheduled``: skip removed volumes, volumes without a pool, removed or disabled accounts.

    A schedule whose policy is gone is removed and the tick is still dispatched (spec §9.2); ``allocSnapshot`` then
    fails on the missing policy (``getSnapshotType``), so no snapshot is taken.
    """
    if volume.removed is not None or volume.pool_id is None:
        return False
    account = rt.store.first(Account, "id = ? AND removed IS NULL", (volume.account_id,))
    if account is None or account.state == "disabled":
        return False
    if rt.store.first(SnapshotPolicy, "id = ?", (row.policy_id,)) is None:
        rt.store.delete(row, by="SnapshotSchedulerImpl.canSnapshotBeScheduled (policy removed)")
    return True


def configure(rt: Runtime) -> None:
    """``SnapshotSchedulerImpl.configure``: the scheduler's current timestamp starts at the server's start time."""
    rt.scheduler_timestamp_ms = rt.clock.now_ms


def start_poller(runner: Runner) -> None:
    """``SnapshotSchedulerImpl.start``: reschedule every policy, then poll every ``snapshot.poll.interval`` s."""
    rt = runner.rt
    reschedule_all(rt)
    interval_ms = rt.config.number("snapshot.poll.interval") * 1000
    incarnation = rt.incarnation

    def tick() -> None:
        if rt.incarnation != incarnation:
            return
        rt.crash_point("tick.SnapshotPollTask")
        try:
            poll(runner)
        except CloudException as exc:
            log.warning("Catch throwable in snapshot scheduler %s", exc)
        rt.scheduler.call_later(interval_ms, tick, label="SnapshotPollTask", owner=rt.ms_id, periodic=True)

    rt.scheduler.call_later(interval_ms, tick, label="SnapshotPollTask", owner=rt.ms_id, periodic=True)
