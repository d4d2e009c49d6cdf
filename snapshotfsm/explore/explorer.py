"""The exploration: clean runs find the fault points, every fault is tried at each, the runs are judged and grouped.

1. **Discover**: each instance runs clean once, with a tracing plan: its fault points, and the violations it shows
   without any fault.
2. **Explore**: each fault of the chosen kinds at each point, one run each (a seeded sample of them under a budget).
   An instance's faults run in fixed batches, each in order on one worker, sharing fingerprints: a run that reaches
   a state its batch already explored stops there and takes that outcome, so the report is the same whatever the
   worker count.
3. **Group**: a faulted run's violations that its instance's clean run does not show are the fault's; they are grouped
   by profile, invariant and fault point (clean runs' own violations by profile and invariant).
4. **Shrink**: for each group, its shortest run, then delta debugging over its fault plan and its program
   (:func:`shrink`): the smallest plan, then the fewest steps, that still show the violation with every fault firing.

Work is done by plain functions of picklable jobs, so that local processes (``workers``) or any executor can run them.
"""

from __future__ import annotations

import concurrent.futures
import functools
import random
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

import attrs

from snapshotfsm.errors import InvalidValue, ScenarioError
from snapshotfsm.explore import render
from snapshotfsm.explore.points import KINDS, ExplorePlan, Fault, Point, faults_at
from snapshotfsm.explore.runs import Case, Outcome, execute
from snapshotfsm.explore.scenarios import Instance, choose, default_scenarios_dir, load_scenarios, select
from snapshotfsm.explore.world import World
from snapshotfsm.profiles import get_profile

J = TypeVar("J")
R = TypeVar("R")
NO_FAULT = "(no fault)"
Key = tuple[tuple[Fault, ...], tuple[int, ...]]
"""A shrinking try: the fault plan and the program steps kept."""
BATCH = 96
"""Faults per batch: a batch runs in order on one worker, sharing fingerprints. Fixed, so that the batches (and so
the report) are the same whatever the worker count; small enough to spread a large instance over the workers."""


@attrs.frozen
class Options:
    """What to explore: the profiles, the scenarios (name patterns), the fault kinds, and how.

    ``budget`` caps the faulted runs (a sample drawn with ``seed``; None: every one); ``full`` explores every instance
    of the scenarios instead of the pairwise set; ``scenario_dir`` replaces the project's ``scenarios/``.
    """

    profiles: tuple[str, ...] = ("cloudstack",)
    scenarios: tuple[str, ...] = ()
    kinds: tuple[str, ...] = KINDS
    workers: int = 1
    seed: int = 0
    budget: int | None = None
    full: bool = False
    scenario_dir: str | None = None
    shrink: bool = True

    def check(self) -> None:
        """Refuse what cannot be explored, before anything runs.

        Raises:
            InvalidValue: an unknown profile or fault kind, a worker count or budget below 1.
        """
        for profile in self.profiles:
            get_profile(profile)
        for kind in self.kinds:
            if kind not in KINDS:
                raise InvalidValue("fault kind", kind, f"one of {', '.join(KINDS)}")
        if self.workers < 1:
            raise InvalidValue("workers", self.workers, "at least 1")
        if self.budget is not None and self.budget < 1:
            raise InvalidValue("budget", self.budget, "at least 1 run")


@functools.cache
def _instances(scenario_dir: str | None, full: bool) -> dict[str, Instance]:
    directory = Path(scenario_dir) if scenario_dir is not None else default_scenarios_dir()
    return {i.name: i for i in choose(load_scenarios(directory), full=full)}


def instances_for(options: Options) -> list[Instance]:
    """The instances ``options`` selects, in order.

    Raises:
        ScenarioError: a pattern matches no scenario or instance, or a scenario file is malformed.
    """
    return select(list(_instances(options.scenario_dir, options.full).values()), options.scenarios)


