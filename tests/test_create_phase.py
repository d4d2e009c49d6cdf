"""What the createSnapshot path commits together, and what alone (spec §21.2, §21.4.3, §21.5).

``allocSnapshot`` has no transaction: the snapshot's insert and each count increment commit on their own, each
increment being its own small transaction. An increment that finds no ``resource_count`` row throws after the insert:
the ``Allocated`` row and the earlier increment stay, no job is created and the API answers at once. The API job's
insert (``submitAsyncJob``) and the tags of a successful take (``createTags``) are one transaction each. The crash
windows of the create phase are in ``test_restart.py`` (``test_a_crash_in_the_create_phase_keeps_what_was_committed``).
"""

from __future__ import annotations

import pytest
from cloud import Cloud, Taken, action_events

from snapshotfsm.errors import ApiError, CloudRuntimeException, ServerDown
from snapshotfsm.faults import FaultPlan
from snapshotfsm.store.records import Alert, AsyncJob, ResourceCount, ResourceTag, Snapshot, Workflow

GENERIC = "Internal error executing command, please contact your system administrator"
ALLOC_ERROR = "Error while creating entity for allocating snapshot"
TAGS = {"team": "web", "tier": "gold"}


def _without_count(cloud: Cloud, resource: str) -> None:
    """Delete alice's ``resource_count`` row of ``resource``: ``updateCountByDeltaForIds`` then finds no row."""
    row = cloud.engine.store.first(ResourceCount, "account_id = ? AND type = ?", (cloud.alice.id, resource))
    assert row is not None
    cloud.engine.store.delete(row, by="test: a resource_count row missing")


class TestAnIncrementThatFails:
    """Spec §21.4.3: the increment's own transaction rolls back, nothing before it does."""

    @pytest.mark.violates("counts-match-recount", params=["first increment"])
    @pytest.mark.parametrize(
        ("missing", "left"),
        [
            ("snapshot", {"primary_storage": 0, "secondary_storage": 0}),
            ("secondary_storage", {"snapshot": 1, "primary_storage": 0}),
        ],
        ids=["first increment", "second increment"],
    )
    def test_the_allocated_row_and_the_earlier_increment_stay(self, missing, left):
        """CRE "Failed to increment resource count", answered 530 at once; the row stays Allocated, no job."""
        cloud = Cloud()
        volume = cloud.volume("xen-nfs")
        _without_count(cloud, missing)
        with pytest.raises(ApiError) as info:
            cloud.engine.create_snapshot(volume.id)
        assert (info.value.code, info.value.text) == (530, GENERIC)
        assert isinstance(info.value.exception, CloudRuntimeException)
        message = f"Failed to increment resource count of type {missing} for account id={cloud.alice.id}"
        assert info.value.exception.message == message
        snapshots = cloud.engine.store.find(Snapshot)
        assert [(s.status, s.removed) for s in snapshots] == [("Allocated", None)]
        assert cloud.counts() == left
        assert cloud.engine.store.find(AsyncJob) == []
        sid = snapshots[0].id
        alice = cloud.alice.id
        assert action_events(cloud.engine, "SNAPSHOT.CREATE") == [("Created", "ERROR", alice, alice, sid, ALLOC_ERROR)]
        assert cloud.engine.store.find(Alert) == []  # not a ResourceAllocationException
        run = cloud.engine.store.find(Workflow, "machine = 'take_snapshot'")[-1]
        assert (run.state, run.snapshot_id) == ("Rejected", sid)

    def test_a_root_admin_reads_the_message(self):
        """ApiServer shows a CloudRuntimeException's text to a root admin only (spec appendix B)."""
        cloud = Cloud()
        volume = cloud.volume("xen-nfs")
        _without_count(cloud, "secondary_storage")
        with pytest.raises(ApiError) as info:
            cloud.engine.create_snapshot(volume.id, caller=cloud.root)
        assert (info.value.code, info.value.text) == (
            530,
            f"Failed to increment resource count of type secondary_storage for account id={cloud.alice.id}",
        )

    def test_the_leftover_is_deleted_and_decremented_though_never_counted(self):
        """Deleting the Allocated leftover soft-removes it and gives back a ``snapshot`` it may never have counted.

        With the first increment failed there is no row to decrement: ``decrementResourceCount`` only alerts.
        """
        cloud = Cloud()
        volume = cloud.volume("xen-nfs")
        _without_count(cloud, "snapshot")
        with pytest.raises(ApiError):
            cloud.engine.create_snapshot(volume.id)
        sid = cloud.engine.store.find(Snapshot)[0].id
        job = cloud.engine.delete_snapshot(sid)
        cloud.engine.run()
        assert cloud.engine.job_status(job.id) == "SUCCEEDED"
        assert cloud.engine.get(Snapshot, sid).removed is not None
        assert cloud.counts() == {"primary_storage": 0, "secondary_storage": 0}
        assert [(a.type, a.subject, a.data_center_id) for a in cloud.engine.store.find(Alert)] == [
            (
                "ALERT_TYPE_UPDATE_RESOURCE_COUNT",
                f"Failed to decrement resource count of type snapshot for account id={cloud.alice.id}",
                0,
            )
        ]

    def test_with_the_second_increment_failed_the_delete_gives_back_the_first(self):
        """The ``snapshot`` increment was counted: the delete's decrement brings it back to 0."""
        cloud = Cloud()
        volume = cloud.volume("xen-nfs")
        _without_count(cloud, "secondary_storage")
        with pytest.raises(ApiError):
            cloud.engine.create_snapshot(volume.id)
        sid = cloud.engine.store.find(Snapshot)[0].id
        assert cloud.counts()["snapshot"] == 1
        cloud.engine.delete_snapshot(sid)
        cloud.engine.run()
        assert cloud.counts() == {"snapshot": 0, "primary_storage": 0}


