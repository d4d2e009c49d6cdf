"""Resource counts, alerts and usage events (``orchestration/accounting.py``; spec §5.1, §5.10, §7.4, §21.4.3).

``incrementResourceCount`` throws when ``updateCountByDeltaForIds`` finds no ``resource_count`` row; the decrement
only alerts; neither inserts a row. ``ALERT_TYPE_UPDATE_RESOURCE_COUNT`` is not repeated while one is unarchived.
Snapshot usage events carry no ``resource_type``, and ``SNAPSHOT.COPY`` carries no resource name either.
"""

from __future__ import annotations

import pytest
from cloud import Cloud
from helpers_storpool import StorPoolCloud
from lifecycle_cloud import delete, second_zone

from snapshotfsm.errors import CloudRuntimeException
from snapshotfsm.orchestration import accounting
from snapshotfsm.store.records import SYSTEM_ACCOUNT_ID, Account, Alert, ResourceCount, UsageEvent


def _rows(cloud: Cloud, resource: str) -> list[int]:
    found = cloud.engine.store.find(ResourceCount, "account_id = ? AND type = ?", (cloud.alice.id, resource))
    return [r.count for r in found]


class TestChangeCount:
    @pytest.mark.violates("counts-match-recount")
    def test_an_increment_adds_to_the_row(self):
        """The account's row is updated in place."""
        cloud = Cloud()
        accounting.change_count(cloud.engine.rt, cloud.alice.id, accounting.SNAPSHOT, 2, owner_id=cloud.alice.id)
        accounting.change_count(cloud.engine.rt, cloud.alice.id, accounting.SNAPSHOT, -1, owner_id=cloud.alice.id)
        assert _rows(cloud, accounting.SNAPSHOT) == [1]

    def test_a_change_of_zero_writes_nothing(self):
        """``updateResourceCountForAccount`` returns first for 0: no write, so no crash point either."""
        cloud = Cloud()
        before = cloud.engine.store.conn.total_changes
        accounting.change_count(cloud.engine.rt, cloud.alice.id, accounting.SNAPSHOT, 0, owner_id=cloud.alice.id)
        assert cloud.engine.store.conn.total_changes == before

    @pytest.mark.violates("counts-match-recount")
    def test_a_decrement_by_a_negative_amount_is_only_logged(self, caplog):
        """A correction that would raise the count (a snapshot larger than its volume) is dropped with a warning."""
        cloud = Cloud()
        accounting.decrement(cloud.engine.rt, cloud.alice.id, accounting.SNAPSHOT, -3, owner_id=cloud.alice.id)
        assert _rows(cloud, accounting.SNAPSHOT) == [0]
        assert "Resource count delta is negative, delta = -3" in caplog.text
        accounting.decrement(cloud.engine.rt, cloud.alice.id, accounting.SNAPSHOT, -1, owner_id=cloud.alice.id)
        accounting.change_count(cloud.engine.rt, cloud.alice.id, accounting.SNAPSHOT, 2, owner_id=cloud.alice.id)
        accounting.decrement(cloud.engine.rt, cloud.alice.id, accounting.SNAPSHOT, 1, owner_id=cloud.alice.id)
        assert _rows(cloud, accounting.SNAPSHOT) == [1]

    def test_an_increment_without_a_row_throws_and_inserts_none(self):
        """``removeResourceReservationIfNeededAndIncrementResourceCount``: CRE with upstream's text."""
        cloud = Cloud()
        row = cloud.engine.store.first(ResourceCount, "account_id = ? AND type = 'snapshot'", (cloud.alice.id,))
        assert row is not None
        cloud.engine.store.delete(row, by="test")
        with pytest.raises(CloudRuntimeException) as info:
            accounting.change_count(cloud.engine.rt, cloud.alice.id, accounting.SNAPSHOT, 1, owner_id=cloud.alice.id)
        assert (
            info.value.message == f"Failed to increment resource count of type snapshot for account id={cloud.alice.id}"
        )
        assert _rows(cloud, accounting.SNAPSHOT) == []
        assert cloud.engine.store.find(Alert) == []

    def test_a_decrement_without_a_row_alerts_once(self):
        """``decrementResourceCountWithTag``: an alert (zone 0), no row, no exception; the alert does not repeat."""
        cloud = Cloud()
        for _ in range(2):
            accounting.change_count(cloud.engine.rt, 99, accounting.SECONDARY_STORAGE, -5, owner_id=99)
        assert cloud.engine.store.find(ResourceCount, "account_id = 99") == []
        assert [(a.type, a.subject, a.data_center_id) for a in cloud.engine.store.find(Alert)] == [
            (
                "ALERT_TYPE_UPDATE_RESOURCE_COUNT",
                "Failed to decrement resource count of type secondary_storage for account id=99",
                0,
            )
        ]

    @pytest.mark.violates("usage-matches-objects")
    def test_the_system_accounts_counts_never_move(self):
        """A take and delete of a volume the system account owns: its rows stay 0, and no alert is sent."""
        cloud = Cloud()
        system = cloud.engine.get(Account, SYSTEM_ACCOUNT_ID)
        sid = cloud.take(cloud.volume("kvm-nfs", account=system)).snapshot.id
        assert cloud.counts(system) == {"snapshot": 0, "primary_storage": 0, "secondary_storage": 0}
        assert delete(cloud, sid)[0] == "SUCCEEDED"
        assert cloud.counts(system) == {"snapshot": 0, "primary_storage": 0, "secondary_storage": 0}
        assert cloud.engine.store.find(Alert) == []


