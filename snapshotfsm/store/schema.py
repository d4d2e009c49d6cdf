"""The database schema, generated from the records, and how a file is recognised as ours.

A snapshotfsm database carries ``PRAGMA application_id`` = :data:`APPLICATION_ID` and ``PRAGMA user_version`` =
:data:`SCHEMA_VERSION`. Tables are STRICT, so SQLite itself refuses a value of the wrong type should one get past the
store's own checks.

:func:`define_schema` is the definition: sqlite-utils' ``Table.create`` and ``create_index`` from the records. It is
run once per process, on a template in memory; every new database then gets the statements that template holds
(:func:`create_schema`, one transaction) or, in memory, a page copy of it (:func:`copy_schema`). sqlite-utils
spends most of a new database's 9 ms introspecting what it is about to create (``sqlite_master`` scans, ``PRAGMA
table_info`` per table); the statements alone take 3 ms and a page copy 0.15 ms, and the schema is the same:
``tests/test_store.py`` compares ``sqlite_master`` row for row.
"""

from __future__ import annotations

import functools
import os
import sqlite3
import threading
import types
import typing
from typing import Any

import attrs
import sqlite_utils

from snapshotfsm.store.records import ALL_RECORDS, Record

APPLICATION_ID = 0x534E4653  # "SNFS"
SCHEMA_VERSION = 5

_SQL_TYPES: dict[type, type] = {int: int, bool: int, str: str, float: float}


@attrs.frozen
class Column:
    """One column: the Python type a record holds, and whether NULL is allowed."""

    name: str
    type: type
    nullable: bool


def _columns(cls: type[Record]) -> dict[str, Column]:
    hints = typing.get_type_hints(cls)
    out: dict[str, Column] = {}
    for field in attrs.fields(cls):
        hint = hints[field.name]
        args = typing.get_args(hint)
        nullable = isinstance(hint, types.UnionType) and type(None) in args
        base = next(a for a in args if a is not type(None)) if nullable else hint
        out[field.name] = Column(field.name, base, nullable)
    return out


_COLUMNS: dict[type[Record], dict[str, Column]] = {cls: _columns(cls) for cls in ALL_RECORDS}


def columns(cls: type[Record]) -> dict[str, Column]:
    """The columns of ``cls``'s table, in field order, from the record's type hints."""
    found = _COLUMNS.get(cls)
    if found is None:
        found = _COLUMNS[cls] = _columns(cls)
    return found


def define_schema(db: sqlite_utils.Database) -> None:
    """Create every table and index through sqlite-utils, and stamp the file: the schema's one definition.

    Every ``id`` is AUTOINCREMENT: like MySQL's AUTO_INCREMENT, which every CloudStack table uses, an id is never
    given twice, even after the row holding the highest one is hard-deleted (the storage GC's expunge, spec §10.5,
    and ``expungeLeftoverWorkJobs``). SQLite's plain rowid would give that id again, and a job's answer would then
    be judged against a snapshot created after the one it was about.
    """
    with db.atomic():
        for cls in ALL_RECORDS:
            cols = columns(cls)
            spec: dict[str, Any] = {name: _SQL_TYPES[c.type] for name, c in cols.items()}
            not_null = [name for name, c in cols.items() if not c.nullable and name != "id"]
            # sqlite-utils' Table.create has no AUTOINCREMENT; create_table_sql's is the one its transform() keeps.
            db.execute(
                db.create_table_sql(cls.table, spec, pk="id", not_null=not_null, strict=True, _autoincrement="id")
            )
            for index in cls.indexes:
                db.table(cls.table).create_index(index, index_name=f"ix_{cls.table}_{'_'.join(index)}")
            for index in cls.unique:
                db.table(cls.table).create_index(index, index_name=f"ux_{cls.table}_{'_'.join(index)}", unique=True)
        db.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")


@functools.cache
def schema_statements() -> tuple[str, ...]:
    """The SQL of every table and index :func:`define_schema` creates, in creation order; computed once per process.

    Read back from a template's ``sqlite_master`` (rowid order is creation order in a database nothing was dropped
    from). Indexes SQLite makes by itself (``sqlite_autoindex_*``) have no SQL, and ``sqlite_sequence`` is made by the
    first AUTOINCREMENT table: their statements make them again.
    """
    db = sqlite_utils.Database(memory=True)
    try:
        define_schema(db)
        rows = db.conn.execute(
            "SELECT sql FROM sqlite_master WHERE sql IS NOT NULL AND name != 'sqlite_sequence' ORDER BY rowid"
        ).fetchall()
    finally:
        db.close()
    return tuple(str(sql) for (sql,) in rows)


def create_schema(db: sqlite_utils.Database) -> None:
    """Create every table and index, and stamp the file as a snapshotfsm database of this version.

    The statements :func:`define_schema` ran on the template, run again in one transaction (a savepoint inside the
    caller's): the same schema, without sqlite-utils' introspection around each of them.
    """
    with db.atomic():
        for sql in schema_statements():
            db.conn.execute(sql)
        db.conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        db.conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")


class _Template(threading.local):
    """The empty database with the schema that new in-memory ones copy: one per thread, opened again after a fork.

    A connection is used only in the thread that opened it (``sqlite3``'s ``check_same_thread``), and SQLite
    forbids using one across ``fork``: the process id that opened it is kept and checked.
    """

    pid = 0
    conn: sqlite3.Connection | None = None


_TEMPLATE = _Template()


def copy_schema(conn: sqlite3.Connection) -> None:
    """Give an empty in-memory database the full schema and stamp, by a page copy of a template (``backup``).

    The template was made by :func:`create_schema`, so the copy holds the same pages, ``application_id`` and
    ``user_version`` as a database made by it. ``conn`` must not be inside a transaction.
    """
    template = _TEMPLATE
    if template.conn is None or template.pid != os.getpid():
        db = sqlite_utils.Database(memory=True)
        create_schema(db)
        template.conn, template.pid = db.conn, os.getpid()
    template.conn.backup(conn)
