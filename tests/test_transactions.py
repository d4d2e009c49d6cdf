"""The blocks CloudStack commits together (spec §21.2, §21.5), and crash points on both sides of each.

A block is one SQLite transaction (``Store.atomic``) around the same writes as CloudStack's, rolled back on the same
exceptions; a crash never falls inside one. ``deleteSnapshotInfos`` is tested with the delete (``test_delete.py``).
Here: ``postSnapshotCreation`` (sync backup and ``BackupSnapshotTask``), ``cleanupOnSnapshotBackupFailure``,
``cleanupLeftOverJobs`` with the ``MS_ID``
cleanup, the attached path's ``submitAsyncJob``, and ``saveDetails`` of a policy.
"""

from __future__ import annotations

import pytest
from cloud import Cloud
from lifecycle_cloud import CANCELLED, answer, details, refs, snapshot

from snapshotfsm.describe import volume_str
from snapshotfsm.errors import ApiError, CloudRuntimeException, NullPointerException, ServerDown
from snapshotfsm.faults import FaultPlan
from snapshotfsm.orchestration import policies, restart
from snapshotfsm.store.records import (
    AsyncJob,
    NamedLock,
    OpLock,
    Snapshot,
    SnapshotPolicy,
    SnapshotPolicyDetail,
    SnapshotSchedule,
    SnapshotStoreRef,
    UsageEvent,
    VmWorkJob,
)


def _primary_refs(cloud: Cloud) -> list[tuple[int, int]]:
    """Every primary ref left: (snapshot id, parent_snapshot_id)."""
    rows = cloud.engine.store.find(SnapshotStoreRef, "store_role = 'Primary'")
    return [(r.snapshot_id, r.parent_snapshot_id) for r in rows]


def _off_primary(cloud: Cloud) -> list[int]:
    return [u.resource_id for u in cloud.engine.store.find(UsageEvent, "type = 'SNAPSHOT.OFF_PRIMARY'")]


