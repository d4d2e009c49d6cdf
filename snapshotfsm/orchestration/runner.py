"""Runs workflow machines: fire an event, run its step, persist the move, carry out what the step asked for.

The runner fires a workflow's event through the one ``transitions`` machine built from its definition: the trigger's
check is the legality check, the step runs as the transition's ``before`` callback, and the destination the trigger
computed is what :meth:`Store.record_transition` writes (still a compare-and-swap on the source state). When a step
raises one of CloudStack's exceptions, the runner records a :class:`~snapshotfsm.store.records.Failure` and fires
the transition's ``on_error`` event from the same state: that error transition's own step performs the rollback for
that point.

What a run holds in memory (:class:`~snapshotfsm.orchestration.contract.Run`) is what CloudStack holds in its job
threads: a crash loses it. The ``workflow`` row only records where each job got to. Every step is called from
:meth:`Runner.fire` alone: the one place where, later, another task may be let in between two durable writes.
"""

from __future__ import annotations

import inspect
import json
import logging
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from transitions import EventData

from snapshotfsm.definitions import Definitions, TransitionDef
from snapshotfsm.errors import (
    CloudException,
    DefinitionError,
    DriverContractError,
    InvalidValue,
    MsCrash,
    NotFound,
    NullPointerException,
    SnapshotFSMError,
    StepWithoutErrorTransition,
    did_you_mean,
)
from snapshotfsm.faults import Access
from snapshotfsm.machines import RowTransition, StateMachine, Step
from snapshotfsm.orchestration.contract import (
    Context,
    Effect,
    GeneratorStep,
    Later,
    Reply,
    Resumes,
    Run,
    StepGen,
    StepTable,
    Turn,
    thread_of,
)
from snapshotfsm.orchestration.runtime import Runtime
from snapshotfsm.store.records import Failure, Workflow

log = logging.getLogger(__name__)


def _column(value: int) -> int | None:
    """A context id as its nullable column: 0 (not known yet) is NULL."""
    return value if value != 0 else None


