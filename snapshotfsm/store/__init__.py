"""The durable store (DESIGN.md layer 3): CloudStack-shaped tables, records, and the durable transition."""

from snapshotfsm.store.records import *  # noqa: F403
from snapshotfsm.store.records import ALL_RECORDS, Record
from snapshotfsm.store.schema import APPLICATION_ID, SCHEMA_VERSION
from snapshotfsm.store.store import Binding, Store

__all__ = ["ALL_RECORDS", "APPLICATION_ID", "SCHEMA_VERSION", "Binding", "Record", "Store"]
