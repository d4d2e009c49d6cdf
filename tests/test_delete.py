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
from snapshotfsm.store.records import ActionEvent, AsyncJob, Snapshot, SnapshotStoreRef, SnapshotZoneRef, VolumeDetail

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
    """The image store failed to delete the last ref: the snapshot stays Destroying."""
    cloud = Cloud(faults=FaultPlan().fail("image.deleteAsync"))
    sid = cloud.take(cloud.volume("xen-nfs")).snapshot.id
    assert delete(cloud, sid) == ("FAILED", 530, CHAIN_FAILED)
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
        {"snapshot": -1},
        (("primary", False), ("image", False)),
    ),
}


class TestByState:
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

    def test_a_removed_snapshot_is_not_found(self):
        """A failed sync backup soft-removes the Error row: deleteSnapshot cannot find it (431)."""
        cloud = Cloud(faults=FaultPlan().fail("copyAsync"))
        sid = cloud.take(cloud.volume("xen-nfs")).snapshot.id
        assert snapshot(cloud.engine, sid) == ("Error", True)
        assert delete(cloud, sid) == ("FAILED", 431, f"unable to find a snapshot with id {sid}")

    def test_created_on_primary_is_set_destroyed_directly(self):
        """No FSM event: a direct write, logged as such; the primary ref and its file are left behind."""
        cloud, sid = _created_on_primary()
        mark = len(cloud.engine.history())
        delete(cloud, sid)
        assert snapshot_log(cloud.engine, sid, since=mark) == [
            ("direct", "CreatedOnPrimary", "DefaultSnapshotStrategy.deleteSnapshot", "Destroyed")
        ]

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
    def test_a_failed_primary_delete_leaves_the_ref_destroying(self):
        """The primary ref is not the last: the snapshot stays BackedUp, the ref Destroying; the job fails 530."""
        cloud = Cloud(faults=FaultPlan().fail("default.deleteAsync"))
        sid = cloud.take(cloud.volume("xen-nfs")).snapshot.id
        before = cloud.counts()
        assert delete(cloud, sid) == ("FAILED", 530, CHAIN_FAILED)
        assert snapshot(cloud.engine, sid) == ("BackedUp", False)
        assert refs(cloud.engine, sid) == [("Primary", "Destroying"), IMAGE]
        assert cloud.counts() == before
        assert stored(cloud.engine, sid) == [("primary", True), ("image", True)]

    def test_a_restart_does_not_retry_a_destroying_ref_of_a_live_snapshot(self):
        """Only Destroying snapshots are deleted again at start; the storage GC retries the Destroying ref."""
        cloud = Cloud(faults=FaultPlan().fail("default.deleteAsync"))
        sid = cloud.take(cloud.volume("xen-nfs")).snapshot.id
        delete(cloud, sid)
        assert cloud.engine.restart()["destroying_redeleted"] == 0
        cloud.engine.run()
        assert refs(cloud.engine, sid) == [("Primary", "Destroying"), IMAGE]
        cloud.engine.collect_garbage()
        cloud.engine.run()
        assert refs(cloud.engine, sid) == [("Primary", "Destroyed"), IMAGE]
        assert snapshot(cloud.engine, sid) == ("BackedUp", False)
        assert stored(cloud.engine, sid) == [("primary", False), ("image", True)]

    def test_a_failed_last_delete_leaves_the_snapshot_destroying(self):
        """The image ref is the last one: the snapshot went Destroying and stays there with its ref."""
        cloud, sid = _destroying()
        assert snapshot(cloud.engine, sid) == ("Destroying", False)
        assert refs(cloud.engine, sid) == [("Primary", "Destroyed"), ("Image", "Destroying")]
        assert stored(cloud.engine, sid) == [("primary", False), ("image", True)]
        assert [w.state for w in workflows(cloud.engine, "delete_snapshot")] == ["Failed"]

    def test_a_restart_deletes_destroying_snapshots_again(self):
        """SnapshotManagerImpl.start: the Destroying snapshot goes through deleteSnapshot again and succeeds."""
        # It was Destroying, not BackedUp, so no SNAPSHOT.DELETE usage; its image ref was not Ready, so the
        # secondary_storage it held is never given back.
        cloud, sid = _destroying()
        before = cloud.counts()
        assert cloud.engine.restart()["destroying_redeleted"] == 1
        cloud.engine.run()
        assert snapshot(cloud.engine, sid) == ("Destroyed", False)
        assert refs(cloud.engine, sid) == list(DESTROYED_REFS)
        assert stored(cloud.engine, sid) == [("primary", False), ("image", False)]
        assert cloud.counts() == {**before, "snapshot": before["snapshot"] - 1}
        assert cloud.counts()["secondary_storage"] == PHYSICAL
        assert [u[0] for u in usage(cloud.engine, sid)] == ["SNAPSHOT.ON_PRIMARY", "SNAPSHOT.CREATE"]
        assert [w.state for w in workflows(cloud.engine, "delete_snapshot")] == ["Failed", "Deleted"]

    def test_the_storage_gc_retries_the_destroying_ref(self):
        """The GC deletes the file, then drops the Destroyed refs and soft-removes the still Destroying snapshot."""
        # A removed row is no longer deleted again at start, so its snapshot count is never given back.
        cloud, sid = _destroying()
        cloud.engine.collect_garbage()
        cloud.engine.run()
        assert refs(cloud.engine, sid) == []
        assert snapshot(cloud.engine, sid) == ("Destroying", True)
        assert stored(cloud.engine, sid) == [("primary", False), ("image", False)]
        assert cloud.engine.restart()["destroying_redeleted"] == 0
        assert cloud.counts()["snapshot"] == 1


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
        """The last ref: DestroyRequested, then OperationFailed back to BackedUp, then the refusal (530)."""
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
        assert snapshot_log(cloud.engine, sid, since=mark) == [
            ("event", "BackedUp", "DestroyRequested", "Destroying"),
            ("event", "Destroying", "OperationFailed", "BackedUp"),
        ]
        assert refs(cloud.engine, sid) == [PRIMARY]


class TestStrategies:
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


def test_details_survive_the_delete():
    """The Default strategy keeps snapshot_details; only the StorPool strategy touches them."""
    cloud = Cloud(config={"snapshot.backup.to.secondary": False})
    sid = cloud.take(cloud.volume("xen-nfs")).snapshot.id
    assert details(cloud.engine, sid) == {"MS_ID": "1"}
    delete(cloud, sid)
    assert details(cloud.engine, sid) == {"MS_ID": "1"}
