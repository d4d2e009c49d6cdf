"""``CephSnapshotStrategy`` and ``ScaleIOSnapshotStrategy``: StorageSystem's children for RBD and PowerFlex pools.

Both refuse everything unless the snapshot has a primary ref on a pool of their type (in the zone, when one is
given) and its volume still exists; then Ceph handles only REVERT, ScaleIO REVERT and DELETE (spec §6.2). Neither
ever takes a snapshot: that is why the walkthrough's "HIGH" for them is wrong (spec §12.1 step 6).
"""

from __future__ import annotations

from typing import ClassVar

from snapshotfsm.store.records import Snapshot, StoragePool, Volume
from snapshotfsm.strategies.base import Operation, Priority, StrategyEnv
from snapshotfsm.strategies.storage_system import StorageSystemSnapshotStrategy


class _ArrayStrategy(StorageSystemSnapshotStrategy):
    pool_type: ClassVar[str]
    handles: ClassVar[frozenset[Operation]]

    def can_handle(self, env: StrategyEnv, snapshot: Snapshot, op: Operation, zone_id: int | None) -> Priority:
        """Spec §6.2: COPY no; a removed base volume no; no primary ref on a pool of this type no; else by op."""
        if op is Operation.COPY:
            return Priority.CANT_HANDLE
        volume = env.store.get(Volume, snapshot.volume_id)
        if volume.removed is not None:
            return Priority.CANT_HANDLE
        on_type = False
        for ref in env.primary_refs(snapshot.id):
            pool = env.store.get(StoragePool, ref.store_id)
            if pool.pool_type == self.pool_type and (zone_id is None or pool.data_center_id == zone_id):
                on_type = True
        if not on_type:
            return Priority.CANT_HANDLE
        return Priority.HIGHEST if op in self.handles else Priority.CANT_HANDLE


class CephSnapshotStrategy(_ArrayStrategy):
    """REVERT of snapshots on RBD pools (RAW only at revert time)."""

    name = "CephSnapshotStrategy"
    pool_type = "RBD"
    handles = frozenset({Operation.REVERT})


class ScaleIOSnapshotStrategy(_ArrayStrategy):
    """REVERT and DELETE of snapshots on PowerFlex pools."""

    name = "ScaleIOSnapshotStrategy"
    pool_type = "PowerFlex"
    handles = frozenset({Operation.REVERT, Operation.DELETE})
