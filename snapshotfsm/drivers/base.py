"""Simulated storage (DESIGN.md layer 4): what every driver shares, and the fault plan.

A driver operation completes asynchronously, like CloudStack's ``AsyncCallFuture`` callbacks: the call returns at
once, the storage does its work after the operation's latency on the simulated clock, and the answer is then handed
to the management server that asked. Storage is not a server's memory: objects live in the ``sim_object`` table and
survive a crash, while an answer due to a server that crashed meanwhile is lost.

A fault plan (``snapshotfsm.faults``) makes the n-th call of a named operation fail: an error answer, an exception
thrown at the call, no answer at all, or a null answer (spec §5.6 step 6).

Some callers block on an asynchronous operation and get its answer on their own thread (spec §21.3: the image and
default primary drivers' ``deleteAsync`` send their command with a blocking ``sendMessage`` and complete the callback
themselves): :meth:`Driver.call_blocking` answers at once, with no simulated time passing, so that the callback's
writes fall inside the caller's transaction.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, ClassVar, Literal, Protocol

import attrs

from snapshotfsm.errors import CloudRuntimeException, DriverContractError, InvalidValue, NeverAnswered
from snapshotfsm.record import RunRecord
from snapshotfsm.store.records import DEFAULT_CHURN_FRACTION, SimVolume, StorageObject, Volume

if TYPE_CHECKING:
    from snapshotfsm.scheduler import Scheduler
    from snapshotfsm.store.store import Store

STORAGE_SYSTEM_SNAPSHOT = "STORAGE_SYSTEM_SNAPSHOT"
CAN_COPY_SNAPSHOT_BETWEEN_ZONES_AND_SAME_POOL_TYPE = "CAN_COPY_SNAPSHOT_BETWEEN_ZONES_AND_SAME_POOL_TYPE"
CAN_CREATE_VOLUME_FROM_SNAPSHOT = "CAN_CREATE_VOLUME_FROM_SNAPSHOT"
CAN_REVERT_VOLUME_TO_SNAPSHOT = "CAN_REVERT_VOLUME_TO_SNAPSHOT"
CAN_CREATE_TEMPLATE_FROM_SNAPSHOT = "CAN_CREATE_TEMPLATE_FROM_SNAPSHOT"
CAPABILITIES = frozenset(
    {
        STORAGE_SYSTEM_SNAPSHOT,
        CAN_COPY_SNAPSHOT_BETWEEN_ZONES_AND_SAME_POOL_TYPE,
        CAN_CREATE_VOLUME_FROM_SNAPSHOT,
        CAN_REVERT_VOLUME_TO_SNAPSHOT,
        CAN_CREATE_TEMPLATE_FROM_SNAPSHOT,
    }
)

FaultKind = Literal["error", "exception", "no_answer", "null_answer", "crash"]
FAULT_KINDS: tuple[FaultKind, ...] = ("error", "exception", "no_answer", "null_answer")
"""Kinds a driver fault can have (``crash`` is the kind recorded for a crash rule that fired)."""


@attrs.frozen
class Answer:
    """A driver's answer: CloudStack's ``Answer.getResult()``/``getDetails()`` plus what the operation produced."""

    result: bool
    details: str = ""
    path: str | None = None
    physical_size: int = 0
    parent_path: str | None = None
    volume_path: str | None = None
    """The volume's new path, when the operation moved the volume (a ``CopyCmdAnswer``'s ``newData.volume.path``);
    no simulated driver sets it."""
    checkpoint_path: str | None = None
    """Where a KVM incremental take saved its checkpoint (``SnapshotObjectTO.checkpointPath``, spec §16.4)."""


Callback = Callable[[Answer | None], None]


@attrs.frozen
class FaultRule:
    """Fail calls ``nth`` .. ``nth + times - 1`` of one operation.

    ``op`` is ``"<driver>.<operation>"`` (``default.takeSnapshot``), ``"<pool type>.<operation>"``
    (``RBD.takeSnapshot``), or a bare operation name for every driver (``copyAsync``).
    """

    op: str
    nth: int = attrs.field(default=1, validator=attrs.validators.ge(1))
    kind: FaultKind = attrs.field(default="error", validator=attrs.validators.in_(FAULT_KINDS))
    message: str = ""
    times: int = attrs.field(default=1, validator=attrs.validators.ge(1))

    @classmethod
    def parse(cls, text: str) -> FaultRule:
        """``"storpool.snapshotExport"``, ``"default.takeSnapshot@2"``, ``"copyAsync@1:no_answer"``.

        Raises:
            InvalidValue: the text is not ``OP[@N][:KIND]``.
        """
        op, _, kind = text.partition(":")
        op, _, nth = op.partition("@")
        if not op or (nth and not nth.isdigit()) or (kind and kind not in FAULT_KINDS):
            raise InvalidValue(
                "fault", text, f"OP[@N][:KIND] with KIND one of {', '.join(FAULT_KINDS)} (e.g. default.takeSnapshot@2)"
            )
        return cls(op, int(nth or 1), kind or "error")


def describe_answer(answer: Answer | None) -> str:
    """An answer in a few words, for a timeline: ``ok``, ``failed: <details>`` or ``null``."""
    if answer is None:
        return "null"
    return "ok" if answer.result else f"failed: {answer.details}"


class FaultSource(Protocol):
    """What drivers ask of a fault plan (``snapshotfsm.faults.FaultPlan``): does this call fail, and how."""

    def on_call(self, names: Iterable[str], at_ms: int) -> FaultRule | None:
        """Count a call known by ``names``; the rule that fires on it, if any."""


@attrs.define
class DriverEnv:
    """What drivers reach: the store for their inventory, the scheduler, the fault plan, and who is calling.

    ``incarnation`` changes when the calling server crashes and restarts, so that answers owed to the dead
    incarnation are not delivered to the new one.
    """

    store: Store
    scheduler: Scheduler
    faults: FaultSource
    ms_id: int
    incarnation: Callable[[], int]
    latency_ms: Mapping[str, int] = attrs.field(factory=dict)
    record: RunRecord = attrs.field(factory=RunRecord)
    """The world's notebook (:mod:`snapshotfsm.record`), shared by its servers."""
    future_wait_ms: Callable[[], int | None] = attrs.field(default=lambda: None)
    """How long a caller waits for an answer before its future fails; None: for ever, as upstream (spec §5.6 step 6).

    Set under the ``hardened`` profile's ``future_wait_is_bounded`` (``async.call.wait``).
    """

    def note(self, kind: str, source: str, target: str, text: str) -> None:
        """A moment of the run's timeline, when the record keeps one (a counterexample's sequence diagram)."""
        if self.record.timeline is not None:
            at_ms = self.scheduler.clock.now_ms
            self.record.note(kind, source, target, text, at_ms=at_ms, after_log=self.store.log_position())


