"""Snapshot chains: a ref's parent, its child and its chain's root, and who gets a parent at all (spec §16).

A XenServer delta on secondary storage is only readable through its parents, so the refs record
``parent_snapshot_id``; KVM does so only with ``kvm.incremental.snapshot``, and every other hypervisor's refs have
parent 0 (§16.1, §16.5). The delete walks these links (§16.3): a ref with a live child is hidden, not deleted.
"""

from __future__ import annotations

from collections.abc import Sequence

from snapshotfsm.names import RefState
from snapshotfsm.store.records import ImageStore, Snapshot, SnapshotStoreRef
from snapshotfsm.store.store import Store

CHAINING_HYPERVISORS = frozenset({"XenServer"})
"""``HYPERVISORS_SUPPORTING_SNAPSHOTS_CHAINING``; KVM joins them with ``kvm.incremental.snapshot`` on."""


def chaining_required(store: Store, volume_id: int, *, kvm_incremental: bool) -> bool:
    """``isSnapshotChainingRequired`` (spec §16.1): the hypervisor of one snapshot row of the volume decides.

    That row is the first one found (``findOneBy``, the lowest id of the live rows), not the snapshot being made:
    a volume whose snapshots changed hypervisor keeps the first one's answer.
    """
    first = store.first(Snapshot, "volume_id = ? AND removed IS NULL", (volume_id,))
    if first is None:
        return False
    return first.hypervisor_type in CHAINING_HYPERVISORS or (first.hypervisor_type == "KVM" and kvm_incremental)


def find_parent(
    store: Store,
    volume_id: int,
    *,
    role: str | None,
    store_ids: Sequence[int] | None,
    kvm_incremental: bool,
    hypervisor: str,
) -> SnapshotStoreRef | None:
    """``SnapshotDataStoreDaoImpl.findParent`` (spec §16.1): the volume's newest Ready ref where a parent may be.

    ``role`` and ``store_ids`` narrow the search when given (None leaves them unbound, as the KVM incremental primary
    search does); KVM incremental also wants a checkpoint path. Newest is by ``created``, then by id.
    """
    if not chaining_required(store, volume_id, kvm_incremental=kvm_incremental):
        return None
    where, params = ["volume_id = ?", "state = ?"], [volume_id, RefState.Ready]
    if role is not None:
        where.append("store_role = ?")
        params.append(role)
    if store_ids is not None:
        if not store_ids:
            return None
        where.append(f"store_id IN ({', '.join('?' * len(store_ids))})")
        params.extend(store_ids)
    if kvm_incremental and hypervisor == "KVM":
        where.append("kvm_checkpoint_path IS NOT NULL")
    found = store.find(SnapshotStoreRef, " AND ".join(where), tuple(params), order_by="created DESC, id DESC", limit=1)
    return found[0] if found else None


def primary_parent(store: Store, snapshot: Snapshot, pool_id: int, *, kvm_incremental: bool, to_image: bool) -> int:
    """The ``parent_snapshot_id`` of a new primary ref (``ObjectInDataStoreManagerImpl.create``, spec §16.1).

    The newest Ready primary ref of the volume on the pool, unless its snapshot row is gone or it ends its chain.
    KVM incremental searches every store and role, and a parent on the other kind of store than this snapshot's
    (``to_image``: an image store was pre-selected) gets ``end_of_chain`` instead (a write of its own).
    """
    incremental = snapshot.hypervisor_type == "KVM" and kvm_incremental
    found = find_parent(
        store,
        snapshot.volume_id,
        role=None if incremental else "Primary",
        store_ids=None if incremental else [pool_id],
        kvm_incremental=kvm_incremental,
        hypervisor=snapshot.hypervisor_type,
    )
    if found is None:
        return 0
    if incremental and (found.store_role == "Image") != to_image:
        store.update(found, end_of_chain=True)
        return 0
    alive = store.first(Snapshot, "id = ? AND removed IS NULL", (found.snapshot_id,))
    return found.snapshot_id if alive is not None and not found.end_of_chain else 0


