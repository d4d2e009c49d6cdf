"""Copies of a new snapshot to other zones' image stores: ``copyNewSnapshotToZones`` (spec §7.4).

After a sync backup, ``createSnapshot`` with ``zoneids`` copies the snapshot to each zone in turn: the missing part of
its chain, oldest first, through a download URL and the destination image store's ``createAsync``. A zone that fails
is only logged; the take job still SUCCEEDS and the snapshot's own state never changes. Each copied snapshot adds a
``snapshot_zone_ref`` row, the source image ref's size to the owner's secondary_storage, and a SNAPSHOT.COPY usage
event. The action events bracket the whole: Started, then Completed INFO or, when every zone failed, ERROR.
"""

from __future__ import annotations

import itertools

import pytest
from cloud import PHYSICAL, SIZE, Cloud
from helpers_storpool import copy_events, copy_failures, copy_usage, image_refs, zone_rows
from lifecycle_cloud import second_zone

from snapshotfsm.faults import FaultPlan
from snapshotfsm.store.records import Snapshot, SnapshotStoreRef, StorageObject, Zone

INJECTED = "createAsync failed on image (injected fault)"


def _xen(faults: FaultPlan | None = None, *, zones: int = 2) -> tuple[Cloud, list[Zone]]:
    """A XenServer cloud with ``zones`` more zones (zone2, zone3, ...), each with its own image store."""
    cloud = Cloud(faults=faults)
    return cloud, [second_zone(cloud, f"zone{n}") for n in range(2, zones + 2)]


def _image_ref(cloud: Cloud, snapshot_id: int, store_id: int) -> SnapshotStoreRef:
    ref = cloud.engine.store.first(
        SnapshotStoreRef, "snapshot_id = ? AND store_role = 'Image' AND store_id = ?", (snapshot_id, store_id)
    )
    assert ref is not None
    return ref


