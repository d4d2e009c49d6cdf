"""The ``event`` rows of createSnapshot and deleteSnapshot, as upstream writes them (spec §5.10, §9.2, §9.4).

``ApiServer.processAsyncCmd`` writes Scheduled (the calling user's, filed under the command's entity owner, with the
command's ``getEventDescription``); ``ActionEventInterceptor`` writes the events of the ``@ActionEvent`` methods as
the calling user and account: Created after ``allocSnapshot`` ("Successfully created entity for allocating
snapshot", or at level ERROR "Error while creating entity for ..."), Started when an async method is entered (its
description capitalised) and Completed when it returns ("Successfully completed ...") or throws (ERROR, "Error while
..."). The scheduler writes its own Scheduled event as the system user, runs ``allocSnapshot`` in its system context
and the job as the system user in the owner's account. The copySnapshot events are in ``test_copy_api.py``.
"""

from __future__ import annotations

import pytest
from cloud import Cloud, action_events
from lifecycle_cloud import answer, delete

from snapshotfsm.faults import FaultPlan
from snapshotfsm.store.records import Alert, Failure, Snapshot, Volume, VolumeDetail, Workflow

CREATED = "Successfully created entity for allocating snapshot"
ALLOC_ERROR = "Error while creating entity for allocating snapshot"
STARTED = "Taking snapshot"
COMPLETED = "Successfully completed taking snapshot"
TAKE_ERROR = "Error while taking snapshot"
HOUR_MS = 3_600_000
TICK_MS = 11 * 60_000
"""The schedule at minute 5 is dispatched by the poll at minute 10; the next poll is at minute 15."""
LIMIT_ALERT = "Snapshot resource limit exceeded for account id : {id}. Failed to create recurring snapshots"


class TestCreateThroughTheApi:
    def test_a_manual_take(self):
        """Created, Scheduled, Started, Completed: all the caller's, the snapshot's, no details appended."""
        cloud = Cloud()
        volume = cloud.volume("xen-nfs")
        taken = cloud.take(volume)
        a, sid = cloud.alice.id, taken.snapshot.id
        assert action_events(cloud.engine, "SNAPSHOT.CREATE") == [
            ("Created", "INFO", a, a, sid, CREATED),
            ("Scheduled", "INFO", a, a, sid, f"Creating Snapshot for volume: {volume.uuid}"),
            ("Started", "INFO", a, a, sid, STARTED),
            ("Completed", "INFO", a, a, sid, COMPLETED),
        ]

    def test_an_admin_taking_another_accounts_snapshot(self):
        """The interceptor's events are the caller's account; Scheduled is filed under the volume's owner."""
        cloud = Cloud()
        volume = cloud.volume("xen-nfs")
        taken = cloud.take(volume, caller=cloud.root)
        r, a, sid = cloud.root.id, cloud.alice.id, taken.snapshot.id
        assert action_events(cloud.engine, "SNAPSHOT.CREATE") == [
            ("Created", "INFO", r, r, sid, CREATED),
            ("Scheduled", "INFO", r, a, sid, f"Creating Snapshot for volume: {volume.uuid}"),
            ("Started", "INFO", r, r, sid, STARTED),
            ("Completed", "INFO", r, r, sid, COMPLETED),
        ]

    @pytest.mark.violates("usage-matches-objects")
    @pytest.mark.parametrize("attached", [True, False], ids=["attached", "detached"])
    def test_a_failed_take(self, attached):
        """An exception out of ``takeSnapshot``: its ERROR Completed event, whatever the job's code."""
        cloud = Cloud(faults=FaultPlan().fail("takeSnapshot"))
        taken = cloud.take(cloud.volume("xen-nfs", vm=attached))
        assert taken.status == "FAILED"
        a, sid = cloud.alice.id, taken.snapshot.id
        assert action_events(cloud.engine, "SNAPSHOT.CREATE")[2:] == [
            ("Started", "INFO", a, a, sid, STARTED),
            ("Completed", "ERROR", a, a, sid, TAKE_ERROR),
        ]

    @pytest.mark.violates("answer-matches-state", "counts-match-recount")
    def test_a_volume_removed_before_the_job_runs(self):
        """``execute()`` reads the entity owner before calling ``takeSnapshot``: it throws there, no Started."""
        cloud = Cloud()
        volume = cloud.volume("xen-nfs")
        taken = cloud.create(volume)
        cloud.engine.store.update(volume, removed=cloud.engine.clock.timestamp())
        cloud.engine.run()
        assert taken.error == (
            530,
            f"Failed to create Snapshot due to an internal error creating Snapshot for volume {volume.uuid}",
        )
        assert [e[0] for e in action_events(cloud.engine, "SNAPSHOT.CREATE")] == ["Created", "Scheduled"]
        assert taken.failures() == [
            ("api.validate", "InvalidParameterValueException", f"Unable to find volume by id={volume.id}")
        ]

    @pytest.mark.violates("answer-matches-state", "counts-match-recount", "no-orphan-object")
    def test_a_snapshot_removed_before_the_api_job_completes(self):
        """The attached path re-reads a removed snapshot as null: ``takeSnapshot`` returns (Completed INFO), then
        ``execute()`` fails the job (530) and no ERROR event follows."""
        cloud = Cloud()
        taken = cloud.create(cloud.volume("xen-nfs"))
        run = cloud.engine.store.find(Workflow, "machine = 'take_snapshot'")[-1]
        while cloud.engine.get(Workflow, run.id).state != "WorkDone":
            assert cloud.engine.run(max_tasks=1) == 1
        snapshot = cloud.engine.get(Snapshot, taken.snapshot.id)
        cloud.engine.store.update(snapshot, removed=cloud.engine.clock.timestamp())
        cloud.engine.run()
        assert taken.result[:2] == ("FAILED", 530)
        a, sid = cloud.alice.id, snapshot.id
        assert action_events(cloud.engine, "SNAPSHOT.CREATE")[2:] == [
            ("Started", "INFO", a, a, sid, STARTED),
            ("Completed", "INFO", a, a, sid, COMPLETED),
        ]


