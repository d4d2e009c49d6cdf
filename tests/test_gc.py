"""The storage garbage collector's snapshot work (spec §10.5, ``StorageManagerImpl.cleanupStorage``).

In order: store refs left Destroying are deleted again (``cleanupSnapshotsFromStoreRefInDestroyingState``);
Destroyed image refs without a live child are dropped, with the snapshot's Destroyed primary ref, and the snapshot
row is soft-removed with its last image ref (``cleanupSecondaryStorage``); snapshots in Error, removed ones included,
have every ref deleted on storage and expunged, then the row itself is expunged (``removeSnapshotsInErrorStatus``).
"""

from __future__ import annotations

import pytest
from cloud import Cloud
from lifecycle_cloud import delete, refs, second_zone, snapshot, stored, workflows

from snapshotfsm.faults import FaultPlan
from snapshotfsm.store.records import NamedLock, OpLock, Snapshot, SnapshotStoreRef, TransitionLog

DAY_MS = 86_400_000


def _collect(cloud: Cloud) -> list[tuple[str, str, str, str]]:
    """One GC pass, run to its end; the transitions it made: (machine, kind, source, event)."""
    mark = cloud.engine.store.count(TransitionLog)
    cloud.engine.collect_garbage()
    cloud.engine.run()
    rows = cloud.engine.store.find(TransitionLog, "id > ? AND machine IN ('snapshot', 'snapshot_store_ref')", (mark,))
    return [(r.machine, r.kind, r.source, r.event) for r in rows]


def _destroying_ref(cloud: Cloud) -> int:
    """A managed-storage delete whose array delete failed: the ref stays Destroying, committed (no transaction).

    StorageSystemSnapshotStrategy's delete writes each step on its own (spec §21.2); the snapshot goes back to
    BackedUp and the delete returns false. (A Default delete rolls the same failure back: nothing is left.)
    """
    sid = cloud.take(cloud.volume("solidfire")).snapshot.id
    assert delete(cloud, sid) == ("FAILED", 530, "Failed to delete Snapshot")
    assert refs(cloud.engine, sid) == [("Primary", "Destroying")]
    return sid


class TestDestroyingRefs:
    @pytest.mark.violates("answer-matches-state", "counts-match-recount", "usage-matches-objects")
    def test_a_destroying_ref_is_deleted_again(self):
        """The primary ref a failed delete left Destroying is deleted on storage and becomes Destroyed."""
        cloud = Cloud(faults=FaultPlan().fail("managed.deleteAsync"))
        sid = _destroying_ref(cloud)
        moves = _collect(cloud)
        assert moves == [
            ("snapshot_store_ref", "event", "Destroying", "DestroyRequested"),
            ("snapshot_store_ref", "event", "Destroying", "OperationSucceeded"),
        ]
        assert refs(cloud.engine, sid) == [("Primary", "Destroyed")]
        assert stored(cloud.engine, sid) == [("primary", False)]
        assert snapshot(cloud.engine, sid) == ("BackedUp", False)

    @pytest.mark.violates("answer-matches-state", "counts-match-recount", "usage-matches-objects")
    def test_a_failing_retry_is_only_logged(self):
        """The driver fails again: the ref stays Destroying, committed; the pass ends, the lock is released."""
        cloud = Cloud(faults=FaultPlan().fail("managed.deleteAsync", times=2))
        sid = _destroying_ref(cloud)
        _collect(cloud)
        assert refs(cloud.engine, sid) == [("Primary", "Destroying")]
        assert stored(cloud.engine, sid) == [("primary", True)]
        assert cloud.engine.store.count(NamedLock) == 0
        _collect(cloud)
        assert refs(cloud.engine, sid) == [("Primary", "Destroyed")]

    def test_a_default_delete_that_failed_leaves_it_nothing_to_do(self):
        """A failed Default delete was rolled back (spec §21.4.1): no ref is Destroying, the pass deletes nothing."""
        cloud = Cloud(faults=FaultPlan().fail("default.deleteAsync"))
        sid = cloud.take(cloud.volume("xen-nfs")).snapshot.id
        delete(cloud, sid)
        assert _collect(cloud) == []
        assert refs(cloud.engine, sid) == [("Primary", "Ready"), ("Image", "Ready")]


