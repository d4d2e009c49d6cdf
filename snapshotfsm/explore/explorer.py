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

Work is done by plain functions of picklable jobs, so that local processes (``workers``), a Dask cluster (``dask``,
:mod:`snapshotfsm.explore.cluster`) or any executor can run them.
"""

from __future__ import annotations

import concurrent.futures
import random
import time
from collections.abc import Callable, Sequence
from typing import TypeVar

import attrs

from snapshotfsm.errors import InvalidValue, ScenarioError
from snapshotfsm.explore import cluster
from snapshotfsm.explore.points import KINDS, ExplorePlan, Fault, Point, faults_at, plan_for
from snapshotfsm.explore.races import preemptions, window
from snapshotfsm.explore.runs import Case, Outcome, execute
from snapshotfsm.explore.scenarios import Instance, instances_named, select
from snapshotfsm.explore.shrink import Shrink, Shrunk, shrink
from snapshotfsm.profiles import get_profile

J = TypeVar("J")
R = TypeVar("R")
NO_FAULT = "(no fault)"
BATCH = 96
"""Faults per batch: a batch runs in order on one worker, sharing fingerprints. Fixed, so that the batches (and so
the report) are the same whatever the worker count; small enough to spread a large instance over the workers."""


@attrs.frozen
class Options:
    """What to explore: the profiles, the scenarios (name patterns), the fault kinds, and how.

    ``budget`` caps the faulted runs (a sample drawn with ``seed``; None: every one); ``full`` explores every instance
    of the scenarios instead of the pairwise set; ``scenario_dir`` replaces the project's ``scenarios/``. ``dask``
    is a Dask scheduler's address (``tcp://host:8786``): its workers run the jobs instead of local processes, so
    ``workers`` must stay 1 (a cluster's size is its own; ``docs/explore.md``, "Beyond one machine").
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
    dask: str | None = None
    preemptions: int = 2
    """Schedules on contending scenarios: every one with at most this many preemptions (0: none)."""

    def check(self) -> None:
        """Refuse what cannot be explored, before anything runs.

        Raises:
            InvalidValue: an unknown profile or fault kind, a worker count or budget below 1, an empty Dask
                address, or a worker count above 1 with one.
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
        if self.dask is not None and not self.dask.strip():
            raise InvalidValue("dask", self.dask, "a Dask scheduler's address such as tcp://host:8786")
        if self.dask is not None and self.workers != 1:
            raise InvalidValue(
                "workers",
                self.workers,
                "1 with dask",
                message=f"workers={self.workers} and dask exclude each other: the Dask cluster's own workers run the "
                "jobs (dask worker --nworkers N gives it more)",
            )
        if self.preemptions < 0:
            raise InvalidValue("preemptions", self.preemptions, "0 (no schedules) or more")


def instances_for(options: Options) -> list[Instance]:
    """The instances ``options`` selects, in order.

    Raises:
        ScenarioError: a pattern matches no scenario or instance, or a scenario file is malformed.
    """
    return select(list(instances_named(options.scenario_dir, options.full).values()), options.scenarios)


# --- jobs a worker runs --------------------------------------------------------------------------------------------


@attrs.frozen
class Discovery:
    """Run one instance clean, tracing its fault points."""

    instance: str
    profile: str
    seed: int
    scenario_dir: str | None
    full: bool
    races: bool = False
    """Trace its interleaving points too (a contending scenario, when schedules are explored)."""


@attrs.frozen
class Discovered:
    """A clean run's outcome, the fault points it passed, and the preemptions worth trying in it."""

    instance: str
    profile: str
    outcome: Outcome
    points: tuple[Point, ...]
    schedules: tuple[Fault, ...] = ()


def discover(job: Discovery) -> Discovered:
    """A clean run of the instance with a tracing plan."""
    instance = instances_named(job.scenario_dir, job.full)[job.instance]
    plan = ExplorePlan(trace=True, races=job.races)
    ran = execute(instance, profile=job.profile, seed=job.seed, plan=plan)
    ran.world.engine.close()
    schedules = preemptions(plan.accesses or [], before_step=len(instance.scenario.steps))
    return Discovered(job.instance, job.profile, ran.outcome, tuple(plan.points or ()), tuple(schedules))


Plan = tuple[Fault, ...]
"""What one run injects: a fault, or a schedule's preemptions in the order they happen."""


@attrs.frozen
class Batch:
    """Run plans on one instance, in order, sharing fingerprints.

    With ``extend``, each schedule's run is traced for the preemptions that could follow its last one.
    """

    instance: str
    profile: str
    seed: int
    scenario_dir: str | None
    full: bool
    plans: tuple[Plan, ...]
    extend: bool = False


@attrs.frozen
class Judged:
    """One run: its plan, its outcome, whether a known state cut it short, and the preemptions that may follow."""

    faults: Plan
    outcome: Outcome
    pruned: bool
    extensions: tuple[Fault, ...] = ()

    @property
    def schedule(self) -> bool:
        """Whether the run is a schedule (its plan preempts) rather than a fault's."""
        return self.faults[0].choice is not None


def run_batch(job: Batch) -> list[Judged]:
    """Each plan of the batch, one run each, with the batch's shared fingerprints."""
    instance = instances_named(job.scenario_dir, job.full)[job.instance]
    steps = len(instance.scenario.steps)
    seen: dict[str, Outcome] = {}
    out = []
    for faults in job.plans:
        extend = job.extend and faults[-1].choice is not None
        plan = plan_for(faults, races=extend)
        ran = execute(instance, faults, profile=job.profile, seed=job.seed, seen=seen, plan=plan)
        ran.world.engine.close()
        more: tuple[Fault, ...] = ()
        if extend and not ran.pruned and plan.all_fired() and plan.accesses is not None:
            last = plan.preempted[-1]
            end = window(plan.accesses, last)
            more = tuple(preemptions(plan.accesses, before_step=steps, after=last, until=end))
        out.append(Judged(faults, ran.outcome, ran.pruned, more))
    return out


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

    ``executor`` runs the jobs (default: the Dask cluster at ``options.dask``, else ``options.workers`` local
    processes, or this process for one worker).

    Raises:
        InvalidValue: ``options`` asks for what cannot be explored.
        ScenarioError: a scenario pattern matches nothing, or a scenario file is malformed.
        MissingExtra: ``options.dask`` is set and ``distributed`` is not installed.
        ClusterError: the Dask cluster cannot be reached or would not explore as this machine does.
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

    own = executor is None and (options.workers > 1 or options.dask is not None)
    pool = _pool(options) if own else executor
    try:
        races = options.preemptions > 0
        discoveries = [
            Discovery(i.name, p, options.seed, options.scenario_dir, options.full, races and i.scenario.contending)
            for p in options.profiles
            for i in instances
        ]
        clean = {(d.profile, d.instance): d for d in _map(pool, discover, discoveries, "discover", tell)}
        judged = _run_rounds(options, _choose_faults(options, instances, clean), pool, tell)
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
    schedules = sum(j.schedule for r in judged.values() for j in r)
    total = len(clean) + executed + pruned + shrink_runs
    stats = {
        "workers": float(pool.workers if isinstance(pool, cluster.DaskPool) else options.workers),
        "seconds": round(seconds, 3),
        "clean_runs": float(len(clean)),
        "faulted_runs": float(executed + pruned - schedules),
        "schedules": float(schedules),
        "executed": float(executed),
        "pruned": float(pruned),
        "shrink_runs": float(shrink_runs),
        "runs_per_second": round(total / seconds, 1) if seconds else 0.0,
        **phases,
    }
    return Exploration(options, instances, clean, judged, groups, stats)


def _pool(options: Options) -> concurrent.futures.Executor:
    """The Dask cluster at ``options.dask`` (checked before any job goes there), else local processes."""
    if options.dask is not None:
        return cluster.connect(options.dask, options.scenario_dir, options.full)
    return concurrent.futures.ProcessPoolExecutor(options.workers)


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


def _run_rounds(
    options: Options,
    chosen: dict[tuple[str, str], list[Plan]],
    pool: concurrent.futures.Executor | None,
    tell: Progress,
) -> dict[tuple[str, str], list[Judged]]:
    """Run the chosen plans in batches, then extend the schedules round by round.

    Up to ``options.preemptions``, each schedule is extended by one more preemption after its last (those its own
    run suggests), within what is left of the budget.
    """
    judged: dict[tuple[str, str], list[Judged]] = {}
    todo, depth, spent = chosen, 1, 0
    while any(todo.values()):
        extend = depth < options.preemptions
        batches = [
            Batch(name, profile, options.seed, options.scenario_dir, options.full, tuple(plans[n : n + BATCH]), extend)
            for (profile, name), plans in todo.items()
            for n in range(0, len(plans), BATCH)
        ]
        results = _map(pool, run_batch, batches, "explore" if depth == 1 else f"schedules_{depth}", tell)
        todo = {}
        for batch, result in zip(batches, results, strict=True):
            judged.setdefault((batch.profile, batch.instance), []).extend(result)
            spent += len(result)
            for run in result:
                for more in run.extensions:
                    todo.setdefault((batch.profile, batch.instance), []).append((*run.faults, more))
        if options.budget is not None:
            todo = _sample(todo, options.budget - spent, options.seed)
        depth += 1
    return judged


def _sample(todo: dict[tuple[str, str], list[Plan]], room: int, seed: int) -> dict[tuple[str, str], list[Plan]]:
    """At most ``room`` of the plans, a seeded sample, each instance's in their order."""
    every = [(key, plan) for key, plans in todo.items() for plan in plans]
    if len(every) <= room:
        return todo
    order = list(range(len(every)))
    random.Random(seed).shuffle(order)  # noqa: S311 - a sample, not a secret
    keep = set(order[: max(room, 0)])
    out: dict[tuple[str, str], list[Plan]] = {}
    for n, (key, plan) in enumerate(every):
        if n in keep:
            out.setdefault(key, []).append(plan)
    return out


def _weight(job: object) -> int:
    """A job's rough cost, so that the longest start first and the workers finish together (results keep order)."""
    if isinstance(job, Batch):
        steps = instances_named(job.scenario_dir, job.full)[job.instance].scenario.steps
        return len(job.plans) * (1 + len(steps))
    if isinstance(job, Shrink):
        return len(job.case.steps) * len(job.invariants)
    return 1


def _choose_faults(
    options: Options, instances: Sequence[Instance], clean: dict[tuple[str, str], Discovered]
) -> dict[tuple[str, str], list[Plan]]:
    """Every fault of the chosen kinds at each point of each clean run; under a budget, a seeded sample of them.

    Quiescence is the judge's own procedure, not part of the program: of the points a clean run passes in it, the
    restart phases and background ticks are explored (a crash there is a crash during a restart's cleanup or a
    tick), but not the events and writes of the workflows it runs (in the default set, only the storage GC's pass,
    444 faults: the GC's workflow is explored where a program runs it, as the policy scenarios do), nor ``node_left``,
    which quiescence would undo by restarting every server.
    """
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
            if options.preemptions > 0:
                every.extend((profile, instance.name, fault) for fault in found.schedules)
    chosen: dict[tuple[str, str], list[Plan]] = {(p, i.name): [] for p in options.profiles for i in instances}
    for profile, name, fault in every:
        chosen[(profile, name)].append((fault,))
    return chosen if options.budget is None else _sample(chosen, options.budget, options.seed)


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
            runs = judged.get((profile, instance.name), [])
            broke = {run.faults: run.outcome.broken() for run in runs}
            for run in runs:
                new = {inv for inv, subject in run.outcome.broken() - before - broke.get(run.faults[:-1], set())}
                case = Case(instance.name, steps, run.faults, profile, options.seed)
                point = " then ".join(f.point.label for f in run.faults)
                for invariant in sorted(new):
                    add((profile, invariant, point), run.faults[-1].kind, case, run.outcome.length, instance.name)
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
