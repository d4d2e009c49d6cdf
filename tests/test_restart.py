"""A management server crashes mid-way and starts again: what its start-up cleanup leaves (spec §10).

The crash rule of the fault plan takes the server down just before the named event's step runs. What the server held
in memory (the take job's thread, the async backup task, pending answers) is lost; the database and the storage
(``sim_object``) keep what was written. ``restart()`` then runs ``cleanupLeftOverJobs`` (left-over jobs FAILED 530,
``cleanupSnapshot`` by state), ``cleanupFailedSnapshotsCreatedWithDefaultStrategy`` (OperationFailed on snapshots
carrying this server's MS_ID detail), ``expungeLeftoverWorkJobs``, and the rest of §10.
"""

from __future__ import annotations

import attrs
import pytest
from cloud import PHYSICAL, SIZE, Cloud, action_events
from lifecycle_cloud import CANCELLED, answer, counts, details, jobs, refs, snapshot, snapshot_log, stored, work_jobs

from snapshotfsm.engine import Engine
from snapshotfsm.errors import ServerDown
from snapshotfsm.faults import FaultPlan
from snapshotfsm.profiles import Profile
from snapshotfsm.store.records import ManagementServer, OpLock, Snapshot, TransitionLog, Volume

LEAKED = {"snapshot": 1, "primary_storage": 0, "secondary_storage": SIZE}
"""What allocation charged: nothing gave it back, because the take's outer catch died with the server."""
CORRECTED = {"snapshot": 1, "primary_storage": 0, "secondary_storage": PHYSICAL}
"""After post-processing's correction (spec §5.4 step 12), as a take that completed leaves it."""
PRIMARY = ("Primary", "Ready")


@attrs.frozen
class After:
    """Where a crash at one event leaves things once the server has restarted."""

    status: str
    removed: bool = False
    volume: str = "Ready"
    refs: tuple[tuple[str, str], ...] = ()
    stored: tuple[tuple[str, bool], ...] = ()
    counts: dict[str, int] = attrs.field(factory=lambda: dict(LEAKED))


NOT_STARTED = After("Allocated", removed=True)
SNAPSHOTTING = After("Allocated", removed=True, volume="Snapshotting")
TAKING = After("Error", stored=(("primary", True),))
ON_PRIMARY = After("CreatedOnPrimary", refs=(PRIMARY,), stored=(("primary", True),))
BACKING_UP = After("Error", refs=(PRIMARY, ("Image", "Creating")), stored=(("primary", True), ("image", True)))
BACKED_UP = After("BackedUp", refs=(PRIMARY, ("Image", "Ready")), stored=(("primary", True), ("image", True)))
DONE = attrs.evolve(BACKED_UP, counts=dict(CORRECTED))

# event of states/take_snapshot.toml -> (what is left, MS_ID detail to clean, work job still running)
ATTACHED = {
    "Execute": (NOT_STARTED, 0, False),
    "Enqueue": (NOT_STARTED, 0, False),
    "Dispatch": (NOT_STARTED, 0, True),
    "Orchestrate": (NOT_STARTED, 0, True),
    "Prepare": (NOT_STARTED, 0, True),
    "ChooseStrategy": (NOT_STARTED, 0, True),
    "BeginTake": (NOT_STARTED, 0, True),
    "RequestPrimary": (SNAPSHOTTING, 0, True),
    "PrimaryAnswered": (TAKING, 0, True),
    "BackUp": (ON_PRIMARY, 1, True),
    "Copy": (ON_PRIMARY, 1, True),
    "BackupAnswered": (BACKING_UP, 1, True),
    "PostProcess": (BACKED_UP, 0, True),
    "Retained": (BACKED_UP, 0, True),
    "CompleteWork": (DONE, 0, True),
    "Complete": (DONE, 0, False),
}
DETACHED = {
    "Execute": (NOT_STARTED, 0, False),
    "RunDirect": (NOT_STARTED, 0, False),
    "Prepare": (NOT_STARTED, 0, False),
    "ChooseStrategy": (NOT_STARTED, 0, False),
    "BeginTake": (NOT_STARTED, 0, False),
    "RequestPrimary": (SNAPSHOTTING, 0, False),
    "PrimaryAnswered": (TAKING, 0, False),
    "BackUp": (ON_PRIMARY, 1, False),
    "Copy": (ON_PRIMARY, 1, False),
    "BackupAnswered": (BACKING_UP, 1, False),
    "PostProcess": (BACKED_UP, 0, False),
    "Retained": (BACKED_UP, 0, False),
    "Complete": (DONE, 0, False),
}


