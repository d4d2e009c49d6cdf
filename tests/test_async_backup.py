"""Async backup (``asyncbackup=true``): the API job ends at once and ``BackupSnapshotTask`` retries on the clock.

Spec §7.2 (the task, its retries ``backup.retry`` + 1 tries ``backup.retry.interval`` seconds apart, lost on a crash)
and §5.8 (the copy callback: a failed async copy soft-removes the snapshot row; the last failure runs
``cleanupOnSnapshotBackupFailure``), §5.4 step 10-12 (the role forced to Primary, and the counters that do not
balance). The volume is XenServer on NFS: its primary snapshot is copied to the image store by ``copyAsync``, which
takes 30 s; the primary snapshot takes 2 s.
"""

from __future__ import annotations

import json

import pytest
from cloud import PHYSICAL, SIZE, Cloud, Taken
from lifecycle_cloud import answer, delete, details, refs, snapshot, snapshot_log, stored, workflows

from snapshotfsm.describe import snapshot_object_str
from snapshotfsm.drivers.base import FaultKind
from snapshotfsm.faults import FaultPlan
from snapshotfsm.store.records import Failure, SnapshotStoreRef

TAKEN_MS = 2_000
COPY_MS = 30_000
INTERVAL_MS = 300_000


def _faulty(failures: int = 0, kind: FaultKind = "error") -> tuple[Cloud, Taken]:
    faults = FaultPlan().fail("copyAsync", times=failures, kind=kind) if failures else FaultPlan()
    cloud = Cloud(faults=faults)
    return cloud, cloud.take(cloud.volume("xen-nfs"), async_backup=True)


def _task_runs(cloud: Cloud) -> list[int]:
    """When each try started: the backup task entering Running (by Run, then by each Retry)."""
    return [r.at_ms for r in cloud.engine.history(machine="backup_task") if r.dest == "Running"]


def _tries(cloud: Cloud, snapshot_id: int) -> list[int]:
    """When each try started: the BackupToSecondary moves of the snapshot row."""
    rows = cloud.engine.history(snapshot=snapshot_id)
    return [r.at_ms for r in rows if r.event == "BackupToSecondary"]


@pytest.mark.violates("counts-match-recount", "no-negative-count")
class TestApiJob:
    def test_the_job_succeeds_while_the_snapshot_is_backing_up(self):
        """The API job and its work job end as soon as the task is scheduled; the copy is still running."""
        cloud = Cloud()
        taken = cloud.create(cloud.volume("xen-nfs"), async_backup=True)
        cloud.engine.run(until_ms=TAKEN_MS)
        assert taken.status == "SUCCEEDED"
        assert taken.work_state == ("SUCCEEDED", "Done")
        assert '"state":"BackingUp"' in (taken.job.job_result or "")
        assert snapshot(cloud.engine, taken.snapshot.id) == ("BackingUp", False)
        assert refs(cloud.engine, taken.snapshot.id) == [("Primary", "Ready"), ("Image", "Creating")]
        assert details(cloud.engine, taken.snapshot.id) == {"MS_ID": "1"}

    def test_the_backup_finishes_after_the_job(self):
        """The copy answers 30 s later: BackedUp, both refs Ready with their paths, MS_ID removed."""
        cloud, taken = _faulty()
        assert cloud.engine.clock.now_ms == TAKEN_MS + COPY_MS
        sid = taken.snapshot.id
        assert snapshot(cloud.engine, sid) == ("BackedUp", False)
        primary, image = taken.ref("Primary"), taken.ref("Image")
        assert (primary.state, primary.physical_size) == ("Ready", PHYSICAL)
        assert (image.state, image.physical_size) == ("Ready", PHYSICAL)
        assert (
            image.install_path
            == f"snapshots/{taken.snapshot.account_id}/{taken.snapshot.volume_id}/{taken.snapshot.uuid}"
        )
        assert [o.path for o in taken.objects("primary")] == [primary.install_path]
        assert [o.path for o in taken.objects("image")] == [image.install_path]
        assert details(cloud.engine, sid) == {}
        assert stored(cloud.engine, sid) == [("primary", True), ("image", True)]
        assert [(w.state) for w in workflows(cloud.engine, "backup_task")] == ["Done"]

    def test_the_task_moves_are_logged_after_the_job_completed(self):
        """The transition log tells the story: the job completes at 2 s, the task's copy answers at 32 s."""
        cloud, _ = _faulty()
        rows = [(r.machine, r.source, r.event, r.dest, r.at_ms) for r in cloud.engine.history()]
        job_done = rows.index(("async_job", "IN_PROGRESS", "CompleteSucceeded", "SUCCEEDED", TAKEN_MS))
        backed_up = rows.index(("snapshot", "BackingUp", "OperationSucceeded", "BackedUp", TAKEN_MS + COPY_MS))
        assert job_done < backed_up
        task = [(s, e, d) for m, s, e, d, _ in rows if m == "backup_task"]
        assert task == [
            ("", "create", "Scheduled"),
            ("Scheduled", "Run", "Running"),
            ("Running", "Backup", "AwaitingCopy"),
            ("AwaitingCopy", "CopyAnswered", "BackedUp"),
            ("BackedUp", "Finish", "Done"),
        ]


