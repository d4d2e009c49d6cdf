"""``snapshotfsm.store``: opening a database, its CloudStack-shaped schema, and the record operations around transit.

The durable transition itself, races, history and the log property are in ``test_engine_core.py``; several
processes sharing one file, and SIGKILL, in ``test_store_processes.py``.
"""

from __future__ import annotations

import ast
import os
import re
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import attrs
import pytest
import sqlite_utils
from hypothesis import given
from hypothesis import strategies as st

from snapshotfsm.definitions import project_definitions
from snapshotfsm.errors import InvalidValue, NotFound, StoreError
from snapshotfsm.profiles import get_profile
from snapshotfsm.store import ALL_RECORDS, APPLICATION_ID, SCHEMA_VERSION, Store
from snapshotfsm.store import store as store_module
from snapshotfsm.store.records import (
    AsyncJob,
    Snapshot,
    SnapshotDetail,
    SnapshotStoreRef,
    TransitionLog,
    Volume,
    Zone,
)
from snapshotfsm.store.schema import create_schema, define_schema
from snapshotfsm.store.store import make_bindings

GIB = 1 << 30
OTHER_VERSION = SCHEMA_VERSION + 1
PACKAGE = Path(__file__).resolve().parent.parent / "snapshotfsm"


@pytest.fixture
def store() -> Iterator[Store]:
    s = Store.open(":memory:")
    yield s
    s.close()


def new_volume(store: Store, **fields: object) -> Volume:
    values: dict[str, object] = {"name": "data", "account_id": 1, "data_center_id": 1, "size": GIB}
    return store.insert(Volume(**(values | fields)))  # type: ignore[arg-type]


def new_snapshot(store: Store, **fields: object) -> Snapshot:
    values: dict[str, object] = {"name": "snap", "account_id": 1, "data_center_id": 1, "volume_id": 1}
    return store.insert(Snapshot(**(values | fields)))  # type: ignore[arg-type]


def new_ref(store: Store, **fields: object) -> SnapshotStoreRef:
    values: dict[str, object] = {"store_id": 1, "store_role": "Image", "snapshot_id": 1}
    return store.insert(SnapshotStoreRef(**(values | fields)))  # type: ignore[arg-type]


def dump(store: Store) -> str:
    """The whole database as SQL: equal dumps before and after a call mean it wrote nothing."""
    return "\n".join(store.conn.iterdump())


def files_of(directory: Path) -> dict[str, bytes]:
    """Every file in ``directory`` with its bytes (``-wal`` and ``-shm`` included)."""
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir()) if p.is_file()}


def pragma(path: Path, name: str) -> int:
    conn = sqlite3.connect(path)
    try:
        return int(conn.execute(f"PRAGMA {name}").fetchone()[0])
    finally:
        conn.close()


# --- opening -------------------------------------------------------------------------------------------------------


def _text(path: Path) -> None:
    path.write_text("zone1,pool1,volume1\nthis is a CSV file, not a database\n", encoding="utf-8")


def _random_bytes(path: Path) -> None:
    path.write_bytes(bytes((i * 7919 + 13) % 256 for i in range(8192)))


def _foreign_with_table(path: Path) -> None:
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE volumes (id INTEGER PRIMARY KEY, name TEXT)")
    conn.execute("INSERT INTO volumes (name) VALUES ('someone else''s')")
    conn.commit()
    conn.close()


def _foreign_without_table(path: Path) -> None:
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA user_version = 7")
    conn.close()


def _ours_of_another_version(path: Path) -> None:
    Store.open(path).close()
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {OTHER_VERSION}")
    conn.close()


REFUSED = {
    "text": (_text, "not a SQLite database (file is not a database); nothing was changed"),
    "random bytes": (_random_bytes, "not a SQLite database (file is not a database); nothing was changed"),
    "foreign database": (
        _foreign_with_table,
        "not a snapshotfsm database (application_id 0x0, user_version 0, 1 schema objects); nothing was changed",
    ),
    "foreign empty database with a user_version": (
        _foreign_without_table,
        "not a snapshotfsm database (application_id 0x0, user_version 7, 0 schema objects); nothing was changed",
    ),
    "snapshotfsm database of another version": (
        _ours_of_another_version,
        f"schema version {OTHER_VERSION}, but this snapshotfsm reads version {SCHEMA_VERSION}; nothing was changed",
    ),
}


