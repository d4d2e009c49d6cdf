"""Snapshot chains (spec §16): who gets a parent, XenServer full and delta backups, the empty delta, and the delete
of a chained snapshot, whose ref is hidden and its file kept while a delta needs it.

Sizes: a full snapshot holds half its volume (``PHYSICAL``); a delta holds what changed since its parent, the
volume's churn (an eighth of it, ``DELTA``, unless ``set_volume_churn`` says otherwise).
"""

from __future__ import annotations

import pytest
from cloud import DELTA, PHYSICAL, SIZE, Cloud
from hypothesis import given, settings
from hypothesis import strategies as st
from lifecycle_cloud import delete, refs, snapshot, stored

from snapshotfsm.errors import InvalidValue
from snapshotfsm.store.records import Snapshot, SnapshotStoreRef, StorageObject, UsageEvent, Volume


def _takes(cloud: Cloud, volume: Volume, n: int) -> list[int]:
    ids = []
    for _ in range(n):
        taken = cloud.take(volume)
        assert taken.status == "SUCCEEDED"
        ids.append(taken.snapshot.id)
    return ids


def _image(cloud: Cloud, sid: int) -> SnapshotStoreRef:
    found = cloud.engine.store.first(SnapshotStoreRef, "snapshot_id = ? AND store_role = 'Image'", (sid,))
    assert found is not None
    return found


def _image_objects(cloud: Cloud, sid: int) -> list[tuple[str, int, str | None]]:
    """The snapshot's objects on image stores: (kind, physical size, the parent object's path)."""
    rows = cloud.engine.store.find(StorageObject, "snapshot_id = ? AND store_kind = 'image'", (sid,))
    return [(o.kind, o.physical_size, o.parent_path) for o in rows]


def _off_primary(cloud: Cloud) -> list[tuple[int | None, str | None, int | None, int | None]]:
    rows = cloud.engine.store.find(UsageEvent, "type = 'SNAPSHOT.OFF_PRIMARY'")
    return [(u.resource_id, u.resource_name, u.size, u.virtual_size) for u in rows]


class TestWhoGetsAParent:
    """§16.1, §16.5: XenServer chains; KVM without incremental, VMware and the rest never do."""

    @pytest.mark.parametrize("shape", ["kvm-nfs", "kvm-smp", "kvm-rbd", "kvm-clvm", "vmware-nfs"])
    def test_other_hypervisors_have_parent_zero_and_no_off_primary(self, shape: str) -> None:
        cloud = Cloud(config={"snapshot.backup.to.secondary": False})
        _takes(cloud, cloud.volume(shape), 3)
        parents = [r.parent_snapshot_id for r in cloud.engine.store.find(SnapshotStoreRef)]
        assert parents == [0, 0, 0]
        assert _off_primary(cloud) == []

    def test_xenserver_with_backup_off_chains_on_primary(self) -> None:
        """Nothing is backed up, so no postSnapshotCreation clears the links: each ref names the one before."""
        cloud = Cloud(config={"snapshot.backup.to.secondary": False})
        ids = _takes(cloud, cloud.volume("xen-nfs"), 3)
        rows = cloud.engine.store.find(SnapshotStoreRef, "store_role = 'Primary'")
        assert [(r.snapshot_id, r.parent_snapshot_id) for r in rows] == [
            (ids[0], 0),
            (ids[1], ids[0]),
            (ids[2], ids[1]),
        ]

    def test_the_first_snapshot_row_of_the_volume_decides(self) -> None:
        """``isSnapshotChainingRequired`` reads one row: a XenServer volume whose first row says VMware never chains."""
        cloud = Cloud(config={"snapshot.backup.to.secondary": False})
        volume = cloud.volume("xen-nfs")
        first = _takes(cloud, volume, 1)[0]
        cloud.engine.store.update(cloud.engine.get(Snapshot, first), hypervisor_type="VMware")
        _takes(cloud, volume, 2)
        assert [r.parent_snapshot_id for r in cloud.engine.store.find(SnapshotStoreRef)] == [0, 0, 0]


