"""Rows of snapshots and refs written by hand, for the recount's and the count invariants' tests."""

from __future__ import annotations

from cloud import PHYSICAL, SIZE, Cloud

from snapshotfsm.orchestration import recount
from snapshotfsm.store.records import ImageStore, ResourceCount, Snapshot, SnapshotStoreRef, Volume


class Rows:
    """A cloud whose snapshots and refs a test writes by hand, on one detached volume of alice's."""

    def __init__(self) -> None:
        self.cloud = Cloud()
        self.engine = self.cloud.engine
        self.store = self.engine.store
        self.alice = self.cloud.alice
        self.volume: Volume = self.cloud.volume("kvm-nfs", vm=False)
        self.pool_id = self.cloud.pool("kvm-nfs").id
        image = self.store.first(ImageStore)
        assert image is not None
        self.image_id = image.id

    def snapshot(
        self, status: str = "BackedUp", *, account_id: int | None = None, removed: bool = False, type: int = 0
    ) -> Snapshot:
        """A snapshot row of alice's (or ``account_id``'s)."""
        return self.store.insert(
            Snapshot(
                data_center_id=self.volume.data_center_id,
                account_id=self.alice.id if account_id is None else account_id,
                volume_id=self.volume.id,
                name=f"s{self.store.count(Snapshot)}",
                status=status,
                snapshot_type=type,
                size=SIZE,
                removed="2026-01-01 00:00:00" if removed else None,
            )
        )

    def ref(self, snapshot: Snapshot, role: str, state: str = "Ready", physical: int = PHYSICAL) -> SnapshotStoreRef:
        """A ref of ``snapshot`` on the pool (``Primary``) or the image store (``Image``)."""
        return self.store.insert(
            SnapshotStoreRef(
                store_id=self.pool_id if role == "Primary" else self.image_id,
                store_role=role,
                snapshot_id=snapshot.id,
                volume_id=self.volume.id,
                state=state,
                size=SIZE,
                physical_size=physical,
            )
        )

    def recount(self) -> dict[str, int]:
        """Alice's recount."""
        return recount.recount(self.store, self.alice.id)

    def set_count(self, resource: str, count: int) -> None:
        """Write alice's count of ``resource`` directly."""
        row = self.store.first(ResourceCount, "account_id = ? AND type = ?", (self.alice.id, resource))
        assert row is not None
        self.store.update(row, count=count)
