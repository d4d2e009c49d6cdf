"""A counterexample shown to a storage engineer: the run's log as text, a sequence diagram, the rows a violation names.

The explorer finds a run that breaks an invariant; what it hands over must let someone who knows CloudStack but not
this model see what happened. Three views, all read from the world's database and its record, none changing them:

- :func:`log_lines`: every ``transition_log`` row, one line each, in order, with the simulated time and the server.
- :func:`sequence_diagram`: Mermaid ``sequenceDiagram`` text, the API, the management servers, the drivers and the
  database as participants, the record's timeline (:attr:`RunRecord.timeline`) woven into the log by ``after_log``.
- :func:`offending_rows` and :func:`rows_text`: the rows a violation's subject names, as they are at the end.

The diagram is kept readable for a run of a hundred-odd transitions by a few choices. Consecutive transitions of one
workflow (same workflow row, same server, same millisecond, nothing else in between) are one note, the path of its
states, its middle elided past :data:`MAX_PATH` states: a take's ten bookkeeping steps say little one by one, and the
log lines keep each of them. More than :data:`MAX_QUIET` workflows in a row that wrote nothing but their own states
(idle storage GC passes while a policy's clock runs) are one note. Entity transitions (the rows CloudStack's tables
hold) are each a message to ``DB``, never merged: they are what the invariants judge. A note spanning every
participant marks each move of the simulated clock, since Mermaid draws no time axis. Crashes are drawn inside a red
``rect`` so they are found at a glance.
"""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Iterable, Iterator, Sequence

import attrs

from snapshotfsm.invariants import Violation
from snapshotfsm.record import Moment
from snapshotfsm.store.records import (
    AsyncJob,
    Failure,
    NamedLock,
    OpLock,
    ResourceCount,
    Snapshot,
    SnapshotStoreRef,
    StorageObject,
    UsageEvent,
    VmWorkJob,
    Workflow,
)
from snapshotfsm.store.store import Store

MAX_PATH = 6
"""States of a merged workflow note beyond which its middle is elided (first two, ``…``, last two)."""

MAX_QUIET = 3
"""Quiet workflows in a row (each a whole life at one moment, nothing else written) beyond which they are one note."""

CRASH_COLOUR = "rgb(255, 214, 214)"
"""The background of the ``rect`` a crash is drawn in."""
PREEMPT_COLOUR = "rgb(255, 243, 205)"
"""The schedule's preemptions: from the point where another task is let in until the preempted step resumes."""
_SCHEDULE = {
    "preempt": lambda who, text: [f"rect {PREEMPT_COLOUR}", f"Note over {who}: ⏸ {text}"],
    "resume": lambda who, text: [f"Note over {who}: ▶ {text}", "end"],
}
"""How a preemption's moments are drawn: what the task let in does sits in a box that the resume closes."""

DRIVER_LABELS = {
    "default": "default driver",
    "image": "image store",
    "storpool": "StorPool driver",
    "powerflex": "PowerFlex driver",
    "solidfire": "SolidFire driver",
    "ontap": "ONTAP driver",
    "managed": "managed-storage driver",
}
"""How a driver kind of the timeline is labelled; another kind is ``<kind> driver``."""

# fmt: off
_MERMAID_WORDS = frozenset((
    "participant", "actor", "loop", "alt", "else", "opt", "par", "and", "rect", "end", "note", "over",
    "activate", "deactivate", "title", "autonumber", "off", "critical", "option", "break", "box", "create",
    "destroy", "links", "link", "properties", "details", "left", "right", "of", "as", "api", "db",
))
# fmt: on
"""Words Mermaid's sequence grammar reads as keywords (case-insensitively), and our own participants' ids: a driver
kind among them is not used bare as a participant id."""

_ESCAPES = {"#": "#35;", ";": "#59;", "<": "#lt;", ">": "#gt;", "\n": " ", "\r": " "}
"""Characters Mermaid would read as syntax in a message: ``#`` starts an entity code, ``;`` ends a statement, ``<``
and ``>`` would be taken for HTML. ``:`` after the first colon of a message is text, so it stays."""

_ARROWS = {"api": "->>", "call": "->>", "api_answer": "-->>", "answer": "-->>", "silence": "--x", "dropped": "--x"}
"""The arrow of each kind of moment between two participants: a request, its answer, an answer that never comes."""

_LOG_COLUMNS = "id, machine, entity_id, source, event, dest, kind, job_id, ms_id, at_ms, overwrote"


