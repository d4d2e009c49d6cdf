"""What owns an object on simulated storage, and which usage events still bill: queries over rows and storage.

The invariants judge a run by these queries (``no-orphan-object``, ``usage-matches-objects``), and the ``hardened``
profile's reconciliations act on the same ones (``snapshotfsm.orchestration.reconcile``): what the judge calls an
orphan is exactly what the storage GC's reconciliation deletes. A ref names its object by ``install_path`` on its
store (a ``Primary`` ref on the pool ``store_id``, an ``Image`` ref on the image store ``store_id``), and its KVM
checkpoint by ``kvm_checkpoint_path`` (spec §3, §16.4).
"""

from __future__ import annotations

from snapshotfsm.names import RefState, SnapshotState

DATA_KINDS = ("snapshot", "delta", "recovering")
"""Kinds of object that hold a snapshot's data (a full file, a delta on its parent, a StorPool copy in progress)."""


def ref_store_kind(alias: str) -> str:
    """SQL for the ``sim_object.store_kind`` of the store that the ``snapshot_store_ref`` aliased ``alias`` is on."""
    return f"CASE {alias}.store_role WHEN 'Primary' THEN 'primary' ELSE 'image' END"


OWNED = f"""
WITH RECURSIVE kept(id) AS (
    SELECT r.id
    FROM snapshot_store_ref r JOIN snapshots s ON s.id = r.snapshot_id
    WHERE r.state <> ? AND s.removed IS NULL AND s.status <> ?
  UNION
    SELECT p.id
    FROM kept k
    JOIN snapshot_store_ref c ON c.id = k.id
    JOIN snapshot_store_ref p ON p.snapshot_id = c.parent_snapshot_id AND p.store_role = c.store_role
    WHERE p.state = ? AND c.state NOT IN (?, ?)
      AND (p.store_id = c.store_id OR (SELECT hypervisor_type FROM snapshots WHERE id = p.snapshot_id) = 'KVM')
),
owned(store_kind, store_id, path) AS (
    SELECT {ref_store_kind("r")}, r.store_id, r.install_path
    FROM snapshot_store_ref r JOIN kept k ON k.id = r.id
    WHERE r.install_path IS NOT NULL
  UNION
    SELECT o.store_kind, o.store_id, o.parent_path
    FROM owned w JOIN sim_object o ON o.store_kind = w.store_kind AND o.store_id = w.store_id AND o.path = w.path
    WHERE o.deleted_ms IS NULL AND o.kind = 'delta' AND o.parent_path IS NOT NULL
),
checkpoint(store_kind, store_id, path) AS (
    SELECT {ref_store_kind("r")}, r.store_id, r.kvm_checkpoint_path
    FROM snapshot_store_ref r
    WHERE r.kvm_checkpoint_path IS NOT NULL AND r.state <> ? AND EXISTS (
        SELECT 1 FROM owned w
        WHERE w.store_kind = {ref_store_kind("r")} AND w.store_id = r.store_id AND w.path = r.install_path)
)
SELECT o.id, o.store_kind, o.store_id, o.path, o.kind, o.snapshot_id
FROM sim_object o
WHERE o.deleted_ms IS NULL
  AND NOT EXISTS (
    SELECT 1 FROM owned w WHERE w.store_kind = o.store_kind AND w.store_id = o.store_id AND w.path = o.path)
  AND NOT EXISTS (
    SELECT 1 FROM checkpoint c WHERE c.store_kind = o.store_kind AND c.store_id = o.store_id AND c.path = o.path)
  AND NOT (o.kind = 'bitmap' AND EXISTS (
    SELECT 1 FROM checkpoint c JOIN sim_object k
      ON k.store_kind = c.store_kind AND k.store_id = c.store_id AND k.path = c.path
    WHERE k.deleted_ms IS NULL AND k.kind = 'checkpoint' AND k.snapshot_id = o.snapshot_id))
ORDER BY o.id
"""


ORPHAN_PARAMS = (
    RefState.Destroyed,
    SnapshotState.Destroyed,
    RefState.Hidden,
    RefState.Destroyed,
    RefState.Destroying,
    RefState.Destroyed,
)
"""The parameters of :data:`OWNED`."""

ON_PRIMARY, OFF_PRIMARY = "SNAPSHOT.ON_PRIMARY", "SNAPSHOT.OFF_PRIMARY"
CREATE, COPY, DELETE = "SNAPSHOT.CREATE", "SNAPSHOT.COPY", "SNAPSHOT.DELETE"
STARTS = (ON_PRIMARY, CREATE, COPY)
"""Usage events that start billing an object; OFF_PRIMARY ends ON_PRIMARY, DELETE ends CREATE and COPY (§5.10)."""

_KINDS = ", ".join(f"'{k}'" for k in DATA_KINDS)
_ZONE_JOINS = """
    LEFT JOIN storage_pool p ON o.store_kind = 'primary' AND p.id = o.store_id
    LEFT JOIN image_store i ON o.store_kind = 'image' AND i.id = o.store_id"""
_SCOPE = f"""((u.type IN ('{ON_PRIMARY}', '{OFF_PRIMARY}') AND o.store_kind = 'primary')
        OR (u.type NOT IN ('{ON_PRIMARY}', '{OFF_PRIMARY}')
            AND COALESCE(p.data_center_id, i.data_center_id) = u.zone_id))"""


def has_object(*, present: bool) -> str:
    """SQL: the usage event ``u``'s snapshot has (``present``) or had a data object where ``u`` bills it.

    Its own objects (``snapshot_id``), or one a ref of it names (the XenServer empty delta names its parent's file,
    spec §16.2); the latter counts as present while the ref is not Destroyed.
    """
    own_present = " AND o.deleted_ms IS NULL" if present else ""
    ref_present = f" AND o.deleted_ms IS NULL AND r.state <> '{RefState.Destroyed}'" if present else ""
    return f"""(EXISTS (
    SELECT 1 FROM sim_object o{_ZONE_JOINS}
    WHERE o.snapshot_id = u.resource_id AND o.kind IN ({_KINDS}){own_present} AND {_SCOPE})
  OR EXISTS (
    SELECT 1 FROM snapshot_store_ref r
    JOIN sim_object o ON o.store_kind = {ref_store_kind("r")} AND o.store_id = r.store_id AND o.path = r.install_path
    {_ZONE_JOINS}
    WHERE r.snapshot_id = u.resource_id AND o.kind IN ({_KINDS}){ref_present} AND {_SCOPE}))"""


STOPPED = f"""EXISTS (SELECT 1 FROM usage_event d
            WHERE d.resource_id = u.resource_id AND d.id > u.id
              AND ((u.type = '{ON_PRIMARY}' AND d.type IN ('{OFF_PRIMARY}', '{DELETE}'))
                   OR (u.type <> '{ON_PRIMARY}' AND d.type = '{DELETE}' AND d.zone_id = u.zone_id)))"""
"""SQL: the usage event ``u`` (a start) was stopped by a later event."""