class TestXenServerDeltas:
    """§7.3, §16.2: a full copy, then deltas on it, up to ``snapshot.delta.max`` files per chain."""

    def test_full_delta_delta(self) -> None:
        """Image refs chain 0 ← 1 ← 2; the deltas hold the churn; counters and usage charge what was written."""
        cloud = Cloud()
        ids = _takes(cloud, cloud.volume("xen-nfs"), 3)
        images = [_image(cloud, sid) for sid in ids]
        assert [(r.parent_snapshot_id, r.physical_size) for r in images] == [
            (0, PHYSICAL),
            (ids[0], DELTA),
            (ids[1], DELTA),
        ]
        assert [_image_objects(cloud, sid) for sid in ids] == [
            [("snapshot", PHYSICAL, None)],
            [("delta", DELTA, images[0].install_path)],
            [("delta", DELTA, images[1].install_path)],
        ]
        assert cloud.counts() == {"snapshot": 3, "primary_storage": 0, "secondary_storage": PHYSICAL + 2 * DELTA}
        created = cloud.engine.store.find(UsageEvent, "type = 'SNAPSHOT.CREATE'")
        assert [u.size for u in created] == [PHYSICAL, DELTA, DELTA]

    def test_only_the_newest_snapshot_stays_on_primary(self) -> None:
        """postSnapshotCreation deletes the parent's primary ref, the host its VHD; one OFF_PRIMARY per parent."""
        cloud = Cloud()
        ids = _takes(cloud, cloud.volume("xen-nfs"), 3)
        primary = cloud.engine.store.find(SnapshotStoreRef, "store_role = 'Primary'")
        assert [(r.snapshot_id, r.parent_snapshot_id) for r in primary] == [(ids[2], 0)]
        assert [stored(cloud.engine, sid)[0] for sid in ids] == [("primary", False)] * 2 + [("primary", True)]
        names = [cloud.engine.get(Snapshot, sid).name for sid in ids]
        assert _off_primary(cloud) == [(ids[0], names[0], 0, 0), (ids[1], names[1], 0, 0)]

    @pytest.mark.parametrize(("delta_max", "kinds"), [(1, "FFFFF"), (2, "FDFDF"), (3, "FDDFD"), (16, "FDDDD")])
    def test_delta_max_bounds_each_chain(self, delta_max: int, kinds: str) -> None:
        """A chain holds one full copy and at most ``snapshot.delta.max - 1`` deltas."""
        cloud = Cloud(config={"snapshot.delta.max": delta_max})
        ids = _takes(cloud, cloud.volume("xen-nfs"), 5)
        got = "".join("F" if _image(cloud, sid).parent_snapshot_id == 0 else "D" for sid in ids)
        assert got == kinds

    @pytest.mark.violates("usage-matches-objects")
    def test_kvm_copies_are_always_full(self) -> None:
        cloud = Cloud(config={"snapshot.delta.max": 16})
        ids = _takes(cloud, cloud.volume("kvm-clvm"), 3)
        assert [_image_objects(cloud, sid) for sid in ids] == [[("snapshot", PHYSICAL, None)]] * 3

    @pytest.mark.violates("no-orphan-object")
    def test_a_migrated_volume_drops_its_stale_primary_ref_and_starts_a_new_chain(self) -> None:
        """The oldest Ready primary ref is on the pool the volume left: it is deleted and the backup is full."""
        cloud = Cloud()
        volume = cloud.volume("xen-nfs")
        old = _takes(cloud, volume, 1)[0]
        assert refs(cloud.engine, old) == [("Primary", "Ready"), ("Image", "Ready")]
        other = cloud.engine.add_pool(cloud.zone, "xen-nfs-2", cluster=cloud.cluster("XenServer"))
        cloud.engine.store.update(cloud.engine.get(Volume, volume.id), pool_id=other.id)
        new = _takes(cloud, cloud.engine.get(Volume, volume.id), 1)[0]
        assert refs(cloud.engine, old) == [("Image", "Ready")]
        assert _image(cloud, new).parent_snapshot_id == 0
        assert _image_objects(cloud, new) == [("snapshot", PHYSICAL, None)]


