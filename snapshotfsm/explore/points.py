"""Fault points found by a clean run, and the faults the explorer tries at each.

A clean run of an instance passes through points of the fault catalogue (:mod:`snapshotfsm.faults`): every driver
call (an operation and its n-th call), every crash point (a workflow event, a step's n-th durable write, a phase of
the restart cleanup, a background tick), each reached by one management server for the n-th time. Faults only count
from the first step of the program: building the cloud is not explored. At each point the explorer tries each kind
the point accepts (:data:`KINDS_OF`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import attrs

from snapshotfsm.drivers.base import FaultRule
from snapshotfsm.faults import FaultPlan

DRIVER_KINDS = ("error", "exception", "no_answer", "null_answer")
"""A driver call answers with a failure, throws at the call, never answers, or answers null."""
CRASH_KINDS = ("crash", "node_left", "restart_crash")
"""The management server dies at the point and starts again (``crash``); dies and a peer takes its jobs over
(``node_left``, with two servers); dies, and its restart dies too, in a phase of its cleanup (``restart_crash``)."""
KINDS = DRIVER_KINDS + CRASH_KINDS
"""Every fault kind, in the order the explorer tries them at a point."""

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
}
"""The kinds each kind of point accepts. A ``restart`` point is itself in a restart's cleanup: a crash there is the
crash during the cleanup. ``restart_crash`` is tried after an event only (a step's writes sit between two events,
and the restart that follows sees what either left)."""


@attrs.frozen(order=True)
class Point:
    """One point a run passed: ``kind`` (call, event, write, restart, tick), its catalogue name, the n-th time.

    ``name`` is ``default.takeSnapshot`` for a call (the driver's kind and the operation), else the crash point
    (``take_snapshot.PrimaryAnswered``, ``primary.request#2``, ``restart.release_locks``, ``tick.SnapshotPollTask``).
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
        return f"{self.name.partition('#')[0]}#<n>" if self.kind == "write" else self.name

    def __str__(self) -> str:
        ms = f" on ms{self.ms}" if self.ms is not None else ""
        return f"{self.name} (call {self.nth})" if self.kind == "call" else f"{self.name} (time {self.nth}{ms})"


@attrs.frozen(order=True)
class Fault:
    """A fault to inject: ``kind`` at ``point``."""

    point: Point
    kind: str

    def __str__(self) -> str:
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


def plan_for(faults: Sequence[Fault]) -> ExplorePlan:
    """The fault plan that injects ``faults`` (a ``restart_crash`` also crashes the first restart after it)."""
    plan = ExplorePlan()
    for fault in faults:
        point = fault.point
        if fault.kind in DRIVER_KINDS:
            plan.fail(point.name, nth=point.nth, kind=fault.kind)  # type: ignore[arg-type]
            continue
        plan.crash(point.name, nth=point.nth, ms_id=point.ms)
        if fault.kind.startswith("restart_crash:"):
            plan.crash(f"restart.{fault.kind.partition(':')[2]}", nth=1, ms_id=point.ms)
    return plan


class ExplorePlan(FaultPlan):
    """A fault plan that counts points only once armed (after the cloud is built), and can trace what it passes.

    ``step`` is the program step the world is in; a tracing plan notes every point with it in :attr:`points`.
    """

    def __init__(self, *, trace: bool = False) -> None:
        super().__init__()
        self.armed = False
        self.step = 0
        self.points: list[Point] | None = [] if trace else None
        self._seen: dict[tuple[str, int | None], int] = {}

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
        return rules, crashes


def crash_kind(where: str) -> str:
    """The kind of a crash point, from its name."""
    if where.startswith("restart."):
        return "restart"
    if where.startswith("tick."):
        return "tick"
    return "write" if "#" in where else "event"
