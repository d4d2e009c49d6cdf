"""Lifecycle invariants: states and their log, locks, races, and callbacks (issue 13).

What every correct run keeps, whatever it did: each row's state is where its logged transitions took it, by moves
its machine allows; no write lost a state nobody read; two actors never both win one transition; nothing is left
mid-operation or locked once the world has quiesced and restarted; each asynchronous callback completes once. None
names a CloudStack method or a specific defect: each reads the definitions (``states/*.toml``), CloudStack's tables,
our ``transition_log`` and the run's record. Each database check is one query or a streaming pass over a cursor;
none loads a table whole.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator

from snapshotfsm.errors import InvalidValue
from snapshotfsm.invariants.base import Input, Invariant, Run, Violation, When, invariant
from snapshotfsm.record import RunRecord
from snapshotfsm.store.records import NamedLock, OpLock, TransitionLog, Workflow
from snapshotfsm.store.schema import columns
from snapshotfsm.store.store import Binding, Store

LOG = TransitionLog.table
METHOD = re.compile(r"[A-Za-z_$][\w$]*(\.[A-Za-z_$][\w$]*)*( \(.+\))?")
"""How a write outside the machine names the code that made it: ``Class.method``, optionally a note in parentheses."""


def _entity_bindings(store: Store) -> Iterator[Binding]:
    """The bindings of the entity machines (CloudStack's tables), in the definitions' order."""
    for name, binding in store.bindings.items():
        if store.definitions[name].kind == "entity":
            yield binding


def _marks(count: int) -> str:
    return ", ".join("?" * count)


@invariant("no-transitional-state", When.RESTARTED, Input.DATABASE)
def no_transitional_state(run: Run) -> Iterator[Violation]:
    """No entity is left in a transitional or waiting state, and no job is unfinished, after quiescence and restart.

    The definitions tag the states where an operation is under way (``transitional``: a snapshot Creating, a
    volume Snapshotting, a ref Destroying, a job IN_PROGRESS) or where a job waits its turn (``waiting``: a work job
    Queued). Once nothing more will happen and every server has run its start-up cleanup (spec §10), a row still in
    such a state is an operation nobody will finish: CloudStack shows it as busy for good, and refuses what it
    blocks. Soft-removed rows count too (the cleanup of §10.5 reads them), and say so.
    """
    store = run.store
    for binding in _entity_bindings(store):
        definition = store.definitions[binding.machine]
        unfinished = [s.name for s in definition.states if s.transitional or s.waiting]
        if not unfinished:
            continue
        table, column = binding.record.table, binding.column
        removed = "removed" if "removed" in columns(binding.record) else "NULL"
        query = f"SELECT id, {column}, {removed} FROM {table} WHERE {column} IN ({_marks(len(unfinished))}) ORDER BY id"
        for entity_id, value, gone in store.conn.execute(query, [binding.stored(s) for s in unfinished]):
            state = binding.state_of(value)
            kind = "transitional" if definition.state_def(state).transitional else "waiting"
            note = " (soft-removed)" if gone is not None else ""
            yield Violation(
                "no-transitional-state",
                f"{binding.machine} {entity_id}",
                f"is {state}{note}, a {kind} state, after quiescence and restart: nothing will finish it",
            )


@invariant("locks-released", When.QUIESCENT, Input.DATABASE)
def locks_released(run: Run) -> Iterator[Violation]:
    """Every lock is released once nothing more will happen: no ``op_lock`` row, no named (global) lock.

    Locks live in two tables (spec §21.1): ``op_lock`` rows (``acquireInLockTable``: the strategies' snapshot and
    chain locks, the VM work queue's lock), freed by their thread's end, their server's restart or a peer's
    node-left; and the GlobalLocks of ``named_lock`` (the storage GC's, the scheduler's poll, the policy lock),
    freed by an unlock or their server's crash. A lock still held when no thread will ever run again blocks every
    later operation on what it guards: the next delete, GC pass or policy change is refused or waits for good.
    """
    conn = run.store.conn
    for table, name in ((OpLock.table, "key"), (NamedLock.table, "name")):
        query = f"SELECT {name}, ms_id, owner, acquired_on FROM {table} ORDER BY id"
        for key, ms_id, owner, since in conn.execute(query):
            yield Violation(
                "locks-released",
                f"{table} {key}",
                f"still held by management server {ms_id}, thread {owner or '?'}, since {since}",
            )


@invariant("state-matches-log", When.ALWAYS, Input.DATABASE)
def state_matches_log(run: Run) -> Iterator[Violation]:
    """Every row's state is the destination of its last logged transition; no row moved or vanished unlogged.

    Rows of a table a machine drives change state only through the store's one write path, which logs every move
    (``Store.transit``, the named direct write, creation, soft and hard delete). A row whose state differs from its
    last log row, a row with no log row at all, or a logged row gone without a logged delete was written around
    that path: its history can no longer explain it, and no invariant reading the log can be trusted for it.
    """
    store = run.store
    for binding, machines in _tables(store):
        yield from _rows_against_log(store, binding)
        yield from _logged_rows_gone(store, binding, machines)


def _tables(store: Store) -> Iterator[tuple[Binding, list[str]]]:
    """Each table a machine drives, with the machines whose log rows are its rows (every workflow's: ``workflow``)."""
    workflows: list[str] = []
    shared: Binding | None = None
    for name, binding in store.bindings.items():
        if binding.record is Workflow:
            workflows.append(name)
            shared = shared or binding
        else:
            yield binding, [name]
    if shared is not None:
        yield shared, workflows


def _rows_against_log(store: Store, binding: Binding) -> Iterator[Violation]:
    """Each row of the table against its last log row, in one query (the log's index finds each last row)."""
    table, column = binding.record.table, binding.column
    shared = binding.record is Workflow
    query = (
        f"SELECT t.id, t.{column}, {'t.machine' if shared else '?'}, l.dest, l.kind, l.event FROM {table} t"
        f" LEFT JOIN {LOG} l ON l.id = (SELECT MAX(m.id) FROM {LOG} m"
        f" WHERE m.machine = {'t.machine' if shared else '?'} AND m.entity_id = t.id) ORDER BY t.id"
    )
    params = [] if shared else [binding.machine, binding.machine]
    for entity_id, value, machine, dest, kind, event in store.conn.execute(query, params):
        state = str(value) if shared else binding.state_of(value)
        subject = f"{machine} {entity_id}"
        if dest is None:
            yield Violation("state-matches-log", subject, f"is {state} but no transition of it was ever logged")
        elif kind == "delete":
            yield Violation("state-matches-log", subject, f"is {state} but its log ends with a delete ({event})")
        elif dest != state:
            yield Violation(
                "state-matches-log", subject, f"is {state} but its last logged transition ({event}) ends at {dest}"
            )


def _logged_rows_gone(store: Store, binding: Binding, machines: list[str]) -> Iterator[Violation]:
    """Entities of ``machines`` whose last log row is not a delete, with no row in the table."""
    table = binding.record.table
    same = " AND t.machine = l.machine" if binding.record is Workflow else ""
    query = (
        f"SELECT l.machine, l.entity_id, l.dest FROM {LOG} l"
        f" JOIN (SELECT MAX(id) AS last FROM {LOG} WHERE machine IN ({_marks(len(machines))})"
        " GROUP BY machine, entity_id) m ON l.id = m.last"
        f" WHERE l.kind != 'delete' AND NOT EXISTS (SELECT 1 FROM {table} t WHERE t.id = l.entity_id{same})"
        " ORDER BY l.id"
    )
    for machine, entity_id, dest in store.conn.execute(query, machines):
        yield Violation(
            "state-matches-log", f"{machine} {entity_id}", f"is gone, but its last logged transition left it {dest}"
        )


@invariant("legal-transitions", When.ALWAYS, Input.DATABASE)
def legal_transitions(run: Run) -> Iterator[Violation]:
    """Every logged move is one its machine allows; every write outside the machine names its code and a real state.

    An ``event`` row is a transition of its machine from its source to its destination (``states/*.toml``); a
    ``direct`` row (CloudStack's writes that bypass the machine, spec §1.2 notes, §3) names the method that made it,
    not an event, and lands in a state of the machine; a creation starts in a state; a soft remove keeps the state
    and a delete ends the row, each naming its method. Anything else is a move the model of CloudStack does not
    have, so the run cannot be CloudStack's. A streaming pass over the log.
    """
    store = run.store
    query = f"SELECT id, machine, entity_id, source, event, dest, kind FROM {LOG} ORDER BY id"
    for seq, machine, entity_id, source, event, dest, kind in store.conn.execute(query):
        problem = _illegal(store, machine, source, event, dest, kind)
        if problem is not None:
            yield Violation("legal-transitions", f"{machine} {entity_id}", f"log row {seq}: {problem}")


def _illegal(store: Store, machine: str, source: str, event: str, dest: str, kind: str) -> str | None:  # noqa: PLR0911
    """Why one log row is not a legal move of its machine, or None."""
    definition = store.definitions.get(machine)
    if definition is None:
        return f"no machine {machine!r}"
    states = definition.state_names
    if kind == "event":
        row = definition.transition(source, event)
        if row is None:
            return f"{event} is not a transition of {machine} from {source!r}"
        return None if row.dest == dest else f"{source} --{event}--> goes to {row.dest}, not {dest}"
    if kind == "create":
        return None if source == "" and dest in states else f"a creation in {dest!r}, not a state of {machine}"
    if kind not in ("direct", "remove", "delete"):
        return f"unknown kind of write {kind!r}"
    if not METHOD.fullmatch(event) or event in definition.event_names:
        return f"a {kind} write by {event!r}, which does not name the CloudStack method that made it"
    if kind == "direct":
        return None if dest in states else f"a direct write of {dest!r}, not a state of {machine}"
    if kind == "remove":
        return None if source == dest and dest in states else f"a soft remove that moved {source} to {dest}"
    return None if dest == "" and source in states else f"a delete from {source!r} that left {dest!r}"


@invariant("no-blind-overwrite", When.ALWAYS, Input.DATABASE)
def no_blind_overwrite(run: Run) -> Iterator[Violation]:
    """No write replaced a state it did not read.

    A transition is checked against the state its caller read; the log's ``overwrote`` says what the row really
    held when that differed (a table without compare-and-swap, spec §11, or a direct write over a stale record).
    The state so replaced, and what the actor that put it there was doing, is lost without anyone deciding it. A
    write that put back the very state the row held changed nothing and is not counted; an event CloudStack refuses
    and only logs writes nothing, so it is not in the log.
    """
    query = (
        f"SELECT id, machine, entity_id, source, event, dest, kind, overwrote, ms_id, job_id FROM {LOG}"
        " WHERE overwrote IS NOT NULL AND overwrote != dest ORDER BY id"
    )
    for seq, machine, entity_id, source, event, dest, kind, overwrote, ms_id, job_id in run.store.conn.execute(query):
        yield Violation(
            "no-blind-overwrite",
            f"{machine} {entity_id}",
            f"log row {seq}: {kind} {event} by {_actor(ms_id, job_id)} read {source} and wrote {dest} over {overwrote}",
        )


@invariant("one-winner", When.ALWAYS, Input.DATABASE)
def one_winner(run: Run) -> Iterator[Violation]:
    """When two actors race for one transition of one entity, at most one of them makes it.

    Two log rows of one entity with the same source and event, the later one written over another state
    (``overwrote``) with no move back to that source in between: both actors read the same state and both logged
    the same move, the later from a stale read. With a compare-and-swap the loser writes nothing (spec §11); without
    one, the move's work (a take, a backup, a delete) runs twice for one entity.
    """
    query = (
        f"SELECT b.id, b.machine, b.entity_id, b.source, b.event, b.ms_id, b.job_id, a.id, a.ms_id, a.job_id"
        f" FROM {LOG} b JOIN {LOG} a ON a.machine = b.machine AND a.entity_id = b.entity_id AND a.id < b.id"
        " AND a.source = b.source AND a.event = b.event AND a.kind = b.kind"
        " WHERE b.overwrote IS NOT NULL AND b.kind IN ('event', 'direct')"
        f" AND NOT EXISTS (SELECT 1 FROM {LOG} c WHERE c.machine = b.machine AND c.entity_id = b.entity_id"
        " AND c.id > a.id AND c.id < b.id AND c.dest = b.source)"
        " ORDER BY b.id, a.id"
    )
    reported = 0
    for seq, machine, entity_id, source, event, ms_id, job_id, first, first_ms, first_job in run.store.conn.execute(
        query
    ):
        if seq == reported:
            continue
        reported = seq
        yield Violation(
            "one-winner",
            f"{machine} {entity_id}",
            f"{source} --{event}--> logged twice: log row {first} ({_actor(first_ms, first_job)}) and log row {seq}"
            f" ({_actor(ms_id, job_id)}), both from the same read",
        )


def _actor(ms_id: int, job_id: int | None) -> str:
    return f"management server {ms_id}" + (f", job {job_id}" if job_id is not None else "")


@invariant("callbacks-once", When.QUIESCENT, Input.RECORD)
def callbacks_once(run: Run) -> Iterator[Violation]:
    """Each asynchronous driver call is answered once: its callback completes exactly once, never twice.

    CloudStack's ``AsyncCallFuture`` callbacks move rows and end jobs; a callback run twice does that work twice,
    one never run leaves its caller waiting for good. The run's record names every asynchronous call and notes
    each answer: delivered to its callback, or dropped because the server that made the call crashed meanwhile.
    Once nothing more will happen, each call has one answer, delivered, unless its server died meanwhile (a
    dropped answer) or it is noted as never answered (an injected ``no_answer``: the quiesce report names who
    waits for it). A delivery of a call never made is an answer from nowhere.

    Raises:
        InvalidValue: the run kept no record.
    """
    record = _record(run)
    delivered = Counter(d.call for d in record.deliveries if not d.dropped)
    dropped = Counter(d.call for d in record.deliveries if d.dropped)
    made: set[str] = set()
    for call in record.issued:
        made.add(call.call)
        problem = _answers(call.call, delivered[call.call], dropped[call.call], record)
        if problem is not None:
            yield Violation("callbacks-once", f"call {call.call}", f"made by management server {call.ms_id}: {problem}")
    for name in sorted(set(delivered) | set(dropped), key=_call_number):
        if name not in made:
            yield Violation("callbacks-once", f"call {name}", "answered, but the record has no such call")


def _record(run: Run) -> RunRecord:
    if run.record is None:
        raise InvalidValue("run.record", None, "the run's record (callbacks-once reads its calls and deliveries)")
    return run.record


def _answers(call: str, delivered: int, dropped: int, record: RunRecord) -> str | None:
    """What is wrong with the answers one call got, or None."""
    if delivered + dropped > 1:
        return f"answered {delivered + dropped} times ({delivered} delivered, {dropped} dropped)"
    if delivered and call in record.never_answered:
        return f"noted never answered ({record.never_answered[call]}), yet delivered"
    if not delivered and not dropped and call not in record.never_answered:
        return "never answered, though its server did not crash and nothing said it never would be"
    return None


def _call_number(name: str) -> tuple[int, str]:
    number = name.rpartition("#")[2]
    return (int(number) if number.isdigit() else 0, name)


INVARIANTS: tuple[Invariant, ...] = (
    state_matches_log,
    legal_transitions,
    no_blind_overwrite,
    one_winner,
    locks_released,
    callbacks_once,
    no_transitional_state,
)
"""This module's invariants: those that always hold first, then those of quiescence, then of a restart."""