class Runner:
    """Moves runs through their workflow machines; one per management server."""

    def __init__(
        self, rt: Runtime, machines: Mapping[str, StateMachine], contexts: Mapping[str, type[Context]]
    ) -> None:
        self.rt = rt
        self.machines = {name: m for name, m in machines.items() if m.definition.kind == "workflow"}
        self.contexts = contexts
        self.live: dict[int, Run[Any]] = {}
        self.awaiting: dict[int, list[str]] = {}
        """For each live run, the events of the driver answers it waits for (the callbacks :meth:`reply` made)."""
        self._turn: Turn[Any] | None = None
        self._firing: set[int] = set()
        """The runs whose :meth:`fire` is on the stack: a task let in at an interleaving point may not fire them."""
        self._moving = ""
        """The workflow event being fired, outside its step (its move persisted, its effects carried out)."""
        self._moving_count = 0
        rt.store.write_point = self._write_point
        if rt.faults.interleaves:
            rt.store.access_point = self._access_point

    # --- what a turn may ask of the runner (contract.Hooks) ---------------------------------------------------------

    def reply(self, run: Run[Any], event: str) -> Reply:
        """The callback a driver answers to: fires ``event`` on ``run``, with the answer, if the run is still live.

        A second answer to one call is a driver bug: it raises :class:`DriverContractError`.
        """
        delivered = False
        waits = self.awaiting.setdefault(run.id, [])
        waits.append(event)

        def deliver(answer: Any) -> None:
            nonlocal delivered
            if delivered:
                raise DriverContractError(
                    f"{run.machine} {run.id}: a driver answered twice to the call that {event} resumes (an "
                    "operation's callback is called once)"
                )
            if run.id in self._firing:
                self._when_free(lambda: deliver(answer), f"answer to {run.machine} {run.id} {event}")
                return
            delivered = True
            if event in waits:
                waits.remove(event)
            if self.live.get(run.id) is run:
                self.fire(run, event, answer=answer)

        return deliver

    def live_runs(self) -> Iterator[Run[Any]]:
        """The runs this server holds in memory, oldest first."""
        return iter(list(self.live.values()))

    # --- starting and firing ------------------------------------------------------------------------------------------

    def start(
        self, machine: str, ctx: Context, *, parent: Run[Any] | None = None, resume_event: str | None = None
    ) -> Run[Any]:
        """Create a workflow row in its machine's initial state and the in-memory run that drives it.

        Raises:
            SnapshotFSMError: no such workflow machine.
            InvalidValue: ``ctx`` is not the context class the machine's steps expect.
        """
        if machine not in self.machines:
            raise SnapshotFSMError(f"no workflow machine {machine!r}{did_you_mean(machine, self.machines)}")
        expected = self.contexts[machine]
        if type(ctx) is not expected:
            raise InvalidValue(
                f"context of {machine}",
                ctx,
                expected.__name__,
                message=f"workflow {machine} runs with a {expected.__name__}, not a {type(ctx).__name__}",
            )
        now = self.rt.clock.timestamp()
        workflow = self.rt.store.insert(
            Workflow(
                machine=machine,
                state=self.machines[machine].definition.initial,
                ms_id=self.rt.ms_id,
                job_id=_column(ctx.job_id),
                snapshot_id=_column(ctx.snapshot_id),
                volume_id=_column(ctx.volume_id),
                created=now,
                updated=now,
            )
        )
        run: Run[Any] = Run(workflow, ctx, parent=parent, resume_event=resume_event)
        self.live[workflow.id] = run
        return run

    def fire(self, run: Run[Any], event: str, *, answer: Any = None) -> Run[Any]:
        """Fire ``event`` and keep going while steps name a next event; returns when the run waits or ends.

        What the store writes meanwhile is logged as the run's job (``Store.acting_for``); a step may learn its job
        (``jobs.submit``), and its own move is then the job's. The strategies' environment is told which thread runs
        each step (``contract.thread_of``): that thread owns the locks the step takes.
        """
        rt, store, env = self.rt, self.rt.store, self.rt.strategy_env
        machine = self.machines[run.machine]
        previous_job, previous_thread = store.current_job_id, env.thread
        previous_moving = self._moving, self._moving_count
        self._firing.add(run.id)
        try:
            while True:
                where = f"{run.machine}.{event}"
                self._moving, self._moving_count = where, 0
                if rt.faults.should_crash(rt.ms_id, where, rt.clock.now_ms):
                    raise MsCrash(rt.ms_id, where)
                turn: Turn[Any] = Turn(rt, run, event, answer, self)
                answer = None
                store.current_job_id = _column(run.ctx.job_id)
                env.thread = thread_of(run)
                try:
                    dest = self._step(machine, run, event, turn)
                except CloudException as exc:
                    event = self._failed(run, turn, event, exc)
                    continue
                store.current_job_id = _column(run.ctx.job_id)
                self._persist(run, event, dest)
                self._apply(turn.effects)
                if turn.outcome is None:
                    if machine.definition.state_def(run.state).terminal:
                        self._end(run)
                    return run
                event = turn.outcome
        finally:
            self._firing.discard(run.id)
            store.current_job_id = previous_job
            env.thread = previous_thread
            self._moving, self._moving_count = previous_moving

    def _step(self, machine: StateMachine, run: Run[Any], event: str, turn: Turn[Any]) -> str:
        """Trigger ``event``: the legality check, then the step as the transition's callback; the destination."""
        previous, self._turn = self._turn, turn
        try:
            return machine.fire(run.id, run.state, event, turn=turn)
        except NotFound as gone:
            # CloudStack's DAO returns null for a row removed underneath the job; the code then dereferences it.
            raise NullPointerException(f"{gone} (removed while the job ran)") from gone
        finally:
            self._turn = previous

    def _write_point(self) -> None:
        """A step is about to commit a durable write: the crash point ``<step>#<n>`` (the n-th of this call)."""
        turn = self._turn
        if turn is None or turn.row is None or turn.row.calls is None:
            return
        turn.writes += 1
        where = f"{turn.row.calls}#{turn.writes}"
        if self.rt.faults.should_crash(self.rt.ms_id, where, self.rt.clock.now_ms):
            raise MsCrash(self.rt.ms_id, where)

    def where_now(self) -> str:
        """The interleaving point the next read or write is at (each call counts one).

        ``<step>@<n>`` inside a step, ``<machine>.<event>@<n>`` while its move is persisted, else
        ``<crash point>@<n>`` after the last crash point the server passed (a restart phase, a tick).
        """
        turn = self._turn
        if turn is not None and turn.row is not None and turn.row.calls is not None:
            turn.accesses += 1
            return f"{turn.row.calls}@{turn.accesses}"
        if self._moving:
            self._moving_count += 1
            return f"{self._moving}@{self._moving_count}"
        scheduler = self.rt.scheduler
        scheduler.where_count += 1
        return f"{scheduler.where}@{scheduler.where_count}"

    def _access_point(self, op: str, table: str, row: int | None) -> None:
        """A read or write is next (spec §21.1: every DAO call is its own statement, between which other threads run).

        Inside a transaction nothing is let in: its rows are held until it commits. Otherwise the fault plan may
        choose a ready task to run first; this step waits, on the stack, until that task reaches its own wait.
        """
        rt = self.rt
        if rt.store.conn.in_transaction:
            return
        where = self.where_now()
        task = rt.faults.interleave(rt.ms_id, where, Access(op, table, row), rt.scheduler.ready)
        if task is None:
            return
        ms = f"ms{rt.ms_id}"
        rt.note("preempt", ms, ms, f"preempted at {where} (before {op} {table}): {task.label} runs first")
        saved = (self._turn, self._moving, self._moving_count)
        store, env = rt.store, rt.strategy_env
        job, thread = store.current_job_id, env.thread
        try:
            rt.scheduler.preempt(task)
        finally:
            self._turn, self._moving, self._moving_count = saved
            store.current_job_id, env.thread = job, thread
        rt.note("resume", ms, ms, f"resumes at {where}")

    def _when_free(self, go: Callable[[], None], label: str) -> None:
        """A task let in at an interleaving point would fire a run whose step is on the stack: it waits for it.

        (A thread of CloudStack's would block on the job's lock; here it runs again once the scheduler is back.)
        """
        self.rt.scheduler.call_later(0, go, label=label, owner=self.rt.ms_id)

    def _failed(self, run: Run[Any], turn: Turn[Any], event: str, exc: CloudException) -> str:
        """A step raised: what it asked for is carried out, the failure recorded; the error event is next."""
        row = turn.row
        if row is None or row.on_error is None:
            raise StepWithoutErrorTransition(
                f"{run.machine} {run.id}: step {row.calls if row else '?'} raised "
                f"{exc.java_name}: {exc.message}, and transition ({run.state}, {event}) has no on_error"
            ) from exc
        self._apply(turn.effects)
        self._forget(run, turn.replies)
        self._record_failure(run, event, row.calls or "", row.on_error, exc)
        run.ctx.error = exc
        return row.on_error

    def _forget(self, run: Run[Any], events: list[str]) -> None:
        """The answers a failed step asked for are no longer what the run waits for (a call that threw owes none)."""
        waits = self.awaiting.get(run.id, [])
        for event in events:
            if event in waits:
                waits.remove(event)

    def fire_later(self, run: Run[Any], event: str, *, delay_ms: int = 0, label: str = "") -> None:
        """Fire ``event`` on ``run`` from the scheduler, in this server's memory (a crash drops it)."""
        rt = self.rt
        incarnation = rt.incarnation

        def go() -> None:
            if run.id in self._firing:
                self._when_free(go, label or f"{run.machine} {run.id} {event}")
                return
            if rt.incarnation == incarnation and self.live.get(run.id) is run:
                self.fire(run, event)

        rt.scheduler.call_later(delay_ms, go, label=label or f"{run.machine} {run.id} {event}", owner=rt.ms_id)

    def _apply(self, effects: list[Effect]) -> None:
        """Carry out what a step asked for, in the order it asked."""
        for effect in effects:
            if isinstance(effect, Later):
                self.fire_later(effect.run, effect.event, delay_ms=effect.delay_ms, label=effect.label)
                continue
            child = self.start(effect.machine, effect.ctx, parent=effect.parent, resume_event=effect.resume)
            event = effect.event if isinstance(effect.event, str) else effect.event(self.rt, child.ctx)
            if effect.later:
                self.fire_later(child, event, label=effect.label)
            else:
                self.fire(child, event)

    def _end(self, run: Run[Any]) -> None:
        self.live.pop(run.id, None)
        self.awaiting.pop(run.id, None)
        if run.parent is not None and run.resume_event is not None:
            self.fire_later(run.parent, run.resume_event, label=f"{run.machine} {run.id} done")

    def _persist(self, run: Run[Any], event: str, dest: str) -> None:
        """The move, its context, and the ids the row does not have yet (``workflow`` records where the job got to)."""
        ctx, row = run.ctx, run.workflow
        fields: dict[str, object] = {"context": json.dumps(ctx.summary())}
        for name in ("job_id", "snapshot_id", "volume_id"):
            value = _column(getattr(ctx, name))
            if getattr(row, name) != value:
                fields[name] = value
        run.workflow = self.rt.store.record_transition(row, event, dest, **fields)

    def _record_failure(self, run: Run[Any], event: str, step_name: str, error_event: str, exc: CloudException) -> None:
        log.info("%s %s: step %s failed: %s", run.machine, run.id, step_name, exc.message)
        self.rt.store.insert(
            Failure(
                workflow_id=run.id,
                job_id=_column(run.ctx.job_id),
                machine=run.machine,
                state=run.state,
                event=event,
                step=step_name,
                error_event=error_event,
                exc_type=exc.java_name,
                message=exc.message,
                at_ms=self.rt.clock.now_ms,
            )
        )


