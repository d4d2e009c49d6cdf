"""Readers for the lifecycle tests (async backup, delete, policies, restart, GC), over the cloud of ``cloud.py``.

They read back a snapshot's whole life by id: a job's answer as a user reads it, the snapshot row, its refs, what
storage still holds, usage events and counters.
"""

from __future__ import annotations

import json

from cloud import Cloud

from snapshotfsm.engine import Engine
from snapshotfsm.store.records import (
    AsyncJob,
    ResourceCount,
    Snapshot,
    SnapshotDetail,
    SnapshotStoreRef,
    StorageObject,
    TransitionLog,
    UsageEvent,
    VmWorkJob,
    Workflow,
    Zone,
)

CANCELLED = "job cancelled because of management server restart or shutdown"
"""``job_result`` of a job that ``cleanupLeftOverJobs`` failed (spec §10.1)."""


def answer(engine: Engine, job_id: int) -> tuple[str, int, str | None]:
    """A job's status, result code and the text a user reads: the error text, or the raw result otherwise.

    ``job_result`` is ``<response class>/<name>/<json>``; an ``ExceptionResponse`` shows its ``errortext``, a
    cancelled job its plain text.
    """
    job = engine.get(AsyncJob, job_id)
    text = job.job_result
    if text is not None and text.split("/", 1)[0].endswith(".ExceptionResponse"):
        text = json.loads(text.split("/", 2)[2])["errortext"]
    return engine.job_status(job_id), job.job_result_code, text


def delete(cloud: Cloud, snapshot_id: int, **kwargs: object) -> tuple[str, int, str | None]:
    """``deleteSnapshot`` through the API, run until idle; the job's :func:`answer`."""
    job = cloud.engine.delete_snapshot(snapshot_id, **kwargs)  # type: ignore[arg-type]
    cloud.engine.run()
    return answer(cloud.engine, job.id)


def snapshot(engine: Engine, snapshot_id: int) -> tuple[str, bool]:
    """A snapshot row's status and whether it is soft-removed."""
    row = engine.get(Snapshot, snapshot_id)
    return row.status, row.removed is not None


def refs(engine: Engine, snapshot_id: int) -> list[tuple[str, str]]:
    """The snapshot's store refs still in the table: (role, state), by id."""
    rows = engine.store.find(SnapshotStoreRef, "snapshot_id = ?", (snapshot_id,))
    return [(r.store_role, r.state) for r in rows]


def details(engine: Engine, snapshot_id: int) -> dict[str, str]:
    """The snapshot's ``snapshot_details`` by name."""
    return {d.name: d.value for d in engine.store.find(SnapshotDetail, "snapshot_id = ?", (snapshot_id,))}


def stored(engine: Engine, snapshot_id: int) -> list[tuple[str, bool]]:
    """What storage holds or held for the snapshot (``sim_object``): (store kind, still present), by id."""
    rows = engine.store.find(StorageObject, "snapshot_id = ?", (snapshot_id,))
    return [(o.store_kind, o.deleted_ms is None) for o in rows]


def usage(engine: Engine, snapshot_id: int) -> list[tuple[str, int, int | None]]:
    """The snapshot's usage events: (type, zone, size); ``SNAPSHOT.*`` types (``resource_type`` is NULL on them)."""
    rows = engine.store.find(UsageEvent, "resource_id = ? AND type LIKE 'SNAPSHOT.%'", (snapshot_id,))
    return [(u.type, u.zone_id, u.size) for u in rows]


def counts(engine: Engine, account_id: int) -> dict[str, int]:
    """An account's ``resource_count`` rows by type."""
    rows = engine.store.find(ResourceCount, "account_id = ?", (account_id,))
    return {r.type: r.count for r in rows}


def jobs(engine: Engine) -> list[tuple[str, str, int]]:
    """Every async job: (command's class name, status, result code), by id."""
    return [
        (j.job_cmd.rsplit(".", 1)[-1], engine.job_status(j.id), j.job_result_code) for j in engine.store.find(AsyncJob)
    ]


def work_jobs(engine: Engine) -> list[tuple[int, str]]:
    """The ``vm_work_job`` rows left: (id, state)."""
    return [(w.id, w.state) for w in engine.store.find(VmWorkJob)]


def snapshot_log(engine: Engine, snapshot_id: int, *, since: int = 0) -> list[tuple[str, str, str, str]]:
    """The snapshot row's transitions after log row ``since``: (kind, source, event, dest)."""
    rows = engine.store.find(TransitionLog, "machine = 'snapshot' AND entity_id = ? AND id > ?", (snapshot_id, since))
    return [(r.kind, r.source, r.event, r.dest) for r in rows]


def workflows(engine: Engine, machine: str) -> list[Workflow]:
    """The rows of one workflow machine, by id."""
    return engine.store.find(Workflow, "machine = ?", (machine,))


def second_zone(cloud: Cloud, name: str = "zone2") -> Zone:
    """Another Core zone with its own image store."""
    zone = cloud.engine.add_zone(name)
    cloud.engine.add_image_store(zone, f"{name}-secondary")
    return zone
