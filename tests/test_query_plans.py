"""No query the engine runs reads a table that grows with use from end to end.

The engine's cost per snapshot stays flat only while every lookup of a snapshot, a ref, a job or a log row goes
through an index that finds that entity's rows. This test collects every query the engine runs during the demo
(``snapshotfsm demo``, then the history and recount a user runs on its database) and during every instance of the
explorer's default scenarios (run without faults, quiesced), explains each distinct one once, and fails when SQLite
plans to scan a growing table, or to search one by an index whose constrained columns do not pick out an entity (a
status, a role, a server: columns that hold the same value for ever more rows).

A few queries do read a set that grows, on purpose: the rows a cleanup is about to process (snapshots in Error for
the GC, the jobs a restarting server left in progress) or the whole of a table CloudStack lists once at start.
Each is named in :data:`WORK_SETS` with its reason.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

from snapshotfsm.demo import run_demo
from snapshotfsm.explore.scenarios import choose, default_scenarios
from snapshotfsm.explore.world import World
from snapshotfsm.store import store as store_module
from snapshotfsm.store.records import ALL_RECORDS, Snapshot
from snapshotfsm.store.store import Store
from snapshotfsm.store.trace import parameterise, verb

SMALL = frozenset(
    {
        "data_center",
        "domain",
        "cluster",
        "host",
        "storage_pool",
        "storage_pool_details",
        "image_store",
        "vm_template",
        "mshost",
        "configuration",
        "named_lock",
    }
)
"""Tables sized by the cloud's inventory and configuration, not by its use: they may be scanned. ``named_lock``
holds CloudStack's GlobalLocks, a handful at a time, each for one call or one poll."""

KEYS: dict[str, frozenset[str]] = {
    table: frozenset(columns)
    for table, columns in {
        "account": {"account_name"},
        "resource_limit": {"account_id"},
        "resource_count": {"account_id"},
        "vm_instance": set(),
        "vm_snapshots": {"vm_id"},
        "volumes": {"instance_id", "account_id"},
        "volume_details": {"volume_id", "value"},
        "snapshots": {"volume_id", "account_id"},
        "snapshot_store_ref": {"snapshot_id", "volume_id", "parent_snapshot_id"},
        "snapshot_details": {"snapshot_id"},
        "snapshot_zone_ref": {"snapshot_id"},
        "snapshot_policy": {"volume_id"},
        "snapshot_policy_details": {"policy_id"},
        "snapshot_schedule": {"policy_id", "volume_id"},
        "async_job": {"instance_id"},
        "vm_work_job": {"vm_instance_id"},
        "op_lock": {"key", "owner"},
        "usage_event": {"resource_id"},
        "event": {"resource_id"},
        "alert": set(),
        "resource_tags": {"resource_id"},
        "transition_log": {"entity_id", "job_id"},
        "workflow": {"job_id", "snapshot_id"},
        "failure": {"workflow_id", "job_id"},
        "sim_object": {"snapshot_id", "volume_id", "path"},
        "sim_volume": {"volume_id"},
    }.items()
}
"""Every table that grows with use, and the columns whose value picks out one entity's rows (besides ``id``): a
search of the table must constrain one of them by equality (``volume_details.value`` holds a snapshot id; an
``op_lock`` owner is one thread)."""

