"""Choosing a strategy: ``StorageStrategyFactoryImpl.bestMatch`` (spec §6.1).

The list order is the order strategies are registered: CloudStack's Spring context order is UNVERIFIED, so the model
fixes Default, StorageSystem, Ceph, ScaleIO, StorPool, followed by third-party strategies, all found through the
``snapshotfsm.strategies`` entry-point group (the built-ins register there too), the others in entry-point name
order. The factory keeps the first strict maximum, so this order decides ties.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable

from snapshotfsm.errors import InvalidValue
from snapshotfsm.plugins import load_group
from snapshotfsm.store.records import Snapshot
from snapshotfsm.strategies.base import Operation, Priority, SnapshotStrategy, StrategyEnv

ENTRY_POINT_GROUP = "snapshotfsm.strategies"
BUILTIN_ORDER = ("default", "storage-system", "ceph", "scaleio", "storpool")
"""The built-in strategies' entry-point names, in registration order."""


@functools.cache
def installed_strategies() -> tuple[type[SnapshotStrategy], ...]:
    """Every strategy class registered under ``snapshotfsm.strategies``: the built-ins, then the others by name.

    Raises:
        InvalidValue: an entry point that does not load a SnapshotStrategy subclass.
    """
    return load_group(ENTRY_POINT_GROUP, SnapshotStrategy, BUILTIN_ORDER)


class StrategyFactory:
    """Picks the strategy for a snapshot and an operation: the first strict maximum, or None.

    Raises:
        InvalidValue: an entry that is neither a SnapshotStrategy nor a subclass of one, or two strategies of one
            name.
    """

    def __init__(self, strategies: Iterable[SnapshotStrategy | type[SnapshotStrategy]]) -> None:
        made: list[SnapshotStrategy] = []
        for entry in strategies:
            if isinstance(entry, type) and issubclass(entry, SnapshotStrategy):
                made.append(entry())
            elif isinstance(entry, SnapshotStrategy):
                made.append(entry)
            else:
                raise InvalidValue("strategy", entry, "a SnapshotStrategy or a subclass of it")
        names = [s.name for s in made]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise InvalidValue(
                "strategies", names, "one strategy of each name", message=f"strategy {twice[0]} is given twice"
            )
        self.strategies = made

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