class TestZoneCopies:
    """``createSnapshot`` with ``zoneids`` on a XenServer volume (sync backup)."""

    @pytest.mark.violates("counts-match-recount")
    def test_two_zones_copied(self):
        """Both zones get an image ref, a zone row, the ref's size in secondary_storage and a usage event."""
        cloud, (z2, z3) = _xen()
        taken = cloud.take(cloud.volume("xen-nfs"), zone_ids=[z2.id, z3.id])
        sid = taken.snapshot.id
        assert taken.status == "SUCCEEDED"
        assert taken.snapshot.status == "BackedUp"
        assert image_refs(cloud.engine, sid) == [(1, "Ready"), (2, "Ready"), (3, "Ready")]
        assert zone_rows(cloud.engine, sid) == [cloud.zone.id, z2.id, z3.id]
        # The increment is the source image ref's size (the volume's), not its physical size.
        assert cloud.counts()["secondary_storage"] == PHYSICAL + 2 * SIZE
        assert copy_usage(cloud.engine, sid) == [(cloud.alice.id, z2.id, SIZE), (cloud.alice.id, z3.id, SIZE)]
        uuid = taken.snapshot.uuid
        assert copy_events(cloud.engine) == [
            ("Started", "INFO", cloud.alice.id, cloud.alice.id, f"Copying snapshot ID: {uuid}"),
            (
                "Completed",
                "INFO",
                cloud.alice.id,
                cloud.alice.id,
                f"Completed copying snapshot ID: {uuid} to zone(s): zone2, zone3",
            ),
        ]
        # Each zone downloads from the URL the source zone's SSVM made for the source image ref.
        url = f"https://ssvm-{cloud.zone.id}/copy/{_image_ref(cloud, sid, 1).install_path}"
        copies = cloud.engine.store.find(
            StorageObject, "store_kind = 'image' AND snapshot_id = ? AND store_id != 1", (sid,)
        )
        assert [(o.store_id, o.source_path) for o in copies] == [(2, url), (3, url)]

    @pytest.mark.violates("counts-match-recount")
    def test_one_zone_fails(self):
        """The second createAsync fails: zone3's ref is deleted, it gets nothing; zone2 is copied; the job SUCCEEDS.

        The completed event still lists both zones: upstream filters the names by comparing zone *uuids* with the
        failed zones' *names*, so no zone is ever filtered out.
        """
        cloud, (z2, z3) = _xen(FaultPlan().fail("createAsync", nth=2))
        taken = cloud.take(cloud.volume("xen-nfs"), zone_ids=[z2.id, z3.id])
        sid = taken.snapshot.id
        assert taken.result[:2] == ("SUCCEEDED", 0)
        assert taken.snapshot.status == "BackedUp"
        assert image_refs(cloud.engine, sid) == [(1, "Ready"), (2, "Ready")]
        assert zone_rows(cloud.engine, sid) == [cloud.zone.id, z2.id]
        assert cloud.counts() == {"snapshot": 1, "primary_storage": 0, "secondary_storage": PHYSICAL + SIZE}
        assert copy_usage(cloud.engine, sid) == [(cloud.alice.id, z2.id, SIZE)]
        uuid = taken.snapshot.uuid
        assert [e[:2] + e[4:] for e in copy_events(cloud.engine)] == [
            ("Started", "INFO", f"Copying snapshot ID: {uuid}"),
            ("Completed", "INFO", f"Completed copying snapshot ID: {uuid} to zone(s): zone2, zone3"),
        ]
        assert copy_failures(cloud.engine) == [
            (
                "copies.zone_answered",
                "CloudRuntimeException",
                f"Copy snapshot ID: {sid} failed for image store 3: {INJECTED}",
            )
        ]
        # The destination ref went Allocated -> Creating -> Allocated (OperationFailed), then its row was deleted.
        ref_log = [row for row in taken.log("snapshot_store_ref") if row[1] == 4]
        assert [(src, event, dest) for _, _, src, event, dest in ref_log] == [
            ("", "create", "Allocated"),
            ("Allocated", "CreateOnlyRequested", "Creating"),
            ("Creating", "OperationFailed", "Allocated"),
            ("Allocated", "SnapshotObject.deleteIfNotReady", ""),
        ]
        assert taken.log("snapshot")[-1][3:] == ("OperationSucceeded", "BackedUp")

    def test_every_zone_fails(self):
        """Both copies fail: the completed event is ERROR "... failed"; the take job still SUCCEEDS."""
        cloud, (z2, z3) = _xen(FaultPlan().fail("createAsync", times=2))
        taken = cloud.take(cloud.volume("xen-nfs"), zone_ids=[z2.id, z3.id])
        sid = taken.snapshot.id
        assert taken.status == "SUCCEEDED"
        assert taken.snapshot.status == "BackedUp"
        assert image_refs(cloud.engine, sid) == [(1, "Ready")]
        assert zone_rows(cloud.engine, sid) == [cloud.zone.id]
        assert cloud.counts()["secondary_storage"] == PHYSICAL
        assert copy_usage(cloud.engine, sid) == []
        uuid = taken.snapshot.uuid
        assert [e[:2] + e[4:] for e in copy_events(cloud.engine)] == [
            ("Started", "INFO", f"Copying snapshot ID: {uuid}"),
            ("Completed", "ERROR", f"Copying snapshot ID: {uuid} failed"),
        ]

    def test_create_async_throwing_fails_the_zone(self):
        """A createAsync that throws at the call: its ref is failed and deleted at once, the zone fails."""
        cloud, (z2,) = _xen(FaultPlan().fail("createAsync", kind="exception"), zones=1)
        taken = cloud.take(cloud.volume("xen-nfs"), zone_ids=[z2.id])
        sid = taken.snapshot.id
        assert taken.status == "SUCCEEDED"
        assert image_refs(cloud.engine, sid) == [(1, "Ready")]
        assert copy_failures(cloud.engine) == [
            ("copies.start_zone_copy", "CloudRuntimeException", "image driver threw on createAsync (injected fault)")
        ]
        assert copy_events(cloud.engine)[-1][1] == "ERROR"

    def test_no_url_from_the_ssvm_fails_the_zone(self):
        """``queryCopySnapshot`` gives no URL: "Unable to prepare URL ..."; no destination ref is made."""
        cloud, (z2,) = _xen(FaultPlan().fail("querySnapshotZoneCopy"), zones=1)
        taken = cloud.take(cloud.volume("xen-nfs"), zone_ids=[z2.id])
        sid = taken.snapshot.id
        assert image_refs(cloud.engine, sid) == [(1, "Ready")]
        assert copy_failures(cloud.engine) == [
            (
                "copies.start_zone_copy",
                "CloudRuntimeException",
                f"Unable to prepare URL for copy for snapshot ID: {sid} on store: secondary1",
            )
        ]

    @pytest.mark.violates("counts-match-recount")
    def test_a_zone_without_image_store_aborts_the_rest(self):
        """StorageUnavailableException stops the loop; copyNewSnapshotToZones catches it with nothing counted failed.

        zone2 (copied before) keeps its copy, zone4 (after) is never tried, and the event says "Completed" with every
        zone listed.
        """
        cloud, (z2,) = _xen(zones=1)
        z3 = cloud.engine.add_zone("zone3")
        z4 = second_zone(cloud, "zone4")
        taken = cloud.take(cloud.volume("xen-nfs"), zone_ids=[z2.id, z3.id, z4.id])
        sid = taken.snapshot.id
        assert taken.status == "SUCCEEDED"
        assert image_refs(cloud.engine, sid) == [(1, "Ready"), (2, "Ready")]
        assert zone_rows(cloud.engine, sid) == [cloud.zone.id, z2.id]
        assert copy_usage(cloud.engine, sid) == [(cloud.alice.id, z2.id, SIZE)]
        uuid = taken.snapshot.uuid
        assert [e[:2] + e[4:] for e in copy_events(cloud.engine)][-1] == (
            "Completed",
            "INFO",
            f"Completed copying snapshot ID: {uuid} to zone(s): zone2, zone3, zone4",
        )

    def test_a_zone_without_image_store_first_copies_nothing_and_says_completed(self):
        """In the first place it aborts before any copy; the event still says "Completed" (nothing counted failed)."""
        cloud, (z2,) = _xen(zones=1)
        z3 = cloud.engine.add_zone("zone3")
        taken = cloud.take(cloud.volume("xen-nfs"), zone_ids=[z3.id, z2.id])
        sid = taken.snapshot.id
        assert taken.status == "SUCCEEDED"
        assert image_refs(cloud.engine, sid) == [(1, "Ready")]
        assert zone_rows(cloud.engine, sid) == [cloud.zone.id]
        assert copy_events(cloud.engine)[-1][4] == (
            f"Completed copying snapshot ID: {taken.snapshot.uuid} to zone(s): zone3, zone2"
        )

    @pytest.mark.violates("counts-match-recount")
    def test_the_reservation_is_checked_at_each_zones_turn(self):
        """The chain's reservation is checked when the zone's turn comes, after the zones before it were charged.

        alice's secondary limit fits the take and one copy: zone2 is copied, zone3's reservation is refused (the
        zone fails, the others go on).
        """
        cloud, (z2, z3) = _xen()
        cloud.engine.set_limit(cloud.alice, "secondary_storage", PHYSICAL + SIZE + SIZE // 2)
        taken = cloud.take(cloud.volume("xen-nfs"), zone_ids=[z2.id, z3.id])
        sid = taken.snapshot.id
        assert image_refs(cloud.engine, sid) == [(1, "Ready"), (2, "Ready")]
        assert cloud.counts()["secondary_storage"] == PHYSICAL + SIZE
        assert copy_events(cloud.engine)[-1][:2] == ("Completed", "INFO")

    @pytest.mark.violates("counts-match-recount", "no-negative-count")
    def test_async_backup_copies_as_the_system(self):
        """The backup task copies after its backup; its action events are the system's (user 1, account 1)."""
        cloud, (z2,) = _xen(zones=1)
        taken = cloud.take(cloud.volume("xen-nfs"), zone_ids=[z2.id], async_backup=True)
        sid = taken.snapshot.id
        assert taken.snapshot.status == "BackedUp"
        assert zone_rows(cloud.engine, sid) == [cloud.zone.id, z2.id]
        assert copy_usage(cloud.engine, sid) == [(cloud.alice.id, z2.id, SIZE)]
        assert [(e[0], e[2], e[3]) for e in copy_events(cloud.engine)] == [("Started", 1, 1), ("Completed", 1, 1)]


@pytest.mark.violates("counts-match-recount")
class TestChainCopy:
    """``copySnapshotChainToZone``: the chain back to a snapshot already in the zone, oldest first."""

    def _chain(self, cloud: Cloud) -> list[int]:
        """Three snapshots of one XenServer volume, rewritten into a delta chain 1 <- 2 <- 3 on the image store.

        The simulated XenServer backups are full; the chain is written as delta backups would leave it.
        """
        volume = cloud.volume("xen-nfs")
        ids = [cloud.take(volume).snapshot.id for _ in range(3)]
        for parent, child in itertools.pairwise(ids):
            cloud.engine.store.update(_image_ref(cloud, child, 1), parent_snapshot_id=parent)
        return ids

    def test_the_whole_chain_is_copied_oldest_first(self):
        """Each element: a Ready ref in zone2, its zone row, its own usage event and its size in secondary_storage."""
        cloud, (z2,) = _xen(zones=1)
        ids = self._chain(cloud)
        before = cloud.counts()["secondary_storage"]
        job = cloud.engine.copy_snapshot(ids[-1], dest_zone_ids=[z2.id])
        cloud.engine.run()
        assert cloud.engine.job_status(job.id) == "SUCCEEDED"
        copied = cloud.engine.store.find(SnapshotStoreRef, "store_role = 'Image' AND store_id = 2", order_by="id")
        assert [(r.snapshot_id, r.state, r.parent_snapshot_id) for r in copied] == [
            (ids[0], "Ready", 0),
            (ids[1], "Ready", ids[0]),
            (ids[2], "Ready", ids[1]),
        ]
        assert [zone_rows(cloud.engine, i) for i in ids] == [[cloud.zone.id, z2.id]] * 3
        assert [copy_usage(cloud.engine, i) for i in ids] == [[(cloud.alice.id, z2.id, SIZE)]] * 3
        assert cloud.counts()["secondary_storage"] == before + 3 * SIZE

    def test_only_the_missing_part_is_copied(self):
        """With the parent already Ready in zone2, only the head is copied."""
        cloud, (z2,) = _xen(zones=1)
        ids = self._chain(cloud)
        cloud.engine.copy_snapshot(ids[1], dest_zone_ids=[z2.id])
        cloud.engine.run()
        assert [r.snapshot_id for r in cloud.engine.store.find(SnapshotStoreRef, "store_id = 2")] == ids[:2]
        cloud.engine.copy_snapshot(ids[2], dest_zone_ids=[z2.id])
        cloud.engine.run()
        assert [r.snapshot_id for r in cloud.engine.store.find(SnapshotStoreRef, "store_id = 2")] == ids
        assert [len(copy_usage(cloud.engine, i)) for i in ids] == [1, 1, 1]


class TestAlreadyInStore:
    """``checkAndProcessSnapshotAlreadyExistInStore`` when the snapshot is copied to a zone a second time."""

    def _copied(self) -> tuple[Cloud, Zone, int]:
        cloud, (z2,) = _xen(zones=1)
        sid = cloud.take(cloud.volume("xen-nfs"), zone_ids=[z2.id]).snapshot.id
        assert image_refs(cloud.engine, sid) == [(1, "Ready"), (2, "Ready")]
        return cloud, z2, sid

    def _copy_again(self, cloud: Cloud, z2: Zone, sid: int) -> str:
        job = cloud.engine.copy_snapshot(sid, dest_zone_ids=[z2.id])
        cloud.engine.run()
        return cloud.engine.job_status(job.id)

    @pytest.mark.violates("counts-match-recount")
    def test_ready_is_made_displayable_and_not_copied(self):
        """A Ready ref counts as copied; a hidden-from-view one (display false) is made displayable."""
        cloud, z2, sid = self._copied()
        cloud.engine.store.update(_image_ref(cloud, sid, 2), display=False)
        counts = cloud.counts()
        assert self._copy_again(cloud, z2, sid) == "SUCCEEDED"
        ref = _image_ref(cloud, sid, 2)
        assert (ref.state, ref.display) == ("Ready", True)
        assert image_refs(cloud.engine, sid) == [(1, "Ready"), (2, "Ready")]
        assert cloud.counts() == counts
        assert len(copy_usage(cloud.engine, sid)) == 1

    @pytest.mark.violates("counts-match-recount")
    def test_hidden_is_set_ready_without_a_copy(self):
        """A Hidden ref is set Ready and displayable directly (no state machine), and nothing is copied or charged."""
        cloud, z2, sid = self._copied()
        hidden = cloud.engine.store.write_state_directly(_image_ref(cloud, sid, 2), "Hidden", by="test")
        cloud.engine.store.update(hidden, display=False)
        counts = cloud.counts()
        objects = cloud.engine.store.count(StorageObject)
        assert self._copy_again(cloud, z2, sid) == "SUCCEEDED"
        ref = _image_ref(cloud, sid, 2)
        assert (ref.id, ref.state, ref.display) == (hidden.id, "Ready", True)
        assert cloud.engine.history(machine="snapshot_store_ref", entity_id=ref.id)[-1].kind == "direct"
        assert cloud.counts() == counts
        assert cloud.engine.store.count(StorageObject) == objects
        assert len(copy_usage(cloud.engine, sid)) == 1

    @pytest.mark.violates("counts-match-recount")
    @pytest.mark.parametrize("stale", ["Destroyed", "Allocated", "Failed"])
    def test_a_stale_ref_is_removed_and_the_copy_runs_again(self, stale):
        """A ref neither Ready, Hidden, Creating nor Copying is deleted, then the snapshot is copied again."""
        cloud, z2, sid = self._copied()
        old = cloud.engine.store.write_state_directly(_image_ref(cloud, sid, 2), stale, by="test")
        assert self._copy_again(cloud, z2, sid) == "SUCCEEDED"
        removed = cloud.engine.history(machine="snapshot_store_ref", entity_id=old.id)
        assert [(r.source, r.event, r.dest) for r in removed if r.dest == ""] == [
            (stale, "checkAndProcessSnapshotAlreadyExistInStore (removeBySnapshotStore)", "")
        ]
        assert image_refs(cloud.engine, sid) == [(1, "Ready"), (2, "Ready")]
        assert cloud.counts()["secondary_storage"] == PHYSICAL + 2 * SIZE
        assert len(copy_usage(cloud.engine, sid)) == 2

    @pytest.mark.violates("counts-match-recount", "no-transitional-state")
    def test_a_copy_in_progress_is_left_and_a_second_ref_made(self):
        """A Creating ref is neither removed nor counted: a second ref for the same store and snapshot is made."""
        cloud, z2, sid = self._copied()
        cloud.engine.store.write_state_directly(_image_ref(cloud, sid, 2), "Creating", by="test")
        assert self._copy_again(cloud, z2, sid) == "SUCCEEDED"
        assert image_refs(cloud.engine, sid) == [(1, "Ready"), (2, "Creating"), (2, "Ready")]

    @pytest.mark.violates("counts-match-recount")
    def test_the_head_found_ready_elsewhere_in_the_zone_stops_the_walk(self):
        """A Ready copy in the zone's image store ends the chain walk: nothing to copy, nothing charged."""
        cloud, z2, sid = self._copied()
        assert cloud.engine.get(Snapshot, sid).status == "BackedUp"
        counts = cloud.counts()
        assert self._copy_again(cloud, z2, sid) == "SUCCEEDED"
        assert cloud.counts() == counts