NOTHING = {"snapshot": 0, "primary_storage": 0, "secondary_storage": 0}
# crash point in the create phase -> (the snapshot row's status, alice's counts, SNAPSHOT.CREATE event states)
CREATE_PHASE_CRASHES = {
    "take_snapshot.Allocate": (None, NOTHING, []),
    "api.allocate#1": (None, NOTHING, []),
    "api.allocate#2": ("Allocated", NOTHING, []),
    "api.allocate#3": ("Allocated", {**NOTHING, "snapshot": 1}, []),
    "api.allocate#4": ("Allocated", LEAKED, []),
    "take_snapshot.Submit": ("Allocated", LEAKED, ["Created"]),
    "jobs.submit#1": ("Allocated", LEAKED, ["Created"]),
    "jobs.submit#2": ("Allocated", LEAKED, ["Created", "Scheduled"]),
}
"""Before the insert; between the insert and the first increment; between the increments (each its own
transaction); before the Created event; before the Scheduled event; before the job insert."""


def _fired(attached: bool) -> list[str]:
    """The events a happy take fires, after the create phase (Allocate, Submit)."""
    cloud = Cloud()
    cloud.take(cloud.volume("xen-nfs", vm=attached))
    events = [r.event for r in cloud.engine.history(machine="take_snapshot")]
    return [e for e in events if e not in ("create", "Allocate", "Submit")]


def _crash_and_restart(at: str, *, attached: bool = True, **take: object) -> tuple[Cloud, object, dict[str, int]]:
    cloud = Cloud(faults=FaultPlan().crash(at))
    taken = cloud.take(cloud.volume("xen-nfs", vm=attached), **take)
    assert cloud.engine.crashes == [at]
    assert cloud.engine.down
    report = cloud.engine.restart()
    cloud.engine.run()
    return cloud, taken, report


