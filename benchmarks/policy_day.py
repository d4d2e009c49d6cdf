"""A simulated day of hourly snapshot policies, run by the scheduler's own polls (spec §9.1-§9.3).

    .venv/bin/python benchmarks/policy_day.py --volumes 1000            # one day, one JSON line of results
    .venv/bin/python benchmarks/policy_day.py --volumes 100 --tracemalloc --top 15

The cloud: a zone with an image store, a XenServer cluster with one host and an NFS pool; ``volumes / 5`` accounts
with CloudStack's default limits (20 snapshots: five volumes keeping three each, plus the five being taken, fit
exactly), each with one Running VM holding five 10 GiB VHD data volumes. Every volume gets an HOURLY policy keeping
3 (``createSnapshotPolicy``), at minute ``1 + i % 59``, so that the polls of an hour spread the jobs (minute 0 is left
out: created at 00:00, such a policy first runs at 01:00 and its 24th run falls after the day). Then the server
starts its background tasks (``Engine.start_background_tasks``: the snapshot scheduler polls every
``snapshot.poll.interval``, 300 s; the storage GC's first run is after ``storage.cleanup.delay``, a day) and the
clock runs a day: ``run(until_ms=start + 24 h)``, then to idle so that the last jobs end. Each policy runs 24
times: ``24 * volumes`` snapshots taken, and retention deletes all but the newest 3 of each volume through the delete
path, ``21 * volumes``. Both counts are checked, and every take job SUCCEEDED.

Measured: the wall time of the day (building the cloud and its policies excluded), snapshots per second, and the
peak memory. Memory is measured two ways. In the timed run, the peak resident set of the process above the resident
set at the day's start (``VmHWM`` after resetting it through ``/proc/self/clear_refs``, minus ``VmRSS``): what the
operating system saw, SQLite's page cache included. With ``--tracemalloc`` (a separate, slower run), the peak of
Python's own allocations during the day above those at its start, and with ``--top`` the places that hold the most
at the end of the day. Live entities at the end are the volumes and their snapshots not deleted: memory per live
entity divides by those. Run each size in its own process (``bench_workflow.py --part day`` does): the memory
measures are per process.
"""

from __future__ import annotations

import argparse
import gc
import json
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from workload import MEMORY, SIZE, Cloud, discard

from snapshotfsm import Engine
from snapshotfsm.store.records import AsyncJob, Snapshot

HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS
PER_ACCOUNT = 5
KEEP = 3
STATUS_FILE = Path("/proc/self/status")


def _kib(field: str) -> int:
    for line in STATUS_FILE.read_text(encoding="ascii").splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in {STATUS_FILE}")


def _reset_peak_rss() -> None:
    """The process's peak resident set (``VmHWM``) back to its current size (Linux: ``clear_refs`` 5)."""
    Path("/proc/self/clear_refs").write_text("5", encoding="ascii")


@dataclass
class Day:
    """What one day did and cost."""

    volumes: int
    database: str
    taken: int
    deleted: int
    live_snapshots: int
    jobs_failed: int
    wall_s: float
    build_s: float
    rss_peak_kib: int
    """The peak resident set during the day above the resident set at its start (0 when not measured)."""
    py_peak_kib: int
    """The peak of Python's allocations during the day above those at its start (``--tracemalloc``; else 0)."""
    top: list[str]

    @property
    def live(self) -> int:
        return self.volumes + self.live_snapshots


