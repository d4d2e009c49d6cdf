"""What every primary-storage driver shares: capabilities, taking, backing up and deleting a snapshot.

Subclasses choose the paths their storage uses and may refuse or extend an operation; the operation names are
CloudStack's (``takeSnapshot``, ``copyAsync``, ``deleteAsync``) so that a fault plan reads like CloudStack.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from snapshotfsm.drivers.base import ASYNC, Answer, Callback, Driver, DriverEnv
from snapshotfsm.drivers.image import ImageStoreDriver
from snapshotfsm.store.records import Host, Snapshot, StorageObject, StoragePool, StoragePoolDetail, Volume

if TYPE_CHECKING:
    from collections.abc import Mapping

CLVM_POOL_TYPES = frozenset({"CLVM", "CLVM_NG"})
"""``ClvmPoolManager.isClvmPoolType``: block storage whose snapshots are logical volumes."""

FULL_FILL = 2
"""A snapshot holds half of its volume's virtual size (the model's fixed fill ratio), so that usage shows
physical < virtual and the resource correction of spec §5.4 step 12 has something to correct."""


class PrimaryDriver(Driver):
    """A primary-storage driver bound to one ``storage_pool`` row.

    A driver class declares the storage providers it is (``storage_provider_name``, CloudStack's
    ``DataStoreProvider`` name) and the pool types it serves: a pool is served by the driver of its provider, which
    must serve its pool type.
    """

    store_kind = "primary"
    providers: ClassVar[tuple[str, ...]]
    pool_types: ClassVar[frozenset[str]]
    capabilities: ClassVar[frozenset[str]] = frozenset()
    latency_defaults: ClassVar[Mapping[str, int]] = {"takeSnapshot": 2_000, "copyAsync": 30_000, "deleteAsync": 1_000}
    operations: ClassVar[Mapping[str, str]] = {"takeSnapshot": ASYNC, "copyAsync": ASYNC, "deleteAsync": ASYNC}

    def __init__(self, env: DriverEnv, pool: StoragePool) -> None:
        super().__init__(env, pool.id, aliases=(pool.pool_type,))
        self.pool = pool

    def pool_capabilities(self) -> frozenset[str]:
        """The driver's capabilities, as changed by the pool's details (``<CAPABILITY>`` = true/false)."""
        caps = set(self.capabilities)
        for detail in self.env.store.find(StoragePoolDetail, "pool_id = ?", (self.pool.id,)):
            if detail.value.lower() == "true":
                caps.add(detail.name)
            elif detail.value.lower() == "false":
                caps.discard(detail.name)
        return frozenset(caps)

    def snapshot_path(self, snapshot: Snapshot, volume: Volume) -> str:
        """Where a snapshot of ``volume`` lives on this storage."""
        return f"{self.pool.uuid or self.pool.name}/{volume.path or volume.uuid}/snapshots/{snapshot.uuid}"

    def endpoint_missing(self) -> str | None:
        """Why no host can run the command, or None (the default driver's EndPointSelector, spec §5.6)."""
        return None

    # --- operations --------------------------------------------------------------------------------------------

    def take_snapshot(
        self, snapshot: Snapshot, volume: Volume, callback: Callback, *, to_image: ImageStoreDriver | None = None
    ) -> None:
        """``takeSnapshot``: create the snapshot and answer with its path and physical size.

        With ``to_image`` (KVM on file-based storage with backup on, spec §13.2) the host writes the snapshot
        straight to that image store, at the image ref's install path.
        """

        def effect() -> Answer:
            problem = self.endpoint_missing()
            if problem:
                return Answer(result=False, details=problem)
            physical = volume.size // FULL_FILL
            fields = {
                "size": volume.size,
                "physical_size": physical,
                "snapshot_id": snapshot.id,
                "volume_id": volume.id,
            }
            if to_image is not None:
                path = to_image.install_path(snapshot)
                to_image.put(path, **fields)
            else:
                path = self.snapshot_path(snapshot, volume)
                self.put(path, **fields)
            self.after_take(snapshot, path)
            return Answer(result=True, path=path, physical_size=physical)

        self.call("takeSnapshot", callback, effect)

    def after_take(self, snapshot: Snapshot, path: str) -> None:
        """A driver's own bookkeeping once its snapshot exists (StorPool writes details, spec §8)."""

    def backup_snapshot(
        self,
        snapshot: Snapshot,
        src_path: str,
        target: ImageStoreDriver,
        dest_path: str,
        callback: Callback,
        *,
        full: bool = True,
    ) -> None:
        """``copyAsync`` of a snapshot from this pool to an image store (the backup of spec §5.8).

        ``full`` is the strategy's backup plan (spec §7.3): a delta is written as an object of kind ``delta``. The
        simulated copy holds the whole snapshot either way; sizes and parents of deltas are not modelled yet.
        """

        def effect() -> Answer:
            source = self.find(src_path)
            if source is None:
                return Answer(result=False, details=f"snapshot {src_path} does not exist on {self.pool.name}")
            target.put(
                dest_path,
                kind="snapshot" if full else "delta",
                size=source.size,
                physical_size=source.physical_size,
                snapshot_id=snapshot.id,
                volume_id=source.volume_id,
                source_path=src_path,
            )
            self.after_backup_copy(snapshot, source)
            return Answer(result=True, path=dest_path, physical_size=source.physical_size)

        self.call("copyAsync", self.wrap_backup_answer(snapshot, src_path, callback), effect)

    def after_backup_copy(self, snapshot: Snapshot, source: StorageObject) -> None:
        """What the host does with the snapshot on primary once it is copied (nothing, unless a driver says so)."""

    def wrap_backup_answer(self, snapshot: Snapshot, src_path: str, callback: Callback) -> Callback:  # noqa: ARG002
        """Hook for drivers that react to a failed backup (StorPool deletes its snapshot, spec §8)."""
        return callback

    def holds(self, path: str) -> StorageObject | None:
        """The object at ``path`` if this pool holds it."""
        return self.find(path)


class DefaultPrimaryDriver(PrimaryDriver):
    """``CloudStackPrimaryDataStoreDriverImpl``: NFS, SharedMountPoint, Filesystem, RBD, CLVM and the like.

    It sends the command to a host chosen by the EndPointSelector and advertises no snapshot capability.
    """

    kind = "default"
    providers = ("DefaultPrimary",)
    pool_types = frozenset(
        {
            "NetworkFilesystem",
            "SharedMountPoint",
            "Filesystem",
            "RBD",
            "CLVM",
            "PreSetup",
            "Iscsi",
            "IscsiLUN",
            "DatastoreCluster",
            "VMFS",
            "Linstor",
        }
    )

    def after_backup_copy(self, snapshot: Snapshot, source: StorageObject) -> None:
        """A KVM host deletes the snapshot on primary once it is copied, but on RBD (spec §13.2, §16.4).

        ``KVMStorageProcessor.backupSnapshot`` ends with ``deleteSnapshotOnPrimary`` (``lvremove`` on CLVM, the
        file elsewhere); the database learns nothing of it (a CLVM primary ref is removed by the management server,
        ``removeClvmPrimarySnapshotStoreRefIfNeeded``).
        """
        if snapshot.hypervisor_type == "KVM" and self.pool.pool_type != "RBD":
            self.drop(source)

    def snapshot_path(self, snapshot: Snapshot, volume: Volume) -> str:
        """RBD keeps ``pool/image@snap``; CLVM a logical volume; file-based pools a file beside the volume."""
        if self.pool.pool_type == "RBD":
            return f"{self.pool.name}/{volume.path or volume.uuid}@{snapshot.uuid}"
        if self.pool.pool_type in CLVM_POOL_TYPES:
            return f"/dev/{self.pool.name}/{snapshot.uuid}"
        return super().snapshot_path(snapshot, volume)

    def endpoint_missing(self) -> str | None:
        """Spec §5.6: with no Up host to run CreateObjectCommand the driver answers with an error."""
        where = "cluster_id = ?" if self.pool.cluster_id is not None else "data_center_id = ?"
        scope = self.pool.cluster_id if self.pool.cluster_id is not None else self.pool.data_center_id
        if self.env.store.count(Host, f"{where} AND status = 'Up' AND removed IS NULL", (scope,)) == 0:
            return "No remote endpoint to send createObjectCommand, check if host or ssvm is down?"
        return None