class TestDestroyedImageRefs:
    def test_the_refs_of_a_deleted_snapshot_are_dropped_and_the_row_removed(self):
        """After a delete: both Destroyed refs' rows go, and the Destroyed snapshot is soft-removed."""
        cloud = Cloud()
        sid = cloud.take(cloud.volume("xen-nfs")).snapshot.id
        delete(cloud, sid)
        moves = _collect(cloud)
        assert moves == [
            ("snapshot", "remove", "Destroyed", "StorageManagerImpl.cleanupSecondaryStorage"),
            ("snapshot_store_ref", "delete", "Destroyed", "StorageManagerImpl.cleanupSecondaryStorage"),
            ("snapshot_store_ref", "delete", "Destroyed", "StorageManagerImpl.cleanupSecondaryStorage"),
        ]
        assert refs(cloud.engine, sid) == []
        assert snapshot(cloud.engine, sid) == ("Destroyed", True)

    @pytest.mark.violates("counts-match-recount")
    def test_the_row_is_removed_with_the_last_image_ref(self):
        """Two zones: the first Destroyed image ref goes alone; the row is removed with the second."""
        cloud = Cloud()
        zone2 = second_zone(cloud)
        sid = cloud.take(cloud.volume("xen-nfs"), zone_ids=[zone2.id]).snapshot.id
        delete(cloud, sid, zone_id=zone2.id)
        _collect(cloud)
        assert refs(cloud.engine, sid) == [("Primary", "Ready"), ("Image", "Ready")]
        assert snapshot(cloud.engine, sid) == ("BackedUp", False)
        delete(cloud, sid)
        _collect(cloud)
        assert refs(cloud.engine, sid) == []
        assert snapshot(cloud.engine, sid) == ("Destroyed", True)

    def test_a_destroyed_ref_with_a_live_child_is_kept(self):
        """A delta's parent file is needed by its child: the parent's Destroyed image ref stays."""
        # The simulated XenServer backups are full, so the chain is written here as a delta backup would leave it.
        cloud = Cloud()
        volume = cloud.volume("xen-nfs")
        parent = cloud.take(volume).snapshot.id
        child = cloud.take(volume).snapshot.id
        ref = cloud.engine.store.first(SnapshotStoreRef, "snapshot_id = ? AND store_role = 'Image'", (child,))
        cloud.engine.store.update(ref, parent_snapshot_id=parent)
        cloud.engine.store.update(
            cloud.engine.store.first(SnapshotStoreRef, "snapshot_id = ? AND store_role = 'Image'", (parent,)),
            parent_snapshot_id=0,
        )
        delete(cloud, parent)
        assert refs(cloud.engine, parent) == [("Image", "Hidden")]
        _collect(cloud)
        assert refs(cloud.engine, parent) == [("Image", "Hidden")]
        assert snapshot(cloud.engine, parent) == ("Destroyed", False)


def _async_backup_failed() -> tuple[Cloud, int]:
    cloud = Cloud(faults=FaultPlan().fail("copyAsync", times=4))
    return cloud, cloud.take(cloud.volume("xen-nfs"), async_backup=True).snapshot.id


def _crash_at_backup_answer() -> tuple[Cloud, int]:
    cloud = Cloud(faults=FaultPlan().crash("take_snapshot.BackupAnswered"))
    sid = cloud.take(cloud.volume("xen-nfs")).snapshot.id
    cloud.engine.restart()
    return cloud, sid


def _crash_at_primary_answer() -> tuple[Cloud, int]:
    cloud = Cloud(faults=FaultPlan().crash("take_snapshot.PrimaryAnswered"))
    sid = cloud.take(cloud.volume("xen-nfs")).snapshot.id
    cloud.engine.restart()
    return cloud, sid


def _take_failed() -> tuple[Cloud, int]:
    cloud = Cloud(faults=FaultPlan().fail("takeSnapshot"))
    return cloud, cloud.take(cloud.volume("xen-nfs")).snapshot.id


# how the snapshot got to Error -> (removed, refs before, storage after the GC)
ERRORS = [
    pytest.param(
        _async_backup_failed,
        True,
        [("Primary", "Ready")],
        [("primary", False)],
        id="async-backup-failed",
    ),
    pytest.param(
        _crash_at_backup_answer,
        False,
        [("Primary", "Ready"), ("Image", "Creating")],
        [("primary", False), ("image", True)],
        id="crash-at-backup-answer",
    ),
    pytest.param(_crash_at_primary_answer, False, [], [("primary", True)], id="crash-at-primary-answer"),
    pytest.param(_take_failed, False, [], [], id="take-failed"),
]


class TestErrorSnapshots:
    @pytest.mark.violates(
        "answer-matches-state",
        "counts-match-recount",
        "no-negative-count",
        "usage-matches-objects",
        params=["async-backup-failed"],
    )
    @pytest.mark.violates("counts-match-recount", "no-orphan-object", params=["crash-at-primary-answer"])
    @pytest.mark.violates(
        "counts-match-recount", "no-orphan-object", "usage-matches-objects", params=["crash-at-backup-answer"]
    )
    @pytest.mark.violates("usage-matches-objects", params=["take-failed"])
    @pytest.mark.parametrize(("setup", "removed", "before", "after"), ERRORS)
    def test_error_snapshots_are_deleted_and_expunged(self, setup, removed, before, after):
        """Every ref is deleted on storage where it can be, every row expunged, the snapshot row last."""
        # A ref that cannot be DestroyRequested (Creating) is expunged with its file left on storage; a file whose ref
        # was already gone (the failed take's) stays for good.
        cloud, sid = setup()
        assert snapshot(cloud.engine, sid) == ("Error", removed)
        assert refs(cloud.engine, sid) == before
        moves = _collect(cloud)
        assert moves[-1] == ("snapshot", "delete", "Error", "StorageManagerImpl.removeSnapshotsInErrorStatus (expunge)")
        assert [m for m in moves if m[1] == "delete" and m[0] == "snapshot_store_ref"] == [
            ("snapshot_store_ref", "delete", state, "StorageManagerImpl.removeSnapshotsInErrorStatus")
            for state in [{"Ready": "Destroyed", "Destroyed": "Destroyed"}.get(s, s) for _, s in before]
        ]
        assert cloud.engine.store.first(Snapshot, "id = ?", (sid,)) is None
        assert refs(cloud.engine, sid) == []
        assert stored(cloud.engine, sid) == after


