"""How fast does the explorer go, and how does it scale with workers? Run by hand:

    .venv/bin/python benchmarks/bench_explore.py            # the default set, every fault kind, 1 and 2 workers
    .venv/bin/python benchmarks/bench_explore.py --quick    # two instances only: a first look
    .venv/bin/python benchmarks/bench_explore.py --workers 1 2 4
    .venv/bin/python benchmarks/bench_explore.py --dask 2   # then on a local Dask cluster of 2 worker processes

Each worker count explores the same scenarios with the same seed; the reports must be equal (checked, untimed,
``stats`` aside). Reported per worker count: wall time and each phase's (discover, explore, shrink), runs executed,
runs cut short by a fingerprint, shrink runs, runs per second, findings (groups) and runs per finding, and the
scaling efficiency against one local worker (speed-up / workers).

``--dask N`` (needs ``snapshotfsm[dask]``) explores on a ``distributed.LocalCluster`` of N single-threaded worker
processes, started before its run and stopped after it, untimed: the row times ``explore`` with ``dask`` set,
connecting and checking the workers included, as a user's run on a cluster that is already up.
"""

from __future__ import annotations

import argparse
import sys
import time

import attrs
from machine import machine

from snapshotfsm.explore import Options, document, explore
from snapshotfsm.explore.report import without_stats

QUICK = (
    "take:storpool/stopped/plain/sync/pool-copy/two-servers",
    "take-delete:nfs-vmware/stopped/plain/async/no-copies/one-server",
)


def main() -> None:
    """Explore once per worker count; print a Markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="two instances instead of the default set")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--dask", type=int, nargs="+", default=[], metavar="WORKERS", help="local Dask clusters")
    args = parser.parse_args()
    scenarios = QUICK if args.quick else ()
    print(
        f"# {time.strftime('%Y-%m-%d')}, {machine()}; "
        f"{'quick subset' if args.quick else 'default set'}, every fault kind"
    )
    print(
        "| on | workers | wall s | discover s | explore s | shrink s | executed | pruned | shrink runs | runs/s |"
        " findings | runs/finding | efficiency |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    first: dict[str, object] | None = None
    base = 0.0
    for where, workers in [*(("local", n) for n in args.workers), *(("dask", n) for n in args.dask)]:
        options = Options(scenarios=scenarios, workers=workers, full=bool(scenarios))
        if where == "local":
            started = time.perf_counter()
            report = document(explore(options))
            wall = time.perf_counter() - started
        else:
            from distributed import LocalCluster  # noqa: PLC0415 - an optional extra, only for --dask

            with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=":0") as local:
                started = time.perf_counter()
                report = document(explore(attrs.evolve(options, workers=1, dask=local.scheduler_address)))
                wall = time.perf_counter() - started
        stats = report["stats"]
        if first is None:
            first, base = without_stats(report), wall
        elif without_stats(report) != first:
            sys.exit(f"the report with {workers} workers ({where}) differs from the first one")
        runs = stats["executed"] + stats["pruned"] + stats["shrink_runs"] + stats["clean_runs"]
        findings = len(report["findings"])
        efficiency = base / wall / workers
        print(
            f"| {where} | {workers} | {wall:.1f} | {stats.get('discover_seconds', 0):.1f}"
            f" | {stats.get('explore_seconds', 0):.1f} | {stats.get('shrink_seconds', 0):.1f}"
            f" | {int(stats['executed'])} | {int(stats['pruned'])}"
            f" | {int(stats['shrink_runs'])} | {runs / wall:.0f} | {findings} | {runs / max(findings, 1):.0f}"
            f" | {efficiency:.2f} |"
        )


if __name__ == "__main__":
    main()
