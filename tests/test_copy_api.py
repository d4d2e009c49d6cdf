"""The ``copySnapshot`` API (spec §7.4): ``Engine.copy_snapshot``, a job running ``SnapshotManagerImpl.copySnapshot``.

Every check runs in the job, in CloudStack's order; a refusal FAILS the job with PARAM_ERROR (431) for an
InvalidParameterValueException and INTERNAL_ERROR (530) for anything else, and copies nothing. The job copies to the
pools first (StorPool, through the COPY strategy), then to the zones (the secondary chain copy), and fails only if
every zone failed and there was no pool copy. ``@ActionEvent(SNAPSHOT.COPY)`` brackets it: Scheduled at submission,
then "Successfully completed copying snapshot. ..." or "Error while copying snapshot. ..." (ERROR).
"""

from __future__ import annotations

import json

import pytest
from cloud import PHYSICAL, SIZE, Cloud
from helpers_storpool import StorPoolCloud, copy_events, copy_usage, count, image_refs, primary_refs, zone_rows
from lifecycle_cloud import answer, second_zone

from snapshotfsm.errors import InvalidValue
from snapshotfsm.faults import FaultPlan
from snapshotfsm.store.records import AsyncJob, Snapshot, Workflow, Zone

CMD = "org.apache.cloudstack.api.command.user.snapshot.CopySnapshotCmd"


def _xen(faults: FaultPlan | None = None, *, zones: int = 1, **kwargs: object) -> tuple[Cloud, list[Zone], Snapshot]:
    """A XenServer cloud with ``zones`` more zones and alice's BackedUp snapshot in zone1."""
    cloud = Cloud(faults=faults, **kwargs)  # type: ignore[arg-type]
    more = [second_zone(cloud, f"zone{n}") for n in range(2, zones + 2)]
    return cloud, more, cloud.take(cloud.volume("xen-nfs")).snapshot


def _copy(cloud: Cloud | StorPoolCloud, snapshot_id: int, **kwargs: object) -> tuple[str, int, str | None]:
    """``copySnapshot``, run until idle: the job's status, code and text."""
    job = cloud.engine.copy_snapshot(snapshot_id, **kwargs)  # type: ignore[arg-type]
    cloud.engine.run()
    return answer(cloud.engine, job.id)


def _details(snapshot: Snapshot, zones: list[Zone]) -> str:
    """``CopySnapshotCmd.getEventDescription``: each zone uuid then ", ", with only the trailing space deleted."""
    return f"Copying snapshot with ID: {snapshot.uuid} to zones: [" + "".join(f"{z.uuid}, " for z in zones)[:-1] + "]"


