"""Which preemptions a traced run suggests: the schedules worth running, of all those a bounded search could try.

A preemption lets a ready task run at an interleaving point, before the running task's next read or write
(spec §21.1: CloudStack commits DAO call by DAO call, and other threads run in between). Most of them change nothing:
a task let in whose reads and writes touch nothing the interrupted task has just touched commutes with it, and the
run ends as if it had waited its turn (the partial-order reduction of Godefroid's and Flanagan's work, and of CHESS
and Coyote's schedulers). So a preemption is tried only right after an access that conflicts with what the task let
in does: it reads a row the interrupted task wrote (it sees a half-done state), or writes one the interrupted task
read or wrote (the interrupted task goes on with a stale value object, as CloudStack's VOs are). What a task does is
known from the traced run itself: the task let in is one that ran later in it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import attrs

from snapshotfsm.explore.points import PREEMPT, Fault, Traced
from snapshotfsm.faults import Access

APPEND_ONLY = frozenset({"transition_log", "failure", "usage_event", "event"})
"""Tables only ever appended to and never read by a step: an insert there conflicts with nothing."""


@attrs.define
class Footprint:
    """What one task read and wrote in a run: rows by id, and the tables it queried, wrote or inserted into."""

    read: set[tuple[str, int]] = attrs.field(factory=set)
    written: set[tuple[str, int]] = attrs.field(factory=set)
    queried: set[str] = attrs.field(factory=set)
    changed: set[str] = attrs.field(factory=set)
    """Tables with a row inserted, updated or deleted."""

    def add(self, access: Access) -> None:
        """Count ``access`` in."""
        if access.op == "query":
            self.queried.add(access.table)
            return
        if access.table in APPEND_ONLY:
            return
        if access.op == "read" and access.row is not None:
            self.read.add((access.table, access.row))
            return
        self.changed.add(access.table)
        if access.row is not None:
            self.written.add((access.table, access.row))

    def conflicts(self, done: Access) -> bool:
        """Whether this task, run right after ``done``, sees or changes what ``done`` touched."""
        row = (done.table, done.row) if done.row is not None else None
        if done.op == "query":
            return done.table in self.changed
        if done.op == "read":
            return row in self.written
        if done.table in APPEND_ONLY:
            return False
        if done.op == "insert":
            return done.table in self.queried
        return row in self.read or row in self.written or done.table in self.queried


def footprints(accesses: Iterable[Traced]) -> dict[int, Footprint]:
    """Each scheduler task's footprint in a traced run, by its ``seq``."""
    out: dict[int, Footprint] = {}
    for traced in accesses:
        if traced.task is not None:
            out.setdefault(traced.task, Footprint()).add(traced.access)
    return out


def window(accesses: Sequence[Traced], preempted: int) -> int:
    """Where a schedule's next preemption may still fall: the last trace index of the turn preempted at ``preempted``.

    A second preemption is tried only inside the first one's window (the rest of the preempted task's turn, and
    what ran in between): it makes a new interleaving of the same contending tasks. One further on is a race of its
    own, which a schedule of one preemption already reaches.
    """
    who = _who(accesses[preempted])
    return max(n for n in range(preempted, len(accesses)) if _who(accesses[n]) == who)


def _who(traced: Traced) -> object:
    """Whose turn made an access: its scheduler task, or the program's own call in its step."""
    return traced.task if traced.task is not None else ("program", traced.point.step)


def preemptions(
    accesses: Sequence[Traced], *, before_step: int, after: int = -1, until: int | None = None
) -> list[Fault]:
    """The preemptions worth trying in a traced run.

    Each point right after an access that a ready task conflicts with, and that task (``preempt:<k>``, its place
    among the ready ones).

    Only points of the program's steps before ``before_step`` (quiescence is the judge's), after trace index
    ``after`` and up to ``until`` (a schedule extends its own prefix, inside its last preemption's :func:`window`).
    """
    prints = footprints(accesses)
    last: dict[object, Access] = {}
    out: list[Fault] = []
    for index, traced in enumerate(accesses):
        who = _who(traced)
        done = last.get(who)
        last[who] = traced.access
        if until is not None and index > until:
            break
        if index <= after or done is None or traced.point.step >= before_step:
            continue
        for k, seq in enumerate(traced.ready):
            other = prints.get(seq)
            if other is not None and other.conflicts(done):
                out.append(Fault(traced.point, f"{PREEMPT}:{k}"))
    return out
