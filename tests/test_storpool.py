"""StorPool cross-zone copies and the recovery check (spec §8, §7.4).

``StorPoolSnapshotStrategy.copySnapshot`` copies a snapshot to a StorPool pool of another zone in three API calls,
each persisted before the next: ``snapshotExport`` on the source cluster (then the ``SP_RECOVERED_SNAPSHOT`` detail),
``snapshotFromRemote`` and ``snapshotReconcile`` on the destination. A failure at any step fails the destination ref
(its row is deleted) and leaves the rest as it was: an exported snapshot and its detail, a copy still recovering.
``StorPoolSnapshotRecoveryCheck`` later unexports what it finds exported and clears the detail.
"""

from __future__ import annotations

import pytest
from cloud import PHYSICAL, SIZE, Cloud
from helpers_storpool import (
    CHECK_MS,
    StorPoolCloud,
    copy_failures,
    copy_usage,
    count,
    image_refs,
    primary_refs,
    recovered,
    sp_objects,
    zone_rows,
)
from lifecycle_cloud import answer, delete, details, refs, snapshot, stored

from snapshotfsm.drivers.storpool import sp_name
from snapshotfsm.engine import Engine
from snapshotfsm.errors import ApiError, CloudRuntimeException, ServerDown
from snapshotfsm.faults import FaultPlan
from snapshotfsm.orchestration import storpool_recovery
from snapshotfsm.orchestration.storpool_recovery import RecoveryReport
from snapshotfsm.store.records import Snapshot, SnapshotDetail, SnapshotStoreRef, Workflow
from snapshotfsm.strategies.storpool import NO_STORE_ROLE, StorPoolSnapshotStrategy, ViewRow, view_rows

SYSTEM = 1
PLACEHOLDERS = {
    "storpool.snapshotExport": "Failed to export snapshot [{}] from [{}] due to [{}]",
    "storpool.snapshotFromRemote": "Failed to copy snapshot [{}] to [{}] due to [{}]",
    "storpool.snapshotReconcile": "Failed to reconcile snapshot [{}] from [{}] due to [{}]",
}
"""The strategy's error texts: String.format with log4j ``{}`` placeholders, which it never fills."""


def _path(cloud: StorPoolCloud, sid: int) -> str:
    snapshot = cloud.engine.get(Snapshot, sid)
    return f"/dev/storpool-byid/{cloud.pool_a.id}.{sid}.{snapshot.uuid[:8]}"


