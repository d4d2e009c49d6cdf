"""``Engine.quiesce``: run the world until nothing more will happen, through a restart of every server.

What it runs, in order, and what it reports: the runs still waiting for an answer that will never come, apart from
an idle world; that it terminates with background tasks that reschedule themselves for ever; that it is
deterministic.
"""

from __future__ import annotations

import pytest
from cloud import Cloud

from snapshotfsm.errors import InvalidValue
from snapshotfsm.faults import FaultPlan
from snapshotfsm.orchestration.quiesce import (
    AT_THE_END,
    BEFORE_RESTART,
    UnansweredCall,
    quiesce_world,
    unanswered_calls,
)
from snapshotfsm.record import RunRecord
from snapshotfsm.store.records import AsyncJob, NamedLock, Snapshot

DAY_MS = 86_400_000
"""One full cycle of the default background tasks: the storage GC first runs after ``storage.cleanup.delay``."""
BACKGROUND = ("ms1 SnapshotPollTask", "ms1 StorPoolSnapshotRecoveryCheck", "ms1 StorageGarbageCollector")


def _unfinished_jobs(cloud: Cloud) -> list[int]:
    return [j.id for j in cloud.engine.store.find(AsyncJob, "job_status = 0")]


class TestIdle:
    """Quiescence of a world with nothing to do."""

    def test_an_idle_engine_is_crashed_restarted_and_runs_one_background_cycle(self) -> None:
        """Nothing waits; the server went down and up once; the background tasks ran one full cycle of a day."""
        cloud = Cloud()
        report = cloud.engine.quiesce()
        assert report.settled
        assert (report.servers, report.tasks_lost, report.crashes, report.down) == ((1,), {1: 0}, (), ())
        assert report.cleanups == {
            1: {
                "locks_released": 0,
                "jobs_failed": 0,
                "ms_id_details": 0,
                "storage_jobs": 0,
                "work_jobs_expunged": 0,
                "destroying_redeleted": 0,
                "orphan_policies": 0,
            }
        }
        assert (report.background, report.cycle_ms) == (BACKGROUND, DAY_MS)
        assert (report.started_ms, report.ended_ms) == (0, DAY_MS)
        assert (report.waiting, report.unanswered) == ((), ())
        assert not cloud.engine.down

    def test_the_cycle_is_the_longest_first_run_of_the_background_tasks(self) -> None:
        """With the GC off and StorPool's check off, one cycle is one poll interval."""
        cloud = Cloud(config={"storage.cleanup.enabled": False, "storpool.snapshot.recovery.from.remote.check": 0})
        cloud.engine.set_config("snapshot.poll.interval", 60)
        report = cloud.engine.quiesce()
        assert (report.background, report.cycle_ms) == (("ms1 SnapshotPollTask",), 60_000)

    def test_a_finished_take_quiesces_settled(self) -> None:
        """After a take that ended, nothing waits and no call goes unanswered."""
        cloud = Cloud()
        taken = cloud.take(cloud.volume("xen-nfs"))
        report = cloud.engine.quiesce()
        assert report.settled
        assert (report.waiting, report.unanswered) == ((), ())
        assert taken.status == "SUCCEEDED"

    @pytest.mark.violates("counts-match-recount", "usage-matches-objects")
    def test_quiescence_is_deterministic(self) -> None:
        """The same world quiesced twice gives the same report and the same database."""

        def world() -> tuple[object, str]:
            cloud = Cloud(faults=FaultPlan().fail("default.takeSnapshot", kind="no_answer"))
            cloud.take(cloud.volume("xen-nfs"))
            cloud.take(cloud.volume("kvm-nfs"))
            return cloud.engine.quiesce(), cloud.dump()

        assert world() == world()

    def test_no_server_is_refused(self) -> None:
        """The world's servers must be given."""
        cloud = Cloud()
        with pytest.raises(InvalidValue, match="servers"):
            quiesce_world([], cloud.engine.run)