class TestValidation:
    """The job's checks, in ``CopySnapshotCmd.execute`` then ``SnapshotManagerImpl.copySnapshot`` order."""

    def test_an_unknown_snapshot(self):
        """``findById`` finds nothing: 431, and the Scheduled event is the system account's."""
        cloud, (z2,), _ = _xen()
        assert _copy(cloud, 99, dest_zone_ids=[z2.id]) == ("FAILED", 431, "Unable to find snapshot with id")
        assert [(e[0], e[3]) for e in copy_events(cloud.engine)] == [("Scheduled", 1), ("Completed", 1)]

    @pytest.mark.violates("counts-match-recount", "usage-matches-objects", params=["backing up"])
    @pytest.mark.parametrize(
        "how",
        ["destroyed", "backing up", "primary location"],
    )
    def test_not_backed_up(self, how):
        """Not BackedUp, or a location type other than SECONDARY: "Snapshot is not backed up" (431) both times."""
        if how == "destroyed":
            cloud, (z2,), snapshot = _xen()
            cloud.engine.delete_snapshot(snapshot.id)
            cloud.engine.run()
        elif how == "backing up":
            cloud, (z2,), snapshot = _xen(FaultPlan().fail("copyAsync", kind="no_answer"))
        else:
            cloud = Cloud()
            z2 = second_zone(cloud)
            snapshot = cloud.take(cloud.volume("solidfire")).snapshot
            assert (snapshot.status, snapshot.location_type) == ("BackedUp", "PRIMARY")
        assert _copy(cloud, snapshot.id, dest_zone_ids=[z2.id]) == ("FAILED", 431, "Snapshot is not backed up")

    @pytest.mark.parametrize(
        ("kwargs", "text"),
        [
            ({"dest_zone_ids": []}, "Please specify valid destination zone(s)."),
            ({"dest_zone_ids": ["z1", "z2"]}, "Please specify different source and destination zones."),
            ({"dest_zone_ids": ["z2"], "source_zone_id": 99}, "Please specify a valid source zone."),
            ({"dest_zone_ids": ["z2", 99]}, "Please specify a valid destination zone."),
        ],
    )
    def test_zone_refusals(self, kwargs, text):
        """Empty destinations, the source among them, an unknown source or destination zone: 431."""
        cloud, (z2,), snapshot = _xen()
        ids = {"z1": cloud.zone.id, "z2": z2.id}
        kwargs = {k: [ids.get(z, z) for z in v] if isinstance(v, list) else v for k, v in kwargs.items()}
        assert _copy(cloud, snapshot.id, **kwargs) == ("FAILED", 431, text)
        assert image_refs(cloud.engine, snapshot.id) == [(1, "Ready")]

    @pytest.mark.violates("counts-match-recount")
    def test_a_disabled_zone(self):
        """A Disabled destination refuses a user (PermissionDenied: 530 in the job) and lets a root admin through."""
        cloud, (z2,), snapshot = _xen()
        z3 = cloud.engine.add_zone("zone3", enabled=False)
        cloud.engine.add_image_store(z3, "zone3-secondary")
        text = "Cannot perform this operation, Zone is currently disabled: zone3"
        assert _copy(cloud, snapshot.id, dest_zone_ids=[z2.id, z3.id]) == ("FAILED", 530, text)
        assert _copy(cloud, snapshot.id, dest_zone_ids=[z2.id, z3.id], caller=cloud.root)[0] == "SUCCEEDED"
        assert zone_rows(cloud.engine, snapshot.id) == [cloud.zone.id, z2.id, z3.id]

    def test_an_edge_zone(self):
        """An Edge destination: "Snapshot copy is not supported by zone <name>" (431)."""
        cloud, _, snapshot = _xen(zones=0)
        edge = cloud.engine.add_zone("edge1", type="Edge")
        assert _copy(cloud, snapshot.id, dest_zone_ids=[edge.id]) == (
            "FAILED",
            431,
            "Snapshot copy is not supported by zone edge1",
        )

    def test_another_accounts_snapshot(self):
        """bob may not copy alice's snapshot: 530 (a PermissionDeniedException is not mapped in the job)."""
        cloud, (z2,), snapshot = _xen()
        assert _copy(cloud, snapshot.id, dest_zone_ids=[z2.id], caller=cloud.bob) == (
            "FAILED",
            530,
            "Caller does not have permission to operate with provided resource.",
        )

    def test_the_zone_checks_come_before_access(self):
        """bob and an Edge zone: the zone's refusal is the one answered."""
        cloud, _, snapshot = _xen(zones=0)
        edge = cloud.engine.add_zone("edge1", type="Edge")
        status = _copy(cloud, snapshot.id, dest_zone_ids=[edge.id], caller=cloud.bob)
        assert status == ("FAILED", 431, "Snapshot copy is not supported by zone edge1")

    def test_not_on_an_image_store(self):
        """Backup to secondary off: the snapshot is BackedUp on primary only, with no pool copy: 431."""
        cloud, (z2,), snapshot = _xen(config={"snapshot.backup.to.secondary": False})
        assert _copy(cloud, snapshot.id, dest_zone_ids=[z2.id]) == (
            "FAILED",
            431,
            f"There is no snapshot ID: {snapshot.uuid} ready on image store",
        )

    def test_replication_without_destinations(self):
        """execute()'s own check (it needs usestoragereplication); copySnapshot never runs, so no ERROR event."""
        cloud = StorPoolCloud()
        sid = cloud.take()
        assert _copy(cloud, sid, dest_zone_ids=[], use_storage_replication=True) == (
            "FAILED",
            431,
            "Either destzoneid or destzoneids parameters have to be specified.",
        )
        assert [e[0] for e in copy_events(cloud.engine)] == ["Scheduled"]

    def test_replication_from_a_pool_that_cannot_copy(self):
        """usestoragereplication on a XenServer/NFS snapshot: the pool's driver lacks the capability (431)."""
        cloud, (z2,), snapshot = _xen()
        assert _copy(cloud, snapshot.id, dest_zone_ids=[z2.id], use_storage_replication=True) == (
            "FAILED",
            431,
            "The storage pool does not support copy between zones",
        )

    def test_two_pools_in_one_zone(self):
        """``checkIfThereAreMoreThanOnePoolInTheZone``: CloudRuntimeException (530)."""
        cloud = StorPoolCloud()
        sid = cloud.take()
        pool_b2 = cloud.add_pool(cloud.zone_b, "sp-b2", "loc-b")
        status = _copy(cloud, sid, dest_zone_ids=[cloud.zone_b.id], storage_ids=[cloud.pool_b.id, pool_b2.id])
        assert status == ("FAILED", 530, "Cannot copy the snapshot on multiple storage pools in one zone")
        assert [r[0] for r in primary_refs(cloud.engine, sid)] == [cloud.pool_a.id]

    def test_a_refusal_writes_the_error_event(self):
        """Scheduled (owner's account) then Completed ERROR "Error while copying snapshot. <details>" (caller's)."""
        cloud, (z2,), snapshot = _xen()
        _copy(cloud, snapshot.id, dest_zone_ids=[cloud.zone.id, z2.id], caller=cloud.root)
        details = _details(snapshot, [cloud.zone, z2])
        assert copy_events(cloud.engine) == [
            ("Scheduled", "INFO", cloud.root.id, cloud.alice.id, details),
            ("Completed", "ERROR", cloud.root.id, cloud.root.id, f"Error while copying snapshot. {details}"),
        ]

    @pytest.mark.parametrize(
        "kwargs",
        [
            {"dest_zone_ids": "2"},
            {"dest_zone_ids": [True]},
            {"dest_zone_ids": [2], "source_zone_id": "1"},
            {"dest_zone_ids": [2], "use_storage_replication": 1},
        ],
    )
    def test_arguments_of_the_wrong_type(self, kwargs):
        """The tool's own bad input raises InvalidValue before anything is written."""
        cloud, _, snapshot = _xen()
        dump = cloud.dump()
        with pytest.raises(InvalidValue):
            cloud.engine.copy_snapshot(snapshot.id, **kwargs)
        assert cloud.dump() == dump


