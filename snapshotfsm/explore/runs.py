"""One run: an instance's program with faults injected, quiesced and judged; and its replayable description.

A run is deterministic from its :class:`Case` (instance, steps kept, faults, profile, seed): replaying the case gives
the same database and the same violations. After the step in which its fault fired, the world's fingerprint
(:mod:`snapshotfsm.explore.fingerprint`) is looked up among those of runs already explored: a match means the same
future, so the run stops there and takes that run's outcome.
"""

from __future__ import annotations

from collections.abc import MutableMapping, Sequence

import attrs

from snapshotfsm.errors import InvalidValue
from snapshotfsm.explore.fingerprint import fingerprint
from snapshotfsm.explore.points import (
    CLEANUP_CRASH_PHASES,
    DRIVER_KINDS,
    KINDS,
    PREEMPT,
    ExplorePlan,
    Fault,
    Point,
    crash_kind,
    plan_for,
)
from snapshotfsm.explore.scenarios import Instance
from snapshotfsm.explore.world import OnCrash, World
from snapshotfsm.invariants import Violation


@attrs.frozen
class Outcome:
    """What a run came to: the invariants it breaks, the transitions it made, its length, whether it settled."""

    violations: tuple[Violation, ...]
    exercised: frozenset[tuple[str, str, str, str]]
    """``(machine, source, event, dest)`` of every transition the run's machines made by an event."""
    length: int
    """How many transitions the run logged (its ``transition_log`` rows), quiescence included."""
    settled: bool
    """False when something still waits for an answer that will never come."""

    def broken(self) -> set[tuple[str, str]]:
        """``(invariant, subject)`` of each violation."""
        return {(v.invariant, v.subject) for v in self.violations}


@attrs.frozen
class Case:
    """A run to replay: the instance, the program steps kept (indices), the faults, the profile and the seed.

    ``str(case)`` is one line that :meth:`parse` reads back: ``snapshotfsm explore --replay '<case>'``.
    """

    instance: str
    steps: tuple[int, ...]
    faults: tuple[Fault, ...]
    profile: str = "cloudstack"
    seed: int = 0

    def __str__(self) -> str:
        faults = " ".join(_fault_text(f) for f in self.faults) or "none"
        steps = ",".join(str(s + 1) for s in self.steps) or "none"
        return f"{self.instance} steps={steps} faults={faults} profile={self.profile} seed={self.seed}"

    @classmethod
    def parse(cls, text: str) -> Case:
        """Read back what :meth:`__str__` wrote.

        Raises:
            InvalidValue: the text is not ``INSTANCE steps=N,... faults=KIND@POINT@N[/msK] ... profile=P seed=S``.
        """
        expected = (
            "INSTANCE steps=1,2 faults=KIND@POINT@N[/msK] ... profile=NAME seed=N (as explore prints it; a "
            "preemption is preempt:K@STEP@M@N[/msK])"
        )
        words = text.split()
        if not words or "=" in words[0]:
            raise InvalidValue("replay case", text, expected)
        instance, fields, faults = words[0], {}, []
        key = ""
        for word in words[1:]:
            if "=" in word:
                key, _, value = word.partition("=")
                if key not in ("steps", "faults", "profile", "seed"):
                    raise InvalidValue("replay case", text, expected, message=f"replay case: unknown field {key!r}")
                fields[key] = value
                word = value  # noqa: PLW2901 - the first fault shares the word with its key
                if key != "faults":
                    continue
            if key != "faults":
                raise InvalidValue("replay case", text, expected)
            if word != "none":
                faults.append(_parse_fault(word, text, expected))
        steps_text = fields.get("steps", "none")
        seed_text = fields.get("seed", "0")
        numbers = [s for s in steps_text.split(",") if s != "none"]
        if not seed_text.isdigit() or not all(s.isdigit() and int(s) >= 1 for s in numbers):
            raise InvalidValue("replay case", text, expected)
        steps = tuple(int(s) - 1 for s in steps_text.split(",") if s != "none")
        return cls(instance, steps, tuple(faults), fields.get("profile", "cloudstack"), int(seed_text))


def _fault_text(fault: Fault) -> str:
    ms = f"/ms{fault.point.ms}" if fault.point.ms is not None else ""
    return f"{fault.kind}@{fault.point.name}@{fault.point.nth}{ms}"


