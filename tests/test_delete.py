"""``deleteSnapshot`` (spec §9.4): from every snapshot state, with each strategy, and when storage fails.

``SnapshotManagerImpl.deleteSnapshot`` refuses a missing or Destroyed snapshot (PARAM_ERROR 431), then runs the
DELETE strategy; whatever the strategy throws is wrapped as ``Failed to delete snapshot:<exception>`` (530). On
success it publishes SNAPSHOT.DELETE per zone (only for a BackedUp snapshot), gives back the snapshot count (unless
the snapshot was in Error) and the physical size of the Ready image refs; primary_storage is never given back.
"""

from __future__ import annotations

from collections.abc import Callable

import attrs
import pytest
from cloud import PHYSICAL, Cloud, action_events
from lifecycle_cloud import (
    CANCELLED,
    answer,
    counts,
    delete,
    details,
    refs,
    second_zone,
    snapshot,
    snapshot_log,
    stored,
    usage,
    workflows,
)

from snapshotfsm.describe import snapshot_str
from snapshotfsm.drivers.storpool import sp_name
from snapshotfsm.errors import ApiError
from snapshotfsm.faults import FaultPlan
from snapshotfsm.store.records import (
    ActionEvent,
    AsyncJob,
    Failure,
    OpLock,
    Snapshot,
    SnapshotStoreRef,
    SnapshotZoneRef,
    TransitionLog,
    VolumeDetail,
)

SUCCESS = 'org.apache.cloudstack.api.response.SuccessResponse/null/{"success":true}'
WRAPPED = "Failed to delete snapshot:com.cloud.exception.InvalidParameterValueException: "
CHAIN_FAILED = (
    "Failed to delete snapshot:com.cloud.utils.exception.CloudRuntimeException: Failed to delete snapshot chain."
)
PRIMARY, IMAGE = ("Primary", "Ready"), ("Image", "Ready")


# --- getting a snapshot into each state, through the API ---------------------------------------------------------


def _allocated() -> tuple[Cloud, int]:
    """Queued behind another volume's take on the same VM, whose primary snapshot never answers."""
    cloud = Cloud(faults=FaultPlan().fail("takeSnapshot", kind="no_answer"))
    vm = cloud.vm("XenServer")
    cloud.create(cloud.volume("xen-nfs", vm=vm))
    queued = cloud.create(cloud.volume("xen-nfs", vm=vm))
    cloud.engine.run()
    assert queued.work_state == ("IN_PROGRESS", "Queued")
    return cloud, queued.snapshot.id


def _creating() -> tuple[Cloud, int]:
    """The driver never answers the primary snapshot."""
    cloud = Cloud(faults=FaultPlan().fail("takeSnapshot", kind="no_answer"))
    return cloud, cloud.take(cloud.volume("xen-nfs")).snapshot.id


def _created_on_primary() -> tuple[Cloud, int]:
    """The server crashed before the backup began; the restart cannot move CreatedOnPrimary."""
    cloud = Cloud(faults=FaultPlan().crash("take_snapshot.BackUp"))
    taken = cloud.take(cloud.volume("xen-nfs"))
    cloud.engine.restart()
    return cloud, taken.snapshot.id


def _backing_up() -> tuple[Cloud, int]:
    """The backup copy never answers."""
    cloud = Cloud(faults=FaultPlan().fail("copyAsync", kind="no_answer"))
    return cloud, cloud.take(cloud.volume("xen-nfs")).snapshot.id


def _backed_up() -> tuple[Cloud, int]:
    """A snapshot taken and backed up."""
    cloud = Cloud()
    return cloud, cloud.take(cloud.volume("xen-nfs")).snapshot.id


def _destroyed() -> tuple[Cloud, int]:
    """A snapshot deleted once already."""
    cloud, sid = _backed_up()
    assert delete(cloud, sid)[0] == "SUCCEEDED"
    return cloud, sid


def _error() -> tuple[Cloud, int]:
    """The server crashed as the backup copy answered; the restart's MS_ID cleanup moved BackingUp to Error."""
    cloud = Cloud(faults=FaultPlan().crash("take_snapshot.BackupAnswered"))
    taken = cloud.take(cloud.volume("xen-nfs"))
    cloud.engine.restart()
    return cloud, taken.snapshot.id


def _destroying() -> tuple[Cloud, int]:
    """A snapshot whose DestroyRequested committed, its refs still Ready: moved there by hand.

    The Default strategy never commits Destroying on its own (``deleteSnapshotInfos`` is one transaction that ends
    Destroyed or rolls back, spec §21.4.1); the strategies that write step by step do (StorageSystem, below), but
    their snapshots are then deleted by them again, not by the Default strategy's rules tested here.
    """
    cloud, sid = _backed_up()
    cloud.engine.transit(cloud.engine.get(Snapshot, sid), "DestroyRequested")
    return cloud, sid


@attrs.frozen
class Case:
    """What deleting a snapshot in one state gives."""

    setup: Callable[[], tuple[Cloud, int]]
    code: int
    text: str
    """The error text, with ``{snapshot}`` for the snapshot's toString before the call; SUCCESS for a success."""
    after: tuple[str, bool]
    refs: tuple[tuple[str, str], ...]
    counted: dict[str, int]
    """Change of alice's counters."""
    stored: tuple[tuple[str, bool], ...]
    deleted_usage: bool = False