ASYNC = "async"
"""An operation answered later on the simulated clock, through a callback (CloudStack's ``AsyncCallFuture``)."""
SYNC = "sync"
"""An operation answered at once (StorPool's HTTP API, the SSVM's download URL)."""


class Driver:
    """Base of every simulated driver: the shape of an asynchronous operation and the object inventory.

    ``operations`` declares every operation the driver calls (name: ``ASYNC`` or ``SYNC``): the fault catalogue
    lists them, a fault plan may name them, and calling one not declared is a driver bug caught at the call.
    """

    kind: ClassVar[str]
    store_kind: ClassVar[str]
    latency_defaults: ClassVar[Mapping[str, int]] = {}
    operations: ClassVar[Mapping[str, str]] = {"deleteAsync": ASYNC}

    def __init__(self, env: DriverEnv, store_id: int, *, aliases: Iterable[str] = ()) -> None:
        self.env = env
        self.store_id = store_id
        self.aliases = (self.kind, *aliases)

    def latency(self, op: str) -> int:
        """Simulated duration of ``op`` in ms: the engine's override, else the driver's default, else 1 s."""
        for name in (*(f"{a}.{op}" for a in self.aliases), op):
            if name in self.env.latency_ms:
                return self.env.latency_ms[name]
        return self.latency_defaults.get(op, 1000)

    def call(self, op: str, callback: Callback, effect: Callable[[], Answer]) -> None:
        """Start ``op``: check the fault plan, run ``effect`` on storage after the latency, then answer.

        Each call is noted in the run's record under a name of its own (``default.takeSnapshot#12``, from
        :meth:`RunRecord.new_call`), and so is each answer that reaches its callback (:meth:`RunRecord.delivered`),
        so that an invariant can check that every callback completes once. A call whose fault throws at once is not
        noted: the caller gets the exception, no callback is ever owed. An injected ``no_answer`` is noted as never
        answered. An answer that comes back after the server crashed (its incarnation changed, or the crash dropped
        the answer on its way) is noted as ``dropped``: it reaches no callback and does not count as delivered.
        Blocking calls (:meth:`call_blocking`) are answered on the caller's thread, with no callback, and are not
        noted.

        Raises:
            CloudRuntimeException: an injected ``exception`` fault, thrown at the call as a driver would.
        """
        env = self.env
        ms = f"ms{env.ms_id}"
        rule = self._fault(op, ASYNC, "async")
        env.note("call", ms, self.kind, op)
        if rule is not None and rule.kind == "exception":
            env.note("answer", self.kind, ms, "throws (injected)")
            self._injected(op, rule)
        clock = env.scheduler.clock
        name = env.record.new_call(f"{self.kind}.{op}", ms_id=env.ms_id, at_ms=clock.now_ms)
        incarnation = env.incarnation()
        wait_ms = env.future_wait_ms()

        def dropped() -> None:
            env.record.delivered(name, clock.now_ms, dropped=True)
            env.note("dropped", self.kind, ms, f"{op} answer lost: ms{env.ms_id} crashed since the call")

        def complete() -> None:
            answer = effect() if rule is None else self._injected(op, rule)
            env.scheduler.call_later(
                0, lambda: deliver(answer), label=f"answer {self.kind}.{op}", owner=env.ms_id, on_drop=dropped
            )

        def deliver(answer: Answer | None) -> None:
            if env.incarnation() != incarnation:
                dropped()
                return
            env.record.delivered(name, clock.now_ms)
            env.note("answer", self.kind, ms, f"{op}: {describe_answer(answer)}")
            callback(answer)

        if rule is not None and rule.kind == "no_answer":
            env.note("silence", self.kind, ms, f"{op}: never answers (injected)")
            if wait_ms is None:
                env.record.unanswered(name, f"injected {rule.kind} fault on {rule.op}: the storage never answers")
                return
            # Hardened (``future_wait_is_bounded``): the caller's wait ends; its future fails as a timeout.
            timed_out = Answer(result=False, details=f"{self.kind}.{op} timed out after {wait_ms // 1000} s")
            env.scheduler.call_later(
                wait_ms, lambda: deliver(timed_out), label=f"timeout {self.kind}.{op}", owner=env.ms_id, on_drop=dropped
            )
            return
        env.scheduler.call_later(self.latency(op), complete, label=f"{self.kind}.{op}")

    def call_sync(self, op: str, effect: Callable[[], Answer]) -> Answer:
        """A synchronous call (StorPool's HTTP API): the fault plan applies, the answer comes back at once.

        A ``no_answer`` or ``null_answer`` fault on a synchronous call is an error answer, as a timeout would be.

        Raises:
            CloudRuntimeException: an injected ``exception`` fault.
        """
        rule = self._fault(op, SYNC, "sync")
        ms = f"ms{self.env.ms_id}"
        self.env.note("call", ms, self.kind, op)
        if rule is None:
            answer = effect()
        else:
            if rule.kind == "exception":
                self.env.note("answer", self.kind, ms, f"{op}: throws (injected)")
            answer = self._injected(op, rule) or Answer(
                result=False, details=f"no answer from {self.kind} to {op} (timeout)"
            )
        self.env.note("answer", self.kind, ms, f"{op}: {describe_answer(answer)}")
        return answer

    def call_blocking(self, op: str, effect: Callable[[], Answer]) -> Answer | None:
        """An asynchronous operation whose caller blocks on it and is answered on its own thread (spec §21.3).

        The fault plan applies under the operation's own name and kinds, as to :meth:`call`: ``error`` is a failed
        answer, ``exception`` is thrown at the call, ``null_answer`` is None, and ``no_answer`` means the calling
        thread blocks for ever. No simulated time passes: the answer is what the storage did at once.

        Raises:
            CloudRuntimeException: an injected ``exception`` fault.
            NeverAnswered: an injected ``no_answer`` fault. The caller must let it through its transaction (which then
                rolls back, as the connection of a thread that never returns is never committed) and wait for ever.
        """
        rule = self._fault(op, ASYNC, "blocking")
        ms = f"ms{self.env.ms_id}"
        self.env.note("call", ms, self.kind, f"{op} (blocking)")
        answer: Answer | None
        if rule is None:
            answer = effect()
        elif rule.kind == "no_answer":
            self.env.note("silence", self.kind, ms, f"{op}: never answers (injected)")
            wait_ms = self.env.future_wait_ms()
            if wait_ms is None:
                raise NeverAnswered(f"{self.kind}.{op}")
            # Hardened (``future_wait_is_bounded``): the wait ends; the time it took is not modelled here.
            answer = Answer(result=False, details=f"{self.kind}.{op} timed out after {wait_ms // 1000} s")
        else:
            if rule.kind == "exception":
                self.env.note("answer", self.kind, ms, f"{op}: throws (injected)")
            answer = self._injected(op, rule)
        self.env.note("answer", self.kind, ms, f"{op}: {describe_answer(answer)}")
        return answer

    def _fault(self, op: str, declared: str, call: str) -> FaultRule | None:
        """The fault plan's rule for this call of ``op``, if one fires (the call refused unless ``op`` is declared)."""
        self._declared(op, declared, call)
        names = [*(f"{a}.{op}" for a in self.aliases), op]
        return self.env.faults.on_call(names, self.env.scheduler.clock.now_ms)

    def _injected(self, op: str, rule: FaultRule) -> Answer | None:
        """What an injected fault answers: ``error`` a failed answer, ``exception`` thrown, the others none.

        Raises:
            CloudRuntimeException: an ``exception`` fault.
        """
        if rule.kind == "exception":
            raise CloudRuntimeException(rule.message or f"{self.kind} driver threw on {op} (injected fault)")
        if rule.kind == "error":
            return Answer(result=False, details=rule.message or f"{op} failed on {self.kind} (injected fault)")
        return None

    def _declared(self, op: str, declared: str, call: str) -> None:
        """Refuse a call of ``op`` (an ``async``, ``sync`` or ``blocking`` call) unless it is declared ``declared``.

        A blocking call is one of an operation declared asynchronous, made by a caller that waits for its answer.
        """
        if self.operations.get(op) != declared:
            raise DriverContractError(
                f"driver {self.kind!r} ({type(self).__qualname__}) calls {call} operation {op!r}, which its "
                f"operations do not declare as {declared} (declared: {', '.join(sorted(self.operations)) or 'none'})"
            )

    def delete_snapshot(self, path: str, callback: Callback, *, checkpoint_path: str | None = None) -> None:
        """``deleteAsync`` of the snapshot at ``path`` on this store; deleting what is already gone succeeds.

        ``checkpoint_path`` is the KVM checkpoint the command names (spec §16.6): the host deletes it too.
        """
        self.call("deleteAsync", callback, lambda: self._delete(path, checkpoint_path))

    def delete_snapshot_blocking(self, path: str, *, checkpoint_path: str | None = None) -> Answer | None:
        """``deleteAsync`` as the image and default primary drivers make it: answered on the caller's thread (§21.3).

        Raises:
            CloudRuntimeException: an injected ``exception`` fault.
            NeverAnswered: an injected ``no_answer`` fault (see :meth:`call_blocking`).
        """
        return self.call_blocking("deleteAsync", lambda: self._delete(path, checkpoint_path))

    def _delete(self, path: str, checkpoint_path: str | None = None) -> Answer:
        for target in (path, checkpoint_path):
            found = self.find(target) if target is not None else None
            if found is not None:
                self.drop(found)
        return Answer(result=True, path=path)

    # --- inventory -------------------------------------------------------------------------------------------------

    def churn(self, volume_id: int) -> int:
        """How many bytes of the volume changed since its previous snapshot (``Inventory.set_volume_churn``)."""
        row = self.env.store.first(SimVolume, "volume_id = ?", (volume_id,))
        if row is not None:
            return row.churn
        return self.env.store.get(Volume, volume_id).size // DEFAULT_CHURN_FRACTION

    def put(self, path: str, **fields: object) -> StorageObject:
        """Record a new object at ``path`` on this store."""
        record = StorageObject(
            store_kind=self.store_kind,
            store_id=self.store_id,
            path=path,
            created_ms=self.env.scheduler.clock.now_ms,
            **fields,  # type: ignore[arg-type]
        )
        return self.env.store.insert(record)

    def find(self, path: str) -> StorageObject | None:
        """The present object at ``path`` on this store, or None."""
        return self.env.store.first(
            StorageObject,
            "store_kind = ? AND store_id = ? AND path = ? AND deleted_ms IS NULL",
            (self.store_kind, self.store_id, path),
        )

    def objects(self, *, volume_id: int | None = None) -> list[StorageObject]:
        """Every present object on this store, or only those of one volume.

        A volume's objects are found through its index: a host that acts on one volume's snapshots must not read
        every object of the pool, which grows with every volume it holds.
        """
        if volume_id is None:
            return self.env.store.find(
                StorageObject,
                "store_kind = ? AND store_id = ? AND deleted_ms IS NULL",
                (self.store_kind, self.store_id),
            )
        return self.env.store.find(
            StorageObject,
            "volume_id = ? AND store_kind = ? AND store_id = ? AND deleted_ms IS NULL",
            (volume_id, self.store_kind, self.store_id),
        )

    def drop(self, obj: StorageObject) -> None:
        """Mark ``obj`` deleted from storage; a rollback of the caller's transaction does not bring it back."""
        store, at = self.env.store, self.env.scheduler.clock.now_ms
        store.beside_transaction(lambda: store.update(obj, deleted_ms=at))