@attrs.frozen
class _Row:
    """One ``transition_log`` row, as read (a plain tuple would make the renderers index by number)."""

    id: int
    machine: str
    entity_id: int
    source: str
    event: str
    dest: str
    kind: str
    job_id: int | None
    ms_id: int
    at_ms: int
    overwrote: str | None


def _rows(store: Store) -> list[_Row]:
    return [_Row(*row) for row in store.conn.execute(f"SELECT {_LOG_COLUMNS} FROM transition_log ORDER BY id")]


def seconds(at_ms: int) -> str:
    """Simulated time as seconds with milliseconds: ``602.000s``."""
    return f"{at_ms // 1000}.{at_ms % 1000:03d}s"


# --- the log as text -------------------------------------------------------------------------------------------------


def log_lines(store: Store) -> list[str]:
    """The run's transition log, one line per row in id order: ``  19    0.000s ms1 snapshot 1: A --Event--> B``.

    The row id leads, since violations cite log rows by it. A state that does not exist yet (a creation) reads
    ``(new)``, one that no longer does (a hard delete) ``(gone)``. The job follows the transition; marks close the
    line: ``[direct]`` for a CloudStack write around the machine, ``[remove]`` for a soft removal, ``[overwrote X]``
    when the row held X rather than the source the writer read.
    """
    rows = _rows(store)
    width = len(str(rows[-1].id)) if rows else 1
    clock = max((len(seconds(r.at_ms)) for r in rows), default=0)
    return [_log_line(row, width, clock) for row in rows]


def _log_line(row: _Row, width: int, clock: int) -> str:
    source = row.source or "(new)"
    dest = row.dest or "(gone)"
    text = f"{row.id:>{width}} {seconds(row.at_ms):>{clock}} ms{row.ms_id} {row.machine} {row.entity_id}: "
    text += f"{source} --{row.event}--> {dest}"
    if row.job_id is not None:
        text += f"  job {row.job_id}"
    if row.kind in ("direct", "remove"):
        text += f" [{row.kind}]"
    if row.overwrote is not None:
        text += f" [overwrote {row.overwrote}]"
    return text


# --- the sequence diagram ---------------------------------------------------------------------------------------------


def escape(text: str) -> str:
    """``text`` safe in a Mermaid message or note: the characters Mermaid reads as syntax as entity codes."""
    return "".join(_ESCAPES.get(c, c) for c in text)


def sequence_diagram(store: Store, timeline: Sequence[Moment] | None, *, title: str) -> str:
    """Mermaid ``sequenceDiagram`` text of the run: the timeline's moments woven into the transition log.

    A log row whose id is at most a moment's ``after_log`` was written before that moment; rows between two
    moments come between them, in id order. Participants, only those that appear, in this order: ``API``, each
    management server (``MS1``, ``MS2``), each driver (in the order they first appear), ``DB``. ``timeline`` None or
    empty draws the log alone (the world kept no timeline).
    """
    rows = _rows(store)
    moments = list(timeline or ())
    workflows = {name for name, d in store.definitions.items() if d.kind == "workflow"}
    cast = _Cast.of(rows, moments, workflows)
    lines = ["---", f"title: {json.dumps(title, ensure_ascii=False)}", "---", "sequenceDiagram"]
    lines += [f"    participant {pid}" if pid == label else f"    participant {pid} as {label}" for pid, label in cast]
    drawing = _Drawing(cast, workflows, rows)
    for item in _woven(rows, moments):
        drawing.add(item)
    lines += [f"    {line}" for line in drawing.finish()]
    return "\n".join(lines) + "\n"


def _woven(rows: Sequence[_Row], moments: Sequence[Moment]) -> Iterator[_Row | Moment]:
    """Rows and moments in the order they happened: every row up to a moment's ``after_log`` before it."""
    next_row = 0
    for moment in moments:
        while next_row < len(rows) and rows[next_row].id <= moment.after_log:
            yield rows[next_row]
            next_row += 1
        yield moment
    yield from rows[next_row:]