class TestOpen:
    """``Store.open``: create, reopen, ``:memory:``, and every refusal leaving the file as it was."""

    def test_a_new_file_is_stamped_with_our_application_id_and_schema_version(self, tmp_path: Path) -> None:
        """A new path becomes a snapshotfsm database carrying ``application_id`` and ``user_version``."""
        path = tmp_path / "cloud.db"
        Store.open(path).close()
        assert (pragma(path, "application_id"), pragma(path, "user_version")) == (APPLICATION_ID, SCHEMA_VERSION)
        assert int.from_bytes(b"SNFS", "big") == APPLICATION_ID

    def test_reopening_keeps_the_data(self, tmp_path: Path) -> None:
        """Rows, states and the log written by one store are there when the file is opened again."""
        path = tmp_path / "cloud.db"
        first = Store.open(path)
        volume = first.transit(new_volume(first), "SnapshotRequested")
        first.close()
        again = Store.open(path)
        assert again.get(Volume, volume.id) == volume
        assert [(h.event, h.dest) for h in again.history()] == [
            ("create", "Ready"),
            ("SnapshotRequested", "Snapshotting"),
        ]
        again.close()

    def test_memory_databases_are_private(self) -> None:
        """Each ``:memory:`` store is its own empty database with the full schema."""
        one, two = Store.open(":memory:"), Store.open(":memory:")
        new_volume(one)
        assert (one.count(Volume), two.count(Volume)) == (1, 0)
        assert two.conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        one.close()
        two.close()

    def test_an_empty_file_is_initialised(self, tmp_path: Path) -> None:
        """A 0-byte file (``touch cloud.db``) is taken as a new database, not refused."""
        path = tmp_path / "cloud.db"
        path.touch()
        Store.open(path).close()
        assert (pragma(path, "application_id"), pragma(path, "user_version")) == (APPLICATION_ID, SCHEMA_VERSION)

    @pytest.mark.parametrize("kind", sorted(REFUSED))
    def test_a_file_that_is_not_ours_is_refused_and_left_as_it_was(self, tmp_path: Path, kind: str) -> None:
        """``StoreError`` names the path and the problem; no byte changes and no ``-wal``/``-shm`` file appears."""
        make, problem = REFUSED[kind]
        path = tmp_path / "cloud.db"
        make(path)
        before = files_of(tmp_path)
        with pytest.raises(StoreError) as caught:
            Store.open(path)
        assert str(caught.value) == f"{path}: {problem}"
        assert (caught.value.path, caught.value.problem) == (str(path), problem)
        assert files_of(tmp_path) == before

    def test_a_database_of_another_version_in_use_keeps_its_wal(self, tmp_path: Path) -> None:
        """Refusing a database another connection holds in WAL mode leaves the database and its WAL untouched."""
        path = tmp_path / "cloud.db"
        _ours_of_another_version(path)
        holder = sqlite3.connect(path)
        holder.execute("INSERT INTO data_center (name, uuid, type, allocation_state) VALUES ('z', '', 'Core', 'x')")
        holder.commit()  # the row sits in the -wal file, which the open connection keeps
        before = {name: data for name, data in files_of(tmp_path).items() if not name.endswith("-shm")}
        assert set(before) == {"cloud.db", "cloud.db-wal"}
        with pytest.raises(StoreError, match=f"schema version {OTHER_VERSION}, but this snapshotfsm reads"):
            Store.open(path)
        after = {name: data for name, data in files_of(tmp_path).items() if not name.endswith("-shm")}
        holder.close()
        assert after == before

    def test_a_directory_is_refused(self, tmp_path: Path) -> None:
        """A directory is not a database file, and it is not touched."""
        with pytest.raises(StoreError) as caught:
            Store.open(tmp_path)
        assert str(caught.value) == f"{tmp_path}: is a directory, not a database file"
        assert list(tmp_path.iterdir()) == []

    def test_a_path_in_a_missing_directory_is_a_store_error(self, tmp_path: Path) -> None:
        """SQLite's own failure to create the file is reported as a ``StoreError`` naming the path."""
        path = tmp_path / "no" / "such" / "cloud.db"
        with pytest.raises(StoreError) as caught:
            Store.open(path)
        assert str(caught.value) == f"{path}: cannot be opened (unable to open database file)"

    def test_an_unknown_profile_is_refused_before_any_file_is_made(self, tmp_path: Path) -> None:
        """A misspelt profile fails with the known names, and no database file is left behind."""
        with pytest.raises(InvalidValue) as caught:
            Store.open(tmp_path / "cloud.db", profile="cloudstak")
        assert str(caught.value) == "profile must be one of cloudstack, hardened (got 'cloudstak' that is a str)"
        assert list(tmp_path.iterdir()) == []


# --- the schema ----------------------------------------------------------------------------------------------------