class TestOutcomes:
    """What a copy leaves: the job's answer, refs, zone rows, counters, usage and action events."""

    @pytest.mark.violates("counts-match-recount")
    def test_copy_to_one_zone(self):
        """The job SUCCEEDS with the SnapshotResponse; the zone has the copy; the owner is charged the ref's size."""
        cloud, (z2,), snapshot = _xen()
        sid = snapshot.id
        job = cloud.engine.copy_snapshot(sid, dest_zone_ids=[z2.id])
        assert (job.job_cmd, job.instance_type, job.instance_id, job.user_id, job.account_id) == (
            CMD,
            "Snapshot",
            sid,
            cloud.alice.id,
            cloud.alice.id,
        )
        assert json.loads(job.job_cmd_info) == {
            "id": sid,
            "sourcezoneid": None,
            "destzoneids": [z2.id],
            "storageids": [],
            "usestoragereplication": False,
        }
        cloud.engine.run()
        row = cloud.engine.get(AsyncJob, job.id)
        body = {"id": snapshot.uuid, "name": snapshot.name, "state": "BackedUp", "snapshottype": "MANUAL"}
        assert (cloud.engine.job_status(job.id), row.job_result_code, row.job_result) == (
            "SUCCEEDED",
            0,
            "org.apache.cloudstack.api.response.SnapshotResponse/snapshot/" + json.dumps(body, separators=(",", ":")),
        )
        assert image_refs(cloud.engine, sid) == [(1, "Ready"), (2, "Ready")]
        assert zone_rows(cloud.engine, sid) == [cloud.zone.id, z2.id]
        assert cloud.counts() == {"snapshot": 1, "primary_storage": 0, "secondary_storage": PHYSICAL + SIZE}
        assert copy_usage(cloud.engine, sid) == [(cloud.alice.id, z2.id, SIZE)]
        details = _details(snapshot, [z2])
        assert copy_events(cloud.engine) == [
            ("Scheduled", "INFO", cloud.alice.id, cloud.alice.id, details),
            (
                "Completed",
                "INFO",
                cloud.alice.id,
                cloud.alice.id,
                f"Successfully completed copying snapshot. {details}",
            ),
        ]
        assert cloud.engine.get(Snapshot, sid).status == "BackedUp"
        flows = cloud.engine.store.find(Workflow, "machine LIKE 'copy%'")
        assert [(w.machine, w.state) for w in flows] == [
            ("copy_snapshot_job", "Succeeded"),
            ("copy_snapshot", "Finished"),
        ]
        assert flows[0].job_id == job.id

    @pytest.mark.violates("counts-match-recount")
    def test_one_zone_of_two_fails(self):
        """The job SUCCEEDS when some zone was copied; the failed zone has nothing."""
        cloud, (z2, z3), snapshot = _xen(FaultPlan().fail("createAsync", nth=2), zones=2)
        sid = snapshot.id
        assert _copy(cloud, sid, dest_zone_ids=[z2.id, z3.id])[:2] == ("SUCCEEDED", 0)
        assert zone_rows(cloud.engine, sid) == [cloud.zone.id, z2.id]
        assert copy_usage(cloud.engine, sid) == [(cloud.alice.id, z2.id, SIZE)]

    def test_every_zone_fails(self):
        """No zone copied and no pool: "Failed to copy snapshot" (530) and the ERROR event."""
        cloud, (z2, z3), snapshot = _xen(FaultPlan().fail("createAsync", times=2), zones=2)
        sid = snapshot.id
        assert _copy(cloud, sid, dest_zone_ids=[z2.id, z3.id]) == ("FAILED", 530, "Failed to copy snapshot")
        assert image_refs(cloud.engine, sid) == [(1, "Ready")]
        assert copy_events(cloud.engine)[-1][:2] == ("Completed", "ERROR")
        assert cloud.counts()["secondary_storage"] == PHYSICAL

    @pytest.mark.violates("counts-match-recount")
    def test_zones_are_copied_once_each_in_id_order(self):
        """The zones go through a HashMap keyed by id: a repeated zone is copied once, and in ascending id order."""
        cloud, (z2, z3), snapshot = _xen(zones=2)
        sid = snapshot.id
        assert _copy(cloud, sid, dest_zone_ids=[z3.id, z2.id, z3.id])[0] == "SUCCEEDED"
        assert image_refs(cloud.engine, sid) == [(1, "Ready"), (2, "Ready"), (3, "Ready")]

    @pytest.mark.violates("answer-matches-state", "counts-match-recount")
    def test_a_zone_without_image_store(self):
        """StorageUnavailableException: RESOURCE_UNAVAILABLE_ERROR (534); zones copied before it keep their copy."""
        cloud, (z2,), snapshot = _xen()
        bare = cloud.engine.add_zone("zone3")
        sid = snapshot.id
        assert _copy(cloud, sid, dest_zone_ids=[bare.id, z2.id]) == (
            "FAILED",
            534,
            f"Resource [DataCenter:{bare.id}] is unreachable: Destination zone is not ready, no image store associated",
        )
        assert zone_rows(cloud.engine, sid) == [cloud.zone.id, z2.id]
        assert copy_events(cloud.engine)[-1][:2] == ("Completed", "ERROR")

    @pytest.mark.violates("counts-match-recount")
    def test_a_copy_from_another_source_zone(self):
        """``sourcezoneid`` names where to copy from: a copy in zone2 is copied on to zone3."""
        cloud, (z2, z3), snapshot = _xen(zones=2)
        sid = snapshot.id
        _copy(cloud, sid, dest_zone_ids=[z2.id])
        assert _copy(cloud, sid, dest_zone_ids=[z3.id], source_zone_id=z2.id)[0] == "SUCCEEDED"
        assert image_refs(cloud.engine, sid) == [(1, "Ready"), (2, "Ready"), (3, "Ready")]

    def test_a_source_zone_without_the_snapshot(self):
        """``sourcezoneid`` where the snapshot is on no image store: "There is no snapshot ID ..." (431)."""
        cloud, (z2, z3), snapshot = _xen(zones=2)
        assert _copy(cloud, snapshot.id, dest_zone_ids=[z3.id], source_zone_id=z2.id) == (
            "FAILED",
            431,
            f"There is no snapshot ID: {snapshot.uuid} ready on image store",
        )