class TestSchedule:
    def test_the_first_pass_runs_after_storage_cleanup_delay(self):
        """start_background_tasks: nothing is collected before storage.cleanup.delay (a day), then it is."""
        cloud = Cloud()
        sid = cloud.take(cloud.volume("xen-nfs")).snapshot.id
        delete(cloud, sid)
        cloud.engine.start_background_tasks()
        cloud.engine.run(until_ms=DAY_MS - 1)
        assert refs(cloud.engine, sid) == [("Primary", "Destroyed"), ("Image", "Destroyed")]
        cloud.engine.run(until_ms=DAY_MS + 60_000)
        assert refs(cloud.engine, sid) == []
        assert snapshot(cloud.engine, sid) == ("Destroyed", True)

    def test_storage_cleanup_disabled_runs_no_pass(self):
        """storage.cleanup.enabled=false (read at start): no collector is started."""
        cloud = Cloud(config={"storage.cleanup.enabled": False})
        sid = cloud.take(cloud.volume("xen-nfs")).snapshot.id
        delete(cloud, sid)
        cloud.engine.start_background_tasks()
        cloud.engine.run(until_ms=DAY_MS + 60_000)
        assert refs(cloud.engine, sid) == [("Primary", "Destroyed"), ("Image", "Destroyed")]

    @pytest.mark.violates("answer-matches-state", "counts-match-recount", "usage-matches-objects")
    def test_a_pass_does_not_start_while_another_holds_the_lock(self):
        """The GlobalLock storagemgr.cleanup: a second pass started while one waits on a driver does nothing.

        It is a named lock, not an ``op_lock`` row (spec §21.7 on §11).
        """
        cloud = Cloud(faults=FaultPlan().fail("managed.deleteAsync"))
        sid = _destroying_ref(cloud)
        cloud.engine.collect_garbage()
        assert [(lock.name, lock.ms_id) for lock in cloud.engine.store.find(NamedLock)] == [("storagemgr.cleanup", 1)]
        assert cloud.engine.store.count(OpLock) == 0
        cloud.engine.collect_garbage()
        assert len(workflows(cloud.engine, "storage_gc")) == 1
        cloud.engine.run()
        assert refs(cloud.engine, sid) == [("Primary", "Destroyed")]
        assert cloud.engine.store.count(NamedLock) == 0

    @pytest.mark.violates("answer-matches-state", "counts-match-recount", "usage-matches-objects")
    def test_a_crash_mid_pass_frees_the_lock_for_a_peer(self):
        """The crashed holder's session ended, and its GlobalLock with it: a peer's pass runs at once (audit D-13)."""
        cloud = Cloud(faults=FaultPlan().fail("managed.deleteAsync").crash("storage_gc.DriverAnswered", ms_id=1))
        sid = _destroying_ref(cloud)
        peer = cloud.engine.peer(2)
        cloud.engine.collect_garbage()
        cloud.engine.run()
        assert cloud.engine.crashes == ["storage_gc.DriverAnswered"]
        assert cloud.engine.store.count(NamedLock) == 0
        assert refs(cloud.engine, sid) == [("Primary", "Destroying")]  # the file went; the answer died with ms 1
        peer.collect_garbage()
        peer.run()
        assert [w.state for w in workflows(cloud.engine, "storage_gc")] == ["Collecting", "Done"]
        assert refs(cloud.engine, sid) == [("Primary", "Destroyed")]
        assert cloud.engine.store.count(NamedLock) == 0

    @pytest.mark.violates("usage-matches-objects")
    def test_the_same_server_does_not_start_a_second_pass_while_its_first_waits(self):
        """The collector is one thread blocked on the delete: the lock's re-entrancy does not let a pass overlap.

        The failed async backup leaves an Error snapshot with a Destroyed primary ref; two overlapping passes
        would both delete it, the second finding the ref gone when its driver answered.
        """
        cloud = Cloud(faults=FaultPlan().fail("copyAsync"))
        sid = cloud.take(cloud.volume("xen-nfs")).snapshot.id
        assert snapshot(cloud.engine, sid)[0] == "Error"
        cloud.engine.collect_garbage()
        cloud.engine.collect_garbage()
        cloud.engine.run()
        assert [w.state for w in workflows(cloud.engine, "storage_gc")] == ["Done"]
        assert cloud.engine.store.first(Snapshot, "id = ?", (sid,)) is None
