"""Snapshot strategies (DESIGN.md layer 5): priorities per operation, and the factory that chooses."""

from snapshotfsm.strategies.base import BackupPlan, Operation, Payload, Priority, SnapshotStrategy, StrategyEnv, Take
from snapshotfsm.strategies.factory import StrategyFactory, builtin_strategies, plugin_strategies

__all__ = [
    "BackupPlan",
    "Operation",
    "Payload",
    "Priority",
    "SnapshotStrategy",
    "StrategyEnv",
    "StrategyFactory",
    "Take",
    "builtin_strategies",
    "plugin_strategies",
]
