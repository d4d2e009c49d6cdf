"""The step contract (DESIGN.md layer 6): what a workflow step is handed, what it gives back, and how it waits.

A step is a function of one :class:`Turn`, listed by its module in a ``STEPS`` table under the name a definition's
``calls`` uses. It runs as the ``before`` callback of its transition in the workflow's ``transitions`` machine, so
the workflow moves only if the step returns. It comes in two shapes:

- a plain function that returns the next event to fire at once, or None to wait: for a driver answer (it called the
  driver with ``turn.reply(event)``), a queue slot, a child workflow, or an event it asked for with
  ``turn.later``;
- a generator that yields a :class:`Pending` request (a driver call, as CloudStack blocks on a future) each time it
  must wait, receives the answer, and returns the next event. The transition that starts it ends in a waiting state;
  the transition its answer fires is listed as ``Resumes(step)``, and resumes the generator where it yielded.

A step never fires an event itself: what it asks for (``later``, ``spawn``, ``post``) is an effect the runner
carries out once the step's own move is persisted, so every durable write of a step happens before anything it
started runs. What a workflow carries from step to step is its typed :class:`Context`; what a step raises becomes
the transition's ``on_error`` event, fired from the same state.
"""

from __future__ import annotations

import enum
import functools
from collections.abc import Callable, Generator, Iterator, Mapping
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeAlias, TypeVar, cast

import attrs

from snapshotfsm.drivers.base import Answer, Callback
from snapshotfsm.errors import CloudException, StepOrderError
from snapshotfsm.store.records import Record, Workflow
from snapshotfsm.strategies.base import SnapshotStrategy

if TYPE_CHECKING:
    from snapshotfsm.definitions import TransitionDef
    from snapshotfsm.orchestration.runtime import Runtime

Reply: TypeAlias = Callback
"""Where a driver delivers its answer: resumes the run that waits for it (made by :meth:`Turn.reply`)."""


class Pending(Protocol):
    """What a generator step yields where CloudStack blocks on a future: a call to start, answered later."""

    def start(self, on_answer: Reply) -> None:
        """Make the call; ``on_answer`` receives the answer. A call that throws raises here."""


@attrs.define(kw_only=True, eq=False)
class Context:
    """What every workflow carries: the ids its ``workflow`` row records, and the error of the last failed step.

    Ids are 0 until the step that learns them sets them (as a record's id is 0 until it is inserted). A subclass
    per workflow machine adds what its steps hand each other (``contexts.py``).
    """

    job_id: int = 0
    """The async job the workflow runs for (0: none)."""
    snapshot_id: int = 0
    volume_id: int = 0
    error: CloudException | None = None
    """What the step that failed raised; the error transition's steps read it and may replace it (a wrap)."""
    thread: str = attrs.field(default="", metadata={"summary": False})
    """The thread that runs the steps (spec §21.1, §21.3), as the lock table knows it; it owns their locks.

    Empty: the executor thread of the job the workflow runs for (:func:`job_thread`). Set by whoever starts the run
    when another thread runs it (the start-up thread, the storage GC, a ``BackupSnapshotTask`` try) or when the
    thread changes (the VM work job of an attached take); a workflow a step waits for runs on that step's thread.
    """

    def failure(self) -> CloudException:
        """The error an error transition handles (what the failed step raised, or what a rollback made of it)."""
        if self.error is None:
            raise StepOrderError(type(self).__name__, "error", "a step that fails")
        return self.error

    def summary(self) -> dict[str, object]:
        """What the ``workflow.context`` column keeps: each field that holds something, as JSON.

        Child contexts and records are left out, and so is a field marked ``metadata=NOT_SUMMARISED`` (what another
        row already keeps, such as the request in the job's ``job_cmd_info``). Keys come in field order.
        """
        out: dict[str, object] = {}
        for name, key in _summary_fields(type(self)):
            value = getattr(self, name)
            if value is None or value in ((), ""):
                continue
            if type(value) not in _SCALARS:
                value = _json(value)
                if value is None or value in ([], {}):
                    continue
            out[key] = value
        return out