@attrs.frozen
class _Cast:
    """The participants: id and label of each, in the order they are declared."""

    order: tuple[tuple[str, str], ...]

    @classmethod
    def of(cls, rows: Sequence[_Row], moments: Sequence[Moment], workflows: set[str]) -> _Cast:
        names = [n for m in moments for n in (m.source, m.target)]
        servers = {r.ms_id for r in rows} | {int(n[2:]) for n in names if _is_server(n)}
        drivers = list(dict.fromkeys(n for n in names if n != "api" and not _is_server(n)))
        order: list[tuple[str, str]] = [("API", "API")] if "api" in names else []
        order += [(f"MS{ms}", f"MS{ms}") for ms in sorted(servers)]
        order += [(_driver_id(kind), DRIVER_LABELS.get(kind, f"{kind} driver")) for kind in drivers]
        if any(r.machine not in workflows for r in rows):
            order.append(("DB", "DB"))
        return cls(tuple(order))

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(self.order)

    def pair(self, one: str, other: str) -> str:
        """Two participants for a note over both, in the order they are declared (one, when they are the same)."""
        if one == other:
            return one
        ids = [pid for pid, _ in self.order]
        first, last = sorted((one, other), key=lambda pid: ids.index(pid) if pid in ids else len(ids))
        return f"{first},{last}"

    @property
    def span(self) -> str:
        """The participants a note across the whole diagram is written over."""
        first, last = self.order[0][0], self.order[-1][0]
        return first if first == last else f"{first},{last}"


def _is_server(name: str) -> bool:
    return name.startswith("ms") and name[2:].isdigit()


def _driver_id(kind: str) -> str:
    """A driver's participant id: its kind when Mermaid takes it as a plain name, else a name made from it."""
    if re.fullmatch(r"[a-z][a-z0-9_]*", kind) and kind not in _MERMAID_WORDS and not _is_server(kind):
        return kind
    return "driver_" + re.sub(r"\W", "_", kind)


def _pid(name: str) -> str:
    """The participant id of a timeline name: ``api``, ``ms<id>`` or a driver kind."""
    if name == "api":
        return "API"
    if _is_server(name):
        return f"MS{name[2:]}"
    return _driver_id(name)


@attrs.frozen
class _Block:
    """Lines of the diagram for one item: a clock note, a workflow's note (``quiet``: its whole life), or another."""

    kind: str
    lines: tuple[str, ...]
    at_ms: int
    machine: str = ""
    ms_id: int = 0


class _Drawing:
    """The diagram's blocks as items arrive; a workflow's consecutive transitions wait to be merged into one note."""

    def __init__(self, cast: _Cast, workflows: set[str], rows: Sequence[_Row]) -> None:
        self.cast = cast
        self.workflows = workflows
        self.lives: dict[tuple[str, int], int] = {}
        """How many log rows each workflow has: a merged note of all of them is its whole life."""
        for row in rows:
            if row.machine in workflows:
                key = (row.machine, row.entity_id)
                self.lives[key] = self.lives.get(key, 0) + 1
        self.blocks: list[_Block] = []
        self.chain: list[_Row] = []
        self.now: int | None = None

    def add(self, item: _Row | Moment) -> None:
        if isinstance(item, _Row) and item.machine in self.workflows and item.kind in ("event", "create"):
            if self.chain and not _continues(self.chain[-1], item):
                self._flush()
            self._clock(item.at_ms)
            self.chain.append(item)
            return
        self._flush()
        self._clock(item.at_ms)
        lines = [self._row(item)] if isinstance(item, _Row) else self._moment(item)
        self.blocks.append(_Block("item", tuple(lines), item.at_ms))

    def finish(self) -> list[str]:
        self._flush()
        return [line for block in _quietened(self.blocks, self.cast) for line in block.lines]

    def _clock(self, at_ms: int) -> None:
        """A note across the diagram when the simulated clock has moved (and at the start)."""
        if at_ms != self.now:
            self._flush()
            self.now = at_ms
            self.blocks.append(_Block("clock", (f"Note over {self.cast.span}: ⏱ {seconds(at_ms)}",), at_ms))

    def _flush(self) -> None:
        if not self.chain:
            return
        first = self.chain[0]
        created = first.kind == "create"
        states = [first.dest] if created else [first.source]
        states += [r.dest for r in self.chain[1:]] if created else [r.dest for r in self.chain]
        if len(states) > MAX_PATH:
            states = [*states[:2], f"… {len(states) - 4} more …", *states[-2:]]
        path = ("created " if created else "") + " → ".join(states)
        line = f"Note over MS{first.ms_id}: {escape(f'{first.machine} {first.entity_id}: {path}')}"
        quiet = created and self.lives.get((first.machine, first.entity_id)) == len(self.chain)
        kind = "quiet" if quiet else "item"
        self.blocks.append(_Block(kind, (line,), first.at_ms, first.machine, first.ms_id))
        self.chain = []

    def _row(self, row: _Row) -> str:
        text = f"{row.machine} {row.entity_id} {_change(row)}"
        if row.overwrote is not None:
            text += f" ⚠ overwrote {row.overwrote}"
        if row.machine in self.workflows:
            return f"Note over MS{row.ms_id}: {escape(text)}"
        return f"MS{row.ms_id}->>DB: {escape(text)}"

    def _moment(self, m: Moment) -> list[str]:
        source, target, text = _pid(m.source), _pid(m.target), escape(m.text)
        arrow = _ARROWS.get(m.kind)
        if arrow is not None:
            return [f"{source}{arrow}{target}: {text}"]
        if m.kind == "crash":
            what = m.text.removeprefix("crashes at ")
            note = f"CRASH at {what}" if what != m.text else f"CRASH: {m.text}"
            return [f"rect {CRASH_COLOUR}", f"Note over {source}: 💥 {escape(note)}", "end"]
        if m.kind == "node_left":
            return [
                f"Note over {self.cast.pair(source, target)}: {escape(f'{m.target} left: {m.source} runs {m.text}')}"
            ]
        if m.kind == "restart":
            return [f"Note over {source}: ↻ {text}"]
        if m.kind in _SCHEDULE:
            return _SCHEDULE[m.kind](source, text)
        return [f"Note over {source}: {escape(m.kind)}: {text}"]


