"""What happened and why, read back from a database: the transition log with the failures that caused its rows.

The ``failure`` table keeps why a step failed (the exception CloudStack would have thrown, its message, the error
transition it led to) apart from the ``transition_log`` row that error transition wrote. A user asking "why is my
snapshot in Error?" needs both on one line, and needs the rows of everything that acted on the snapshot (its jobs,
the VM work job, its store refs, the volume, the usage events), not only the snapshot machine's own rows: these
functions put them together. They only read, so the command line can use them on a database opened read-only.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import attrs

from snapshotfsm.errors import NotFound
from snapshotfsm.names import JobState
from snapshotfsm.store.records import AsyncJob, Failure, TransitionLog, UsageEvent
from snapshotfsm.store.store import Store


@attrs.frozen
class Cause:
    """Why a step failed: the exception, its message, and the API error code its job answered with.

    ``code`` is the job's ``job_result_code`` when this is the last failure of a job that FAILED (the one the API
    answered with, spec appendix B), else None: an earlier failure of the same job, or one of a task without a job
    (an async backup's retry), was not answered to anyone.
    """

    failure: Failure
    seq: int | None
    """The ``transition_log`` row of the error transition the failure led to (None: not found)."""
    code: int | None

    @property
    def exception(self) -> str:
        """The exception's class name without its Java package (``CloudRuntimeException``)."""
        return self.failure.exc_type.rsplit(".", 1)[-1]

    def __str__(self) -> str:
        code = f" (API error {self.code})" if self.code is not None else ""
        return f"{self.exception}: {self.failure.message}{code}; step {self.failure.step}"


@attrs.frozen
class StoryRow:
    """One line of a history: a logged transition (``seq`` set) or a usage event (``usage`` set), and its causes."""

    at_ms: int
    log: TransitionLog | None = None
    usage: UsageEvent | None = None
    causes: tuple[Cause, ...] = ()

    @property
    def seq(self) -> int | None:
        """The transition's place in the run; None for a usage event."""
        return self.log.seq if self.log is not None else None


_LAST_FAILURE = "SELECT MAX(id) FROM failure WHERE job_id = ?"
_ERROR_ROW = (
    "SELECT MIN(id) FROM transition_log WHERE machine = ? AND entity_id = ? AND event = ? AND at_ms >= ? AND id > ?"
)


def causes(store: Store, failures: Sequence[Failure]) -> list[Cause]:
    """Each failure with the log row of its error transition and, for the one a job answered with, the API code."""
    found = []
    claimed: dict[tuple[str, int, str], int] = {}  # two failures of one workflow and event: each its own row
    for failure in failures:
        key = (failure.machine, failure.workflow_id, failure.error_event)
        seq = store.conn.execute(_ERROR_ROW, (*key, failure.at_ms, claimed.get(key, 0))).fetchone()[0]
        if seq is not None:
            claimed[key] = seq
        code = None
        if failure.job_id is not None:
            job = store.first(AsyncJob, "id = ?", (failure.job_id,))
            last = store.conn.execute(_LAST_FAILURE, (failure.job_id,)).fetchone()[0]
            if job is not None and last == failure.id and job.job_status == JobState.ordinal(JobState.FAILED):
                code = job.job_result_code
        found.append(Cause(failure, seq, code))
    return found


def failures(
    store: Store, *, snapshot: int | None = None, job: int | None = None, workflow: int | None = None
) -> list[Cause]:
    """The failures of a snapshot's workflows, of a job, of one workflow, or (no argument) of the whole run."""
    clauses, params = [], []
    if snapshot is not None:
        clauses.append(
            "(workflow_id IN (SELECT id FROM workflow WHERE snapshot_id = ?) OR job_id IN "
            "(SELECT id FROM async_job WHERE instance_type = 'Snapshot' AND instance_id = ?))"
        )
        params += [snapshot, snapshot]
    if job is not None:
        clauses.append("job_id = ?")
        params.append(job)
    if workflow is not None:
        clauses.append("workflow_id = ?")
        params.append(workflow)
    return causes(store, store.find(Failure, " AND ".join(clauses) or None, params, order_by="id"))


def _with_causes(rows: Sequence[TransitionLog], found: Sequence[Cause]) -> list[StoryRow]:
    by_seq: dict[int, list[Cause]] = {}
    for cause in found:
        if cause.seq is not None:
            by_seq.setdefault(cause.seq, []).append(cause)
    return [StoryRow(row.at_ms, log=row, causes=tuple(by_seq.get(row.seq, ()))) for row in rows]


def history(
    store: Store, *, machine: str | None = None, entity_id: int | None = None, job_id: int | None = None
) -> list[StoryRow]:
    """The log of one entity, one job or the whole run, in order, each error transition with the failure behind it."""
    rows = store.history(machine=machine, entity_id=entity_id, job_id=job_id)
    return _with_causes(rows, causes(store, store.find(Failure, order_by="id")) if rows else [])


_SNAPSHOT_JOBS = "SELECT id FROM async_job WHERE instance_type = 'Snapshot' AND instance_id = :s"
_STORY = f"""
SELECT id FROM transition_log WHERE
    (machine = 'snapshot' AND entity_id = :s)
    OR (machine = 'snapshot_store_ref' AND entity_id IN (SELECT id FROM snapshot_store_ref WHERE snapshot_id = :s))
    OR (machine = 'async_job' AND entity_id IN ({_SNAPSHOT_JOBS}))
    OR job_id IN ({_SNAPSHOT_JOBS})
    OR (entity_id IN (SELECT id FROM workflow WHERE snapshot_id = :s)
        AND machine IN (SELECT DISTINCT machine FROM workflow WHERE snapshot_id = :s))
ORDER BY id
"""


def snapshot_story(store: Store, snapshot_id: int) -> list[StoryRow]:
    """Everything that happened to a snapshot, in time order, to answer "what happened to it, and why".

    Its own moves, its store refs', its jobs' (the API job, the VM work job, the workflows and the volume's moves
    made for them), and its usage events.

    Raises:
        NotFound: no snapshot row with that id.
    """
    if store.conn.execute("SELECT 1 FROM snapshots WHERE id = ?", (snapshot_id,)).fetchone() is None:
        raise NotFound("snapshot", snapshot_id)
    ids = [row[0] for row in store.conn.execute(_STORY, {"s": snapshot_id})]
    logs = [store.get(TransitionLog, i) for i in ids]
    rows = _with_causes(logs, failures(store, snapshot=snapshot_id))
    start = store.clock.start
    for event in store.find(UsageEvent, "resource_id = ? AND type LIKE 'SNAPSHOT.%'", (snapshot_id,), order_by="id"):
        at = dt.datetime.fromisoformat(event.created).replace(tzinfo=dt.UTC) if event.created else start
        rows.append(StoryRow(int((at - start).total_seconds() * 1000), usage=event))
    # Usage events carry whole seconds: one is placed after the transitions of the same second, which wrote it.
    rows.sort(key=lambda r: (r.at_ms // 1000, r.usage is not None, r.at_ms, r.seq or 0))
    return rows
