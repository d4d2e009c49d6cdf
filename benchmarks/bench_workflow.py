"""What does the take-snapshot workflow cost, how far is it from its SQL, and does it stay flat at scale? By hand:

    .venv/bin/python benchmarks/bench_workflow.py                 # all three parts: about 45 minutes
    .venv/bin/python benchmarks/bench_workflow.py --quick         # each part small: about 3 minutes, noisier
    .venv/bin/python benchmarks/bench_workflow.py --part floor    # one part (floor, flat, day; repeatable)
    .venv/bin/python benchmarks/bench_workflow.py --part flat --full   # also 100,000 takes through the workflow
    .venv/bin/python benchmarks/bench_workflow.py --part floor --snapshots 500 --rounds 7 --profile

Three parts:

- **floor** (below): the take against replays of its own SQL trace, and with ``--profile`` where its time goes
  (cProfile's own time by category: SQLite, reading records, writing records, the transitions library, the runner
  and step contract, the steps, the clock, the rest);
- **flat** (``flat.py``): 1,000 takes on top of a history of 100 and of 100,000 snapshots, the history cloned in bulk
  from 100 real takes (``preload.py``); ``--full`` also takes the whole 100,000 through the workflow;
- **day** (``policy_day.py``): a simulated day of hourly policies keeping 3, on 100 and on 1,000 volumes, run by the
  scheduler's own polls, each in its own process: wall time, snapshots per second, peak memory.

The floor part, in detail.
The workflow is the public API a user calls, ``Engine.create_snapshot`` then ``Engine.run`` (the simulated clock runs
until nothing is pending), in four configurations: the volume attached to a Running VM (the take goes through the
VM's work-job queue, spec §4.3) or detached, on a file database (WAL, as ``Engine.open`` makes it) or on
``:memory:``. The cloud is the classic one: a zone with an image store, a XenServer cluster with one host and an NFS
pool, and one account whose three resource limits are -1 (unlimited), so that no take is refused. Each snapshot is
taken of a fresh volume (VHD, 10 GiB; attached: each in its own VM): every take is then the first of its volume, with
no chain and no delta count to grow, so each snapshot does the same work and the cost per snapshot does not drift
with N; manual snapshots have no retention. The snapshots are taken one after the other; that each job SUCCEEDED
and its snapshot is BackedUp is checked after the timed part.

Per configuration:

1. **Trace.** The cloud is built, the database checkpointed (``wal_checkpoint(TRUNCATE)``) and copied (a file copy;
   for ``:memory:``, ``Connection.backup`` into a new in-memory database): that copy is the start database. Then
   the N snapshots are taken with ``set_trace_callback`` on the engine's connection, which reports every statement
   SQLite runs (BEGIN, COMMIT, SAVEPOINT and RELEASE included) as its expanded text, bound values written in.
2. **Counts** (per snapshot, from the trace): *statements* is every traced statement; *writes* are the INSERT,
   UPDATE, DELETE and REPLACE statements; *commits* are the transactions that end durably: the COMMIT (or END)
   statements, plus any write run in autocommit mode (outside a transaction, where SQLite commits it by itself) and
   any RELEASE of an outermost savepoint (which commits the transaction that SAVEPOINT opened). The RELEASE of a
   nested savepoint only merges it into the enclosing transaction: it commits nothing and is not counted.
3. **Floors.** The trace is replayed by hand with ``sqlite3`` on fresh copies of the start database, with the
   engine's pragmas (read from its connection: journal mode, synchronous, busy timeout), in autocommit mode
   (``isolation_level=None``, so that exactly the traced statements run: the trace already holds every BEGIN and
   COMMIT), each statement executed and its rows fetched. The replay turns the literals of the expanded text back
   into parameters (strings, numbers, blobs, NULL), so that, as in the workflow, a repeated statement is compiled
   once and then found in the ``sqlite3`` statement cache. Two floors: the *whole trace*, and the *writes only*:
   the transactions that write, reduced to their writes and their transaction statements (BEGIN, COMMIT, SAVEPOINT,
   RELEASE, ROLLBACK TO); transactions that only read are dropped. The replay of the expanded text as traced (every
   statement compiled afresh, what a naive replay measures) is reported too, in a second table.
4. **Checks**, once, untimed: an untraced run starts from a database identical to the copy (``iterdump``) and ends
   in the same database as the traced one (so tracing changes nothing but the time), each replay ends in that
   database too, and the parameterised replay reads the same rows as the replay of the text as traced.
5. **Rounds.** The workflow is timed untraced (a trace callback costs time). A workflow round cannot start from a
   copied file: the engine's in-memory state (the seeded uuid generator, the clock, the scheduler) is part of the
   start, so each round rebuilds the cloud (deterministic, and checked equal to the copy in 4), checkpoints, and
   times the N takes. Workflow rounds are interleaved with replay rounds, each on a fresh copy, and the fastest
   round of each is reported (as in ``bench_transitions.py``: on a shared machine the slower rounds measure the
   neighbours). Building the cloud and copying are outside the timed part; ``gc.collect()`` runs before each.

The ratios say how much the orchestration (Python around the SQL, and the reads it chooses to make) costs over the
SQL it runs; the statement, write and commit counts say how much SQL it chooses to run.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import hashlib
import io
import pstats
import re
import shutil
import sqlite3
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import flat
import policy_day
from machine import machine
from workload import MEMORY, SETUPS, Cloud, Setup, check_taken, discard, take

from snapshotfsm import Engine
from snapshotfsm.store.trace import PARAMETERISED, WRITES, parameterise, verb

PARTS = ("floor", "flat", "day")
CONTROL = frozenset({"BEGIN", "COMMIT", "END", "SAVEPOINT", "RELEASE", "ROLLBACK"})
_SAVEPOINT = re.compile(r"(?is)^\s*(?:SAVEPOINT|RELEASE(?:\s+SAVEPOINT)?)\s+(\S+?)\s*;?\s*$")
_ROLLBACK_TO = re.compile(r"(?is)^\s*ROLLBACK(?:\s+TRANSACTION)?\s+TO\b")

Statement = tuple[str, tuple[object, ...]]


# --- the workflow ----------------------------------------------------------------------------------------------------


def build(where: str, setup: Setup, n: int) -> tuple[Engine, list[int]]:
    """The cloud and ``n`` fresh volumes, a file database checkpointed (the copies start with an empty WAL too)."""
    cloud = Cloud.open(where)
    volumes = cloud.volumes(n, attached=setup.attached)
    cloud.checkpoint()
    return cloud.engine, volumes


def traced_take(engine: Engine, volumes: Sequence[int]) -> tuple[list[str], list[int], list[tuple[int, int]]]:
    """The take with every statement traced: the trace, where each snapshot's statements begin, and the jobs."""
    trace: list[str] = []
    marks: list[int] = []
    conn = engine.store.conn
    conn.set_trace_callback(trace.append)
    try:
        taken = []
        for volume_id in volumes:
            marks.append(len(trace))
            taken.extend(take(engine, [volume_id]))
    finally:
        conn.set_trace_callback(None)
    return trace, marks, taken