class TestCrashes:
    """A server a crash rule took down, or will take down during the quiescence."""

    @pytest.mark.violates("counts-match-recount", "no-orphan-object")
    def test_a_crashed_server_is_restarted_and_its_job_cleaned_up(self) -> None:
        """Down when quiescence starts: it is not crashed again, only started; its job is failed by the cleanup."""
        cloud = Cloud(faults=FaultPlan().crash("take_snapshot.PrimaryAnswered"))
        taken = cloud.take(cloud.volume("xen-nfs"))
        assert cloud.engine.down
        report = cloud.engine.quiesce()
        assert report.tasks_lost == {}
        assert report.cleanups[1]["jobs_failed"] == 2
        assert report.settled
        assert taken.status == "FAILED"
        assert not cloud.engine.down

    def test_a_crash_rule_firing_in_the_restart_is_started_again(self) -> None:
        """A crash pending in the start-up cleanup takes the server down once; it is started again."""
        cloud = Cloud(faults=FaultPlan().crash("restart.cleanup_left_over_jobs"))
        report = cloud.engine.quiesce()
        assert report.crashes == ("restart.cleanup_left_over_jobs",)
        assert report.settled
        assert not cloud.engine.down

    @pytest.mark.violates("counts-match-recount")
    def test_a_server_a_crash_rule_takes_down_in_the_cycle_starts_again(self) -> None:
        """The poller's snapshot crashes the server during the background cycle: it starts again, with a new cycle."""
        cloud = Cloud(faults=FaultPlan().crash("take_snapshot.PostProcess"))
        volume = cloud.volume("xen-nfs")
        cloud.engine.create_snapshot_policy(volume.id, interval="HOURLY", schedule="0", max_snaps=2)
        report = cloud.engine.quiesce()
        assert report.crashes == ("take_snapshot.PostProcess",)
        assert report.background == BACKGROUND * 2
        assert report.cleanups[1]["jobs_failed"] == 2  # the scheduled API job and its work job
        assert (report.down, report.settled) == ((), True)
        assert not cloud.engine.down
        assert _unfinished_jobs(cloud) == []


class TestPeers:
    """Every management server of the world: this engine and its peers."""

    def test_every_server_goes_down_and_up(self) -> None:
        """A peer's job left mid-way is failed by the peer's own restart; both run their background tasks."""
        cloud = Cloud()
        volume = cloud.volume("xen-nfs")
        peer = cloud.engine.peer(2)
        job = peer.create_snapshot(volume.id)
        peer.run(max_tasks=3)
        report = cloud.engine.quiesce()
        assert report.servers == (1, 2)
        assert set(report.cleanups) == {1, 2}
        assert report.background == (*BACKGROUND, *(b.replace("ms1", "ms2") for b in BACKGROUND))
        assert report.settled
        assert _unfinished_jobs(cloud) == []
        assert cloud.engine.job_status(job.id) == "SUCCEEDED"

    def test_quiescing_from_the_peer_is_the_same(self) -> None:
        """The world is the same whichever of its servers is asked."""

        def world(from_peer: bool) -> object:
            cloud = Cloud()
            peer = cloud.engine.peer(2)
            peer.create_snapshot(cloud.volume("xen-nfs").id)
            return (peer if from_peer else cloud.engine).quiesce()

        assert world(from_peer=True) == world(from_peer=False)