CLOUDSTACK_COLUMNS: dict[str, tuple[set[str], set[str]]] = {
    # table: (columns spec §11 names that must be there, columns that must not)
    "snapshots": (
        {"id", "data_center_id", "account_id", "domain_id", "volume_id", "disk_offering_id", "name", "status"}
        | {"snapshot_type", "type_description", "location_type", "size", "created", "removed", "hypervisor_type"}
        | {"version", "uuid"},
        {"update_count", "updated", "state"},
    ),
    "snapshot_store_ref": (
        {"id", "store_id", "store_role", "snapshot_id", "created", "last_updated", "size", "physical_size"}
        | {"parent_snapshot_id", "end_of_chain", "job_id", "install_path", "kvm_checkpoint_path", "download_url"}
        | {"update_count", "updated", "state", "error_str", "display", "ref_cnt", "volume_id"},
        {"removed", "status"},
    ),
    "volumes": (
        {"id", "name", "uuid", "account_id", "domain_id", "data_center_id", "pool_id", "instance_id", "state"}
        | {"updated", "update_count", "encrypt_format", "size", "path", "format", "volume_type", "removed"},
        {"status"},
    ),
    "async_job": (
        {"id", "uuid", "job_dispatcher", "user_id", "account_id", "job_cmd", "job_cmd_info", "job_status"}
        | {"job_process_status", "job_result_code", "job_result", "instance_type", "instance_id", "related"}
        | {"job_init_msid", "job_executing_msid", "job_complete_msid", "created", "last_updated", "removed"},
        {"state", "status", "update_count"},
    ),
    "vm_work_job": ({"id", "step", "vm_type", "vm_instance_id", "secondary_object"}, set()),
    "snapshot_details": ({"id", "snapshot_id", "name", "value", "display"}, set()),
    "snapshot_zone_ref": ({"zone_id", "snapshot_id", "created", "last_updated", "removed"}, set()),
    "snapshot_policy": ({"id", "volume_id", "schedule", "timezone", "interval", "max_snaps", "active"}, set()),
    "snapshot_policy_details": ({"policy_id", "name", "value"}, set()),
    "snapshot_schedule": ({"volume_id", "policy_id", "scheduled_timestamp", "async_job_id", "snapshot_id"}, set()),
    "resource_count": ({"id", "type", "account_id", "domain_id", "count", "tag"}, set()),
    "op_lock": ({"key", "acquired_on"}, set()),
    "usage_event": (
        {"id", "type", "created", "account_id", "zone_id", "resource_id", "resource_name", "offering_id"}
        | {"template_id", "size", "resource_type", "processed", "virtual_size", "vm_id"},
        set(),
    ),
    "vm_instance": ({"id", "name", "state", "hypervisor_type", "host_id", "removed"}, set()),
    "transition_log": (
        {"id", "machine", "entity_id", "source", "event", "dest", "kind", "job_id", "ms_id", "at_ms", "overwrote"},
        set(),
    ),
}


def table_info(store: Store, table: str) -> dict[str, tuple[str, bool]]:
    """Column name: (declared type, NOT NULL) for ``table``."""
    return {row[1]: (row[2], bool(row[3])) for row in store.conn.execute(f"PRAGMA table_info({table})")}


class TestSchema:
    """The tables are CloudStack's (spec §11), STRICT, indexed for the lookups made, and WAL on files."""

    @pytest.mark.parametrize("table", sorted(CLOUDSTACK_COLUMNS))
    def test_tables_carry_cloudstacks_column_names(self, store: Store, table: str) -> None:
        """Each table of spec §11 has CloudStack's columns, and none that CloudStack's table lacks."""
        present, absent = CLOUDSTACK_COLUMNS[table]
        columns = set(table_info(store, table))
        assert present - columns == set()
        assert absent & columns == set()

    @pytest.mark.parametrize("cls", ALL_RECORDS, ids=lambda c: c.table)
    def test_each_record_is_exactly_its_table(self, store: Store, cls: type) -> None:
        """A record's fields are its table's columns, in order; optional fields are the nullable columns."""
        info = table_info(store, cls.table)
        assert list(info) == [f.name for f in attrs.fields(cls)]
        hints = {f.name: str(f.type) for f in attrs.fields(cls)}
        nullable = {name for name, (_, not_null) in info.items() if not not_null and name != "id"}
        assert nullable == {name for name, hint in hints.items() if "None" in hint and name != "id"}

    def test_states_are_stored_as_cloudstack_stores_them(self, store: Store) -> None:
        """``async_job.job_status`` and ``snapshots.snapshot_type`` are ordinals; the other states are names."""
        assert table_info(store, "async_job")["job_status"] == ("INTEGER", True)
        assert table_info(store, "snapshots")["snapshot_type"] == ("INTEGER", True)
        assert table_info(store, "snapshots")["status"] == ("TEXT", True)
        assert table_info(store, "snapshot_store_ref")["state"] == ("TEXT", True)
        assert table_info(store, "volumes")["update_count"] == ("INTEGER", True)

    def test_every_table_is_strict(self, store: Store) -> None:
        """Every table of every record is declared STRICT."""
        strict = {row[1]: row[5] for row in store.conn.execute("PRAGMA table_list") if row[0] == "main"}
        assert {cls.table: strict[cls.table] for cls in ALL_RECORDS} == {cls.table: 1 for cls in ALL_RECORDS}

    @pytest.mark.parametrize(
        ("sql", "message"),
        [
            (
                "UPDATE volumes SET update_count = 'many'",
                "cannot store TEXT value in INTEGER column volumes.update_count",
            ),
            (
                "UPDATE async_job SET job_status = 'FAILED'",
                "cannot store TEXT value in INTEGER column async_job.job_status",
            ),
            ("UPDATE snapshots SET status = x'00'", "cannot store BLOB value in TEXT column snapshots.status"),
            ("UPDATE volumes SET name = NULL", "NOT NULL constraint failed: volumes.name"),
        ],
    )
    def test_raw_sql_of_the_wrong_type_is_refused_by_sqlite(self, store: Store, sql: str, message: str) -> None:
        """STRICT and NOT NULL hold even for SQL that goes around the store's own checks."""
        new_volume(store)
        new_snapshot(store)
        store.insert(AsyncJob(account_id=1, job_cmd="createSnapshot"))
        before = dump(store)
        with pytest.raises(sqlite3.IntegrityError) as caught:
            store.conn.execute(sql)
        assert str(caught.value) == message
        assert dump(store) == before

    @pytest.mark.parametrize("cls", [c for c in ALL_RECORDS if c.indexes or c.unique], ids=lambda c: c.table)
    def test_every_declared_index_exists(self, store: Store, cls: type) -> None:
        """Each index a record declares is in the database, on those columns, unique where declared."""
        found = {}
        for _, name, unique, *_ in store.conn.execute(f"PRAGMA index_list({cls.table})"):
            columns = tuple(row[2] for row in store.conn.execute(f"PRAGMA index_info({name})"))
            found[columns] = bool(unique)
        expected = dict.fromkeys(cls.indexes, False) | dict.fromkeys(cls.unique, True)
        assert {cols: found.get(cols) for cols in expected} == expected

    @pytest.mark.parametrize(
        ("where", "index"),
        [
            ("machine = ? AND entity_id = ?", "ix_transition_log_machine_entity_id (machine=? AND entity_id=?)"),
            ("job_id = ?", "ix_transition_log_job_id (job_id=?)"),
        ],
    )
    def test_history_lookups_use_an_index_and_no_sort(self, store: Store, where: str, index: str) -> None:
        """``history`` of an entity or a job searches an index and needs no sort for its id order."""
        sql = f"SELECT * FROM transition_log WHERE {where} ORDER BY id"
        plan = [row[3] for row in store.conn.execute(f"EXPLAIN QUERY PLAN {sql}", ("volume", 1)[: where.count("?")])]
        assert plan == [f"SEARCH transition_log USING INDEX {index}"]

    @pytest.mark.parametrize("table", ["volumes", "snapshot_store_ref", "snapshots", "async_job"])
    def test_the_compare_and_swap_finds_its_row_by_primary_key(self, store: Store, table: str) -> None:
        """The UPDATE of a transition is a primary-key search, whatever the table's size."""
        sql = f"UPDATE {table} SET id = id WHERE id = ? AND update_count = ?"
        if table in ("snapshots", "async_job"):
            sql = sql.replace("update_count", "removed")
        plan = [row[3] for row in store.conn.execute(f"EXPLAIN QUERY PLAN {sql}", (1, 0))]
        assert plan == [f"SEARCH {table} USING INTEGER PRIMARY KEY (rowid=?)"]

    def test_files_are_in_wal_mode_with_a_busy_timeout(self, tmp_path: Path) -> None:
        """A file database is in WAL mode, waits 30 s for a lock, and syncs at NORMAL; ``:memory:`` needs no WAL."""
        on_file = Store.open(tmp_path / "cloud.db")
        settings = [on_file.conn.execute(f"PRAGMA {p}").fetchone()[0] for p in ("journal_mode", "busy_timeout")]
        assert settings == ["wal", 30_000]
        assert on_file.conn.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
        on_file.close()
        conn = sqlite3.connect(tmp_path / "cloud.db")  # WAL is a property of the file: a new connection finds it
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        conn.close()
        in_memory = Store.open(":memory:")
        assert in_memory.conn.execute("PRAGMA journal_mode").fetchone()[0] == "memory"


