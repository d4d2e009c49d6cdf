"""Managed storage-system pools: a SolidFire-like driver, and NetApp ONTAP (the fork's provider, spec appendix A).

Both advertise STORAGE_SYSTEM_SNAPSHOT, so the StorageSystem strategy takes their snapshots (spec §5.7, §6.2).
"""

from __future__ import annotations

from typing import ClassVar

from snapshotfsm.drivers.base import (
    CAN_CREATE_VOLUME_FROM_SNAPSHOT,
    CAN_REVERT_VOLUME_TO_SNAPSHOT,
    STORAGE_SYSTEM_SNAPSHOT,
)
from snapshotfsm.drivers.primary import PrimaryDriver
from snapshotfsm.store.records import Snapshot, Volume

ONTAP_PLUGIN_NAME = "NetApp ONTAP"
"""``DataStoreProvider.ONTAP_PLUGIN_NAME`` in the NetApp fork."""


class ManagedDriver(PrimaryDriver):
    """``SolidFirePrimaryDataStoreDriver``-like: one array volume per CloudStack volume, snapshots on the array."""

    kind = "managed"
    providers = ("SolidFire",)
    pool_types = frozenset({"Iscsi", "IscsiLUN"})
    capabilities: ClassVar[frozenset[str]] = frozenset(
        {STORAGE_SYSTEM_SNAPSHOT, CAN_CREATE_VOLUME_FROM_SNAPSHOT, CAN_REVERT_VOLUME_TO_SNAPSHOT}
    )

    def snapshot_path(self, snapshot: Snapshot, volume: Volume) -> str:
        """An array snapshot of the volume's array volume."""
        return f"{self.pool.name}:{volume.path or volume.uuid}:snap-{snapshot.uuid}"


class OntapDriver(ManagedDriver):
    """The NetApp ONTAP provider of the fork (``storage_provider_name`` = ``NetApp ONTAP``)."""

    kind = "ontap"
    providers = (ONTAP_PLUGIN_NAME,)
    pool_types = frozenset({"Iscsi", "NetworkFilesystem"})
