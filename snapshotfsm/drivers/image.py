"""The image-store (secondary storage) driver: where backups and zone copies land (spec §5.8, §7.4)."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from snapshotfsm.drivers.base import ASYNC, SYNC, Answer, Callback, Driver, DriverEnv

if TYPE_CHECKING:
    from collections.abc import Mapping

    from snapshotfsm.store.records import ImageStore, Snapshot


class ImageStoreDriver(Driver):
    """An NFS image store of one zone."""

    kind = "image"
    store_kind = "image"
    latency_defaults: ClassVar[Mapping[str, int]] = {"createAsync": 20_000, "deleteAsync": 1_000}
    operations: ClassVar[Mapping[str, str]] = {
        "createAsync": ASYNC,
        "deleteAsync": ASYNC,
        "querySnapshotZoneCopy": SYNC,
    }

    def __init__(self, env: DriverEnv, image: ImageStore) -> None:
        super().__init__(env, image.id)
        self.image = image

    @staticmethod
    def install_path(snapshot: Snapshot) -> str:
        """``snapshots/<accountId>/<volumeId>/<uuid>``: the directory CloudStack sets on the image ref (spec §3)."""
        return f"snapshots/{snapshot.account_id}/{snapshot.volume_id}/{snapshot.uuid}"

    def copy_from(self, snapshot: Snapshot, url: str, size: int, physical_size: int, callback: Callback) -> None:
        """``createAsync`` from a download URL: a zone copy of a snapshot (spec §7.4)."""
        path = self.install_path(snapshot)

        def effect() -> Answer:
            self.put(path, size=size, physical_size=physical_size, snapshot_id=snapshot.id, source_path=url)
            return Answer(result=True, path=path, physical_size=physical_size)

        self.call("createAsync", callback, effect)
