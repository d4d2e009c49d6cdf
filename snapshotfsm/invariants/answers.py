"""What the API answered and billed, against what the run left: job outcomes, usage events, error codes.

An async job's answer is its row in ``async_job`` (status, ``job_result_code``, ``job_result``; spec §4.1); the
snapshot a job is about is its ``instance_id``. Usage events (``usage_event``, spec §5.10) are what the usage server
bills from. The ``failure`` table keeps each exception a step raised, with the job it ran for. Each check is a query,
streamed; what it reads per row is found by index (a job's log rows, a snapshot's refs and objects).
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator

from snapshotfsm.definitions import project_definitions
from snapshotfsm.errors import InvalidValue, ServerApiException
from snapshotfsm.invariants.base import Input, Invariant, Run, Violation, When, invariant
from snapshotfsm.names import JobState, RefState, SnapshotState
from snapshotfsm.orchestration.copy_api import COPY_SNAPSHOT_CMD
from snapshotfsm.orchestration.delete import DELETE_SNAPSHOT_CMD
from snapshotfsm.orchestration.jobs import CREATE_SNAPSHOT_CMD
from snapshotfsm.orchestration.restart import CANCELLED_TEXT
from snapshotfsm.store.ownership import (
    COPY,
    CREATE,
    DELETE,
    OFF_PRIMARY,
    ON_PRIMARY,
    STARTS,
    STOPPED,
    has_object,
    ref_store_kind,
)
from snapshotfsm.store.store import Store

SNAPSHOT_MACHINE = project_definitions()["snapshot"].name
REF_MACHINE = project_definitions()["snapshot_store_ref"].name
SUCCEEDED = JobState.ordinal(JobState.SUCCEEDED)
FAILED = JobState.ordinal(JobState.FAILED)

NOT_LIVE = (SnapshotState.Error, SnapshotState.Destroyed)
"""Snapshot states CloudStack's recount does not count (spec §19.2): a snapshot in any other, not removed, is live."""
GONE = (SnapshotState.Error, SnapshotState.Destroying, SnapshotState.Destroyed)
"""States that take a snapshot out of use: a move into one of them (or a removal) ends what an answer promised."""


def command(job_cmd: str) -> str:
    """The API name of a command class: ``...snapshot.CreateSnapshotCmd`` is ``createSnapshot``."""
    name = job_cmd.rsplit(".", 1)[-1].removesuffix("Cmd")
    return name[:1].lower() + name[1:]


def _job(job_id: int, job_cmd: str) -> str:
    return f"job {job_id} ({command(job_cmd)})"


# --- answer-matches-state ------------------------------------------------------------------------------------------

_SUCCEEDED_NOT_GOOD = f"""
SELECT j.id, j.job_cmd, j.instance_id, s.id, s.status, s.removed, t.event, t.kind, t.job_id
FROM async_job j
LEFT JOIN snapshots s ON s.id = j.instance_id
LEFT JOIN transition_log t ON t.id = (
    SELECT MIN(x.id) FROM transition_log x
    WHERE x.machine = ? AND x.entity_id = j.instance_id
      AND x.kind <> 'create' AND (x.dest IN ({", ".join("?" * len(GONE))}) OR x.kind IN ('remove', 'delete')))
WHERE j.job_cmd IN (?, ?) AND j.job_status = ?
  AND (s.id IS NULL OR s.removed IS NOT NULL OR s.status <> ?)
ORDER BY j.id
"""


def _succeeded_kept_snapshot(store: Store) -> Iterator[Violation]:
    """A SUCCEEDED take or copy: its snapshot is live and BackedUp, unless another job has taken it out since."""
    params = (SNAPSHOT_MACHINE, *GONE, CREATE_SNAPSHOT_CMD, COPY_SNAPSHOT_CMD, SUCCEEDED, SnapshotState.BackedUp)
    for job_id, cmd, instance, found, status, removed, event, kind, by_job in store.conn.execute(
        _SUCCEEDED_NOT_GOOD, params
    ):
        if event is not None and by_job is not None and by_job != job_id:
            continue
        if found is None:
            now = f"snapshot {instance} has no row"
        else:
            now = f"snapshot {instance} is {status}" + (" and removed" if removed is not None else "")
        if event is None:
            why = "not a final good state"
        else:
            who = "its own job" if by_job == job_id else "no job"
            why = f"{who} took it out of use ({_how(kind, event)})"
        yield Violation("answer-matches-state", _job(job_id, cmd), f"SUCCEEDED, but {now}: {why}")


