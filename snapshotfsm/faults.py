"""Faults to inject, and the catalogue of every point where one can fall.

The catalogue lists what the installed drivers and the definitions offer:

- every driver operation, with the fault kinds it accepts (an error answer, an exception thrown at the call, no
  answer, a null answer); a rule names it bare (``copyAsync``, every driver), by driver (``default.takeSnapshot``)
  or by pool type (``RBD.takeSnapshot``);
- every crash point: a workflow event (``take_snapshot.PrimaryAnswered``: the server dies just before that event's
  step runs), a durable write inside a step (``primary.request#2``: the server dies just before the step's second
  write commits, so the first is kept), each phase of the restart cleanup (``restart.redelete_destroying``) and each
  tick of a background task (``tick.SnapshotPollTask``).

A :class:`FaultPlan` checks each rule against a catalogue when the rule is added (the installed drivers and the
project's definitions, unless the plan was given another) and again when an engine opens with it, so that a
misspelt operation or point is refused with the nearest name instead of never firing.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING

import attrs

from snapshotfsm.definitions import Definitions, TransitionDef, project_definitions
from snapshotfsm.drivers.base import FAULT_KINDS, Driver, FaultKind, FaultRule
from snapshotfsm.drivers.image import ImageStoreDriver
from snapshotfsm.drivers.primary import PrimaryDriver
from snapshotfsm.drivers.registry import installed_drivers
from snapshotfsm.errors import InvalidValue, did_you_mean

if TYPE_CHECKING:
    from snapshotfsm.scheduler import Task

RESTART_PHASES = (
    "release_locks",
    "cleanup_left_over_jobs",
    "cleanup_storage_jobs",
    "expunge_left_over_work_jobs",
    "redelete_destroying",
    "remove_orphan_policies",
    "reschedule_policies",
)
"""The start-up cleanup of spec §10 (after the lock controller's own, §21.1), in order; a crash point precedes each
(``restart.<phase>``)."""

BACKGROUND_TASKS = ("SnapshotPollTask", "StorageGarbageCollector", "StorPoolSnapshotRecoveryCheck")
"""The periodic tasks of a management server (§9.2 poll, §10.5 GC, §8 recovery check); a crash point precedes each
tick (``tick.<task>``)."""


@attrs.frozen
class DriverOp:
    """One operation a driver calls: ``call`` is ``async`` (answered later) or ``sync`` (answered at once)."""

    driver: str
    op: str
    call: str
    kinds: tuple[FaultKind, ...]
    pool_types: tuple[str, ...]
    providers: tuple[str, ...]

    @property
    def names(self) -> tuple[str, ...]:
        """Every name a rule may give it: the driver's, each pool type's, and the bare operation."""
        return (f"{self.driver}.{self.op}", *(f"{t}.{self.op}" for t in self.pool_types), self.op)


@attrs.frozen
class CrashPoint:
    """A point where a crash rule may take a management server down.

    ``kind`` is ``event`` (before a workflow event's step), ``write`` (before the n-th durable write of a step:
    ``name`` is the step, a rule writes ``<step>#<n>``), ``restart`` (before a phase of the restart cleanup) or
    ``tick`` (before a tick of a background task).
    ``transitions`` are the workflow rows where it sits, as ``source --Event--> dest``, followed by
    ``[profile, ...]`` for a row that exists only under those profiles. ``profiles`` names the profiles the point
    exists under when none of its rows exists under every profile (empty: every profile).
    """

    name: str
    kind: str
    machine: str
    transitions: tuple[str, ...] = ()
    profiles: tuple[str, ...] = ()

    @property
    def rule_name(self) -> str:
        """How a crash rule names it (``<step>#<n>`` for a write)."""
        return f"{self.name}#<n>" if self.kind == "write" else self.name


@attrs.frozen
class FaultCatalogue:
    """Every fault point the drivers and definitions of one engine offer."""

    ops: tuple[DriverOp, ...]
    crash_points: tuple[CrashPoint, ...]

    @functools.cached_property
    def _op_names(self) -> dict[str, tuple[DriverOp, ...]]:
        names: dict[str, list[DriverOp]] = {}
        for op in self.ops:
            for name in op.names:
                names.setdefault(name, []).append(op)
        return {name: tuple(ops) for name, ops in names.items()}

    @functools.cached_property
    def _points(self) -> dict[str, CrashPoint]:
        return {p.name: p for p in self.crash_points}

    def check_rule(self, rule: FaultRule) -> None:
        """Refuse a rule no operation of the catalogue answers to.

        Raises:
            InvalidValue: the operation is unknown (with the nearest name), or the kind is not one it accepts.
        """
        ops = self._op_names.get(rule.op)
        if ops is None:
            raise InvalidValue(
                "fault operation",
                rule.op,
                "an operation of an installed driver",
                message=f"no installed driver has operation {rule.op!r}{did_you_mean(rule.op, self._op_names)}; "
                "`snapshotfsm faults` lists them",
            )
        if not any(rule.kind in op.kinds for op in ops):
            raise InvalidValue("fault kind", rule.kind, f"one of {', '.join(ops[0].kinds)} for {rule.op}")

    def check_crash(self, at: str) -> None:
        """Refuse a crash point the catalogue does not have.

        Raises:
            InvalidValue: an unknown event, step or restart phase (with the nearest name), or a write number that is
                not a positive integer.
        """
        name, hash_, nth = at.partition("#")
        point = self._points.get(name)
        if hash_:
            if point is None or point.kind != "write":
                steps = [p.name for p in self.crash_points if p.kind == "write"]
                raise InvalidValue(
                    "crash point",
                    at,
                    "<step>#<n>",
                    message=f"no step {name!r} has durable writes to crash at{did_you_mean(name, steps)}; "
                    "`snapshotfsm faults` lists the crash points",
                )
            if not nth.isdigit() or int(nth) < 1:
                raise InvalidValue("crash point", at, f"{name}#<n> with n a write number from 1")
            return
        if point is None or point.kind == "write":
            points = [p.name for p in self.crash_points if p.kind != "write"]
            raise InvalidValue(
                "crash point",
                at,
                "a crash point of the catalogue",
                message=f"no crash point {at!r}{did_you_mean(at, points)}; a step's writes are <step>#<n>; "
                "`snapshotfsm faults` lists the crash points",
            )

    def counts(self) -> dict[str, dict[str, int]]:
        """Per machine (and per driver), how many points of each kind: the catalogue's size."""
        out: dict[str, dict[str, int]] = {}
        for point in self.crash_points:
            row = out.setdefault(point.machine, {})
            row[point.kind] = row.get(point.kind, 0) + 1
        for op in self.ops:
            row = out.setdefault(f"driver {op.driver}", {})
            row["op"] = row.get("op", 0) + 1
        return out


def catalogue(
    definitions: Definitions | None = None, drivers: Sequence[type[PrimaryDriver]] | None = None
) -> FaultCatalogue:
    """The fault points of ``drivers`` (default: the installed ones) and ``definitions`` (default: the project's)."""
    definitions = definitions if definitions is not None else project_definitions()
    drivers = drivers if drivers is not None else installed_drivers()
    ops: list[DriverOp] = []
    for cls in (*drivers, ImageStoreDriver):
        ops.extend(_ops(cls))
    points: list[CrashPoint] = []
    for definition in definitions.values():
        if definition.kind != "workflow":
            continue
        events: dict[str, list[TransitionDef]] = {}
        steps: dict[str, list[TransitionDef]] = {}
        for row in definition.transitions:
            events.setdefault(row.event, []).append(row)
            if row.calls:
                steps.setdefault(row.calls, []).append(row)
        points.extend(
            _point(f"{definition.name}.{event}", "event", definition.name, rows) for event, rows in events.items()
        )
        points.extend(_point(step, "write", definition.name, rows) for step, rows in steps.items())
    points.extend(CrashPoint(f"restart.{phase}", "restart", "restart") for phase in RESTART_PHASES)
    points.extend(CrashPoint(f"tick.{task}", "tick", "background") for task in BACKGROUND_TASKS)
    return FaultCatalogue(tuple(ops), tuple(points))


def _point(name: str, kind: str, machine: str, rows: Sequence[TransitionDef]) -> CrashPoint:
    """A crash point on ``rows``: each shown with the profiles it is limited to; the point's own profiles."""
    texts = tuple(
        f"{r.source} --{r.event}--> {r.dest}" + (f" [{', '.join(r.profiles)}]" if r.profiles else "") for r in rows
    )
    everywhere = any(not r.profiles for r in rows)
    profiles = () if everywhere else tuple(dict.fromkeys(p for r in rows for p in r.profiles))
    return CrashPoint(name, kind, machine, texts, profiles)


def _ops(cls: type[Driver]) -> list[DriverOp]:
    pool_types = tuple(sorted(getattr(cls, "pool_types", ())))
    providers = tuple(getattr(cls, "providers", ()))
    return [DriverOp(cls.kind, op, call, FAULT_KINDS, pool_types, providers) for op, call in cls.operations.items()]


_CATALOGUES: dict[tuple[int, tuple[type[PrimaryDriver], ...]], tuple[Definitions, FaultCatalogue]] = {}


def engine_catalogue(definitions: Definitions, drivers: Sequence[type[PrimaryDriver]]) -> FaultCatalogue:
    """:func:`catalogue` of ``definitions`` and ``drivers``, built once per pair and shared (it is frozen).

    An engine checks its fault plan against it when it opens, twice per :meth:`Engine.open`; building it walks
    every transition of every workflow, a third of an in-memory open once the schema is copied. Definitions are
    keyed by identity, as :func:`~snapshotfsm.orchestration.workflows.engine_machines` keys them.
    """
    key = (id(definitions), tuple(drivers))
    cached = _CATALOGUES.get(key)
    if cached is not None and cached[0] is definitions:
        return cached[1]
    built = catalogue(definitions, key[1])
    _CATALOGUES[key] = (definitions, built)
    return built


@functools.cache
def default_catalogue() -> FaultCatalogue:
    """The catalogue of the installed drivers and the project's definitions, built once."""
    return catalogue()


@attrs.frozen
class CrashRule:
    """Crash management server ``ms_id`` (any server when None) the ``nth`` time it reaches the point ``at``.

    ``at`` is a crash point of the catalogue: ``"<workflow machine>.<event>"`` (``take_snapshot.PrimaryAnswered``:
    just before that event's step runs), ``"<step>#<n>"`` (``primary.request#2``: just before the step's n-th
    durable write), ``"restart.<phase>"`` or ``"tick.<task>"``.
    """

    at: str
    nth: int = attrs.field(default=1, validator=attrs.validators.ge(1))
    ms_id: int | None = None


@attrs.frozen
class FiredFault:
    """A fault that happened: which rule, on which call, when."""

    op: str
    call: int
    kind: FaultKind
    at_ms: int


@attrs.frozen
class Access:
    """A read or write a task is about to make, at an interleaving point: ``op`` on a row (or rows) of ``table``.

    ``op`` is ``read`` (``row`` by id), ``query`` (rows by a condition: ``row`` is None), ``insert`` (a new row) or
    ``write`` (an update or delete of ``row``).
    """

    op: str
    table: str
    row: int | None = None


class FaultPlan:
    """The faults to inject, and a record of those that fired.

    Every rule is checked when it is added, against ``catalogue`` (default: the installed drivers and the project's
    definitions); an engine checks the plan again against its own drivers and definitions when it opens.

    Raises:
        InvalidValue: (from the constructor, :meth:`fail` and :meth:`crash`) a rule the catalogue does not have.
    """

    def __init__(
        self,
        rules: Iterable[FaultRule] = (),
        crashes: Iterable[CrashRule] = (),
        *,
        catalogue: FaultCatalogue | None = None,
    ) -> None:
        self._catalogue = catalogue
        self.rules: list[FaultRule] = []
        self._calls: list[int] = []
        self.crashes: list[CrashRule] = []
        self._reached: list[int] = []
        self.fired: list[FiredFault] = []
        for rule in rules:
            self._add_rule(rule)
        for crash in crashes:
            self._add_crash(crash)

    @property
    def catalogue(self) -> FaultCatalogue:
        """What the rules are checked against."""
        return self._catalogue if self._catalogue is not None else default_catalogue()

    def check(self, catalogue: FaultCatalogue) -> None:
        """Check every rule against ``catalogue`` (an engine's drivers and definitions).

        Raises:
            InvalidValue: the first rule the catalogue does not have.
        """
        for rule in self.rules:
            catalogue.check_rule(rule)
        for crash in self.crashes:
            catalogue.check_crash(crash.at)

    def _add_rule(self, rule: FaultRule) -> None:
        self.catalogue.check_rule(rule)
        self.rules.append(rule)
        self._calls.append(0)

    def _add_crash(self, crash: CrashRule) -> None:
        self.catalogue.check_crash(crash.at)
        self.crashes.append(crash)
        self._reached.append(0)

    def crash(self, at: str, *, nth: int = 1, ms_id: int | None = None) -> FaultPlan:
        """Add a crash rule; returns the plan, so that rules chain."""
        self._add_crash(CrashRule(at, nth, ms_id))
        return self

    def fail(self, op: str, *, nth: int = 1, kind: FaultKind = "error", message: str = "", times: int = 1) -> FaultPlan:
        """Add a rule; returns the plan, so that rules chain."""
        self._add_rule(FaultRule(op, nth, kind, message, times))
        return self

    interleaves = False
    """Whether the plan decides at interleaving points (:meth:`interleave`): only then does the store report its
    reads and writes, so that a plain run pays nothing for them."""

    def interleave(self, ms_id: int, where: str, access: Access, ready: Callable[[], Sequence[Task]]) -> Task | None:
        """At an interleaving point (``ms_id`` about to make ``access`` at ``where``): the task to let in first.

        ``ready`` gives the tasks that could run now (:meth:`Scheduler.ready`); None lets none in. A plain plan lets
        none in: steps run from one wait to the next without interruption.
        """
        del ms_id, where, access, ready
        return None

    def should_crash(self, ms_id: int, where: str, at_ms: int) -> bool:
        """Count ``ms_id`` reaching ``where``; True when a crash rule fires there."""
        crash = False
        for i, rule in enumerate(self.crashes):
            if rule.at != where or rule.ms_id not in (None, ms_id):
                continue
            self._reached[i] += 1
            if self._reached[i] == rule.nth and not crash:
                crash = True
                self.fired.append(FiredFault(f"crash@{where}", rule.nth, "crash", at_ms))
        return crash

    def on_call(self, names: Iterable[str], at_ms: int) -> FaultRule | None:
        """Count a call known by ``names`` against every rule and return the first rule that fires."""
        keys = set(names)
        found: FaultRule | None = None
        for i, rule in enumerate(self.rules):
            if rule.op not in keys:
                continue
            self._calls[i] += 1
            call = self._calls[i]
            if found is None and rule.nth <= call < rule.nth + rule.times:
                found = rule
                self.fired.append(FiredFault(rule.op, call, rule.kind, at_ms))
        return found
