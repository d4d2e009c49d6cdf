"""The durable store: records in SQLite, and the one primitive that moves an entity from state to state.

``Store.transit`` is the only code that writes a state column. In one SQLite transaction it checks the expected
state (the legality check is the ``transitions`` machine built from the definition; the write is the compare-and-swap
on the state and, where CloudStack has one, ``update_count``), writes the new state, bumps the counter and appends a
``transition_log`` row. A lost race raises :class:`~snapshotfsm.errors.ConcurrencyError` having written nothing.
CloudStack's own writes that bypass its state machines (spec §1.2 notes, §3) go through ``write_state_directly`` and
are logged as such, never as silent sets.

Several processes (management servers, each with its ``ms_id``) may share one file: WAL mode, a busy timeout, and
``BEGIN IMMEDIATE`` so that a transaction takes the write lock before it reads.
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
import urllib.parse
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import attrs
import sqlite_utils

from snapshotfsm.clock import SimClock
from snapshotfsm.definitions import Definitions, project_definitions
from snapshotfsm.errors import ConcurrencyError, InvalidValue, NotFound, StoreError, did_you_mean
from snapshotfsm.machines import StateMachine
from snapshotfsm.profiles import Profile, get_profile
from snapshotfsm.store.records import ALL_RECORDS, R, Record, Snapshot, TransitionLog, Workflow
from snapshotfsm.store.schema import APPLICATION_ID, SCHEMA_VERSION, Column, columns, copy_schema, create_schema

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping, Sequence

BUSY_TIMEOUT_MS = 30_000


@attrs.frozen
class Binding:
    """Where a machine keeps its state: the record, the column, the counter and how a state is stored."""

    machine: str
    record: type[Record]
    column: str
    counter: str | None
    updated: str | None
    compare_state: bool
    ordinals: Mapping[str, int] | None = None

    def stored(self, state: str) -> str | int:
        """The value written to the column for ``state`` (``async_job`` stores ordinals, spec §4.1)."""
        return self.ordinals[state] if self.ordinals is not None else state

    def state_of(self, value: object) -> str:
        """The state name held in a column value."""
        if self.ordinals is not None:
            for name, ordinal in self.ordinals.items():
                if ordinal == value:
                    return name
            return str(value)
        return str(value)


def make_bindings(definitions: Definitions, profile: Profile) -> dict[str, Binding]:
    """Bind every machine to its table: entity machines by their ``table``/``column``, workflows to ``workflow``."""
    by_table = {cls.table: cls for cls in ALL_RECORDS}
    out: dict[str, Binding] = {}
    for name, d in definitions.items():
        if d.kind == "workflow":
            out[name] = Binding(name, Workflow, "state", "update_count", "updated", compare_state=True)
            continue
        record = by_table[d.table]
        cols = columns(record)
        counter = "update_count" if "update_count" in cols else None
        updated = next((c for c in ("updated", "last_updated") if c in cols), None)
        ordinals = {s.name: s.ordinal for s in d.states if s.ordinal is not None} or None
        compare = profile.snapshot_compare_and_swap or record is not Snapshot
        out[name] = Binding(name, record, d.column, counter, updated, compare, ordinals)
    return out


def _inspect(path: Path) -> None:
    """Refuse, touching nothing, an existing file that is not ours or not of this schema version.

    A file with no schema at all (``application_id`` and ``user_version`` 0, no tables) passes: it is initialised.
    The file is opened read-only and, unless another connection has its WAL open, ``immutable``: a read-only
    connection to a WAL database would otherwise leave ``-wal`` and ``-shm`` files behind.
    """
    live = any(Path(f"{path}{suffix}").exists() for suffix in ("-wal", "-shm"))
    uri = f"file:{urllib.parse.quote(str(path))}?mode=ro" + ("" if live else "&immutable=1")
    try:
        conn = sqlite3.connect(uri, uri=True)
        try:
            app = conn.execute("PRAGMA application_id").fetchone()[0]
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            tables = conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:
        raise StoreError(str(path), f"not a SQLite database ({exc}); nothing was changed") from exc
    if app != APPLICATION_ID:
        if app == 0 and version == 0 and tables == 0:
            return
        raise StoreError(
            str(path),
            f"not a snapshotfsm database (application_id {app:#x}, user_version {version}, {tables} schema objects);"
            " nothing was changed",
        )
    if version != SCHEMA_VERSION:
        raise StoreError(
            str(path),
            f"schema version {version}, but this snapshotfsm reads version {SCHEMA_VERSION}; nothing was changed",
        )


def _enable_wal(db: sqlite_utils.Database) -> None:
    """Switch the file to WAL, waiting (up to the busy timeout) for servers that open a new file at the same moment.

    Changing the journal mode upgrades a read lock to an exclusive one. When two connections do that at once, SQLite
    sees a deadlock and answers "database is locked" at once, without calling the busy handler (see
    ``sqlite3_busy_handler``): the busy timeout does not cover it, so the switch is retried here. Once one of them has
    switched, the others find the file in WAL mode and have nothing to do.
    """
    deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
    pause = 0.001
    while True:
        try:
            db.enable_wal()
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise
            time.sleep(pause)
            pause = min(pause * 2, 0.05)
        else:
            return


def _initialise(db: sqlite_utils.Database, where: str) -> None:
    """Create the schema in an empty database, inside the caller's write transaction (so only one process does)."""
    app = db.conn.execute("PRAGMA application_id").fetchone()[0]
    version = db.conn.execute("PRAGMA user_version").fetchone()[0]
    if app == 0 and version == 0:
        create_schema(db)
    elif (app, version) != (APPLICATION_ID, SCHEMA_VERSION):  # the file was replaced since _inspect looked at it
        raise StoreError(where, f"not a snapshotfsm database of schema version {SCHEMA_VERSION}")