def _parse_fault(word: str, text: str, expected: str) -> Fault:
    kind, _, rest = word.partition("@")
    name, _, count = rest.rpartition("@")
    count, slash, ms = count.partition("/ms")
    base, colon, phase = kind.partition(":")
    restart = base == "restart_crash"
    known = (bool(colon) and phase in CLEANUP_CRASH_PHASES) if restart else (base in KINDS and not colon)
    if base == PREEMPT:
        known = phase.isdigit() and "@" in name
    if not known or not name or not count.isdigit() or (slash and not ms.isdigit()):
        raise InvalidValue("replay case", text, expected, message=f"replay case: {word!r} is not KIND@POINT@N[/msK]")
    point_kind = "call" if kind in DRIVER_KINDS else "access" if base == PREEMPT else crash_kind(name)
    return Fault(Point(0, point_kind, name, int(count), int(ms) if ms else None), kind)


@attrs.define
class Ran:
    """A run's outcome, whether it was cut short by a known state (``pruned``), and the world it left."""

    outcome: Outcome
    pruned: bool
    world: World


def execute(
    instance: Instance,
    faults: Sequence[Fault] = (),
    *,
    steps: Sequence[int] | None = None,
    profile: str = "cloudstack",
    seed: int = 0,
    seen: MutableMapping[str, Outcome] | None = None,
    timeline: bool = False,
    plan: ExplorePlan | None = None,
) -> Ran:
    """Run ``instance``'s program (``steps``: the indices kept, default all) with ``faults``, quiesce, judge.

    With ``seen``, the state after the step in which the first fault fired is fingerprinted: when ``seen`` has it,
    the run stops there and takes that outcome; otherwise the run goes on and its outcome is noted under it. (A
    fault in the last step is not fingerprinted: only quiescence would be saved, which costs about what a
    fingerprint does.) ``plan`` replaces the plan built from ``faults`` (a tracing plan, for a clean run).
    """
    plan = plan if plan is not None else plan_for(faults)
    on_crash: OnCrash = "node_left" if any(f.kind == "node_left" for f in faults) else "restart"
    world = World(instance, profile=profile, seed=seed, faults=plan, on_crash=on_crash, timeline=timeline, arm=plan.arm)
    program = list(range(len(instance.scenario.steps))) if steps is None else list(steps)
    passed: list[str] = []
    for position, index in enumerate(program):
        plan.step = index
        world.run_step(index)
        rest = tuple(program[position + 1 :])
        if seen is None or not (plan.fired or plan.preempted) or passed or not rest:
            continue
        future = (instance.name, profile, rest, plan.unfired(), on_crash, world.jobs)
        print_ = fingerprint(world.servers.values(), extra=(future, sorted(world.taken_over)))
        known = seen.get(print_)
        if known is not None:
            return Ran(known, pruned=True, world=world)
        passed.append(print_)
    plan.step = len(instance.scenario.steps)
    report = world.quiesce()
    outcome = judge(world, settled=report.settled)
    if seen is not None:
        for print_ in passed:
            seen[print_] = outcome
    return Ran(outcome, pruned=False, world=world)


def judge(world: World, *, settled: bool) -> Outcome:
    """The outcome of a quiesced world: its violations (in a stable order), transitions and length."""
    conn = world.engine.store.conn
    exercised = frozenset(
        (str(m), str(s), str(e), str(d))
        for m, s, e, d in conn.execute(
            "SELECT DISTINCT machine, source, event, dest FROM transition_log WHERE kind = 'event'"
        )
    )
    length = int(conn.execute("SELECT count(*) FROM transition_log").fetchone()[0])
    violations = tuple(sorted(world.judge(), key=lambda v: (v.invariant, v.subject, v.detail)))
    return Outcome(violations, exercised, length, settled)


def replay(case: Case | str, *, instances: Sequence[Instance], timeline: bool = True) -> Ran:
    """Run a case again (from a :class:`Case` or the line ``str(case)`` printed), keeping its timeline.

    Raises:
        InvalidValue: the line does not parse, or names no instance of ``instances``.
    """
    case = Case.parse(case) if isinstance(case, str) else case
    found = {i.name: i for i in instances}
    instance = found.get(case.instance)
    if instance is None:
        raise InvalidValue("replay case", case.instance, "an instance of the scenarios (`explore --list` names them)")
    count = len(instance.scenario.steps)
    outside = [s + 1 for s in case.steps if s >= count]
    if outside:
        raise InvalidValue(
            "replay case",
            outside,
            f"steps of {instance.name} (1 to {count})",
            message=f"replay case: step {outside[0]} is not one of the steps of {instance.name} (1 to {count})",
        )
    return execute(instance, case.faults, steps=case.steps, profile=case.profile, seed=case.seed, timeline=timeline)