class TestNeverAnswered:
    """A run waiting for an answer that will never come is reported as such, not taken for idle."""

    @pytest.mark.violates("counts-match-recount")
    def test_a_driver_that_never_answers_is_reported_and_quiescence_ends(self) -> None:
        """The take waits for the driver's answer; the restart then fails its job."""
        cloud = Cloud(faults=FaultPlan().fail("default.takeSnapshot", kind="no_answer"))
        taken = cloud.take(cloud.volume("xen-nfs"))
        report = cloud.engine.quiesce()
        assert not report.settled
        assert [str(w) for w in report.waiting] == [
            (
                "ms 1: take_snapshot 1 (job 1) waits in AwaitingPrimary for a driver answer that fires PrimaryAnswered;"
                " found before restart"
            )
        ]
        assert report.unanswered == (
            UnansweredCall(
                "default.takeSnapshot#1",
                1,
                "never answered: injected no_answer fault on default.takeSnapshot: the storage never answers",
            ),
        )
        assert taken.status == "FAILED"

    def test_a_thread_blocked_for_good_is_reported(self) -> None:
        """A delete blocked on a deleteAsync that never answers: the run waits on BlockedForEver."""
        cloud = Cloud(faults=FaultPlan().fail("deleteAsync", kind="no_answer"))
        snapshot = cloud.engine.snapshot_of(cloud.take(cloud.volume("xen-nfs")).job_id)
        job = cloud.engine.delete_snapshot(snapshot.id)
        cloud.engine.run()
        report = cloud.engine.quiesce()
        assert [(w.machine, w.state, w.job_id, w.waits_for, w.found) for w in report.waiting] == [
            (
                "delete_snapshot",
                "Deleting",
                job.id,
                "default.deleteAsync, which never answers (the thread blocks for good)",
                BEFORE_RESTART,
            )
        ]
        assert cloud.engine.job_status(job.id) == "FAILED"

    @pytest.mark.violates("usage-matches-objects")
    def test_a_run_stuck_after_the_restart_is_found_at_the_end(self) -> None:
        """The GC's delete of an Error snapshot is never answered: it waits at the end, holding its lock."""
        faults = FaultPlan().fail("default.copyAsync").fail("default.deleteAsync", kind="no_answer")
        cloud = Cloud(faults=faults)
        taken = cloud.take(cloud.volume("xen-nfs"))
        assert cloud.engine.snapshot_of(taken.job_id).status == "Error"
        report = cloud.engine.quiesce()
        assert [(w.machine, w.state, w.found) for w in report.waiting] == [("storage_gc", "Collecting", AT_THE_END)]
        assert report.waiting[0].waits_for.startswith("default.deleteAsync of ")
        assert [c.call for c in report.unanswered] == ["default.deleteAsync#3"]
        assert [lock.name for lock in cloud.engine.store.find(NamedLock)] == ["storagemgr.cleanup"]

    @pytest.mark.violates("answer-matches-state", "counts-match-recount", "usage-matches-objects")
    def test_a_step_that_waits_with_nothing_pending_is_reported(self) -> None:
        """StorageSystem's SECONDARY post-processing blocks on a delete that never answers: the step returns."""
        cloud = Cloud(faults=FaultPlan().fail("managed.deleteAsync", kind="no_answer"))
        engine = cloud.engine
        cluster = engine.add_cluster(cloud.zone, "xen", hypervisor="XenServer", supports_resign=True)
        host = engine.add_host(cluster, "xen-host")
        pool = engine.add_pool(cloud.zone, "sf", pool_type="Iscsi", provider="SolidFire", managed=True, cluster=cluster)
        vm = engine.add_vm(cloud.alice, cloud.zone, "vm", hypervisor="XenServer", host=host)
        volume = engine.add_volume(cloud.alice, pool, "data", size=1 << 30, vm=vm, format="VHD")
        taken = cloud.take(volume, location_type="secondary")
        assert taken.status == "IN_PROGRESS"
        report = engine.quiesce()
        assert [(w.machine, w.state, w.waits_for) for w in report.waiting] == [
            ("take_snapshot", "BackedUp", "nothing: its step returned with no request pending")
        ]
        assert taken.status == "FAILED"


class TestBackgroundTasks:
    """Background tasks reschedule themselves for ever: the cycle is bounded by simulated time."""

    def test_quiescence_ends_with_the_background_tasks_started(self) -> None:
        """Started before: the crash drops them, the start brings them back once; they stay scheduled after."""
        cloud = Cloud()
        engine = cloud.engine
        engine.start_background_tasks()
        report = engine.quiesce()
        assert report.settled
        assert report.tasks_lost == {1: 3}
        assert report.background == BACKGROUND
        periodic = sorted(t.label for t in engine.scheduler.pending() if t.periodic)
        assert periodic == ["SnapshotPollTask", "StorPoolSnapshotRecoveryCheck", "StorageGarbageCollector"]
        assert engine.run() == 0

    def test_the_cycle_runs_what_the_background_tasks_do(self) -> None:
        """An hourly policy's poller takes a snapshot each hour of the cycle; every job ends."""
        cloud = Cloud()
        volume = cloud.volume("xen-nfs")
        cloud.engine.create_snapshot_policy(volume.id, interval="HOURLY", schedule="0", max_snaps=2)
        report = cloud.engine.quiesce()
        assert report.settled
        assert _unfinished_jobs(cloud) == []
        live = cloud.engine.store.find(Snapshot, "removed IS NULL AND status = 'BackedUp'")
        assert len(live) == 2


class TestUnansweredCalls:
    """The calls of the run's record whose answer never reached a callback, and why."""

    def test_each_reason(self) -> None:
        """Delivered calls are left out; never answered, dropped and silent ones each say why."""
        record = RunRecord()
        calls = [record.new_call(f"default.op{i}", ms_id=1) for i in range(4)]
        record.delivered(calls[0], 10)
        record.unanswered(calls[1], "no answer")
        record.delivered(calls[2], 10, dropped=True)
        assert list(unanswered_calls(record)) == [
            UnansweredCall(calls[1], 1, "never answered: no answer"),
            UnansweredCall(calls[2], 1, "dropped: management server 1 crashed before the answer reached it"),
            UnansweredCall(calls[3], 1, "no answer noted: the driver never called back"),
        ]
