"""Choosing a strategy: ``StorageStrategyFactoryImpl.bestMatch`` (spec §6.1).

The list order is the order strategies are registered: CloudStack's Spring context order is UNVERIFIED, so the model
fixes Default, StorageSystem, Ceph, ScaleIO, StorPool, followed by third-party strategies found through the
``snapshotfsm.strategies`` entry-point group, in entry-point name order.
"""

from __future__ import annotations

import importlib.metadata

from snapshotfsm.errors import InvalidValue
from snapshotfsm.store.records import Snapshot
from snapshotfsm.strategies.array import CephSnapshotStrategy, ScaleIOSnapshotStrategy
from snapshotfsm.strategies.base import Operation, Priority, SnapshotStrategy, StrategyEnv
from snapshotfsm.strategies.default import DefaultSnapshotStrategy
from snapshotfsm.strategies.storage_system import StorageSystemSnapshotStrategy
from snapshotfsm.strategies.storpool import StorPoolSnapshotStrategy

ENTRY_POINT_GROUP = "snapshotfsm.strategies"


def builtin_strategies() -> list[SnapshotStrategy]:
    """CloudStack's five snapshot strategies at upstream U (spec §6.2), in the model's registration order."""
    return [
        DefaultSnapshotStrategy(),
        StorageSystemSnapshotStrategy(),
        CephSnapshotStrategy(),
        ScaleIOSnapshotStrategy(),
        StorPoolSnapshotStrategy(),
    ]


def plugin_strategies() -> list[SnapshotStrategy]:
    """Strategies other packages register under the ``snapshotfsm.strategies`` entry-point group.

    Raises:
        InvalidValue: an entry point that does not load a SnapshotStrategy subclass.
    """
    found: list[SnapshotStrategy] = []
    for ep in sorted(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        cls = ep.load()
        if not (isinstance(cls, type) and issubclass(cls, SnapshotStrategy)):
            raise InvalidValue(f"entry point {ep.name!r} ({ep.value})", cls, "a SnapshotStrategy subclass")
        found.append(cls())
    return found


class StrategyFactory:
    """Picks the strategy for a snapshot and an operation: the first strict maximum, or None."""

    def __init__(self, strategies: list[SnapshotStrategy]) -> None:
        self.strategies = strategies

    def best(
        self, env: StrategyEnv, snapshot: Snapshot, op: Operation, zone_id: int | None = None
    ) -> SnapshotStrategy | None:
        """``getSnapshotStrategy(snapshot, zoneId, op)``: ties go to the earlier strategy; all CANT_HANDLE → None."""
        best: SnapshotStrategy | None = None
        best_priority = Priority.CANT_HANDLE
        for strategy in self.strategies:
            priority = strategy.can_handle(env, snapshot, op, zone_id)
            if priority > best_priority:
                best, best_priority = strategy, priority
        return best

    def priorities(
        self, env: StrategyEnv, snapshot: Snapshot, op: Operation, zone_id: int | None = None
    ) -> list[tuple[str, Priority]]:
        """Every strategy's answer, for explanations and tests."""
        return [(s.name, s.can_handle(env, snapshot, op, zone_id)) for s in self.strategies]
