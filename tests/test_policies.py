"""Snapshot policies, the scheduler and retention (spec §9.1-§9.3).

``createSnapshotPolicy`` validates and keeps one policy per (volume, interval); the scheduler polls every
``snapshot.poll.interval`` (300 s) and dispatches ``createSnapshot`` as the system user in the owner's account when a
schedule is due; after each recurring snapshot, retention deletes the oldest of ALL the volume's non-Destroyed
snapshots of that type beyond ``min(snapshot.max.<type>, maxSnaps)``, through the full delete path.
"""

from __future__ import annotations

import datetime as dt
import zoneinfo

import pytest
from cloud import DELTA, PHYSICAL, SIZE, Cloud, action_events
from hypothesis import given
from hypothesis import strategies as st
from lifecycle_cloud import jobs, refs, second_zone, stored, usage

from snapshotfsm.describe import snapshot_str, volume_str
from snapshotfsm.errors import ApiError, CloudRuntimeException
from snapshotfsm.faults import FaultPlan
from snapshotfsm.orchestration import backup
from snapshotfsm.orchestration.policies import next_run_time
from snapshotfsm.store.records import (
    Account,
    ActionEvent,
    AsyncJob,
    ImageStore,
    Snapshot,
    SnapshotPolicy,
    SnapshotPolicyDetail,
    SnapshotSchedule,
    UsageEvent,
    VmInstance,
    Volume,
)

HOUR_MS = 3_600_000
TICK_MS = 11 * 60_000
"""A schedule at minute 5 is dispatched by the poll at minute 10; its take is over a minute later."""
USER_ERROR = "Internal error executing command, please contact your system administrator"


def _hourly(cloud: Cloud, volume: Volume, max_snaps: int, ticks: int, before_tick=None) -> list[tuple[int, str, bool]]:
    """An hourly policy at minute 5 and the scheduler running for ``ticks`` hours: every snapshot row after."""
    cloud.engine.create_snapshot_policy(volume.id, interval="hourly", schedule="5", max_snaps=max_snaps)
    cloud.engine.start_background_tasks()
    for tick in range(ticks):
        if before_tick is not None:
            before_tick(tick)
        cloud.engine.run(until_ms=tick * HOUR_MS + TICK_MS)
    return [(s.id, s.status, s.removed is not None) for s in cloud.engine.store.find(Snapshot)]