def image_parent(store: Store, snapshot: Snapshot, zone_id: int, *, kvm_incremental: bool) -> int:
    """The ``parent_snapshot_id`` of a new image ref (spec §16.1): the newest Ready image ref of the volume in the zone.

    Unless it ends its chain. A copy answer without a parent path sets it back to 0 (a full backup starts a chain).
    """
    stores = [s.id for s in store.find(ImageStore, "data_center_id = ? AND removed IS NULL", (zone_id,))]
    found = find_parent(
        store,
        snapshot.volume_id,
        role="Image",
        store_ids=stores,
        kvm_incremental=kvm_incremental,
        hypervisor=snapshot.hypervisor_type,
    )
    return found.snapshot_id if found is not None and not found.end_of_chain else 0


def newest_ready_ref(store: Store, volume_id: int, role: str, *, oldest: bool = False) -> SnapshotStoreRef | None:
    """``findLatestSnapshotForVolume`` (``findOldestSnapshotForVolume``): the newest (oldest) Ready ref (§16.2).

    Of the volume, in ``role``, on any store, by ``created``.
    """
    order = "created ASC, id ASC" if oldest else "created DESC, id DESC"
    found = store.find(
        SnapshotStoreRef,
        "volume_id = ? AND store_role = ? AND state = ?",
        (volume_id, role, RefState.Ready),
        order_by=order,
        limit=1,
    )
    return found[0] if found else None


def image_ref_in_zone(store: Store, snapshot_id: int, zone_id: int) -> SnapshotStoreRef | None:
    """``getSnapshotImageStoreRef``: the snapshot's first Ready or Hidden image ref on an image store of the zone."""
    return store.first(
        SnapshotStoreRef,
        "snapshot_id = ? AND store_role = 'Image' AND state IN (?, ?) AND store_id IN "
        "(SELECT id FROM image_store WHERE data_center_id = ?)",
        (snapshot_id, RefState.Ready, RefState.Hidden, zone_id),
    )


def live_child(store: Store, ref: SnapshotStoreRef) -> SnapshotStoreRef | None:
    """A ref on the same store whose parent is ``ref``'s snapshot and that is not being or already deleted.

    A delta with such a child cannot go: the chain deletes of spec §9.4 stop (or hide the ref) there.
    """
    # CloudStack's getChild also excludes 'Error', which is no state of snapshot_store_ref: that term never matched.
    return store.first(
        SnapshotStoreRef,
        "store_id = ? AND store_role = ? AND parent_snapshot_id = ? AND state NOT IN (?, ?)",
        (ref.store_id, ref.store_role, ref.snapshot_id, RefState.Destroyed, RefState.Destroying),
    )


def parent_of(store: Store, ref: SnapshotStoreRef) -> SnapshotStoreRef | None:
    """The ref of ``ref``'s parent snapshot on the same store, if it has one."""
    if not ref.parent_snapshot_id:
        return None
    return store.first(
        SnapshotStoreRef,
        "store_id = ? AND store_role = ? AND snapshot_id = ?",
        (ref.store_id, ref.store_role, ref.parent_snapshot_id),
    )


def shares_parent_path(store: Store, ref: SnapshotStoreRef) -> bool:
    """The parent's ref has the same install path (case-insensitive): an empty delta, nothing of its own to delete."""
    parent = parent_of(store, ref)
    return (
        parent is not None
        and bool(parent.install_path)
        and (parent.install_path or "").lower() == (ref.install_path or "").lower()
    )


def root_snapshot_id(store: Store, refs: list[SnapshotStoreRef], snapshot_id: int) -> int:
    """The root of the snapshot's chain: the first of ``refs`` followed up by ``parent_snapshot_id`` on its store.

    ``deleteSnapshotInfos`` locks this id (spec §9.4 step 1). A ref whose parent's ref is gone stops the walk at
    the parent's id; a snapshot with no ref, or whose first ref has no parent, is its own root.
    """
    if not refs:
        return snapshot_id
    current, seen = refs[0], {refs[0].snapshot_id}
    while current.parent_snapshot_id and current.parent_snapshot_id not in seen:
        parent = parent_of(store, current)
        if parent is None:
            return current.parent_snapshot_id
        seen.add(parent.snapshot_id)
        current = parent
    return current.snapshot_id
