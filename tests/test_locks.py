"""Locks as CloudStack has them (spec §21.1, §21.5, §21.6, §21.7).

``acquireInLockTable``/``lockInLockTable`` rows (``op_lock``) are held by a thread: the end of that thread's context
deletes what it still holds (``Merovingian2.cleanupThread``); a dead server's rows stay until its restart
(``cleanupThisServer``) or a peer's node-left (``cleanupForServer``). GlobalLocks are MySQL named locks, apart from
``op_lock`` (``named_lock`` here), freed by ``unlock`` or when their server's session ends.
"""

from __future__ import annotations

import pytest
from cloud import Cloud
from lifecycle_cloud import delete, snapshot

from snapshotfsm.errors import MsCrash, ServerDown
from snapshotfsm.faults import FaultPlan
from snapshotfsm.orchestration.gc import GC_THREAD
from snapshotfsm.orchestration.policies import POLL_THREAD
from snapshotfsm.orchestration.restart import START_THREAD
from snapshotfsm.profiles import Profile
from snapshotfsm.store.records import AsyncJob, NamedLock, OpLock, Snapshot
from snapshotfsm.strategies.base import finally_unless_crash


def _locks(cloud: Cloud) -> list[tuple[str, int, str]]:
    return [(lock.key, lock.ms_id, lock.owner) for lock in cloud.engine.store.find(OpLock)]


def _work_job(cloud: Cloud, api_job_id: int) -> int:
    work = cloud.engine.store.first(AsyncJob, "related = ?", (str(api_job_id),))
    assert work is not None
    return work.id


class TestThreadEnd:
    """A lock not released on an exception is held to the end of its thread, not for ever (audit E-4)."""

    @pytest.mark.violates("usage-matches-objects")
    def test_a_failed_storage_system_take_holds_its_lock_while_the_work_job_runs(self):
        """The work job's thread took it: still there when the work job is about to fail (crash just before)."""
        cloud = Cloud(faults=FaultPlan().fail("managed.takeSnapshot").crash("take_snapshot.FailWork"))
        taken = cloud.take(cloud.volume("solidfire"))
        assert cloud.engine.crashes == ["take_snapshot.FailWork"]
        assert taken.status == "IN_PROGRESS"
        sid = taken.snapshot.id
        assert _locks(cloud) == [(f"snapshots{sid}", 1, f"job-{_work_job(cloud, taken.job_id)}")]

    @pytest.mark.violates("usage-matches-objects")
    def test_it_goes_when_the_work_job_ends_before_the_api_job(self):
        """The work job FAILED: its thread's lock is gone, while the API job has not completed yet."""
        cloud = Cloud(faults=FaultPlan().fail("managed.takeSnapshot").crash("take_snapshot.Fail"))
        taken = cloud.take(cloud.volume("solidfire"))
        assert cloud.engine.crashes == ["take_snapshot.Fail"]
        assert taken.status == "IN_PROGRESS"
        assert taken.work_state == ("FAILED", "Failed")
        assert _locks(cloud) == []

    @pytest.mark.violates("usage-matches-objects")
    def test_no_lock_is_left_once_the_job_failed(self):
        """The failed SolidFire take, run to its end: job FAILED, no op_lock row."""
        cloud = Cloud(faults=FaultPlan().fail("managed.takeSnapshot"))
        taken = cloud.take(cloud.volume("solidfire"))
        assert (taken.status, taken.snapshot.status) == ("FAILED", "Error")
        assert _locks(cloud) == []

    @pytest.mark.violates("usage-matches-objects")
    def test_detached_the_api_job_thread_holds_it(self):
        """No work job: the API job's thread takes the lock and its end releases it."""
        cloud = Cloud(faults=FaultPlan().fail("managed.takeSnapshot").crash("take_snapshot.Fail"))
        taken = cloud.take(cloud.volume("solidfire", vm=False))
        assert _locks(cloud) == [(f"snapshots{taken.snapshot.id}", 1, f"job-{taken.job_id}")]
        cloud.engine.restart()
        assert _locks(cloud) == []

    @pytest.mark.violates("answer-matches-state", "counts-match-recount")
    def test_another_thread_of_the_same_server_is_refused(self):
        """Re-entrancy follows the thread: a row of another thread of this server refuses the take's lock."""
        cloud = Cloud()
        volume = cloud.volume("xen-nfs")
        taken = cloud.create(volume)
        cloud.engine.add(OpLock(key=f"snapshots{taken.snapshot.id}", ms_id=1, owner="another thread"))
        cloud.engine.run()
        assert taken.status == "FAILED"
        assert _locks(cloud) == [(f"snapshots{taken.snapshot.id}", 1, "another thread")]

    @pytest.mark.violates("counts-match-recount", "locks-released", "no-negative-count", params=["backup-task-try"])
    @pytest.mark.violates("locks-released", params=["gc", "scheduler"])
    @pytest.mark.parametrize(
        "thread",
        [GC_THREAD, POLL_THREAD, "BackupSnapshotTask snapshot 1 attempts 2"],
        ids=["gc", "scheduler", "backup-task-try"],
    )
    def test_each_background_thread_ends_its_context(self, thread):
        """The GC pass, the scheduler tick, a BackupSnapshotTask try: what they leave goes when they end."""
        cloud = Cloud()
        volume = cloud.volume("xen-nfs")
        cloud.engine.add(OpLock(key="snapshots999", ms_id=1, owner=thread))
        cloud.engine.add(OpLock(key="snapshots998", ms_id=2, owner=thread))  # a peer's thread of that name stays
        if thread == GC_THREAD:
            cloud.engine.collect_garbage()
        elif thread == POLL_THREAD:
            cloud.engine.poll_snapshot_schedules()
        else:
            cloud.take(volume, async_backup=True)
        cloud.engine.run()
        assert _locks(cloud) == [("snapshots998", 2, thread)]

    @pytest.mark.violates("answer-matches-state", "usage-matches-objects")
    def test_the_start_up_thread_holds_a_failed_re_deletes_lock_to_its_end(self):
        """The restart's re-delete fails: its root lock stays through the later phases, then the start ends."""
        cloud = Cloud(faults=FaultPlan().fail("image.deleteAsync").crash("restart.remove_orphan_policies"))
        sid = cloud.take(cloud.volume("xen-nfs")).snapshot.id
        cloud.engine.transit(cloud.engine.get(Snapshot, sid), "DestroyRequested")
        with pytest.raises(ServerDown):
            cloud.engine.restart()
        assert _locks(cloud) == [(f"snapshots{sid}", 1, START_THREAD)]
        cloud.engine.restart()
        assert snapshot(cloud.engine, sid) == ("Destroyed", False)
        assert _locks(cloud) == []