DESTROYED_REFS = (("Primary", "Destroyed"), ("Image", "Destroyed"))
CASES = {
    "Allocated": Case(_allocated, 0, SUCCESS, ("Allocated", True), (), {"snapshot": -1}, ()),
    "Creating": Case(
        _creating,
        530,
        WRAPPED + "Can't delete snapshot {snapshot} due to it is in Creating Status",
        ("Creating", False),
        (("Primary", "Creating"),),
        {},
        (),
    ),
    "CreatedOnPrimary": Case(
        _created_on_primary, 0, SUCCESS, ("Destroyed", False), (PRIMARY,), {"snapshot": -1}, (("primary", True),)
    ),
    "BackingUp": Case(
        _backing_up,
        530,
        WRAPPED + "Can't delete snapshot {snapshot} due to it is in BackingUp Status",
        ("BackingUp", False),
        (PRIMARY, ("Image", "Creating")),
        {},
        (("primary", True),),
    ),
    "BackedUp": Case(
        _backed_up,
        0,
        SUCCESS,
        ("Destroyed", False),
        DESTROYED_REFS,
        {"snapshot": -1, "secondary_storage": -PHYSICAL},
        (("primary", False), ("image", False)),
        deleted_usage=True,
    ),
    "Destroyed": Case(
        _destroyed,
        431,
        "Snapshot [{snapshot}] is already destroyed",
        ("Destroyed", False),
        DESTROYED_REFS,
        {},
        (("primary", False), ("image", False)),
    ),
    "Error": Case(_error, 0, SUCCESS, ("Error", True), (), {}, (("primary", True), ("image", True))),
    "Destroying": Case(
        _destroying,
        0,
        SUCCESS,
        ("Destroyed", False),
        DESTROYED_REFS,
        {"snapshot": -1, "secondary_storage": -PHYSICAL},
        (("primary", False), ("image", False)),
    ),
}


class TestByState:
    @pytest.mark.violates(
        "answer-matches-state", "counts-match-recount", "no-orphan-object", params=["CreatedOnPrimary"]
    )
    @pytest.mark.violates("answer-matches-state", "usage-matches-objects", params=["Destroying"])
    @pytest.mark.violates("counts-match-recount", params=["Allocated", "Creating"])
    @pytest.mark.violates("counts-match-recount", "no-orphan-object", params=["Error"])
    @pytest.mark.violates("counts-match-recount", "usage-matches-objects", params=["BackingUp"])
    @pytest.mark.parametrize("state", list(CASES))
    def test_delete_from_each_state(self, state):
        """DefaultSnapshotStrategy's rules by state (spec §9.4), with the counters and usage the manager adds."""
        case = CASES[state]
        cloud, sid = case.setup()
        before = cloud.engine.get(Snapshot, sid)
        assert before.status == state
        counted = cloud.counts()
        usage_before = usage(cloud.engine, sid)
        events_before = cloud.engine.store.count(ActionEvent)
        result = delete(cloud, sid)
        status = "SUCCEEDED" if case.code == 0 else "FAILED"
        assert result == (status, case.code, case.text.replace("{snapshot}", snapshot_str(before)))
        assert snapshot(cloud.engine, sid) == case.after
        assert tuple(refs(cloud.engine, sid)) == case.refs
        change = {k: v - counted[k] for k, v in cloud.counts().items() if v != counted[k]}
        assert change == case.counted
        assert tuple(stored(cloud.engine, sid)) == case.stored
        added = usage(cloud.engine, sid)[len(usage_before) :]
        assert added == ([("SNAPSHOT.DELETE", cloud.zone.id, 0)] if case.deleted_usage else [])
        alice, uuid = cloud.alice.id, before.uuid
        ended = (
            ("Completed", "INFO", alice, alice, sid, f"Successfully completed deleting snapshot. Snapshot ID: {uuid}")
            if case.code == 0
            else ("Completed", "ERROR", alice, alice, sid, f"Error while deleting snapshot. Snapshot ID: {uuid}")
        )
        assert action_events(cloud.engine, "SNAPSHOT.DELETE", after=events_before) == [
            ("Scheduled", "INFO", alice, alice, sid, f"Deleting Snapshot with ID: {uuid}"),
            ("Started", "INFO", alice, alice, sid, f"Deleting snapshot. Snapshot ID: {uuid}"),
            ended,
        ]

    @pytest.mark.violates("usage-matches-objects")
    def test_a_removed_snapshot_is_not_found(self):
        """A failed sync backup soft-removes the Error row: deleteSnapshot cannot find it (431)."""
        cloud = Cloud(faults=FaultPlan().fail("copyAsync"))
        sid = cloud.take(cloud.volume("xen-nfs")).snapshot.id
        assert snapshot(cloud.engine, sid) == ("Error", True)
        assert delete(cloud, sid) == ("FAILED", 431, f"unable to find a snapshot with id {sid}")

    @pytest.mark.violates("answer-matches-state", "counts-match-recount", "no-orphan-object")
    def test_created_on_primary_is_set_destroyed_directly(self):
        """No FSM event: a direct write, logged as such; the primary ref and its file are left behind."""
        cloud, sid = _created_on_primary()
        mark = len(cloud.engine.history())
        delete(cloud, sid)
        assert snapshot_log(cloud.engine, sid, since=mark) == [
            ("direct", "CreatedOnPrimary", "DefaultSnapshotStrategy.deleteSnapshot", "Destroyed")
        ]

    @pytest.mark.violates("counts-match-recount", "no-orphan-object")
    def test_error_refs_are_expunged_not_deleted_on_storage(self):
        """Error: the refs' rows are deleted, the row soft-removed; storage keeps both files."""
        cloud, sid = _error()
        assert refs(cloud.engine, sid) == [PRIMARY, ("Image", "Creating")]
        mark = len(cloud.engine.history())
        delete(cloud, sid)
        moves = [
            (r.machine, r.kind, r.event)
            for r in cloud.engine.history()[mark:]
            if r.machine in ("snapshot", "snapshot_store_ref")
        ]
        assert moves == [
            ("snapshot_store_ref", "delete", "DefaultSnapshotStrategy.deleteSnapshot (expunge)"),
            ("snapshot_store_ref", "delete", "DefaultSnapshotStrategy.deleteSnapshot (expunge)"),
            ("snapshot", "remove", "DefaultSnapshotStrategy.deleteSnapshot"),
        ]

    @pytest.mark.violates("counts-match-recount")
    def test_deleting_a_queued_snapshot_fails_its_take(self):
        """The Allocated row is soft-removed while its work job waits; the take then finds no snapshot (NPE)."""
        # The take's outer catch gives the counters back a second time, so the snapshot count ends one below what
        # exists; nothing reaches storage.
        cloud = Cloud()
        vm = cloud.vm("XenServer")
        first = cloud.create(cloud.volume("xen-nfs", vm=vm))
        queued = cloud.create(cloud.volume("xen-nfs", vm=vm))
        cloud.engine.run(until_ms=1_000)
        assert snapshot(cloud.engine, queued.snapshot.id) == ("Allocated", False)
        assert delete(cloud, queued.snapshot.id) == ("SUCCEEDED", 0, SUCCESS)
        assert first.status == "SUCCEEDED"
        assert answer(cloud.engine, queued.job_id) == (
            "FAILED",
            530,
            f"Failed to create Snapshot due to an internal error creating Snapshot for volume {queued.volume.uuid}",
        )
        assert snapshot(cloud.engine, queued.snapshot.id) == ("Allocated", True)
        assert stored(cloud.engine, queued.snapshot.id) == []
        assert queued.volume.state == "Ready"
        assert cloud.counts() == {"snapshot": 0, "primary_storage": 0, "secondary_storage": PHYSICAL}


