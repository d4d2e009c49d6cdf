"""Snapshot chains: a ref's parent, its child and its chain's root, and who gets a parent at all (spec §16).

A XenServer delta on secondary storage is only readable through its parents, so the refs record
``parent_snapshot_id``; KVM does so only with ``kvm.incremental.snapshot``, and every other hypervisor's refs have
parent 0 (§16.1, §16.5). The delete walks these links (§16.3): a ref with a live child is hidden, not deleted.
"""

from __future__ import annotations

from collections.abc import Sequence

from snapshotfsm.errors import CloudRuntimeException, NullPointerException
from snapshotfsm.names import RefState
from snapshotfsm.store.records import Host, ImageStore, Snapshot, SnapshotStoreRef, VmInstance, Volume
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
    """``SnapshotObject.getChild``: a ref whose parent is ``ref``'s snapshot and that is not being or already deleted.

    Of the same role, and on the same store except for a KVM snapshot, whose child may live on any store of the role
    (spec §16.3): a KVM ref is kept (hidden) while a child lives in another zone. A delta with such a child cannot
    go: the chain deletes of spec §9.4 stop (or hide the ref) there.
    """
    # CloudStack's getChild also excludes 'Error', which is no state of snapshot_store_ref: that term never matched.
    where = "store_role = ? AND parent_snapshot_id = ? AND state NOT IN (?, ?)"
    params: list[object] = [ref.store_role, ref.snapshot_id, RefState.Destroyed, RefState.Destroying]
    if _hypervisor(store, ref.snapshot_id) != "KVM":
        where += " AND store_id = ?"
        params.append(ref.store_id)
    elif ref.volume_id is not None:
        # A child is of the parent's volume: the term changes no answer and lets SQLite use the volume's index.
        where += " AND volume_id = ?"
        params.append(ref.volume_id)
    return store.first(SnapshotStoreRef, where, params)


def _hypervisor(store: Store, snapshot_id: int) -> str | None:
    """The snapshot row's hypervisor (removed rows included: ``SnapshotObject`` holds the VO it was built with)."""
    row = store.first(Snapshot, "id = ?", (snapshot_id,))
    return row.hypervisor_type if row is not None else None


def chain_parent(store: Store, ref: SnapshotStoreRef) -> SnapshotStoreRef | None:
    """``SnapshotObject.getParent``: the parent's ref on the same store, or for KVM the one with a checkpoint.

    Spec §16.3: a KVM snapshot's parent is found by :func:`incremental_parent` on any store and role.

    Raises:
        CloudRuntimeException: (KVM) the parent has refs but none with a checkpoint path.
    """
    if not ref.parent_snapshot_id:
        return None
    if _hypervisor(store, ref.snapshot_id) == "KVM":
        return incremental_parent(store, ref.parent_snapshot_id)
    return parent_of(store, ref)


def incremental_parent(store: Store, parent_id: int) -> SnapshotStoreRef | None:
    """``getCorrectIncrementalParent`` (spec §16.3, §16.4): the parent snapshot's first ref with a checkpoint path.

    Any store, role and state (a Destroyed ref included); None when the parent has no ref at all.

    Raises:
        CloudRuntimeException: the parent has refs but none with a checkpoint path.
    """
    refs = store.find(SnapshotStoreRef, "snapshot_id = ?", (parent_id,))
    if not refs:
        return None
    for found in refs:
        if found.kvm_checkpoint_path is not None:
            return found
    raise CloudRuntimeException(
        f"Could not find snapshot parent with id [{parent_id}]. None of the records have a checkpoint path."
    )


