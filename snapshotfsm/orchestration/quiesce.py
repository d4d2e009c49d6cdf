"""Quiescence: run a world until nothing more will happen, through a restart of every server (issue 13).

The invariants that hold once nothing more will happen need a point where that is so; :func:`quiesce_world` reaches it:

1. the clock runs until nothing but periodic tasks is pending;
2. every management server of the world crashes, then each starts again: the start-up cleanup of spec §10, in
   order (a crash rule that fires during it takes the server down again, and it is started again: each rule fires
   once);
3. the clock runs to idle again, so that what the restarts started (the re-delete of Destroying snapshots, §10.3)
   ends;
4. every server starts its background tasks (the snapshot scheduler's poll, §9.2; the storage GC, §10.5; StorPool's
   recovery check, §8) and the clock runs for one full cycle of them: until each has run once after its start (the
   longest of the poll interval, ``storage.cleanup.delay`` and the recovery check's period). They reschedule
   themselves for ever, so the cycle is bounded by simulated time, not by their end; they stay scheduled after it,
   as on a live server, and, being periodic, keep no later :meth:`~snapshotfsm.engine.Engine.run` busy;
5. the clock runs to idle again. A crash rule that fires meanwhile (a job the poller started reaches it) takes its
   server down: steps 2 to 5 are done again for the servers that are down, until none is (each rule fires once, so
   this ends).

A run still live when the clock is idle waits for something that will never come: a driver call never answered (a
``no_answer`` fault), a thread blocked for good (``BlockedForEver``, ``NeverAnswered``), a step that returned with
nothing pending, a child run that itself waits for good. The report names each such run, where it was found (at
the first idle, before the crash that ended it, or at the end) and what it waits for, and every asynchronous call
whose answer never reached a callback, from the run's record: quiescence is not mistaken for idleness.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol

import attrs

from snapshotfsm.errors import InvalidValue, ServerDown
from snapshotfsm.orchestration.contract import Pending, Run
from snapshotfsm.orchestration.runner import Runner
from snapshotfsm.orchestration.runtime import Runtime
from snapshotfsm.orchestration.storpool_recovery import PERIOD_KEY
from snapshotfsm.record import RunRecord
from snapshotfsm.strategies.base import BlockedForEver, DriverDelete

BEFORE_RESTART = "before restart"
"""Found waiting at the first idle; the crash of its server then ended it."""
AT_THE_END = "at the end"
"""Found waiting once everything else was over."""


class Server(Protocol):
    """A management server of the world, as quiescence drives it (``Engine`` is one)."""

    ms_id: int
    runner: Runner

    @property
    def down(self) -> bool:
        """Whether the server crashed and has not started again."""

    def crash(self) -> int:
        """Crash the server; how many scheduled tasks it lost."""

    def restart(self) -> dict[str, int]:
        """The start-up cleanup of spec §10; what each step touched.

        Raises:
            ServerDown: a crash rule fired during it.
        """

    def start_background_tasks(self) -> None:
        """Start the scheduler's poll, the storage GC and StorPool's recovery check."""


RunClock = Callable[..., int]
"""``Engine.run``: runs the world's clock (``until_ms=``), crashing a server where a crash rule fires."""


@attrs.frozen
class WaitingRun:
    """A run that waits for something that will never come: live while the clock is idle."""

    ms_id: int
    workflow_id: int
    machine: str
    state: str
    job_id: int | None
    waits_for: str
    found: str
    """:data:`BEFORE_RESTART` or :data:`AT_THE_END`."""

    def __str__(self) -> str:
        job = f" (job {self.job_id})" if self.job_id is not None else ""
        return (
            f"ms {self.ms_id}: {self.machine} {self.workflow_id}{job} waits in {self.state} for {self.waits_for};"
            f" found {self.found}"
        )


@attrs.frozen
class UnansweredCall:
    """An asynchronous driver call whose answer never reached a callback, and why."""

    call: str
    ms_id: int | None
    why: str


@attrs.frozen
class QuiesceReport:
    """What quiescence did, and what it found still waiting.

    ``servers`` crashed (those up) and started again, in that order; ``tasks_lost`` per server is what its crash
    dropped; ``cleanups`` per server is what its (last) start-up cleanup touched; ``crashes`` are the crash rules
    that fired meanwhile (where); ``background`` the periodic tasks started (``ms<id> <task>``, again for a server
    started again), each start followed by ``cycle_ms`` of simulated time (the longest cycle); ``tasks_run`` counts
    every task the clock ran, from ``started_ms`` to ``ended_ms``; ``down`` are servers still down at the end (none,
    unless a crash rule fired at every start).
    """

    started_ms: int
    ended_ms: int
    tasks_run: int
    servers: tuple[int, ...]
    tasks_lost: dict[int, int]
    cleanups: dict[int, dict[str, int]]
    crashes: tuple[str, ...]
    background: tuple[str, ...]
    cycle_ms: int
    waiting: tuple[WaitingRun, ...]
    unanswered: tuple[UnansweredCall, ...]
    down: tuple[int, ...]

    @property
    def settled(self) -> bool:
        """Nothing waits for good and every server is up: quiet because everything is done, not stuck."""
        return not self.waiting and not self.down