class TestCrossZoneCopy:
    """``createSnapshot`` of a StorPool volume with ``storageids`` or ``usestoragereplication``."""

    @pytest.mark.violates("counts-match-recount")
    def test_copy_to_a_pool_in_another_zone(self):
        """Export, detail, copy from remote, reconcile: the destination ref Ready at the source's path."""
        cloud = StorPoolCloud()
        sid = cloud.take(storage_ids=[cloud.pool_b.id])
        e = cloud.engine
        path = _path(cloud, sid)
        assert e.get(Snapshot, sid).status == "BackedUp"
        assert primary_refs(e, sid) == [(cloud.pool_a.id, "Ready", path), (cloud.pool_b.id, "Ready", path)]
        assert image_refs(e, sid) == [(cloud.image_a.id, "Ready")]
        assert zone_rows(e, sid) == [cloud.zone_a.id, cloud.zone_b.id]
        assert recovered(e) == [(sid, f"{sp_name(path)};loc-b")]
        assert sp_objects(e, e.get(Snapshot, sid)) == [
            (cloud.pool_a.id, "snapshot", "loc-b"),
            (cloud.pool_b.id, "snapshot", None),
        ]
        assert count(e, cloud.alice.id, "primary_storage") == SIZE
        assert count(e, cloud.alice.id, "secondary_storage") == PHYSICAL
        assert copy_usage(e, sid) == [(cloud.alice.id, cloud.zone_b.id, SIZE)]
        assert copy_failures(e) == []

    @pytest.mark.violates("counts-match-recount")
    def test_use_storage_replication_picks_the_pool_and_drops_the_zone_copy(self):
        """The zone's pool with use.storage.replication=true is the target; zoneids are cleared (no image copy)."""
        cloud = StorPoolCloud()
        cloud.engine.set_config("use.storage.replication", value=True, scope="StoragePool", scope_id=cloud.pool_b.id)
        sid = cloud.take(zone_ids=[cloud.zone_b.id], use_storage_replication=True)
        e = cloud.engine
        assert [r[:2] for r in primary_refs(e, sid)] == [(cloud.pool_a.id, "Ready"), (cloud.pool_b.id, "Ready")]
        assert image_refs(e, sid) == [(cloud.image_a.id, "Ready")]
        assert zone_rows(e, sid) == [cloud.zone_a.id, cloud.zone_b.id]
        assert copy_usage(e, sid) == [(cloud.alice.id, cloud.zone_b.id, SIZE)]

    def test_use_storage_replication_without_a_replicating_pool(self):
        """No pool of the zone has use.storage.replication: ``findFirst().get()`` throws in the create phase (530)."""
        cloud = StorPoolCloud()
        with pytest.raises(ApiError) as refused:
            cloud.engine.create_snapshot(
                cloud.volume.id, zone_ids=[cloud.zone_b.id], use_storage_replication=True, caller=cloud.root
            )
        assert (refused.value.code, refused.value.text) == (
            530,
            "No value present (java.util.NoSuchElementException from findFirst().get())",
        )

    @pytest.mark.violates("no-orphan-object", params=["storpool.snapshotReconcile-objects2-True"])
    @pytest.mark.parametrize(
        ("op", "objects", "detail"),
        [
            ("storpool.snapshotExport", [("a", "snapshot", None)], False),
            ("storpool.snapshotFromRemote", [("a", "snapshot", "loc-b")], True),
            ("storpool.snapshotReconcile", [("a", "snapshot", "loc-b"), ("b", "recovering", None)], True),
        ],
    )
    def test_a_failing_step_leaves_what_the_steps_before_it_did(self, op, objects, detail):
        """The destination ref is failed and deleted; no zone row, no count, no usage; earlier steps stay done."""
        cloud = StorPoolCloud(FaultPlan().fail(op))
        sid = cloud.take(storage_ids=[cloud.pool_b.id])
        e = cloud.engine
        path = _path(cloud, sid)
        pools = {"a": cloud.pool_a.id, "b": cloud.pool_b.id}
        assert e.get(Snapshot, sid).status == "BackedUp"
        assert primary_refs(e, sid) == [(cloud.pool_a.id, "Ready", path)]
        assert zone_rows(e, sid) == [cloud.zone_a.id]
        assert sp_objects(e, e.get(Snapshot, sid)) == [(pools[p], kind, to) for p, kind, to in objects]
        assert recovered(e) == ([(sid, f"{sp_name(path)};loc-b")] if detail else [])
        assert count(e, cloud.alice.id, "primary_storage") == 0
        assert copy_usage(e, sid) == []
        assert copy_failures(e) == [
            (
                "copies.copy_to_pool",
                "CloudRuntimeException",
                f"Copy snapshot ID: {sid} failed for primary storage {cloud.pool_b.id}: {PLACEHOLDERS[op]}",
            )
        ]
        dest = [r for r in e.history(machine="snapshot_store_ref") if r.entity_id == 3]
        assert [(r.source, r.event, r.dest) for r in dest] == [
            ("", "create", "Allocated"),
            ("Allocated", "CreateOnlyRequested", "Creating"),
            ("Creating", "OperationFailed", "Allocated"),
            ("Allocated", "SnapshotObject.deleteIfNotReady", ""),
        ]

    def test_no_cluster_location_on_the_destination(self):
        """``sp.cluster.location`` unset on the destination pool: nothing is exported and the copy fails.

        Upstream then completes the callback a second time with no error; that finds the ref already deleted.
        """
        cloud = StorPoolCloud(locations=("loc-a", None))
        sid = cloud.take(storage_ids=[cloud.pool_b.id])
        e = cloud.engine
        assert [r[:2] for r in primary_refs(e, sid)] == [(cloud.pool_a.id, "Ready")]
        assert zone_rows(e, sid) == [cloud.zone_a.id]
        assert recovered(e) == []
        assert sp_objects(e, e.get(Snapshot, sid)) == [(cloud.pool_a.id, "snapshot", None)]
        assert copy_failures(e) == [
            (
                "copies.copy_to_pool",
                "CloudRuntimeException",
                (
                    f"Copy snapshot ID: {sid} failed for primary storage {cloud.pool_b.id}: "
                    "The snapshot is not in the right location"
                ),
            )
        ]

    def test_a_throwing_api_call_stops_the_remaining_pools(self):
        """An exception (not an error answer): the destination ref is failed, the next pool is never tried."""
        cloud = StorPoolCloud(FaultPlan().fail("storpool.snapshotExport", kind="exception"))
        _, pool_c = cloud.add_zone("zone-c")
        sid = cloud.take(storage_ids=[cloud.pool_b.id, pool_c.id])
        e = cloud.engine
        assert [r[:2] for r in primary_refs(e, sid)] == [(cloud.pool_a.id, "Ready")]
        assert copy_failures(e) == [("copies.copy_to_pool", "CloudRuntimeException", f"Failed to copy snapshot{sid}")]
        assert [f.op for f in cloud.faults.fired] == ["storpool.snapshotExport"]

    @pytest.mark.violates("counts-match-recount")
    def test_pools_are_copied_in_turn(self):
        """Two destination zones: each pool copy exports to its own location, one detail per export."""
        cloud = StorPoolCloud()
        zone_c, pool_c = cloud.add_zone("zone-c")
        sid = cloud.take(storage_ids=[cloud.pool_b.id, pool_c.id])
        e = cloud.engine
        name = sp_name(_path(cloud, sid))
        assert [r[:2] for r in primary_refs(e, sid)] == [
            (cloud.pool_a.id, "Ready"),
            (cloud.pool_b.id, "Ready"),
            (pool_c.id, "Ready"),
        ]
        assert zone_rows(e, sid) == [cloud.zone_a.id, cloud.zone_b.id, zone_c.id]
        assert recovered(e) == [(sid, f"{name};loc-b"), (sid, f"{name};loc-zone-c")]
        assert count(e, cloud.alice.id, "primary_storage") == 2 * SIZE