class Store:
    """Records in one SQLite database, moved between states only by :meth:`transit`."""

    def __init__(
        self,
        db: sqlite_utils.Database,
        *,
        path: str,
        ms_id: int,
        clock: SimClock,
        profile: Profile,
        definitions: Definitions,
        machines: Mapping[str, StateMachine] | None = None,
    ) -> None:
        self.db = db
        self.conn = db.conn
        self.path = path
        self.ms_id = ms_id
        self.clock = clock
        self.profile = profile
        self.definitions = definitions.for_profile(profile.name)  # the transitions this profile has (states/README)
        self.machines: Mapping[str, StateMachine] = (
            machines
            if machines is not None
            else {name: StateMachine.structure(d) for name, d in self.definitions.items()}
        )
        self.bindings = make_bindings(definitions, profile)
        self._by_record = {b.record: b for b in self.bindings.values() if b.record is not Workflow}
        self._state_columns = {(b.record.table, c) for b in self.bindings.values() for c in (b.column, b.counter) if c}
        self._sql: dict[tuple[Any, ...], str] = {}
        self._finds: dict[tuple[Any, ...], tuple[str, tuple[str, ...]]] = {}
        self._inserts: dict[tuple[type[Record], tuple[str, ...]], str] = {}
        self._stamp_key: tuple[object, int] | None = None
        self._stamp = ""
        self.current_job_id: int | None = None
        self.write_point: Callable[[], None] | None = None
        """Called before every transaction that commits on its own (a durable write): the engine's crash points."""
        self.access_point: Callable[[str, str, int | None], None] | None = None
        """Called before every read and write with ``(op, table, row id)``: the interleaving points (spec §21.1).

        ``op`` is ``read`` (a row by id), ``query`` (rows by a condition), ``insert`` or ``write``. Set by the runner
        only when the fault plan interleaves tasks; a read or write inside an open transaction calls it too, and
        the runner lets nothing in there (the transaction holds its rows, as InnoDB's row locks do).
        """
        self._kept: list[Callable[[], object]] = []
        """Writes made inside the open transaction that its rollback must not take back (:meth:`beside_transaction`)."""

    @classmethod
    def open(
        cls,
        path: str | Path = ":memory:",
        *,
        ms_id: int = 1,
        clock: SimClock | None = None,
        profile: str | Profile = "cloudstack",
        definitions: Definitions | None = None,
        machines: Mapping[str, StateMachine] | None = None,
    ) -> Store:
        """Open (or create) a database; ``":memory:"`` gives a private in-memory one.

        ``machines`` are the engine's machines, built once from ``definitions`` with their step callbacks (the
        store checks every move against the same machines the runner fires); by default, their structure alone.

        Raises:
            StoreError: the file is not a SQLite database, not a snapshotfsm database, or of another schema
                version. The file is not modified.
        """
        chosen = get_profile(profile)  # an unknown profile is refused before any file is touched
        where = str(path)
        memory = where == ":memory:"
        if not memory:
            p = Path(path)
            if p.is_dir():
                raise StoreError(where, "is a directory, not a database file")
            if p.exists() and p.stat().st_size > 0:
                _inspect(p)
        try:
            db = sqlite_utils.Database(memory=True) if memory else sqlite_utils.Database(where)
        except sqlite3.Error as exc:
            raise StoreError(where, f"cannot be opened ({exc})") from exc
        try:
            db.conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            if memory:
                copy_schema(db.conn)  # private and new: nobody else can be initialising it
            else:
                _enable_wal(db)
                db.conn.execute("PRAGMA synchronous = NORMAL")
            db.conn.execute("BEGIN IMMEDIATE")
            try:
                _initialise(db, where)
                db.conn.execute("COMMIT")
            except BaseException:
                db.rollback()
                raise
        except sqlite3.Error as exc:
            db.close()
            raise StoreError(where, f"cannot be opened ({exc})") from exc
        except BaseException:
            db.close()
            raise
        return cls(
            db,
            path=where,
            ms_id=ms_id,
            clock=clock or SimClock(),
            profile=chosen,
            definitions=definitions or project_definitions(),
            machines=machines,
        )

    @classmethod
    def open_read_only(cls, path: str | Path, *, definitions: Definitions | None = None) -> Store:
        """Open an existing database for reading only: tools that look (``snapshotfsm history``) change nothing.

        :meth:`open` creates a missing file and writes a schema into an empty one, which is right for a server
        and wrong for a reader pointed at the wrong path. Here the connection is SQLite's ``mode=ro`` (and
        ``immutable`` when no server has the file open, so that no ``-wal``/``-shm`` files are left behind).

        Raises:
            StoreError: no such file, a directory, an empty file, not a snapshotfsm database, or another schema
                version. Nothing is created or written.
        """
        p = Path(path)
        where = str(path)
        if not p.exists():
            raise StoreError(where, "no such database file")
        if p.is_dir():
            raise StoreError(where, "is a directory, not a database file")
        if p.stat().st_size == 0:
            raise StoreError(where, "is an empty file, not a snapshotfsm database; nothing was changed")
        _inspect(p)
        live = any(Path(f"{p}{suffix}").exists() for suffix in ("-wal", "-shm"))
        uri = f"file:{urllib.parse.quote(str(p))}?mode=ro" + ("" if live else "&immutable=1")
        try:
            conn = sqlite3.connect(uri, uri=True)
            app = conn.execute("PRAGMA application_id").fetchone()[0]
        except sqlite3.Error as exc:
            raise StoreError(where, f"cannot be opened ({exc})") from exc
        if app != APPLICATION_ID:  # an empty schema passes _inspect, which lets open() initialise it
            conn.close()
            raise StoreError(where, "holds no snapshotfsm schema; nothing was changed")
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        return cls(
            sqlite_utils.Database(conn),
            path=where,
            ms_id=0,
            clock=SimClock(),
            profile=get_profile("cloudstack"),
            definitions=definitions or project_definitions(),
        )

    def close(self) -> None:
        """Close the connection."""
        self.db.close()

    # --- transactions ----------------------------------------------------------------------------------------------

    def atomic(self) -> contextlib.AbstractContextManager[None]:
        """One transaction (a savepoint when nested): all of the block is written, or none of it.

        The outermost level takes the write lock first (``BEGIN IMMEDIATE``), so that two management servers
        sharing the file never fail on upgrading a read lock. A crash point (``write_point``) comes before the
        outermost level only: a crash never falls inside a block.

        Nesting differs from CloudStack's (spec §21.1): an inner block that raises is a savepoint rolled back on its
        own, where CloudStack's flat nesting rolls back everything since the outermost start and goes on in
        autocommit. That happens upstream only when an SQL statement fails inside a DAO method, which the model never
        does (its ``NotFound`` and ``ConcurrencyError`` are CloudStack's "0 rows updated", not SQL failures).
        """
        return _Transaction(self)

    def beside_transaction(self, write: Callable[[], object]) -> None:
        """Make ``write`` now, and make it again after a rollback of the transaction it was made in.

        For what shares the database file without being the management server's data: simulated storage
        (``sim_object``). A file a driver deletes inside one of CloudStack's transactions stays deleted when that
        transaction rolls back (spec §21.4.1, §21.5); the model's storage write is undone with the SQLite
        transaction, so it is made again, with no crash point, once the rollback is over. ``write`` must give the
        same row whether it runs once or twice.
        """
        write()
        if self.conn.in_transaction:
            self._kept.append(write)

    def _timestamp(self) -> str:
        """``clock.timestamp()``, formatted once per simulated instant (strftime is a third of a transition)."""
        clock = self.clock
        key = (clock.start, clock.now_ms)
        if self._stamp_key != key:
            self._stamp_key, self._stamp = key, clock.timestamp()
        return self._stamp

    @contextlib.contextmanager
    def acting_for(self, job_id: int | None) -> Iterator[None]:
        """Attribute the transitions written inside the block to ``job_id`` in the log."""
        previous, self.current_job_id = self.current_job_id, job_id
        try:
            yield
        finally:
            self.current_job_id = previous

    # --- records ---------------------------------------------------------------------------------------------------

    def _check(self, cls: type[Record], fields: Mapping[str, object]) -> None:
        cols = columns(cls)
        for name, value in fields.items():
            column = cols.get(name)
            if column is None:
                raise InvalidValue(
                    f"{cls.table}.{name}",
                    value,
                    "a column",
                    message=f"{cls.table} has no column {name!r}{did_you_mean(name, cols)}",
                )
            _check_value(cls.table, column, value)

    def binding(self, entity: Record) -> Binding:
        """The binding of the machine that drives ``entity`` (workflows: the machine named on the row)."""
        if isinstance(entity, Workflow):
            return self.bindings[entity.machine]
        try:
            return self._by_record[type(entity)]
        except KeyError:
            raise InvalidValue(
                "entity", entity, "a record driven by a state machine (" + ", ".join(sorted(self.bindings)) + ")"
            ) from None

    def state_of(self, entity: Record) -> str:
        """The state an entity record holds (a name, also for ``async_job``'s ordinals)."""
        b = self.binding(entity)
        return b.state_of(getattr(entity, b.column))

    def insert(self, record: R) -> R:
        """Insert a new row and return the record with its id; a state-machine entity's creation is logged.

        Raises:
            InvalidValue: a value of the wrong type, or a state the entity's machine does not have.
        """
        row = attrs.asdict(record, recurse=False)
        if row["id"] == 0:
            del row["id"]
        self._check(type(record), row)
        binding = self._by_record.get(type(record)) or (
            self.bindings.get(record.machine) if isinstance(record, Workflow) else None
        )
        state = binding.state_of(row[binding.column]) if binding else None
        if binding and (state is None or not self.definitions[binding.machine].has_state(state)):
            raise InvalidValue(
                f"{record.table}.{binding.column}",
                row[binding.column],
                f"a state of machine {binding.machine!r}",
            )
        if self.access_point is not None:
            self.access_point("insert", record.table, None)
        key = (type(record), tuple(row))
        sql = self._inserts.get(key)
        if sql is None:
            names = ", ".join(row)
            sql = self._inserts[key] = f"INSERT INTO {record.table} ({names}) VALUES ({', '.join('?' * len(row))})"
        with self.atomic():
            new_id = self.conn.execute(sql, tuple(row.values())).lastrowid
            assert new_id is not None
            if binding and state is not None:
                self._log(binding.machine, new_id, "", "create", state, kind="create")
        return _evolve(record, {"id": new_id})

    def get(self, cls: type[R], entity_id: int) -> R:
        """The row ``entity_id`` of ``cls``'s table, soft-removed rows included.

        Raises:
            NotFound: no such row.
        """
        if not isinstance(entity_id, int) or isinstance(entity_id, bool):
            raise InvalidValue(f"{cls.table} id", entity_id, "an integer")
        if self.access_point is not None:
            self.access_point("read", cls.table, entity_id)
        row = self.conn.execute(f"SELECT * FROM {cls.table} WHERE id = ?", (entity_id,)).fetchone()
        if row is None:
            raise NotFound(cls.table, entity_id)
        return self._record(cls, row)

    def find(
        self,
        cls: type[R],
        where: str | None = None,
        params: Sequence[object] = (),
        order_by: str = "id",
        limit: int | None = None,
    ) -> list[R]:
        """Rows of ``cls``'s table matching ``where`` (SQL with ``?`` placeholders), in ``order_by`` order."""
        key = (cls, where, order_by, limit)
        query = self._finds.get(key)
        if query is None:  # the SQL and column names of each distinct query, made once (a poll tick makes five)
            sql = f"SELECT * FROM {cls.table}" + (f" WHERE {where}" if where else "") + f" ORDER BY {order_by}"
            if limit is not None:
                sql += f" LIMIT {int(limit)}"
            query = self._finds[key] = (sql, tuple(columns(cls)))  # the table's columns, in this order (schema.py)
        sql, names = query
        if self.access_point is not None:
            self.access_point("query", cls.table, None)
        return [_build(cls, dict(zip(names, row, strict=True))) for row in self.conn.execute(sql, params)]

    def first(self, cls: type[R], where: str | None = None, params: Sequence[object] = ()) -> R | None:
        """The first row (lowest id) matching ``where``, or None."""
        found = self.find(cls, where, params, limit=1)
        return found[0] if found else None

    def log_position(self) -> int:
        """How many ``transition_log`` rows there are (the last id): where a moment falls in the log's order."""
        row = self.conn.execute("SELECT max(id) FROM transition_log").fetchone()
        return int(row[0] or 0)

    def count(self, cls: type[Record], where: str | None = None, params: Sequence[object] = ()) -> int:
        """How many rows of ``cls``'s table match ``where``."""
        sql = f"SELECT count(*) FROM {cls.table}" + (f" WHERE {where}" if where else "")
        if self.access_point is not None:
            self.access_point("query", cls.table, None)
        return int(self.conn.execute(sql, tuple(params)).fetchone()[0])

    def _record(self, cls: type[R], row: Sequence[object]) -> R:
        return _build(cls, dict(zip(columns(cls), row, strict=True)))

    def reload(self, record: R) -> R:
        """The same row as it is in the database now."""
        return self.get(type(record), record.id)

    def update(self, record: R, **fields: object) -> R:
        """Write ordinary columns of an existing row (never a state column or its counter).

        Raises:
            InvalidValue: a state column (use :meth:`transit`), an unknown column, or a value of the wrong type.
            NotFound: the row does not exist.
        """
        for name, value in fields.items():
            if (record.table, name) in self._state_columns:
                raise InvalidValue(
                    f"{record.table}.{name}",
                    value,
                    "written by transit()",
                    message=f"{record.table}.{name} is a state column: only Store.transit (or write_state_directly, "
                    "for CloudStack's own direct writes) changes it",
                )
        _refuse_id(record.table, fields)
        self._check(type(record), fields)
        if not fields:
            return record
        sets = ", ".join(f"{name} = ?" for name in fields)
        if self.access_point is not None:
            self.access_point("write", record.table, record.id)
        with self.atomic():
            cur = self.conn.execute(f"UPDATE {record.table} SET {sets} WHERE id = ?", (*fields.values(), record.id))
            if cur.rowcount == 0:
                raise NotFound(record.table, record.id)
        return _evolve(record, fields)

    def remove(self, record: R, *, by: str) -> R:
        """Soft delete: set ``removed``, as CloudStack's ``remove()`` does on tables that have the column.

        ``by`` names the CloudStack method, for the log of a state-machine entity.
        """
        if "removed" not in columns(type(record)):
            raise InvalidValue(
                record.table, record, "a table with a removed column", message=f"{record.table} has no soft delete"
            )
        stamp = self._timestamp()
        if self.access_point is not None:
            self.access_point("write", record.table, record.id)
        with self.atomic():
            cur = self.conn.execute(f"UPDATE {record.table} SET removed = ? WHERE id = ?", (stamp, record.id))
            if cur.rowcount == 0:
                raise NotFound(record.table, record.id)
            binding = self._by_record.get(type(record))
            if binding is not None:
                state = self.state_of(self.get(type(record), record.id))
                self._log(binding.machine, record.id, state, by, state, kind="remove")
        return _evolve(record, {"removed": stamp})

    def delete(self, record: Record, *, by: str) -> None:
        """Hard delete, as CloudStack does on tables without ``removed`` (e.g. ``snapshot_store_ref``)."""
        if self.access_point is not None:
            self.access_point("write", record.table, record.id)
        with self.atomic():
            binding = self._by_record.get(type(record))
            state = None
            if binding is not None:
                state = self.state_of(self.get(type(record), record.id))
            cur = self.conn.execute(f"DELETE FROM {record.table} WHERE id = ?", (record.id,))
            if cur.rowcount == 0:
                raise NotFound(record.table, record.id)
            if binding is not None and state is not None:
                self._log(binding.machine, record.id, state, by, "", kind="delete")

    # --- the durable transition ------------------------------------------------------------------------------------

    def transit(self, entity: R, event: str, *, job_id: int | None = None, **fields: object) -> R:
        """Move ``entity`` by ``event``, durably, and return the record as written.

        ``entity`` carries the state the caller believes the row is in (CloudStack's in-memory VO); the machine
        checks that ``event`` is legal from there. ``fields`` are written in the same UPDATE (e.g. the install path a
        driver answered with). On ``snapshots`` under the ``cloudstack`` profile there is no compare-and-swap: the
        last writer wins, and the log records the state it overwrote when that differs (spec §11).

        Raises:
            IllegalTransition: the event is not allowed in the entity's state; nothing is written.
            ConcurrencyError: the row is no longer in that state (or its ``update_count`` moved); nothing is written.
            NotFound: the row is gone.
            InvalidValue: a field is unknown or of the wrong type; nothing is written.
        """
        b = self.binding(entity)
        source = b.state_of(getattr(entity, b.column))
        entity_id = _id_of(entity)
        if type(event) is not str:
            raise InvalidValue("event", event, "an event name (str)")
        _check_job_id(job_id)
        dest = self.machines[b.machine].check(entity_id, source, event)
        if self.access_point is not None:
            self.access_point("write", entity.table, entity_id)
        return self._write_transition(b, entity, entity_id, source, event, dest, job_id, fields)

    def record_transition(self, entity: R, event: str, dest: str, **fields: object) -> R:
        """Persist a move its machine's trigger already made: ``dest`` is the state that trigger computed.

        The workflow runner fires a workflow's event through the machine (the one legality check, which runs the
        step) and hands the destination here; the write still compares and swaps on the source state and
        ``update_count``, so a lost race is caught. The log row is the job's of :meth:`acting_for`; everything else
        is as :meth:`transit`.

        Raises:
            ConcurrencyError: the row is no longer in the source state (or its ``update_count`` moved).
            NotFound: the row is gone.
            InvalidValue: a field is unknown or of the wrong type; nothing is written.
        """
        b = self.binding(entity)
        source = b.state_of(getattr(entity, b.column))
        if self.access_point is not None:
            self.access_point("write", entity.table, _id_of(entity))
        return self._write_transition(b, entity, _id_of(entity), source, event, dest, None, fields)

    def _write_transition(
        self,
        b: Binding,
        entity: R,
        entity_id: int,
        source: str,
        event: str,
        dest: str,
        job_id: int | None,
        fields: Mapping[str, object],
    ) -> R:
        if fields:
            _refuse_id(entity.table, fields)
            for name in (b.column, b.counter, b.updated):
                if name is not None and name in fields:
                    raise InvalidValue(
                        f"{entity.table}.{name}",
                        fields[name],
                        "written by transit()",
                        message=f"{entity.table}.{name} is written by the transition itself, not as a field of it",
                    )
            self._check(type(entity), fields)
        count = getattr(entity, b.counter) if b.counter else None
        updated = self._timestamp() if b.updated else None
        with _Transaction(self):
            overwrote = self._write_state(b, entity_id, source, dest, count, updated, fields)
            self._log(b.machine, entity_id, source, event, dest, job_id=job_id, overwrote=overwrote)
        changes: dict[str, object] = {b.column: b.stored(dest), **fields}
        if b.counter and count is not None:
            changes[b.counter] = count + 1
        if b.updated:
            changes[b.updated] = updated
        return _evolve(entity, changes)

    def _write_state(
        self,
        b: Binding,
        entity_id: int,
        source: str,
        dest: str,
        count: int | None,
        updated: str | None,
        fields: Mapping[str, object],
    ) -> str | None:
        key = (b.machine, tuple(fields))
        sql = self._sql.get(key)
        if sql is None:
            sets = [f"{b.column} = ?"]
            if b.counter:
                sets.append(f"{b.counter} = {b.counter} + 1")
            if b.updated:
                sets.append(f"{b.updated} = ?")
            sets.extend(f"{name} = ?" for name in fields)
            where = "id = ?"
            if b.compare_state:
                where += f" AND {b.column} = ?"
                if b.counter:
                    where += f" AND {b.counter} = ?"
            sql = self._sql[key] = f"UPDATE {b.record.table} SET {', '.join(sets)} WHERE {where}"
        params: list[object] = [b.stored(dest)]
        if b.updated:
            params.append(updated)
        params.extend(fields.values())
        params.append(entity_id)
        overwrote: str | None = None
        if b.compare_state:
            params.append(b.stored(source))
            if b.counter:
                params.append(count)
        else:
            # Last writer wins (spec §11), and the log says what the write overwrote. The write first names the state
            # the caller's record holds: when the row holds it (the usual case) that one statement is the move; only
            # otherwise is the row's state read and the write made without the condition, in the same transaction.
            guarded = self._sql.get((*key, "guarded"))
            if guarded is None:
                guarded = self._sql[(*key, "guarded")] = f"{sql} AND {b.column} = ?"
            if self.conn.execute(guarded, [*params, b.stored(source)]).rowcount == 1:
                return None
            row = self.conn.execute(f"SELECT {b.column} FROM {b.record.table} WHERE id = ?", (entity_id,)).fetchone()
            if row is None:
                raise NotFound(b.record.table, entity_id)
            overwrote = b.state_of(row[0])
        if self.conn.execute(sql, params).rowcount == 1:
            return overwrote
        row = self.conn.execute(
            f"SELECT {b.column}{', ' + b.counter if b.counter else ''} FROM {b.record.table} WHERE id = ?",
            (entity_id,),
        ).fetchone()
        if row is None:
            raise NotFound(b.record.table, entity_id)
        raise ConcurrencyError(b.machine, entity_id, source, b.state_of(row[0]), count, row[1] if b.counter else None)

    def write_state_directly(self, entity: R, state: str, *, by: str, job_id: int | None = None) -> R:
        """One of CloudStack's writes that bypass its state machine (spec §1.2 notes, §3), logged as ``direct``.

        ``by`` names the CloudStack method that does it (e.g. ``DefaultSnapshotStrategy.deleteSnapshot``). The
        state must exist in the machine; no legality check is made, as in CloudStack. The log row reads like an
        event's: ``source`` as the record says, ``overwrote`` when the row held another state.
        """
        b = self.binding(entity)
        if not self.definitions[b.machine].has_state(state):
            raise InvalidValue(f"{entity.table}.{b.column}", state, f"a state of machine {b.machine!r}")
        source = b.state_of(getattr(entity, b.column))
        entity_id = _id_of(entity)
        if self.access_point is not None:
            self.access_point("write", entity.table, entity_id)
        updated = self._timestamp() if b.updated else None
        sets = f"{b.column} = ?" + (f", {b.counter} = {b.counter} + 1" if b.counter else "")
        sets += f", {b.updated} = ?" if b.updated else ""
        params: list[object] = [b.stored(state), *([updated] if b.updated else []), entity.id]
        with self.atomic():
            row = self.conn.execute(f"SELECT {b.column} FROM {b.record.table} WHERE id = ?", (entity.id,)).fetchone()
            if row is None:
                raise NotFound(b.record.table, entity.id)
            found = b.state_of(row[0])
            self.conn.execute(f"UPDATE {b.record.table} SET {sets} WHERE id = ?", params)
            self._log(
                b.machine,
                entity.id,
                source,
                by,
                state,
                kind="direct",
                job_id=job_id,
                overwrote=found if found != source else None,
            )
        return self.get(type(entity), entity.id)

    def _log(
        self,
        machine: str,
        entity_id: int,
        source: str,
        event: str,
        dest: str,
        *,
        kind: str = "event",
        job_id: int | None = None,
        overwrote: str | None = None,
    ) -> None:
        self.conn.execute(
            "INSERT INTO transition_log"
            " (machine, entity_id, source, event, dest, kind, job_id, ms_id, at_ms, overwrote)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                machine,
                entity_id,
                source,
                event,
                dest,
                kind,
                job_id if job_id is not None else self.current_job_id,
                self.ms_id,
                self.clock.now_ms,
                overwrote,
            ),
        )

    def history(
        self, *, machine: str | None = None, entity_id: int | None = None, job_id: int | None = None
    ) -> list[TransitionLog]:
        """The log of one entity, of one job, or of the whole run, in order."""
        clauses: list[str] = []
        params: list[object] = []
        if machine is not None:
            clauses.append("machine = ?")
            params.append(machine)
        if entity_id is not None:
            clauses.append("entity_id = ?")
            params.append(entity_id)
        if job_id is not None:
            clauses.append("job_id = ?")
            params.append(job_id)
        return self.find(TransitionLog, " AND ".join(clauses) or None, params)