def digest(conn: sqlite3.Connection) -> str:
    """A hash of the whole database as SQL (``iterdump``): equal digests, equal databases."""
    h = hashlib.sha256()
    for line in conn.iterdump():
        h.update(line.encode())
        h.update(b"\n")
    return h.hexdigest()


# --- the trace -------------------------------------------------------------------------------------------------------


@dataclass
class Analysis:
    """What a trace holds: its statements by kind, its commits by kind, and the writes-only selection."""

    verbs: Counter[str]
    commits: int
    autocommit_writes: int
    outer_releases: int
    rollbacks: int
    read_only_transactions: int
    writes_only: list[int]
    """Indices of the statements the writes-only floor replays."""


def analyse(trace: Sequence[str]) -> Analysis:
    """Split the trace into transactions (or single autocommit statements) and count.

    A transaction opens with BEGIN, or with a SAVEPOINT outside a transaction, and ends with COMMIT/END, ROLLBACK (not
    ROLLBACK TO), or the RELEASE of the savepoint that opened it.
    """
    kinds = [verb(sql) for sql in trace]
    units: list[list[int]] = []
    unit: list[int] | None = None
    stack: list[str] = []
    by_savepoint = False
    commits = autocommit = released = rollbacks = 0
    for i, (sql, kind) in enumerate(zip(trace, kinds, strict=True)):
        if unit is None:
            if kind in {"BEGIN", "SAVEPOINT"}:
                unit, by_savepoint = [i], kind == "SAVEPOINT"
                stack = [_savepoint_name(sql)] if by_savepoint else []
            else:
                units.append([i])
                autocommit += kind in WRITES
            continue
        unit.append(i)
        if kind in {"COMMIT", "END"}:
            commits += 1
        elif kind == "ROLLBACK" and not _ROLLBACK_TO.match(sql):
            rollbacks += 1
        elif kind == "SAVEPOINT":
            stack.append(_savepoint_name(sql))
            continue
        elif kind == "RELEASE":
            name = _savepoint_name(sql)
            if name in stack:
                del stack[len(stack) - 1 - stack[::-1].index(name) :]
            if stack or not by_savepoint:
                continue
            released += 1
        else:
            continue
        units.append(unit)
        unit = None
    if unit is not None:
        raise RuntimeError("the trace ends inside a transaction")
    writing = [u for u in units if any(kinds[i] in WRITES for i in u)]
    return Analysis(
        verbs=Counter(kinds),
        commits=commits + autocommit + released,
        autocommit_writes=autocommit,
        outer_releases=released,
        rollbacks=rollbacks,
        read_only_transactions=sum(1 for u in units if len(u) > 1 and not any(kinds[i] in WRITES for i in u)),
        writes_only=[i for u in writing for i in u if kinds[i] in WRITES or kinds[i] in CONTROL],
    )