BACKUP_OFF = {"snapshot.backup.to.secondary": False}
"""With backup off the task is scheduled with the COPY strategy (StorPool's) and copies (spec §5.4 step 8)."""


class TestBackupTaskPoolCopies:
    """``BackupSnapshotTask`` with pool ids copies with its strategy; a throw reaches ``runInContext`` (§7.2)."""

    @pytest.mark.violates("answer-matches-state", "counts-match-recount", "no-negative-count", "no-transitional-state")
    def test_with_backup_on_the_take_strategy_never_completes_the_copy(self):
        """Backup on: the task carries the TAKE strategy (Default), whose copySnapshot is empty: it waits for good.

        The destination ref stays Creating, nothing is exported, counted or retried, the snapshot stays
        CreatedOnPrimary with MS_ID, and nothing is left pending on the clock.
        """
        cloud = StorPoolCloud()
        sid = cloud.take(storage_ids=[cloud.pool_b.id], async_backup=True)
        e = cloud.engine
        e.run(until_ms=e.clock.now_ms + 3_600_000)
        assert _task_states(e) == ["Scheduled", "Running", "CopyingOnPools"]
        assert [r[:2] for r in primary_refs(e, sid)] == [(cloud.pool_a.id, "Ready"), (cloud.pool_b.id, "Creating")]
        snapshot = e.get(Snapshot, sid)
        assert (snapshot.status, snapshot.removed) == ("CreatedOnPrimary", None)
        assert [d.name for d in e.store.find(SnapshotDetail, "snapshot_id = ? AND name = 'MS_ID'", (sid,))] == ["MS_ID"]
        assert sp_objects(e, snapshot) == [(cloud.pool_a.id, "snapshot", None)]
        assert count(e, SYSTEM, "primary_storage") == 0
        assert copy_usage(e, sid) == []
        assert zone_rows(e, sid) == [cloud.zone_a.id]
        assert [
            (w.machine, w.state)
            for w in e.store.find(Workflow, "snapshot_id = ? AND machine = 'copy_snapshot'", (sid,))
        ] == [("copy_snapshot", "Selecting")]

    @pytest.mark.violates("counts-match-recount")
    def test_with_backup_on_and_no_async_the_job_copies_with_the_copy_strategy(self):
        """Without asyncbackup the job copies after post-processing, with the COPY strategy: StorPool's."""
        cloud = StorPoolCloud()
        sid = cloud.take(storage_ids=[cloud.pool_b.id])
        assert [r[:2] for r in primary_refs(cloud.engine, sid)] == [
            (cloud.pool_a.id, "Ready"),
            (cloud.pool_b.id, "Ready"),
        ]

    @pytest.mark.violates("counts-match-recount")
    def test_with_backup_off_the_copy_strategy_copies(self):
        """Backup off: the COPY strategy is looked up first and the task carries it; the snapshot is BackedUp."""
        cloud = StorPoolCloud(config=BACKUP_OFF)
        sid = cloud.take(storage_ids=[cloud.pool_b.id], async_backup=True)
        e = cloud.engine
        assert _task_states(e) == ["Scheduled", "Running", "CopyingOnPools", "Done"]
        assert [r[:2] for r in primary_refs(e, sid)] == [(cloud.pool_a.id, "Ready"), (cloud.pool_b.id, "Ready")]
        assert e.get(Snapshot, sid).status == "BackedUp"
        assert count(e, SYSTEM, "primary_storage") == 0  # account 1 is never counted

    def test_with_backup_off_and_no_copy_strategy_no_task_is_scheduled(self):
        """No COPY strategy (a pool that is not StorPool's): no task at all; the snapshot is marked BackedUp."""
        cloud = Cloud(config=BACKUP_OFF)
        volume = cloud.volume("kvm-rbd")
        other = cloud.pool("kvm-nfs")
        taken = cloud.take(volume, storage_ids=[other.id], async_backup=True)
        assert taken.status == "SUCCEEDED"
        assert taken.snapshot.status == "BackedUp"
        assert [row for row in cloud.engine.history() if row.machine == "backup_task"] == []

    @pytest.mark.violates("counts-match-recount")
    def test_a_throwing_copy_is_retried_after_the_interval(self):
        """The first try throws at the export: the task retries 300 s later and copies the snapshot."""
        cloud = StorPoolCloud(FaultPlan().fail("storpool.snapshotExport", kind="exception"), config=BACKUP_OFF)
        sid = cloud.take(storage_ids=[cloud.pool_b.id], async_backup=True)
        e = cloud.engine
        assert _task_states(e) == [
            "Scheduled",
            "Running",
            "CopyingOnPools",
            "RetryScheduled",
            "Running",
            "CopyingOnPools",
            "Done",
        ]
        task = [row for row in e.history() if row.machine == "backup_task"]
        assert task[4].at_ms - task[3].at_ms == 300_000
        assert [r[:2] for r in primary_refs(e, sid)] == [(cloud.pool_a.id, "Ready"), (cloud.pool_b.id, "Ready")]
        assert count(e, SYSTEM, "primary_storage") == 0  # account 1 is never counted
        assert e.get(Snapshot, sid).status == "BackedUp"

    def test_a_copy_failing_on_every_try_ends_in_a_cleanup_that_changes_nothing(self):
        """backup.retry + 1 tries, then cleanupOnSnapshotBackupFailure, whose transaction rolls back.

        The snapshot is BackedUp (marked so by the job): BackedUp has no OperationFailed, the cleanup throws and its
        transaction undoes the primary ref's Destroyed. The snapshot stays as it was, on pool A only.
        """
        cloud = StorPoolCloud(FaultPlan().fail("storpool.snapshotExport", kind="exception", times=4), config=BACKUP_OFF)
        sid = cloud.take(storage_ids=[cloud.pool_b.id], async_backup=True)
        e = cloud.engine
        assert [f.op for f in cloud.faults.fired] == ["storpool.snapshotExport"] * 4
        states = _task_states(e)
        assert states.count("CopyingOnPools") == 4
        assert states[-1] == "CleanedUp"
        assert [r[:2] for r in primary_refs(e, sid)] == [(cloud.pool_a.id, "Ready")]
        snapshot = e.get(Snapshot, sid)
        assert (snapshot.status, snapshot.removed) == ("BackedUp", None)

    def test_a_failed_answer_is_not_retried(self):
        """An error answer is only logged by copySnapshotOnPool: the task is done after one try."""
        cloud = StorPoolCloud(FaultPlan().fail("storpool.snapshotExport"), config=BACKUP_OFF)
        sid = cloud.take(storage_ids=[cloud.pool_b.id], async_backup=True)
        assert _task_states(cloud.engine) == ["Scheduled", "Running", "CopyingOnPools", "Done"]
        assert [r[:2] for r in primary_refs(cloud.engine, sid)] == [(cloud.pool_a.id, "Ready")]