class TestBackedUp:
    def test_the_story_of_a_delete(self):
        """Destroying then Destroyed through the last ref; each ref Destroyed by its driver; the zone row removed."""
        cloud, sid = _backed_up()
        mark = len(cloud.engine.history())
        delete(cloud, sid)
        moves = [
            (r.machine, r.entity_id, r.source, r.event, r.dest)
            for r in cloud.engine.history()[mark:]
            if r.machine in ("snapshot", "snapshot_store_ref")
        ]
        assert moves == [
            ("snapshot_store_ref", 1, "Ready", "DestroyRequested", "Destroying"),
            ("snapshot_store_ref", 1, "Destroying", "OperationSucceeded", "Destroyed"),
            ("snapshot", sid, "BackedUp", "DestroyRequested", "Destroying"),
            ("snapshot_store_ref", 2, "Ready", "DestroyRequested", "Destroying"),
            ("snapshot_store_ref", 2, "Destroying", "OperationSucceeded", "Destroyed"),
            ("snapshot", sid, "Destroying", "OperationSucceeded", "Destroyed"),
            ("snapshot", sid, "Destroyed", "DefaultSnapshotStrategy.updateSnapshotToDestroyed", "Destroyed"),
        ]
        rows = cloud.engine.store.find(SnapshotStoreRef, "snapshot_id = ?", (sid,))
        assert [r.display for r in rows] == [False, False]
        assert [z.removed is not None for z in cloud.engine.store.find(SnapshotZoneRef, "snapshot_id = ?", (sid,))] == [
            True
        ]
        assert counts(cloud.engine, cloud.alice.id) == {"snapshot": 0, "primary_storage": 0, "secondary_storage": 0}