def master(conn: sqlite3.Connection) -> list[tuple[object, ...]]:
    """Every schema object as ``sqlite_master`` holds it, in creation order, with the file's two stamps."""
    rows = conn.execute("SELECT type, name, tbl_name, rootpage, sql FROM sqlite_master ORDER BY rowid").fetchall()
    stamps = [conn.execute(f"PRAGMA {p}").fetchone()[0] for p in ("application_id", "user_version")]
    return [*rows, tuple(stamps)]


@pytest.fixture(scope="module")
def defined() -> list[tuple[object, ...]]:
    """The schema as sqlite-utils creates it (``define_schema``) in a new database: what every new database holds."""
    db = sqlite_utils.Database(memory=True)
    define_schema(db)
    found = master(db.conn)
    db.close()
    return found


class TestSchemaCreation:
    """A new database gets the statements (or, in memory, the pages) of a template made once by sqlite-utils."""

    def test_the_statements_make_what_sqlite_utils_makes(self, defined: list[tuple[object, ...]]) -> None:
        """``create_schema`` gives the tables, indexes, root pages and stamps ``define_schema`` gives.

        Beside one row per table and index: the stamps and ``sqlite_sequence``, which AUTOINCREMENT ids need.
        """
        db = sqlite_utils.Database(memory=True)
        create_schema(db)
        assert master(db.conn) == defined
        assert len(defined) == 2 + len(ALL_RECORDS) + sum(len(c.indexes) + len(c.unique) for c in ALL_RECORDS)

    def test_a_memory_store_has_the_schema_sqlite_utils_makes(self, defined: list[tuple[object, ...]]) -> None:
        """``Store.open(":memory:")`` (a page copy of the template) holds the schema, each store its own copy."""
        one, two = Store.open(":memory:"), Store.open(":memory:")
        assert master(one.conn) == master(two.conn) == defined
        one.close()
        two.close()

    def test_a_memory_store_opened_in_another_thread_has_the_schema(self, defined: list[tuple[object, ...]]) -> None:
        """Each thread copies from its own template (a connection serves the thread that opened it only)."""
        found: list[list[tuple[object, ...]]] = []

        def open_one() -> None:
            store = Store.open(":memory:")
            found.append(master(store.conn))
            store.close()

        thread = threading.Thread(target=open_one)
        thread.start()
        thread.join()
        assert found == [defined]

    def test_a_new_file_has_the_schema_sqlite_utils_makes(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, defined: list[tuple[object, ...]]
    ) -> None:
        """A new file matches one made by sqlite-utils byte for byte, but for the schema cookie (header bytes 40-43).

        sqlite-utils checks that SQLite supports STRICT by creating and dropping a table, which counts two more
        schema changes; nothing else of the file differs.
        """
        Store.open(tmp_path / "fast.db").close()
        monkeypatch.setattr(store_module, "create_schema", define_schema)
        Store.open(tmp_path / "defined.db").close()
        fast, slow = (tmp_path / "fast.db").read_bytes(), (tmp_path / "defined.db").read_bytes()
        assert fast[:40] + fast[44:] == slow[:40] + slow[44:]
        conn = sqlite3.connect(tmp_path / "fast.db")
        assert master(conn) == defined
        conn.close()