def _how(kind: str, event: str) -> str:
    """How a ``transition_log`` row moved its row: an event, or one of CloudStack's direct writes, removes, deletes."""
    if kind == "event":
        return f"event {event}"
    if kind == "direct":
        return f"direct write by {event}"
    return f"{kind}d by {event}"


_REFS_OF_JOB = "FROM snapshot_store_ref r WHERE r.snapshot_id = j.instance_id"
"""The job's snapshot's refs; conditions on them go in a CASE, so that the snapshot's index is the one used."""

_FAILED_CREATE = f"""
SELECT j.id, j.job_cmd, j.instance_id, s.status, s.removed,
    (SELECT SUM(CASE WHEN r.store_role = 'Image' AND r.state = ? THEN 1 ELSE 0 END) {_REFS_OF_JOB}),
    (SELECT SUM(CASE WHEN r.store_role = 'Primary' AND r.state = ? THEN 1 ELSE 0 END) {_REFS_OF_JOB}),
    (SELECT SUM(CASE WHEN r.store_role = 'Image' THEN 1 ELSE 0 END) {_REFS_OF_JOB})
FROM async_job j JOIN snapshots s ON s.id = j.instance_id
WHERE j.job_cmd = ? AND j.job_status = ?
  AND ((s.removed IS NULL AND s.status NOT IN ({", ".join("?" * len(NOT_LIVE))}))
       OR (SELECT SUM(CASE WHEN r.state = ? THEN 1 ELSE 0 END) {_REFS_OF_JOB}) > 0)
ORDER BY j.id
"""


def _failed_create_left_nothing(store: Store) -> Iterator[Violation]:
    """A FAILED take: no live snapshot, and nothing a recount would charge (spec §19.2)."""
    params = (RefState.Ready, RefState.Ready, CREATE_SNAPSHOT_CMD, FAILED, *NOT_LIVE, RefState.Ready)
    for job_id, cmd, instance, status, removed, ready_image, ready_primary, any_image in store.conn.execute(
        _FAILED_CREATE, params
    ):
        left: list[str] = []
        if removed is None and status not in NOT_LIVE:
            left.append(f"snapshot {instance} live ({status})")
        if ready_image:
            left.append(f"{ready_image} Ready image ref(s) of snapshot {instance} (secondary_storage)")
        if ready_primary and removed is None and not any_image:
            left.append(f"{ready_primary} Ready primary ref(s) of snapshot {instance} (primary_storage)")
        if left:
            yield Violation("answer-matches-state", _job(job_id, cmd), "FAILED, but left " + "; ".join(left))


_SUCCEEDED_DELETE = """
SELECT j.id, j.job_cmd, j.job_cmd_info, j.instance_id, s.status
FROM async_job j JOIN snapshots s ON s.id = j.instance_id
WHERE j.job_cmd = ? AND j.job_status = ? AND s.removed IS NULL AND s.status <> ?
ORDER BY j.id
"""

_READY_IN_ZONE = f"""
SELECT COUNT(*) FROM snapshot_store_ref r
LEFT JOIN storage_pool p ON {ref_store_kind("r")} = 'primary' AND p.id = r.store_id
LEFT JOIN image_store i ON {ref_store_kind("r")} = 'image' AND i.id = r.store_id
WHERE r.snapshot_id = ? AND CASE WHEN r.state = ? THEN 1 ELSE 0 END = 1
  AND COALESCE(p.data_center_id, i.data_center_id) = ?
"""


def _zone_of_delete(job_id: int, info: str) -> int | None:
    """The ``zoneid`` a delete job was given (None: the whole snapshot).

    Raises:
        InvalidValue: ``job_cmd_info`` is not a JSON object, or its ``zoneid`` is neither an id nor null.
    """
    try:
        params = json.loads(info)
    except json.JSONDecodeError:
        params = None
    if not isinstance(params, dict):
        raise InvalidValue(f"async_job {job_id} job_cmd_info", info, "a JSON object")
    zone = params.get("zoneid")
    if zone is not None and (not isinstance(zone, int) or isinstance(zone, bool)):
        raise InvalidValue(f"async_job {job_id} job_cmd_info zoneid", zone, "a zone id or null")
    return zone