def _id_of(record: Record) -> int:
    """The id of a record that names a row; a record never inserted has none."""
    entity_id = record.id
    if type(entity_id) is not int:
        raise InvalidValue(f"{record.table} id", entity_id, "an integer")
    if entity_id == 0:
        raise InvalidValue(
            f"{record.table} id", 0, "an integer", message=f"{record.table}: the record has no id (insert it first)"
        )
    return entity_id


def _check_job_id(job_id: object) -> None:
    if job_id is not None and type(job_id) is not int:
        raise InvalidValue("job_id", job_id, "an async_job id (int) or None")


def _refuse_id(table: str, fields: Mapping[str, object]) -> None:
    if "id" in fields:
        raise InvalidValue(
            f"{table}.id", fields["id"], "unchanged", message=f"{table}.id is the primary key: a row keeps its id"
        )


def _build(cls: type[R], row: Mapping[str, object]) -> R:
    """A record from a row whose columns are the record's fields."""
    return cast("type[Any]", cls)(**row)  # type: ignore[no-any-return]


class _Transaction:
    """``Store.atomic()``: BEGIN IMMEDIATE ... COMMIT, or a savepoint inside an open transaction.

    A class rather than a generator-based context manager: it is entered on every transition, and the generator
    machinery costs as much as the log INSERT.
    """

    __slots__ = ("kept", "nested", "store")

    def __init__(self, store: Store) -> None:
        self.store = store
        self.nested: contextlib.AbstractContextManager[object] | None = None
        self.kept = 0

    def __enter__(self) -> None:
        store = self.store
        conn = store.conn
        self.kept = len(store._kept)  # noqa: SLF001 - the store's own transaction
        if conn.in_transaction:
            self.nested = store.db.atomic()
            self.nested.__enter__()
        else:
            if store.write_point is not None:
                store.write_point()
            conn.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        store = self.store
        if self.nested is not None:
            self.nested.__exit__(exc_type, exc, tb)  # type: ignore[arg-type]
            if exc_type is not None:
                self._redo()
            return
        if exc_type is not None:
            store.db.rollback()
            self._redo()
            return
        try:
            store.conn.execute("COMMIT")
        except BaseException:
            store.db.rollback()
            self._redo()
            raise
        store._kept.clear()  # noqa: SLF001

    def _redo(self) -> None:
        """After a rollback: the writes made beside it (``Store.beside_transaction``) again, with no crash point."""
        store = self.store
        kept = store._kept[self.kept :]  # noqa: SLF001
        if not kept:
            return
        hook, store.write_point = store.write_point, None
        try:
            with _Transaction(store):
                for write in kept:
                    write()
        finally:
            store.write_point = hook
        if self.nested is None:
            store._kept.clear()  # noqa: SLF001


