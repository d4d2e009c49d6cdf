"""Runs workflow machines: fire an event, run its step, persist the move, follow the next event (DESIGN.md layer 6).

A step is a function ``step(run) -> str | None`` registered under the name a definition's ``calls`` uses. It runs
as the transition's ``before`` callback, so the job's state changes only if the step returns; it returns the next
event, or None to wait (for a driver answer, a queue slot, the dispatcher). When a step raises one of CloudStack's
exceptions, the runner records a :class:`~snapshotfsm.store.records.Failure` and fires the transition's ``on_error``
event from the same state: that error transition's own step performs the rollback for that point.

What a run holds in memory (``Run``) is what CloudStack holds in its job threads: a crash loses it. The ``workflow``
row only records where each job got to.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import attrs
from transitions import EventData

from snapshotfsm.definitions import Definitions
from snapshotfsm.errors import CloudException, NotFound, NullPointerException, SnapshotFSMError, did_you_mean
from snapshotfsm.machines import StateMachine
from snapshotfsm.store.records import Failure, Workflow

if TYPE_CHECKING:
    from snapshotfsm.orchestration.runtime import Runtime
    from snapshotfsm.strategies.base import Payload, SnapshotStrategy, Take

log = logging.getLogger(__name__)

StepFn = Callable[["Run"], str | None]
STEPS: dict[str, StepFn] = {}


def step(name: str) -> Callable[[StepFn], StepFn]:
    """Register a step callback under the name definitions use in ``calls``."""

    def register(fn: StepFn) -> StepFn:
        if name in STEPS:
            raise ValueError(f"step {name!r} is registered twice ({STEPS[name].__qualname__}, {fn.__qualname__})")
        STEPS[name] = fn
        return fn

    return register


class StepWithoutErrorTransition(SnapshotFSMError, RuntimeError):
    """A step raised, but its transition names no ``on_error``: the definition misses an error transition."""


class MsCrash(BaseException):
    """Raised to stop a management server at a named step (fault plan ``crash``); unwinds to the engine."""

    def __init__(self, ms_id: int, where: str) -> None:
        self.ms_id = ms_id
        self.where = where
        super().__init__(f"management server {ms_id} crashed at {where}")


@attrs.define(eq=False)
class Run:
    """One workflow in progress, as a management server holds it in memory."""

    rt: Runtime
    workflow: Workflow
    job_id: int | None = None
    snapshot_id: int | None = None
    volume_id: int | None = None
    vm_id: int | None = None
    work_job_id: int | None = None
    account_id: int | None = None
    caller_id: int | None = None
    user_id: int | None = None
    params: dict[str, Any] = attrs.field(factory=dict)
    payload: Payload | None = None
    take: Take | None = None
    strategy: SnapshotStrategy | None = None
    answer: Any = None
    error: CloudException | None = None
    flags: dict[str, Any] = attrs.field(factory=dict)
    next_event: str | None = None
    continuation: Any = None
    """Synchronous CloudStack code suspended where it waits on a future (a generator); lost with the run."""
    parent: Run | None = None
    resume_event: str | None = None
    children: list[Run] = attrs.field(factory=list)

    @property
    def machine(self) -> str:
        """The workflow machine's name."""
        return self.workflow.machine

    @property
    def state(self) -> str:
        """Where the job is now."""
        return self.workflow.state

    def summary(self) -> dict[str, Any]:
        """What the ``workflow.context`` column keeps: ids, the request, flags, and the last error."""
        out: dict[str, Any] = {
            k: v
            for k, v in (
                ("job_id", self.job_id),
                ("snapshot_id", self.snapshot_id),
                ("volume_id", self.volume_id),
                ("vm_id", self.vm_id),
                ("work_job_id", self.work_job_id),
            )
            if v is not None
        }
        if self.params:
            out["params"] = self.params
        if self.flags:
            out["flags"] = self.flags
        if self.error is not None:
            out["error"] = {"type": self.error.java_name, "message": self.error.message}
        return out