class TestSchedulerAndRetention:
    def test_six_hourly_snapshots_keep_the_three_newest(self):
        """max_snaps=3: after six ticks the three oldest went through the full delete path."""
        cloud = Cloud()
        rows = _hourly(cloud, cloud.volume("xen-nfs"), 3, 6)
        assert rows == [
            (1, "Destroyed", False),
            (2, "Destroyed", False),
            (3, "Destroyed", False),
            (4, "BackedUp", False),
            (5, "BackedUp", False),
            (6, "BackedUp", False),
        ]
        snaps = cloud.engine.store.find(Snapshot)
        assert [(s.type_description, s.created) for s in snaps] == [
            ("HOURLY", f"2026-01-01 0{h}:10:00") for h in range(6)
        ]
        deleted = [(u.type, u.resource_id) for u in cloud.engine.store.find(UsageEvent, "type = 'SNAPSHOT.DELETE'")]
        assert deleted == [("SNAPSHOT.DELETE", 1), ("SNAPSHOT.DELETE", 2), ("SNAPSHOT.DELETE", 3)]
        # Snapshot 1 is the chain's full copy, 2 to 6 deltas on it; the three kept are deltas. The deleted ones gave
        # back their own sizes, although 1 to 3 stay on storage (Hidden) under the deltas that need them (§16.3).
        assert cloud.counts() == {"snapshot": 3, "primary_storage": 0, "secondary_storage": 3 * DELTA}
        assert [refs(cloud.engine, sid) for sid in (1, 2, 3)] == [[("Image", "Hidden")]] * 3
        assert [stored(cloud.engine, sid)[-1] for sid in (1, 2, 3)] == [("image", True)] * 3

    def test_a_retention_delete_writes_one_action_event(self):
        """onCompletedActionEvent as the system user, naming the row as it was before the delete."""
        cloud = Cloud()
        volume = cloud.volume("xen-nfs")
        first: list[str] = []

        def remember(tick: int) -> None:
            if tick == 1:
                first.append(snapshot_str(cloud.engine.get(Snapshot, 1)))

        _hourly(cloud, volume, 1, 2, before_tick=remember)
        events = cloud.engine.store.find(ActionEvent, "type = 'SNAPSHOT.DELETE'")
        assert [(e.description, e.user_id, e.account_id, e.resource_id) for e in events] == [
            (f"Successfully deleted oldest snapshot: {first[0]}", 1, cloud.alice.id, 1)
        ]
        assert '"state":"BackedUp"' in first[0]

    def test_jobs_run_as_the_system_user_in_the_owners_account(self):
        """The API job and its work job: user 1 (system), account alice."""
        cloud = Cloud()
        _hourly(cloud, cloud.volume("xen-nfs"), 3, 1)
        rows = cloud.engine.store.find(AsyncJob)
        assert [(j.job_cmd.rsplit(".", 1)[-1], j.user_id, j.account_id) for j in rows] == [
            ("CreateSnapshotCmd", 1, cloud.alice.id),
            ("VmWorkTakeVolumeSnapshot", 1, cloud.alice.id),
        ]
        assert jobs(cloud.engine) == [
            ("CreateSnapshotCmd", "SUCCEEDED", 0),
            ("VmWorkTakeVolumeSnapshot", "SUCCEEDED", 0),
        ]

    def test_the_schedule_row_follows_each_job(self):
        """Due at 00:05, dispatched at the 00:10 poll with the job and snapshot ids, rescheduled at 00:15."""
        cloud = Cloud()
        volume = cloud.volume("xen-nfs")
        policy = cloud.engine.create_snapshot_policy(volume.id, interval="hourly", schedule="5", max_snaps=3)
        row = cloud.engine.store.first(SnapshotSchedule, "policy_id = ?", (policy.id,))
        assert (row.scheduled_timestamp, row.async_job_id, row.snapshot_id) == ("2026-01-01 00:05:00", None, None)
        cloud.engine.start_background_tasks()
        cloud.engine.run(until_ms=10 * 60_000 + 40_000)
        row = cloud.engine.store.first(SnapshotSchedule, "policy_id = ?", (policy.id,))
        assert (row.scheduled_timestamp, row.async_job_id, row.snapshot_id) == ("2026-01-01 00:05:00", 1, 1)
        cloud.engine.run(until_ms=15 * 60_000)
        row = cloud.engine.store.first(SnapshotSchedule, "policy_id = ?", (policy.id,))
        assert (row.scheduled_timestamp, row.async_job_id, row.snapshot_id) == ("2026-01-01 01:05:00", None, None)

    def test_a_manual_take_naming_the_policy_leaves_its_schedule_alone(self):
        """getCurrentSchedule(volume, policy, executing=true) wants a schedule with a job: the pending one is not it.

        The take is of the policy's type (HOURLY), so retention runs for it; only the schedule row is left alone.
        """
        cloud = Cloud()
        volume = cloud.volume("kvm-rbd")
        policy = cloud.engine.create_snapshot_policy(volume.id, interval="hourly", schedule="5", max_snaps=2)
        before = cloud.engine.store.find(SnapshotSchedule)
        taken = cloud.take(volume, policy_id=policy.id)
        assert (taken.status, taken.snapshot.type_description) == ("SUCCEEDED", "HOURLY")
        assert cloud.engine.store.find(SnapshotSchedule) == before
        assert [(r.async_job_id, r.snapshot_id) for r in before] == [(None, None)]

    @pytest.mark.violates("usage-matches-objects")
    def test_an_error_snapshot_counts_and_goes_first(self):
        """A recurring snapshot that failed (Error) is counted and, being oldest, is deleted (expunged refs)."""
        cloud = Cloud(faults=FaultPlan().fail("takeSnapshot", nth=2))
        rows = _hourly(cloud, cloud.volume("xen-nfs"), 2, 4)
        assert rows == [(1, "Destroyed", False), (2, "Error", True), (3, "BackedUp", False), (4, "BackedUp", False)]
        events = [e.resource_id for e in cloud.engine.store.find(ActionEvent, "type = 'SNAPSHOT.DELETE'")]
        assert events == [1, 2]

    @pytest.mark.violates("counts-match-recount", "usage-matches-objects")
    def test_an_allocated_snapshot_counts_and_goes_first(self):
        """A take abandoned before SnapshotManagerImpl's try (no writable image store) leaves it Allocated."""
        cloud = Cloud()
        volume = cloud.volume("kvm-nfs")

        def image_store_read_only_at_second_tick(tick: int) -> None:
            cloud.engine.store.update(cloud.engine.store.first(ImageStore), readonly=tick == 1)

        rows = _hourly(cloud, volume, 2, 4, before_tick=image_store_read_only_at_second_tick)
        assert rows == [(1, "Destroyed", False), (2, "Allocated", True), (3, "BackedUp", False), (4, "BackedUp", False)]
        assert cloud.counts() == {"snapshot": 2, "primary_storage": 0, "secondary_storage": 2 * PHYSICAL + SIZE}

    @pytest.mark.violates(
        "answer-matches-state",
        "counts-match-recount",
        "legal-transitions",
        "no-orphan-object",
        "ready-ref-has-object",
        "usage-matches-objects",
    )
    def test_a_snapshot_removed_before_its_post_processing_runs_no_retention(self, monkeypatch):
        """``postCreateSnapshot`` reads the row with ``findById``: removed meanwhile, it stops before retention.

        Three snapshots kept under maxSnaps 3, then the policy lowered to 1: the 4th take's retention would delete
        two, but its row is removed (by another thread) just before its post-processing.
        """
        cloud = Cloud()
        volume = cloud.volume("xen-nfs")
        after_backup = backup.after_backup

        def then_removed(rt, strategy, take):  # type: ignore[no-untyped-def]
            done = after_backup(rt, strategy, take)
            if take.snapshot.id == 4:
                rt.store.remove(rt.store.get(Snapshot, 4), by="test: removed by another thread")
            return done

        def lower_max(tick: int) -> None:
            if tick == 3:
                cloud.engine.create_snapshot_policy(volume.id, interval="hourly", schedule="5", max_snaps=1)

        monkeypatch.setattr(backup, "after_backup", then_removed)
        rows = _hourly(cloud, volume, 3, 4, before_tick=lower_max)
        assert rows == [(1, "BackedUp", False), (2, "BackedUp", False), (3, "BackedUp", False), (4, "BackedUp", True)]

    @pytest.mark.violates("answer-matches-state", "counts-match-recount", "no-transitional-state")
    def test_a_stuck_creating_snapshot_blocks_retention(self):
        """A Creating snapshot cannot be deleted: retention stops there, and post-processing with it."""
        # The snapshots after it keep piling up beyond maxSnaps, without their SNAPSHOT.CREATE usage nor the
        # correction of the secondary storage count (spec §9.3: retention failures end the post-processing).
        cloud = Cloud(faults=FaultPlan().fail("takeSnapshot", nth=2, kind="exception"))
        rows = _hourly(cloud, cloud.volume("xen-nfs"), 2, 5)
        assert rows == [
            (1, "Destroyed", False),
            (2, "Creating", False),
            (3, "BackedUp", False),
            (4, "BackedUp", False),
            (5, "BackedUp", False),
        ]
        created = [u[0] for sid in (3, 4, 5) for u in usage(cloud.engine, sid) if u[0] == "SNAPSHOT.CREATE"]
        assert created == ["SNAPSHOT.CREATE"]
        assert cloud.counts() == {"snapshot": 3, "primary_storage": 0, "secondary_storage": DELTA + 2 * SIZE}

    def test_manual_snapshots_do_not_count(self):
        """Retention counts the policy's type only: manual snapshots of the volume are left alone."""
        cloud = Cloud()
        volume = cloud.volume("xen-nfs")
        manual = [cloud.take(volume).snapshot.id for _ in range(2)]
        _hourly(cloud, volume, 1, 2)
        assert [cloud.engine.get(Snapshot, sid).status for sid in manual] == ["BackedUp", "BackedUp"]
        hourly = cloud.engine.store.find(Snapshot, "type_description = 'HOURLY'")
        assert [s.status for s in hourly] == ["Destroyed", "BackedUp"]

    @pytest.mark.violates("counts-match-recount")
    def test_a_schedule_whose_job_is_in_progress_is_skipped(self):
        """The first job never ends (no answer from the driver): no other job is dispatched for hours."""
        cloud = Cloud(faults=FaultPlan().fail("takeSnapshot", kind="no_answer"))
        rows = _hourly(cloud, cloud.volume("xen-nfs"), 3, 4)
        assert rows == [(1, "Creating", False)]
        assert jobs(cloud.engine) == [
            ("CreateSnapshotCmd", "IN_PROGRESS", 0),
            ("VmWorkTakeVolumeSnapshot", "IN_PROGRESS", 0),
        ]
        row = cloud.engine.store.first(SnapshotSchedule)
        assert (row.scheduled_timestamp, row.async_job_id) == ("2026-01-01 00:05:00", 1)

    def test_a_disabled_accounts_schedule_is_skipped(self):
        """While the owner's account is disabled nothing is dispatched."""
        # The skipped schedule stays due, so the first poll after the account is enabled again (02:15) catches up
        # once, and the hourly rhythm resumes at 03:10.
        cloud = Cloud()

        def disable_at_second_and_third_tick(tick: int) -> None:
            account = cloud.engine.get(Account, cloud.alice.id)
            cloud.engine.store.update(account, state="disabled" if tick in (1, 2) else "enabled")

        rows = _hourly(cloud, cloud.volume("xen-nfs"), 3, 4, before_tick=disable_at_second_and_third_tick)
        assert [r[1] for r in rows] == ["BackedUp", "BackedUp", "BackedUp"]
        created = [s.created for s in cloud.engine.store.find(Snapshot)]
        assert created == ["2026-01-01 00:10:00", "2026-01-01 02:15:00", "2026-01-01 03:10:00"]

    def test_a_policy_deleted_while_its_job_runs_loses_its_schedule_when_the_job_ends(self):
        """deleteSnapshotPolicies leaves a schedule that has a job; the poll after the job ends expunges it."""
        cloud = Cloud()
        volume = cloud.volume("xen-nfs")
        policy = cloud.engine.create_snapshot_policy(volume.id, interval="hourly", schedule="5", max_snaps=3)
        cloud.engine.start_background_tasks()
        cloud.engine.run(until_ms=10 * 60_000 + 1_000)
        assert cloud.engine.store.first(SnapshotSchedule).async_job_id == 1
        cloud.engine.store.delete(cloud.engine.get(SnapshotPolicy, policy.id), by="deleteSnapshotPolicies")
        cloud.engine.run(until_ms=3 * HOUR_MS)
        assert cloud.engine.store.find(SnapshotSchedule) == []
        assert [(s.status, s.type_description) for s in cloud.engine.store.find(Snapshot)] == [("BackedUp", "HOURLY")]

    def test_a_due_schedule_whose_policy_is_gone_takes_no_snapshot(self, caplog):
        """canSnapshotBeScheduled expunges the schedule and the tick is dispatched (spec §9.2); the create fails.

        getSnapshotType dereferences the missing policy: the NullPointerException is logged, and no snapshot row,
        job or counter is written. The scheduler's Scheduled event stays, and ``allocSnapshot``'s interceptor adds
        its ERROR Created event in the poll thread's system context (user and account 1, no snapshot).
        """
        cloud = Cloud()
        volume = cloud.volume("xen-nfs")
        policy = cloud.engine.create_snapshot_policy(volume.id, interval="hourly", schedule="5", max_snaps=3)
        cloud.engine.store.delete(cloud.engine.get(SnapshotPolicy, policy.id), by="a policy row deleted alone")
        cloud.engine.start_background_tasks()
        cloud.engine.run(until_ms=2 * HOUR_MS)
        assert cloud.engine.store.find(SnapshotSchedule) == []
        assert cloud.engine.store.find(Snapshot) == []
        assert jobs(cloud.engine) == []
        assert cloud.counts() == {"snapshot": 0, "primary_storage": 0, "secondary_storage": 0}
        assert action_events(cloud.engine, "SNAPSHOT.CREATE") == [
            ("Scheduled", "INFO", 1, cloud.alice.id, volume.id, f"creating snapshot for volume Id:{volume.uuid}"),
            ("Created", "ERROR", 1, 1, None, "Error while creating entity for allocating snapshot"),
        ]
        assert "SnapshotPolicyVO.getInterval()" in caplog.text

    def test_a_policy_created_between_polls_counts_from_the_last_poll(self):
        """scheduleNextSnapshotJob starts from the scheduler's timestamp (configure, then each poll), not from now.

        Last poll 23:55, policy created at 00:03 for 00:01 daily: from the poll's day, 00:01 is before now and moves
        one day on, to today's 00:01, already past, so the next poll dispatches it at once. From now it would be
        tomorrow.
        """
        cloud = Cloud()
        volume = cloud.volume("xen-nfs")
        cloud.engine.run(until_ms=23 * HOUR_MS + 55 * 60_000)
        cloud.engine.poll_snapshot_schedules()
        cloud.engine.run(until_ms=24 * HOUR_MS + 3 * 60_000)
        policy = cloud.engine.create_snapshot_policy(volume.id, interval="daily", schedule="1:0", max_snaps=3)
        row = cloud.engine.store.first(SnapshotSchedule, "policy_id = ?", (policy.id,))
        assert row.scheduled_timestamp == "2026-01-02 00:01:00"
        assert len(cloud.engine.poll_snapshot_schedules()) == 1

    def test_after_a_restart_the_schedule_counts_from_the_start(self):
        """A restart configures the scheduler again: its timestamp is the start, so the same policy is tomorrow."""
        cloud = Cloud()
        volume = cloud.volume("xen-nfs")
        cloud.engine.run(until_ms=23 * HOUR_MS + 55 * 60_000)
        cloud.engine.poll_snapshot_schedules()
        cloud.engine.run(until_ms=24 * HOUR_MS + 3 * 60_000)
        cloud.engine.restart()
        policy = cloud.engine.create_snapshot_policy(volume.id, interval="daily", schedule="1:0", max_snaps=3)
        row = cloud.engine.store.first(SnapshotSchedule, "policy_id = ?", (policy.id,))
        assert row.scheduled_timestamp == "2026-01-03 00:01:00"