class TestEmptyDelta:
    """§16.2 item 1: nothing changed, so the host answers with the parent's path and nothing is copied."""

    def test_the_new_image_ref_shares_the_parents_file(self) -> None:
        cloud = Cloud()
        volume = cloud.volume("xen-nfs")
        first = cloud.take(volume)
        cloud.engine.set_volume_churn(volume, 0)
        second = cloud.take(volume)
        assert second.status == "SUCCEEDED"
        parent_path = _image(cloud, first.snapshot.id).install_path
        image = _image(cloud, second.snapshot.id)
        assert (image.state, image.install_path, image.physical_size, image.parent_snapshot_id) == (
            "Ready",
            parent_path,
            0,
            first.snapshot.id,
        )
        assert second.kinds("snapshot")[-1] == ("event", "OperationNotPerformed", "BackedUp")
        assert stored(cloud.engine, second.snapshot.id) == []
        assert [u[:2] for u in second.usage()] == [("SNAPSHOT.ON_PRIMARY", SIZE), ("SNAPSHOT.CREATE", 0)]
        assert cloud.counts()["secondary_storage"] == PHYSICAL

    def test_its_delete_frees_nothing_and_leaves_its_image_ref_ready(self) -> None:
        """§16.3: the parent has the same path, so nothing is deleted and the ref keeps its state, hidden from view."""
        cloud = Cloud()
        volume = cloud.volume("xen-nfs")
        first = cloud.take(volume).snapshot.id
        cloud.engine.set_volume_churn(volume, 0)
        second = cloud.take(volume).snapshot.id
        assert delete(cloud, second)[0] == "SUCCEEDED"
        assert snapshot(cloud.engine, second) == ("Destroyed", False)
        image = _image(cloud, second)
        assert (image.state, image.display) == ("Ready", False)
        assert stored(cloud.engine, first)[-1] == ("image", True)

    def test_a_churn_outside_the_volume_is_refused(self) -> None:
        cloud = Cloud()
        volume = cloud.volume("xen-nfs")
        for bad in (-1, SIZE + 1, True, "0"):
            with pytest.raises(InvalidValue, match="volume churn must be a number of bytes from 0"):
                cloud.engine.set_volume_churn(volume, bad)  # type: ignore[arg-type]
        with pytest.raises(InvalidValue, match="volume must be the id of a volume"):
            cloud.engine.set_volume_churn(999, 0)
        assert cloud.engine.store.count(StorageObject) == 0


class TestChainedDelete:
    """§16.3: a ref with a live child is hidden and its file kept; the last child's delete walks up and frees it."""

    def test_the_middle_of_full_delta_delta(self) -> None:
        cloud = Cloud()
        first, middle, last = _takes(cloud, cloud.volume("xen-nfs"), 3)
        before = cloud.counts()["secondary_storage"]
        assert delete(cloud, middle)[0] == "SUCCEEDED"
        assert snapshot(cloud.engine, middle) == ("Destroyed", False)
        assert refs(cloud.engine, middle) == [("Image", "Hidden")]
        assert stored(cloud.engine, middle) == [("primary", False), ("image", True)]
        # The hidden ref's size is given back although its file stays (§16.3 accounting quirk).
        assert cloud.counts()["secondary_storage"] == before - DELTA
        assert delete(cloud, last)[0] == "SUCCEEDED"
        assert refs(cloud.engine, middle) == [("Image", "Destroyed")]
        assert stored(cloud.engine, middle) == [("primary", False), ("image", False)]
        assert stored(cloud.engine, last) == [("primary", False), ("image", False)]
        assert stored(cloud.engine, first) == [("primary", False), ("image", True)]
        assert cloud.counts()["secondary_storage"] == PHYSICAL


def _broken_deltas(cloud: Cloud) -> list[str]:
    """Present deltas whose parent object is gone from their store: unreadable backups."""
    store = cloud.engine.store
    broken = []
    for delta in store.find(StorageObject, "kind = 'delta' AND deleted_ms IS NULL"):
        parent = store.first(
            StorageObject,
            "store_kind = ? AND store_id = ? AND path = ? AND deleted_ms IS NULL",
            (delta.store_kind, delta.store_id, delta.parent_path),
        )
        if parent is None:
            broken.append(delta.path)
    return broken


@settings(max_examples=25, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.tuples(st.just("take"), st.sampled_from([0, DELTA])), st.tuples(st.just("delete"), st.integers(0, 9))
        ),
        min_size=1,
        max_size=12,
    ),
    st.integers(1, 4),
)
def test_no_delete_leaves_a_delta_without_its_parent(ops: list[tuple[str, int]], delta_max: int) -> None:
    """Whatever is taken (changed or not) and deleted in whatever order, every delta on storage can still be read,
    and every ref that is Ready or Hidden on an image store has its file."""
    cloud = Cloud(config={"snapshot.delta.max": delta_max})
    volume = cloud.volume("xen-nfs")
    taken: list[int] = []
    for op, arg in ops:
        if op == "take":
            cloud.engine.set_volume_churn(volume, arg)
            taken.append(cloud.take(volume).snapshot.id)
        elif taken:
            sid = taken[arg % len(taken)]
            if snapshot(cloud.engine, sid)[0] == "BackedUp":
                assert delete(cloud, sid)[0] == "SUCCEEDED"
    assert _broken_deltas(cloud) == []
    for ref in cloud.engine.store.find(SnapshotStoreRef, "store_role = 'Image' AND state IN ('Ready', 'Hidden')"):
        present = cloud.engine.store.first(
            StorageObject,
            "store_kind = 'image' AND store_id = ? AND path = ? AND deleted_ms IS NULL",
            (ref.store_id, ref.install_path),
        )
        assert present is not None, (ref.snapshot_id, ref.state, ref.install_path)