def _task_states(e: Engine) -> list[str]:
    """The states the backup task went through, in order."""
    return [row.dest for row in e.history() if row.machine == "backup_task"]


class TestSystemCaller:
    """The pool copy charges primary_storage to the calling *user* id, read as an account id (spec §7.4).

    For the system's user (id 1) that is account 1, whose counts never move: no one is charged.
    """

    def test_a_scheduled_snapshot_charges_no_one(self):
        """The scheduler's job runs as user 1: neither the system account nor the owner is charged, no usage event."""
        cloud = StorPoolCloud()
        e = cloud.engine
        e.create_snapshot_policy(
            cloud.volume.id, interval="hourly", schedule="5", max_snaps=3, storage_ids=[cloud.pool_b.id]
        )
        e.start_background_tasks()
        e.run(until_ms=11 * 60_000)
        sid = e.store.find(Snapshot)[0].id
        assert [r[:2] for r in primary_refs(e, sid)] == [(cloud.pool_a.id, "Ready"), (cloud.pool_b.id, "Ready")]
        assert count(e, SYSTEM, "primary_storage") == 0  # account 1 is never counted
        assert count(e, cloud.alice.id, "primary_storage") == 0
        assert copy_usage(e, sid) == []

    @pytest.mark.violates("counts-match-recount")
    def test_the_async_backup_task_charges_no_one(self):
        """The backup task runs in the system context; with pool ids it only copies (no secondary backup)."""
        cloud = StorPoolCloud(config=BACKUP_OFF)
        sid = cloud.take(storage_ids=[cloud.pool_b.id], async_backup=True)
        e = cloud.engine
        assert e.get(Snapshot, sid).status == "BackedUp"
        assert image_refs(e, sid) == []
        assert [r[:2] for r in primary_refs(e, sid)] == [(cloud.pool_a.id, "Ready"), (cloud.pool_b.id, "Ready")]
        assert count(e, SYSTEM, "primary_storage") == 0  # account 1 is never counted
        assert copy_usage(e, sid) == []

    @pytest.mark.violates("charge-to-owner", "counts-match-recount")
    def test_an_admin_caller_gets_the_usage_event(self):
        """The usage event goes to the calling account, not to the snapshot's owner."""
        cloud = StorPoolCloud()
        job = cloud.engine.create_snapshot(cloud.volume.id, storage_ids=[cloud.pool_b.id], caller=cloud.root)
        cloud.engine.run()
        sid = job.instance_id or 0
        assert copy_usage(cloud.engine, sid) == [(cloud.root.id, cloud.zone_b.id, SIZE)]
        assert count(cloud.engine, cloud.root.id, "primary_storage") == SIZE


