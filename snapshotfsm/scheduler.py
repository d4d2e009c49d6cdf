"""The simulated clock's to-do list: driver answers, queue slots, retries and polls, run in time order.

Concurrency in the model comes from many jobs interleaving at their waits, never from threads: a task runs to
completion, then the next one (earliest time first, then the order they were scheduled in). Each task may belong to a
management server's memory (``owner``); a crash of that server drops its tasks, as CloudStack loses what it keeps only
in memory (DESIGN.md, "Time and concurrency").
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable
from typing import Protocol

import attrs

from snapshotfsm.clock import SimClock


@attrs.define(eq=False)
class Task:
    """Something to run at ``at_ms``: a label for traces, the server whose memory holds it, and the call."""

    at_ms: int
    seq: int
    label: str
    owner: int | None
    fn: Callable[[], None]
    periodic: bool = False
    cancelled: bool = False
    on_drop: Callable[[], None] | None = None
    """Called when a crash of ``owner`` drops the task (:meth:`Scheduler.drop_owned_by`), for the run's record."""

    def cancel(self) -> None:
        """Drop this task; it will not run."""
        self.cancelled = True


class Member(Protocol):
    """A management server sharing the clock: a crash rule that fires names the server to take down."""

    def crash(self) -> object:
        """Crash the server: what it held only in memory is lost."""


class Scheduler:
    """A heap of tasks on a :class:`SimClock`."""

    def __init__(self, clock: SimClock) -> None:
        self.clock = clock
        self._heap: list[tuple[int, int, Task]] = []
        self._seq = itertools.count()
        self.ran = 0
        self.members: dict[int, Member] = {}
        """Each management server sharing this clock, by ms id: the world's servers (a crash rule names one)."""
        self.running: list[Task] = []
        """The tasks running now, innermost last: more than one when a task was let in at an interleaving point."""
        self.where = "program"
        """What runs now, by name, outside a workflow's steps: the task's kind (the first word of its label), an
        API call, or the last crash point passed in it (a restart phase, a tick). It names interleaving points."""
        self.where_count = 0
        """Reads and writes made since :attr:`where` was set."""

    def call_later(
        self,
        delay_ms: int,
        fn: Callable[[], None],
        *,
        label: str,
        owner: int | None = None,
        periodic: bool = False,
        on_drop: Callable[[], None] | None = None,
    ) -> Task:
        """Run ``fn`` ``delay_ms`` simulated milliseconds from now.

        A ``periodic`` task (a poller that reschedules itself) does not keep :meth:`run` busy: without ``until_ms``,
        running stops once only periodic tasks are left. ``on_drop`` is called instead of ``fn`` if a crash of
        ``owner`` drops the task.
        """
        if delay_ms < 0:
            raise ValueError(f"a delay cannot be negative (got {delay_ms} ms for {label!r})")
        task = Task(self.clock.now_ms + delay_ms, next(self._seq), label, owner, fn, periodic, on_drop=on_drop)
        heapq.heappush(self._heap, (task.at_ms, task.seq, task))
        return task

    def pending(self) -> list[Task]:
        """Tasks still to run, in the order they will run."""
        return [t for _, _, t in sorted(self._heap) if not t.cancelled]

    @property
    def idle(self) -> bool:
        """Nothing but periodic tasks is left to run."""
        return not any(not t.cancelled and not t.periodic for _, _, t in self._heap)

    def next_at(self) -> int | None:
        """When the next task is due, or None when idle."""
        self._discard_cancelled()
        return self._heap[0][0] if self._heap else None

    def _discard_cancelled(self) -> None:
        while self._heap and self._heap[0][2].cancelled:
            heapq.heappop(self._heap)

    def run_one(self) -> Task | None:
        """Advance the clock to the next task and run it; None when idle."""
        self._discard_cancelled()
        if not self._heap:
            return None
        _, _, task = heapq.heappop(self._heap)
        self._call(task)
        return task

    def _call(self, task: Task) -> None:
        """Run ``task`` now; a task that became due while another held the clock back runs late, at ``now``."""
        if task.at_ms > self.clock.now_ms:
            self.clock.advance_to(task.at_ms)
        self.ran += 1
        self.running.append(task)
        where = self.where, self.where_count
        self.where, self.where_count = task.label.partition(" ")[0], 0
        try:
            task.fn()
        finally:
            self.running.pop()
            self.where, self.where_count = where

    def ready(self) -> list[Task]:
        """What may run at an interleaving point, in the order it would run: the tasks that could happen now.

        Those due now, and, when nothing else is due now, the next one that is not a poller: the running step may
        stall at a point (a slow query, a lock wait) until the next thing in the world happens. A poller that is
        not due yet is not one of them (it is always pending; a step does not stall for minutes).
        """
        self._discard_cancelled()
        now = self.clock.now_ms
        pending = sorted((t for _, _, t in self._heap if not t.cancelled), key=_order)
        horizon = now
        for task in pending:
            if not task.periodic:
                horizon = max(now, task.at_ms)
                break
        return [t for t in pending if t.at_ms <= now or (t.at_ms <= horizon and not t.periodic)]

    def preempt(self, task: Task) -> None:
        """Run ``task`` now, inside the task that reached an interleaving point (which goes on when it returns).

        Raises:
            ValueError: ``task`` is not pending.
        """
        for n, (_, _, queued) in enumerate(self._heap):
            if queued is task and not task.cancelled:
                self._heap[n] = self._heap[-1]
                self._heap.pop()
                heapq.heapify(self._heap)
                break
        else:
            raise ValueError(f"task {task.label!r} is not pending: it cannot be let in")
        self._call(task)

    def run(self, *, until_ms: int | None = None, max_tasks: int | None = None) -> int:
        """Run tasks in time order; returns how many ran.

        Without ``until_ms`` it stops when only periodic tasks are left; with it, it runs everything due up to
        ``until_ms`` (periodic tasks included) and moves the clock there.
        """
        count = 0
        while max_tasks is None or count < max_tasks:
            due = self.next_at()
            if due is None or (until_ms is not None and due > until_ms) or (until_ms is None and self.idle):
                break
            self.run_one()
            count += 1
        if until_ms is not None and until_ms > self.clock.now_ms:
            self.clock.advance_to(until_ms)
        return count

    def drop_owned_by(self, owner: int) -> list[Task]:
        """Cancel every task held in ``owner``'s memory (a crash); returns what was dropped."""
        dropped = sorted((t for _, _, t in self._heap if t.owner == owner and not t.cancelled), key=_order)
        for task in dropped:
            task.cancel()
        for task in dropped:
            if task.on_drop is not None:
                task.on_drop()
        return dropped


def _order(task: Task) -> tuple[int, int]:
    """The order tasks run in: time, then the order they were scheduled in."""
    return task.at_ms, task.seq