def _quietened(blocks: Sequence[_Block], cast: _Cast) -> Iterator[_Block]:
    """The blocks, each stretch of more than :data:`MAX_QUIET` quiet workflows (clock notes between) as one note.

    A quiet workflow wrote nothing but its own states from creation to its end, at one moment (an idle storage GC
    pass, a poll that found nothing due): many in a row are the clock passing, and would push what matters out of
    sight. The note names them and the time they span; a clock note closing the stretch is kept, so that what
    follows still has its time.
    """
    stretch: list[_Block] = []
    for block in [*blocks, _Block("end", (), 0)]:
        if block.kind in ("clock", "quiet"):
            stretch.append(block)
            continue
        yield from _summary(stretch, cast)
        stretch = []
        yield block


def _summary(stretch: Sequence[_Block], cast: _Cast) -> Iterator[_Block]:
    quiet = [b for b in stretch if b.kind == "quiet"]
    if len(quiet) <= MAX_QUIET:
        yield from stretch
        return
    machines = dict.fromkeys(b.machine for b in quiet)
    counts = ", ".join(f"{sum(b.machine == m for b in quiet)} {m}" for m in machines)
    servers = sorted({b.ms_id for b in quiet})
    over = cast.pair(f"MS{servers[0]}", f"MS{servers[-1]}")
    when = f"{seconds(quiet[0].at_ms)} to {seconds(quiet[-1].at_ms)}"
    text = f"{len(quiet)} workflows that wrote nothing else ({counts}), {when}"
    yield _Block("item", (f"Note over {over}: {escape(text)}",), quiet[-1].at_ms)
    if stretch[-1].kind == "clock":
        yield stretch[-1]


def _continues(last: _Row, row: _Row) -> bool:
    """Whether ``row`` extends the workflow chain ending with ``last`` (same workflow, server and millisecond)."""
    same = (last.machine, last.entity_id, last.ms_id, last.at_ms) == (row.machine, row.entity_id, row.ms_id, row.at_ms)
    return same and row.kind == "event" and row.source == last.dest


def _change(row: _Row) -> str:
    """What a log row did to its entity, in words: ``Creating → CreatedOnPrimary (CreateRequested)``."""
    if row.kind == "create":
        return f"created {row.dest}"
    if row.kind == "delete":
        return f"{row.source} deleted ({row.event})"
    if row.kind == "remove":
        return f"{row.source} removed ({row.event})"
    if row.kind == "direct":
        return f"{row.source} → {row.dest} (direct write: {row.event})"
    return f"{row.source} → {row.dest} ({row.event})"


# --- the rows a violation names ---------------------------------------------------------------------------------------

TableRows = list[tuple[str, dict[str, object]]]


def offending_rows(store: Store, violation: Violation) -> TableRows:
    """The rows, as they are now, that ``violation``'s subject names: ``(table, row)`` pairs, in a stable order.

    ``snapshot N``: its ``snapshots`` row and its ``snapshot_store_ref`` rows. ``snapshot_store_ref N``: the ref and
    the ``sim_object`` rows with the path it names. ``job N (cmd)`` or ``async_job N``: the job and its VM work
    jobs (``vm_work_job`` rows, each with its ``async_job`` row). ``account N resource``: the ``resource_count``
    row. ``<kind> store N: path``: the ``sim_object`` rows of that path. ``op_lock K`` / ``named_lock K``: the lock,
    if still held. ``usage_event N (type)``: the event. Another machine's ``<machine> N``: its row (a workflow's in
    ``workflow``). An exception class: the ``failure`` rows that raised it. ``call ...``: nothing (the run's record
    holds calls, not the database). A subject not understood, or a table that is not there: nothing; never raises.
    """
    try:
        return list(_named_rows(store, violation.subject.strip()))
    except (sqlite3.Error, ValueError):
        return []