# (copyAsync faults, their kind, try start times, final status, removed, refs, MS_ID kept, task end state, clock at end)
RETRIES = [
    pytest.param(
        0, "error", [2_000], "BackedUp", False, [("Primary", "Ready"), ("Image", "Ready")], False, "Done", 32_000,
        id="first-try",
    ),
    pytest.param(
        1, "error", [2_000, 332_000, 632_000, 932_000], "Error", True, [("Primary", "Ready")], True, "CleanedUp",
        932_000, id="failed-copy-dooms-the-retries",
    ),
    pytest.param(
        9, "error", [2_000, 332_000, 632_000, 932_000], "Error", True, [("Primary", "Ready")], True, "CleanedUp",
        932_000, id="no-fifth-try",
    ),
    pytest.param(
        1, "null_answer", [2_000, 332_000], "BackedUp", False,
        [("Primary", "Ready"), ("Image", "Creating"), ("Image", "Ready")], False, "Done", 362_000,
        id="null-answer-then-success",
    ),
    pytest.param(
        3, "null_answer", [2_000, 332_000, 662_000, 992_000], "BackedUp", False,
        [("Primary", "Ready"), *[("Image", "Creating")] * 3, ("Image", "Ready")], False, "Done", 1_022_000,
        id="success-on-the-last-try",
    ),
    pytest.param(
        4, "null_answer", [2_000, 332_000, 662_000, 992_000], "Error", True,
        [("Primary", "Destroyed"), *[("Image", "Creating")] * 4], False, "CleanedUp", 1_022_000,
        id="all-tries-answer-null",
    ),
]  # fmt: skip