class TestCreatePhaseRefusals:
    """D-9: with no transaction to roll back, a refusal keeps the interceptor's ERROR event and the limit alert."""

    def test_a_recurring_snapshot_over_its_limit(self):
        """A policy's snapshot refused for the limit: the alert (zone 0), then the ERROR Created event."""
        cloud = Cloud()
        volume = cloud.volume("xen-nfs")
        policy = cloud.engine.create_snapshot_policy(volume.id, interval="hourly", schedule="5", max_snaps=3)
        cloud.engine.set_limit(cloud.alice, "snapshot", 0)
        error = cloud.refused(volume.id, policy_id=policy.id)
        assert error.code == 535
        assert [(a.type, a.subject, a.data_center_id) for a in cloud.engine.store.find(Alert)] == [
            ("ALERT_TYPE_UPDATE_RESOURCE_COUNT", LIMIT_ALERT.format(id=cloud.alice.id), 0)
        ]

    def test_the_alert_is_not_repeated(self):
        """ALERT_TYPE_UPDATE_RESOURCE_COUNT does not repeat while one is unarchived; each refusal has its event."""
        cloud = Cloud()
        volume = cloud.volume("xen-nfs")
        policy = cloud.engine.create_snapshot_policy(volume.id, interval="hourly", schedule="5", max_snaps=3)
        cloud.engine.set_limit(cloud.alice, "snapshot", 0)
        for _ in range(2):
            cloud.refused(volume.id, policy_id=policy.id)
        assert cloud.engine.store.count(Alert) == 1
        assert [e[:2] for e in action_events(cloud.engine, "SNAPSHOT.CREATE")] == [("Created", "ERROR")] * 2

    def test_a_manual_snapshot_over_its_limit_sends_no_alert(self):
        """A MANUAL snapshot's limit refusal: the ERROR event only."""
        cloud = Cloud()
        volume = cloud.volume("xen-nfs")
        cloud.engine.set_limit(cloud.alice, "snapshot", 0)
        assert cloud.refused(volume.id).code == 535
        assert cloud.engine.store.find(Alert) == []