def _succeeded_delete_removed(store: Store) -> Iterator[Violation]:
    """A SUCCEEDED delete: the snapshot Destroyed or removed, or, for one zone, no Ready ref left in that zone."""
    params = (DELETE_SNAPSHOT_CMD, SUCCEEDED, SnapshotState.Destroyed)
    for job_id, cmd, info, instance, status in store.conn.execute(_SUCCEEDED_DELETE, params):
        zone = _zone_of_delete(job_id, info)
        if zone is None:
            yield Violation(
                "answer-matches-state", _job(job_id, cmd), f"SUCCEEDED, but snapshot {instance} is {status}"
            )
            continue
        ready = store.conn.execute(_READY_IN_ZONE, (instance, RefState.Ready, zone)).fetchone()[0]
        if ready:
            yield Violation(
                "answer-matches-state",
                _job(job_id, cmd),
                f"SUCCEEDED for zone {zone}, but snapshot {instance} still has {ready} Ready ref(s) there",
            )


_FAILED_MOVES = """
SELECT j.id, j.job_cmd, t.machine, t.entity_id, t.source, t.overwrote, s.status, r.state,
    EXISTS (SELECT 1 FROM transition_log y
            WHERE y.job_id = j.id AND y.machine = t.machine AND y.entity_id = t.entity_id AND y.kind = 'remove')
FROM async_job j
CROSS JOIN transition_log t
LEFT JOIN snapshots s ON t.machine = ? AND s.id = t.entity_id
LEFT JOIN snapshot_store_ref r ON t.machine = ? AND r.id = t.entity_id
WHERE j.job_cmd IN (?, ?) AND j.job_status = ? AND t.job_id = j.id AND t.machine IN (?, ?)
  AND t.id = (SELECT MIN(x.id) FROM transition_log x
              WHERE x.job_id = j.id AND x.machine = t.machine AND x.entity_id = t.entity_id)
ORDER BY j.id, t.id
"""


def _failed_changed_nothing(store: Store) -> Iterator[Violation]:
    """A FAILED delete or copy: every snapshot and ref it moved is back in the state it found it in.

    The state found is the first move's source (or what it overwrote); a row the job created was not there (its
    log row's source is empty) and must be gone again; a row the job removed is changed.
    """
    params = (
        SNAPSHOT_MACHINE,
        REF_MACHINE,
        DELETE_SNAPSHOT_CMD,
        COPY_SNAPSHOT_CMD,
        FAILED,
        SNAPSHOT_MACHINE,
        REF_MACHINE,
    )
    for job_id, cmd, machine, entity, source, overwrote, status, ref_state, removed in store.conn.execute(
        _FAILED_MOVES, params
    ):
        before = overwrote if overwrote is not None else source
        now = (status if machine == SNAPSHOT_MACHINE else ref_state) or ""
        if before == now and not removed:
            continue
        was = before or "absent"
        is_ = (now or "absent") + (" and removed" if removed else "")
        yield Violation(
            "answer-matches-state",
            _job(job_id, cmd),
            f"FAILED, but {machine} {entity} it moved is {is_} (it found it {was})",
        )


@invariant("answer-matches-state", When.QUIESCENT, Input.DATABASE)
def answer_matches_state(run: Run) -> Iterator[Violation]:
    """The answer of every finished createSnapshot, deleteSnapshot and copySnapshot job agrees with what it left.

    A user acts on the answer: a SUCCEEDED take or copy promises a live snapshot in a final good state (BackedUp,
    spec §1.2), which only a later job (a delete, a retention) may take out of use; a FAILED take promises that
    nothing was left to see or pay for: no live snapshot (one a recount would count) and no Ready ref a recount
    would charge (spec §19.2; the run-time counters are the resource-count invariants' business). A SUCCEEDED
    delete leaves the snapshot Destroyed or removed (with a zone, no Ready ref of it in that zone, spec §9.4). A
    FAILED delete or copy leaves every snapshot and store ref it moved as it found it, and nothing it created.

    Quiescent: an asynchronous backup finishes the take after its job answered (spec §7.2).
    """
    store = run.store
    yield from _succeeded_kept_snapshot(store)
    yield from _failed_create_left_nothing(store)
    yield from _succeeded_delete_removed(store)
    yield from _failed_changed_nothing(store)


# --- usage-matches-objects -----------------------------------------------------------------------------------------

_USAGE = f"""
SELECT u.id, u.type, u.resource_id, u.zone_id,
    {has_object(present=False)},
    {has_object(present=True)},
    {STOPPED}
FROM usage_event u
WHERE u.type IN ('{ON_PRIMARY}', '{OFF_PRIMARY}', '{CREATE}', '{COPY}', '{DELETE}')
ORDER BY u.id
"""