class TestTakeCrash:
    @pytest.mark.parametrize(("attached", "table"), [(True, ATTACHED), (False, DETACHED)], ids=["attached", "detached"])
    def test_the_tables_cover_every_event_a_happy_take_fires(self, attached, table):
        """Each table row is an event a happy take fires, and each such event has a row."""
        assert _fired(attached) == list(table)

    @pytest.mark.violates("answer-matches-state", params=["Complete", "CompleteWork"])
    @pytest.mark.violates(
        "answer-matches-state", "counts-match-recount", params=["BackUp", "Copy", "PostProcess", "Retained"]
    )
    @pytest.mark.violates(
        "counts-match-recount",
        params=["BeginTake", "ChooseStrategy", "Dispatch", "Enqueue", "Execute", "Orchestrate", "Prepare"],
    )
    @pytest.mark.violates("counts-match-recount", "no-orphan-object", params=["PrimaryAnswered"])
    @pytest.mark.violates(
        "counts-match-recount", "no-orphan-object", "usage-matches-objects", params=["BackupAnswered"]
    )
    @pytest.mark.violates("counts-match-recount", "no-transitional-state", params=["RequestPrimary"])
    @pytest.mark.parametrize(("event", "expected"), list(ATTACHED.items()), ids=list(ATTACHED))
    def test_attached(self, event, expected):
        """Crash before the event's step, restart: the final state of spec §10 for that point of the take."""
        self._check(event, expected, attached=True)

    @pytest.mark.violates("answer-matches-state", params=["Complete"])
    @pytest.mark.violates(
        "answer-matches-state", "counts-match-recount", params=["BackUp", "Copy", "PostProcess", "Retained"]
    )
    @pytest.mark.violates(
        "counts-match-recount", params=["BeginTake", "ChooseStrategy", "Execute", "Prepare", "RunDirect"]
    )
    @pytest.mark.violates("counts-match-recount", "no-orphan-object", params=["PrimaryAnswered"])
    @pytest.mark.violates(
        "counts-match-recount", "no-orphan-object", "usage-matches-objects", params=["BackupAnswered"]
    )
    @pytest.mark.violates("counts-match-recount", "no-transitional-state", params=["RequestPrimary"])
    @pytest.mark.parametrize(("event", "expected"), list(DETACHED.items()), ids=list(DETACHED))
    def test_detached(self, event, expected):
        """The detached path (no work job) leaves the same states at the same points."""
        self._check(event, expected, attached=False)

    @staticmethod
    def _check(event, expected, *, attached):
        after, ms_ids, work_running = expected
        cloud, taken, report = _crash_and_restart(f"take_snapshot.{event}", attached=attached)
        sid = taken.snapshot.id
        assert snapshot(cloud.engine, sid) == (after.status, after.removed)
        assert taken.volume.state == after.volume
        assert tuple(refs(cloud.engine, sid)) == after.refs
        assert tuple(stored(cloud.engine, sid)) == after.stored
        assert details(cloud.engine, sid) == {}
        assert cloud.counts() == after.counts
        assert answer(cloud.engine, taken.job_id) == ("FAILED", 530, CANCELLED)
        assert jobs(cloud.engine) == [("CreateSnapshotCmd", "FAILED", 530)]
        assert work_jobs(cloud.engine) == []
        assert cloud.engine.store.count(OpLock) == 0
        assert report["jobs_failed"] == (2 if work_running else 1)
        assert report["ms_id_details"] == ms_ids
        assert report["work_jobs_expunged"] == (1 if attached and event not in ("Execute", "Enqueue") else 0)

    @pytest.mark.violates("counts-match-recount", "no-orphan-object")
    def test_creating_goes_to_error_through_update_operation_failed(self):
        """cleanupSnapshot of a Creating snapshot: volume, snapshot and ref each get OperationFailed; the ref goes."""
        cloud = Cloud(faults=FaultPlan().crash("take_snapshot.PrimaryAnswered"))
        taken = cloud.take(cloud.volume("xen-nfs"))
        assert (taken.snapshot.status, taken.volume.state) == ("Creating", "Snapshotting")
        assert refs(cloud.engine, taken.snapshot.id) == [("Primary", "Creating")]
        mark = cloud.engine.store.count(TransitionLog)
        cloud.engine.restart()
        moves = [
            (r.machine, r.source, r.event, r.dest)
            for r in cloud.engine.store.find(
                TransitionLog, "id > ? AND machine IN ('volume', 'snapshot', 'snapshot_store_ref')", (mark,)
            )
        ]
        assert moves == [
            ("volume", "Snapshotting", "OperationFailed", "Ready"),
            ("snapshot", "Creating", "OperationFailed", "Error"),
            ("snapshot_store_ref", "Creating", "OperationFailed", "Allocated"),
            ("snapshot_store_ref", "Allocated", "SnapshotObject.deleteIfNotReady", ""),
        ]

    @pytest.mark.violates("answer-matches-state", "counts-match-recount")
    def test_created_on_primary_has_no_operation_failed(self):
        """The MS_ID cleanup's OperationFailed is refused on CreatedOnPrimary: only the detail goes."""
        cloud = Cloud(faults=FaultPlan().crash("take_snapshot.BackUp"))
        taken = cloud.take(cloud.volume("xen-nfs"))
        sid = taken.snapshot.id
        assert details(cloud.engine, sid) == {"MS_ID": "1"}
        mark = cloud.engine.store.count(TransitionLog)
        cloud.engine.restart()
        assert snapshot_log(cloud.engine, sid, since=mark) == []
        assert snapshot(cloud.engine, sid) == ("CreatedOnPrimary", False)
        assert details(cloud.engine, sid) == {}

    @pytest.mark.violates(
        "counts-match-recount",
        params=["api.allocate#2", "api.allocate#4", "jobs.submit#1", "jobs.submit#2", "take_snapshot.Submit"],
    )
    @pytest.mark.parametrize(("at", "expected"), list(CREATE_PHASE_CRASHES.items()), ids=list(CREATE_PHASE_CRASHES))
    def test_a_crash_in_the_create_phase_keeps_what_was_committed(self, at, expected):
        """allocSnapshot has no transaction (spec §21.2): each write up to the crash stays, through the restart.

        The insert, each increment (its own transaction) and the Created event commit one by one; the job insert
        (``submitAsyncJob``) is one more. With no job, no restart cleanup looks at an Allocated row (spec §21.4.3).
        """
        status, counted, events = expected
        cloud = Cloud(faults=FaultPlan().crash(at))
        volume = cloud.volume("xen-nfs")
        with pytest.raises(ServerDown, match=f"management server 1 crashed at {at}"):
            cloud.engine.create_snapshot(volume.id)
        assert (cloud.engine.down, cloud.engine.crashes) == (True, [at])
        for _ in ("crashed", "restarted"):
            assert [s.status for s in cloud.engine.store.find(Snapshot)] == ([status] if status else [])
            assert cloud.counts() == counted
            assert [e[0] for e in action_events(cloud.engine, "SNAPSHOT.CREATE")] == events
            assert jobs(cloud.engine) == []
            report = cloud.engine.restart()
            assert report["jobs_failed"] == 0
            cloud.engine.run()

    @pytest.mark.violates("counts-match-recount")
    def test_a_crash_after_the_job_insert_leaves_the_job(self):
        """The other side of ``submitAsyncJob``: the job is IN_PROGRESS until the restart fails it."""
        cloud = Cloud(faults=FaultPlan().crash("take_snapshot.Execute"))
        volume = cloud.volume("xen-nfs")
        job = cloud.engine.create_snapshot(volume.id)
        cloud.engine.run()
        assert cloud.engine.crashes == ["take_snapshot.Execute"]
        assert jobs(cloud.engine) == [("CreateSnapshotCmd", "IN_PROGRESS", 0)]
        assert [e[0] for e in action_events(cloud.engine, "SNAPSHOT.CREATE")] == ["Created", "Scheduled"]
        cloud.engine.restart()
        assert answer(cloud.engine, job.id) == ("FAILED", 530, CANCELLED)

    @pytest.mark.violates("counts-match-recount")
    def test_a_crashed_server_takes_no_calls(self):
        """Until it restarts, the crashed server refuses API calls."""
        cloud = Cloud(faults=FaultPlan().crash("take_snapshot.Execute"))
        volume = cloud.volume("xen-nfs")
        cloud.take(volume)
        with pytest.raises(ServerDown, match="management server 1 is down"):
            cloud.engine.create_snapshot(volume.id)
        cloud.engine.restart()
        assert cloud.take(volume).status == "SUCCEEDED"