WORK_SETS: dict[str, str] = {
    "SELECT * FROM snapshot_policy ORDER BY id": "every policy, once per server start (SnapshotSchedulerImpl.start, "
    "spec §9.2)",
    "SELECT * FROM snapshot_policy WHERE active = ? ORDER BY id": "every active policy, once per server start "
    "(cleanupOrphanSnapshotPolicies, spec §10.3)",
    "SELECT * FROM snapshot_schedule WHERE async_job_id IS NOT NULL ORDER BY async_job_id, id": "the schedules "
    "whose job is in flight, each poll (spec §9.2)",
    "SELECT * FROM snapshot_schedule WHERE scheduled_timestamp < ? AND async_job_id IS NULL ORDER BY id": "the "
    "schedules due, each poll (spec §9.2)",
    "SELECT * FROM snapshots WHERE status = ? AND removed IS NULL ORDER BY id": "the Destroying snapshots a start "
    "deletes again (spec §10.3)",
    "SELECT * FROM snapshots WHERE status = ? ORDER BY id": "the snapshots in Error the GC expunges (spec §10.5)",
    "SELECT * FROM snapshot_store_ref WHERE state = ? ORDER BY id": "the Destroying refs the GC deletes (spec §10.5)",
    "SELECT * FROM snapshot_store_ref WHERE state = ? AND store_role = ? ORDER BY id": "the Destroyed image refs the "
    "GC removes (spec §10.5)",
    "SELECT * FROM snapshot_details WHERE name = ? AND value = ? AND display = ? ORDER BY id": "the MS_ID details of "
    "a restarting server: its backups in flight (spec §10.1)",
    "SELECT * FROM snapshot_details WHERE name = ? ORDER BY id": "the SP_RECOVERED_SNAPSHOT details StorPool's "
    "recovery check clears (spec §8)",
    "SELECT * FROM sim_object WHERE store_kind = ? AND store_id = ? AND deleted_ms IS NULL ORDER BY id": "StorPool's "
    "SnapshotsList in the recovery check, only while a recovered snapshot waits for it (spec §8)",
    "SELECT * FROM async_job WHERE job_status = ? AND (job_executing_msid = ? OR (job_executing_msid IS NULL AND "
    "job_init_msid = ?)) ORDER BY created, id": "the jobs a restarting server left IN_PROGRESS (spec §10.1)",
    "SELECT * FROM async_job WHERE job_status = ? AND job_init_msid = ? AND job_cmd = ? AND removed IS NULL ORDER BY "
    "id": "the FAILED take work jobs a server did not remove, at its start: none in practice (spec §10.2)",
    "SELECT * FROM async_job WHERE job_init_msid = ? AND job_dispatcher IN (?, ?) ORDER BY id": "the work jobs a "
    "starting server expunges (expungeLeftoverWorkJobs, spec §10.1)",
    "SELECT * FROM vm_work_job WHERE id IN (SELECT id FROM async_job WHERE job_init_msid = ? AND job_dispatcher IN "
    "(?, ?)) ORDER BY id": "the work jobs a starting server expunges (expungeLeftoverWorkJobs, spec §10.1)",
    "SELECT * FROM vm_work_job WHERE state IN (?, ?) AND EXISTS (SELECT ? FROM async_job j WHERE j.id = "
    "vm_work_job.id AND (j.job_init_msid = ? OR j.job_executing_msid = ?)) ORDER BY id": "the work jobs still "
    "queued or running when their server restarts (spec §10.1)",
    "SELECT * FROM op_lock WHERE ms_id = ? ORDER BY id": "the locks a crashed server held (spec §10.1, §21.1)",
}
"""Queries allowed to read a growing table by a column that picks no entity, or whole, and why."""

_PLAN_ROW = re.compile(r"^(?P<how>SCAN|SEARCH) (?P<name>\S+)(?: AS (?P<alias>\S+))?(?P<rest>.*)$")
_INDEXED = re.compile(r"^ USING (?:COVERING )?INDEX \S+ \((?P<terms>.*)\)$")
_TERM = re.compile(r"^(?P<column>\w+)(?P<op>=|>|<|>=|<=)\?$")
_NAMED = re.compile(r"(?i)\b(?:FROM|JOIN|UPDATE)\s+(\w+)(?:\s+(?:AS\s+)?(\w+))?")
_NOT_ALIASES = frozenset({"WHERE", "ON", "JOIN", "LEFT", "INNER", "CROSS", "ORDER", "GROUP", "LIMIT", "SET", "USING"})


def aliases(sql: str) -> dict[str, str]:
    """The tables a query names, by the name its plan uses for them (their alias, or themselves)."""
    found: dict[str, str] = {}
    for table, alias in _NAMED.findall(sql):
        found[table] = table
        if alias and alias.upper() not in _NOT_ALIASES:
            found[alias] = table
    return found