class TestDriverFailure:
    """A failed storage delete inside ``deleteSnapshotInfos``: its transaction rolls back (spec §21.4.1, §21.7)."""

    def test_a_failed_primary_delete_is_rolled_back(self):
        """The primary ref is not the last: its DestroyRequested and OperationFailed roll back; it is Ready again."""
        cloud = Cloud(faults=FaultPlan().fail("default.deleteAsync"))
        sid = cloud.take(cloud.volume("xen-nfs")).snapshot.id
        before = cloud.counts()
        assert delete(cloud, sid) == ("FAILED", 530, CHAIN_FAILED)
        assert snapshot(cloud.engine, sid) == ("BackedUp", False)
        assert refs(cloud.engine, sid) == [PRIMARY, IMAGE]
        assert cloud.counts() == before
        assert stored(cloud.engine, sid) == [("primary", True), ("image", True)]

    def test_the_rolled_back_delete_leaves_nothing_to_retry(self):
        """No ref is Destroying: the restart re-deletes nothing and the storage GC finds nothing; a retry succeeds."""
        cloud = Cloud(faults=FaultPlan().fail("default.deleteAsync"))
        sid = cloud.take(cloud.volume("xen-nfs")).snapshot.id
        delete(cloud, sid)
        assert cloud.engine.restart()["destroying_redeleted"] == 0
        cloud.engine.collect_garbage()
        cloud.engine.run()
        assert refs(cloud.engine, sid) == [PRIMARY, IMAGE]
        assert delete(cloud, sid) == ("SUCCEEDED", 0, SUCCESS)
        assert snapshot(cloud.engine, sid) == ("Destroyed", False)

    @pytest.mark.violates("ready-ref-has-object", "usage-matches-objects")
    def test_a_failed_last_delete_puts_both_refs_back_with_one_file_gone(self):
        """The primary file was deleted, then the image delete failed: both rows roll back to Ready (§21.4.1 quirk).

        The DB then shows a Ready primary ref whose file is gone; the snapshot is BackedUp, as before the call.
        """
        cloud = Cloud(faults=FaultPlan().fail("image.deleteAsync"))
        sid = cloud.take(cloud.volume("xen-nfs")).snapshot.id
        assert delete(cloud, sid) == ("FAILED", 530, CHAIN_FAILED)
        assert snapshot(cloud.engine, sid) == ("BackedUp", False)
        assert refs(cloud.engine, sid) == [PRIMARY, IMAGE]
        assert stored(cloud.engine, sid) == [("primary", False), ("image", True)]
        assert [w.state for w in workflows(cloud.engine, "delete_snapshot")] == ["Failed"]

    @pytest.mark.violates("answer-matches-state", "usage-matches-objects")
    def test_a_restart_deletes_destroying_snapshots_again(self):
        """SnapshotManagerImpl.start: the Destroying snapshot goes through deleteSnapshot again and succeeds."""
        # It was Destroying, not BackedUp, so no SNAPSHOT.DELETE usage.
        cloud, sid = _destroying()
        before = cloud.counts()
        assert cloud.engine.restart()["destroying_redeleted"] == 1
        cloud.engine.run()
        assert snapshot(cloud.engine, sid) == ("Destroyed", False)
        assert refs(cloud.engine, sid) == list(DESTROYED_REFS)
        assert stored(cloud.engine, sid) == [("primary", False), ("image", False)]
        assert cloud.counts() == {**before, "snapshot": before["snapshot"] - 1, "secondary_storage": 0}
        assert [u[0] for u in usage(cloud.engine, sid)] == ["SNAPSHOT.ON_PRIMARY", "SNAPSHOT.CREATE"]
        assert [w.state for w in workflows(cloud.engine, "delete_snapshot")] == ["Deleted"]

    @pytest.mark.violates("answer-matches-state", "usage-matches-objects")
    def test_a_restart_re_delete_that_fails_is_rolled_back_to_destroying(self):
        """The start-up re-delete fails on storage: its transaction rolls back to the committed Destroying (§21.2)."""
        cloud, sid = _destroying()
        cloud.faults.fail("image.deleteAsync")
        assert cloud.engine.restart()["destroying_redeleted"] == 1
        assert snapshot(cloud.engine, sid) == ("Destroying", False)
        assert refs(cloud.engine, sid) == [PRIMARY, IMAGE]
        assert stored(cloud.engine, sid) == [("primary", False), ("image", True)]
        assert cloud.engine.store.count(OpLock) == 0  # held to the end of the start-up thread

    @pytest.mark.violates("answer-matches-state", "counts-match-recount", "usage-matches-objects")
    def test_a_storage_system_delete_leaves_the_ref_destroying_for_the_gc(self):
        """No transaction there (spec §21.2): the ref stays Destroying, committed; the storage GC retries it."""
        cloud = Cloud(faults=FaultPlan().fail("managed.deleteAsync"))
        sid = cloud.take(cloud.volume("solidfire")).snapshot.id
        assert delete(cloud, sid) == ("FAILED", 530, "Failed to delete Snapshot")
        assert snapshot(cloud.engine, sid) == ("BackedUp", False)
        assert refs(cloud.engine, sid) == [("Primary", "Destroying")]
        assert cloud.engine.restart()["destroying_redeleted"] == 0
        cloud.engine.collect_garbage()
        cloud.engine.run()
        assert refs(cloud.engine, sid) == [("Primary", "Destroyed")]
        assert snapshot(cloud.engine, sid) == ("BackedUp", False)
        assert stored(cloud.engine, sid) == [("primary", False)]

    @pytest.mark.violates("answer-matches-state", "counts-match-recount", "usage-matches-objects")
    def test_a_storage_system_delete_never_answered_leaves_the_snapshot_destroying(self):
        """The array never answers: the snapshot's DestroyRequested and the ref's are committed; the job waits.

        A second delete then goes to DefaultSnapshotStrategy: StorageSystem's DELETE ``canHandle`` looks for a Ready
        primary ref (``findOneBySnapshotAndDatastoreRole``, spec §6.2) and finds none. The default delete takes the
        Destroying snapshot and its Destroying ref to Destroyed, the array's copy with them.
        """
        cloud = Cloud(faults=FaultPlan().fail("managed.deleteAsync", kind="no_answer"))
        sid = cloud.take(cloud.volume("solidfire")).snapshot.id
        job = cloud.engine.delete_snapshot(sid)
        cloud.engine.run()
        assert cloud.engine.job_status(job.id) == "IN_PROGRESS"
        assert snapshot(cloud.engine, sid) == ("Destroying", False)
        assert refs(cloud.engine, sid) == [("Primary", "Destroying")]
        strategy = cloud.engine.strategy_for(sid, "DELETE")
        assert strategy is not None and strategy.name == "DefaultSnapshotStrategy"
        assert delete(cloud, sid)[:2] == ("SUCCEEDED", 0)
        assert snapshot(cloud.engine, sid) == ("Destroyed", False)
        assert refs(cloud.engine, sid) == [("Primary", "Destroyed")]
        assert stored(cloud.engine, sid) == [("primary", False)]
        assert cloud.engine.job_status(job.id) == "IN_PROGRESS"


def _rows(cloud: Cloud, sid: int) -> list[tuple[str, str, bool, int]]:
    """The snapshot's refs as a rollback must restore them: role, state, display, update_count."""
    rows = cloud.engine.store.find(SnapshotStoreRef, "snapshot_id = ?", (sid,))
    return [(r.store_role, r.state, r.display, r.update_count) for r in rows]


def _locks(cloud: Cloud) -> list[tuple[str, int, str]]:
    return [(lock.key, lock.ms_id, lock.owner) for lock in cloud.engine.store.find(OpLock)]