class Runner:
    """Builds the workflow machines with their steps, and moves runs through them."""

    def __init__(self, rt: Runtime, definitions: Definitions) -> None:
        self.rt = rt
        bound = {name: _bind(fn) for name, fn in STEPS.items()}
        self.machines = {name: StateMachine(d, bound) for name, d in definitions.items() if d.kind == "workflow"}
        self.live: dict[int, Run] = {}

    def start_child(self, parent: Run, machine: str, run_fields: dict[str, Any], *, resume_event: str) -> Run:
        """A workflow that ``parent`` waits for, as a CloudStack thread waits on a future.

        When the child ends, ``parent`` is resumed with ``resume_event``; the child's outcome is on
        ``parent.children[-1]``.
        """
        fields = {"job_id": parent.job_id, "user_id": parent.user_id, **run_fields}
        child = self.start(machine, fields)
        child.parent = parent
        child.resume_event = resume_event
        parent.children.append(child)
        return child

    def start(self, machine: str, run_fields: dict[str, Any]) -> Run:
        """Create a workflow row in its machine's initial state and the in-memory run that drives it."""
        if machine not in self.machines:
            raise SnapshotFSMError(f"no workflow machine {machine!r}{did_you_mean(machine, self.machines)}")
        definition = self.machines[machine].definition
        workflow = self.rt.store.insert(
            Workflow(
                machine=machine,
                state=definition.initial,
                ms_id=self.rt.ms_id,
                created=self.rt.clock.timestamp(),
                updated=self.rt.clock.timestamp(),
            )
        )
        run = Run(rt=self.rt, workflow=workflow, **run_fields)
        self.live[workflow.id] = run
        return run

    def fire(self, run: Run, event: str) -> Run:
        """Fire ``event`` and keep going while steps name a next event; returns when the run waits or ends."""
        machine = self.machines[run.machine]
        while True:
            where = f"{run.machine}.{event}"
            if self.rt.faults.should_crash(self.rt.ms_id, where, self.rt.clock.now_ms):
                raise MsCrash(self.rt.ms_id, where)
            row = machine.definition.transition(run.state, event)
            run.next_event = None
            try:
                with self.rt.store.acting_for(run.job_id):
                    try:
                        machine.fire(run.workflow.id, run.state, event, run=run)
                    except NotFound as gone:
                        # CloudStack's DAO returns null for a row removed underneath the job; the code then
                        # dereferences it.
                        raise NullPointerException(f"{gone} (removed while the job ran)") from gone
            except CloudException as exc:
                if row is None or row.on_error is None:
                    raise StepWithoutErrorTransition(
                        f"{run.machine} {run.workflow.id}: step {row.calls if row else '?'} raised "
                        f"{exc.java_name}: {exc.message}, and transition ({run.state}, {event}) has no on_error"
                    ) from exc
                self._record_failure(run, event, row.calls or "", row.on_error, exc)
                run.error = exc
                event = row.on_error
                continue
            self._persist(run, event)
            if run.next_event is None:
                if machine.definition.state_def(run.state).terminal:
                    self.live.pop(run.workflow.id, None)
                    if run.parent is not None and run.resume_event is not None:
                        self.fire_later(run.parent, run.resume_event, label=f"{run.machine} {run.workflow.id} done")
                return run
            event = run.next_event

    def fire_later(self, run: Run, event: str, *, delay_ms: int = 0, label: str = "") -> None:
        """Fire ``event`` on ``run`` from the scheduler, in this server's memory (a crash drops it)."""
        incarnation = self.rt.incarnation

        def go() -> None:
            if self.rt.incarnation == incarnation and self.live.get(run.workflow.id) is run:
                self.fire(run, event)

        self.rt.scheduler.call_later(
            delay_ms, go, label=label or f"{run.machine} {run.workflow.id} {event}", owner=self.rt.ms_id
        )

    def _persist(self, run: Run, event: str) -> None:
        context = json.dumps(run.summary(), sort_keys=True)
        with self.rt.store.acting_for(run.job_id):
            run.workflow = self.rt.store.transit(
                run.workflow,
                event,
                context=context,
                snapshot_id=run.snapshot_id,
                volume_id=run.volume_id,
            )

    def _record_failure(self, run: Run, event: str, step_name: str, error_event: str, exc: CloudException) -> None:
        log.info("%s %s: step %s failed: %s", run.machine, run.workflow.id, step_name, exc.message)
        self.rt.store.insert(
            Failure(
                workflow_id=run.workflow.id,
                job_id=run.job_id,
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


def _bind(fn: StepFn) -> Callable[[EventData], None]:
    def callback(event_data: EventData) -> None:
        run: Run = event_data.kwargs["run"]
        run.next_event = fn(run)

    callback.__qualname__ = f"step {fn.__module__}.{fn.__qualname__}"
    return callback