class TestRecoveryCheck:
    """``StorPoolSnapshotRecoveryCheck`` on the simulated clock (``storpool.snapshot.recovery.from.remote.check``)."""

    @pytest.mark.violates("counts-match-recount")
    def test_unexports_and_clears_the_detail_after_one_period(self):
        """Nothing before 300 s; at 300 s the snapshot is unexported and its detail deleted."""
        cloud = StorPoolCloud()
        sid = cloud.take(storage_ids=[cloud.pool_b.id])
        e = cloud.engine
        start = e.clock.now_ms
        e.start_background_tasks()
        e.run(until_ms=start + CHECK_MS - 1)
        assert len(recovered(e)) == 1
        assert sp_objects(e, e.get(Snapshot, sid))[0] == (cloud.pool_a.id, "snapshot", "loc-b")
        e.run(until_ms=start + CHECK_MS)
        assert recovered(e) == []
        assert sp_objects(e, e.get(Snapshot, sid)) == [
            (cloud.pool_a.id, "snapshot", None),
            (cloud.pool_b.id, "snapshot", None),
        ]

    @pytest.mark.violates("answer-matches-state", "counts-match-recount")
    def test_the_unexported_snapshot_can_be_deleted(self):
        """While exported, deleteSnapshot is refused ("exported to another cluster"); after the check it goes."""
        cloud = StorPoolCloud()
        sid = cloud.take(storage_ids=[cloud.pool_b.id])
        e = cloud.engine
        job = e.delete_snapshot(sid)
        e.run()
        status, code, text = answer(e, job.id)
        assert (status, code) == ("FAILED", 530)
        assert text.startswith(
            "Failed to delete snapshot:com.cloud.utils.exception.CloudRuntimeException: Cannot delete snapshot due to "
            "The snapshot [~"
        )
        assert "] was exported to another cluster. [snapshot ~" in text
        assert storpool_recovery.run_once(e.rt).removed_details == 1
        job = e.delete_snapshot(sid)
        e.run()
        assert answer(e, job.id)[0] == "SUCCEEDED"

    @pytest.mark.violates("no-orphan-object")
    def test_the_source_clusters_listing_unexports_a_copy_still_recovering(self):
        """Every zone's pool is listed, the source's too, where the snapshot is never recovering: it matches there.

        So a copy whose reconcile failed (still recovering in zone B) is unexported on the first run all the same.
        """
        cloud = StorPoolCloud(FaultPlan().fail("storpool.snapshotReconcile"))
        sid = cloud.take(storage_ids=[cloud.pool_b.id])
        e = cloud.engine
        name = sp_name(_path(cloud, sid))
        report = storpool_recovery.run_once(e.rt)
        assert report == RecoveryReport(
            zones=(cloud.zone_a.id, cloud.zone_b.id), unexported=(name,), removed_details=1, failed_zones=()
        )
        assert sp_objects(e, e.get(Snapshot, sid)) == [
            (cloud.pool_a.id, "snapshot", None),
            (cloud.pool_b.id, "recovering", None),
        ]

    @pytest.mark.violates("counts-match-recount")
    def test_the_engine_runs_the_check_on_demand_while_up(self):
        """``Engine.check_storpool_recovery`` is one run of the check; a server that is down refuses it."""
        cloud = StorPoolCloud()
        sid = cloud.take(storage_ids=[cloud.pool_b.id])
        e = cloud.engine
        e.crash()
        with pytest.raises(ServerDown, match="management server 1 is down"):
            e.check_storpool_recovery()
        assert recovered(e) == [(sid, f"{sp_name(_path(cloud, sid))};loc-b")]
        e.restart()
        assert e.check_storpool_recovery().removed_details == 1
        assert recovered(e) == []

    @pytest.mark.violates("no-orphan-object")
    def test_a_snapshot_still_recovering_is_left_alone(self):
        """When the source pool is not its zone's checked pool (the last one is), only the recovering copy is listed.

        Left alone while it recovers; unexported on the first run after the remote cluster finished.
        """
        cloud = StorPoolCloud(FaultPlan().fail("storpool.snapshotReconcile"))
        sid = cloud.take(storage_ids=[cloud.pool_b.id])
        e = cloud.engine
        cloud.add_pool(cloud.zone_a, "sp-a2", "loc-a")  # the last pool of zone A is the one checked
        name = sp_name(_path(cloud, sid))
        start = e.clock.now_ms
        e.start_background_tasks()
        e.run(until_ms=start + 2 * CHECK_MS)
        assert recovered(e) == [(sid, f"{name};loc-b")]
        assert sp_objects(e, e.get(Snapshot, sid)) == [
            (cloud.pool_a.id, "snapshot", "loc-b"),
            (cloud.pool_b.id, "recovering", None),
        ]
        assert cloud.driver(cloud.pool_b).snapshot_reconcile(name).result
        e.run(until_ms=start + 3 * CHECK_MS)
        assert recovered(e) == []
        assert sp_objects(e, e.get(Snapshot, sid)) == [
            (cloud.pool_a.id, "snapshot", None),
            (cloud.pool_b.id, "snapshot", None),
        ]

    @pytest.mark.violates("counts-match-recount")
    def test_an_unexport_error_keeps_the_detail_for_the_next_run(self):
        """An error answer keeps the detail; the next run retries and clears it."""
        cloud = StorPoolCloud(FaultPlan().fail("storpool.snapshotUnexport", times=2))
        sid = cloud.take(storage_ids=[cloud.pool_b.id])
        e = cloud.engine
        first = storpool_recovery.run_once(e.rt)
        assert (first.unexported, first.removed_details) == ((), 0)
        assert len(recovered(e)) == 1
        assert sp_objects(e, e.get(Snapshot, sid))[0][2] == "loc-b"
        second = storpool_recovery.run_once(e.rt)
        assert second.removed_details == 1
        assert recovered(e) == []

    @pytest.mark.violates("counts-match-recount")
    def test_a_failed_listing_aborts_only_that_zone(self):
        """Zone A's listing fails; zone B's pass still finds the name and unexports it on the owning cluster."""
        cloud = StorPoolCloud(FaultPlan().fail("storpool.snapshotsList"))
        sid = cloud.take(storage_ids=[cloud.pool_b.id])
        e = cloud.engine
        report = storpool_recovery.run_once(e.rt)
        assert report.failed_zones == (cloud.zone_a.id,)
        assert report.removed_details == 1
        assert sp_objects(e, e.get(Snapshot, sid))[0] == (cloud.pool_a.id, "snapshot", None)

    @pytest.mark.violates("counts-match-recount")
    def test_zero_disables_the_check(self):
        """``storpool.snapshot.recovery.from.remote.check`` = 0: never scheduled."""
        cloud = StorPoolCloud()
        cloud.engine.set_config("storpool.snapshot.recovery.from.remote.check", 0)
        cloud.take(storage_ids=[cloud.pool_b.id])
        e = cloud.engine
        e.start_background_tasks()
        assert all(t.label != "StorPoolSnapshotRecoveryCheck" for t in e.scheduler.pending())
        e.run(until_ms=e.clock.now_ms + 10 * CHECK_MS)
        assert len(recovered(e)) == 1

    @pytest.mark.violates("counts-match-recount")
    def test_a_crash_drops_the_check(self):
        """The check lives in the server's memory: after a crash and restart it runs only once started again."""
        cloud = StorPoolCloud()
        cloud.take(storage_ids=[cloud.pool_b.id])
        e = cloud.engine
        e.start_background_tasks()
        e.crash()
        e.restart()
        e.run(until_ms=e.clock.now_ms + 2 * CHECK_MS)
        assert len(recovered(e)) == 1
        e.start_background_tasks()
        e.run(until_ms=e.clock.now_ms + CHECK_MS)
        assert recovered(e) == []

    def test_no_detail_does_nothing(self):
        """No SP_RECOVERED_SNAPSHOT detail: the run returns before listing any cluster."""
        cloud = StorPoolCloud()
        cloud.take()
        assert storpool_recovery.run_once(cloud.engine.rt) == RecoveryReport()