def _savepoint_name(sql: str) -> str:
    found = _SAVEPOINT.match(sql)
    if found is None:
        raise RuntimeError(f"cannot read the savepoint name of {sql!r}")
    return found.group(1).strip("\"'`[]").lower()


# --- the floors ------------------------------------------------------------------------------------------------------


class StartCopy:
    """The start database, copied once, handing out fresh copies with the engine's pragmas."""

    def __init__(self, engine: Engine, where: str, tmp: Path) -> None:
        conn = engine.store.conn
        self.memory = where == MEMORY
        self.journal_mode = str(conn.execute("PRAGMA journal_mode").fetchone()[0])
        self.synchronous = int(conn.execute("PRAGMA synchronous").fetchone()[0])
        self.busy_timeout = int(conn.execute("PRAGMA busy_timeout").fetchone()[0])
        self.tmp = tmp
        self.template: sqlite3.Connection | None = None
        self.path = tmp / "start.db"
        if self.memory:
            self.template = sqlite3.connect(MEMORY)
            conn.backup(self.template)
        else:
            discard(self.path)
            shutil.copyfile(where, self.path)  # build() checkpointed: the file holds everything

    def fresh(self, name: str) -> sqlite3.Connection:
        """A new copy, in autocommit mode (only the statements replayed run), its page cache warmed."""
        if self.template is not None:
            conn = sqlite3.connect(MEMORY, isolation_level=None)
            self.template.backup(conn)
        else:
            path = self.tmp / f"{name}.db"
            discard(path)
            shutil.copyfile(self.path, path)
            conn = sqlite3.connect(path, isolation_level=None)
        conn.execute(f"PRAGMA busy_timeout = {self.busy_timeout}")
        if not self.memory:
            conn.execute(f"PRAGMA journal_mode = {self.journal_mode}")
            conn.execute(f"PRAGMA synchronous = {self.synchronous}")
        conn.execute("PRAGMA quick_check").fetchall()  # reads every page, as building left the engine's cache warm
        return conn

    def done(self, conn: sqlite3.Connection, name: str) -> None:
        conn.close()
        if not self.memory:
            discard(self.tmp / f"{name}.db")

    def close(self) -> None:
        if self.template is not None:
            self.template.close()
        discard(self.path)


def replay(conn: sqlite3.Connection, statements: Sequence[Statement]) -> float:
    """Seconds to run ``statements`` by hand, each one's rows fetched."""
    execute = conn.execute
    start = time.perf_counter()
    for sql, params in statements:
        execute(sql, params).fetchall()
    return time.perf_counter() - start


def replay_reads(conn: sqlite3.Connection, statements: Sequence[Statement]) -> list[list[object]]:
    """Every statement's rows, for the check that parameterising reads what the traced text reads."""
    return [conn.execute(sql, params).fetchall() for sql, params in statements]


# --- one configuration -----------------------------------------------------------------------------------------------