# --- jobs a worker runs --------------------------------------------------------------------------------------------


@attrs.frozen
class Discovery:
    """Run one instance clean, tracing its fault points."""

    instance: str
    profile: str
    seed: int
    scenario_dir: str | None
    full: bool


@attrs.frozen
class Discovered:
    """A clean run's outcome and the fault points it passed."""

    instance: str
    profile: str
    outcome: Outcome
    points: tuple[Point, ...]


def discover(job: Discovery) -> Discovered:
    """A clean run of the instance with a tracing plan."""
    instance = _instances(job.scenario_dir, job.full)[job.instance]
    plan = ExplorePlan(trace=True)
    ran = execute(instance, profile=job.profile, seed=job.seed, plan=plan)
    ran.world.engine.close()
    return Discovered(job.instance, job.profile, ran.outcome, tuple(plan.points or ()))


@attrs.frozen
class Batch:
    """Run faults on one instance, in order, sharing fingerprints."""

    instance: str
    profile: str
    seed: int
    scenario_dir: str | None
    full: bool
    faults: tuple[Fault, ...]


@attrs.frozen
class Judged:
    """One faulted run: the fault, its outcome, and whether a known state cut it short."""

    fault: Fault
    outcome: Outcome
    pruned: bool


def run_batch(job: Batch) -> list[Judged]:
    """Each fault of the batch, one run each, with the batch's shared fingerprints."""
    instance = _instances(job.scenario_dir, job.full)[job.instance]
    seen: dict[str, Outcome] = {}
    out = []
    for fault in job.faults:
        ran = execute(instance, [fault], profile=job.profile, seed=job.seed, seen=seen)
        ran.world.engine.close()
        out.append(Judged(fault, ran.outcome, ran.pruned))
    return out


@attrs.frozen
class Shrink:
    """Find, for each of ``invariants``, the fewest steps of ``case`` that still show it with every fault firing."""

    case: Case
    invariants: tuple[str, ...]
    scenario_dir: str | None
    full: bool
    length: int
    """The case's own length (its run is known: the search starts from it without running it again)."""


@attrs.frozen
class Shown:
    """A counterexample as a user reads it: the invariant's violations, the rows they name, the log, the diagram."""

    violations: tuple[tuple[str, str], ...]
    """``(subject, detail)`` of each violation of the invariant in the minimal run."""
    rows: tuple[tuple[str, dict[str, object]], ...]
    log: tuple[str, ...]
    sequence: str


@attrs.frozen
class Shrunk:
    """A minimal case for one invariant, its length, how many runs its search took, and the run shown."""

    case: Case
    length: int
    runs: int
    shown: Shown | None = None


def shrink(job: Shrink) -> list[Shrunk]:
    """Per invariant, the smallest fault plan, then the fewest program steps, that still show it.

    Delta debugging, one element at a time: first over the fault plan (a crash whose restart also crashes is tried
    as the crash alone), then over the program (one step removed at a time while the run still shows the invariant
    with every fault firing, until no step can go: a 1-minimal program). The invariants share their runs: a plan
    and program tried for one is not run again for another. Every try keeps its timeline, so that the minimal run is
    shown (:class:`Shown`) without being run again.
    """
    instance = _instances(job.scenario_dir, job.full)[job.case.instance]
    tried: dict[Key, tuple[frozenset[str], int] | None] = {
        (job.case.faults, job.case.steps): (frozenset(job.invariants), job.length)
    }
    worlds: dict[Key, World] = {}

    def broken(key: Key) -> tuple[frozenset[str], int] | None:
        if key not in tried:
            faults, steps = key
            ran = execute(instance, faults, steps=steps, profile=job.case.profile, seed=job.case.seed, timeline=True)
            plan = ran.world.engine.faults
            fired = not isinstance(plan, ExplorePlan) or len(plan.fired) >= len(plan.rules) + len(plan.crashes)
            shown = frozenset(v.invariant for v in ran.outcome.violations)
            tried[key] = (shown, ran.outcome.length) if fired else None
            worlds[key] = ran.world
        return tried[key]

    out = []
    for invariant in job.invariants:
        before = len(tried)
        key: Key = (job.case.faults, job.case.steps)
        found = broken(key)
        length = found[1] if found is not None and invariant in found[0] else -1
        if length >= 0:
            key, length = _smaller(key, length, invariant, broken)
        if key not in worlds:
            tried.pop(key)
            broken(key)
        case = attrs.evolve(job.case, faults=key[0], steps=key[1])
        out.append(Shrunk(case, length, len(tried) - before, _show(worlds[key], invariant, str(case))))
    for world in worlds.values():
        world.engine.close()
    return out


