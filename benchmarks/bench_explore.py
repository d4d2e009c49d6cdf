"""How fast does the explorer go, and how does it scale with workers? Run by hand:

    .venv/bin/python benchmarks/bench_explore.py            # the default set, every fault kind, 1 and 2 workers
    .venv/bin/python benchmarks/bench_explore.py --quick    # two instances only: a first look
    .venv/bin/python benchmarks/bench_explore.py --workers 1 2 4

Each worker count explores the same scenarios with the same seed; the reports must be equal (checked, untimed,
``stats`` aside). Reported per worker count: wall time and each phase's (discover, explore, shrink), runs executed,
runs cut short by a fingerprint, shrink runs, runs per second, findings (groups) and runs per finding, and the
scaling efficiency against one worker (speed-up / workers).
"""

from __future__ import annotations

import argparse
import sys
import time

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
    args = parser.parse_args()
    scenarios = QUICK if args.quick else ()
    print(
        f"# {time.strftime('%Y-%m-%d')}, {machine()}; "
        f"{'quick subset' if args.quick else 'default set'}, every fault kind"
    )
    print(
        "| workers | wall s | discover s | explore s | shrink s | executed | pruned | shrink runs | runs/s |"
        " findings | runs/finding | efficiency |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    first: dict[str, object] | None = None
    base = 0.0
    for workers in args.workers:
        started = time.perf_counter()
        report = document(explore(Options(scenarios=scenarios, workers=workers, full=bool(scenarios))))
        wall = time.perf_counter() - started
        stats = report["stats"]
        if first is None:
            first, base = without_stats(report), wall
        elif without_stats(report) != first:
            sys.exit(f"the report with {workers} workers differs from the first one")
        runs = stats["executed"] + stats["pruned"] + stats["shrink_runs"] + stats["clean_runs"]
        findings = len(report["findings"])
        efficiency = base / wall / workers
        print(
            f"| {workers} | {wall:.1f} | {stats.get('discover_seconds', 0):.1f} | {stats.get('explore_seconds', 0):.1f}"
            f" | {stats.get('shrink_seconds', 0):.1f} | {int(stats['executed'])} | {int(stats['pruned'])}"
            f" | {int(stats['shrink_runs'])} | {runs / wall:.0f} | {findings} | {runs / max(findings, 1):.0f}"
            f" | {efficiency:.2f} |"
        )


if __name__ == "__main__":
    main()