class TestDeleteTransaction:
    """``deleteSnapshotInfos`` is one transaction around the per-ref loop (spec §21.2, §21.3, §21.4.1, §21.5).

    The image and default primary drivers answer ``deleteAsync`` on the job's thread, inside it; the chain root's
    ``op_lock`` row is written apart, before it, and kept when it rolls back.
    """

    @pytest.mark.violates("usage-matches-objects")
    def test_the_worked_example_of_spec_21_4_1(self):
        """KVM, one image ref, its delete fails: every row as before the call, the file kept, the job 530."""
        cloud = Cloud(faults=FaultPlan().fail("image.deleteAsync"))
        sid = cloud.take(cloud.volume("kvm-nfs")).snapshot.id
        before = (_rows(cloud, sid), cloud.counts(), usage(cloud.engine, sid))
        zone_refs = cloud.engine.store.find(SnapshotZoneRef, "snapshot_id = ?", (sid,))
        mark = cloud.engine.store.count(TransitionLog)
        job = cloud.engine.delete_snapshot(sid)
        cloud.engine.run()
        assert answer(cloud.engine, job.id) == ("FAILED", 530, CHAIN_FAILED)
        assert snapshot(cloud.engine, sid) == ("BackedUp", False)
        assert (_rows(cloud, sid), cloud.counts(), usage(cloud.engine, sid)) == before
        assert _rows(cloud, sid) == [("Image", "Ready", True, 1)]
        assert stored(cloud.engine, sid) == [("image", True)]
        assert cloud.engine.store.find(SnapshotZoneRef, "snapshot_id = ?", (sid,)) == zone_refs
        moved = cloud.engine.store.find(
            TransitionLog, "id > ? AND machine IN ('snapshot', 'snapshot_store_ref')", (mark,)
        )
        assert moved == []
        failures = cloud.engine.store.find(Failure, "job_id = ?", (job.id,))
        assert [(f.step, f.error_event, f.message) for f in failures] == [("delete.start", "Fail", CHAIN_FAILED)]
        assert _locks(cloud) == []  # held until the job's thread ended
        assert cloud.engine.restart()["destroying_redeleted"] == 0
        assert snapshot(cloud.engine, sid) == ("BackedUp", False)

    @pytest.mark.violates("counts-match-recount", "ready-ref-has-object", "usage-matches-objects")
    def test_a_rolled_back_hidden_ancestor_is_hidden_again_with_its_file_gone(self):
        """The chain walk deleted a Hidden parent's file, then failed higher up: both refs roll back (§21.4.1).

        The first snapshot's file is no orphan: the third's delete will walk up to it through the second's Hidden
        ref, as the chain walk does.
        """
        faults = FaultPlan().fail("default.deleteAsync", nth=3)
        cloud = Cloud(faults=faults, config={"snapshot.backup.to.secondary": False})
        volume = cloud.volume("xen-nfs")
        first, second, third = (cloud.take(volume).snapshot.id for _ in range(3))
        assert delete(cloud, first)[0] == delete(cloud, second)[0] == "SUCCEEDED"
        assert [_rows(cloud, sid) for sid in (first, second, third)] == [
            [("Primary", "Hidden", False, 3)],
            [("Primary", "Hidden", False, 3)],
            [("Primary", "Ready", True, 2)],
        ]
        assert delete(cloud, third) == ("FAILED", 530, CHAIN_FAILED)
        assert [_rows(cloud, sid) for sid in (first, second, third)] == [
            [("Primary", "Hidden", False, 3)],
            [("Primary", "Hidden", False, 3)],
            [("Primary", "Ready", True, 2)],
        ]
        assert [snapshot(cloud.engine, sid) for sid in (first, second, third)] == [
            ("Destroyed", False),
            ("Destroyed", False),
            ("BackedUp", False),
        ]
        assert [stored(cloud.engine, sid) for sid in (first, second, third)] == [
            [("primary", True)],
            [("primary", False)],
            [("primary", False)],
        ]

    @pytest.mark.violates("usage-matches-objects")
    @pytest.mark.parametrize("kind", ["error", "exception", "null_answer"])
    def test_every_failed_answer_rolls_back(self, kind):
        """An error answer, a throw at the call or a null answer: the same rollback, the same 530 answer."""
        cloud = Cloud(faults=FaultPlan().fail("image.deleteAsync", kind=kind))
        sid = cloud.take(cloud.volume("kvm-nfs")).snapshot.id
        assert delete(cloud, sid) == ("FAILED", 530, CHAIN_FAILED)
        assert snapshot(cloud.engine, sid) == ("BackedUp", False)
        assert _rows(cloud, sid) == [("Image", "Ready", True, 1)]
        assert cloud.counts() == {"snapshot": 1, "primary_storage": 0, "secondary_storage": PHYSICAL}

    @pytest.mark.violates("usage-matches-objects")
    def test_a_delete_never_answered_waits_for_ever_with_nothing_written(self):
        """The thread blocks inside its transaction, never committed: the rows stay as they were, the job waits.

        The root's lock is held by the blocked thread; the restart frees it, fails the job and leaves the
        BackedUp snapshot alone (``cleanupSnapshot`` ignores it, spec §21.4.1 "process death").
        """
        cloud = Cloud(faults=FaultPlan().fail("image.deleteAsync", kind="no_answer"))
        sid = cloud.take(cloud.volume("kvm-nfs")).snapshot.id
        job = cloud.engine.delete_snapshot(sid)
        cloud.engine.run()
        assert cloud.engine.job_status(job.id) == "IN_PROGRESS"
        assert [w.state for w in workflows(cloud.engine, "delete_snapshot")] == ["Deleting"]
        assert snapshot(cloud.engine, sid) == ("BackedUp", False)
        assert _rows(cloud, sid) == [("Image", "Ready", True, 1)]
        assert stored(cloud.engine, sid) == [("image", True)]
        assert _locks(cloud) == [(f"snapshots{sid}", 1, f"job-{job.id}")]
        assert not cloud.engine.store.conn.in_transaction
        cloud.engine.crash()
        report = cloud.engine.restart()
        assert (report["locks_released"], report["jobs_failed"], report["destroying_redeleted"]) == (1, 1, 0)
        assert answer(cloud.engine, job.id) == ("FAILED", 530, CANCELLED)
        assert snapshot(cloud.engine, sid) == ("BackedUp", False)

    def test_the_driver_answers_at_once(self):
        """The delete completes on the job's thread: no simulated time passes between the job's start and end."""
        cloud, sid = _backed_up()
        job = cloud.engine.delete_snapshot(sid)
        cloud.engine.run()
        rows = cloud.engine.store.find(TransitionLog, "job_id = ?", (job.id,))
        assert {r.machine for r in rows} >= {"snapshot", "snapshot_store_ref", "async_job"}
        assert {r.at_ms for r in rows} == {rows[0].at_ms}