def _smaller(
    key: Key, length: int, invariant: str, broken: Callable[[Key], tuple[frozenset[str], int] | None]
) -> tuple[Key, int]:
    """The plan reduced, then the program, while ``invariant`` still shows; and the length of that run."""
    faults, steps = key
    for n, fault in enumerate(faults):
        if fault.kind.startswith("restart_crash:"):
            simpler = (*faults[:n], Fault(fault.point, "crash"), *faults[n + 1 :])
            found = broken((simpler, steps))
            if found is not None and invariant in found[0]:
                faults, length = simpler, found[1]
    changed = True
    while changed:
        changed = False
        for i in reversed(range(len(steps))):
            fewer = steps[:i] + steps[i + 1 :]
            found = broken((faults, fewer))
            if found is not None and invariant in found[0]:
                steps, length, changed = fewer, found[1], True
                break
    return (faults, steps), length


def _show(world: World, invariant: str, title: str) -> Shown:
    store = world.engine.store
    mine = [v for v in world.judge() if v.invariant == invariant]
    rows = tuple(row for v in mine for row in render.offending_rows(store, v))
    return Shown(
        tuple((v.subject, v.detail) for v in mine),
        rows,
        tuple(render.log_lines(store)),
        render.sequence_diagram(store, world.record.timeline, title=title),
    )


# --- the exploration -----------------------------------------------------------------------------------------------


@attrs.frozen
class Member:
    """A run in a group: its case and length."""

    case: Case
    length: int
    order: int


@attrs.define
class Group:
    """Runs that break one invariant with a fault at one point (of any kind), under one profile.

    ``kinds`` are the fault kinds that showed it there; clean runs' own violations are a group at ``(no fault)``.
    """

    profile: str
    invariant: str
    point: str
    members: list[Member] = attrs.field(factory=list)
    instances: set[str] = attrs.field(factory=set)
    kinds: set[str] = attrs.field(factory=set)
    minimal: Shrunk | None = None

    @property
    def key(self) -> tuple[str, str, str]:
        """How groups sort: profile, invariant, point."""
        return (self.profile, self.invariant, self.point)

    def shortest(self) -> Member:
        """The shortest run (the earliest of equals)."""
        return min(self.members, key=lambda m: (m.length, m.order))


@attrs.define
class Exploration:
    """Everything an exploration found, before it is rendered (:mod:`snapshotfsm.explore.report`)."""

    options: Options
    instances: list[Instance]
    clean: dict[tuple[str, str], Discovered]
    judged: dict[tuple[str, str], list[Judged]]
    groups: list[Group]
    stats: dict[str, float]


Progress = Callable[[str, int, int], None]
"""Told ``(phase, done, total)`` as work completes."""