class TestPoolCopies:
    """StorPool pools in the destination zones (``storageids``, ``usestoragereplication``)."""

    @pytest.mark.violates("counts-match-recount")
    def test_pool_then_zone(self):
        """The pool copy first, then the zone's image store: both in zone B."""
        cloud = StorPoolCloud()
        sid = cloud.take()
        status = _copy(cloud, sid, dest_zone_ids=[cloud.zone_b.id], storage_ids=[cloud.pool_b.id])
        assert status[:2] == ("SUCCEEDED", 0)
        e = cloud.engine
        assert [r[:2] for r in primary_refs(e, sid)] == [(cloud.pool_a.id, "Ready"), (cloud.pool_b.id, "Ready")]
        assert image_refs(e, sid) == [(cloud.image_a.id, "Ready"), (cloud.image_b.id, "Ready")]
        assert zone_rows(e, sid) == [cloud.zone_a.id, cloud.zone_b.id]
        assert count(e, cloud.alice.id, "primary_storage") == SIZE
        assert count(e, cloud.alice.id, "secondary_storage") == PHYSICAL + SIZE
        assert copy_usage(e, sid) == [(cloud.alice.id, cloud.zone_b.id, SIZE), (cloud.alice.id, cloud.zone_b.id, SIZE)]

    @pytest.mark.violates("counts-match-recount")
    def test_replication_copies_to_the_pool_only(self):
        """usestoragereplication: the replicating pool of each zone; the zones themselves are cleared."""
        cloud = StorPoolCloud()
        cloud.engine.set_config("use.storage.replication", value=True, scope="StoragePool", scope_id=cloud.pool_b.id)
        sid = cloud.take()
        assert _copy(cloud, sid, dest_zone_ids=[cloud.zone_b.id], use_storage_replication=True)[0] == "SUCCEEDED"
        assert [r[:2] for r in primary_refs(cloud.engine, sid)][-1] == (cloud.pool_b.id, "Ready")
        assert image_refs(cloud.engine, sid) == [(cloud.image_a.id, "Ready")]

    def test_a_failed_pool_copy_still_succeeds(self):
        """A pool copy counts whatever its outcome: the export fails, the job SUCCEEDS with nothing copied."""
        cloud = StorPoolCloud(FaultPlan().fail("storpool.snapshotExport"))
        cloud.engine.set_config("use.storage.replication", value=True, scope="StoragePool", scope_id=cloud.pool_b.id)
        sid = cloud.take()
        assert _copy(cloud, sid, dest_zone_ids=[cloud.zone_b.id], use_storage_replication=True)[0] == "SUCCEEDED"
        assert [r[0] for r in primary_refs(cloud.engine, sid)] == [cloud.pool_a.id]
        assert zone_rows(cloud.engine, sid) == [cloud.zone_a.id]

    def test_a_throwing_pool_copy_fails_the_job_before_the_zones(self):
        """A strategy that throws: "Failed to copy snapshot<id>" (530); the zone copy never starts."""
        cloud = StorPoolCloud(FaultPlan().fail("storpool.snapshotExport", kind="exception"))
        sid = cloud.take()
        status = _copy(cloud, sid, dest_zone_ids=[cloud.zone_b.id], storage_ids=[cloud.pool_b.id])
        assert status == ("FAILED", 530, f"Failed to copy snapshot{sid}")
        assert image_refs(cloud.engine, sid) == [(cloud.image_a.id, "Ready")]

    @pytest.mark.violates("answer-matches-state")
    def test_no_image_store_copy_with_a_pool_then_a_zone(self):
        """Backup off: the pool copy passes the image-store check and is made, then the zone copy dereferences the
        missing source store: a NullPointerException fails the job (530) with the pool copy done.
        """
        cloud = StorPoolCloud(config={"snapshot.backup.to.secondary": False})
        sid = cloud.take()
        assert image_refs(cloud.engine, sid) == []
        assert _copy(cloud, sid, dest_zone_ids=[cloud.zone_b.id], storage_ids=[cloud.pool_b.id]) == (
            "FAILED",
            530,
            (
                'Cannot invoke "org.apache.cloudstack.engine.subsystem.api.storage.DataStore.getId()" because '
                '"srcSecStore" is null'
            ),
        )
        assert [r[:2] for r in primary_refs(cloud.engine, sid)] == [
            (cloud.pool_a.id, "Ready"),
            (cloud.pool_b.id, "Ready"),
        ]
        assert zone_rows(cloud.engine, sid) == [cloud.zone_a.id, cloud.zone_b.id]

    @pytest.mark.violates("answer-matches-state", "counts-match-recount", "no-transitional-state")
    def test_replication_skips_the_backed_up_check(self):
        """With usestoragereplication a snapshot that is not BackedUp may be copied (here CreatedOnPrimary)."""
        cloud = StorPoolCloud()
        _, pool_c = cloud.add_zone("zone-c")
        cloud.engine.set_config("use.storage.replication", value=True, scope="StoragePool", scope_id=pool_c.id)
        sid = cloud.take(storage_ids=[cloud.pool_b.id], async_backup=True)
        assert cloud.engine.get(Snapshot, sid).status == "CreatedOnPrimary"
        zone_c = cloud.engine.get(Zone, pool_c.data_center_id)
        assert _copy(cloud, sid, dest_zone_ids=[zone_c.id], use_storage_replication=True)[0] == "SUCCEEDED"
        assert [r[0] for r in primary_refs(cloud.engine, sid)] == [cloud.pool_a.id, cloud.pool_b.id, pool_c.id]


class TestCrash:
    """The job lives in the server's memory; the restart cleanup fails what it left (spec §10.1)."""

    @pytest.mark.violates("answer-matches-state", "no-orphan-object", "no-transitional-state")
    def test_a_crash_while_copying_fails_the_job_at_restart(self):
        """Crashed while the zone copy was in flight: the job is cancelled (530); the Creating ref stays."""
        cloud, (z2,), snapshot = _xen(FaultPlan().crash("copy_snapshot.ZoneAnswered"))
        sid = snapshot.id
        job = cloud.engine.copy_snapshot(sid, dest_zone_ids=[z2.id])
        cloud.engine.run()
        assert cloud.engine.crashes == ["copy_snapshot.ZoneAnswered"]
        cloud.engine.restart()
        assert answer(cloud.engine, job.id) == (
            "FAILED",
            530,
            "job cancelled because of management server restart or shutdown",
        )
        assert image_refs(cloud.engine, sid) == [(1, "Ready"), (2, "Creating")]
        assert cloud.engine.get(Snapshot, sid).status == "BackedUp"