@invariant("usage-matches-objects", When.QUIESCENT, Input.DATABASE, Input.STORAGE)
def usage_matches_objects(run: Run) -> Iterator[Violation]:
    """Usage events bill what existed on storage, and stop billing what went.

    The usage server bills from these events alone (spec §5.10): an event for a snapshot that never had an object
    where the event says (on primary storage for ON_PRIMARY and OFF_PRIMARY, in the event's zone for CREATE, COPY
    and DELETE) bills something that was never there; a start (ON_PRIMARY; CREATE or COPY in a zone) whose object is
    no longer there needs a later stop (OFF_PRIMARY; DELETE in that zone), or the bill never ends. An object is one
    of the snapshot's data files, present or deleted, or a file one of its refs names (a shared file, spec §16.2);
    a ref hard-deleted since can no longer say what it named.

    Quiescent: a take writes ON_PRIMARY before its backup, and the primary copy goes before OFF_PRIMARY is written.
    """
    for event_id, kind, snapshot_id, zone_id, existed, present, stopped in run.store.conn.execute(_USAGE):
        where = "on primary storage" if kind in (ON_PRIMARY, OFF_PRIMARY) else f"in zone {zone_id}"
        subject = f"usage_event {event_id} ({kind})"
        if not existed:
            yield Violation("usage-matches-objects", subject, f"snapshot {snapshot_id} never had an object {where}")
        elif kind in STARTS and not present and not stopped:
            stop = f"{OFF_PRIMARY} or {DELETE}" if kind == ON_PRIMARY else DELETE
            yield Violation(
                "usage-matches-objects",
                subject,
                f"snapshot {snapshot_id} has no object {where} any more, and no {stop} followed",
            )


# --- same-error-same-code ------------------------------------------------------------------------------------------

_CODES = """
SELECT f.exc_type, j.job_result_code, COUNT(*), MIN(j.id)
FROM (SELECT job_id, MAX(id) AS last FROM failure WHERE job_id IS NOT NULL GROUP BY job_id) l
JOIN failure f ON f.id = l.last
JOIN async_job j ON j.id = l.job_id
WHERE j.job_status = ? AND f.exc_type <> ? AND j.job_result IS NOT ?
GROUP BY f.exc_type, j.job_result_code
ORDER BY f.exc_type, j.job_result_code
"""

_EXAMPLE = """
SELECT j.job_cmd, f.machine, f.step FROM async_job j JOIN failure f ON f.job_id = j.id
WHERE j.id = ? ORDER BY f.id DESC LIMIT 1
"""


@invariant("same-error-same-code", When.ALWAYS, Input.DATABASE)
def same_error_same_code(run: Run) -> Iterator[Violation]:
    """One exception class gets one API error code, whichever path it failed a job on.

    A client decides what to do from the code (retry, fix a parameter, give up; spec appendix B): the same failure
    must not read as a parameter error on one path and an internal error on another. A FAILED job's error is the
    last exception recorded for it in the ``failure`` table, its code ``job_result_code``. A ServerApiException is
    left out: it carries the code it is answered with, chosen where it is thrown (the table does not keep it).
    Always: codes are written once, when a job completes. A job a restart failed (``cleanupLeftOverJobs``, spec
    §10.1) answers the restart's cancellation, whatever its steps raised before the crash: the client never saw
    that exception (it died with the server), and the cancellation's 530 rightly says "try again".
    """
    conn = run.store.conn
    for exc_type, group in itertools.groupby(
        conn.execute(_CODES, (FAILED, ServerApiException.java_name, CANCELLED_TEXT)), key=lambda row: row[0]
    ):
        codes = list(group)
        if len(codes) < 2:  # noqa: PLR2004 - two codes are a disagreement
            continue
        paths = []
        for _, code, count, job_id in codes:
            cmd, machine, step = conn.execute(_EXAMPLE, (job_id,)).fetchone()
            paths.append(f"{code} on {count} job(s), e.g. {_job(job_id, cmd)} at {machine} {step}")
        yield Violation("same-error-same-code", exc_type, "answered " + "; ".join(paths))


INVARIANTS: tuple[Invariant, ...] = (answer_matches_state, usage_matches_objects, same_error_same_code)
"""This module's invariants, in the order they are checked."""