class TestOnePolicyPerInterval:
    def test_a_second_create_updates_the_policy(self):
        """Same volume and interval: the same row, with the new schedule, maxSnaps and timezone."""
        cloud = Cloud()
        volume = cloud.volume("xen-nfs")
        first = cloud.engine.create_snapshot_policy(volume.id, interval="hourly", schedule="5", max_snaps=3)
        second = cloud.engine.create_snapshot_policy(
            volume.id, interval="HOURLY", schedule="45", max_snaps=5, timezone="Asia/Tokyo"
        )
        assert second.id == first.id
        rows = cloud.engine.store.find(SnapshotPolicy)
        assert [(p.schedule, p.max_snaps, p.timezone, p.interval) for p in rows] == [("45", 5, "Asia/Tokyo", 0)]
        assert cloud.engine.store.count(SnapshotSchedule) == 1

    def test_another_interval_is_another_policy(self):
        """A daily policy next to the hourly one: two rows, two schedules."""
        cloud = Cloud()
        volume = cloud.volume("xen-nfs")
        hourly = cloud.engine.create_snapshot_policy(volume.id, interval="hourly", schedule="5", max_snaps=3)
        daily = cloud.engine.create_snapshot_policy(volume.id, interval="daily", schedule="30:2", max_snaps=3)
        assert daily.id != hourly.id
        assert [(p.interval, p.schedule) for p in cloud.engine.store.find(SnapshotPolicy)] == [(0, "5"), (1, "30:2")]
        schedules = [(s.policy_id, s.scheduled_timestamp) for s in cloud.engine.store.find(SnapshotSchedule)]
        assert schedules == [(hourly.id, "2026-01-01 00:05:00"), (daily.id, "2026-01-01 02:30:00")]

    @pytest.mark.violates("counts-match-recount")
    def test_zone_ids_are_kept_as_policy_details(self):
        """zoneids go to snapshot_policy_details, named zoneid."""
        cloud = Cloud()
        zone2 = second_zone(cloud)
        policy = cloud.engine.create_snapshot_policy(
            cloud.volume("xen-nfs").id, interval="daily", schedule="0:1", max_snaps=2, zone_ids=[zone2.id]
        )
        details = cloud.engine.store.find(SnapshotPolicyDetail, "policy_id = ?", (policy.id,))
        assert [(d.name, d.value) for d in details] == [("zoneid", str(zone2.id))]

    @pytest.mark.violates("counts-match-recount")
    def test_an_update_replaces_the_zones_only_when_new_ones_are_given(self):
        """``updateSnapshotPolicy`` (spec §18.6): new zone ids replace the zoneid details; none given keeps them."""
        cloud = Cloud()
        volume = cloud.volume("xen-nfs")
        zone2, zone3 = second_zone(cloud), second_zone(cloud, "zone3")

        def zones(**kwargs: object) -> list[tuple[str, str]]:
            policy = cloud.engine.create_snapshot_policy(
                volume.id, interval="daily", schedule="0:1", max_snaps=2, **kwargs
            )
            details = cloud.engine.store.find(SnapshotPolicyDetail, "policy_id = ?", (policy.id,))
            return [(d.name, d.value) for d in details]

        assert zones(zone_ids=[zone2.id]) == [("zoneid", str(zone2.id))]
        assert zones(zone_ids=[zone3.id, zone2.id]) == [("zoneid", str(zone3.id)), ("zoneid", str(zone2.id))]
        assert zones() == [("zoneid", str(zone3.id)), ("zoneid", str(zone2.id))]
        assert cloud.engine.store.count(SnapshotPolicy) == 1

    def test_an_unknown_timezone_becomes_gmt(self):
        """TimeZone.getTimeZone of an unknown id is GMT, and that is what is stored."""
        cloud = Cloud()
        policy = cloud.engine.create_snapshot_policy(
            cloud.volume("xen-nfs").id, interval="daily", schedule="0:1", max_snaps=2, timezone="Mars/Olympus"
        )
        assert policy.timezone == "GMT"