class TestNamedLocks:
    """GlobalLocks are not ``op_lock`` rows, and die with their server's session (audit E-5)."""

    def test_the_poll_takes_a_named_lock(self):
        """``snapshot.poll`` is a named lock: a crash in the poll frees it, and no op_lock row ever held it."""
        cloud = Cloud(faults=FaultPlan().crash("take_snapshot.Allocate"))
        volume = cloud.volume("xen-nfs")
        cloud.engine.create_snapshot_policy(volume.id, interval="hourly", schedule="5", max_snaps=3)
        cloud.engine.clock.advance(3_600_000)
        with pytest.raises(ServerDown):
            cloud.engine.poll_snapshot_schedules()
        assert cloud.engine.store.count(NamedLock) == 0
        assert cloud.engine.store.count(OpLock) == 0
        peer = cloud.engine.peer(2)
        assert len(peer.poll_snapshot_schedules()) == 1

    @pytest.mark.violates("locks-released")
    def test_a_crash_frees_only_the_crashed_servers_named_locks(self):
        """Its session ended; a peer's session goes on (spec §21.1, UNVERIFIED: MySQL behaviour)."""
        cloud = Cloud()
        cloud.engine.add(NamedLock(name="createSnapshotPolicy_1", ms_id=1))
        cloud.engine.add(NamedLock(name="createSnapshotPolicy_2", ms_id=2))
        cloud.engine.crash()
        assert [(lock.name, lock.ms_id) for lock in cloud.engine.store.find(NamedLock)] == [
            ("createSnapshotPolicy_2", 2)
        ]


