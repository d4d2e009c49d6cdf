"""A history of N snapshots in seconds: the rows a sample of real takes wrote, cloned in bulk with fresh ids.

Taking 100,000 snapshots through the workflow costs about ten minutes per configuration; the flat-cost benchmark
needs that history under 1,000 timed takes, for several configurations and sizes. So a sample of ``k`` snapshots is
taken through the workflow (each of a fresh volume, with its VM when attached), every row those takes inserted is
read back (the rows of each table with an id above the mark taken before the sample), and the sample is copied
``N / k - 1`` times by ``INSERT ... SELECT`` run with ``executemany``, one statement per table, SQLite doing the
copying. Each copy shifts every id by the span of ids its table used in the sample, and every reference by the span
of the table it points into, so that the copies hold as many distinct snapshots, refs, jobs, work jobs, workflows,
log rows, usage and action events, storage objects, volumes and VMs as real takes would, linked the same way;
storage paths get a ``#copy`` suffix, as each real take's are distinct. What the copies do not rewrite are ids
inside JSON texts (a job's command, a workflow's context): nothing looks a finished take up by them.

Columns whose table depends on another column: a ``transition_log`` row's ``entity_id`` (by its ``machine``: the
store's binding of that machine), an ``async_job``'s ``instance_id`` (by ``instance_type``) and ``related`` (the
API job of a work job, as text). ``vm_work_job`` ids are ``async_job`` ids.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass

from snapshotfsm.store.records import ALL_RECORDS
from snapshotfsm.store.schema import columns
from snapshotfsm.store.store import Store

REFERENCES: dict[str, dict[str, str]] = {
    "volumes": {"instance_id": "vm_instance"},
    "snapshots": {"volume_id": "volumes"},
    "snapshot_store_ref": {"snapshot_id": "snapshots", "volume_id": "volumes", "parent_snapshot_id": "snapshots"},
    "snapshot_details": {"snapshot_id": "snapshots"},
    "snapshot_zone_ref": {"snapshot_id": "snapshots"},
    "vm_work_job": {"id": "async_job", "vm_instance_id": "vm_instance"},
    "usage_event": {"resource_id": "snapshots", "vm_id": "vm_instance"},
    "event": {"resource_id": "snapshots"},
    "workflow": {"job_id": "async_job", "snapshot_id": "snapshots", "volume_id": "volumes"},
    "failure": {"workflow_id": "workflow", "job_id": "async_job"},
    "sim_object": {"snapshot_id": "snapshots", "volume_id": "volumes"},
    "transition_log": {"job_id": "async_job"},
    "resource_tags": {"resource_id": "snapshots"},
}
"""Plain references: column -> the table whose ids it holds (0 and NULL stay as they are)."""
PATHS: dict[str, tuple[str, ...]] = {
    "sim_object": ("path", "source_path", "parent_path"),
    "snapshot_store_ref": ("install_path",),
}
"""Storage paths, made distinct per copy."""
INSTANCE_TYPES = {"Snapshot": "snapshots", "Volume": "volumes", "VirtualMachine": "vm_instance"}


@dataclass(frozen=True)
class Sample:
    """The rows a sample of takes inserted: per table, the id range (above the mark) and how many rows."""

    ranges: Mapping[str, tuple[int, int]]
    """table -> (first id, last id) of the sample's rows."""
    rows: Mapping[str, int]
    snapshots: int

    def span(self, table: str) -> int:
        """The ids one copy of the sample takes in ``table`` (``vm_work_job`` ids are ``async_job``'s)."""
        first, last = self.ranges["async_job" if table == "vm_work_job" else table]
        return last - first + 1


def marks(store: Store) -> dict[str, int]:
    """The highest id of every table now: what the sample adds comes above."""
    return {
        cls.table: int(store.conn.execute(f"SELECT coalesce(max(id), 0) FROM {cls.table}").fetchone()[0])
        for cls in ALL_RECORDS
    }


def sample(store: Store, before: Mapping[str, int], snapshots: int) -> Sample:
    """The rows inserted since ``before`` (:func:`marks`), by table."""
    ranges: dict[str, tuple[int, int]] = {}
    rows: dict[str, int] = {}
    for table, mark in before.items():
        low, high, count = store.conn.execute(
            f"SELECT min(id), max(id), count(*) FROM {table} WHERE id > ?", (mark,)
        ).fetchone()
        if count:
            ranges[table], rows[table] = (int(low), int(high)), int(count)
    if "vm_work_job" in ranges and "async_job" not in ranges:
        raise RuntimeError("work jobs without jobs in the sample")
    return Sample(ranges, rows, snapshots)