def _refused(cloud: Cloud, volume_id: int, **kwargs: object) -> tuple[int, str]:
    args = {"interval": "hourly", "schedule": "5", "max_snaps": 3, **kwargs}
    with pytest.raises(ApiError) as refused:
        cloud.engine.create_snapshot_policy(volume_id, **args)  # type: ignore[arg-type]
    assert cloud.engine.store.count(SnapshotPolicy) == 0
    assert cloud.engine.store.count(SnapshotSchedule) == 0
    return refused.value.code, refused.value.text


# (arguments, code, text with {volume} for the volume's toString)
INVALID = [
    pytest.param({"interval": "yearly"}, 431, "Unsupported interval type yearly", id="interval"),
    pytest.param(
        {"schedule": "x"}, 431, "{volume} has an invalid schedule [x] for interval type [hourly].", id="hourly-minute"
    ),
    pytest.param(
        {"interval": "daily", "schedule": "30"},
        431,
        "{volume} has an invalid schedule [30] for interval type [daily].",
        id="daily-too-few-parts",
    ),
    pytest.param(
        {"interval": "weekly", "schedule": "0:10"},
        431,
        "{volume} has an invalid schedule [0:10] for interval type [weekly].",
        id="weekly-too-few-parts",
    ),
    pytest.param(
        {"interval": "monthly", "schedule": "0:0:31"},
        431,
        "{volume} has an invalid schedule [0:0:31] for interval type [monthly].",
        id="monthly-day-31",
    ),
    pytest.param(
        {"interval": "monthly", "schedule": "0:0:29"},
        431,
        "{volume} has an invalid schedule [0:0:29] for interval type [monthly].",
        id="monthly-day-29",
    ),
    pytest.param({"max_snaps": 0}, 431, "maxSnaps [0] for volume {volume} should be greater than 0.", id="max-zero"),
    pytest.param(
        {"max_snaps": -2}, 431, "maxSnaps [-2] for volume {volume} should be greater than 0.", id="max-negative"
    ),
    pytest.param(
        {"max_snaps": 9},
        431,
        "maxSnaps [9] for volume {volume} exceeds limit [8] for interval type [hourly].",
        id="max-above-snapshot.max.hourly",
    ),
    pytest.param(
        {"interval": "Monthly", "schedule": "0:0:1", "max_snaps": 9},
        431,
        "maxSnaps [9] for volume {volume} exceeds limit [8] for interval type [Monthly].",
        id="max-above-snapshot.max.monthly",
    ),
]