class TestRetries:
    @pytest.mark.violates(
        "answer-matches-state",
        "counts-match-recount",
        "no-negative-count",
        "usage-matches-objects",
        params=["all-tries-answer-null", "failed-copy-dooms-the-retries", "no-fifth-try"],
    )
    @pytest.mark.violates("counts-match-recount", "no-negative-count", params=["first-try"])
    @pytest.mark.violates(
        "counts-match-recount",
        "no-negative-count",
        "no-transitional-state",
        params=["null-answer-then-success", "success-on-the-last-try"],
    )
    @pytest.mark.parametrize(
        ("failures", "kind", "runs", "status", "removed", "ref_states", "ms_id", "task_state", "end_ms"), RETRIES
    )
    def test_outcome_by_failed_copies(
        self, failures, kind, runs, status, removed, ref_states, ms_id, task_state, end_ms
    ):
        """backup.retry=3 gives 4 tries, 300 s after each failure; what the failure was decides whether one can work.

        A failed copy result soft-removes the row, so every later try fails at once (spec §7.2); a null answer
        changes nothing, so a later try can still succeed, leaving the null try's image ref Creating for good.
        """
        cloud, taken = _faulty(failures, kind)
        sid = taken.snapshot.id
        assert taken.status == "SUCCEEDED"
        assert _task_runs(cloud) == runs
        assert snapshot(cloud.engine, sid) == (status, removed)
        assert refs(cloud.engine, sid) == ref_states
        assert details(cloud.engine, sid) == ({"MS_ID": "1"} if ms_id else {})
        assert [w.state for w in workflows(cloud.engine, "backup_task")] == [task_state]
        assert cloud.engine.clock.now_ms == end_ms

    @pytest.mark.violates("answer-matches-state", "counts-match-recount", "no-negative-count", "usage-matches-objects")
    def test_a_failed_async_copy_soft_removes_the_row_at_once(self):
        """After the first failure the row is BackingUp and removed, and its image ref is gone (deleteIfNotReady)."""
        cloud = Cloud(faults=FaultPlan().fail("copyAsync"))
        taken = cloud.create(cloud.volume("xen-nfs"), async_backup=True)
        cloud.engine.run(until_ms=TAKEN_MS + COPY_MS)
        sid = taken.snapshot.id
        assert snapshot(cloud.engine, sid) == ("BackingUp", True)
        assert refs(cloud.engine, sid) == [("Primary", "Ready")]
        assert snapshot_log(cloud.engine, sid)[-2:] == [
            ("event", "CreatedOnPrimary", "BackupToSecondary", "BackingUp"),
            ("remove", "BackingUp", "copySnapshotAsyncCallback (async backup failed)", "BackingUp"),
        ]
        image_log = [
            (r.source, r.event, r.dest, r.kind) for r in cloud.engine.history(machine="snapshot_store_ref", entity_id=2)
        ]
        assert image_log[-2:] == [
            ("Creating", "OperationFailed", "Allocated", "event"),
            ("Allocated", "SnapshotObject.deleteIfNotReady", "", "delete"),
        ]

    @pytest.mark.violates("answer-matches-state", "counts-match-recount", "no-negative-count", "usage-matches-objects")
    def test_the_retry_on_the_removed_row_fails_before_its_copy(self):
        """The second try moves BackingUp to BackingUp, then the image ref's install path needs the removed row: the
        NullPointerException fails the snapshot (Error) and no image ref is inserted; tries 3 and 4 cannot move it.
        """
        cloud, taken = _faulty(1, "error")
        sid = taken.snapshot.id
        assert snapshot_log(cloud.engine, sid)[-3:] == [
            ("remove", "BackingUp", "copySnapshotAsyncCallback (async backup failed)", "BackingUp"),
            ("event", "BackingUp", "BackupToSecondary", "BackingUp"),
            ("event", "BackingUp", "OperationFailed", "Error"),
        ]
        created = [r for r in cloud.engine.history(machine="snapshot_store_ref") if r.event == "create"]
        assert len(created) == 2
        failures = [f.message for f in cloud.engine.store.find(Failure, "machine = 'backup_task'")]
        assert len(failures) == 4
        assert "SnapshotDao.findById(Object)" in failures[1] and "NullPointerException" in failures[1]

    @pytest.mark.violates("answer-matches-state", "counts-match-recount", "no-negative-count", "usage-matches-objects")
    def test_the_cleanup_after_a_failed_copy_fails_and_changes_nothing(self):
        """cleanupOnSnapshotBackupFailure finds the row in Error: its transaction rolls back.

        The primary ref stays Ready with its file, MS_ID stays, the counters keep what the take charged, and the
        row is left for the next restart (MS_ID pass) and the storage GC (Error snapshots).
        """
        cloud, taken = _faulty(4, "error")
        sid = taken.snapshot.id
        assert snapshot_log(cloud.engine, sid)[-1] == ("event", "BackingUp", "OperationFailed", "Error")
        assert stored(cloud.engine, sid) == [("primary", True)]
        assert details(cloud.engine, sid) == {"MS_ID": "1"}
        assert cloud.counts() == {"snapshot": 1, "primary_storage": -(SIZE - PHYSICAL), "secondary_storage": SIZE}

    @pytest.mark.violates("answer-matches-state", "counts-match-recount", "no-negative-count", "usage-matches-objects")
    def test_the_failed_cleanup_names_the_snapshot_object(self):
        """The refused Snapshot event is rethrown as "Failed to backup snapshot" + ``SnapshotObject.toString``."""
        cloud, taken = _faulty(4, "error")
        task = workflows(cloud.engine, "backup_task")[0]
        failed = json.loads(task.context)["cleanup_failed"]
        text = snapshot_object_str(taken.snapshot, taken.volume.pool_id)
        assert failed == f"Failed to backup snapshot{text}"
        assert '"state":"Error"' in failed

    @pytest.mark.violates("answer-matches-state", "counts-match-recount", "no-negative-count", "usage-matches-objects")
    def test_a_snapshot_that_fails_its_copy_cannot_be_deleted(self):
        """The removed row is invisible to deleteSnapshot: 431 and the primary copy stays on storage."""
        cloud, taken = _faulty(1, "error")
        sid = taken.snapshot.id
        assert delete(cloud, sid) == ("FAILED", 431, f"unable to find a snapshot with id {sid}")
        assert stored(cloud.engine, sid) == [("primary", True)]

    @pytest.mark.violates("answer-matches-state", "counts-match-recount", "no-negative-count", "usage-matches-objects")
    def test_after_the_last_null_answer_cleanup_on_backup_failure_runs(self):
        """cleanupOnSnapshotBackupFailure: primary ref Destroyed, snapshot Error and removed, MS_ID removed."""
        # Nothing is deleted on storage, and the counters keep what the take left.
        cloud, taken = _faulty(4, "null_answer")
        sid = taken.snapshot.id
        primary_log = [
            (r.source, r.event, r.dest) for r in cloud.engine.history(machine="snapshot_store_ref", entity_id=1)
        ]
        assert primary_log[-2:] == [
            ("Ready", "DestroyRequested", "Destroying"),
            ("Destroying", "OperationSucceeded", "Destroyed"),
        ]
        assert snapshot_log(cloud.engine, sid)[-2:] == [
            ("event", "BackingUp", "OperationFailed", "Error"),
            ("remove", "Error", "cleanupOnSnapshotBackupFailure", "Error"),
        ]
        assert stored(cloud.engine, sid) == [("primary", True)]
        assert details(cloud.engine, sid) == {}
        assert cloud.counts() == {"snapshot": 1, "primary_storage": -(SIZE - PHYSICAL), "secondary_storage": SIZE}