class TestPostSnapshotCreation:
    """``DefaultSnapshotStrategy.postSnapshotCreation``: {MS_ID delete; per parent: OFF_PRIMARY usage and primary-ref
    delete; the current ref's ``parent_snapshot_id = 0``}, with its catch inside, after the MS_ID delete (§21.2)."""

    @staticmethod
    def _second_take(faults: FaultPlan, *, async_backup: bool = False) -> tuple[Cloud, int, int]:
        """Two XenServer snapshots of one volume; the second's primary ref has the first's as its parent."""
        cloud = Cloud(faults=faults)
        volume = cloud.volume("xen-nfs")
        first = cloud.take(volume).snapshot.id
        second = cloud.take(volume, async_backup=async_backup).snapshot.id
        return cloud, first, second

    def test_all_of_it_commits(self):
        """Without a fault: MS_ID gone, the parent's primary ref gone with its OFF_PRIMARY, the parent link cleared."""
        cloud, first, second = self._second_take(FaultPlan())
        assert details(cloud.engine, second) == {}
        assert _primary_refs(cloud) == [(second, 0)]
        assert _off_primary(cloud) == [first]

    @pytest.mark.violates(
        "answer-matches-state", "counts-match-recount", "ready-ref-has-object", "usage-matches-objects"
    )
    def test_a_crash_before_it_writes_none_of_it(self):
        """``backup.answered#4`` is the block: before it, the MS_ID and the parent's ref are all still there."""
        cloud, first, second = self._second_take(FaultPlan().crash("backup.answered#4", nth=2))
        assert cloud.engine.crashes == ["backup.answered#4"]
        assert snapshot(cloud.engine, second) == ("BackedUp", False)
        assert details(cloud.engine, second) == {"MS_ID": "1"}
        assert _primary_refs(cloud) == [(first, 0), (second, first)]
        assert _off_primary(cloud) == []

    @pytest.mark.violates("answer-matches-state", "counts-match-recount")
    def test_a_crash_after_it_keeps_all_of_it(self):
        """Just after the block (before post-processing): every write of it is there."""
        cloud, first, second = self._second_take(FaultPlan().crash("take_snapshot.PostProcess", nth=2))
        assert cloud.engine.crashes == ["take_snapshot.PostProcess"]
        assert details(cloud.engine, second) == {}
        assert _primary_refs(cloud) == [(second, 0)]
        assert _off_primary(cloud) == [first]

    @pytest.mark.violates(
        "answer-matches-state",
        "counts-match-recount",
        "no-negative-count",
        "ready-ref-has-object",
        "usage-matches-objects",
    )
    def test_the_async_task_runs_it_as_one_block_too(self):
        """``BackupSnapshotTask``: the same block in ``backup_task.answered``; a crash before it writes none of it."""
        cloud, first, second = self._second_take(FaultPlan().crash("backup_task.answered#3", nth=1), async_backup=True)
        assert cloud.engine.crashes == ["backup_task.answered#3"]
        assert details(cloud.engine, second) == {"MS_ID": "1"}
        assert _primary_refs(cloud) == [(first, 0), (second, first)]

    @pytest.mark.violates("counts-match-recount", "no-negative-count")
    def test_the_async_task_commits_all_of_it_before_its_next_step(self):
        """A crash just after the block (before the task's Finish): every write of it is there."""
        cloud, first, second = self._second_take(FaultPlan().crash("backup_task.Finish"), async_backup=True)
        assert cloud.engine.crashes == ["backup_task.Finish"]
        assert details(cloud.engine, second) == {}
        assert _primary_refs(cloud) == [(second, 0)]
        assert _off_primary(cloud) == [first]

    @pytest.mark.violates(
        "answer-matches-state",
        "counts-match-recount",
        "legal-transitions",
        "ready-ref-has-object",
        "usage-matches-objects",
    )
    def test_an_error_inside_keeps_what_was_done_before_it_and_the_take_goes_on(self):
        """The parent's row is expunged while the child's copy runs: its first use throws, caught inside the block.

        The MS_ID delete before the error commits; the parent's ref is not deleted and the ``parent_snapshot_id = 0``
        is not written; the take goes on to its post-processing and SUCCEEDS (audit E-9).
        """
        cloud = Cloud()
        volume = cloud.volume("xen-nfs")
        first = cloud.take(volume).snapshot.id
        taken = cloud.create(volume)
        engine = cloud.engine
        while engine.get(Snapshot, taken.snapshot.id).status != "BackingUp":
            engine.run(max_tasks=1)
        engine.store.delete(engine.get(Snapshot, first), by="test: expunged meanwhile")
        engine.run()
        assert taken.status == "SUCCEEDED"
        assert snapshot(engine, taken.snapshot.id) == ("BackedUp", False)
        assert details(engine, taken.snapshot.id) == {}
        assert _primary_refs(cloud) == [(first, 0), (taken.snapshot.id, first)]
        assert _off_primary(cloud) == []
        assert [u[0] for u in taken.usage()] == ["SNAPSHOT.ON_PRIMARY", "SNAPSHOT.CREATE"]


def _crashed_while_backing_up() -> tuple[Cloud, int, int]:
    """The server died as the backup copy answered: two jobs IN_PROGRESS, a BackingUp snapshot with MS_ID."""
    cloud = Cloud(faults=FaultPlan().crash("take_snapshot.BackupAnswered"))
    taken = cloud.take(cloud.volume("xen-nfs"))
    assert snapshot(cloud.engine, taken.snapshot.id) == ("BackingUp", False)
    assert details(cloud.engine, taken.snapshot.id) == {"MS_ID": "1"}
    return cloud, taken.snapshot.id, taken.job_id


def _in_progress(cloud: Cloud) -> list[int]:
    return [j.id for j in cloud.engine.store.find(AsyncJob, "job_status = 0")]


@pytest.mark.violates("counts-match-recount", "usage-matches-objects")
class TestCleanupOnBackupFailure:
    """The sync copy fails: ``cleanupOnSnapshotBackupFailure`` is one block {primary ref DestroyRequested and
    OperationSucceeded, Snapshot OperationFailed, MS_ID delete, soft remove} (spec §21.2 ``backupSnapshot`` row).

    Its rollbacks are in ``test_take_faults.TestBackupCleanupFails``; here, the crash points on both sides.
    """

    @staticmethod
    def _crashed(at: str) -> tuple[Cloud, int]:
        cloud = Cloud(faults=FaultPlan().fail("copyAsync").crash(at))
        sid = cloud.take(cloud.volume("xen-nfs")).snapshot.id
        assert cloud.engine.crashes == [at]
        return cloud, sid

    def test_a_crash_before_it_writes_none_of_it(self):
        """``backup.answered#3`` is the block: the snapshot BackingUp, its primary ref Ready, its MS_ID there."""
        cloud, sid = self._crashed("backup.answered#3")
        assert snapshot(cloud.engine, sid) == ("BackingUp", False)
        assert refs(cloud.engine, sid) == [("Primary", "Ready")]
        assert details(cloud.engine, sid) == {"MS_ID": "1"}

    def test_a_crash_after_it_keeps_all_of_it(self):
        """At the error transition that follows: Error and soft-removed, the primary ref Destroyed, no MS_ID."""
        cloud, sid = self._crashed("take_snapshot.Unwind")
        assert snapshot(cloud.engine, sid) == ("Error", True)
        assert refs(cloud.engine, sid) == [("Primary", "Destroyed")]
        assert details(cloud.engine, sid) == {}