class TestDeleteCrash:
    """Crash points on both sides of ``deleteSnapshotInfos``: before it nothing of it is written, after it all is."""

    # delete.start's durable writes: #1 the job's executing server, #2 the Started action event, #3 the root lock,
    # #4 the transaction, #5 the lock's release, #6 the zone row's removal, #7 updateSnapshotToDestroyed.
    BEFORE, AFTER = "delete.start#4", "delete.start#5"

    def _crash(self, at: str) -> tuple[Cloud, int, AsyncJob]:
        cloud = Cloud(faults=FaultPlan().crash(at))
        sid = cloud.take(cloud.volume("kvm-nfs")).snapshot.id
        job = cloud.engine.delete_snapshot(sid)
        cloud.engine.run()
        assert cloud.engine.crashes == [at]
        return cloud, sid, job

    @pytest.mark.violates("usage-matches-objects")
    def test_a_crash_before_the_transaction_writes_none_of_it(self):
        """The lock was taken (its own commit); nothing of the transaction is written, the file is still there."""
        cloud, sid, job = self._crash(self.BEFORE)
        assert snapshot(cloud.engine, sid) == ("BackedUp", False)
        assert _rows(cloud, sid) == [("Image", "Ready", True, 1)]
        assert stored(cloud.engine, sid) == [("image", True)]
        assert _locks(cloud) == [(f"snapshots{sid}", 1, f"job-{job.id}")]
        cloud.engine.restart()
        assert answer(cloud.engine, job.id) == ("FAILED", 530, CANCELLED)
        assert snapshot(cloud.engine, sid) == ("BackedUp", False)
        assert _locks(cloud) == []

    @pytest.mark.violates("answer-matches-state", "counts-match-recount", "usage-matches-objects")
    def test_a_crash_after_the_transaction_keeps_all_of_it(self):
        """The refs and the snapshot are Destroyed, the file gone; the counters are never given back (§21.5)."""
        cloud, sid, job = self._crash(self.AFTER)
        assert snapshot(cloud.engine, sid) == ("Destroyed", False)
        assert _rows(cloud, sid) == [("Image", "Destroyed", False, 3)]
        assert stored(cloud.engine, sid) == [("image", False)]
        assert _locks(cloud) == [(f"snapshots{sid}", 1, f"job-{job.id}")]
        cloud.engine.restart()
        assert answer(cloud.engine, job.id) == ("FAILED", 530, CANCELLED)
        assert cloud.counts() == {"snapshot": 1, "primary_storage": 0, "secondary_storage": PHYSICAL}
        assert _locks(cloud) == []


class TestDeleteLock:
    """``acquireInLockTable(rootId)`` in ``deleteSnapshotInfos`` (spec §9.4 step 1, §21.4.1 steps 3, 7, 9, §21.6)."""

    @pytest.mark.violates("usage-matches-objects")
    def test_a_failed_delete_holds_the_lock_until_its_job_ends(self):
        """Not released on the exception: the row is there when the job fails, gone once its thread has ended."""
        cloud = Cloud(faults=FaultPlan().fail("image.deleteAsync").crash("delete.fail#1"))
        sid = cloud.take(cloud.volume("kvm-nfs")).snapshot.id
        job = cloud.engine.delete_snapshot(sid)
        cloud.engine.run()
        assert cloud.engine.crashes == ["delete.fail#1"]
        assert _locks(cloud) == [(f"snapshots{sid}", 1, f"job-{job.id}")]
        assert snapshot(cloud.engine, sid) == ("BackedUp", False)

    @pytest.mark.violates("answer-matches-state", "counts-match-recount", "usage-matches-objects")
    def test_a_successful_delete_releases_it_at_once(self):
        """Released right after the transaction, before the rest of the delete (a crash there finds no row)."""
        cloud = Cloud(faults=FaultPlan().crash("delete.start#6"))
        sid = cloud.take(cloud.volume("kvm-nfs")).snapshot.id
        cloud.engine.delete_snapshot(sid)
        cloud.engine.run()
        assert cloud.engine.crashes == ["delete.start#6"]
        assert snapshot(cloud.engine, sid) == ("Destroyed", False)
        assert _locks(cloud) == []

    def test_it_locks_the_root_of_the_chain(self):
        """The key is the chain root's id, found up the refs' parents (here the oldest of three deltas)."""
        cloud = Cloud(faults=FaultPlan().crash("delete.start#4"), config={"snapshot.backup.to.secondary": False})
        volume = cloud.volume("xen-nfs")
        first, _, third = (cloud.take(volume).snapshot.id for _ in range(3))
        job = cloud.engine.delete_snapshot(third)
        cloud.engine.run()
        assert _locks(cloud) == [(f"snapshots{first}", 1, f"job-{job.id}")]

    @pytest.mark.violates("counts-match-recount", "legal-transitions", "no-orphan-object")
    def test_a_parent_whose_refs_are_gone_gives_root_zero(self):
        """``getRootSnapshotId`` returns the first ref's snapshot of the last list: none there, so ``snapshots0``."""
        cloud = Cloud(faults=FaultPlan().crash("delete.start#4"), config={"snapshot.backup.to.secondary": False})
        volume = cloud.volume("xen-nfs")
        first, second = (cloud.take(volume).snapshot.id for _ in range(2))
        for ref in cloud.engine.store.find(SnapshotStoreRef, "snapshot_id = ?", (first,)):
            cloud.engine.store.delete(ref, by="test: expunged")
        job = cloud.engine.delete_snapshot(second)
        cloud.engine.run()
        assert _locks(cloud) == [("snapshots0", 1, f"job-{job.id}")]

    @pytest.mark.violates("locks-released")
    def test_a_lock_held_elsewhere_is_ignored(self):
        """CloudStack ignores a null from acquireInLockTable here (§21.6 quirk 3): the delete goes on without it."""
        cloud, sid = _backed_up()
        cloud.engine.add(OpLock(key=f"snapshots{sid}", ms_id=2, owner="another thread"))
        assert delete(cloud, sid) == ("SUCCEEDED", 0, SUCCESS)
        assert snapshot(cloud.engine, sid) == ("Destroyed", False)
        assert _locks(cloud) == [(f"snapshots{sid}", 2, "another thread")]


