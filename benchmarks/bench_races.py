"""How many schedules does the explorer try per contending scenario, and how long do they take? Run by hand:

    .venv/bin/python benchmarks/bench_races.py                  # every contending scenario, up to 2 preemptions
    .venv/bin/python benchmarks/bench_races.py --preemptions 1  # one preemption only
    .venv/bin/python benchmarks/bench_races.py --quick          # two-takes only

Schedules only (no faults), on one worker, one exploration per scenario (its pairwise instances): the schedules of
one preemption (chosen by conflict), those of two (each extended inside its first preemption's window), the runs
cut short by a known state, the findings (groups) and the wall time. The explorer's default run does the same
schedules beside the faults.
"""

from __future__ import annotations

import argparse
import collections
import time

from machine import machine

from snapshotfsm.explore import Options, explore
from snapshotfsm.explore.scenarios import default_scenarios


def main() -> None:
    """Explore each contending scenario's schedules; print a Markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="two-takes only")
    parser.add_argument("--preemptions", type=int, default=2)
    args = parser.parse_args()
    names = sorted(s.name for s in default_scenarios() if s.contending)
    if args.quick:
        names = ["two-takes"]
    print(f"# {time.strftime('%Y-%m-%d')}, {machine()}; schedules with at most {args.preemptions} preemptions")
    print()
    print("| scenario | instances | 1 preemption | 2 preemptions | cut short | findings | seconds |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    total = collections.Counter[str]()
    for name in names:
        started = time.perf_counter()
        found = explore(Options(scenarios=(name,), kinds=(), preemptions=args.preemptions))
        seconds = time.perf_counter() - started
        runs = [j for r in found.judged.values() for j in r]
        depth = collections.Counter(len(j.faults) for j in runs)
        row = {
            "instances": len(found.instances),
            "one": depth[1],
            "two": depth[2],
            "pruned": sum(j.pruned for j in runs),
            "findings": sum(any(f.choice is not None for f in g.shortest().case.faults) for g in found.groups),
        }
        total.update(row)
        print(
            f"| {name} | {row['instances']} | {row['one']} | {row['two']} | {row['pruned']} | {row['findings']} "
            f"| {seconds:.1f} |"
        )
        total["seconds"] += round(seconds * 10)
    print(
        f"| **all** | {total['instances']} | {total['one']} | {total['two']} | {total['pruned']} | "
        f"{total['findings']} | {total['seconds'] / 10:.1f} |"
    )


if __name__ == "__main__":
    main()