@pytest.mark.violates("counts-match-recount", "no-orphan-object", "usage-matches-objects")
class TestCleanupLeftOverJobs:
    """``cleanupLeftOverJobs`` and the ``MS_ID`` cleanup are one transaction (spec §10.1, §21.2, §21.7 on §10.1)."""

    def test_it_commits_the_jobs_and_the_ms_id_cleanup_together(self):
        """The jobs FAILED (530), the BackingUp snapshot Error, its MS_ID gone."""
        cloud, sid, job_id = _crashed_while_backing_up()
        report = cloud.engine.restart()
        assert (report["jobs_failed"], report["ms_id_details"]) == (2, 1)
        assert answer(cloud.engine, job_id) == ("FAILED", 530, CANCELLED)
        assert snapshot(cloud.engine, sid) == ("Error", False)
        assert details(cloud.engine, sid) == {}

    def test_an_exception_in_the_ms_id_part_rolls_the_whole_cleanup_back(self, monkeypatch, caplog):
        """A RuntimeException escaping ``cleanupFailedSnapshotsCreatedWithDefaultStrategy``: every job stays
        IN_PROGRESS, the snapshot and its MS_ID as they were; the outer catch only logs (audit E-10)."""
        cloud, sid, job_id = _crashed_while_backing_up()
        jobs = _in_progress(cloud)
        assert job_id in jobs

        def thrown(*args: object, **kwargs: object) -> Snapshot:
            raise NullPointerException("injected")

        monkeypatch.setattr(restart, "snapshot_event", thrown)
        report = cloud.engine.restart()
        assert (report["jobs_failed"], report["ms_id_details"]) == (0, 0)
        assert answer(cloud.engine, job_id)[0] == "IN_PROGRESS"
        assert snapshot(cloud.engine, sid) == ("BackingUp", False)
        assert details(cloud.engine, sid) == {"MS_ID": "1"}
        assert "cleaning up left over jobs for management server 1" in caplog.text
        monkeypatch.undo()
        cloud.engine.crash()
        report = cloud.engine.restart()  # the next restart does it
        assert (report["jobs_failed"], report["ms_id_details"]) == (1, 1)
        assert answer(cloud.engine, job_id) == ("FAILED", 530, CANCELLED)

    def test_a_crash_before_it_writes_none_of_it(self):
        """``restart.cleanup_left_over_jobs`` precedes the block: the jobs and the MS_ID are untouched."""
        cloud, sid, job_id = _crashed_while_backing_up()
        cloud.faults.crash("restart.cleanup_left_over_jobs")
        with pytest.raises(ServerDown):
            cloud.engine.restart()
        assert cloud.engine.crashes[-1] == "restart.cleanup_left_over_jobs"
        assert answer(cloud.engine, job_id)[0] == "IN_PROGRESS"
        assert details(cloud.engine, sid) == {"MS_ID": "1"}

    def test_a_crash_after_it_keeps_all_of_it(self):
        """``restart.cleanup_storage_jobs`` follows the block: the jobs FAILED and the MS_ID cleanup are both kept."""
        cloud, sid, job_id = _crashed_while_backing_up()
        cloud.faults.crash("restart.cleanup_storage_jobs")
        with pytest.raises(ServerDown):
            cloud.engine.restart()
        assert cloud.engine.crashes[-1] == "restart.cleanup_storage_jobs"
        assert answer(cloud.engine, job_id) == ("FAILED", 530, CANCELLED)
        assert snapshot(cloud.engine, sid) == ("Error", False)
        assert details(cloud.engine, sid) == {}