class TestValidation:
    @pytest.mark.parametrize(("kwargs", "code", "text"), INVALID)
    def test_refusals(self, kwargs, code, text):
        """Each check of createPolicy, with the exact code and message; nothing is written."""
        cloud = Cloud()
        volume = cloud.volume("xen-nfs")
        assert _refused(cloud, volume.id, **kwargs) == (code, text.format(volume=volume_str(volume)))

    def test_a_missing_volume(self):
        """An unknown volume id: 431."""
        cloud = Cloud()
        volume = cloud.volume("xen-nfs")
        assert _refused(cloud, volume.id + 100, caller=cloud.alice) == (
            431,
            f"Failed to create snapshot policy, unable to find a volume with id {volume.id + 100}",
        )

    @pytest.mark.parametrize(
        ("caller", "text"),
        [
            ("alice", USER_ERROR),
            (
                "root",
                "Encrypted volumes don't support snapshot schedules, cannot create snapshot policy for the volume",
            ),
        ],
    )
    def test_an_encrypted_volume(self, caller, text):
        """UnsupportedOperationException: 530, its message hidden from a caller who is not root admin."""
        cloud = Cloud()
        volume = cloud.engine.add_volume(cloud.alice, cloud.pool("xen-nfs"), "enc", size=SIZE, encrypted=True)
        expected = text if caller == "alice" else f"{text} [{volume.uuid}]"
        assert _refused(cloud, volume.id, caller=getattr(cloud, caller)) == (530, expected)

    def test_another_accounts_volume(self):
        """checkAccess: 531."""
        cloud = Cloud()
        volume = cloud.volume("xen-nfs")
        assert _refused(cloud, volume.id, caller=cloud.bob) == (
            531,
            "Caller does not have permission to operate with provided resource.",
        )

    def test_a_volume_that_is_not_ready(self):
        """Ready is required while the policy is displayed; a hidden policy on it is accepted."""
        cloud = Cloud()
        volume = cloud.engine.add_volume(cloud.alice, cloud.pool("xen-nfs"), "new", size=SIZE, state="Allocated")
        assert _refused(cloud, volume.id) == (
            431,
            f"Volume: {volume_str(volume)} is not in Ready state but Allocated. Cannot take snapshot.",
        )
        policy = cloud.engine.create_snapshot_policy(
            volume.id, interval="hourly", schedule="5", max_snaps=3, display=False
        )
        assert policy.display is False
        assert cloud.engine.store.count(SnapshotSchedule) == 0

    def test_a_system_vm_volume(self):
        """A volume of a SYSTEM template: refused."""
        cloud = Cloud()
        template = cloud.engine.add_template("systemvm", system=True)
        volume = cloud.engine.add_volume(cloud.alice, cloud.pool("xen-nfs"), "sys", size=SIZE, template=template)
        assert _refused(cloud, volume.id) == (
            431,
            (
                f"Volume: {volume_str(volume)} is for System VM , Creating snapshot against System VM volumes is "
                "not supported"
            ),
        )

    def test_a_volume_of_a_router(self):
        """Attached to a VM that is not a user VM: refused, naming the interval as given."""
        cloud = Cloud()
        volume = cloud.volume("xen-nfs")
        vm = cloud.engine.get(VmInstance, volume.instance_id)
        cloud.engine.store.update(vm, type="DomainRouter")
        assert _refused(cloud, volume.id) == (
            431,
            (
                f"Failed to create snapshot policy [hourly] for volume {volume_str(volume)}; Snapshots of volumes "
                "attached to System or router VM are not allowed."
            ),
        )

    def test_max_snaps_above_the_account_limit(self):
        """maxSnaps above the owner's snapshot limit is refused; a root admin's volume is not limited."""
        cloud = Cloud()
        cloud.engine.set_limit(cloud.alice, "snapshot", 5)
        volume = cloud.volume("xen-nfs")
        assert _refused(cloud, volume.id, max_snaps=6) == (
            431,
            "Max number of snapshots shouldn't exceed the domain/account level snapshot limit",
        )
        cloud.engine.set_limit(cloud.root, "snapshot", 5)
        mine = cloud.volume("xen-nfs", account=cloud.root)
        assert cloud.engine.create_snapshot_policy(mine.id, interval="hourly", schedule="5", max_snaps=6).max_snaps == 6

    def test_snapshot_max_hourly_is_read_at_start(self):
        """snapshot.max.hourly=2 takes effect after a restart only."""
        cloud = Cloud()
        volume = cloud.volume("xen-nfs")
        cloud.engine.set_config("snapshot.max.hourly", 2)
        assert (
            cloud.engine.create_snapshot_policy(volume.id, interval="hourly", schedule="5", max_snaps=3).max_snaps == 3
        )
        cloud.engine.restart()
        with pytest.raises(ApiError) as refused:
            cloud.engine.create_snapshot_policy(volume.id, interval="hourly", schedule="5", max_snaps=3)
        assert (refused.value.code, refused.value.text) == (
            431,
            f"maxSnaps [3] for volume {volume_str(volume)} exceeds limit [2] for interval type [hourly].",
        )


