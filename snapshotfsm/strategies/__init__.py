"""Snapshot strategies (DESIGN.md layer 5): priorities per operation, and the factory that chooses."""

from snapshotfsm.strategies.base import (
    BackupKind,
    BackupPlan,
    Operation,
    Payload,
    Priority,
    SnapshotStrategy,
    SnapshotTake,
    StrategyEnv,
)
from snapshotfsm.strategies.factory import StrategyFactory, installed_strategies

__all__ = [
    "BackupKind",
    "BackupPlan",
    "Operation",
    "Payload",
    "Priority",
    "SnapshotStrategy",
    "SnapshotTake",
    "StrategyEnv",
    "StrategyFactory",
    "installed_strategies",
]
