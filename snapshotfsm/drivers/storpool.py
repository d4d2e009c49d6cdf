"""StorPool: snapshots under ``/dev/storpool-byid/``, and the HTTP API used for cross-zone copies (spec §8).

TAKE and BACKUP go through the Default strategy with this driver doing the work; DELETE and COPY go to the StorPool
strategy, which calls the API operations below (export, copy from remote, reconcile, unexport, delete). Those are
synchronous HTTP calls in CloudStack (``StorPoolUtil``), so they answer at once here too, fault plan included.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

from snapshotfsm.drivers.base import (
    CAN_COPY_SNAPSHOT_BETWEEN_ZONES_AND_SAME_POOL_TYPE,
    CAN_CREATE_TEMPLATE_FROM_SNAPSHOT,
    SYNC,
    Answer,
    Callback,
)
from snapshotfsm.drivers.image import ImageStoreDriver
from snapshotfsm.drivers.primary import PrimaryDriver
from snapshotfsm.errors import UnsupportedOperationException
from snapshotfsm.store.records import Snapshot, SnapshotDetail, Volume

SP_DEV_PATH = "/dev/storpool-byid/"
SP_STORAGE_POOL_ID = "spStoragePoolId"


def sp_name(path: str) -> str:
    """The StorPool name of an object: ``~<globalId>`` for a ``/dev/storpool-byid/<globalId>`` path."""
    return "~" + path.removeprefix(SP_DEV_PATH)


class StorPoolDriver(PrimaryDriver):
    """``StorPoolPrimaryDataStoreDriver``; it does not advertise STORAGE_SYSTEM_SNAPSHOT (spec §8)."""

    kind = "storpool"
    providers = ("StorPool",)
    pool_types = frozenset({"StorPool"})
    operations: ClassVar[Mapping[str, str]] = {
        **PrimaryDriver.operations,
        "snapshotExport": SYNC,
        "snapshotUnexport": SYNC,
        "snapshotFromRemote": SYNC,
        "snapshotReconcile": SYNC,
        "snapshotDelete": SYNC,
        "snapshotsList": SYNC,
    }
    capabilities: ClassVar[frozenset[str]] = frozenset(
        {CAN_COPY_SNAPSHOT_BETWEEN_ZONES_AND_SAME_POOL_TYPE, CAN_CREATE_TEMPLATE_FROM_SNAPSHOT}
    )

    def snapshot_path(self, snapshot: Snapshot, volume: Volume) -> str:  # noqa: ARG002
        """A StorPool global id, unique per pool and snapshot."""
        return f"{SP_DEV_PATH}{self.pool.id}.{snapshot.id}.{snapshot.uuid[:8]}"

    def take_snapshot(
        self,
        snapshot: Snapshot,
        volume: Volume,
        callback: Callback,
        *,
        to_image: ImageStoreDriver | None = None,
        parent_path: str | None = None,
    ) -> None:
        """Spec §8: a volume path outside ``/dev/storpool-byid/`` throws at the call.

        Raises:
            UnsupportedOperationException: the volume path is not a StorPool device path.
        """
        if not volume.path.startswith(SP_DEV_PATH):
            raise UnsupportedOperationException(f"The path should be: {SP_DEV_PATH}")
        super().take_snapshot(snapshot, volume, callback, to_image=to_image, parent_path=parent_path)

    def after_take(self, snapshot: Snapshot, path: str) -> None:
        """``StorPoolHelper.addSnapshotDetails``: ``<uuid>`` = path and ``spStoragePoolId`` = pool id (spec §7.5)."""
        store = self.env.store
        store.insert(SnapshotDetail(snapshot_id=snapshot.id, name=snapshot.uuid, value=path))
        store.insert(SnapshotDetail(snapshot_id=snapshot.id, name=SP_STORAGE_POOL_ID, value=str(self.pool.id)))

    def wrap_backup_answer(
        self,
        snapshot: Snapshot,  # noqa: ARG002
        src_path: str,
        callback: Callback,
        *,
        keep_source: bool = False,
    ) -> Callback:
        """Spec §8: if the backup fails, the StorPool snapshot on primary is deleted (``snapshotDelete``).

        Not with ``keep_source``: hardened (``failed_backup_matches_answer``), a failed try of the async backup keeps
        the snapshot on primary for the next try, and upstream's cleanup would leave its primary ref naming nothing.
        """

        def answered(answer: Answer | None) -> None:
            if (answer is None or not answer.result) and not keep_source:
                self.snapshot_delete(sp_name(src_path))
            callback(answer)

        return answered

    # --- the HTTP API ----------------------------------------------------------------------------------------------

    def _by_name(self, name: str) -> Answer | None:
        path = SP_DEV_PATH + name.removeprefix("~")
        return None if self.find(path) is not None else Answer(result=False, details=f"objectDoesNotExist: {name}")

    def snapshot_export(self, name: str, location: str) -> Answer:
        """``snapshotExport``: make a snapshot of this cluster readable from ``location``."""

        def effect() -> Answer:
            missing = self._by_name(name)
            if missing is not None:
                return missing
            obj = self.find(SP_DEV_PATH + name.removeprefix("~"))
            assert obj is not None
            self.env.store.update(obj, exported_to=location)
            return Answer(result=True, path=obj.path)

        return self.call_sync("snapshotExport", effect)

    def snapshot_unexport(self, name: str, location: str) -> Answer:  # noqa: ARG002
        """``snapshotUnexport``: stop exporting a snapshot (the recovery check of spec §8)."""

        def effect() -> Answer:
            obj = self.find(SP_DEV_PATH + name.removeprefix("~"))
            if obj is not None and obj.exported_to is not None:
                self.env.store.update(obj, exported_to=None)
            return Answer(result=True)

        return self.call_sync("snapshotUnexport", effect)

    def snapshot_from_remote(self, name: str, source: PrimaryDriver, size: int, snapshot_id: int | None) -> Answer:
        """``snapshotFromRemote``: start copying an exported snapshot of another cluster into this one."""

        def effect() -> Answer:
            src = source.find(SP_DEV_PATH + name.removeprefix("~"))
            if src is None or src.exported_to is None:
                return Answer(result=False, details=f"snapshot {name} is not exported to this location")
            path = SP_DEV_PATH + name.removeprefix("~")
            self.put(
                path,
                kind="recovering",
                size=size,
                physical_size=src.physical_size,
                snapshot_id=snapshot_id,
                source_path=src.path,
            )
            return Answer(result=True, path=path)

        return self.call_sync("snapshotFromRemote", effect)

    def snapshot_reconcile(self, name: str) -> Answer:
        """``snapshotReconcile``: finish a copy from remote; the snapshot is no longer recovering."""

        def effect() -> Answer:
            obj = self.find(SP_DEV_PATH + name.removeprefix("~"))
            if obj is None:
                return Answer(result=False, details=f"objectDoesNotExist: {name}")
            if obj.kind == "recovering":
                self.env.store.update(obj, kind="snapshot")
            return Answer(result=True, path=obj.path)

        return self.call_sync("snapshotReconcile", effect)

    def snapshot_delete(self, name: str) -> Answer:
        """``snapshotDelete``: refused while exported ("still exported"); a missing snapshot is objectDoesNotExist."""

        def effect() -> Answer:
            obj = self.find(SP_DEV_PATH + name.removeprefix("~"))
            if obj is None:
                return Answer(result=False, details=f"objectDoesNotExist: {name}")
            if obj.exported_to is not None:
                return Answer(result=False, details=f"snapshot {name} is still exported to {obj.exported_to}")
            self.drop(obj)
            return Answer(result=True)

        return self.call_sync("snapshotDelete", effect)

    def recovering(self) -> list[str]:
        """Names of snapshots still being copied from a remote cluster."""
        return [sp_name(o.path) for o in self.objects() if o.kind == "recovering"]
