"""How fast does the explorer go, and how does it scale with workers? Run by hand:

    .venv/bin/python benchmarks/bench_explore.py            # the default set, every fault kind, 1 and 2 workers
    .venv/bin/python benchmarks/bench_explore.py --quick    # two instances only: a first look
    .venv/bin/python benchmarks/bench_explore.py --workers 1 2 4
    .venv/bin/python benchmarks/bench_explore.py --dask 2   # then on a local Dask cluster of 2 worker processes
    .venv/bin/python benchmarks/bench_explore.py --scenario take --scenario copy --workers 2 --dask 2 --rounds 3
    .venv/bin/python benchmarks/bench_explore.py --profile hardened --workers 2 --dask 2

Each worker count explores the same scenarios with the same seed; the reports must be equal (checked, untimed,
``stats`` aside). Reported per worker count: wall time and each phase's (discover, explore, shrink), runs executed,
runs cut short by a fingerprint, shrink runs, runs per second, findings (groups) and runs per finding, and the
scaling efficiency against one local worker (speed-up / workers).

``--dask N`` (needs ``snapshotfsm[dask]``) explores on a ``distributed.LocalCluster`` of N single-threaded worker
processes, started once before the first round (untimed): the row times ``explore`` with ``dask`` set, connecting
and checking the workers included, as a user's run on a cluster that is already up. ``--rounds`` alternates the
configurations, so that on a shared machine each is measured under the load the others had.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from collections.abc import Iterator
from typing import Any

import attrs
from machine import machine

from snapshotfsm.explore import Options, document, explore
from snapshotfsm.explore.report import without_stats

QUICK = (
    "take:storpool/stopped/plain/sync/pool-copy/two-servers",
    "take-delete:nfs-vmware/stopped/plain/async/no-copies/one-server",
)


def main() -> None:
    """Explore once per worker count (and round); print a Markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="two instances instead of the default set")
    parser.add_argument("--scenario", action="append", default=[], help="scenarios of the default set (repeat)")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--dask", type=int, nargs="+", default=[], metavar="WORKERS", help="local Dask clusters")
    parser.add_argument("--rounds", type=int, default=1, help="alternate the worker counts this many times")
    parser.add_argument("--profile", action="append", default=[], help="profiles (repeat; default: cloudstack)")
    args = parser.parse_args()
    options = Options(scenarios=QUICK, full=True) if args.quick else Options(scenarios=tuple(args.scenario))
    options = attrs.evolve(options, profiles=tuple(args.profile) or options.profiles)
    chosen = "quick subset" if args.quick else ", ".join(args.scenario) or "default set"
    print(f"# {time.strftime('%Y-%m-%d')}, {machine()}; {chosen}, {' + '.join(options.profiles)}, every fault kind")
    print(
        "| round | on | workers | wall s | discover s | explore s | shrink s | executed | pruned | shrink runs |"
        " runs/s | findings | runs/finding | efficiency |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    first: dict[str, object] | None = None
    base = 0.0
    with contextlib.ExitStack() as clusters:
        addresses = {n: clusters.enter_context(_cluster(n)) for n in args.dask}
        configurations = [("local", n, options) for n in args.workers]
        configurations += [("dask", n, attrs.evolve(options, dask=address)) for n, address in addresses.items()]
        for round_ in range(1, args.rounds + 1):
            for where, workers, chosen_options in configurations:
                started = time.perf_counter()
                report = document(explore(attrs.evolve(chosen_options, workers=1 if where == "dask" else workers)))
                wall = time.perf_counter() - started
                if first is None:
                    first, base = without_stats(report), wall
                elif without_stats(report) != first:
                    sys.exit(f"the report with {workers} workers ({where}) differs from the first one")
                print(f"| {round_} | {where} | {workers} | {_row(report, wall, base / wall / workers)} |", flush=True)


@contextlib.contextmanager
def _cluster(workers: int) -> Iterator[str]:
    """A local Dask cluster of single-threaded worker processes, kept up for every round; its scheduler's address."""
    from distributed import LocalCluster  # noqa: PLC0415 - an optional extra, only for --dask

    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=":0") as local:
        yield local.scheduler_address


def _row(report: dict[str, Any], wall: float, efficiency: float) -> str:
    stats = report["stats"]
    runs = stats["executed"] + stats["pruned"] + stats["shrink_runs"] + stats["clean_runs"]
    findings = len(report["findings"])
    return (
        f"{wall:.1f} | {stats.get('discover_seconds', 0):.1f} | {stats.get('explore_seconds', 0):.1f}"
        f" | {stats.get('shrink_seconds', 0):.1f} | {int(stats['executed'])} | {int(stats['pruned'])}"
        f" | {int(stats['shrink_runs'])} | {runs / wall:.0f} | {findings} | {runs / max(findings, 1):.0f}"
        f" | {efficiency:.2f}"
    )


if __name__ == "__main__":
    main()