def job_thread(job_id: int) -> str:
    """The executor thread of async job ``job_id`` (an API job or a VM work job), as its locks name it."""
    return f"job-{job_id}"


def thread_of(run: Run[Any]) -> str:
    """Who runs ``run``'s steps: its context's thread, else its job's executor thread, else the run itself."""
    ctx: Context = run.ctx
    if ctx.thread:
        return ctx.thread
    return job_thread(ctx.job_id) if ctx.job_id else f"workflow-{run.id}"


NOT_SUMMARISED: Mapping[str, object] = {"summary": False}
"""Field metadata: the workflow row's ``context`` does not repeat this field."""
_SCALARS = frozenset({int, str, bool, float})
_SUMMARY_FIELDS: dict[type, tuple[tuple[str, str], ...]] = {}


def _summary_fields(cls: type[Context]) -> tuple[tuple[str, str], ...]:
    """The fields a context's summary keeps, with their keys (a private ``_take`` is ``take``), once per class."""
    found = _SUMMARY_FIELDS.get(cls)
    if found is None:
        found = _SUMMARY_FIELDS[cls] = tuple(
            (f.name, f.name.lstrip("_")) for f in attrs.fields(cls) if f.metadata.get("summary", True)
        )
    return found


def _json(value: object) -> object:  # noqa: PLR0911
    """``value`` as JSON: records and child contexts are not kept, a strategy by its name, an error by class."""
    if value is None or type(value) in _SCALARS:
        return value
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, CloudException):
        return {"type": value.java_name, "message": value.message}
    if isinstance(value, SnapshotStrategy):
        return value.name
    if isinstance(value, (list, tuple)):
        return [_json(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _json(v) for k, v in value.items()}
    if isinstance(value, (Context, Record)):
        return None
    if attrs.has(type(value)):
        if type(value).__hash__ is not None:  # an attrs value is hashable when it is frozen
            return _frozen_json(value)
        fields = attrs.fields(cast("type[attrs.AttrsInstance]", type(value)))
        return {f.name: _json(getattr(value, f.name)) for f in fields}
    raise TypeError(f"a workflow context holds a {type(value).__name__}, which the workflow row cannot record")


@functools.lru_cache(maxsize=1024)
def _frozen_json(value: object) -> object:
    """A frozen value's JSON, once: a request or a plan is written at every move of its workflow."""
    fields = attrs.fields(cast("type[attrs.AttrsInstance]", type(value)))
    return {f.name: _json(getattr(value, f.name)) for f in fields}


def unset(machine: str, field: str, setter: str) -> StepOrderError:
    """The error for a context field read before the step that sets it ran (a definition that runs steps out of order).

    Context accessors raise it, so that an optional field reads as its type everywhere after its step.
    """
    return StepOrderError(machine, field, setter)


C = TypeVar("C", bound=Context)
X = TypeVar("X", bound=Context)


@attrs.define(eq=False)
class Run(Generic[C]):
    """One workflow in progress, as a management server holds it in memory (a crash loses it).

    The ``workflow`` row records where it got to; the context and a suspended generator step live only here.
    """

    workflow: Workflow
    ctx: C
    parent: Run[Any] | None = None
    resume_event: str | None = None
    """Fired on ``parent`` when this run ends."""
    suspended: StepGen | None = None
    """A generator step waiting on a driver answer, resumed by a ``Resumes`` transition."""
    pending: Pending | None = None
    """The request the suspended generator step waits on (what a report of a run that waits for good names)."""

    @property
    def machine(self) -> str:
        """The workflow machine's name."""
        return self.workflow.machine

    @property
    def state(self) -> str:
        """Where the workflow is now."""
        return self.workflow.state

    @property
    def id(self) -> int:
        """The ``workflow`` row's id."""
        return self.workflow.id


@attrs.frozen
class Later:
    """Effect: fire ``event`` on ``run`` from the scheduler, after ``delay_ms`` (in this server's memory)."""

    run: Run[Any]
    event: str
    delay_ms: int = 0
    label: str = ""


@attrs.frozen
class Spawn:
    """Effect: start a workflow of ``machine`` with ``ctx`` and fire ``event`` on it (now, or from the scheduler).

    With ``resume``, the spawning run waits for it and ``resume`` is fired on the spawner when it ends.
    """

    machine: str
    ctx: Context
    event: str | Callable[[Runtime, Any], str]
    """The first event, or a function of the new run's context that chooses it when the run starts."""
    parent: Run[Any] | None = None
    resume: str | None = None
    later: bool = False
    label: str = ""


Effect: TypeAlias = Later | Spawn


class Hooks(Protocol):
    """What the runner offers a turn: the reply helper and the server's live runs."""

    def reply(self, run: Run[Any], event: str) -> Reply:
        """A callback that resumes ``run`` with ``event`` when a driver answers."""

    def live_runs(self) -> Iterator[Run[Any]]:
        """The runs this server holds in memory, oldest first."""


@attrs.define(eq=False)
class Turn(Generic[C]):
    """What one step is handed: the run's context, the server's services, and why the step runs."""

    rt: Runtime
    run: Run[C]
    event: str
    answer: Answer | None
    """What the driver answered, on a transition fired by :meth:`reply`'s callback."""
    hooks: Hooks
    effects: list[Effect] = attrs.field(factory=list)
    outcome: str | None = None
    """What the step returned: the next event, or None to wait."""
    writes: int = 0
    """Durable writes the step committed so far (its crash points are ``<step>#<n>``)."""
    accesses: int = 0
    """Reads and writes the step made so far (its interleaving points are ``<step>@<n>``)."""
    row: TransitionDef | None = None
    """The transition whose step runs (set before the step is called): its ``on_error`` is taken if it raises."""
    replies: list[str] = attrs.field(factory=list)
    """The events of the driver answers this step asked for (:meth:`reply`), in order."""

    @property
    def ctx(self) -> C:
        """The workflow's context."""
        return self.run.ctx

    def reply(self, event: str) -> Reply:
        """The callback a driver answers to: it fires ``event`` on this run with the answer (the one resume helper)."""
        self.replies.append(event)
        return self.hooks.reply(self.run, event)

    def later(self, event: str, *, delay_ms: int = 0, label: str = "") -> None:
        """Fire ``event`` on this run from the scheduler once this step is persisted (a crash drops it)."""
        self.effects.append(Later(self.run, event, delay_ms, label))

    def post(self, run: Run[Any], event: str, *, label: str = "") -> None:
        """Fire ``event`` on another live run of this server, from the scheduler."""
        self.effects.append(Later(run, event, 0, label))

    def spawn(
        self,
        machine: str,
        ctx: X,
        event: str | Callable[[Runtime, X], str],
        *,
        resume: str | None = None,
        label: str = "",
    ) -> None:
        """Start a workflow once this step is persisted and run it at once; with ``resume``, wait for it to end.

        CloudStack calls it on this step's thread: the new run's steps run on it, unless ``ctx`` names another.
        """
        if not ctx.thread:
            ctx.thread = thread_of(self.run)
        self.effects.append(Spawn(machine, ctx, event, self.run if resume else None, resume, later=False, label=label))

    def schedule(self, machine: str, ctx: Context, event: str, *, label: str) -> None:
        """Start a workflow that runs from the scheduler, on its own (a task handed to an executor)."""
        self.effects.append(Spawn(machine, ctx, event, later=True, label=label))

    def live(self, cls: type[X]) -> Iterator[Run[X]]:
        """The live runs of this server whose context is a ``cls``."""
        for run in self.hooks.live_runs():
            if isinstance(run.ctx, cls):
                yield run


StepGen: TypeAlias = Generator[Pending, Answer | None, str | None]
"""A generator step: yields where it waits on a driver, receives the answer, returns the next event."""
PlainStep: TypeAlias = Callable[[Turn[Any]], str | None]
GeneratorStep: TypeAlias = Callable[[Turn[Any]], StepGen]


@attrs.frozen
class Resumes:
    """A transition that resumes a generator step where it yielded, with the driver's answer."""

    step: GeneratorStep


StepEntry: TypeAlias = PlainStep | GeneratorStep | Resumes
StepTable: TypeAlias = Mapping[str, StepEntry]
"""A module's steps by the names definitions use in ``calls``."""