def reads_growing_table(conn: sqlite3.Connection, sql: str) -> list[str]:
    """Why ``sql`` reads a growing table beyond one entity's rows, one line per plan step that does; none is good.

    ``sql`` has ``?`` for its values. A plan step that scans a table of :data:`KEYS`, or searches it by an index
    whose equality terms name none of the table's key columns (an automatic index is built by a scan), is one
    reason.
    """
    names = aliases(sql)
    plan = conn.execute(f"EXPLAIN QUERY PLAN {sql}", (None,) * sql.count("?")).fetchall()
    reasons: list[str] = []
    for *_, detail in plan:
        row = _PLAN_ROW.match(detail)
        if row is None:
            continue
        table = names.get(row["alias"] or row["name"], row["name"])
        keys = KEYS.get(table)
        if keys is None:
            continue
        rest = row["rest"]
        if row["how"] == "SCAN":
            reasons.append(f"scans table {table} ({detail})")
            continue
        if rest == "" or rest.startswith(" USING INTEGER PRIMARY KEY"):
            continue
        indexed = _INDEXED.match(rest)
        terms = [_TERM.match(t) for t in indexed["terms"].split(" AND ")] if indexed else []
        if not any(t is not None and t["op"] == "=" and t["column"] in keys for t in terms):
            reasons.append(
                f"searches table {table} by columns that pick out no entity ({detail}; "
                f"a key column would be one of {', '.join(sorted(keys)) or 'id only'})"
            )
    return reasons


def _trace_every_store(monkeypatch: pytest.MonkeyPatch, seen: set[str]) -> None:
    """Every store opened from now on reports each statement it runs into ``seen`` (peers share the connection)."""
    init = Store.__init__

    def traced(self: Store, *args: object, **kwargs: object) -> None:
        init(self, *args, **kwargs)  # type: ignore[arg-type]
        self.conn.set_trace_callback(seen.add)

    monkeypatch.setattr(store_module.Store, "__init__", traced)


def _run_demo(path: Path) -> None:
    """The demo, then what a user reads of its database: a snapshot's story and failures, a recount."""
    engine, _ = run_demo(str(path))
    try:
        snapshot = engine.store.find(Snapshot, "volume_id = ?", (1,), limit=1)[0]
        engine.story(snapshot.id)
        engine.failures(snapshot=snapshot.id)
        engine.update_resource_count(snapshot.account_id)
    finally:
        engine.close()


def _run_scenarios() -> int:
    """Every instance of the default scenario set, as the explorer's clean runs: the program, then quiescence."""
    instances = choose(default_scenarios())
    for instance in instances:
        world = World(instance)
        try:
            for index in range(len(instance.scenario.steps)):
                world.run_step(index)
            world.quiesce()
        finally:
            world.engine.close()  # not judged: the scenarios break invariants on purpose, the explorer's business
    return len(instances)


@pytest.fixture(scope="module")
def queries(tmp_path_factory: pytest.TempPathFactory) -> Mapping[str, str]:
    """Each distinct query the engine ran (values as ``?``), with one statement as it ran."""
    seen: set[str] = set()
    with pytest.MonkeyPatch.context() as monkeypatch:
        _trace_every_store(monkeypatch, seen)
        _run_demo(tmp_path_factory.mktemp("demo") / "demo.db")
        assert _run_scenarios() >= 45  # the default set: 45 instances of 15 scenarios
    found: dict[str, str] = {}
    for statement in sorted(seen):
        if verb(statement) in {"SELECT", "UPDATE", "DELETE", "WITH"} or " SELECT " in statement.upper():
            found.setdefault(parameterise(statement, nulls=False)[0], statement)
    return found


@pytest.fixture
def schema() -> Iterator[sqlite3.Connection]:
    """An empty database with the engine's schema: a plan depends on the indexes, not on the rows (no statistics)."""
    store = Store.open(":memory:")
    yield store.conn
    store.close()