class TestZoneValidation:
    def test_zones_with_backup_off(self):
        """Copies to other zones need backup to secondary."""
        cloud = Cloud(config={"snapshot.backup.to.secondary": False})
        zone2 = second_zone(cloud)
        assert _refused(cloud, cloud.volume("xen-nfs").id, zone_ids=[zone2.id]) == (
            431,
            "Backing up of snapshot has been disabled. Snapshot can not be taken for multiple zones",
        )

    def test_a_missing_destination_zone(self):
        """An unknown zone id."""
        cloud = Cloud()
        assert _refused(cloud, cloud.volume("xen-nfs").id, zone_ids=[99]) == (
            431,
            "Please specify a valid destination zone.",
        )

    def test_an_edge_destination_zone(self):
        """Edge zones cannot receive copies."""
        cloud = Cloud()
        edge = cloud.engine.add_zone("edge1", type="Edge")
        assert _refused(cloud, cloud.volume("xen-nfs").id, zone_ids=[edge.id]) == (
            431,
            "Snapshot copy is not supported by zone edge1",
        )

    @pytest.mark.violates("counts-match-recount")
    def test_a_disabled_destination_zone(self):
        """A disabled zone refuses a caller who is not root admin (531), not the root admin."""
        cloud = Cloud()
        zone2 = cloud.engine.add_zone("zone2", enabled=False)
        cloud.engine.add_image_store(zone2, "zone2-secondary")
        volume = cloud.volume("xen-nfs")
        assert _refused(cloud, volume.id, zone_ids=[zone2.id]) == (
            531,
            "Cannot perform this operation, Zone is currently disabled: zone2",
        )
        policy = cloud.engine.create_snapshot_policy(
            volume.id, interval="hourly", schedule="5", max_snaps=3, zone_ids=[zone2.id], caller=cloud.root
        )
        assert policy.volume_id == volume.id

    def test_a_volume_in_an_edge_zone(self):
        """A volume whose own zone is Edge cannot have copies in other zones."""
        cloud = Cloud()
        edge = cloud.engine.add_zone("edge1", type="Edge")
        cluster = cloud.engine.add_cluster(edge, "edge-cluster", hypervisor="KVM")
        cloud.engine.add_host(cluster, "edge-host")
        pool = cloud.engine.add_pool(edge, "edge-pool", cluster=cluster)
        vm = cloud.engine.add_vm(cloud.alice, edge, "edge-vm", hypervisor="KVM")
        volume = cloud.engine.add_volume(cloud.alice, pool, "edge-vol", size=SIZE, vm=vm)
        assert _refused(cloud, volume.id, zone_ids=[cloud.zone.id]) == (
            431,
            (
                "Backing up of snapshot is not supported by the zone of the volume. Snapshots can not be taken for "
                "multiple zones"
            ),
        )


