"""Usage events (``orchestration/accounting.py``; spec §5.10, §7.4).

Snapshot usage events carry no ``resource_type``, and ``SNAPSHOT.COPY`` carries no resource name either.
"""

from __future__ import annotations

from cloud import Cloud
from helpers_storpool import StorPoolCloud
from lifecycle_cloud import delete, second_zone

from snapshotfsm.store.records import UsageEvent


class TestUsageFields:
    """``UsageEventUtils.saveUsageEvent``: the snapshot overloads set no resource type (spec §5.10)."""

    def test_a_take_with_a_zone_copy_and_its_delete(self):
        """ON_PRIMARY, CREATE, COPY and DELETE: no resource_type; COPY names no resource."""
        cloud = Cloud()
        zone2 = second_zone(cloud)
        taken = cloud.take(cloud.volume("xen-nfs"), zone_ids=[zone2.id])
        sid, name = taken.snapshot.id, taken.snapshot.name
        assert delete(cloud, sid)[0] == "SUCCEEDED"
        rows = cloud.engine.store.find(UsageEvent, "resource_id = ?", (sid,))
        assert [(u.type, u.resource_name, u.resource_type) for u in rows] == [
            ("SNAPSHOT.ON_PRIMARY", name, None),
            ("SNAPSHOT.CREATE", name, None),
            ("SNAPSHOT.COPY", None, None),
            ("SNAPSHOT.DELETE", name, None),
            ("SNAPSHOT.DELETE", name, None),
        ]

    def test_off_primary_of_a_parent(self):
        """DefaultSnapshotStrategy.postSnapshotCreation's SNAPSHOT.OFF_PRIMARY for the parent: no resource_type."""
        cloud = Cloud()
        volume = cloud.volume("xen-nfs")
        first = cloud.take(volume).snapshot
        cloud.take(volume)
        rows = cloud.engine.store.find(UsageEvent, "type = 'SNAPSHOT.OFF_PRIMARY'")
        assert [(u.resource_id, u.resource_name, u.resource_type) for u in rows] == [(first.id, first.name, None)]

    def test_off_primary_of_a_storage_system_delete(self):
        """StorageSystemSnapshotStrategy.cleanupSnapshotOnPrimaryStore's SNAPSHOT.OFF_PRIMARY: no resource_type."""
        cloud = Cloud()
        taken = cloud.take(cloud.volume("solidfire"))
        sid = taken.snapshot.id
        assert delete(cloud, sid)[0] == "SUCCEEDED"
        rows = cloud.engine.store.find(UsageEvent, "resource_id = ? AND type = 'SNAPSHOT.OFF_PRIMARY'", (sid,))
        assert [(u.resource_name, u.resource_type) for u in rows] == [(taken.snapshot.name, None)]

    def test_a_pool_copy(self):
        """copyNewSnapshotToZonesOnPrimary's SNAPSHOT.COPY: no resource name, no resource type."""
        cloud = StorPoolCloud()
        sid = cloud.take(storage_ids=[cloud.pool_b.id])
        rows = cloud.engine.store.find(UsageEvent, "resource_id = ? AND type = 'SNAPSHOT.COPY'", (sid,))
        assert [(u.zone_id, u.resource_name, u.resource_type) for u in rows] == [(cloud.zone_b.id, None, None)]
