"""What every primary-storage driver shares: capabilities, taking, backing up and deleting a snapshot.

Subclasses choose the paths their storage uses and may refuse or extend an operation; the operation names are
CloudStack's (``takeSnapshot``, ``copyAsync``, ``deleteAsync``) so that a fault plan reads like CloudStack.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from snapshotfsm.drivers.base import ASYNC, SYNC, Answer, Callback, Driver, DriverEnv
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
        self,
        snapshot: Snapshot,
        volume: Volume,
        callback: Callback,
        *,
        to_image: ImageStoreDriver | None = None,
        parent_path: str | None = None,
    ) -> None:
        """``takeSnapshot``: create the snapshot and answer with its path and physical size.

        With ``to_image`` (KVM on file-based storage with backup on, spec §13.2) the host writes the snapshot
        straight to that image store, at the image ref's install path. ``parent_path`` is the path of the parent
        snapshot on this pool (``SnapshotObjectTO.parentSnapshotPath``, when the ref has a parent, spec §16.1).
        """

        def effect() -> Answer:
            problem = self.endpoint_missing()
            if problem:
                return Answer(result=False, details=problem)
            unchanged = self.unchanged_parent(snapshot, volume, parent_path)
            if unchanged is not None:
                return Answer(result=True, path=unchanged.path, physical_size=unchanged.physical_size)
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

    def unchanged_parent(self, snapshot: Snapshot, volume: Volume, parent_path: str | None) -> StorageObject | None:
        """The parent snapshot to answer with instead of a new one, when the host reports no change (none here)."""
        del snapshot, volume, parent_path
        return None

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
        parent_path: str | None = None,
        keep_source: bool = False,
    ) -> None:
        """``copyAsync`` of a snapshot from this pool to an image store (the backup of spec §5.8).

        ``full`` is the strategy's plan (spec §7.3, §16.2) and ``parent_path`` the new image ref's parent on the
        image store: a delta holds what changed since that parent (the volume's churn, at most the full snapshot),
        points at its object, and the answer names it (``parentSnapshotPath``). A full copy, or a delta with no parent
        to write on, names none, which starts a new chain on secondary storage. ``keep_source``: the snapshot stays
        on primary if the copy fails (the ``hardened`` profile's async backup), so a driver must not delete it then.
        """

        def effect() -> Answer:
            source = self.find(src_path)
            if source is None:
                return Answer(result=False, details=f"snapshot {src_path} does not exist on {self.pool.name}")
            delta = not full and parent_path is not None
            physical = source.physical_size
            if delta:
                physical = min(physical, self.churn(source.volume_id or snapshot.volume_id))
            target.put(
                dest_path,
                kind="delta" if delta else "snapshot",
                size=source.size,
                physical_size=physical,
                snapshot_id=snapshot.id,
                volume_id=source.volume_id,
                source_path=src_path,
                parent_path=parent_path if delta else None,
            )
            self.after_backup_copy(snapshot, source)
            return Answer(
                result=True, path=dest_path, physical_size=physical, parent_path=parent_path if delta else None
            )

        self.call("copyAsync", self.wrap_backup_answer(snapshot, src_path, callback, keep_source=keep_source), effect)

    def after_backup_copy(self, snapshot: Snapshot, source: StorageObject) -> None:
        """What the host does with the snapshot on primary once it is copied (nothing, unless a driver says so)."""

    def wrap_backup_answer(
        self,
        snapshot: Snapshot,  # noqa: ARG002
        src_path: str,  # noqa: ARG002
        callback: Callback,
        *,
        keep_source: bool = False,  # noqa: ARG002
    ) -> Callback:
        """Hook for drivers that react to a failed backup (StorPool deletes its snapshot, spec §8).

        ``keep_source``: the caller keeps the snapshot on primary when the copy fails (``backup_snapshot``).
        """
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
    operations: ClassVar[Mapping[str, str]] = {**PrimaryDriver.operations, "removeBitmap": SYNC}

    def take_incremental_snapshot(
        self,
        snapshot: Snapshot,
        volume: Volume,
        callback: Callback,
        *,
        to_image: ImageStoreDriver | None = None,
        parent_path: str | None = None,
    ) -> None:
        """``takeSnapshot`` with the payload's ``kvmIncrementalSnapshot`` (spec §16.4): a checkpointed KVM snapshot.

        This driver alone hands the flag to the host (``getAndUpdateSnapshotObjectTO``); the fault plan knows the
        call as ``takeSnapshot``. ``parent_path`` is the path of the parent's ref with a checkpoint.
        """

        def effect() -> Answer:
            problem = self.endpoint_missing()
            if problem:
                return Answer(result=False, details=problem)
            return self._incremental(snapshot, volume, to_image=to_image, parent_path=parent_path)

        self.call("takeSnapshot", callback, effect)

    def _incremental(
        self, snapshot: Snapshot, volume: Volume, *, to_image: ImageStoreDriver | None, parent_path: str | None
    ) -> Answer:
        """The KVM host's take (``takeIncrementalVolumeSnapshotOf{Running,Stopped}Vm``, spec §16.4).

        ``virsh backup-begin`` writes the snapshot beside its checkpoint: on the pre-selected image store
        (``snapshots/<account>/<volume>/`` and ``checkpoints/<account>/<volume>/``), else on this pool
        (``<pool>/snapshots/`` and ``<pool>/checkpoints/``). With a parent it holds only what changed since the
        parent's checkpoint (the volume's churn, at most a full snapshot), rebased on the parent's file; a chain root
        is full. The checkpoint's bitmap is kept in the volume itself, on this pool. The answer carries the
        checkpoint's path (``checkpointPath``) and the file's size.
        """
        full = volume.size // FULL_FILL
        physical = full if parent_path is None else min(full, self.churn(volume.id))
        owner: dict[str, object] = {"snapshot_id": snapshot.id, "volume_id": volume.id}
        writer: Driver = self if to_image is None else to_image
        if to_image is not None:
            path = to_image.install_path(snapshot)
            checkpoint = f"checkpoints/{snapshot.account_id}/{snapshot.volume_id}/{snapshot.uuid}"
        else:
            root = self.pool.uuid or self.pool.name
            path, checkpoint = f"{root}/snapshots/{snapshot.uuid}", f"{root}/checkpoints/{snapshot.uuid}"
        writer.put(
            path,
            kind="snapshot" if parent_path is None else "delta",
            size=volume.size,
            physical_size=physical,
            parent_path=parent_path,
            **owner,
        )
        writer.put(checkpoint, kind="checkpoint", **owner)
        self.put(self.bitmap_path(volume, snapshot.uuid), kind="bitmap", **owner)
        return Answer(result=True, path=path, physical_size=physical, checkpoint_path=checkpoint)

    def bitmap_path(self, volume: Volume, name: str) -> str:
        """Where the volume keeps the dirty bitmap of a checkpoint named ``name`` (the snapshot file's name)."""
        return f"{self.pool.uuid or self.pool.name}/{volume.path or volume.uuid}#bitmap/{name}"

    def remove_bitmap(self, volume: Volume, snapshot_path: str) -> Answer:
        """``RemoveBitmapCommand`` to a KVM host (spec §16.6): the volume drops the bitmap of a deleted checkpoint.

        The bitmap is named after the snapshot file (the last part of the ref's path); one already gone is no error
        (``removeBitmapForStoppedVm`` ignores "not found"). Answered at once (``EndPoint.sendMessage``), so a fault
        that withholds the answer is an error answer, as the agent's timeout is.

        Raises:
            CloudRuntimeException: an injected ``exception`` fault.
        """
        name = snapshot_path.rsplit("/", 1)[-1]

        def effect() -> Answer:
            found = self.find(self.bitmap_path(volume, name))
            if found is not None:
                self.drop(found)
            return Answer(result=True)

        return self.call_sync("removeBitmap", effect)

    def unchanged_parent(self, snapshot: Snapshot, volume: Volume, parent_path: str | None) -> StorageObject | None:
        """A XenServer host finds the new VHD's parent equal to the previous snapshot's: nothing changed (§16.2).

        It destroys the new snapshot and answers with the parent's path (``XenServerStorageProcessor.createSnapshot``):
        the empty delta. The simulated volume changed when its churn (``set_volume_churn``) is above 0.
        """
        if snapshot.hypervisor_type != "XenServer" or parent_path is None or self.churn(volume.id) > 0:
            return None
        return self.find(parent_path)

    def after_backup_copy(self, snapshot: Snapshot, source: StorageObject) -> None:
        """What the host deletes on primary once the copy is done (spec §13.2, §16.2, §16.4).

        A KVM host deletes the copied snapshot, but on RBD (``KVMStorageProcessor.backupSnapshot`` ends with
        ``deleteSnapshotOnPrimary``: ``lvremove`` on CLVM, the file elsewhere); a XenServer host keeps only that
        one of the volume's snapshots on the pool (``destroySnapshotOnPrimaryStorageExceptThis``), the next delta's
        base. The database learns nothing of either: the management server removes the refs its own way
        (``removeClvmPrimarySnapshotStoreRefIfNeeded``, ``postSnapshotCreation``).
        """
        if snapshot.hypervisor_type == "KVM" and self.pool.pool_type != "RBD":
            self.drop(source)
        elif snapshot.hypervisor_type == "XenServer" and source.volume_id is not None:
            for other in self.objects(volume_id=source.volume_id):
                if other.kind == "snapshot" and other.path != source.path:
                    self.drop(other)

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
