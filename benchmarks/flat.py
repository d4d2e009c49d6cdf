"""Is the cost of a take flat in the size of the history? 1,000 takes on top of 100 and of 100,000 snapshots.

For each configuration (attached or detached, file or memory) and each history size, a cloud is built, a sample of
100 snapshots is taken through the workflow and cloned in bulk up to the history size (``preload.py``), the volumes
of the timed takes are added, and the file is checkpointed. Both databases stay open; rounds of 1,000 takes
(``create_snapshot`` then ``run``, each of a fresh volume, as in ``bench_workflow.py``) alternate between them, so
that both sizes meet the same neighbours on a shared machine, and the fastest round of each is kept. The history
grows by 1,000 snapshots per round (100, 1,100, 2,100 ...; 100,000, 101,000 ...): the small size stays small.

``--full`` also takes the whole history through the workflow, once per configuration: 100,000 takes in blocks of
10,000 (each block's volumes added untimed before it), and reports the cost of each block, the first against the
last. That checks the cloned history against a real one, at ten minutes or more per configuration.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from preload import Preloaded, marks, preload, sample
from workload import MEMORY, Cloud, Setup, check_taken, discard, take

SAMPLE = 100
"""Snapshots taken through the workflow and cloned: a history is a multiple of it."""


@dataclass
class Sized:
    """One history size of one configuration: its open cloud, the volumes left for timed takes, the rounds."""

    history: int
    cloud: Cloud
    fresh: list[int]
    preloaded: Preloaded
    seconds: list[float] = field(default_factory=list)

    def ms(self, takes: int) -> float:
        return min(self.seconds) * 1000 / takes


def prepare(setup: Setup, where: str, history: int, takes: int, rounds: int) -> Sized:
    """A cloud with ``history`` snapshots behind it and ``takes * rounds`` fresh volumes for the timed rounds."""
    cloud = Cloud.open(where)
    store = cloud.engine.store
    before = marks(store)
    taken = take(cloud.engine, cloud.volumes(SAMPLE, attached=setup.attached))
    check_taken(cloud.engine, taken)
    loaded = preload(store, sample(store, before, SAMPLE), history)
    fresh = cloud.volumes(takes * rounds, attached=setup.attached)
    cloud.checkpoint()
    return Sized(history, cloud, fresh, loaded)


@dataclass
class FlatResult:
    """One configuration: each history size's best round."""

    setup: Setup
    takes: int
    sizes: list[Sized]

    def ratio(self) -> float:
        return self.sizes[-1].ms(self.takes) / self.sizes[0].ms(self.takes)


def measure(setup: Setup, tmp: Path, histories: Sequence[int], takes: int, rounds: int) -> FlatResult:
    """Prepare every size, then interleaved rounds of ``takes`` takes on each; the databases are removed after."""
    paths = [MEMORY if setup.memory else str(tmp / f"flat{h}.db") for h in histories]
    sizes = [prepare(setup, where, h, takes, rounds) for where, h in zip(paths, histories, strict=True)]
    try:
        for r in range(rounds):
            for sized in sizes:
                volumes = sized.fresh[r * takes : (r + 1) * takes]
                gc.collect()
                began = time.perf_counter()
                taken = take(sized.cloud.engine, volumes)
                sized.seconds.append(time.perf_counter() - began)
                check_taken(sized.cloud.engine, taken)
    finally:
        for sized, where in zip(sizes, paths, strict=True):
            sized.cloud.engine.close()
            if where != MEMORY:
                discard(where)
    return FlatResult(setup, takes, sizes)


def report(results: Sequence[FlatResult]) -> None:
    first = results[0]
    heads = " | ".join(f"N = {s.history:,} ms/snapshot" for s in first.sizes)
    print(f"| configuration | {heads} | largest / smallest | rows preloaded (largest) | preload s | preload rows/s |")
    print("|---|" + "---:|" * (len(first.sizes) + 4))
    for r in results:
        cells = " | ".join(f"{s.ms(r.takes):.2f}" for s in r.sizes)
        big = r.sizes[-1].preloaded
        print(
            f"| {r.setup.label} | {cells} | **{r.ratio():.2f}x** | {big.rows:,} | {big.seconds:.1f} "
            f"| {big.rows / big.seconds if big.seconds else 0:,.0f} |"
        )


@dataclass
class FullResult:
    """The whole history through the workflow: seconds per block of takes."""

    setup: Setup
    block: int
    seconds: list[float]

    def ms(self, i: int) -> float:
        return self.seconds[i] * 1000 / self.block


def full(setup: Setup, tmp: Path, total: int, block: int) -> FullResult:
    """``total`` takes through the workflow in blocks of ``block``, each block's volumes added untimed before it."""
    where = MEMORY if setup.memory else str(tmp / "full.db")
    cloud = Cloud.open(where)
    seconds: list[float] = []
    try:
        for _ in range(total // block):
            volumes = cloud.volumes(block, attached=setup.attached)
            cloud.checkpoint()
            gc.collect()
            began = time.perf_counter()
            taken = take(cloud.engine, volumes)
            seconds.append(time.perf_counter() - began)
            check_taken(cloud.engine, taken)
    finally:
        cloud.engine.close()
        if where != MEMORY:
            discard(where)
    return FullResult(setup, block, seconds)


def report_full(results: Sequence[FullResult]) -> None:
    blocks = len(results[0].seconds)
    block = results[0].block
    heads = " | ".join(f"{(i + 1) * block // 1000:,}k" for i in range(blocks))
    print(f"| configuration | {heads} | last / first | total s |")
    print("|---|" + "---:|" * (blocks + 2))
    for r in results:
        cells = " | ".join(f"{r.ms(i):.2f}" for i in range(blocks))
        print(f"| {r.setup.label} | {cells} | **{r.ms(blocks - 1) / r.ms(0):.2f}x** | {sum(r.seconds):.0f} |")