# --- records -------------------------------------------------------------------------------------------------------


class TestInsert:
    """``Store.insert``: typed rows, and the creation of a state-machine entity logged."""

    def test_an_entity_is_inserted_and_its_creation_logged(self, store: Store) -> None:
        """The record comes back with its id; the log gets one ``create`` row in the entity's initial state."""
        store.clock.advance(1500)
        volume = new_volume(store, state="Allocated")
        assert volume.id == 1
        assert store.get(Volume, 1) == volume
        assert store.history() == [
            TransitionLog(
                id=1,
                machine="volume",
                entity_id=1,
                source="",
                event="create",
                dest="Allocated",
                kind="create",
                ms_id=1,
                at_ms=1500,
            )
        ]

    def test_an_async_job_is_logged_by_state_name(self, store: Store) -> None:
        """``async_job`` stores the ordinal 0; its creation is logged as IN_PROGRESS."""
        job = store.insert(AsyncJob(account_id=1, job_cmd="createSnapshot"))
        assert store.conn.execute("SELECT job_status FROM async_job").fetchone() == (0,)
        assert [(h.machine, h.entity_id, h.dest) for h in store.history()] == [("async_job", job.id, "IN_PROGRESS")]

    def test_a_record_without_a_machine_is_not_logged(self, store: Store) -> None:
        """Inventory rows (a zone, a snapshot detail) are inserted without a log row."""
        store.insert(Zone(name="zone1"))
        store.insert(SnapshotDetail(snapshot_id=1, name="kvmIncrementalSnapshot", value="true"))
        assert store.count(TransitionLog) == 0

    def test_a_state_the_machine_lacks_is_refused(self, store: Store) -> None:
        """Inserting an entity in a state its machine does not have names the column, the machine and the value."""
        before = dump(store)
        with pytest.raises(InvalidValue) as caught:
            new_volume(store, state="Redy")
        assert str(caught.value) == "volumes.state must be a state of machine 'volume' (got 'Redy' that is a str)"
        with pytest.raises(InvalidValue) as caught:
            store.insert(AsyncJob(account_id=1, job_cmd="createSnapshot", job_status=9))
        assert str(caught.value) == "async_job.job_status must be a state of machine 'async_job' (got 9 that is a int)"
        assert dump(store) == before

    @pytest.mark.parametrize(
        ("fields", "message"),
        [
            ({"size": "10G"}, "volumes.size must be int (got '10G' that is a str)"),
            ({"size": None}, "volumes.size must be int (not NULL) (got None that is a NoneType)"),
            ({"size": True}, "volumes.size must be int (got True that is a bool)"),
            ({"pool_id": 1.5}, "volumes.pool_id must be int (got 1.5 that is a float)"),
            ({"name": 7}, "volumes.name must be str (got 7 that is a int)"),
        ],
    )
    def test_a_value_of_the_wrong_type_is_refused(self, store: Store, fields: dict[str, object], message: str) -> None:
        """A wrong type is refused before anything is written, with the column and the value."""
        values: dict[str, object] = {"name": "data", "account_id": 1, "data_center_id": 1, "size": GIB} | fields
        before = dump(store)
        with pytest.raises(InvalidValue) as caught:
            store.insert(Volume(**values))  # type: ignore[arg-type]
        assert str(caught.value) == message
        assert dump(store) == before


