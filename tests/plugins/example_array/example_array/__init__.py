"""A storage array as a snapshotfsm plugin: its driver, and the strategy that takes its pools' snapshots."""

from __future__ import annotations

from snapshotfsm.drivers import PrimaryDriver
from snapshotfsm.store.records import Snapshot, Volume
from snapshotfsm.strategies import Operation, Priority, StrategyEnv
from snapshotfsm.strategies.default import DefaultSnapshotStrategy

PROVIDER = "ExampleArray"


class ExampleArrayDriver(PrimaryDriver):
    """Pools of provider ExampleArray, type ExampleFS: snapshots are array objects."""

    kind = "examplearray"
    providers = (PROVIDER,)
    pool_types = frozenset({"ExampleFS"})

    def snapshot_path(self, snapshot: Snapshot, volume: Volume) -> str:
        """Where the array keeps a snapshot of ``volume``."""
        return f"examplearray://{self.pool.name}/{volume.uuid}@{snapshot.uuid}"


class ExampleArrayStrategy(DefaultSnapshotStrategy):
    """The Default strategy's take, backup and delete, chosen first for the array's pools."""

    name = "ExampleArraySnapshotStrategy"

    def can_handle(self, env: StrategyEnv, snapshot: Snapshot, op: Operation, zone_id: int | None) -> Priority:
        """HIGHEST for TAKE, BACKUP and DELETE of a snapshot whose volume is on an ExampleArray pool."""
        pool = env.pool_of(env.store.get(Volume, snapshot.volume_id))
        mine = pool is not None and pool.storage_provider_name == PROVIDER
        return (
            Priority.HIGHEST
            if mine and op in (Operation.TAKE, Operation.BACKUP, Operation.DELETE)
            else Priority.CANT_HANDLE
        )
