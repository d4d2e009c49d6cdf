"""What simulated storage holds against what the rows say: no orphan, no missing object, no broken chain.

The rows are CloudStack's knowledge (``snapshots``, ``snapshot_store_ref``); ``sim_object`` is what the drivers
really hold, deleted objects kept with their ``deleted_ms``. A ref names its object by ``install_path`` on its store
(a ``Primary`` ref on the pool ``store_id``, an ``Image`` ref on the image store ``store_id``), and its KVM checkpoint
by ``kvm_checkpoint_path`` (spec §3, §16.4). Each check is one query, streamed.
"""

from __future__ import annotations

from collections.abc import Iterator

from snapshotfsm.invariants.base import Input, Invariant, Run, Violation, When, invariant
from snapshotfsm.names import RefState
from snapshotfsm.store.ownership import ORPHAN_PARAMS, OWNED, ref_store_kind


@invariant("no-orphan-object", When.QUIESCENT, Input.DATABASE, Input.STORAGE)
def no_orphan_object(run: Run) -> Iterator[Violation]:
    """Nothing is present on simulated storage that no live row owns.

    Storage nobody knows about is never freed and never charged: a leak. An object is owned when a store ref that is not
    Destroyed, of a snapshot row that is neither removed nor Destroyed (so that a delete can still reach it), names it
    by ``install_path`` on the ref's store; so is, transitively, the file of a Hidden ref whose snapshot a live ref of
    such a chain names as its parent (``deleteSnapshotChain`` hides a ref that has a child, and the child's delete walks
    up to it, spec §16.3; on the same store, or any for KVM, as ``getChild`` looks), and the parent file of an owned
    delta on the same store (a chain's Hidden ancestors), whatever its own rows say. A KVM checkpoint is owned when a
    ref that is not Destroyed names it beside an owned file, and the dirty bitmap the volume keeps for it when that
    checkpoint is owned (they live and go with the ref, spec §16.4, §16.6). Several refs may name one file (the
    XenServer empty delta, §16.2): one owner is enough. A converted ``_temp`` file (spec §16.7) is named by no row:
    present at quiescence, it is an orphan, even though the snapshot's own delete would sweep it.

    Quiescent only: while a take or a copy runs, its object exists before the answer that records it arrives.
    """
    conn = run.store.conn
    for object_id, store_kind, store_id, path, kind, snapshot_id in conn.execute(OWNED, ORPHAN_PARAMS):
        of = f"snapshot {snapshot_id}" if snapshot_id is not None else "no snapshot"
        yield Violation(
            "no-orphan-object",
            f"{store_kind} store {store_id}: {path}",
            f"{kind} object {object_id} ({of}) is present, but no live row owns it",
        )


_READY_WITHOUT_OBJECT = f"""
SELECT r.id, r.snapshot_id, r.store_role, r.store_id, r.state, r.install_path
FROM snapshot_store_ref r
WHERE r.state IN (?, ?) AND NOT EXISTS (
    SELECT 1 FROM sim_object o
    WHERE o.store_kind = {ref_store_kind("r")} AND o.store_id = r.store_id AND o.path = r.install_path
      AND o.deleted_ms IS NULL)
ORDER BY r.id
"""


@invariant("ready-ref-has-object", When.QUIESCENT, Input.DATABASE, Input.STORAGE)
def ready_ref_has_object(run: Run) -> Iterator[Violation]:
    """Every Ready or Hidden store ref names an object present on its store.

    A Ready ref is what restores, copies and backups read, and a Hidden one keeps a chain's file for the deltas on
    it (spec §3, §16.3): without its object the snapshot is lost while the database still offers it. This holds
    whatever the snapshot row says: a ref of a Destroyed snapshot that is still Ready or Hidden claims a file too.

    Quiescent, not always: the storage does some deletes on its own before the management server hears of them
    (a KVM host deletes the primary copy once a backup copied it, a XenServer host all the volume's snapshots but
    the newest, spec §16.2), and the refs follow only when the answer arrives. Once nothing is pending, that gap
    has closed.
    """
    conn = run.store.conn
    for ref_id, snapshot_id, role, store_id, state, path in conn.execute(
        _READY_WITHOUT_OBJECT, (RefState.Ready, RefState.Hidden)
    ):
        where = f"{role} store {store_id}"
        missing = "names no install path" if path is None else f"names {path}, which is not on its store"
        yield Violation(
            "ready-ref-has-object",
            f"snapshot_store_ref {ref_id}",
            f"{state} ref of snapshot {snapshot_id} on {where} {missing}",
        )


_BROKEN_DELTAS = """
SELECT d.id, d.store_kind, d.store_id, d.path, d.parent_path, d.snapshot_id
FROM sim_object d
WHERE d.kind = 'delta' AND d.deleted_ms IS NULL AND (d.parent_path IS NULL OR NOT EXISTS (
    SELECT 1 FROM sim_object p
    WHERE p.store_kind = d.store_kind AND p.store_id = d.store_id AND p.path = d.parent_path
      AND p.deleted_ms IS NULL))
ORDER BY d.id
"""


@invariant("delta-has-parent", When.ALWAYS, Input.STORAGE)
def delta_has_parent(run: Run) -> Iterator[Violation]:
    """Every delta present on storage has its parent object present on the same store.

    A delta (a XenServer backup on its parent's VHD, a KVM incremental snapshot on its parent's checkpoint, spec
    §16.2, §16.4) is readable only through its parent: without it, the delta is data nobody can restore. Always:
    a delta is written after its parent, and a chain is freed from its newest file up (§16.3), so no moment of a
    correct run has a delta without its parent.
    """
    conn = run.store.conn
    for object_id, store_kind, store_id, path, parent, snapshot_id in conn.execute(_BROKEN_DELTAS):
        missing = "names no parent" if parent is None else f"stands on {parent}, which is not on the store"
        yield Violation(
            "delta-has-parent",
            f"{store_kind} store {store_id}: {path}",
            f"delta object {object_id} of snapshot {snapshot_id} {missing}",
        )


INVARIANTS: tuple[Invariant, ...] = (no_orphan_object, ready_ref_has_object, delta_has_parent)
"""This module's invariants, in the order they are checked."""