class TestGet:
    """``Store.get``, ``find``, ``first`` and ``count``."""

    def test_get_returns_the_record_as_stored(self, store: Store) -> None:
        """A record read back equals the one inserted, flags as bools."""
        ref = new_ref(store, end_of_chain=True)
        loaded = store.get(SnapshotStoreRef, ref.id)
        assert loaded == ref
        assert loaded.end_of_chain is True

    def test_an_unknown_id_is_not_found(self, store: Store) -> None:
        """``NotFound`` names the table and the id."""
        with pytest.raises(NotFound) as caught:
            store.get(Volume, 42)
        assert str(caught.value) == "no volumes with id 42"
        assert (caught.value.kind, caught.value.entity_id) == ("volumes", 42)

    def test_an_id_of_the_wrong_type_is_refused(self, store: Store) -> None:
        """A string id is a type error, not a missing row."""
        with pytest.raises(InvalidValue) as caught:
            store.get(Volume, "1")  # type: ignore[arg-type]
        assert str(caught.value) == "volumes id must be an integer (got '1' that is a str)"

    def test_find_first_and_count_filter_and_order(self, store: Store) -> None:
        """``find`` keeps SQL order and limit; ``first`` is the lowest id; ``count`` counts the same rows."""
        for size in (3, 1, 2):
            new_volume(store, size=size)
        assert [v.size for v in store.find(Volume, order_by="size")] == [1, 2, 3]
        assert [v.id for v in store.find(Volume, "size > ?", (1,), order_by="id DESC", limit=1)] == [3]
        assert store.first(Volume, "size < ?", (3,)) == store.get(Volume, 2)
        assert store.first(Volume, "size > ?", (9,)) is None
        assert store.count(Volume, "size >= ?", (2,)) == 2


class TestUpdate:
    """``Store.update`` writes ordinary columns only."""

    def test_ordinary_columns_are_written(self, store: Store) -> None:
        """The row and the returned record agree; no log row is written."""
        volume = new_volume(store)
        updated = store.update(volume, path="/dev/sdb", pool_id=3)
        assert store.get(Volume, volume.id) == updated == attrs.evolve(volume, path="/dev/sdb", pool_id=3)
        assert store.count(TransitionLog) == 1

    def test_a_flag_comes_back_as_a_bool_like_attrs_evolve_gives(self, store: Store) -> None:
        """A flag written as 0 or 1 is a bool in the record returned and in the row read back."""
        ref = store.insert(SnapshotStoreRef(store_id=1, store_role="Image", snapshot_id=1))
        updated = store.update(ref, display=0, end_of_chain=1, install_path="/a")
        assert updated == attrs.evolve(ref, display=0, end_of_chain=1, install_path="/a")
        assert (updated.display, updated.end_of_chain) == (False, True)
        assert store.get(SnapshotStoreRef, ref.id) == updated

    @pytest.mark.parametrize(
        ("record", "column", "value"),
        [
            ("volume", "state", "Snapshotting"),
            ("volume", "update_count", 5),
            ("snapshot", "status", "BackedUp"),
            ("ref", "state", "Ready"),
            ("ref", "update_count", 1),
            ("job", "job_status", 1),
        ],
    )
    def test_a_state_column_or_its_counter_is_refused(
        self, store: Store, record: str, column: str, value: object
    ) -> None:
        """Only the transition primitive writes a state or its counter; ``update`` says so and writes nothing."""
        entity = {
            "volume": lambda: new_volume(store),
            "snapshot": lambda: new_snapshot(store),
            "ref": lambda: new_ref(store),
            "job": lambda: store.insert(AsyncJob(account_id=1, job_cmd="createSnapshot")),
        }[record]()
        before = dump(store)
        with pytest.raises(InvalidValue) as caught:
            store.update(entity, **{column: value})
        assert str(caught.value) == (
            f"{entity.table}.{column} is a state column: only Store.transit (or write_state_directly, "
            "for CloudStack's own direct writes) changes it"
        )
        assert dump(store) == before

    @pytest.mark.parametrize(
        ("fields", "message"),
        [
            ({"nmae": "x"}, "volumes has no column 'nmae' (did you mean 'name'?)"),
            ({"colour": "x"}, "volumes has no column 'colour'"),
            ({"size": "big"}, "volumes.size must be int (got 'big' that is a str)"),
            ({"id": 9}, "volumes.id is the primary key: a row keeps its id"),
        ],
    )
    def test_a_bad_column_or_value_is_refused(self, store: Store, fields: dict[str, object], message: str) -> None:
        """Unknown columns, wrong types and the primary key are refused; the database is unchanged."""
        volume = new_volume(store)
        before = dump(store)
        with pytest.raises(InvalidValue) as caught:
            store.update(volume, **fields)
        assert str(caught.value) == message
        assert dump(store) == before

    def test_a_missing_row_is_not_found(self, store: Store) -> None:
        """Updating a row that is not there raises ``NotFound`` and writes nothing."""
        ghost = Volume(id=7, name="ghost", account_id=1, data_center_id=1, size=1)
        before = dump(store)
        with pytest.raises(NotFound, match=r"^no volumes with id 7$"):
            store.update(ghost, path="/x")
        assert dump(store) == before