def test_every_table_is_growing_or_small() -> None:
    """A new table needs a decision: may it be scanned, and which columns find an entity in it."""
    tables = {cls.table for cls in ALL_RECORDS}
    assert tables == SMALL | set(KEYS), (
        f"classify in KEYS or SMALL: {sorted(tables - SMALL - set(KEYS))}; gone: {sorted((SMALL | set(KEYS)) - tables)}"
    )
    assert not SMALL & set(KEYS)


def test_no_query_reads_a_growing_table_whole(queries: Mapping[str, str], schema: sqlite3.Connection) -> None:
    """Every query of the demo and the default scenarios finds its rows through an index that picks an entity."""
    assert len(queries) > 100  # the run really ran the engine's queries
    failures = []
    for sql, example in sorted(queries.items()):
        if sql in WORK_SETS:
            continue
        reasons = reads_growing_table(schema, sql)
        failures.extend(f"{reason}\n    query: {sql}\n    ran as: {example}" for reason in reasons)
    assert not failures, "queries that read a growing table beyond one entity's rows:\n" + "\n".join(failures)


def test_every_work_set_query_still_runs(queries: Mapping[str, str], schema: sqlite3.Connection) -> None:
    """An allowance for a query nobody runs any more is removed, so that the list says what the engine does."""
    assert sorted(set(WORK_SETS) - set(queries)) == []
    for sql in WORK_SETS:  # and each is still explainable against the schema
        reads_growing_table(schema, sql)


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ("SELECT * FROM snapshots WHERE name = ?", "scans table snapshots (SCAN snapshots)"),
        (
            "SELECT count(*) FROM transition_log WHERE machine = ?",
            "searches table transition_log by columns that pick out no entity",
        ),
        (
            "SELECT * FROM snapshot_store_ref r JOIN snapshots s ON s.id = r.snapshot_id WHERE s.name = ?",
            "scans table snapshots (SCAN s)",
        ),
    ],
)
def test_a_scan_is_reported_with_its_table(schema: sqlite3.Connection, sql: str, expected: str) -> None:
    """The check names the table and the plan step that reads it, so that a failure says what to index."""
    reasons = reads_growing_table(schema, sql)
    assert any(r.startswith(expected) for r in reasons), reasons


def test_keyed_lookups_pass(schema: sqlite3.Connection) -> None:
    """A search by an entity's id or key column is what the engine should do: no reason is given."""
    for sql in (
        "SELECT * FROM snapshots WHERE id = ?",
        "SELECT * FROM snapshot_store_ref WHERE snapshot_id = ? AND state = ?",
        "SELECT * FROM transition_log WHERE machine = ? AND entity_id = ?",
        "SELECT * FROM cluster WHERE name = ?",
    ):
        assert reads_growing_table(schema, sql) == [], sql


@pytest.mark.parametrize(
    ("statement", "nulls", "expected"),
    [
        (
            "SELECT * FROM t WHERE a = 'it''s' AND b = 12 AND c = 1.5 AND d = x'00ff' AND e IS NULL",
            True,
            (
                "SELECT * FROM t WHERE a = ? AND b = ? AND c = ? AND d = ? AND e IS ?",
                ("it's", 12, 1.5, b"\x00\xff", None),
            ),
        ),
        (
            "SELECT * FROM t WHERE e IS NOT NULL AND f = -3",
            False,
            ("SELECT * FROM t WHERE e IS NOT NULL AND f = -?", (3,)),
        ),
        ("SAVEPOINT sqlite_utils_1f", True, ("SAVEPOINT sqlite_utils_1f", ())),
    ],
)
def test_a_traced_statement_reads_back_as_its_query(
    statement: str, nulls: bool, expected: tuple[str, tuple[object, ...]]
) -> None:
    """Values become parameters, so that one query is explained once; NULL stays text when its plan depends on it."""
    assert parameterise(statement, nulls=nulls) == expected