def parent_paths(store: Store, ref: SnapshotStoreRef) -> list[str]:
    """``SnapshotObjectTO.parents``: the install paths from the chain's root down to ``ref``'s parent (spec §16.4).

    Each parent as :func:`chain_parent` finds it, so that building the TO of a KVM snapshot throws where a parent
    has no ref with a checkpoint.

    Raises:
        CloudRuntimeException: (KVM) a parent has refs but none with a checkpoint path.
    """
    paths: list[str] = []
    seen = {ref.snapshot_id}
    parent = chain_parent(store, ref)
    while parent is not None and parent.snapshot_id not in seen:
        paths.append(parent.install_path or "")
        seen.add(parent.snapshot_id)
        parent = chain_parent(store, parent)
    paths.reverse()
    return paths


def parent_of(store: Store, ref: SnapshotStoreRef) -> SnapshotStoreRef | None:
    """The ref of ``ref``'s parent snapshot on the same store, if it has one."""
    if not ref.parent_snapshot_id:
        return None
    return store.first(
        SnapshotStoreRef,
        "store_id = ? AND store_role = ? AND snapshot_id = ?",
        (ref.store_id, ref.store_role, ref.parent_snapshot_id),
    )


def same_path(ref: SnapshotStoreRef, parent: SnapshotStoreRef | None) -> bool:
    """The parent's ref has the same install path (case-insensitive): an empty delta, nothing of its own to delete.

    Spec §16.2 item 1, §16.3.
    """
    return (
        parent is not None
        and bool(parent.install_path)
        and (parent.install_path or "").lower() == (ref.install_path or "").lower()
    )


def root_snapshot_id(store: Store, snapshot_id: int) -> int:
    """``getRootSnapshotId``: the id whose lock ``deleteSnapshotInfos`` takes (spec §9.4, §16.3, §21.1).

    From the snapshot's refs (any store, any state), the first non-zero parent, then that snapshot's refs, until
    one has no parent: its first ref's snapshot. A snapshot with no refs at all, or a parent whose refs are all gone,
    gives 0 (upstream locks ``snapshots0`` then).
    """
    refs = store.find(SnapshotStoreRef, "snapshot_id = ?", (snapshot_id,))
    parent = next((r.parent_snapshot_id for r in refs if r.parent_snapshot_id), 0)
    seen = {snapshot_id}
    while parent and parent not in seen:
        seen.add(parent)
        refs = store.find(SnapshotStoreRef, "snapshot_id = ?", (parent,))
        parent = next((r.parent_snapshot_id for r in refs if r.parent_snapshot_id), 0)
    return refs[0].snapshot_id if refs else 0


def volume_cluster_id(store: Store, volume: Volume) -> int | None:
    """``HostDao.findClusterIdByVolumeInfo``: the cluster of the host (else the last host) of the volume's VM.

    None for a volume with no VM (a removed one is not found), or whose VM has no host that is found: a setting of
    cluster scope, ``kvm.incremental.snapshot`` among them, is then read at its global value (``valueIn(null)``,
    spec §16.4, §16.6).
    """
    vm = store.first(VmInstance, "id = ? AND removed IS NULL", (volume.instance_id,))
    host_id = None if vm is None else vm.host_id if vm.host_id is not None else vm.last_host_id
    host = store.first(Host, "id = ? AND removed IS NULL", (host_id,))
    return host.cluster_id if host is not None else None


def end_current_chain(store: Store, snapshot: Snapshot, delta_max: int) -> bool:
    """``endCurrentChainIfNeeded`` (spec §16.6): a chain that reached ``snapshot.delta.max`` ends at this snapshot.

    The chain is counted from the snapshot's first ref whose snapshot row is in the snapshot's zone
    (``findOneBySnapshotId``, any role, store and state), up through ``parent_snapshot_id``; at ``delta_max`` or
    more, every ref of the snapshot gets ``end_of_chain``, each a write of its own, so that the next take starts a
    new chain with a full snapshot. Returns whether it did.

    Raises:
        NullPointerException: a snapshot of the chain has no ref left (upstream dereferences the null).
    """
    length, current = 1, _first_ref_in_zone(store, snapshot.id, snapshot.data_center_id)
    seen = {snapshot.id}
    while True:
        if current is None:
            raise NullPointerException(
                'Cannot invoke "org.apache.cloudstack.storage.datastore.db.SnapshotDataStoreVO.getParentSnapshotId()" '
                'because "snapshotDataStoreVo" is null'
            )
        if current.parent_snapshot_id <= 0 or current.parent_snapshot_id in seen:
            break
        seen.add(current.parent_snapshot_id)
        current = _first_ref_in_zone(store, current.parent_snapshot_id, snapshot.data_center_id)
        length += 1
    if length < delta_max:
        return False
    for ref in store.find(SnapshotStoreRef, "snapshot_id = ?", (snapshot.id,)):
        store.update(ref, end_of_chain=True)
    return True