class TestTheJobInsert:
    @pytest.mark.violates("counts-match-recount")
    def test_the_job_is_inserted_after_the_scheduled_event(self):
        """``onScheduledActionEvent`` then ``submitAsyncJob``: a crash between them leaves the event, no job."""
        cloud = Cloud(faults=FaultPlan().crash("jobs.submit#2"))
        volume = cloud.volume("xen-nfs")
        with pytest.raises(ServerDown):
            cloud.engine.create_snapshot(volume.id)
        assert [e[0] for e in action_events(cloud.engine, "SNAPSHOT.CREATE")] == ["Created", "Scheduled"]
        assert cloud.engine.store.find(AsyncJob) == []


class TestTags:
    """``TaggedResourceManagerImpl.createTags``: every tag of the call in one transaction."""

    def _crash(self, at: str) -> tuple[Cloud, Taken]:
        cloud = Cloud(faults=FaultPlan().crash(at))
        taken = cloud.take(cloud.volume("xen-nfs"), tags=TAGS)
        assert cloud.engine.crashes == [at]
        return cloud, taken

    def test_a_successful_take_tags_its_snapshot(self):
        """The tags of the call are on the snapshot, sorted by key here (a HashMap's order upstream)."""
        cloud = Cloud()
        taken = cloud.take(cloud.volume("xen-nfs"), tags=TAGS)
        rows = cloud.engine.store.find(ResourceTag)
        assert [(t.key, t.value, t.resource_id, t.resource_uuid, t.resource_type) for t in rows] == [
            ("team", "web", taken.snapshot.id, taken.snapshot.uuid, "Snapshot"),
            ("tier", "gold", taken.snapshot.id, taken.snapshot.uuid, "Snapshot"),
        ]

    @pytest.mark.violates("answer-matches-state")
    def test_a_crash_before_the_tags_leaves_none(self):
        """Before ``createTags``' transaction: no tag, the job IN_PROGRESS."""
        cloud, taken = self._crash("jobs.succeed#1")
        assert cloud.engine.store.find(ResourceTag) == []
        assert taken.status == "IN_PROGRESS"

    @pytest.mark.violates("answer-matches-state")
    def test_a_crash_after_the_tags_leaves_all_of_them(self):
        """The next durable write after the tags: both tags are there, the Completed event and the job not yet."""
        cloud, taken = self._crash("jobs.succeed#2")
        assert [t.key for t in cloud.engine.store.find(ResourceTag)] == ["team", "tier"]
        assert [e[0] for e in action_events(cloud.engine, "SNAPSHOT.CREATE")] == ["Created", "Scheduled", "Started"]
        assert taken.status == "IN_PROGRESS"

    @pytest.mark.violates("answer-matches-state")
    def test_without_tags_nothing_is_written_for_them(self):
        """No tags, no transaction: the first write of the step is the Completed event."""
        cloud = Cloud(faults=FaultPlan().crash("jobs.succeed#2"))
        taken = cloud.take(cloud.volume("xen-nfs"))
        assert [e[0] for e in action_events(cloud.engine, "SNAPSHOT.CREATE")][-1] == "Completed"
        assert taken.status == "IN_PROGRESS"
