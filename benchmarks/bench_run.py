"""What does one explorer-sized run cost, phase by phase? Run by hand:

    .venv/bin/python benchmarks/bench_run.py              # 8 pool shapes, 15 rounds each: about 10 seconds
    .venv/bin/python benchmarks/bench_run.py --quick      # 3 rounds: a first look, noisier
    .venv/bin/python benchmarks/bench_run.py --rounds 31
    .venv/bin/python benchmarks/bench_run.py --profile    # plus a cProfile (top 25) of whole runs, every shape

The fault explorer runs thousands of short, independent runs; each is the same five phases, timed one by one:

1. **open**: ``QuickCloud()``, that is ``Engine.open(":memory:")`` and a zone, an image store and an account;
2. **volume**: ``QuickCloud.volume(shape)``, the shape's cluster, host and pool, a Running VM and its volume;
3. **take**: ``QuickCloud.take(volume)``, ``createSnapshot`` run to idle;
4. **quiesce**: ``Engine.quiesce()``, through a crash and restart of the server and one full cycle of its background
   tasks (the snapshot scheduler's poll, the storage GC, StorPool's recovery check);
5. **invariants**: ``check(Run(engine.store, engine.record), at=When.RESTARTED)``.

Each of the eight ``BUILTIN_SHAPES`` (one pool of each kind the built-in drivers serve) runs once untimed (imports,
caches built once per process), then ``--rounds`` times, ``gc.collect()`` before each; the median of each phase is
reported, with the total of the medians. The quiesce column also gives how many scheduled tasks it ran and its cost
per task. Then, on one finished run (the NFS/KVM shape), a single poll of the snapshot scheduler
(``Engine.poll_snapshot_schedules``) is timed: 1,000 polls per round, the fastest round: it is most of what a
quiesce runs (its cycle is the longest of ``snapshot.poll.interval`` = 300 s and ``storage.cleanup.delay`` = 1 day,
so 288 polls).

Checks, untimed: every take SUCCEEDED with its snapshot BackedUp, every quiesce settled, and each shape's invariant
violations are the same in every round (printed: under the ``cloudstack`` profile some are upstream's behaviour).
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import io
import pstats
import statistics
import sys
import time

from machine import machine

from snapshotfsm.invariants import Run, When, check
from snapshotfsm.testing.cloud import BUILTIN_SHAPES, PoolShape, QuickCloud

PHASES = ("open", "volume", "take", "quiesce", "invariants")
POLLS = 1_000


def label(shape: PoolShape) -> str:
    return f"{shape.provider}/{shape.pool_type}/{shape.hypervisor}"


def one_run(shape: PoolShape) -> tuple[list[float], int, tuple[str, ...]]:
    """The five phases of one run: their times (s), the tasks quiesce ran, the invariants broken."""
    t0 = time.perf_counter()
    cloud = QuickCloud()
    t1 = time.perf_counter()
    volume = cloud.volume(shape)
    t2 = time.perf_counter()
    job = cloud.take(volume)
    t3 = time.perf_counter()
    report = cloud.engine.quiesce()
    t4 = time.perf_counter()
    violations = check(Run(cloud.engine.store, cloud.engine.record), at=When.RESTARTED)
    t5 = time.perf_counter()
    engine = cloud.engine
    state = (engine.job_status(job.id), engine.snapshot_of(job).status)
    if state != ("SUCCEEDED", "BackedUp") or not report.settled:
        raise RuntimeError(f"{label(shape)}: {state}, settled {report.settled}")
    engine.close()
    return (
        [t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4],
        report.tasks_run,
        tuple(sorted({v.invariant for v in violations})),
    )


def measure(shape: PoolShape, rounds: int) -> tuple[list[float], int, tuple[str, ...]]:
    """Median per phase (ms) over ``rounds`` runs; the tasks quiesce ran; the invariants broken."""
    _, tasks, broken = one_run(shape)
    times: list[list[float]] = []
    for _ in range(rounds):
        gc.collect()
        phase_times, ran, found = one_run(shape)
        if (ran, found) != (tasks, broken):
            raise RuntimeError(f"{label(shape)}: a round ran {ran} tasks breaking {found}, another {tasks} {broken}")
        times.append(phase_times)
    return [statistics.median(column) * 1000 for column in zip(*times, strict=True)], tasks, broken


def poll_cost(rounds: int) -> float:
    """One scheduler poll on a finished run (µs): the fastest of ``rounds`` rounds of :data:`POLLS` polls."""
    cloud = QuickCloud()
    cloud.take(cloud.volume(BUILTIN_SHAPES[1]))
    cloud.engine.quiesce()
    best = float("inf")
    for _ in range(rounds):
        gc.collect()
        began = time.perf_counter()
        for _ in range(POLLS):
            cloud.engine.poll_snapshot_schedules()
        best = min(best, (time.perf_counter() - began) / POLLS)
    cloud.engine.close()
    return best * 1e6


def report(rows: list[tuple[PoolShape, list[float], int, tuple[str, ...]]]) -> None:
    header = "| shape | " + " | ".join(PHASES) + " | total | quiesce tasks | µs/task |"
    print(header)
    print("|---|" + "---:|" * (len(PHASES) + 3))
    for shape, medians, tasks, _ in rows:
        cells = " | ".join(f"{m:.2f}" for m in medians)
        print(f"| {label(shape)} | {cells} | {sum(medians):.2f} | {tasks} | {medians[3] * 1000 / tasks:.1f} |")
    overall = [statistics.median(column) for column in zip(*(r[1] for r in rows), strict=True)]
    cells = " | ".join(f"{m:.2f}" for m in overall)
    print(f"| median of shapes | {cells} | {sum(overall):.2f} | | |")
    print("\nInvariants broken (the same every round):")
    for shape, _, _, broken in rows:
        print(f"  {label(shape)}: {', '.join(broken) or 'none'}")


def profile_runs() -> str:
    profiler = cProfile.Profile()
    profiler.enable()
    for shape in BUILTIN_SHAPES:
        one_run(shape)
    profiler.disable()
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(25)
    return out.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 rounds per shape (a first look, noisier)")
    parser.add_argument("--rounds", type=int, metavar="R", help="rounds per shape (default 15; quick 3)")
    parser.add_argument("--profile", action="store_true", help="also print cProfile of one run of every shape")
    args = parser.parse_args()
    rounds = args.rounds or (3 if args.quick else 15)
    print(machine())
    print(f"\nOne explorer-sized run, per phase: median of {rounds} rounds per shape, ms\n")
    began = time.perf_counter()
    rows = [(shape, *measure(shape, rounds)) for shape in BUILTIN_SHAPES]
    report(rows)
    print(f"\nOne snapshot-scheduler poll: {poll_cost(max(3, rounds // 3)):.1f} µs (fastest round of {POLLS} polls)")
    if args.profile:
        print("\ncProfile of one run of every shape, tottime\n")
        print(profile_runs())
    print(f"({time.perf_counter() - began:.0f} s)")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