def build(where: str, volumes: int) -> Engine:
    """The cloud (``workload.Cloud``), its accounts, VMs and volumes, and an hourly policy per volume.

    The cloud's own account (no limits) holds nothing here: the policies' accounts have CloudStack's defaults.
    """
    cloud = Cloud.open(where)
    engine = cloud.engine
    for a in range(volumes // PER_ACCOUNT):
        account = engine.add_account(f"account{a}")
        vm = engine.add_vm(account, cloud.zone, f"vm{a}", hypervisor="XenServer", host=cloud.host)
        for v in range(PER_ACCOUNT):
            i = a * PER_ACCOUNT + v
            volume = engine.add_volume(account, cloud.pool, f"data{i}", size=SIZE, vm=vm, format="VHD")
            minute = 1 + i % 59  # not 0: created at 00:00, a minute-0 policy's first run would be 01:00
            engine.create_snapshot_policy(volume.id, interval="HOURLY", schedule=str(minute), max_snaps=KEEP)
    return engine


def run_day(where: str, volumes: int, *, trace_memory: bool, top: int) -> Day:
    """Build, then one simulated day of the scheduler; the counts checked, the costs measured."""
    if volumes % PER_ACCOUNT:
        raise ValueError(f"--volumes must be a multiple of {PER_ACCOUNT}")
    began = time.perf_counter()
    engine = build(where, volumes)
    build_s = time.perf_counter() - began
    gc.collect()
    if trace_memory:
        tracemalloc.start()
        py_start = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
    rss_start = _kib("VmRSS")
    _reset_peak_rss()
    began = time.perf_counter()
    engine.start_background_tasks()
    engine.run(until_ms=engine.clock.now_ms + DAY_MS)
    engine.run()
    wall_s = time.perf_counter() - began
    rss_peak = _kib("VmHWM") - rss_start
    py_peak, lines = 0, []
    if trace_memory:
        py_peak = (tracemalloc.get_traced_memory()[1] - py_start) // 1024
        if top:
            stats = tracemalloc.take_snapshot().statistics("lineno")[:top]
            lines = [f"{s.size // 1024:,} KiB in {s.count:,} blocks: {s.traceback[0]}" for s in stats]
        tracemalloc.stop()
    store = engine.store
    taken = store.count(Snapshot, "type_description = 'HOURLY'")
    deleted = store.count(Snapshot, "type_description = 'HOURLY' AND status = 'Destroyed'")
    live = store.count(Snapshot, "status != 'Destroyed' AND removed IS NULL")
    failed = store.count(AsyncJob, "job_status = 2")
    engine.close()
    day = Day(volumes, where, taken, deleted, live, failed, wall_s, build_s, rss_peak, py_peak, lines)
    expected = (24 * volumes, (24 - KEEP) * volumes, KEEP * volumes, 0)
    if (taken, deleted, live, failed) != expected:
        raise RuntimeError(
            f"a day of {volumes} volumes took {taken} snapshots, deleted {deleted}, kept {live}, {failed} jobs"
            f" failed; expected {expected}"
        )
    return day


# --- several days, each in its own process (for bench_workflow.py) ------------------------------------------------


def in_process(volumes: int, *, memory: bool, trace_memory: bool) -> Day:
    """One day in a fresh Python process: its memory measures are its own."""
    command = [sys.executable, str(Path(__file__).with_name("policy_day.py")), "--volumes", str(volumes)]
    command += ["--memory"] * memory + ["--tracemalloc", "--top", "12"] * trace_memory
    done = subprocess.run(command, check=True, capture_output=True, text=True)  # noqa: S603 - our own script
    return Day(**json.loads(done.stdout.strip().splitlines()[-1]))


@dataclass
class Days:
    """The days of each size on one database: the fastest timed run, and the tracemalloc run when made."""

    memory: bool
    timed: dict[int, Day]
    traced: dict[int, Day]

    def ms(self, volumes: int) -> float:
        day = self.timed[volumes]
        return day.wall_s * 1000 / day.taken


def measure_days(sizes: Sequence[int], *, memory: bool, trace_memory: bool) -> Days:
    """Each size's day timed, the smallest before and after the others (the faster kept), then traced if asked."""
    small, *others = sizes
    runs = [small, *others, small]
    timed: dict[int, Day] = {}
    for volumes in runs:
        day = in_process(volumes, memory=memory, trace_memory=False)
        if volumes not in timed or day.wall_s < timed[volumes].wall_s:
            timed[volumes] = day
    traced = {v: in_process(v, memory=memory, trace_memory=True) for v in sizes} if trace_memory else {}
    return Days(memory, timed, traced)


def report_days(all_days: Sequence[Days]) -> None:
    print(
        "| database | volumes | snapshots taken | deleted by retention | live entities | day wall s | snapshots/s "
        "| ms per snapshot | peak RSS growth MiB | KiB per live entity | Python peak MiB | KiB per live entity |"
    )
    print("|---|" + "---:|" * 11)
    for days in all_days:
        for volumes, day in days.timed.items():
            traced = days.traced.get(volumes)
            py = f"{traced.py_peak_kib / 1024:.1f} | {traced.py_peak_kib / traced.live:.1f}" if traced else "- | -"
            print(
                f"| {'memory' if days.memory else 'file (WAL)'} | {volumes:,} | {day.taken:,} | {day.deleted:,} "
                f"| {day.live:,} | {day.wall_s:.1f} | {day.taken / day.wall_s:,.0f} | {days.ms(volumes):.2f} "
                f"| {day.rss_peak_kib / 1024:.1f} | {day.rss_peak_kib / day.live:.1f} | {py} |"
            )
    print()
    for days in all_days:
        small, big = min(days.timed), max(days.timed)
        ratio = days.ms(big) / days.ms(small)
        rss = (days.timed[big].rss_peak_kib / days.timed[big].live) / (
            days.timed[small].rss_peak_kib / days.timed[small].live
        )
        line = (
            f"- {'memory' if days.memory else 'file (WAL)'}: cost per snapshot {big:,} / {small:,} volumes "
            f"**{ratio:.2f}x**; peak RSS per live entity **{rss:.2f}x**"
        )
        if days.traced:
            py = (days.traced[big].py_peak_kib / days.traced[big].live) / (
                days.traced[small].py_peak_kib / days.traced[small].live
            )
            line += f"; Python peak per live entity **{py:.2f}x**"
        print(line)
    for days in all_days:
        for volumes, day in days.traced.items():
            print(
                f"\nWhat Python holds at the end of the {volumes:,}-volume day ({'memory' if days.memory else 'file'}):"
            )
            for row in day.top:
                print(f"    {row}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--volumes", type=int, default=1000, help="volumes, five per account (default 1000)")
    parser.add_argument("--memory", action="store_true", help="a :memory: database instead of a file")
    parser.add_argument("--tracemalloc", action="store_true", help="measure Python's peak allocations (slower)")
    parser.add_argument("--top", type=int, default=0, metavar="N", help="with --tracemalloc: the N biggest holders")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="scale-day-") as tmp:
        where = MEMORY if args.memory else str(Path(tmp) / "day.db")
        day = run_day(where, args.volumes, trace_memory=args.tracemalloc, top=args.top)
        if where != MEMORY:
            discard(where)
    print(json.dumps(asdict(day) | {"database": "memory" if args.memory else "file (WAL)"}))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