# crash point -> (asyncbackup, copyAsync failures, before: status/removed, after: status/removed, refs, storage, job)
BACKUP_PHASES = [
    pytest.param(
        "backup_task.Run",
        True,
        0,
        ("CreatedOnPrimary", False),
        ("CreatedOnPrimary", False),
        [PRIMARY],
        [("primary", True)],
        ("FAILED", 530, CANCELLED),
        id="task-run",
    ),
    pytest.param(
        "backup_task.CopyAnswered",
        True,
        0,
        ("BackingUp", False),
        ("Error", False),
        [PRIMARY, ("Image", "Creating")],
        [("primary", True), ("image", True)],
        "SUCCEEDED",
        id="task-copy-answered",
    ),
    pytest.param(
        "backup_task.Retry",
        True,
        1,
        ("BackingUp", True),
        ("BackingUp", True),
        [PRIMARY],
        [("primary", True)],
        "SUCCEEDED",
        id="task-retry",
    ),
    pytest.param(
        "take_snapshot.BackupAnswered",
        False,
        0,
        ("BackingUp", False),
        ("Error", False),
        [PRIMARY, ("Image", "Creating")],
        [("primary", True), ("image", True)],
        ("FAILED", 530, CANCELLED),
        id="sync-backup-answered",
    ),
]