# --- steps as machine callbacks --------------------------------------------------------------------------------------


def bind_steps(steps: StepTable, definitions: Definitions) -> dict[str, Step]:
    """Each step as a ``before`` callback for the workflow machines (``machines.build_machines``).

    A generator step yields where it waits; the transition that answers it must leave the state where it waits and
    be listed as ``Resumes(step)``: that is checked here, for every transition calling a generator step.

    Raises:
        DefinitionError: a generator step whose transition's destination has no ``Resumes`` transition for it.
    """
    resume_at: dict[tuple[str, GeneratorStep], str] = {}
    for definition in definitions.values():
        for row in definition.transitions:
            entry = steps.get(row.calls or "")
            if isinstance(entry, Resumes):
                resume_at[(row.source, entry.step)] = row.event
    for definition in definitions.values():
        for row in definition.transitions:
            entry = steps.get(row.calls or "")
            generator = entry.step if isinstance(entry, Resumes) else entry
            if generator is None or not inspect.isgeneratorfunction(generator):
                continue
            if (row.dest, generator) not in resume_at:
                raise DefinitionError(
                    definition.path,
                    definition.name,
                    f"transition {row.number}: calls",
                    f"{row.calls!r} waits in {row.dest!r}, but no transition from there resumes it",
                )
    return {name: _callback(name, entry, resume_at) for name, entry in steps.items()}