def _named_rows(store: Store, subject: str) -> Iterator[tuple[str, dict[str, object]]]:
    if found := re.fullmatch(r"(?:job (\d+) \(.*\)|async_job (\d+))", subject):
        yield from _job_rows(store, int(found[1] or found[2]))
        return
    if found := re.fullmatch(r"account (\d+) (\w+)", subject):
        yield from _select(store, ResourceCount.table, "account_id = ? AND type = ?", (int(found[1]), found[2]))
        return
    if found := re.fullmatch(r"(primary|image) store (\d+): (.+)", subject):
        yield from _objects(store, found[1], int(found[2]), found[3])
        return
    if found := re.fullmatch(r"(op_lock|named_lock) (.+)", subject):
        column = "key" if found[1] == OpLock.table else "name"
        table = OpLock.table if found[1] == OpLock.table else NamedLock.table
        yield from _select(store, table, f"{column} = ?", (found[2],))
        return
    if found := re.fullmatch(r"usage_event (\d+)(?: \(.*\))?", subject):
        yield from _select(store, UsageEvent.table, "id = ?", (int(found[1]),))
        return
    if found := re.fullmatch(r"(\w+) (\d+)", subject):
        yield from _entity_rows(store, found[1], int(found[2]))
        return
    if re.fullmatch(r"[A-Za-z_$][\w$]*(?:\.[A-Za-z_$][\w$]*)+", subject):  # a Java exception class
        yield from _select(store, Failure.table, "exc_type = ?", (subject,))


def _entity_rows(store: Store, machine: str, entity_id: int) -> Iterator[tuple[str, dict[str, object]]]:
    binding = store.bindings.get(machine)
    if binding is None:
        return
    table = binding.record.table
    if binding.record is Workflow:
        yield from _select(store, table, "id = ? AND machine = ?", (entity_id, machine))
    elif binding.record is AsyncJob:
        yield from _job_rows(store, entity_id)
    elif binding.record is VmWorkJob:
        yield from _select(store, table, "id = ?", (entity_id,))
        yield from _select(store, AsyncJob.table, "id = ?", (entity_id,))
    else:
        yield from _select(store, table, "id = ?", (entity_id,))
    if binding.record is Snapshot:
        yield from _select(store, SnapshotStoreRef.table, "snapshot_id = ?", (entity_id,))
    if binding.record is SnapshotStoreRef:
        for _, ref in _select(store, table, "id = ?", (entity_id,)):
            if ref["install_path"] is not None:
                kind = "primary" if ref["store_role"] == "Primary" else "image"
                yield from _objects(store, kind, int(str(ref["store_id"])), str(ref["install_path"]))


def _job_rows(store: Store, job_id: int) -> Iterator[tuple[str, dict[str, object]]]:
    """A job's row, then each VM work job it queued (``related`` is the parent's id, spec §4.3) with its job row."""
    yield from _select(store, AsyncJob.table, "id = ?", (job_id,))
    yield from _select(store, VmWorkJob.table, "id = ?", (job_id,))
    for _, work in _select(store, AsyncJob.table, "related = ? AND id <> ?", (str(job_id), job_id)):
        yield from _select(store, VmWorkJob.table, "id = ?", (work["id"],))
        yield AsyncJob.table, work


def _objects(store: Store, kind: str, store_id: int, path: str) -> Iterator[tuple[str, dict[str, object]]]:
    where = "store_kind = ? AND store_id = ? AND path = ?"
    yield from _select(store, StorageObject.table, where, (kind, store_id, path))


def _select(store: Store, table: str, where: str, params: Sequence[object]) -> Iterator[tuple[str, dict[str, object]]]:
    cursor = store.conn.execute(f"SELECT * FROM {table} WHERE {where} ORDER BY id", tuple(params))
    names = [d[0] for d in cursor.description]
    for row in cursor.fetchall():
        yield table, dict(zip(names, row, strict=True))


def rows_text(rows: Iterable[tuple[str, dict[str, object]]]) -> list[str]:
    """Each row on one line, ``table: col=value, ...``, its NULL columns left out."""
    return [
        f"{table}: " + ", ".join(f"{name}={value}" for name, value in row.items() if value is not None)
        for table, row in rows
    ]
