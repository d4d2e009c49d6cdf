"""The database schema, generated from the records, and how a file is recognised as ours.

A snapshotfsm database carries ``PRAGMA application_id`` = :data:`APPLICATION_ID` and ``PRAGMA user_version`` =
:data:`SCHEMA_VERSION`. Tables are STRICT, so SQLite itself refuses a value of the wrong type should one get past the
store's own checks.
"""

from __future__ import annotations

import types
import typing
from typing import Any

import attrs

from snapshotfsm.store.records import ALL_RECORDS, Record

if typing.TYPE_CHECKING:
    import sqlite_utils

APPLICATION_ID = 0x534E4653  # "SNFS"
SCHEMA_VERSION = 3

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


def create_schema(db: sqlite_utils.Database) -> None:
    """Create every table and index, and stamp the file as a snapshotfsm database of this version."""
    with db.atomic():
        for cls in ALL_RECORDS:
            cols = columns(cls)
            spec: dict[str, Any] = {name: _SQL_TYPES[c.type] for name, c in cols.items()}
            not_null = [name for name, c in cols.items() if not c.nullable and name != "id"]
            db.table(cls.table).create(spec, pk="id", not_null=not_null, strict=True)
            for index in cls.indexes:
                db.table(cls.table).create_index(index, index_name=f"ix_{cls.table}_{'_'.join(index)}")
            for index in cls.unique:
                db.table(cls.table).create_index(index, index_name=f"ux_{cls.table}_{'_'.join(index)}", unique=True)
        db.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