class TestAccounting:
    @pytest.mark.violates("counts-match-recount", "no-negative-count", params=["async"])
    @pytest.mark.parametrize(
        ("async_backup", "expected"),
        [
            pytest.param(False, {"snapshot": 1, "primary_storage": 0, "secondary_storage": PHYSICAL}, id="sync"),
            pytest.param(
                True,
                {"snapshot": 1, "primary_storage": -(SIZE - PHYSICAL), "secondary_storage": SIZE},
                id="async",
            ),
        ],
    )
    def test_the_role_forced_to_primary_unbalances_the_counters(self, async_backup, expected):
        """Spec §5.4 accounting note: async corrects primary_storage, though allocation charged secondary_storage."""
        cloud = Cloud()
        taken = cloud.take(cloud.volume("xen-nfs"), async_backup=async_backup)
        assert taken.snapshot.status == "BackedUp"
        assert cloud.counts() == expected
        assert taken.usage() == [("SNAPSHOT.ON_PRIMARY", SIZE, SIZE), ("SNAPSHOT.CREATE", PHYSICAL, SIZE)]


class TestConfig:
    @pytest.mark.violates("answer-matches-state", "counts-match-recount", "no-negative-count", "usage-matches-objects")
    @pytest.mark.parametrize(("retry", "tries"), [(0, 1), (1, 2), (5, 6)])
    def test_backup_retry_is_read_at_start(self, retry, tries):
        """backup.retry takes effect after a restart: backup.retry + 1 tries, then the cleanup."""
        cloud = Cloud(faults=FaultPlan().fail("copyAsync", times=99))
        cloud.engine.set_config("backup.retry", retry)
        cloud.engine.restart()
        taken = cloud.take(cloud.volume("xen-nfs"), async_backup=True)
        assert len(_task_runs(cloud)) == tries
        assert snapshot(cloud.engine, taken.snapshot.id) == ("Error", True)

    @pytest.mark.violates("answer-matches-state", "counts-match-recount", "no-negative-count", "usage-matches-objects")
    def test_backup_retry_changed_without_a_restart_changes_nothing(self):
        """The running server keeps the value it read at start: still 4 tries."""
        cloud = Cloud(faults=FaultPlan().fail("copyAsync", times=99))
        cloud.engine.set_config("backup.retry", 0)
        cloud.take(cloud.volume("xen-nfs"), async_backup=True)
        assert len(_task_runs(cloud)) == 4

    @pytest.mark.violates("counts-match-recount", "no-negative-count", "no-transitional-state")
    def test_backup_retry_interval_is_read_at_start(self):
        """backup.retry.interval=60 after a restart: each retry starts 60 s after the null copy answer."""
        cloud = Cloud(faults=FaultPlan().fail("copyAsync", times=2, kind="null_answer"))
        cloud.engine.set_config("backup.retry.interval", 60)
        cloud.engine.restart()
        taken = cloud.take(cloud.volume("xen-nfs"), async_backup=True)
        assert _tries(cloud, taken.snapshot.id) == [
            TAKEN_MS,
            TAKEN_MS + COPY_MS + 60_000,
            TAKEN_MS + 2 * (COPY_MS + 60_000),
        ]
        assert snapshot(cloud.engine, taken.snapshot.id) == ("BackedUp", False)


@pytest.mark.violates("counts-match-recount", "no-negative-count", "no-transitional-state")
def test_each_try_inserts_an_image_ref_again():
    """Each try inserts an image ref; those a null answer left stay Creating beside the one that succeeded."""
    cloud, taken = _faulty(2, "null_answer")
    rows = cloud.engine.store.find(SnapshotStoreRef, "snapshot_id = ?", (taken.snapshot.id,))
    assert [(r.store_role, r.state) for r in rows] == [
        ("Primary", "Ready"),
        ("Image", "Creating"),
        ("Image", "Creating"),
        ("Image", "Ready"),
    ]
    created = [
        r for r in cloud.engine.history(machine="snapshot_store_ref") if r.event == "create" and r.entity_id != 1
    ]
    assert len(created) == 3
    assert answer(cloud.engine, taken.job_id)[0] == "SUCCEEDED"