class TestInUse:
    def test_a_snapshot_with_two_refs_used_by_a_volume(self):
        """Neither ref is the last: OperationFailed on BackedUp is refused, each ref returns false (530)."""
        cloud, sid = _backed_up()
        other = cloud.volume("xen-nfs")
        cloud.engine.add(VolumeDetail(volume_id=other.id, name="SNAPSHOT_ID", value=str(sid)))
        assert delete(cloud, sid) == ("FAILED", 530, "Failed to delete Snapshot")
        assert snapshot(cloud.engine, sid) == ("BackedUp", False)
        assert refs(cloud.engine, sid) == [PRIMARY, IMAGE]
        assert stored(cloud.engine, sid) == [("primary", True), ("image", True)]

    def test_a_snapshot_with_one_ref_used_by_a_volume(self):
        """The last ref: DestroyRequested, OperationFailed back to BackedUp, the refusal (530), all rolled back."""
        cloud = Cloud(config={"snapshot.backup.to.secondary": False})
        taken = cloud.take(cloud.volume("xen-nfs"))
        sid = taken.snapshot.id
        other = cloud.volume("xen-nfs")
        cloud.engine.add(VolumeDetail(volume_id=other.id, name="SNAPSHOT_ID", value=str(sid)))
        mark = len(cloud.engine.history())
        row = taken.snapshot
        selected = f'{{"id":{sid},"volumeId":{row.volume_id},"name":"{row.name}","uuid":"{row.uuid}"}}'
        text = (
            "Failed to delete snapshot:com.cloud.utils.exception.CloudRuntimeException: Unable to delete snapshot "
            f'[{selected}] because it is being used by the following volumes: [{{"resourceId":{other.id}}}].'
        )
        assert delete(cloud, sid) == ("FAILED", 530, text)
        # DestroyRequested then OperationFailed were written in deleteSnapshotInfos' transaction, then rolled back
        # with it by the throw (spec §21.7 on §9.4): nothing of them is left, not even in the history.
        assert snapshot_log(cloud.engine, sid, since=mark) == []
        assert snapshot(cloud.engine, sid) == ("BackedUp", False)
        assert refs(cloud.engine, sid) == [PRIMARY]


class TestStrategies:
    @pytest.mark.violates("counts-match-recount")
    def test_storage_system_delete(self):
        """Managed storage: Destroying, the array delete, Destroyed, usage OFF_PRIMARY then DELETE."""
        cloud = Cloud()
        taken = cloud.take(cloud.volume("solidfire"))
        sid = taken.snapshot.id
        assert (taken.snapshot.status, taken.snapshot.location_type) == ("BackedUp", "PRIMARY")
        before = cloud.counts()
        assert delete(cloud, sid) == ("SUCCEEDED", 0, SUCCESS)
        assert snapshot(cloud.engine, sid) == ("Destroyed", False)
        assert refs(cloud.engine, sid) == [("Primary", "Destroyed")]
        assert stored(cloud.engine, sid) == [("primary", False)]
        assert [u[0] for u in usage(cloud.engine, sid)][-2:] == ["SNAPSHOT.OFF_PRIMARY", "SNAPSHOT.DELETE"]
        assert cloud.counts() == {**before, "snapshot": before["snapshot"] - 1}
        assert '"strategy": "StorageSystemSnapshotStrategy"' in workflows(cloud.engine, "delete_snapshot")[0].context
        assert snapshot_log(cloud.engine, sid)[-2:] == [
            ("event", "BackedUp", "DestroyRequested", "Destroying"),
            ("event", "Destroying", "OperationSucceeded", "Destroyed"),
        ]

    @pytest.mark.violates("counts-match-recount")
    def test_storpool_delete(self):
        """StorPool: snapshotDelete, the refs Destroyed and their rows removed, the snapshot Destroyed directly."""
        cloud = Cloud(config={"snapshot.backup.to.secondary": False})
        sid = cloud.take(cloud.volume("storpool")).snapshot.id
        assert delete(cloud, sid) == ("SUCCEEDED", 0, SUCCESS)
        assert snapshot(cloud.engine, sid) == ("Destroyed", False)
        assert refs(cloud.engine, sid) == []
        assert stored(cloud.engine, sid) == [("primary", False)]
        assert snapshot_log(cloud.engine, sid)[-1] == (
            "direct",
            "BackedUp",
            "StorPoolSnapshotStrategy.updateSnapshotToDestroyed",
            "Destroyed",
        )

    @pytest.mark.violates("answer-matches-state", "counts-match-recount")
    def test_storpool_refuses_a_snapshot_still_exported(self):
        """An exported snapshot: the primary refs fail (they stay Destroying) and the delete throws (530).

        The text is StorPool's: the global name and SpApiError's "name: descr", wrapped by SPS ("Cannot delete
        snapshot due to") and again by SnapshotManagerImpl.
        """
        # Once unexported, the next delete finds no Ready StorPool ref, so the Default strategy deletes it through the
        # driver's deleteAsync.
        cloud = Cloud(config={"snapshot.backup.to.secondary": False})
        taken = cloud.take(cloud.volume("storpool"))
        sid = taken.snapshot.id
        driver = cloud.engine.rt.drivers.primary(cloud.pool("storpool"))
        name = sp_name(taken.ref("Primary").install_path or "")
        assert driver.snapshot_export(name, "remote-cluster").result
        status, code, text = delete(cloud, sid)
        assert (status, code) == ("FAILED", 530)
        assert text == (
            "Failed to delete snapshot:com.cloud.utils.exception.CloudRuntimeException: Cannot delete snapshot due to "
            f"The snapshot [{name}] was exported to another cluster. "
            f"[snapshot {name} is still exported to remote-cluster]"
        )
        assert snapshot(cloud.engine, sid) == ("BackedUp", False)
        assert refs(cloud.engine, sid) == [("Primary", "Destroying")]
        assert stored(cloud.engine, sid) == [("primary", True)]
        assert driver.snapshot_unexport(name, "remote-cluster").result
        assert delete(cloud, sid) == ("SUCCEEDED", 0, SUCCESS)
        assert snapshot(cloud.engine, sid) == ("Destroyed", False)
        assert refs(cloud.engine, sid) == [("Primary", "Destroyed")]
        assert stored(cloud.engine, sid) == [("primary", False)]
        strategies = [
            w.context.split('"strategy": ')[1].split('"')[1] for w in workflows(cloud.engine, "delete_snapshot")
        ]
        assert strategies == ["StorPoolSnapshotStrategy", "DefaultSnapshotStrategy"]