def _first_ref_in_zone(store: Store, snapshot_id: int, zone_id: int) -> SnapshotStoreRef | None:
    """``findOneBySnapshotId(snapshotId, zoneId)``: a ref of the snapshot whose row (removed or not) is in the zone."""
    return store.first(
        SnapshotStoreRef,
        "snapshot_id = ? AND snapshot_id IN (SELECT id FROM snapshots WHERE data_center_id = ?)",
        (snapshot_id, zone_id),
    )


def end_last_chain(store: Store, volume_id: int) -> SnapshotStoreRef | None:
    """``endLastChainIfNeeded`` (spec §16.6): with incremental off, close the chain incremental left behind.

    The volume's Ready refs newest first (by ``created``, the later id first among equals); past the newest, the
    first one with a checkpoint path gets ``end_of_chain`` unless it has it already, and the search stops there
    either way. Returns the ref it marked, if any.
    """
    ready = store.find(
        SnapshotStoreRef, "volume_id = ? AND state = ?", (volume_id, RefState.Ready), order_by="created DESC, id DESC"
    )
    for ref in ready[1:]:
        if ref.kvm_checkpoint_path is not None:
            return None if ref.end_of_chain else store.update(ref, end_of_chain=True)
    return None


def update_end_of_chain(store: Store, snapshot: Snapshot) -> list[SnapshotStoreRef]:
    """``updateEndOfChainIfNeeded`` (spec §16.6), after a KVM delete: the chain's new tip ends it in its place.

    When the deleted snapshot's Destroyed ref (image, else primary) ended its chain and had a parent, every ref of
    the first ancestor that still has a Ready ref gets ``end_of_chain`` (each a write of its own), so that the next
    take does not grow the chain from that ancestor. A snapshot whose ref was only hidden has no Destroyed ref: no
    change. Returns the refs marked.
    """
    if snapshot.hypervisor_type != "KVM":
        return []
    destroyed = None
    for role in ("Image", "Primary"):
        destroyed = store.first(
            SnapshotStoreRef,
            "snapshot_id = ? AND store_role = ? AND state = ?",
            (snapshot.id, role, RefState.Destroyed),
        )
        if destroyed is not None:
            break
    if destroyed is None or not destroyed.end_of_chain or destroyed.parent_snapshot_id <= 0:
        return []
    return [store.update(ref, end_of_chain=True) for ref in _last_alive_ancestors(store, destroyed.parent_snapshot_id)]


def _last_alive_ancestors(store: Store, snapshot_id: int) -> list[SnapshotStoreRef]:
    """``findLastAliveAncestors``: the refs of the nearest ancestor, from ``snapshot_id`` up, with a Ready ref.

    Up through the first ref's ``parent_snapshot_id``; none when the chain runs out first.
    """
    seen: set[int] = set()
    while snapshot_id and snapshot_id not in seen:
        seen.add(snapshot_id)
        refs = store.find(SnapshotStoreRef, "snapshot_id = ?", (snapshot_id,))
        if not refs:
            return []
        if any(r.state == RefState.Ready for r in refs):
            return refs
        snapshot_id = refs[0].parent_snapshot_id
    return []
