"""How fast does the explorer go, and how does it scale with workers? Run by hand:

    .venv/bin/python benchmarks/bench_explore.py            # the default set, every fault kind, 1 and 2 workers
    .venv/bin/python benchmarks/bench_explore.py --quick    # two instances only: a first look
    .venv/bin/python benchmarks/bench_explore.py --workers 1 2 4
    .venv/bin/python benchmarks/bench_explore.py --repeat 2   # 1, 2, 1, 2 workers; the fastest of each kept

Each worker count explores the same scenarios with the same seed; the reports must be equal (checked, untimed,
``stats`` aside). Reported per worker count: wall time and each phase's (discover, explore, shrink), runs executed,
runs cut short by a fingerprint, shrink runs, runs per second, findings (groups) and runs per finding, and the
scaling efficiency against one worker (speed-up / workers). On a shared machine, ``--repeat`` interleaves the worker
counts and keeps the fastest run of each, so that both meet the same neighbours.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from machine import machine

from snapshotfsm.explore import Options, document, explore
from snapshotfsm.explore.report import without_stats

QUICK = (
    "take:storpool/stopped/plain/sync/pool-copy/two-servers",
    "take-delete:nfs-vmware/stopped/plain/async/no-copies/one-server",
)


def main() -> None:
    """Explore once per worker count (``--repeat`` times, interleaved); print a Markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="two instances instead of the default set")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeat", type=int, default=1, help="rounds of every worker count; the fastest is kept")
    args = parser.parse_args()
    scenarios = QUICK if args.quick else ()
    print(
        f"# {time.strftime('%Y-%m-%d')}, {machine()}; "
        f"{'quick subset' if args.quick else 'default set'}, every fault kind, fastest of {args.repeat}"
    )
    first: dict[str, object] | None = None
    best: dict[int, tuple[float, dict[str, Any]]] = {}
    for _ in range(args.repeat):
        for workers in args.workers:
            started = time.perf_counter()
            report = document(explore(Options(scenarios=scenarios, workers=workers, full=bool(scenarios))))
            wall = time.perf_counter() - started
            if first is None:
                first = without_stats(report)
            elif without_stats(report) != first:
                sys.exit(f"the report with {workers} workers differs from the first one")
            if workers not in best or wall < best[workers][0]:
                best[workers] = (wall, report)
    print(
        "| workers | wall s | discover s | explore s | shrink s | executed | pruned | shrink runs | runs/s |"
        " findings | runs/finding | efficiency |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    base = best[args.workers[0]][0] * args.workers[0]
    for workers in args.workers:
        wall, report = best[workers]
        stats = report["stats"]
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