UTC = dt.UTC
START = dt.datetime(2026, 1, 1, tzinfo=UTC)  # a Thursday


def _at(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=UTC)


# (interval, schedule, timezone, now (UTC), next run (UTC))
NEXT_RUNS = [
    pytest.param("HOURLY", "5", "UTC", "2026-01-01 00:00", "2026-01-01 00:05", id="hourly-ahead"),
    pytest.param("HOURLY", "5", "UTC", "2026-01-01 00:05", "2026-01-01 01:05", id="hourly-not-after-start"),
    pytest.param("HOURLY", "5", "UTC", "2026-01-01 00:30", "2026-01-01 01:05", id="hourly-past"),
    pytest.param("HOURLY", "75", "UTC", "2026-01-01 00:00", "2026-01-01 01:15", id="hourly-lenient-minute"),
    pytest.param("DAILY", "30:2", "UTC", "2026-01-01 00:00", "2026-01-01 02:30", id="daily-ahead"),
    pytest.param("DAILY", "30:2", "UTC", "2026-01-01 03:00", "2026-01-02 02:30", id="daily-past"),
    pytest.param("DAILY", "0:25", "UTC", "2026-01-01 00:00", "2026-01-02 01:00", id="daily-lenient-hour"),
    pytest.param("DAILY", "0:9", "Asia/Kolkata", "2026-01-01 00:00", "2026-01-01 03:30", id="daily-in-india"),
    pytest.param("WEEKLY", "0:10:5", "UTC", "2026-01-01 00:00", "2026-01-01 10:00", id="weekly-thursday"),
    pytest.param("WEEKLY", "0:10:1", "UTC", "2026-01-01 00:00", "2026-01-04 10:00", id="weekly-sunday-past"),
    pytest.param("WEEKLY", "0:0:8", "UTC", "2026-01-01 00:00", "2026-01-04 00:00", id="weekly-lenient-day"),
    pytest.param("MONTHLY", "0:0:15", "UTC", "2026-01-01 00:00", "2026-01-15 00:00", id="monthly-ahead"),
    pytest.param("MONTHLY", "0:0:15", "UTC", "2026-01-20 00:00", "2026-02-15 00:00", id="monthly-past"),
    pytest.param("MONTHLY", "0:0:28", "UTC", "2026-02-28 12:00", "2026-03-28 00:00", id="monthly-28th"),
    pytest.param("MONTHLY", "0:0:0", "UTC", "2026-03-10 00:00", "2026-03-28 00:00", id="monthly-day-0-rolls-back"),
    pytest.param(
        "HOURLY", "15", "America/New_York", "2026-03-08 06:30", "2026-03-08 07:15", id="hourly-spring-forward"
    ),
    pytest.param("HOURLY", "15", "America/New_York", "2026-11-01 05:30", "2026-11-01 06:15", id="hourly-fall-back"),
    pytest.param("DAILY", "0:2", "America/New_York", "2026-03-08 03:00", "2026-03-08 07:00", id="daily-into-dst-gap"),
]


