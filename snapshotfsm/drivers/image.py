"""The image-store (secondary storage) driver: where backups and zone copies land (spec §5.8, §7.4, §16.7)."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from snapshotfsm.drivers.base import ASYNC, SYNC, Answer, Callback, Driver, DriverEnv

if TYPE_CHECKING:
    from collections.abc import Mapping

    from snapshotfsm.store.records import ImageStore, Snapshot, StorageObject

TEMP_SNAPSHOT_NAME = "_temp"
"""``ConvertSnapshotCommand.TEMP_SNAPSHOT_NAME``: what a converted snapshot's path ends with (spec §16.7)."""


class ImageStoreDriver(Driver):
    """An NFS image store of one zone."""

    kind = "image"
    store_kind = "image"
    latency_defaults: ClassVar[Mapping[str, int]] = {"createAsync": 20_000, "deleteAsync": 1_000}
    operations: ClassVar[Mapping[str, str]] = {
        "createAsync": ASYNC,
        "deleteAsync": ASYNC,
        "querySnapshotZoneCopy": SYNC,
        "convertSnapshot": SYNC,
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

    def convert_snapshot(self, path: str) -> Answer:
        """``ConvertSnapshotCommand`` to a KVM host (spec §16.7): the delta and its backing chain as one file.

        ``qemu-img convert`` writes ``<path>_temp`` beside the snapshot, as large as the full snapshot the chain
        stands on, and answers with its path and size; a chain with a file missing cannot be read, and the answer
        fails. Answered at once (``EndPoint.sendMessage``): a fault that withholds the answer is an error answer.

        Raises:
            CloudRuntimeException: an injected ``exception`` fault.
        """

        def effect() -> Answer:
            source = self.find(path)
            root = source
            seen: set[str] = set()
            while root is not None and root.kind == "delta" and root.path not in seen:
                seen.add(root.path)
                root = self.find(root.parent_path) if root.parent_path is not None else None
            if source is None or root is None:
                return Answer(result=False, details="Failed to convert snapshot.")
            self._drop_converted(path)
            temp = path + TEMP_SNAPSHOT_NAME
            self.put(
                temp,
                kind="converted",
                size=source.size,
                physical_size=root.physical_size,
                snapshot_id=source.snapshot_id,
                volume_id=source.volume_id,
                source_path=path,
            )
            return Answer(result=True, path=temp, physical_size=root.physical_size)

        return self.call_sync("convertSnapshot", effect)

    def delete_extract_url(self, path: str) -> None:
        """``deleteExtractUrl`` of a snapshot (``Upload.Type.SNAPSHOT``): the SSVM deletes its converted file.

        Once a zone copy of a converted snapshot succeeded (spec §7.4, §16.7).
        """
        self._drop_converted(path.removesuffix(TEMP_SNAPSHOT_NAME))

    def _drop_converted(self, path: str) -> StorageObject | None:
        found = self.find(path + TEMP_SNAPSHOT_NAME)
        if found is not None:
            self.drop(found)
        return found

    def _delete(self, path: str, checkpoint_path: str | None = None) -> Answer:
        """The SSVM deletes ``*<name>*`` in the snapshot's directory: a converted file left behind goes too (§16.7)."""
        answer = super()._delete(path, checkpoint_path)
        self._drop_converted(path)
        return answer
