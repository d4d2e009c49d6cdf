"""What an invariant is, what it reads, when it must hold, and what it reports.

An invariant is a named predicate over a run: the database (CloudStack's tables and ours), the simulated storage
(``sim_object``) and the run's record (what the engine saw happen: API answers, driver callbacks). It says nothing
about which CloudStack method should have done what: it states what must be true of any correct run, so that a fault
explorer can judge runs nobody wrote an expectation for. A database check is a query or a streaming pass: none loads
a table whole.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Iterator

import attrs

from snapshotfsm.record import RunRecord
from snapshotfsm.store.store import Store


class When(enum.Enum):
    """When an invariant must hold: at every point, once nothing more will happen, or after that and a restart."""

    ALWAYS = "always"
    QUIESCENT = "quiescent"
    RESTARTED = "restarted"

    def covers(self, point: When) -> bool:
        """Whether an invariant of this kind is checked at ``point`` (later points check all earlier kinds)."""
        order = (When.ALWAYS, When.QUIESCENT, When.RESTARTED)
        return order.index(self) <= order.index(point)


class Input(enum.Enum):
    """What an invariant reads."""

    DATABASE = "database"
    STORAGE = "storage"
    RECORD = "record"


@attrs.frozen
class Violation:
    """One breach: which invariant, about what (``snapshot 3``, ``account 2 secondary_storage``), and how."""

    invariant: str
    subject: str
    detail: str

    def __str__(self) -> str:
        return f"{self.invariant}: {self.subject}: {self.detail}"


Check = Callable[["Run"], Iterator[Violation]]


@attrs.frozen
class Invariant:
    """A named check; ``check`` yields one :class:`Violation` per breach it finds (none when it holds)."""

    name: str
    when: When
    inputs: frozenset[Input]
    check: Check
    doc: str

    def __call__(self, run: Run) -> list[Violation]:
        """Every breach of this invariant in ``run``."""
        return list(self.check(run))


@attrs.frozen
class Run:
    """What the invariants read: the store (database and simulated storage) and the run's record, when kept."""

    store: Store
    record: RunRecord | None = None


def invariant(name: str, when: When, *inputs: Input) -> Callable[[Check], Invariant]:
    """Declare a check as an invariant; its docstring is the invariant's documentation."""

    def wrap(check: Check) -> Invariant:
        return Invariant(name, when, frozenset(inputs), check, (check.__doc__ or "").strip())

    return wrap


def violations(invariants: Iterable[Invariant], run: Run, *, at: When) -> list[Violation]:
    """Every breach of the invariants that must hold at ``at``, in the order the invariants are given."""
    return [v for inv in invariants if inv.when.covers(at) for v in inv(run)]