def explore(
    options: Options, *, progress: Progress | None = None, executor: concurrent.futures.Executor | None = None
) -> Exploration:
    """Run the exploration ``options`` describe.

    ``executor`` runs the jobs (default: ``options.workers`` local processes, or this process for one worker).

    Raises:
        InvalidValue: ``options`` asks for what cannot be explored.
        ScenarioError: a scenario pattern matches nothing, or a scenario file is malformed.
    """
    options.check()
    started = time.perf_counter()
    instances = instances_for(options)
    if not instances:
        raise ScenarioError("--scenario", ",".join(options.scenarios), "selects no instance")
    phases: dict[str, float] = {}
    last = started

    def tell(phase: str, done: int, total: int) -> None:
        nonlocal last
        if done == total:
            now = time.perf_counter()
            phases[f"{phase}_seconds"] = round(now - last, 3)
            last = now
        if progress is not None:
            progress(phase, done, total)

    own = executor is None and options.workers > 1
    pool = concurrent.futures.ProcessPoolExecutor(options.workers) if own else executor
    try:
        discoveries = [
            Discovery(i.name, p, options.seed, options.scenario_dir, options.full)
            for p in options.profiles
            for i in instances
        ]
        clean = {(d.profile, d.instance): d for d in _map(pool, discover, discoveries, "discover", tell)}
        chosen = _choose_faults(options, instances, clean)
        batches = [
            Batch(name, profile, options.seed, options.scenario_dir, options.full, tuple(faults[n : n + BATCH]))
            for (profile, name), faults in chosen.items()
            for n in range(0, len(faults), BATCH)
        ]
        results = _map(pool, run_batch, batches, "explore", tell)
        judged: dict[tuple[str, str], list[Judged]] = {}
        for batch, result in zip(batches, results, strict=True):
            judged.setdefault((batch.profile, batch.instance), []).extend(result)
        groups = _group(options, instances, clean, judged)
        shrink_runs = 0
        if options.shrink:
            by_case: dict[Case, list[Group]] = {}
            for group in groups:
                by_case.setdefault(group.shortest().case, []).append(group)
            jobs = [
                Shrink(
                    case,
                    tuple(g.invariant for g in same),
                    options.scenario_dir,
                    options.full,
                    same[0].shortest().length,
                )
                for case, same in by_case.items()
            ]
            for same, found in zip(by_case.values(), _map(pool, shrink, jobs, "shrink", tell), strict=True):
                for group, shrunk in zip(same, found, strict=True):
                    group.minimal = shrunk
                    shrink_runs += shrunk.runs
    finally:
        if own and pool is not None:
            pool.shutdown()
    seconds = time.perf_counter() - started
    executed = sum(not j.pruned for r in judged.values() for j in r)
    pruned = sum(j.pruned for r in judged.values() for j in r)
    total = len(clean) + executed + pruned + shrink_runs
    stats = {
        "workers": float(options.workers),
        "seconds": round(seconds, 3),
        "clean_runs": float(len(clean)),
        "faulted_runs": float(executed + pruned),
        "executed": float(executed),
        "pruned": float(pruned),
        "shrink_runs": float(shrink_runs),
        "runs_per_second": round(total / seconds, 1) if seconds else 0.0,
        **phases,
    }
    return Exploration(options, instances, clean, judged, groups, stats)


def _map(
    pool: concurrent.futures.Executor | None,
    fn: Callable[[J], R],
    jobs: Sequence[J],
    phase: str,
    tell: Progress,
) -> list[R]:
    """``fn`` over ``jobs``, results in the jobs' order, telling progress as each completes."""
    tell(phase, 0, len(jobs))
    if pool is None:
        out = []
        for n, job in enumerate(jobs, 1):
            out.append(fn(job))
            tell(phase, n, len(jobs))
        return out
    futures: dict[int, concurrent.futures.Future[R]] = {}
    for n in sorted(range(len(jobs)), key=lambda n: -_weight(jobs[n])):
        futures[n] = pool.submit(fn, jobs[n])
    for n, _ in enumerate(concurrent.futures.as_completed(futures.values()), 1):
        tell(phase, n, len(jobs))
    return [futures[n].result() for n in range(len(jobs))]