@pytest.mark.violates("counts-match-recount")
class TestSubmitWorkJob:
    """The attached path's ``submitAsyncJob``: {``async_job`` insert, queue item} in one transaction, under
    ``op_lock vm_instance<vmId>`` released in a finally (spec §21.2, ``CreateSnapshotCmd.execute`` row)."""

    # dispatch.enqueue's durable writes: #1 the lock, #2 the transaction, #3 the lock's release.

    def _crash(self, at: str) -> tuple[Cloud, int]:
        cloud = Cloud(faults=FaultPlan().crash(at))
        taken = cloud.create(cloud.volume("xen-nfs"))
        cloud.engine.run()
        assert cloud.engine.crashes == [at]
        return cloud, taken.job_id

    def test_a_crash_before_it_writes_neither_row(self):
        """The lock is held (its own commit, the dead server's until cleaned up); no work job, no queue row."""
        cloud, job_id = self._crash("dispatch.enqueue#2")
        assert [j.id for j in cloud.engine.store.find(AsyncJob)] == [job_id]
        assert cloud.engine.store.count(VmWorkJob) == 0
        assert [(lock.key, lock.owner) for lock in cloud.engine.store.find(OpLock)] == [
            ("vm_instance1", f"job-{job_id}")
        ]

    def test_a_crash_after_it_keeps_both(self):
        """The work job and its queue row are both written; the lock is not released yet."""
        cloud, job_id = self._crash("dispatch.enqueue#3")
        work = cloud.engine.store.find(AsyncJob, "id != ?", (job_id,))
        assert [j.job_cmd for j in work] == ["com.cloud.vm.VmWorkTakeVolumeSnapshot"]
        assert [w.id for w in cloud.engine.store.find(VmWorkJob)] == [work[0].id]
        assert cloud.engine.store.count(OpLock) == 1

    def test_the_lock_is_released_once_submitted(self):
        """Released in the finally: a crash at the next write finds no lock."""
        cloud, _ = self._crash("dispatch.enqueue#4")
        assert cloud.engine.store.count(OpLock) == 0


class TestPolicyCreation:
    """``createPolicy`` is not one transaction: each write on its own, ``saveDetails`` one transaction, all under the
    GlobalLock ``createSnapshotPolicy_<volumeId>`` (spec §18.6, §21.2 policy-create row)."""

    @pytest.mark.violates("counts-match-recount")
    def test_the_details_are_written_together(self):
        """zoneid and storageid rows of the policy, in one saveDetails."""
        cloud = Cloud()
        zone2 = cloud.engine.add_zone("zone2")
        cloud.engine.add_image_store(zone2, "secondary2")
        volume = cloud.volume("xen-nfs")
        policy = cloud.engine.create_snapshot_policy(
            volume.id, interval="hourly", schedule="5", max_snaps=3, zone_ids=[zone2.id]
        )
        rows = cloud.engine.store.find(SnapshotPolicyDetail, "policy_id = ?", (policy.id,))
        assert [(r.name, r.value) for r in rows] == [("zoneid", str(zone2.id))]
        assert cloud.engine.store.count(NamedLock) == 0

    def test_a_failure_after_the_policy_insert_keeps_the_policy(self, monkeypatch):
        """No transaction around the call: what was written before a failure stays (§21.5 policy | details |
        schedule); the lock is released in the finally."""
        cloud = Cloud()
        volume = cloud.volume("xen-nfs")

        def thrown(*args: object, **kwargs: object) -> None:
            raise CloudRuntimeException("injected")

        monkeypatch.setattr(policies, "schedule_next", thrown)
        with pytest.raises(ApiError):
            cloud.engine.create_snapshot_policy(volume.id, interval="hourly", schedule="5", max_snaps=3)
        assert cloud.engine.store.count(SnapshotPolicy) == 1
        assert cloud.engine.store.count(SnapshotSchedule) == 0
        assert cloud.engine.store.count(NamedLock) == 0

    @pytest.mark.violates("locks-released")
    def test_a_lock_held_elsewhere_refuses_the_call_and_writes_nothing(self):
        """GlobalLock ``createSnapshotPolicy_<volumeId>`` held (by a peer): CloudStack's CRE, 530; nothing written."""
        cloud = Cloud()
        volume = cloud.volume("xen-nfs")
        cloud.engine.add(NamedLock(name=f"createSnapshotPolicy_{volume.id}", ms_id=2, owner="ApiServer"))
        before = cloud.dump()
        with pytest.raises(ApiError) as refused:
            cloud.engine.create_snapshot_policy(
                volume.id, interval="hourly", schedule="5", max_snaps=3, caller=cloud.root
            )
        assert (refused.value.code, refused.value.text) == (
            530,
            f"Unable to acquire lock for creating snapshot policy [HOURLY] for {volume_str(volume)}",
        )
        assert cloud.dump() == before