_Plan = tuple[tuple[str, Any, Any, Any], ...]
_PLANS: dict[type, _Plan] = {}


def _plan(cls: type) -> _Plan:
    """For each field of a frozen, slotted attrs class: its name, slot setter and getter, and its converter."""
    plan = _PLANS.get(cls)
    if plan is None:
        fields = attrs.fields(cls)
        assert all(f.validator is None for f in fields), f"{cls.__name__} has validators: use attrs.evolve"
        assert not any(isinstance(f.converter, attrs.Converter) for f in fields), "plain converters only"
        slots = [getattr(cls, f.name) for f in fields]
        plan = _PLANS[cls] = tuple(
            (f.name, slot.__set__, slot.__get__, f.converter) for f, slot in zip(fields, slots, strict=True)
        )
    return plan


def _evolve(record: R, changes: Mapping[str, object]) -> R:
    """``attrs.evolve`` for records, at a third of its cost: every transition returns one.

    Records are frozen, slotted and without validators; a changed value goes through its field's converter (flags
    become bools), exactly as ``attrs.evolve`` would. Column names and types were checked by ``Store._check``.
    """
    cls = type(record)
    new: R = object.__new__(cls)
    for name, set_slot, get_slot, converter in _plan(cls):
        if name in changes:
            value = changes[name]
            set_slot(new, value if converter is None else converter(value))
        else:
            set_slot(new, get_slot(record, cls))
    return new


def _check_value(table: str, column: Column, value: object) -> None:
    if value is None:
        if not column.nullable:
            raise InvalidValue(f"{table}.{column.name}", value, f"{column.type.__name__} (not NULL)")
        return
    if column.type is bool:
        ok = isinstance(value, bool) or (isinstance(value, int) and value in (0, 1))
    elif column.type is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif column.type is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    else:
        ok = isinstance(value, column.type)
    if not ok:
        raise InvalidValue(f"{table}.{column.name}", value, column.type.__name__)