class TestRemoveAndDelete:
    """Soft delete where CloudStack soft-deletes (``removed``), hard delete where it hard-deletes (spec §11)."""

    def test_remove_sets_removed_and_logs_it(self, store: Store) -> None:
        """The snapshot stays, with ``removed`` from the simulated clock; the log names the CloudStack method."""
        snapshot = new_snapshot(store)
        store.clock.advance(61_000)
        removed = store.remove(snapshot, by="SnapshotDaoImpl.remove")
        assert removed.removed == "2026-01-01 00:01:01"
        assert store.get(Snapshot, snapshot.id) == removed
        last = store.history()[-1]
        assert (last.source, last.event, last.dest, last.kind, last.at_ms) == (
            "Allocated",
            "SnapshotDaoImpl.remove",
            "Allocated",
            "remove",
            61_000,
        )

    def test_remove_refuses_a_table_without_soft_delete(self, store: Store) -> None:
        """``snapshot_store_ref`` has no ``removed`` column: CloudStack hard-deletes it."""
        ref = new_ref(store)
        before = dump(store)
        with pytest.raises(InvalidValue) as caught:
            store.remove(ref, by="SnapshotDataStoreDaoImpl.remove")
        assert str(caught.value) == "snapshot_store_ref has no soft delete"
        assert dump(store) == before

    def test_delete_removes_the_row_and_logs_it(self, store: Store) -> None:
        """The store ref is gone; the log keeps its last state and the method that deleted it."""
        ref = new_ref(store, state="Ready")
        store.delete(ref, by="SnapshotDataStoreDaoImpl.remove")
        assert store.count(SnapshotStoreRef) == 0
        last = store.history()[-1]
        assert (last.machine, last.entity_id, last.source, last.event, last.dest, last.kind) == (
            "snapshot_store_ref",
            ref.id,
            "Ready",
            "SnapshotDataStoreDaoImpl.remove",
            "",
            "delete",
        )

    @given(plan=st.lists(st.booleans(), min_size=1, max_size=12))
    def test_an_id_is_never_given_twice_even_after_the_highest_is_deleted(self, plan: list[bool]) -> None:
        """Like MySQL's AUTO_INCREMENT: each insert gets a higher id than any before, whatever was hard-deleted.

        ``plan`` is a run of inserts, each followed (True) by the hard delete of the newest row, so the row holding
        the highest id is the one deleted, the case in which SQLite's plain rowid would give that id again.
        """
        store = Store.open(":memory:")
        try:
            given_ids: list[int] = []
            for delete_it in plan:
                ref = new_ref(store, state="Ready")
                given_ids.append(ref.id)
                if delete_it:
                    store.delete(ref, by="StorageManagerImpl.cleanupSecondaryStorage")
        finally:
            store.close()
        assert given_ids == list(range(1, len(plan) + 1))

    @pytest.mark.parametrize("operation", ["remove", "delete"])
    def test_a_missing_row_is_not_found(self, store: Store, operation: str) -> None:
        """Removing or deleting an id that names no row raises ``NotFound`` and writes nothing."""
        ghost = Snapshot(id=5, name="ghost", account_id=1, data_center_id=1, volume_id=1)
        before = dump(store)
        with pytest.raises(NotFound, match=r"^no snapshots with id 5$"):
            getattr(store, operation)(ghost, by="SnapshotDaoImpl.remove")
        assert dump(store) == before


# --- one write path ------------------------------------------------------------------------------------------------

STATE_COLUMNS: dict[str, tuple[str, ...]] = {
    b.record.table: tuple(c for c in (b.column, b.counter) if c)
    for b in make_bindings(project_definitions(), get_profile("cloudstack")).values()
}
"""The state column and counter of every table a machine drives (snapshots.status, volumes.state, ...)."""


def _sql_writes(text: str) -> list[str]:
    """What a piece of SQL writes to a state column: ``table.column`` for each UPDATE SET or INSERT that does."""
    found: list[str] = []
    for table, cols in STATE_COLUMNS.items():
        named = "|".join(cols)
        update = rf"\bUPDATE\s+[\"']?{table}[\"']?\s+SET\b(?:(?!\bWHERE\b).)*?\b({named})\b\s*="
        insert = rf"\b(?:INSERT|REPLACE)\b(?:\s+OR\s+\w+)?\s+INTO\s+[\"']?{table}[\"']?\s*\((?:[^)]*?)\b({named})\b"
        found.extend(f"{table}.{m.group(1)}" for m in re.finditer(update, text, re.IGNORECASE | re.DOTALL))
        found.extend(f"{table}.{m.group(1)}" for m in re.finditer(insert, text, re.IGNORECASE | re.DOTALL))
    return found


def _table_api_writes(text: str) -> list[str]:
    """sqlite-utils writes to a state-machine table: ``db["volumes"].update(...)``, ``db.table("snapshots").insert``."""
    tables = "|".join(STATE_COLUMNS)
    pattern = rf"(?:\[|\.table\()\s*[\"']({tables})[\"']\s*[\])]\s*\.\s*(update|insert|upsert|insert_all|upsert_all)\b"
    return [f"{m.group(1)}.{m.group(2)}()" for m in re.finditer(pattern, text)]


def state_writes_outside_the_store(root: Path) -> list[str]:
    """``path:line: what`` for every string literal or table call under ``root`` that writes a state column."""
    problems: list[str] = []
    for path in sorted(root.rglob("*.py")):
        if path.relative_to(root).as_posix() == "store/store.py":
            continue
        source = path.read_text(encoding="utf-8")
        tree = ast.parse(source)
        parts = {id(v) for node in ast.walk(tree) if isinstance(node, ast.JoinedStr) for v in node.values}
        for node in ast.walk(tree):
            if id(node) in parts:  # the literal pieces of an f-string: read with their f-string, below
                continue
            if isinstance(node, ast.JoinedStr):
                text = "".join(v.value if isinstance(v, ast.Constant) else "{}" for v in node.values)
            elif isinstance(node, ast.Constant) and isinstance(node.value, str):
                text = node.value
            else:
                continue
            problems.extend(f"{path}:{node.lineno}: {what}" for what in _sql_writes(text))
        for number, line in enumerate(source.splitlines(), start=1):
            problems.extend(f"{path}:{number}: {what}" for what in _table_api_writes(line))
    return problems