def quiesce_world(servers: Sequence[Server], run: RunClock) -> QuiesceReport:
    """Run the world of ``servers`` until nothing more will happen (the module's five steps); what it found.

    ``run`` is the world's clock (``Engine.run`` of any of its servers). Deterministic: servers go in ``ms_id``
    order.

    Raises:
        InvalidValue: no server is given.
    """
    if not servers:
        raise InvalidValue("servers", servers, "the world's management servers (at least one)")
    ordered = sorted(servers, key=lambda s: s.ms_id)
    rt = ordered[0].runner.rt
    started, fired = rt.clock.now_ms, len(rt.faults.fired)
    ran = run()
    waiting = list(waiting_runs(ordered, BEFORE_RESTART))
    lost = {s.ms_id: s.crash() for s in ordered if not s.down}
    rules = len(rt.faults.crashes)
    cleanups: dict[int, dict[str, int]] = {}
    background: list[str] = []
    cycle_ms = 0
    for _ in range(rules + 1):
        down = [s for s in ordered if s.down]
        if not down:
            break
        cleanups.update(start_all(down, rules))
        ran += run()
        tasks, cycle = start_background(down)
        background.extend(tasks)
        cycle_ms = max(cycle_ms, cycle)
        ran += run(until_ms=rt.clock.now_ms + cycle)
        ran += run()
    waiting.extend(waiting_runs(ordered, AT_THE_END))
    return QuiesceReport(
        started_ms=started,
        ended_ms=rt.clock.now_ms,
        tasks_run=ran,
        servers=tuple(s.ms_id for s in ordered),
        tasks_lost=lost,
        cleanups=cleanups,
        crashes=tuple(f.op.removeprefix("crash@") for f in rt.faults.fired[fired:] if f.kind == "crash"),
        background=tuple(background),
        cycle_ms=cycle_ms,
        waiting=tuple(waiting),
        unanswered=tuple(unanswered_calls(rt.record)),
        down=tuple(s.ms_id for s in ordered if s.down),
    )


def start_all(servers: Iterable[Server], crash_rules: int) -> dict[int, dict[str, int]]:
    """Start every server that is down; one a crash rule takes down during its cleanup starts again.

    Each crash rule fires once, so ``crash_rules + 1`` starts per server are enough; one still down after them
    stays down (and the report lists it). Returns what each server's last cleanup touched.
    """
    cleanups: dict[int, dict[str, int]] = {}
    for server in servers:
        for _ in range(crash_rules + 1):
            if not server.down:
                break
            try:
                cleanups[server.ms_id] = server.restart()
            except ServerDown:
                continue
    return cleanups


def start_background(servers: Iterable[Server]) -> tuple[tuple[str, ...], int]:
    """Each up server starts its background tasks; what started, and how long one full cycle of them takes."""
    started: list[str] = []
    cycle_ms = 0
    for server in servers:
        if server.down:
            continue
        rt = server.runner.rt
        before = {id(t) for t in rt.scheduler.pending()}
        server.start_background_tasks()
        started.extend(
            f"ms{server.ms_id} {t.label}"
            for t in rt.scheduler.pending()
            if id(t) not in before and t.owner == server.ms_id and t.periodic
        )
        cycle_ms = max(cycle_ms, background_cycle_ms(rt))
    return tuple(started), cycle_ms


def background_cycle_ms(rt: Runtime) -> int:
    """Simulated time from a server's start until each of its background tasks has run once.

    The scheduler polls first after ``snapshot.poll.interval`` s (§9.2), the GC after ``storage.cleanup.delay`` s
    when ``storage.cleanup.enabled`` (§10.5), StorPool's check after its period when that is above 0 (§8).
    """
    periods = [rt.config.number("snapshot.poll.interval")]
    if rt.config.flag("storage.cleanup.enabled"):
        periods.append(rt.config.number("storage.cleanup.delay"))
    recovery = rt.config.number(PERIOD_KEY)
    if recovery > 0:
        periods.append(recovery)
    return max(periods) * 1000


def waiting_runs(servers: Iterable[Server], found: str) -> Iterable[WaitingRun]:
    """The runs each up server still holds: at an idle clock, each waits for something that will never come."""
    for server in servers:
        if server.down:
            continue
        runner = server.runner
        for live in runner.live_runs():
            job = live.ctx.job_id
            yield WaitingRun(
                ms_id=server.ms_id,
                workflow_id=live.id,
                machine=live.machine,
                state=live.state,
                job_id=job or None,
                waits_for=waits_for(runner, live),
                found=found,
            )


def waits_for(runner: Runner, run: Run[Any]) -> str:
    """What a live run waits for: its generator step's request, a driver answer, a child run, or nothing at all."""
    if run.pending is not None:
        return describe_request(run.pending)
    events = runner.awaiting.get(run.id)
    if events:
        return "a driver answer that fires " + ", ".join(events)
    children = [c for c in runner.live_runs() if c.parent is run]
    if children:
        return "the end of " + ", ".join(f"{c.machine} {c.id}" for c in children)
    return "nothing: its step returned with no request pending"


def describe_request(request: Pending) -> str:
    """A request a generator step waits on, as a report names it."""
    if isinstance(request, BlockedForEver):
        return f"{request.operation}, which never answers (the thread blocks for good)"
    if isinstance(request, DriverDelete):
        return f"{request.driver.kind}.deleteAsync of {request.path}"
    return f"a {type(request).__name__}"


def unanswered_calls(record: RunRecord) -> Iterable[UnansweredCall]:
    """Every asynchronous call of the record whose answer never reached a callback, in the order they were made."""
    delivered = {d.call for d in record.deliveries if not d.dropped}
    dropped = {d.call for d in record.deliveries if d.dropped}
    for call in record.issued:
        if call.call in delivered:
            continue
        if call.call in record.never_answered:
            why = f"never answered: {record.never_answered[call.call]}"
        elif call.call in dropped:
            why = f"dropped: management server {call.ms_id} crashed before the answer reached it"
        else:
            why = "no answer noted: the driver never called back"
        yield UnansweredCall(call.call, call.ms_id, why)