class TestBackupCrash:
    @pytest.mark.violates("answer-matches-state", "counts-match-recount", "no-negative-count", params=["task-run"])
    @pytest.mark.violates(
        "answer-matches-state",
        "counts-match-recount",
        "no-negative-count",
        "no-orphan-object",
        "no-transitional-state",
        params=["task-retry"],
    )
    @pytest.mark.violates(
        "answer-matches-state",
        "counts-match-recount",
        "no-negative-count",
        "no-orphan-object",
        "usage-matches-objects",
        params=["task-copy-answered"],
    )
    @pytest.mark.violates(
        "counts-match-recount", "no-orphan-object", "usage-matches-objects", params=["sync-backup-answered"]
    )
    @pytest.mark.parametrize(
        ("at", "async_backup", "failures", "before", "after", "ref_states", "storage", "job"), BACKUP_PHASES
    )
    def test_the_backup_is_lost_and_ms_id_cleans_up(
        self, at, async_backup, failures, before, after, ref_states, storage, job
    ):
        """The task (or the job's thread) is gone; OperationFailed via MS_ID moves only a live BackingUp row."""
        # The task does not come back after the restart: nothing is pending, nothing retries.
        faults = FaultPlan().crash(at)
        if failures:
            faults.fail("copyAsync", times=failures)
        cloud = Cloud(faults=faults)
        taken = cloud.take(cloud.volume("xen-nfs"), async_backup=async_backup)
        sid = taken.snapshot.id
        assert cloud.engine.crashes == [at]
        assert snapshot(cloud.engine, sid) == before
        assert details(cloud.engine, sid) == {"MS_ID": "1"}
        report = cloud.engine.restart()
        cloud.engine.run()
        assert report["ms_id_details"] == 1
        assert snapshot(cloud.engine, sid) == after
        assert details(cloud.engine, sid) == {}
        assert refs(cloud.engine, sid) == ref_states
        assert stored(cloud.engine, sid) == storage
        if isinstance(job, tuple):
            assert answer(cloud.engine, taken.job_id) == job
        else:
            assert answer(cloud.engine, taken.job_id)[0] == job
        assert cloud.engine.scheduler.pending() == []
        assert work_jobs(cloud.engine) == []

    def test_backed_up_with_backup_off_keeps_its_state(self):
        """Backup off leaves MS_ID behind on a BackedUp snapshot; the restart only removes the detail."""
        cloud = Cloud(config={"snapshot.backup.to.secondary": False})
        taken = cloud.take(cloud.volume("xen-nfs"))
        sid = taken.snapshot.id
        assert details(cloud.engine, sid) == {"MS_ID": "1"}
        mark = cloud.engine.store.count(TransitionLog)
        assert cloud.engine.restart()["ms_id_details"] == 1
        assert snapshot_log(cloud.engine, sid, since=mark) == []
        assert snapshot(cloud.engine, sid) == ("BackedUp", False)
        assert details(cloud.engine, sid) == {}