@pytest.mark.violates("counts-match-recount")
class TestDeadServer:
    """A dead server's op_lock rows: its own restart, or a peer's node-left, apart from the jobs (audit E-6)."""

    @staticmethod
    def _dead_holder(profile: str | Profile = "cloudstack") -> tuple[Cloud, int]:
        cloud = Cloud(faults=FaultPlan().fail("takeSnapshot", kind="no_answer"), profile=profile)
        taken = cloud.take(cloud.volume("xen-nfs"))
        cloud.engine.crash()
        assert [lock.key for lock in cloud.engine.store.find(OpLock)] == [f"snapshots{taken.snapshot.id}"]
        return cloud, taken.job_id

    def test_they_stay_until_the_restart(self):
        """The crash keeps them; the restart deletes them in a phase of its own, before the jobs' cleanup."""
        cloud, job_id = self._dead_holder()
        cloud.faults.crash("restart.cleanup_left_over_jobs")
        with pytest.raises(ServerDown):
            cloud.engine.restart()
        assert cloud.engine.store.count(OpLock) == 0
        assert cloud.engine.job_status(job_id) == "IN_PROGRESS"

    def test_a_crash_before_that_phase_keeps_them(self):
        """``restart.release_locks`` precedes the lock cleanup."""
        cloud, _ = self._dead_holder()
        cloud.faults.crash("restart.release_locks")
        with pytest.raises(ServerDown):
            cloud.engine.restart()
        assert cloud.engine.store.count(OpLock) == 1

    @pytest.mark.parametrize("peer_cleanup", [True, False], ids=["jobs-listener", "no-jobs-listener"])
    def test_a_peer_frees_them_on_node_left_whatever_the_profile(self, peer_cleanup):
        """The lock controller's listener is not the job manager's: the rows go even when the jobs wait."""
        cloud, job_id = self._dead_holder(Profile("cloudstack", peer_cleanup_on_node_left=peer_cleanup))
        peer = cloud.engine.peer(2)
        report = peer.on_management_node_left(1)
        assert report["locks_released"] == 1
        assert cloud.engine.store.count(OpLock) == 0
        assert cloud.engine.job_status(job_id) == ("FAILED" if peer_cleanup else "IN_PROGRESS")


@pytest.mark.violates("locks-released")
def test_a_refused_delete_lock_is_ignored_and_left_to_its_holder():
    """§21.6 quirk 3, with a dead server's row: the delete goes on; the row waits for that server's cleanup."""
    cloud = Cloud()
    sid = cloud.take(cloud.volume("xen-nfs")).snapshot.id
    cloud.engine.add(OpLock(key=f"snapshots{sid}", ms_id=2, owner="job-99"))
    assert delete(cloud, sid)[0] == "SUCCEEDED"
    assert snapshot(cloud.engine, sid) == ("Destroyed", False)
    assert cloud.engine.get(Snapshot, sid).status == "Destroyed"
    assert _locks(cloud) == [(f"snapshots{sid}", 2, "job-99")]


class TestFinallyUnlessCrash:
    """``finally_unless_crash``: Java's ``finally`` around a block, which a crash (the process's death) skips."""

    def test_release_runs_when_the_block_ends_or_raises(self) -> None:
        """The release runs after a normal end and after an exception, which then goes on."""
        released: list[str] = []
        with finally_unless_crash(lambda: released.append("end")):
            pass
        with pytest.raises(ValueError, match="boom"), finally_unless_crash(lambda: released.append("raised")):
            raise ValueError("boom")
        assert released == ["end", "raised"]

    def test_a_crash_skips_the_release(self) -> None:
        """A crash unwinds with nothing released: a dead server writes nothing on its way out."""
        released: list[str] = []
        with pytest.raises(MsCrash), finally_unless_crash(lambda: released.append("crashed")):
            raise MsCrash(1, "somewhere")
        assert released == []

    def test_a_failing_release_replaces_the_exception_chained_to_it(self) -> None:
        """A release that raises replaces the block's exception, which becomes its context (Java drops it)."""

        def release() -> None:
            raise KeyError("release")

        with pytest.raises(KeyError) as caught, finally_unless_crash(release):
            raise ValueError("block")
        assert isinstance(caught.value.__context__, ValueError)