class TestZone:
    @pytest.mark.violates("counts-match-recount")
    def test_delete_in_one_zone(self):
        """zoneid: only that zone's image ref goes; the snapshot stays BackedUp; usage DELETE names that zone."""
        cloud = Cloud()
        zone2 = second_zone(cloud)
        sid = cloud.take(cloud.volume("xen-nfs"), zone_ids=[zone2.id]).snapshot.id
        assert refs(cloud.engine, sid) == [PRIMARY, IMAGE, IMAGE]
        before = cloud.counts()
        assert delete(cloud, sid, zone_id=zone2.id) == ("SUCCEEDED", 0, SUCCESS)
        assert snapshot(cloud.engine, sid) == ("BackedUp", False)
        assert refs(cloud.engine, sid) == [PRIMARY, IMAGE, ("Image", "Destroyed")]
        assert stored(cloud.engine, sid) == [("primary", True), ("image", True), ("image", False)]
        assert usage(cloud.engine, sid)[-1] == ("SNAPSHOT.DELETE", zone2.id, 0)
        assert cloud.counts() == {**before, "secondary_storage": before["secondary_storage"] - PHYSICAL}
        zones = {z.zone_id: z.removed is not None for z in cloud.engine.store.find(SnapshotZoneRef)}
        assert zones == {cloud.zone.id: False, zone2.id: True}

    @pytest.mark.violates("counts-match-recount")
    def test_the_zone_copy_is_charged_more_than_its_delete_gives_back(self):
        """The copy adds the ref's size, the delete subtracts its physical size: half of it stays counted."""
        cloud = Cloud()
        zone2 = second_zone(cloud)
        sid = cloud.take(cloud.volume("xen-nfs"), zone_ids=[zone2.id]).snapshot.id
        delete(cloud, sid, zone_id=zone2.id)
        assert delete(cloud, sid) == ("SUCCEEDED", 0, SUCCESS)
        assert snapshot(cloud.engine, sid) == ("Destroyed", False)
        assert cloud.counts() == {"snapshot": 0, "primary_storage": 0, "secondary_storage": PHYSICAL}
        assert [u[:2] for u in usage(cloud.engine, sid) if u[0] == "SNAPSHOT.DELETE"] == [
            ("SNAPSHOT.DELETE", zone2.id),
            ("SNAPSHOT.DELETE", cloud.zone.id),
        ]

    @pytest.mark.violates("answer-matches-state", "counts-match-recount")
    def test_a_snapshot_on_primary_only_cannot_be_deleted_in_a_zone(self):
        """CreatedOnPrimary with zoneid: the strategy's refusal, wrapped (530)."""
        cloud, sid = _created_on_primary()
        assert delete(cloud, sid, zone_id=cloud.zone.id) == (
            "FAILED",
            530,
            WRAPPED + "Snapshot in CreatedOnPrimary can not be deleted for a zone",
        )
        assert snapshot(cloud.engine, sid) == ("CreatedOnPrimary", False)

    def test_an_unknown_zone_is_refused_before_the_strategy_runs(self):
        """getStoreRefsAndZonesForSnapshotDelete: 431, not wrapped (it is outside the try), nothing changed."""
        cloud, sid = _backed_up()
        before = cloud.engine.store.find(SnapshotStoreRef, "snapshot_id = ?", (sid,))
        assert delete(cloud, sid, zone_id=999) == ("FAILED", 431, "Unable to find a zone with the specified id")
        assert snapshot(cloud.engine, sid) == ("BackedUp", False)
        assert cloud.engine.store.find(SnapshotStoreRef, "snapshot_id = ?", (sid,)) == before


class TestAccess:
    def test_another_account_is_refused_before_any_job(self):
        """ParamProcessWorker's access check: ACCOUNT_ERROR 531 at once; no job, nothing changed."""
        cloud, sid = _backed_up()
        jobs_before = cloud.engine.store.count(AsyncJob)
        with pytest.raises(ApiError) as refused:
            cloud.engine.delete_snapshot(sid, caller=cloud.bob)
        assert (refused.value.code, refused.value.text) == (
            531,
            "Caller does not have permission to operate with provided resource.",
        )
        assert cloud.engine.store.count(AsyncJob) == jobs_before
        assert snapshot(cloud.engine, sid) == ("BackedUp", False)

    def test_a_root_admin_deletes_anyones_snapshot(self):
        """The root admin passes the access check; the owner's counters are given back."""
        cloud, sid = _backed_up()
        assert delete(cloud, sid, caller=cloud.root) == ("SUCCEEDED", 0, SUCCESS)
        assert snapshot(cloud.engine, sid) == ("Destroyed", False)
        assert cloud.counts()["snapshot"] == 0


@pytest.mark.violates("counts-match-recount")
def test_details_survive_the_delete():
    """The Default strategy keeps snapshot_details; only the StorPool strategy touches them."""
    cloud = Cloud(config={"snapshot.backup.to.secondary": False})
    sid = cloud.take(cloud.volume("xen-nfs")).snapshot.id
    assert details(cloud.engine, sid) == {"MS_ID": "1"}
    delete(cloud, sid)
    assert details(cloud.engine, sid) == {"MS_ID": "1"}