class TestNextRunTime:
    @pytest.mark.parametrize(("interval", "schedule", "zone", "now", "expected"), NEXT_RUNS)
    def test_examples(self, interval, schedule, zone, now, expected):
        """DateUtil.getNextRunTime with start = now, as scheduleNextSnapshotJob calls it."""
        at = _at(now)
        assert next_run_time(interval, schedule, zone, at, at) == _at(expected)

    @pytest.mark.parametrize(
        ("interval", "schedule", "message"),
        [
            ("DAILY", "5", "Incorrect schedule format: 5 for interval type:DAILY"),
            ("MONTHLY", "0:0:29", "Day cannot be greater than 28 for monthly schedule"),
            ("HOURLY", "five", 'For input string: "five"'),
        ],
    )
    def test_bad_schedules(self, interval, schedule, message):
        """The errors createPolicy turns into "invalid schedule"."""
        with pytest.raises(CloudRuntimeException, match=message):
            next_run_time(interval, schedule, "UTC", START, START)

    def test_only_the_parts_an_interval_needs_are_read(self):
        """An hourly schedule with extra parts reads the minute only."""
        assert next_run_time("HOURLY", "5:x:y", "UTC", START, START) == _at("2026-01-01 00:05")


SPANS = {
    "HOURLY": dt.timedelta(hours=1),
    "DAILY": dt.timedelta(days=1),
    "WEEKLY": dt.timedelta(days=7),
    "MONTHLY": dt.timedelta(days=31),
}
FIXED_ZONES = ("UTC", "GMT", "Asia/Kolkata", "Asia/Tokyo", "Pacific/Kiritimati", "America/Phoenix")
DST_ZONES = ("America/New_York", "Europe/Berlin", "Australia/Lord_Howe", "America/Santiago")


@st.composite
def _schedules(draw: st.DrawFn) -> tuple[str, str, int, int, int]:
    interval = draw(st.sampled_from(list(SPANS)))
    minute, hour = draw(st.integers(0, 59)), draw(st.integers(0, 23))
    day = draw(st.integers(1, 7)) if interval == "WEEKLY" else draw(st.integers(1, 28))
    schedule = {"HOURLY": f"{minute}", "DAILY": f"{minute}:{hour}"}.get(interval, f"{minute}:{hour}:{day}")
    return interval, schedule, minute, hour, day


_NOWS = st.datetimes(
    min_value=dt.datetime(2000, 1, 1),  # noqa: DTZ001 - hypothesis takes naive bounds and adds the zone
    max_value=dt.datetime(2100, 1, 1),  # noqa: DTZ001
    timezones=st.just(UTC),
)


class TestNextRunTimeProperties:
    @given(_schedules(), st.sampled_from(FIXED_ZONES), _NOWS)
    def test_the_next_run_is_the_first_scheduled_instant_after_now(self, drawn, zone, now):
        """Without DST: strictly after now, within one interval, and at the scheduled local time."""
        interval, schedule, minute, hour, day = drawn
        run = next_run_time(interval, schedule, zone, now, now)
        assert now < run <= now + SPANS[interval]
        local = run.astimezone(zoneinfo.ZoneInfo(zone))
        assert (local.minute, local.second) == (minute, 0)
        if interval != "HOURLY":
            assert local.hour == hour
        if interval == "WEEKLY":
            assert local.isoweekday() % 7 + 1 == day
        if interval == "MONTHLY":
            assert local.day == day

    @given(_schedules(), st.sampled_from(DST_ZONES), _NOWS)
    def test_the_next_run_is_after_now_across_dst(self, drawn, zone, now):
        """With DST: still strictly after now, and within one interval plus the DST shift."""
        interval, schedule, *_ = drawn
        run = next_run_time(interval, schedule, zone, now, now)
        assert now < run <= now + SPANS[interval] + dt.timedelta(hours=1)
