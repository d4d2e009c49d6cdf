"""Fault points found by a clean run, and the faults the explorer tries at each.

A clean run of an instance passes through points of the fault catalogue (:mod:`snapshotfsm.faults`): every driver
call (an operation and its n-th call), every crash point (a workflow event, a step's n-th durable write, a phase of
the restart cleanup, a background tick), each reached by one management server for the n-th time. Faults only count
from the first step of the program: building the cloud is not explored. At each point the explorer tries each kind
the point accepts (:data:`KINDS_OF`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING

import attrs

from snapshotfsm.drivers.base import FaultRule
from snapshotfsm.faults import Access, FaultPlan

if TYPE_CHECKING:
    from snapshotfsm.scheduler import Scheduler, Task

DRIVER_KINDS = ("error", "exception", "no_answer", "null_answer")
"""A driver call answers with a failure, throws at the call, never answers, or answers null."""
CRASH_KINDS = ("crash", "node_left", "restart_crash")
"""The management server dies at the point and starts again (``crash``); dies and a peer takes its jobs over
(``node_left``, with two servers); dies, and its restart dies too, in a phase of its cleanup (``restart_crash``)."""
KINDS = DRIVER_KINDS + CRASH_KINDS
"""Every fault kind, in the order the explorer tries them at a point."""
PREEMPT = "preempt"
"""Not a fault but a schedule's choice: at an interleaving point (``access``), a ready task runs first. Written
``preempt:<k>``, the k-th task of those ready there, in the order they would run (:meth:`Scheduler.ready`)."""

CLEANUP_CRASH_PHASES = ("redelete_destroying",)
"""Where a ``restart_crash`` takes the restart down: after it failed the left-over jobs and expunged their work jobs,
before it re-deletes the Destroying snapshots (spec §10): the cleanup half done. (Before the first phase it would be
a second plain crash; after the last, a plain restart.)"""

KINDS_OF: dict[str, tuple[str, ...]] = {
    "call": DRIVER_KINDS,
    "event": CRASH_KINDS,
    "write": ("crash", "node_left"),
    "tick": ("crash", "node_left"),
    "restart": ("crash",),
    "access": (),
}
"""The kinds each kind of point accepts. A ``restart`` point is itself in a restart's cleanup: a crash there is the
crash during the cleanup. ``restart_crash`` is tried after an event only (a step's writes sit between two events,
and the restart that follows sees what either left)."""


@attrs.frozen(order=True)
class Point:
    """One point a run passed: ``kind`` (call, event, write, restart, tick, access), its name, the n-th time.

    ``name`` is ``default.takeSnapshot`` for a call (the driver's kind and the operation), else the crash point
    (``take_snapshot.PrimaryAnswered``, ``primary.request#2``, ``restart.release_locks``, ``tick.SnapshotPollTask``);
    an interleaving point (``access``) is named for the step and its n-th read or write (``primary.answered@3``).
    ``ms`` is the server that reached it (None for a driver call); ``step`` the program step it fell in (its index;
    ``len(steps)`` for quiescence).
    """

    step: int
    kind: str
    name: str
    nth: int
    ms: int | None = None

    @property
    def label(self) -> str:
        """The point as the fault catalogue names it: what groups runs by where they failed.

        A step's writes are one catalogue point (``primary.request#<n>``): the n-th write of a step differs from the
        next by one row, and a finding at one of them is the same finding.
        """
        if self.kind == "access":
            return f"{self.name.partition('@')[0]}@<n>"
        return f"{self.name.partition('#')[0]}#<n>" if self.kind == "write" else self.name

    def __str__(self) -> str:
        ms = f" on ms{self.ms}" if self.ms is not None else ""
        return f"{self.name} (call {self.nth})" if self.kind == "call" else f"{self.name} (time {self.nth}{ms})"


@attrs.frozen(order=True)
class Fault:
    """A fault to inject: ``kind`` at ``point``."""

    point: Point
    kind: str

    @property
    def choice(self) -> int | None:
        """For a preemption, which of the ready tasks runs first; None for a fault."""
        base, _, k = self.kind.partition(":")
        return int(k) if base == PREEMPT else None

    def __str__(self) -> str:
        if self.choice is not None:
            return f"preemption at {self.point} (ready task {self.choice})"
        return f"{self.kind} at {self.point}"


def faults_at(points: Sequence[Point], kinds: Iterable[str], *, servers: int) -> list[Fault]:
    """Every fault of ``kinds`` at each of ``points`` that the point accepts (``node_left`` needs two servers)."""
    wanted = set(kinds)
    out: list[Fault] = []
    for point in points:
        for kind in KINDS_OF[point.kind]:
            if kind not in wanted or (kind == "node_left" and servers < 2):  # noqa: PLR2004 - a peer and the crashed
                continue
            if kind == "restart_crash":
                out.extend(Fault(point, f"restart_crash:{phase}") for phase in CLEANUP_CRASH_PHASES)
                continue
            out.append(Fault(point, kind))
    return out


def plan_for(faults: Sequence[Fault], *, races: bool = False) -> ExplorePlan:
    """The fault plan that injects ``faults`` (a ``restart_crash`` also crashes the first restart after it).

    With ``races``, it also traces the interleaving points the run passes (a schedule to extend).
    """
    plan = ExplorePlan(races=races)
    for fault in faults:
        point = fault.point
        if fault.choice is not None:
            plan.preempt(point.name, nth=point.nth, ms_id=point.ms, choice=fault.choice)
            continue
        if fault.kind in DRIVER_KINDS:
            plan.fail(point.name, nth=point.nth, kind=fault.kind)  # type: ignore[arg-type]
            continue
        plan.crash(point.name, nth=point.nth, ms_id=point.ms)
        if fault.kind.startswith("restart_crash:"):
            plan.crash(f"restart.{fault.kind.partition(':')[2]}", nth=1, ms_id=point.ms)
    return plan


@attrs.frozen
class Preemption:
    """A schedule's choice: where a ready task runs first.

    The ``nth`` time server ``ms_id`` reaches interleaving point ``at``, the ``choice``-th ready task runs first.
    """

    at: str
    nth: int
    ms_id: int | None
    choice: int


@attrs.frozen
class Traced:
    """An interleaving point a run passed: the point, the access it precedes, who made it, and what was ready.

    ``task`` is the scheduler task that made the access (its ``seq``; None for the program's own call, an API call
    or a restart); ``ready`` the ``seq`` of each task that could have run first, in order.
    """

    point: Point
    access: Access
    task: int | None
    ready: tuple[int, ...]


class ExplorePlan(FaultPlan):
    """A fault plan that counts points only once armed (after the cloud is built), and can trace what it passes.

    ``step`` is the program step the world is in; a tracing plan notes every point with it in :attr:`points`. With
    ``races`` (or a preemption rule), the plan interleaves: it counts interleaving points and lets a task in where a
    rule says; with ``races`` it also notes each point in :attr:`accesses`.
    """

    def __init__(self, *, trace: bool = False, races: bool = False) -> None:
        super().__init__()
        self.armed = False
        self.step = 0
        self.points: list[Point] | None = [] if trace else None
        self.accesses: list[Traced] | None = [] if races else None
        self.preemptions: list[Preemption] = []
        self.preempted: list[int] = []
        """The index in :attr:`accesses` (or the point count) at which each preemption rule fired, in order."""
        self._races = races
        self._reached_preempt: list[int] = []
        self._count = 0
        self._seen: dict[tuple[str, int | None], int] = {}
        self.scheduler: Scheduler | None = None
        """The world's scheduler (set by the world): whose task makes each access."""

    @property
    def interleaves(self) -> bool:  # type: ignore[override]
        """Only a plan that traces races or has preemption rules interleaves (a plain run pays nothing)."""
        return self._races or bool(self.preemptions)

    def preempt(self, at: str, *, nth: int = 1, ms_id: int | None = None, choice: int = 0) -> ExplorePlan:
        """Add a preemption; returns the plan, so that rules chain."""
        self.preemptions.append(Preemption(at, nth, ms_id, choice))
        self._reached_preempt.append(0)
        return self

    def all_fired(self) -> bool:
        """Every rule fired (a run whose plan did not all happen is not the run the plan describes)."""
        return len(self.fired) >= len(self.rules) + len(self.crashes) and len(self.preempted) >= len(self.preemptions)

    def interleave(self, ms_id: int, where: str, access: Access, ready: Callable[[], Sequence[Task]]) -> Task | None:
        """Count and trace an interleaving point once armed; the task a preemption rule lets in there."""
        if not self.armed:
            return None
        key = (where, ms_id)
        nth = self._seen[key] = self._seen.get(key, 0) + 1
        tasks: Sequence[Task] | None = None
        if self.accesses is not None:
            tasks = ready()
            running = self.scheduler.running[-1].seq if self.scheduler and self.scheduler.running else None
            point = Point(self.step, "access", where, nth, ms_id)
            self.accesses.append(Traced(point, access, running, tuple(t.seq for t in tasks)))
        self._count += 1
        for i, rule in enumerate(self.preemptions):
            if rule.at != where or rule.ms_id not in (None, ms_id):
                continue
            self._reached_preempt[i] += 1
            if self._reached_preempt[i] != rule.nth:
                continue
            tasks = ready() if tasks is None else tasks
            if rule.choice < len(tasks):
                self.preempted.append(self._count - 1)
                return tasks[rule.choice]
        return None

    def arm(self) -> None:
        """Start counting: the program begins."""
        self.armed = True

    def should_crash(self, ms_id: int, where: str, at_ms: int) -> bool:
        """Count and trace a crash point once armed."""
        if not self.armed:
            return False
        if self.points is not None:
            key = (where, ms_id)
            nth = self._seen[key] = self._seen.get(key, 0) + 1
            kind = crash_kind(where)
            self.points.append(Point(self.step, kind, where, nth, ms_id))
        return super().should_crash(ms_id, where, at_ms)

    def on_call(self, names: Iterable[str], at_ms: int) -> FaultRule | None:
        """Count and trace a driver call once armed."""
        if not self.armed:
            return None
        names = list(names)
        if self.points is not None:
            key = (names[0], None)
            nth = self._seen[key] = self._seen.get(key, 0) + 1
            self.points.append(Point(self.step, "call", names[0], nth))
        return super().on_call(names, at_ms)

    def unfired(self) -> tuple[object, ...]:
        """The rules still to fire, with how far each has counted: part of what the future depends on."""
        rules = tuple(
            (r.op, r.nth, r.kind, r.times, self._calls[i])
            for i, r in enumerate(self.rules)
            if self._calls[i] < r.nth + r.times - 1
        )
        crashes = tuple(
            (c.at, c.nth, c.ms_id, self._reached[i]) for i, c in enumerate(self.crashes) if self._reached[i] < c.nth
        )
        preemptions = tuple(
            (p.at, p.nth, p.ms_id, p.choice, self._reached_preempt[i])
            for i, p in enumerate(self.preemptions)
            if self._reached_preempt[i] < p.nth
        )
        return rules, crashes, preemptions


def crash_kind(where: str) -> str:
    """The kind of a crash point, from its name."""
    if where.startswith("restart."):
        return "restart"
    if where.startswith("tick."):
        return "tick"
    return "write" if "#" in where else "event"