def _weight(job: object) -> int:
    """A job's rough cost, so that the longest start first and the workers finish together (results keep order)."""
    if isinstance(job, Batch):
        steps = _instances(job.scenario_dir, job.full)[job.instance].scenario.steps
        return len(job.faults) * (1 + len(steps))
    if isinstance(job, Shrink):
        return len(job.case.steps) * len(job.invariants)
    return 1


def _choose_faults(
    options: Options, instances: Sequence[Instance], clean: dict[tuple[str, str], Discovered]
) -> dict[tuple[str, str], list[Fault]]:
    """Every fault of the chosen kinds at each point of each clean run; under a budget, a seeded sample of them."""
    every: list[tuple[str, str, Fault]] = []
    for profile in options.profiles:
        for instance in instances:
            found = clean[(profile, instance.name)]
            quiescence = len(instance.scenario.steps)
            points = [p for p in found.points if not (p.step == quiescence and p.kind in ("event", "write"))]
            for fault in faults_at(points, options.kinds, servers=instance.servers):
                if fault.kind == "node_left" and fault.point.step == quiescence:
                    continue
                every.append((profile, instance.name, fault))
    if options.budget is not None and options.budget < len(every):
        order = list(range(len(every)))
        random.Random(options.seed).shuffle(order)  # noqa: S311 - a sample, not a secret
        keep = set(order[: options.budget])
        every = [f for n, f in enumerate(every) if n in keep]
    chosen: dict[tuple[str, str], list[Fault]] = {(p, i.name): [] for p in options.profiles for i in instances}
    for profile, name, fault in every:
        chosen[(profile, name)].append(fault)
    return chosen


def _group(
    options: Options,
    instances: Sequence[Instance],
    clean: dict[tuple[str, str], Discovered],
    judged: dict[tuple[str, str], list[Judged]],
) -> list[Group]:
    groups: dict[tuple[str, str, str], Group] = {}
    order = 0

    def add(key: tuple[str, str, str], kind: str, case: Case, length: int, instance: str) -> None:
        nonlocal order
        group = groups.setdefault(key, Group(*key))
        group.members.append(Member(case, length, order))
        group.instances.add(instance)
        group.kinds.add(kind)
        order += 1

    for profile in options.profiles:
        for instance in instances:
            steps = tuple(range(len(instance.scenario.steps)))
            found = clean[(profile, instance.name)]
            base = Case(instance.name, steps, (), profile, options.seed)
            for invariant in sorted({v.invariant for v in found.outcome.violations}):
                add((profile, invariant, NO_FAULT), "none", base, found.outcome.length, instance.name)
            before = found.outcome.broken()
            for run in judged.get((profile, instance.name), []):
                new = {inv for inv, subject in run.outcome.broken() - before}
                case = Case(instance.name, steps, (run.fault,), profile, options.seed)
                for invariant in sorted(new):
                    add(
                        (profile, invariant, run.fault.point.label),
                        run.fault.kind,
                        case,
                        run.outcome.length,
                        instance.name,
                    )
    return sorted(groups.values(), key=lambda g: g.key)


def exercised(exploration: Exploration) -> dict[str, set[tuple[str, str, str, str]]]:
    """Per profile, every transition some run of the exploration made."""
    out: dict[str, set[tuple[str, str, str, str]]] = {p: set() for p in exploration.options.profiles}
    for (profile, _), found in exploration.clean.items():
        out[profile] |= found.outcome.exercised
    for (profile, _), runs in exploration.judged.items():
        for run in runs:
            out[profile] |= run.outcome.exercised
    return out


def matrix(exploration: Exploration) -> dict[str, dict[str, int]]:
    """Invariant by profile: how many runs broke it (a faulted run counted for what its fault added)."""
    out: dict[str, dict[str, int]] = {}
    for group in exploration.groups:
        row = out.setdefault(group.invariant, dict.fromkeys(exploration.options.profiles, 0))
        row[group.profile] += len(group.members)
    return dict(sorted(out.items()))