@dataclass
class Result:
    """One configuration's best rounds (seconds for N snapshots) and what its trace holds."""

    setup: Setup
    n: int
    best: dict[str, float]
    statements: int
    analysis: Analysis
    per_snapshot: tuple[int, int]
    """The fewest and most statements one snapshot ran."""
    templates: int

    def ms(self, name: str) -> float:
        return self.best[name] * 1000 / self.n

    def per(self, count: int) -> str:
        value = count / self.n
        return f"{value:,.0f}" if value == int(value) else f"{value:,.1f}"


def rounds(fns: dict[str, Callable[[], float]], count: int) -> dict[str, float]:
    """The fastest of ``count`` interleaved rounds of each function (each returns the seconds it timed)."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(count):
        for name, fn in fns.items():
            gc.collect()
            times[name].append(fn())
    return {name: min(t) for name, t in times.items()}


def _where(setup: Setup, tmp: Path, name: str) -> str:
    return MEMORY if setup.memory else str(tmp / f"{name}.db")


def _close(engine: Engine, setup: Setup, tmp: Path, name: str) -> None:
    engine.close()
    if not setup.memory:
        discard(tmp / f"{name}.db")


@dataclass
class Traced:
    """The traced run: the start copy, the trace and where each snapshot's part of it begins, the two digests."""

    start: StartCopy
    trace: list[str]
    marks: list[int]
    start_digest: str
    end_digest: str


def traced_run(setup: Setup, tmp: Path, n: int) -> Traced:
    """Build, copy the start, take the snapshots with the trace on."""
    where = _where(setup, tmp, "traced")
    engine, volumes = build(where, setup, n)
    start = StartCopy(engine, where, tmp)
    start_digest = digest(engine.store.conn)
    trace, marks, taken = traced_take(engine, volumes)
    check_taken(engine, taken)
    end_digest = digest(engine.store.conn)
    _close(engine, setup, tmp, "traced")
    return Traced(start, trace, marks, start_digest, end_digest)


def check(setup: Setup, tmp: Path, n: int, traced: Traced, replays: dict[str, list[Statement]]) -> None:
    """An untraced run starts and ends as the traced one; every replay ends there too and reads the same rows.

    Raises:
        RuntimeError: one of them does not.
    """
    engine, volumes = build(_where(setup, tmp, "check"), setup, n)
    if digest(engine.store.conn) != traced.start_digest:
        raise RuntimeError(f"{setup.label}: a rebuilt cloud differs from the copied start database")
    check_taken(engine, take(engine, volumes))
    if digest(engine.store.conn) != traced.end_digest:
        raise RuntimeError(f"{setup.label}: the untraced run ends in another database than the traced one")
    _close(engine, setup, tmp, "check")
    reads: dict[str, list[list[object]]] = {}
    for name, statements in replays.items():
        conn = traced.start.fresh("check")
        reads[name] = replay_reads(conn, statements)
        if digest(conn) != traced.end_digest:
            raise RuntimeError(f"{setup.label}: the {name} replay ends in another database than the workflow")
        traced.start.done(conn, "check")
    if reads["whole literal"] != reads["whole"]:
        raise RuntimeError(f"{setup.label}: the parameterised replay reads other rows than the traced text")


def measure(setup: Setup, tmp: Path, n: int, count: int) -> Result:
    """Trace, check, then interleaved rounds of the untraced workflow and of the four replays."""
    traced = traced_run(setup, tmp, n)
    analysis = analyse(traced.trace)
    literal: list[Statement] = [(sql, ()) for sql in traced.trace]
    whole = [parameterise(sql) for sql in traced.trace]
    replays = {
        "whole": whole,
        "writes": [whole[i] for i in analysis.writes_only],
        "whole literal": literal,
        "writes literal": [literal[i] for i in analysis.writes_only],
    }
    check(setup, tmp, n, traced, replays)

    def workflow_round() -> float:
        engine, volumes = build(_where(setup, tmp, "workflow"), setup, n)
        gc.collect()
        began = time.perf_counter()
        taken = take(engine, volumes)
        elapsed = time.perf_counter() - began
        check_taken(engine, taken)
        _close(engine, setup, tmp, "workflow")
        return elapsed

    def replay_round(statements: Sequence[Statement]) -> Callable[[], float]:
        def run() -> float:
            conn = traced.start.fresh("replay")
            gc.collect()
            elapsed = replay(conn, statements)
            traced.start.done(conn, "replay")
            return elapsed

        return run

    best = rounds({"workflow": workflow_round} | {k: replay_round(v) for k, v in replays.items()}, count)
    traced.start.close()
    marks = traced.marks
    sizes = [b - a for a, b in zip(marks, [*marks[1:], len(traced.trace)], strict=True)]
    return Result(
        setup=setup,
        n=n,
        best=best,
        statements=len(traced.trace),
        analysis=analysis,
        per_snapshot=(min(sizes), max(sizes)),
        templates=len({sql for sql, _ in whole if verb(sql) in PARAMETERISED}),
    )


