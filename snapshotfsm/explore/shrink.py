"""Shrinking a group's shortest run to a minimal counterexample, and showing it.

Delta debugging, one element at a time (:func:`shrink`): first over the fault plan, then over the program. The
minimal run is kept with its timeline, so that it is shown (:class:`Shown`: its violations, the rows they name, its
transition log, its sequence diagram) without being run again.
"""

from __future__ import annotations

from collections.abc import Callable

import attrs

from snapshotfsm.explore import render
from snapshotfsm.explore.points import ExplorePlan, Fault
from snapshotfsm.explore.runs import Case, execute
from snapshotfsm.explore.scenarios import instances_named
from snapshotfsm.explore.world import World

Key = tuple[tuple[Fault, ...], tuple[int, ...]]
"""A shrinking try: the fault plan and the program steps kept."""


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

    Delta debugging, one element at a time: first over the fault plan (a schedule's preemptions one at a time, a
    crash whose restart also crashes as the crash alone), then over the program (one step removed at a time while
    the run still shows the invariant with every fault firing, until no step can go: a 1-minimal program). The
    invariants share their runs: a plan and program tried for one is not run again for another. Every try keeps its
    timeline, so that the minimal run is shown (:class:`Shown`) without being run again.
    """
    instance = instances_named(job.scenario_dir, job.full)[job.case.instance]
    tried: dict[Key, tuple[frozenset[str], int] | None] = {
        (job.case.faults, job.case.steps): (frozenset(job.invariants), job.length)
    }
    worlds: dict[Key, World] = {}

    def broken(key: Key) -> tuple[frozenset[str], int] | None:
        if key not in tried:
            faults, steps = key
            ran = execute(instance, faults, steps=steps, profile=job.case.profile, seed=job.case.seed, timeline=True)
            plan = ran.world.engine.faults
            fired = not isinstance(plan, ExplorePlan) or plan.all_fired()
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
    n = 0
    while len(faults) > 1 and n < len(faults):  # a schedule's preemptions, one at a time
        fewer_faults = faults[:n] + faults[n + 1 :]
        found = broken((fewer_faults, steps))
        if found is not None and invariant in found[0]:
            faults, length = fewer_faults, found[1]
            continue
        n += 1
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