class TestDelete:
    """``StorPoolSnapshotStrategy.deleteSnapshot`` (spec §8): what each StorPool answer leaves behind."""

    @staticmethod
    def _taken(**config: object) -> tuple[Cloud, int]:
        cloud = Cloud(config=config or None, faults=FaultPlan())
        return cloud, cloud.take(cloud.volume("storpool")).snapshot.id

    def test_the_backup_on_secondary_is_deleted_and_hidden_from_listings(self):
        """The image ref's path is not StorPool's, so the chain delete removes the file; the ref gets display=0."""
        cloud, sid = self._taken()
        assert delete(cloud, sid)[0] == "SUCCEEDED"
        assert snapshot(cloud.engine, sid) == ("Destroyed", False)
        assert stored(cloud.engine, sid) == [("primary", False), ("image", False)]
        [image] = cloud.engine.store.find(SnapshotStoreRef, "snapshot_id = ?", (sid,))
        assert (image.store_role, image.state, image.display) == ("Image", "Destroyed", False)

    @pytest.mark.violates("counts-match-recount")
    def test_a_storpool_snapshot_already_gone_counts_as_deleted(self):
        """objectDoesNotExist returns true at once: the primary ref stays Destroying, no row rule runs.

        Every ref left is then Destroyed or Destroying, so the snapshot is written Destroyed.
        """
        cloud, sid = self._taken(**{"snapshot.backup.to.secondary": False})
        driver = cloud.engine.rt.drivers.primary(cloud.pool("storpool"))
        for obj in driver.objects():
            driver.drop(obj)
        assert delete(cloud, sid)[0] == "SUCCEEDED"
        assert refs(cloud.engine, sid) == [("Primary", "Destroying")]
        assert snapshot(cloud.engine, sid) == ("Destroyed", False)

    @pytest.mark.violates("answer-matches-state", "usage-matches-objects")
    def test_another_storpool_error_fails_the_refs_and_the_delete(self):
        """A StorPool error other than those two: res=false, the primary refs fail (stay Destroying), nothing else.

        With a Ready backup left on secondary the strategy returns false: "Failed to delete Snapshot" (530).
        """
        cloud = Cloud(faults=FaultPlan().fail("storpool.snapshotDelete"))
        sid = cloud.take(cloud.volume("storpool")).snapshot.id
        assert delete(cloud, sid) == ("FAILED", 530, "Failed to delete Snapshot")
        assert refs(cloud.engine, sid) == [("Primary", "Destroying"), ("Image", "Ready")]
        assert snapshot(cloud.engine, sid) == ("BackedUp", False)
        assert stored(cloud.engine, sid) == [("primary", True), ("image", True)]

    @pytest.mark.violates("counts-match-recount")
    def test_another_storpool_error_without_a_backup_still_destroys_the_row(self):
        """Only the (Destroying) primary ref is left, so the sweep writes Destroyed: the job succeeds, the
        StorPool snapshot stays on the array."""
        cloud = Cloud(
            faults=FaultPlan().fail("storpool.snapshotDelete"), config={"snapshot.backup.to.secondary": False}
        )
        sid = cloud.take(cloud.volume("storpool")).snapshot.id
        assert delete(cloud, sid)[0] == "SUCCEEDED"
        assert snapshot(cloud.engine, sid) == ("Destroyed", False)
        assert stored(cloud.engine, sid) == [("primary", True)]

    @pytest.mark.violates("counts-match-recount")
    def test_a_zone_delete_deletes_only_that_zones_copy(self):
        """With a zone, only that zone's primary row of ``snapshot_view`` is deleted; the source stays as it was."""
        cloud = StorPoolCloud()
        sid = cloud.take(storage_ids=[cloud.pool_b.id])
        e = cloud.engine
        job = e.delete_snapshot(sid, zone_id=cloud.zone_b.id)
        e.run()
        assert answer(e, job.id)[0] == "SUCCEEDED"
        assert [r[:2] for r in primary_refs(e, sid)] == [(cloud.pool_a.id, "Ready")]
        assert e.get(Snapshot, sid).status == "BackedUp"

    @pytest.mark.violates("counts-match-recount")
    def test_hidden_refs_are_not_storpools_to_delete(self):
        """``canHandle`` reads ``snapshot_view``, which joins only displayed refs: with every ref hidden the snapshot
        is not on StorPool as far as the factory knows, and the default strategy deletes it, Snapshot events and all.
        """
        cloud, sid = self._taken(**{"snapshot.backup.to.secondary": False})
        e = cloud.engine
        for ref in e.store.find(SnapshotStoreRef, "snapshot_id = ?", (sid,)):
            e.store.update(ref, display=False)
        assert delete(cloud, sid)[0] == "SUCCEEDED"
        deleted = [(r.event, r.dest) for r in e.history(snapshot=sid) if r.machine == "snapshot"][-3:]
        assert deleted == [
            ("DestroyRequested", "Destroying"),
            ("OperationSucceeded", "Destroyed"),
            ("DefaultSnapshotStrategy.updateSnapshotToDestroyed", "Destroyed"),
        ]

    @pytest.mark.violates("answer-matches-state", "counts-match-recount", "no-orphan-object")
    def test_the_views_empty_row_has_no_store_role(self):
        """With no ref to show, a snapshot still has one row per zone, with no store role; a removed one has none.

        The delete loop dereferences that role (reached only by calling the strategy: the factory never picks it
        for such a snapshot).
        """
        cloud, sid = self._taken(**{"snapshot.backup.to.secondary": False})
        e = cloud.engine
        env = e.rt.strategy_env
        zone = cloud.zone.id
        assert view_rows(env, sid, None) == [ViewRow("Primary", cloud.pool("storpool").id, zone)]
        for ref in e.store.find(SnapshotStoreRef, "snapshot_id = ?", (sid,)):
            e.store.update(ref, display=False)
        assert view_rows(env, sid, None) == [ViewRow(None, None, zone)]
        assert view_rows(env, sid, zone + 1) == []
        with pytest.raises(CloudRuntimeException) as caught:
            next(StorPoolSnapshotStrategy().delete(env, sid, None))
        assert caught.value.message == f"Cannot delete snapshot due to {NO_STORE_ROLE}"
        e.store.remove(e.get(Snapshot, sid), by="test")
        assert view_rows(env, sid, None) == []

    @pytest.mark.violates("counts-match-recount")
    def test_the_detail_removed_is_the_row_whose_id_is_the_snapshot_id(self):
        """deleteSnapshotFromDbIfNeeded calls remove(snapshotId) on snapshot_details: a primary-key delete.

        Deleting snapshot 2 removes detail row 2, which belongs to snapshot 1; snapshot 2's own name detail stays.
        """
        cloud = Cloud(config={"snapshot.backup.to.secondary": False})
        volume = cloud.volume("storpool")
        first = cloud.take(volume).snapshot
        second = cloud.take(volume).snapshot
        row_2 = cloud.engine.get(SnapshotDetail, second.id)
        assert row_2.snapshot_id == first.id
        assert delete(cloud, second.id)[0] == "SUCCEEDED"
        assert cloud.engine.store.first(SnapshotDetail, "id = ?", (second.id,)) is None
        assert second.uuid in details(cloud.engine, second.id)