class TestOneWritePath:
    """Nothing but ``store/store.py`` writes a state column (DESIGN.md: one durable write path)."""

    def test_no_module_but_the_store_writes_a_state_column(self) -> None:
        """No SQL text or sqlite-utils table call outside ``store/store.py`` writes a state or its counter."""
        assert state_writes_outside_the_store(PACKAGE) == []

    @pytest.mark.parametrize(
        ("code", "what"),
        [
            ('conn.execute("UPDATE volumes SET state = ? WHERE id = ?", (s, i))', "volumes.state"),
            (
                "db.execute(f'update snapshot_store_ref set size = 1, update_count = {n}')",
                "snapshot_store_ref.update_count",
            ),
            ('SQL = """\nUPDATE "snapshots"\n   SET status = ?\n"""', "snapshots.status"),
            ('q = "INSERT INTO async_job (account_id, job_status) VALUES (1, 2)"', "async_job.job_status"),
            ('q = "INSERT OR REPLACE INTO vm_work_job (id, state) VALUES (1, 2)"', "vm_work_job.state"),
            ('db["volumes"].update(1, {"path": "/x"})', "volumes.update()"),
            ("db.table('snapshots').insert({'id': 1})", "snapshots.insert()"),
        ],
    )
    def test_the_scan_finds_a_planted_write(self, tmp_path: Path, code: str, what: str) -> None:
        """The scan is not vacuous: a planted write is reported with its file and line."""
        module = tmp_path / "orchestration" / "rogue.py"
        module.parent.mkdir()
        module.write_text(f"def rogue(conn, db, s, i, n):\n    {code}\n", encoding="utf-8")
        assert state_writes_outside_the_store(tmp_path) == [f"{module}:2: {what}"]

    def test_the_scan_ignores_reads_and_other_tables(self, tmp_path: Path) -> None:
        """Reading a state, or writing ``vm_instance.state`` (no machine drives it), is not reported."""
        module = tmp_path / "reader.py"
        module.write_text(
            'A = "SELECT state FROM volumes WHERE state = ?"\n'
            'B = "UPDATE vm_instance SET state = ? WHERE id = ?"\n'
            'C = "UPDATE volumes SET path = ? WHERE state = ?"\n',
            encoding="utf-8",
        )
        assert state_writes_outside_the_store(tmp_path) == []


def test_the_worker_module_runs_from_any_directory(tmp_path: Path) -> None:
    """``tests/_store_worker.py`` imports the installed package when run by path, as the process tests run it."""
    worker = Path(__file__).with_name("_store_worker.py")
    done = subprocess.run(
        [sys.executable, str(worker), "nonsense", "x", "1"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
        env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
        timeout=60,
    )
    assert (done.returncode, done.stderr.strip().splitlines()[-1]) == (1, "unknown worker 'nonsense' (race, churn)")


def _rolled_back(store: Store, *writes: Callable[[], object], beside: Callable[[], object]) -> None:
    """A transaction that makes ``writes`` and a write beside it, then fails."""
    with store.atomic():
        for write in writes:
            write()
        store.beside_transaction(beside)
        raise RuntimeError


class TestBesideTransaction:
    """``Store.beside_transaction``: a write a rollback does not take back (simulated storage, spec §21.4.1)."""

    def test_a_rollback_does_not_take_it_back(self, store: Store) -> None:
        """Made inside a transaction that rolls back: the other writes are gone, this one is there."""
        volume = new_volume(store)
        with pytest.raises(RuntimeError):
            _rolled_back(
                store, lambda: store.update(volume, name="renamed"), beside=lambda: store.update(volume, size=2 * GIB)
            )
        assert (store.reload(volume).name, store.reload(volume).size) == ("data", 2 * GIB)
        assert not store.conn.in_transaction

    def test_an_inner_rollback_keeps_it_and_so_does_the_outer_commit(self, store: Store) -> None:
        """A savepoint rolled back inside a transaction that commits: the write stays, made once more."""
        volume = new_volume(store)
        with store.atomic():
            with pytest.raises(RuntimeError):
                _rolled_back(store, beside=lambda: store.update(volume, size=3 * GIB))
            store.update(volume, name="renamed")
        assert (store.reload(volume).name, store.reload(volume).size) == ("renamed", 3 * GIB)

    def test_the_redo_is_no_crash_point(self, store: Store) -> None:
        """Redone after the rollback without calling ``write_point``: a crash falls only before a block."""
        volume = new_volume(store)
        points: list[str] = []
        store.write_point = lambda: points.append("write")
        with pytest.raises(RuntimeError):
            _rolled_back(store, beside=lambda: store.update(volume, size=4 * GIB))
        assert points == ["write"]
        assert store.reload(volume).size == 4 * GIB