class TestChargesInTheRecord:
    """``change_count`` notes each count that moved in the run's record, with the owner its caller names."""

    @pytest.mark.violates("charge-to-owner", "counts-match-recount", "no-negative-count")
    def test_a_change_is_noted_with_its_owner_and_time(self):
        """Account charged, resource, delta, owner and the simulated time, in order."""
        cloud = Cloud()
        rt = cloud.engine.rt
        rt.clock.advance_to(5)
        accounting.change_count(rt, cloud.alice.id, accounting.SNAPSHOT, 2, owner_id=cloud.alice.id)
        accounting.change_count(rt, cloud.alice.id, accounting.PRIMARY_STORAGE, -7, owner_id=cloud.bob.id)
        assert [(c.account_id, c.resource, c.delta, c.owner_id, c.at_ms) for c in rt.record.charges] == [
            (cloud.alice.id, "snapshot", 2, cloud.alice.id, 5),
            (cloud.alice.id, "primary_storage", -7, cloud.bob.id, 5),
        ]

    def test_what_moves_no_count_is_not_noted(self):
        """The system account, a missing row (increment refused, decrement alerted) and a change of 0."""
        cloud = Cloud()
        rt = cloud.engine.rt
        accounting.change_count(rt, SYSTEM_ACCOUNT_ID, accounting.SNAPSHOT, 1, owner_id=cloud.alice.id)
        accounting.change_count(rt, 99, accounting.SNAPSHOT, -1, owner_id=99)
        with pytest.raises(CloudRuntimeException):
            accounting.change_count(rt, 99, accounting.SNAPSHOT, 1, owner_id=99)
        accounting.change_count(rt, cloud.alice.id, accounting.SNAPSHOT, 0, owner_id=cloud.alice.id)
        assert rt.record.charges == []

    @pytest.mark.violates("usage-matches-objects")
    def test_a_take_notes_its_allocation_and_correction(self):
        """allocSnapshot's two increments and post-processing's size correction, all to the owner."""
        cloud = Cloud()
        cloud.take(cloud.volume("kvm-nfs"))
        alice = cloud.alice.id
        assert [(c.account_id, c.resource, c.owner_id) for c in cloud.engine.record.charges] == [
            (alice, "snapshot", alice),
            (alice, "secondary_storage", alice),
            (alice, "secondary_storage", alice),
        ]


class TestAlert:
    def test_one_per_type_and_zone(self):
        """``getAlertForTrivialAlertType``: a second alert of the type in the same zone is not written."""
        cloud = Cloud()
        rt = cloud.engine.rt
        accounting.alert(rt, accounting.ALERT_TYPE_UPDATE_RESOURCE_COUNT, "first")
        accounting.alert(rt, accounting.ALERT_TYPE_UPDATE_RESOURCE_COUNT, "second")
        accounting.alert(rt, accounting.ALERT_TYPE_UPDATE_RESOURCE_COUNT, "in zone 1", zone_id=1)
        assert [(a.subject, a.data_center_id) for a in cloud.engine.store.find(Alert)] == [
            ("first", 0),
            ("in zone 1", 1),
        ]


class TestUsageFields:
    """``UsageEventUtils.saveUsageEvent``: the snapshot overloads set no resource type (spec §5.10)."""

    @pytest.mark.violates("counts-match-recount")
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

    @pytest.mark.violates("counts-match-recount")
    def test_off_primary_of_a_storage_system_delete(self):
        """StorageSystemSnapshotStrategy.cleanupSnapshotOnPrimaryStore's SNAPSHOT.OFF_PRIMARY: no resource_type."""
        cloud = Cloud()
        taken = cloud.take(cloud.volume("solidfire"))
        sid = taken.snapshot.id
        assert delete(cloud, sid)[0] == "SUCCEEDED"
        rows = cloud.engine.store.find(UsageEvent, "resource_id = ? AND type = 'SNAPSHOT.OFF_PRIMARY'", (sid,))
        assert [(u.resource_name, u.resource_type) for u in rows] == [(taken.snapshot.name, None)]

    @pytest.mark.violates("counts-match-recount")
    def test_a_pool_copy(self):
        """copyNewSnapshotToZonesOnPrimary's SNAPSHOT.COPY: no resource name, no resource type."""
        cloud = StorPoolCloud()
        sid = cloud.take(storage_ids=[cloud.pool_b.id])
        rows = cloud.engine.store.find(UsageEvent, "resource_id = ? AND type = 'SNAPSHOT.COPY'", (sid,))
        assert [(u.zone_id, u.resource_name, u.resource_type) for u in rows] == [(cloud.zone_b.id, None, None)]