class TestPeers:
    @staticmethod
    def _two_servers(profile: str | Profile) -> tuple[Cloud, Engine, object, object]:
        cloud = Cloud(faults=FaultPlan().crash("take_snapshot.PrimaryAnswered", ms_id=1), profile=profile)
        ms2 = cloud.engine.peer(2)
        mine = cloud.create(cloud.volume("xen-nfs"))
        theirs_volume = cloud.volume("xen-nfs")
        job2 = ms2.create_snapshot(theirs_volume.id)
        cloud.engine.run(until_ms=2_000)
        return cloud, ms2, mine, job2

    @pytest.mark.violates("counts-match-recount", "no-orphan-object")
    def test_ms1_crashes_mid_take_while_ms2_goes_on(self):
        """The crash takes down server 1 only; server 2's snapshot is taken on the same clock and storage."""
        cloud, ms2, mine, job2 = self._two_servers("cloudstack")
        assert cloud.engine.down
        assert not ms2.down
        assert (mine.snapshot.status, mine.volume.state) == ("Creating", "Snapshotting")
        ms2.run()
        assert ms2.job_status(job2.id) == "SUCCEEDED"
        assert ms2.get(Snapshot, job2.instance_id).status == "BackedUp"
        assert mine.status == "IN_PROGRESS"

    @pytest.mark.violates("counts-match-recount", "no-orphan-object")
    def test_node_left_cleans_the_peers_jobs(self):
        """spec §10.1: server 2 fails server 1's jobs and fails its Creating snapshot; its own job goes on."""
        cloud, ms2, mine, job2 = self._two_servers("cloudstack")
        assert ms2.job_status(job2.id) == "IN_PROGRESS"
        assert ms2.on_management_node_left(1) == {"locks_released": 1, "jobs_failed": 2, "ms_id_details": 0}
        rows = {r.msid: r.state for r in cloud.engine.store.find(ManagementServer)}
        assert rows == {1: "Down", 2: "Up"}
        assert answer(cloud.engine, mine.job_id) == ("FAILED", 530, CANCELLED)
        assert (mine.snapshot.status, mine.volume.state) == ("Error", "Ready")
        assert ms2.job_status(job2.id) == "IN_PROGRESS"
        ms2.run()
        assert ms2.job_status(job2.id) == "SUCCEEDED"
        assert ms2.get(Snapshot, job2.instance_id).status == "BackedUp"
        assert ms2.get(Volume, ms2.get(Snapshot, job2.instance_id).volume_id).state == "Ready"

    @pytest.mark.violates("counts-match-recount", "no-orphan-object")
    def test_without_peer_cleanup_the_jobs_wait_for_their_servers_restart(self):
        """The code as read at U (job manager never a listener): no job is cleaned until server 1 restarts.

        The lock controller's listener is another one (spec §21.1): server 1's ``snapshots<id>`` lock goes at once.
        """
        cloud, ms2, mine, job2 = self._two_servers(Profile("cloudstack", peer_cleanup_on_node_left=False))
        assert [(lock.key, lock.ms_id) for lock in cloud.engine.store.find(OpLock)] == [
            (f"snapshots{mine.snapshot.id}", 1)
        ]
        assert ms2.on_management_node_left(1) == {"locks_released": 1, "jobs_failed": 0, "ms_id_details": 0}
        assert cloud.engine.store.count(OpLock) == 0
        assert mine.status == "IN_PROGRESS"
        assert (mine.snapshot.status, mine.volume.state) == ("Creating", "Snapshotting")
        cloud.engine.restart()
        cloud.engine.run()
        assert answer(cloud.engine, mine.job_id) == ("FAILED", 530, CANCELLED)
        assert (mine.snapshot.status, mine.volume.state) == ("Error", "Ready")
        assert ms2.job_status(job2.id) == "SUCCEEDED"

    def test_a_peer_refuses_to_clean_up_after_itself(self):
        """on_management_node_left names another server; a server's own cleanup is restart()."""
        cloud = Cloud()
        with pytest.raises(TypeError, match="ms_id must be another management server's id"):
            cloud.engine.on_management_node_left(1)


@pytest.mark.violates("counts-match-recount", "no-orphan-object")
def test_counters_left_by_a_crash_stay_after_the_restart():
    """A crash between allocation and the end of the take never gives the allocation back (spec §10, §5.4 step 14)."""
    cloud, taken, _ = _crash_and_restart("take_snapshot.PrimaryAnswered")
    assert counts(cloud.engine, taken.snapshot.account_id) == LEAKED
    assert cloud.engine.get(Snapshot, taken.snapshot.id).status == "Error"