def _row(event_data: EventData) -> TransitionDef:
    transition = event_data.transition
    if not isinstance(transition, RowTransition) or transition.row is None:
        raise SnapshotFSMError(f"{event_data.machine.name} a step runs outside a transition built from a definition")
    return transition.row


def _callback(name: str, entry: Any, resume_at: Mapping[tuple[str, GeneratorStep], str]) -> Step:
    """The ``before`` callback of step ``name``: it runs the step on the turn the runner passed to the trigger."""
    if isinstance(entry, Resumes):
        generator = entry.step

        def resumed(event_data: EventData) -> None:
            turn: Turn[Any] = event_data.kwargs["turn"]
            row = turn.row = _row(event_data)
            gen, turn.run.suspended, turn.run.pending = turn.run.suspended, None, None
            if gen is None:
                raise SnapshotFSMError(f"{turn.run.machine} {turn.run.id}: {name} resumes no waiting step")
            turn.outcome = _advance(turn, gen, turn.answer, resume_at[(row.dest, generator)])

        callback = resumed
    elif inspect.isgeneratorfunction(entry):

        def started(event_data: EventData) -> None:
            turn: Turn[Any] = event_data.kwargs["turn"]
            row = turn.row = _row(event_data)
            turn.outcome = _advance(turn, entry(turn), None, resume_at[(row.dest, entry)])

        callback = started
    else:

        def plain(event_data: EventData) -> None:
            turn: Turn[Any] = event_data.kwargs["turn"]
            turn.row = _row(event_data)
            turn.outcome = entry(turn)

        callback = plain
    callback.__qualname__ = f"step {name}"
    return callback


def _advance(turn: Turn[Any], gen: StepGen, answer: Any, resume_event: str) -> str | None:
    """Run a generator step to its next wait (its request started, the run suspended) or to its end.

    A call that throws has its exception thrown into the generator where it yielded, where CloudStack's own catch
    around the call sees it. What the generator raises propagates: the step failed.
    """
    error: CloudException | None = None
    while True:
        try:
            request = gen.throw(error) if error is not None else gen.send(answer)
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]
        try:
            request.start(turn.reply(resume_event))
        except CloudException as exc:
            error, answer = exc, None
            continue
        turn.run.suspended, turn.run.pending = gen, request
        return None