class TestCreateByTheScheduler:
    def _scheduled(self, cloud: Cloud, *, limit: int | None = None) -> Volume:
        """An hourly policy (then alice's snapshot limit, if given); the scheduler's first dispatch and its take."""
        volume = cloud.volume("xen-nfs")
        cloud.engine.create_snapshot_policy(volume.id, interval="hourly", schedule="5", max_snaps=3)
        if limit is not None:
            cloud.engine.set_limit(cloud.alice, "snapshot", limit)
        cloud.engine.start_background_tasks()
        cloud.engine.run(until_ms=TICK_MS)
        return volume

    def test_one_scheduled_event_the_schedulers(self):
        """The scheduler's Scheduled (system user, on the volume), the system context's Created, then the job's."""
        cloud = Cloud()
        volume = self._scheduled(cloud)
        a, sid = cloud.alice.id, cloud.engine.store.find(Snapshot)[0].id
        assert action_events(cloud.engine, "SNAPSHOT.CREATE") == [
            ("Scheduled", "INFO", 1, a, volume.id, f"creating snapshot for volume Id:{volume.uuid}"),
            ("Created", "INFO", 1, 1, sid, CREATED),
            ("Started", "INFO", 1, a, sid, STARTED),
            ("Completed", "INFO", 1, a, sid, COMPLETED),
        ]

    def test_a_refusal_alerts_and_keeps_the_scheduled_event(self):
        """Over the limit: the Scheduled event, the alert, the system's ERROR Created event; no snapshot, no job."""
        cloud = Cloud()
        self._scheduled(cloud, limit=0)
        assert cloud.engine.store.find(Snapshot) == []
        assert [e[:4] for e in action_events(cloud.engine, "SNAPSHOT.CREATE")] == [
            ("Scheduled", "INFO", 1, cloud.alice.id),
            ("Created", "ERROR", 1, 1),
        ]
        assert [a.subject for a in cloud.engine.store.find(Alert)] == [LIMIT_ALERT.format(id=cloud.alice.id)]
        failure = cloud.engine.store.find(Failure)
        assert [(f.step, f.exc_type.rsplit(".", 1)[-1]) for f in failure] == [
            ("api.allocate", "ResourceAllocationException")
        ]


class TestDelete:
    def test_a_delete_that_returns_false_completes_its_event(self):
        """The manager returned false (two refs, the snapshot in use): Completed INFO, then the job fails 530."""
        cloud = Cloud()
        sid = cloud.take(cloud.volume("xen-nfs")).snapshot.id
        other = cloud.volume("xen-nfs")
        cloud.engine.add(VolumeDetail(volume_id=other.id, name="SNAPSHOT_ID", value=str(sid)))
        mark = len(action_events(cloud.engine, "SNAPSHOT.CREATE"))
        assert delete(cloud, sid) == ("FAILED", 530, "Failed to delete Snapshot")
        uuid, a = cloud.engine.get(Snapshot, sid).uuid, cloud.alice.id
        assert action_events(cloud.engine, "SNAPSHOT.DELETE", after=mark) == [
            ("Scheduled", "INFO", a, a, sid, f"Deleting Snapshot with ID: {uuid}"),
            ("Started", "INFO", a, a, sid, f"Deleting snapshot. Snapshot ID: {uuid}"),
            ("Completed", "INFO", a, a, sid, f"Successfully completed deleting snapshot. Snapshot ID: {uuid}"),
        ]

    def test_an_admin_deletes_another_accounts_snapshot(self):
        """Scheduled is filed under the snapshot's owner, Started and Completed under the caller's account."""
        cloud = Cloud()
        sid = cloud.take(cloud.volume("xen-nfs")).snapshot.id
        job = cloud.engine.delete_snapshot(sid, caller=cloud.root)
        cloud.engine.run()
        assert answer(cloud.engine, job.id)[0] == "SUCCEEDED"
        r, a = cloud.root.id, cloud.alice.id
        assert [e[:4] for e in action_events(cloud.engine, "SNAPSHOT.DELETE")] == [
            ("Scheduled", "INFO", r, a),
            ("Started", "INFO", r, r),
            ("Completed", "INFO", r, r),
        ]

    def test_an_unknown_snapshot(self):
        """No snapshot to name: the id as given, the system account for Scheduled; the manager's check throws."""
        cloud = Cloud()
        job = cloud.engine.delete_snapshot(42, caller=cloud.alice)
        cloud.engine.run()
        assert answer(cloud.engine, job.id) == ("FAILED", 431, "unable to find a snapshot with id 42")
        a = cloud.alice.id
        assert action_events(cloud.engine, "SNAPSHOT.DELETE") == [
            ("Scheduled", "INFO", a, 1, 42, "Deleting Snapshot with ID: 42"),
            ("Started", "INFO", a, a, 42, "Deleting snapshot. Snapshot ID: 42"),
            ("Completed", "ERROR", a, a, 42, "Error while deleting snapshot. Snapshot ID: 42"),
        ]

    def test_retention_writes_no_interceptor_events(self):
        """Retention calls deleteSnapshot on ``this``: only its own "Successfully deleted oldest snapshot"."""
        cloud = Cloud()
        volume = cloud.volume("xen-nfs")
        cloud.engine.create_snapshot_policy(volume.id, interval="hourly", schedule="5", max_snaps=1)
        cloud.engine.start_background_tasks()
        cloud.engine.run(until_ms=2 * HOUR_MS)
        rows = action_events(cloud.engine, "SNAPSHOT.DELETE")
        assert [(e[0], e[5].split(":")[0]) for e in rows] == [("Completed", "Successfully deleted oldest snapshot")]