# --- the report ------------------------------------------------------------------------------------------------------


def report(results: Sequence[Result]) -> None:
    print(
        "| configuration | workflow ms/snapshot | statements | writes | commits | whole-trace replay ms/snapshot "
        "| writes-only replay ms/snapshot | workflow / whole | workflow / writes |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        a = r.analysis
        print(
            f"| {r.setup.label} | {r.ms('workflow'):.2f} | {r.per(r.statements)} "
            f"| {r.per(sum(a.verbs[v] for v in WRITES))} | {r.per(a.commits)} | {r.ms('whole'):.2f} "
            f"| {r.ms('writes'):.2f} | {r.best['workflow'] / r.best['whole']:.2f}x "
            f"| {r.best['workflow'] / r.best['writes']:.2f}x |"
        )
    print("\nThe same floors replaying the expanded text as traced (every statement compiled afresh, no cache hit):\n")
    print(
        "| configuration | whole-trace ms/snapshot | writes-only ms/snapshot | workflow / whole | workflow / writes |"
    )
    print("|---|---:|---:|---:|---:|")
    for r in results:
        print(
            f"| {r.setup.label} | {r.ms('whole literal'):.2f} | {r.ms('writes literal'):.2f} "
            f"| {r.best['workflow'] / r.best['whole literal']:.2f}x "
            f"| {r.best['workflow'] / r.best['writes literal']:.2f}x |"
        )
    shown = ("SELECT", "INSERT", "UPDATE", "DELETE", "BEGIN", "COMMIT", "SAVEPOINT", "RELEASE")
    print("\nStatements per snapshot, by kind; commits = COMMIT + autocommit writes + outermost RELEASE:\n")
    print(
        f"| configuration | {' | '.join(shown)} | other | commits | read-only transactions "
        "| statements of one snapshot | distinct SELECT and write texts |"
    )
    print("|---|" + "---:|" * (len(shown) + 5))
    for r in results:
        a = r.analysis
        other = sum(c for v, c in a.verbs.items() if v not in shown)
        explicit = a.commits - a.autocommit_writes - a.outer_releases
        low, high = r.per_snapshot
        print(
            f"| {r.setup.label} | {' | '.join(r.per(a.verbs[v]) for v in shown)} | {r.per(other)} "
            f"| {r.per(explicit)} + {r.per(a.autocommit_writes)} + {r.per(a.outer_releases)} "
            f"| {r.per(a.read_only_transactions)} | {low}" + ("" if low == high else f"-{high}") + f" | {r.templates} |"
        )
    rollbacks = sum(r.analysis.rollbacks for r in results)
    if rollbacks:
        print(f"\n{rollbacks} ROLLBACK statements in the traces: some transaction was undone.")


CATEGORIES = (
    ("SQLite: statements run, rows fetched", ("of 'sqlite3.Connection' objects", "of 'sqlite3.Cursor' objects")),
    ("reading records: Store.get/find/first, a record per row", ("store.py:", "records.")),
    ("the transitions library: trigger, callbacks, state changes", ("transitions/", "machines.py")),
    ("runner and step contract: the context as JSON, the workflow row", ("runner.py", "contract.py", "json/")),
    ("steps, strategies, drivers, chains, accounting", ("orchestration/", "strategies/", "drivers/", "chains.py")),
    ("the simulated clock and its to-do list", ("scheduler.py", "clock.py", "heapq")),
)
"""Where a profiled take's own time goes, by the first pattern its function's location matches."""
_READS = ("(get)", "(find)", "(first)", "(<listcomp>)", "(_build)", "(_record)", "records.", "__init__")


def category(where: str) -> str:
    """The category of a cProfile entry ``file:line(function)``: reads and writes of the store told apart."""
    for name, patterns in CATEGORIES:
        if any(p in where for p in patterns):
            if name.startswith("reading") and "store.py:" in where and not any(r in where for r in _READS):
                return "writing records: transit, insert, update, their checks and log rows"
            return name
    return "the rest: logging, attrs, builtins"


def profile(setup: Setup, tmp: Path, n: int) -> str:
    """cProfile of ``n`` takes: own time by category, then the top 20 functions by own time."""
    engine, volumes = build(_where(setup, tmp, "profile"), setup, n)
    profiler = cProfile.Profile()
    profiler.enable()
    taken = take(engine, volumes)
    profiler.disable()
    check_taken(engine, taken)
    _close(engine, setup, tmp, "profile")
    stats = pstats.Stats(profiler)
    by: Counter[str] = Counter()
    for (file, line, function), (_, _, own, _, _) in stats.stats.items():  # type: ignore[attr-defined]
        by[category(f"{file}:{line}({function})")] += own
    total = sum(by.values())
    lines = [f"| where ({setup.label}, {n} takes) | share of the time |", "|---|---:|"]
    lines += [f"| {name} | {own / total:.0%} |" for name, own in by.most_common()]
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(20)
    return "\n".join(lines) + "\n\n" + out.getvalue()


# --- all parts -------------------------------------------------------------------------------------------------------


def floor_part(tmp: Path, n: int, count: int, *, profiled: bool) -> None:
    print(
        f"\n## The take against its own SQL\n\nThe take workflow (create_snapshot + run) against replays of its own "
        f"SQL trace: {n} snapshots per round, best of {count} interleaved rounds; counts per snapshot\n"
    )
    results = [measure(setup, tmp, n, count) for setup in SETUPS]
    report(results)
    print("\nChecks passed: rebuilt start = copied start, traced end = untraced end = every replay's end.")
    if profiled:
        for setup in (SETUPS[0], SETUPS[2]):
            print(f"\ncProfile of the take, {setup.label}: own time by category, then by function\n")
            print(profile(setup, tmp, n))


def flat_part(tmp: Path, *, quick: bool, whole: bool) -> None:
    histories = (100, 10_000 if quick else 100_000)
    takes, count = (200, 2) if quick else (1000, 3)
    print(
        f"\n## Flat: {takes:,} takes on top of {histories[0]:,} and {histories[1]:,} snapshots\n\n"
        f"History preloaded by cloning a sample of {flat.SAMPLE} real takes; best of {count} interleaved rounds\n"
    )
    flat.report([flat.measure(setup, tmp, histories, takes, count) for setup in SETUPS])
    if whole:
        total, block = 100_000, 10_000
        print(f"\nThe whole history through the workflow: {total:,} takes, ms/snapshot per block of {block:,}\n")
        flat.report_full([flat.full(setup, tmp, total, block) for setup in SETUPS])


def day_part(*, quick: bool) -> None:
    sizes = (20, 100) if quick else (100, 1000)
    databases = (True,) if quick else (False, True)
    print(
        f"\n## A day of hourly policies: {sizes[0]:,} and {sizes[1]:,} volumes\n\n"
        "Each day in its own process; the smaller size timed before and after the larger (the faster kept); "
        "Python's peak from a separate tracemalloc run (memory database)\n"
    )
    policy_day.report_days([policy_day.measure_days(sizes, memory=memory, trace_memory=memory) for memory in databases])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short run of each part (a first look, noisier)")
    parser.add_argument(
        "--part", action="append", choices=PARTS, help="run only this part (repeatable; default: all three)"
    )
    parser.add_argument("--full", action="store_true", help="flat: also take the whole 100,000 through the workflow")
    parser.add_argument("--snapshots", type=int, metavar="N", help="floor: snapshots per round (default 200; quick 40)")
    parser.add_argument("--rounds", type=int, metavar="R", help="floor: rounds of each measure (default 5; quick 3)")
    parser.add_argument("--profile", action="store_true", help="floor: also profile the attached take, file and memory")
    args = parser.parse_args()
    parts = args.part or list(PARTS)
    print(machine())
    began = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="scale-bench-") as tmp:
        if "floor" in parts:
            n = args.snapshots or (40 if args.quick else 200)
            floor_part(Path(tmp), n, args.rounds or (3 if args.quick else 5), profiled=args.profile)
        if "flat" in parts:
            flat_part(Path(tmp), quick=args.quick, whole=args.full)
        if "day" in parts:
            day_part(quick=args.quick)
    print(f"\n({time.perf_counter() - began:.0f} s)")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