def _shift(column: str, target: str, sample: Sample) -> str:
    return f"CASE WHEN {column} IS NULL OR {column} = 0 THEN {column} ELSE {column} + :copy * {sample.span(target)} END"


def _by_kind(column: str, kind: str, targets: Mapping[str, str], sample: Sample) -> str:
    """``column`` shifted by the table ``kind`` names (a row whose kind is not in the sample keeps its value)."""
    cases = " ".join(
        f"WHEN '{name}' THEN {column} + :copy * {sample.span(table)}"
        for name, table in targets.items()
        if table in sample.ranges
    )
    return f"CASE WHEN {column} IS NULL THEN NULL ELSE CASE {kind} {cases} ELSE {column} END END"


def copy_statement(store: Store, table: str, sample: Sample) -> str:
    """The ``INSERT ... SELECT`` that adds copy ``:copy`` of the sample's rows of ``table``."""
    cls = next(c for c in ALL_RECORDS if c.table == table)
    refs = REFERENCES.get(table, {})
    paths = PATHS.get(table, ())
    machines = {m: b.record.table for m, b in store.bindings.items()}
    exprs: list[str] = []
    for name in columns(cls):
        if name == "id":
            exprs.append(_shift("id", refs.get("id", table), sample))
        elif name in refs and refs[name] in sample.ranges:
            exprs.append(_shift(name, refs[name], sample))
        elif name in paths:
            exprs.append(f"{name} || '#' || :copy")
        elif table == "transition_log" and name == "entity_id":
            exprs.append(_by_kind(name, "machine", machines, sample))
        elif table == "async_job" and name == "instance_id":
            exprs.append(_by_kind(name, "instance_type", INSTANCE_TYPES, sample))
        elif table == "async_job" and name == "related":
            exprs.append(
                "CASE WHEN related GLOB '[0-9]*' THEN "
                f"CAST(CAST(related AS INTEGER) + :copy * {sample.span('async_job')} AS TEXT) ELSE related END"
            )
        else:
            exprs.append(name)
    first, last = sample.ranges[table]
    return (
        f"INSERT INTO {table} ({', '.join(columns(cls))}) SELECT {', '.join(exprs)} FROM {table}"
        f" WHERE id BETWEEN {first} AND {last}"
    )


@dataclass(frozen=True)
class Preloaded:
    """What a preload added: snapshots in all (the sample's included), rows in all, and the seconds it took."""

    snapshots: int
    rows: int
    seconds: float


def preload(store: Store, sample: Sample, snapshots: int) -> Preloaded:
    """Copy the sample until the database holds ``snapshots`` snapshots' worth of rows (a multiple of the sample).

    One transaction: a crash of the benchmark leaves no half history. The copies are checked afterwards: each table
    holds its sample's rows times the copies, and every snapshot's volume exists.

    Raises:
        ValueError: ``snapshots`` is not a multiple of the sample's snapshots.
        RuntimeError: the copies are not what the sample says they should be.
    """
    if snapshots % sample.snapshots:
        raise ValueError(f"{snapshots} snapshots is not a multiple of the sample's {sample.snapshots}")
    copies = snapshots // sample.snapshots
    statements = {table: copy_statement(store, table, sample) for table in sample.ranges}
    conn = store.conn
    counts = {t: int(conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0]) for t in sample.ranges}
    began = time.perf_counter()
    with store.atomic():
        for sql in statements.values():
            conn.executemany(sql, [{"copy": c} for c in range(1, copies)])
    seconds = time.perf_counter() - began
    added = 0
    for table, count in counts.items():
        now = int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])
        if now - count != sample.rows[table] * (copies - 1):
            raise RuntimeError(f"{table}: {now - count} rows copied, expected {sample.rows[table] * (copies - 1)}")
        added += now - count
    orphans = conn.execute(
        "SELECT count(*) FROM snapshots s WHERE NOT EXISTS (SELECT 1 FROM volumes v WHERE v.id = s.volume_id)"
    ).fetchone()[0]
    if orphans:
        raise RuntimeError(f"{orphans} copied snapshots name a volume that is not there")
    return Preloaded(snapshots, added + sum(sample.rows.values()), seconds)
