"""KVM incremental snapshots (spec §16.4-§16.7): checkpoints and deltas, where chains end, the delete of a chained
snapshot with its bitmap, and the conversion before a zone copy.

With ``kvm.incremental.snapshot`` on, a KVM snapshot of a file-based pool is taken with ``virsh backup-begin``: a
full snapshot starts a chain, the next ones hold what changed since their parent's checkpoint (the volume's churn,
``DELTA`` by default); each leaves a checkpoint file beside it and a dirty bitmap in the volume. With backup on the
files are on the image store, the pool keeps only the bitmaps; with backup off everything is on the pool.
"""

from __future__ import annotations

import json

import pytest
from cloud import DELTA, PHYSICAL, SIZE, Cloud
from hypothesis import given, settings
from hypothesis import strategies as st
from lifecycle_cloud import answer, delete, second_zone, snapshot, snapshot_log

from snapshotfsm.drivers.base import FaultKind
from snapshotfsm.faults import FaultPlan
from snapshotfsm.store.records import (
    ActionEvent,
    Failure,
    ImageStore,
    Snapshot,
    SnapshotStoreRef,
    SnapshotZoneRef,
    StorageObject,
    TransitionLog,
    UsageEvent,
    Volume,
    Workflow,
)

CHAIN_FAILED = (
    "Failed to delete snapshot:com.cloud.utils.exception.CloudRuntimeException: Failed to delete snapshot chain."
)
INCREMENTAL = {"kvm.incremental.snapshot": True}


def _takes(cloud: Cloud, volume: Volume, n: int, **kwargs: object) -> list[int]:
    ids = []
    for _ in range(n):
        taken = cloud.take(volume, **kwargs)
        assert taken.status == "SUCCEEDED"
        ids.append(taken.snapshot.id)
    return ids


def _ref(cloud: Cloud, sid: int, role: str = "Image") -> SnapshotStoreRef:
    found = cloud.engine.store.first(SnapshotStoreRef, "snapshot_id = ? AND store_role = ?", (sid, role))
    assert found is not None
    return found


def _refs(cloud: Cloud, sid: int) -> list[tuple[str, int, str, bool, bool]]:
    """The snapshot's refs: (role, store id, state, end_of_chain, display)."""
    rows = cloud.engine.store.find(SnapshotStoreRef, "snapshot_id = ?", (sid,))
    return [(r.store_role, r.store_id, r.state, r.end_of_chain, r.display) for r in rows]


def _objects(cloud: Cloud, sid: int) -> list[tuple[str, str, int, bool]]:
    """What storage holds or held for the snapshot: (store kind, object kind, physical size, still present)."""
    rows = cloud.engine.store.find(StorageObject, "snapshot_id = ?", (sid,))
    return [(o.store_kind, o.kind, o.physical_size, o.deleted_ms is None) for o in rows]


def _present(cloud: Cloud, sid: int) -> list[str]:
    """The kinds of the snapshot's objects still on storage."""
    return [kind for _, kind, _, present in _objects(cloud, sid) if present]


def _object(cloud: Cloud, store_kind: str, path: str | None) -> StorageObject | None:
    """The present object at ``path`` on storage of ``store_kind``."""
    return cloud.engine.store.first(
        StorageObject, "store_kind = ? AND path = ? AND deleted_ms IS NULL", (store_kind, path or "")
    )


def _chain(cloud: Cloud, ids: list[int], role: str = "Image") -> list[tuple[int, int, bool]]:
    """Each snapshot's ref: (parent_snapshot_id, physical_size, end_of_chain)."""
    return [(r.parent_snapshot_id, r.physical_size, r.end_of_chain) for r in (_ref(cloud, sid, role) for sid in ids)]


def _entity_log(cloud: Cloud, mark: int) -> list[tuple[str, int, str, str, str]]:
    """The snapshot and store-ref transitions after log row ``mark``: (machine, entity, source, event, dest)."""
    rows = cloud.engine.store.find(TransitionLog, "id > ? AND machine IN ('snapshot', 'snapshot_store_ref')", (mark,))
    return [(r.machine, r.entity_id, r.source, r.event, r.dest) for r in rows]


class TestTheTake:
    """§16.4: a chain root is full, the next snapshots are deltas on it; checkpoints beside the files."""

    @pytest.mark.violates("usage-matches-objects")
    def test_with_backup_on_the_files_are_on_the_image_store(self) -> None:
        """Image refs 0 <- 1 <- 2 with checkpoint paths; delta objects on their parents' files; bitmaps on the pool."""
        cloud = Cloud(config=INCREMENTAL)
        volume = cloud.volume("kvm-nfs")
        ids = _takes(cloud, volume, 3)
        assert _chain(cloud, ids) == [(0, PHYSICAL, False), (ids[0], DELTA, False), (ids[1], DELTA, False)]
        snaps = [cloud.engine.get(Snapshot, sid) for sid in ids]
        directory = f"{snaps[0].account_id}/{volume.id}"
        assert [_ref(cloud, sid).install_path for sid in ids] == [f"snapshots/{directory}/{s.uuid}" for s in snaps]
        assert [_ref(cloud, sid).kvm_checkpoint_path for sid in ids] == [
            f"checkpoints/{directory}/{s.uuid}" for s in snaps
        ]
        assert [_objects(cloud, sid) for sid in ids] == [
            [("image", "snapshot", PHYSICAL, True), ("image", "checkpoint", 0, True), ("primary", "bitmap", 0, True)],
            [("image", "delta", DELTA, True), ("image", "checkpoint", 0, True), ("primary", "bitmap", 0, True)],
            [("image", "delta", DELTA, True), ("image", "checkpoint", 0, True), ("primary", "bitmap", 0, True)],
        ]
        deltas = [_object(cloud, "image", _ref(cloud, sid).install_path) for sid in ids[1:]]
        assert [d.parent_path for d in deltas if d is not None] == [_ref(cloud, sid).install_path for sid in ids[:2]]
        assert cloud.engine.store.find(SnapshotStoreRef, "store_role = 'Primary'") == []
        assert cloud.counts() == {"snapshot": 3, "primary_storage": 0, "secondary_storage": PHYSICAL + 2 * DELTA}
        created = cloud.engine.store.find(UsageEvent, "type = 'SNAPSHOT.CREATE'")
        assert [u.size for u in created] == [PHYSICAL, DELTA, DELTA]

    @pytest.mark.violates("usage-matches-objects")
    def test_a_delta_take_moves_through_the_same_states_as_any(self) -> None:
        """The second take's log is §13.2's walkthrough: incremental changes sizes and paths, not states."""
        cloud = Cloud(config=INCREMENTAL)
        volume = cloud.volume("kvm-nfs")
        _takes(cloud, volume, 1)
        taken = cloud.take(volume)
        assert taken.log() == [
            ("snapshot", 2, "", "create", "Allocated"),
            ("async_job", 3, "", "create", "IN_PROGRESS"),
            ("async_job", 4, "", "create", "IN_PROGRESS"),
            ("vm_work_job", 4, "", "create", "Queued"),
            ("vm_work_job", 4, "Queued", "Dispatch", "Running"),
            ("volume", 1, "Ready", "SnapshotRequested", "Snapshotting"),
            ("snapshot_store_ref", 3, "", "create", "Allocated"),
            ("snapshot", 2, "Allocated", "CreateRequested", "Creating"),
            ("snapshot_store_ref", 3, "Allocated", "CreateOnlyRequested", "Creating"),
            ("snapshot_store_ref", 3, "Creating", "OperationSucceeded", "Ready"),
            ("snapshot", 2, "Creating", "OperationSucceeded", "CreatedOnPrimary"),
            ("snapshot_store_ref", 4, "", "create", "Allocated"),
            ("volume", 1, "Snapshotting", "OperationSucceeded", "Ready"),
            ("snapshot_store_ref", 4, "Allocated", "postSnapshotDirectlyToSecondary", "Ready"),
            ("snapshot", 2, "CreatedOnPrimary", "OperationNotPerformed", "BackedUp"),
            ("snapshot_store_ref", 3, "Ready", "postSnapshotDirectlyToSecondary (removeBySnapshotStore)", ""),
            ("vm_work_job", 4, "Running", "Complete", "Done"),
            ("async_job", 4, "IN_PROGRESS", "CompleteSucceeded", "SUCCEEDED"),
            ("async_job", 3, "IN_PROGRESS", "CompleteSucceeded", "SUCCEEDED"),
        ]
        assert [u[:2] for u in taken.usage()] == [("SNAPSHOT.ON_PRIMARY", SIZE), ("SNAPSHOT.CREATE", DELTA)]

    def test_with_backup_off_everything_stays_on_the_pool(self) -> None:
        """Primary refs chain; files in ``<pool>/snapshots``, checkpoints in ``<pool>/checkpoints``."""
        cloud = Cloud(config={**INCREMENTAL, "snapshot.backup.to.secondary": False})
        ids = _takes(cloud, cloud.volume("kvm-nfs"), 3)
        pool = cloud.pools["kvm-nfs"].uuid
        assert _chain(cloud, ids, "Primary") == [(0, PHYSICAL, False), (ids[0], DELTA, False), (ids[1], DELTA, False)]
        uuids = [cloud.engine.get(Snapshot, sid).uuid for sid in ids]
        assert [
            (_ref(cloud, sid, "Primary").install_path, _ref(cloud, sid, "Primary").kvm_checkpoint_path) for sid in ids
        ] == [(f"{pool}/snapshots/{u}", f"{pool}/checkpoints/{u}") for u in uuids]
        assert {store for sid in ids for store, *_ in _objects(cloud, sid)} == {"primary"}
        assert cloud.counts() == {"snapshot": 3, "primary_storage": PHYSICAL + 2 * DELTA, "secondary_storage": 0}

    @pytest.mark.violates("usage-matches-objects")
    @pytest.mark.parametrize(("churn", "size"), [(1 << 20, 1 << 20), (0, 0), (SIZE, PHYSICAL)])
    def test_a_delta_holds_the_churn_and_never_more_than_a_full(self, churn: int, size: int) -> None:
        """What changed since the parent's checkpoint, even nothing; a delta is never larger than a full."""
        cloud = Cloud(config=INCREMENTAL)
        volume = cloud.volume("kvm-nfs")
        first = _takes(cloud, volume, 1)[0]
        cloud.engine.set_volume_churn(volume, churn)
        second = _takes(cloud, volume, 1)[0]
        assert _chain(cloud, [second]) == [(first, size, False)]
        assert cloud.counts()["secondary_storage"] == PHYSICAL + size

    @pytest.mark.violates("usage-matches-objects", params=["kvm-clvm"])
    @pytest.mark.parametrize("shape", ["kvm-rbd", "kvm-clvm"])
    def test_other_pools_take_no_checkpoint(self, shape: str) -> None:
        """``updateSnapshotPayload`` sets the flag for file-based pools only: full copies, no parent, no checkpoint."""
        cloud = Cloud(config=INCREMENTAL)
        ids = _takes(cloud, cloud.volume(shape), 2)
        rows = cloud.engine.store.find(SnapshotStoreRef)
        assert {(r.parent_snapshot_id, r.kvm_checkpoint_path) for r in rows} == {(0, None)}
        assert {kind for sid in ids for _, kind, _, _ in _objects(cloud, sid)} == {"snapshot"}

    @pytest.mark.violates("usage-matches-objects")
    def test_the_setting_is_read_for_the_cluster_of_the_vms_host(self) -> None:
        """``kvm.incremental.snapshot`` has cluster scope: set for the cluster of the VM's host, it applies."""
        cloud = Cloud()
        volume = cloud.volume("kvm-nfs")
        cloud.engine.set_config(
            "kvm.incremental.snapshot", value=True, scope="Cluster", scope_id=cloud.cluster("KVM").id
        )
        ids = _takes(cloud, volume, 2)
        assert _chain(cloud, ids) == [(0, PHYSICAL, False), (ids[0], DELTA, False)]


@pytest.mark.violates("usage-matches-objects")
class TestWhereChainsEnd:
    """§16.6: ``endCurrentChainIfNeeded``, ``endLastChainIfNeeded`` and ``updateEndOfChainIfNeeded``."""

    @pytest.mark.parametrize(
        ("delta_max", "kinds", "ends"),
        [(1, "FFFFF", "EEEEE"), (2, "FDFDF", ".E.E."), (3, "FDDFD", "..E.."), (16, "FDDDD", ".....")],
    )
    def test_a_chain_holds_at_most_delta_max_snapshots(self, delta_max: int, kinds: str, ends: str) -> None:
        """The snapshot that brings the chain to ``snapshot.delta.max`` ends it; the next one is full."""
        cloud = Cloud(config={**INCREMENTAL, "snapshot.delta.max": delta_max})
        ids = _takes(cloud, cloud.volume("kvm-nfs"), 5)
        chain = _chain(cloud, ids)
        assert "".join("F" if parent == 0 else "D" for parent, _, _ in chain) == kinds
        assert "".join("E" if end else "." for _, _, end in chain) == ends
        assert [size for _, size, _ in chain] == [PHYSICAL if k == "F" else DELTA for k in kinds]

    def test_turning_incremental_off_closes_the_chain_and_on_again_starts_a_new_one(self) -> None:
        cloud = Cloud(config=INCREMENTAL)
        volume = cloud.volume("kvm-nfs")
        first, second = _takes(cloud, volume, 2)
        cloud.engine.set_config("kvm.incremental.snapshot", value=False)
        off = _takes(cloud, volume, 1)[0]
        assert _chain(cloud, [first, second, off]) == [(0, PHYSICAL, False), (first, DELTA, True), (0, PHYSICAL, False)]
        assert _ref(cloud, off).kvm_checkpoint_path is None
        assert _present(cloud, off) == ["snapshot"]
        cloud.engine.set_config("kvm.incremental.snapshot", value=True)
        third, fourth = _takes(cloud, volume, 2)
        assert _chain(cloud, [third, fourth]) == [(0, PHYSICAL, False), (third, DELTA, False)]

    def test_with_incremental_off_only_the_newest_chain_end_is_marked(self) -> None:
        """The search stops at the first ref with a checkpoint past the newest, marked already or not."""
        cloud = Cloud(config=INCREMENTAL)
        volume = cloud.volume("kvm-nfs")
        ids = _takes(cloud, volume, 2)
        cloud.engine.set_config("kvm.incremental.snapshot", value=False)
        ids += _takes(cloud, volume, 2)
        assert [end for _, _, end in _chain(cloud, ids)] == [False, True, False, False]

    def test_deleting_a_chains_end_moves_the_end_to_its_parent(self) -> None:
        """Otherwise the next take would grow the chain from the parent past ``snapshot.delta.max``."""
        cloud = Cloud(config={**INCREMENTAL, "snapshot.delta.max": 3})
        volume = cloud.volume("kvm-nfs")
        ids = _takes(cloud, volume, 3)
        assert delete(cloud, ids[2])[0] == "SUCCEEDED"
        assert [_refs(cloud, sid)[0][3] for sid in ids] == [False, True, True]
        new = _takes(cloud, volume, 1)[0]
        assert _chain(cloud, [new]) == [(0, PHYSICAL, False)]

    def test_the_end_goes_to_the_nearest_ancestor_still_ready(self) -> None:
        """The parent was deleted (hidden, then freed by this delete): its parent gets the mark."""
        cloud = Cloud(config={**INCREMENTAL, "snapshot.delta.max": 3})
        ids = _takes(cloud, cloud.volume("kvm-nfs"), 3)
        assert delete(cloud, ids[1])[0] == delete(cloud, ids[2])[0] == "SUCCEEDED"
        assert [_refs(cloud, sid) for sid in ids] == [
            [("Image", 1, "Ready", True, True)],
            [("Image", 1, "Destroyed", False, False)],
            [("Image", 1, "Destroyed", True, False)],
        ]

    def test_deleting_a_snapshot_inside_the_chain_moves_nothing(self) -> None:
        """Only a Destroyed ref that ended its chain moves the end; the root's delete only hides it."""
        cloud = Cloud(config={**INCREMENTAL, "snapshot.delta.max": 3})
        ids = _takes(cloud, cloud.volume("kvm-nfs"), 3)
        assert delete(cloud, ids[0])[0] == "SUCCEEDED"
        assert [end for _, _, end in _chain(cloud, ids)] == [False, False, True]


class TestTheDelete:
    """§16.3, §16.6: hidden parents, the walk up the chain, bitmaps and checkpoints."""

    @pytest.mark.violates("usage-matches-objects")
    def test_a_parent_is_hidden_and_keeps_its_files_and_bitmap(self) -> None:
        cloud = Cloud(config=INCREMENTAL)
        first, middle, last = _takes(cloud, cloud.volume("kvm-nfs"), 3)
        mark = cloud.engine.store.count(TransitionLog)
        assert delete(cloud, middle)[0] == "SUCCEEDED"
        image = _ref(cloud, middle).id
        assert _entity_log(cloud, mark) == [
            ("snapshot", middle, "BackedUp", "DestroyRequested", "Destroying"),
            ("snapshot_store_ref", image, "Ready", "DefaultSnapshotStrategy.deleteSnapshotChain", "Hidden"),
            ("snapshot", middle, "Destroying", "OperationSucceeded", "Destroyed"),
        ]
        assert _present(cloud, middle) == ["delta", "checkpoint", "bitmap"]
        assert cloud.counts()["secondary_storage"] == PHYSICAL + DELTA  # the hidden delta is given back (§16.3)
        assert [_present(cloud, sid) for sid in (first, last)] == [
            ["snapshot", "checkpoint", "bitmap"],
            ["delta", "checkpoint", "bitmap"],
        ]

    @pytest.mark.violates("usage-matches-objects")
    def test_the_last_child_frees_its_hidden_parent_bitmaps_and_checkpoints_included(self) -> None:
        cloud = Cloud(config=INCREMENTAL)
        first, middle, last = _takes(cloud, cloud.volume("kvm-nfs"), 3)
        assert delete(cloud, middle)[0] == "SUCCEEDED"
        mark = cloud.engine.store.count(TransitionLog)
        assert delete(cloud, last)[0] == "SUCCEEDED"
        middle_ref, last_ref = _ref(cloud, middle).id, _ref(cloud, last).id
        assert _entity_log(cloud, mark) == [
            ("snapshot", last, "BackedUp", "DestroyRequested", "Destroying"),
            ("snapshot_store_ref", last_ref, "Ready", "DestroyRequested", "Destroying"),
            ("snapshot_store_ref", last_ref, "Destroying", "OperationSucceeded", "Destroyed"),
            ("snapshot_store_ref", middle_ref, "Hidden", "DestroyRequested", "Destroying"),
            ("snapshot_store_ref", middle_ref, "Destroying", "OperationSucceeded", "Destroyed"),
            ("snapshot", last, "Destroying", "OperationSucceeded", "Destroyed"),
            ("snapshot", last, "Destroyed", "DefaultSnapshotStrategy.updateSnapshotToDestroyed", "Destroyed"),
        ]
        assert [_present(cloud, sid) for sid in (first, middle, last)] == [["snapshot", "checkpoint", "bitmap"], [], []]
        assert cloud.counts() == {"snapshot": 1, "primary_storage": 0, "secondary_storage": PHYSICAL}

    @pytest.mark.violates("counts-match-recount")
    def test_with_backup_off_the_chain_is_walked_on_the_pool(self) -> None:
        """The same walk over primary refs: the hidden middle goes with the last child, the root stays."""
        cloud = Cloud(config={**INCREMENTAL, "snapshot.backup.to.secondary": False})
        first, middle, last = _takes(cloud, cloud.volume("kvm-nfs"), 3)
        assert delete(cloud, middle)[0] == delete(cloud, last)[0] == "SUCCEEDED"
        assert [_refs(cloud, sid)[0][2] for sid in (first, middle, last)] == ["Ready", "Destroyed", "Destroyed"]
        assert [_present(cloud, sid) for sid in (first, middle, last)] == [["snapshot", "checkpoint", "bitmap"], [], []]

    @pytest.mark.violates("no-orphan-object", "usage-matches-objects")
    def test_with_incremental_turned_off_bitmap_and_checkpoint_stay_for_good(self) -> None:
        """§16.6 quirk: the setting is read at the delete; the command then names no checkpoint either."""
        cloud = Cloud(config=INCREMENTAL)
        first, second = _takes(cloud, cloud.volume("kvm-nfs"), 2)
        cloud.engine.set_config("kvm.incremental.snapshot", value=False)
        assert delete(cloud, second)[0] == "SUCCEEDED"
        assert _present(cloud, second) == ["checkpoint", "bitmap"]
        assert _present(cloud, first) == ["snapshot", "checkpoint", "bitmap"]

    @pytest.mark.violates("no-orphan-object", "no-transitional-state", "usage-matches-objects")
    def test_a_volume_that_is_not_ready_keeps_the_bitmap(self) -> None:
        """``deleteBitmap`` returns at once for a volume not Ready; the checkpoint still goes with the file."""
        cloud = Cloud(config=INCREMENTAL)
        volume = cloud.volume("kvm-nfs")
        sid = _takes(cloud, volume, 1)[0]
        cloud.engine.store.write_state_directly(cloud.engine.get(Volume, volume.id), "Migrating", by="test")
        assert delete(cloud, sid)[0] == "SUCCEEDED"
        assert _present(cloud, sid) == ["bitmap"]

    @pytest.mark.violates("usage-matches-objects")
    @pytest.mark.parametrize("kind", ["error", "exception", "no_answer", "null_answer"])
    def test_a_failed_bitmap_removal_fails_the_delete_and_rolls_it_back(self, kind: FaultKind) -> None:
        """Every kind of failure of the sync command ends in the same 530; nothing of the delete is left."""
        cloud = Cloud(config=INCREMENTAL, faults=FaultPlan().fail("default.removeBitmap", kind=kind))
        first, second = _takes(cloud, cloud.volume("kvm-nfs"), 2)
        before = ([_refs(cloud, sid) for sid in (first, second)], cloud.counts())
        mark = cloud.engine.store.count(TransitionLog)
        job = cloud.engine.delete_snapshot(second)
        cloud.engine.run()
        assert answer(cloud.engine, job.id) == ("FAILED", 530, CHAIN_FAILED)
        assert ([_refs(cloud, sid) for sid in (first, second)], cloud.counts()) == before
        assert snapshot(cloud.engine, second) == ("BackedUp", False)
        assert _entity_log(cloud, mark) == []
        assert [_present(cloud, sid) for sid in (first, second)] == [
            ["snapshot", "checkpoint", "bitmap"],
            ["delta", "checkpoint", "bitmap"],
        ]
        failures = cloud.engine.store.find(Failure, "job_id = ?", (job.id,))
        assert [(f.step, f.message) for f in failures] == [("delete.start", CHAIN_FAILED)]

    @pytest.mark.violates("usage-matches-objects")
    def test_a_bitmap_removed_before_the_file_delete_failed_stays_removed(self) -> None:
        """The rollback brings the rows back, not what the host did (spec §21.4.1)."""
        cloud = Cloud(config=INCREMENTAL, faults=FaultPlan().fail("image.deleteAsync"))
        sid = _takes(cloud, cloud.volume("kvm-nfs"), 1)[0]
        assert delete(cloud, sid) == ("FAILED", 530, CHAIN_FAILED)
        assert _refs(cloud, sid) == [("Image", 1, "Ready", False, True)]
        assert _present(cloud, sid) == ["snapshot", "checkpoint"]

    @pytest.mark.violates("no-orphan-object", "usage-matches-objects")
    def test_a_parent_with_no_checkpoint_fails_the_delete_before_the_walk(self) -> None:
        """Building the snapshot's TO looks up its parents first; that throw is not the chain's."""
        cloud = Cloud(config=INCREMENTAL)
        first, second = _takes(cloud, cloud.volume("kvm-nfs"), 2)
        cloud.engine.store.update(_ref(cloud, first), kvm_checkpoint_path=None)
        assert delete(cloud, second) == (
            "FAILED",
            530,
            (
                "Failed to delete snapshot:com.cloud.utils.exception.CloudRuntimeException: Could not find snapshot "
                f"parent with id [{first}]. None of the records have a checkpoint path."
            ),
        )
        assert snapshot(cloud.engine, second) == ("BackedUp", False)
        assert _present(cloud, second) == ["delta", "checkpoint", "bitmap"]

    @pytest.mark.violates("counts-match-recount", "no-orphan-object", "usage-matches-objects")
    def test_a_child_in_another_zone_hides_a_copy_that_no_walk_frees(self) -> None:
        """A KVM child counts on any store of the role (§16.3): both copies of the root are hidden; the walk of the
        last child frees only the ref with a checkpoint, so the copy in zone2 stays Hidden, its file kept, and the
        storage GC leaves Hidden refs to the chain walk (quirk)."""
        cloud = Cloud(config=INCREMENTAL)
        z2 = second_zone(cloud)
        first, second = _takes(cloud, cloud.volume("kvm-nfs"), 2, zone_ids=[z2.id])
        image2 = cloud.engine.store.first(ImageStore, "data_center_id = ?", (z2.id,))
        assert image2 is not None
        store2 = image2.id
        assert [r[:3] for r in _refs(cloud, second)] == [("Image", 1, "Ready"), ("Image", store2, "Ready")]
        assert delete(cloud, first)[0] == "SUCCEEDED"
        assert _refs(cloud, first) == [("Image", 1, "Hidden", False, False), ("Image", store2, "Hidden", False, False)]
        assert delete(cloud, second)[0] == "SUCCEEDED"
        assert _refs(cloud, first) == [
            ("Image", 1, "Destroyed", False, False),
            ("Image", store2, "Hidden", False, False),
        ]
        cloud.engine.collect_garbage()
        cloud.engine.run()
        assert _refs(cloud, first) == [("Image", store2, "Hidden", False, False)]
        kept = cloud.engine.store.find(StorageObject, "snapshot_id = ? AND deleted_ms IS NULL", (first,))
        assert [(o.store_id, o.kind, o.physical_size) for o in kept] == [(store2, "snapshot", PHYSICAL)]
        assert _present(cloud, second) == []


def _post_process_failed(cloud: Cloud, job_id: int) -> str | None:
    """What ended the take's post-processing (only logged by CloudStack), as its workflow row keeps it."""
    flow = cloud.engine.store.first(Workflow, "job_id = ? AND machine = 'take_snapshot'", (job_id,))
    assert flow is not None
    found: str | None = json.loads(flow.context).get("post_process_failed")
    return found


@pytest.mark.violates("counts-match-recount", "usage-matches-objects")
class TestAVolumeWithoutACluster:
    """``findClusterIdByVolumeInfo`` is null for a volume with no VM, or whose VM has no host (spec §16.4)."""

    UNBOXED = 'java.lang.NullPointerException: Cannot invoke "java.lang.Long.longValue()" because "clusterId" is null'

    def test_with_incremental_off_its_post_processing_throws(self) -> None:
        """Quirk: ``endLastChainIfNeeded(long, long)`` unboxes the null cluster id. The take succeeds, but without
        its zone row, its SNAPSHOT.CREATE usage and the correction of the secondary storage count."""
        cloud = Cloud()
        taken = cloud.take(cloud.volume("kvm-nfs", vm=False))
        assert (taken.status, taken.snapshot.status) == ("SUCCEEDED", "BackedUp")
        assert _post_process_failed(cloud, taken.job_id) == self.UNBOXED
        assert [u[0] for u in taken.usage()] == ["SNAPSHOT.ON_PRIMARY"]
        assert cloud.engine.store.count(SnapshotZoneRef, "snapshot_id = ?", (taken.snapshot.id,)) == 0
        assert cloud.counts() == {"snapshot": 1, "primary_storage": 0, "secondary_storage": SIZE}

    def test_a_vm_that_never_ran_has_no_cluster_either(self) -> None:
        """A VM with neither host nor last host gives no cluster: the same throw."""
        cloud = Cloud()
        volume = cloud.volume("kvm-nfs", vm=cloud.engine.add_vm(cloud.alice, cloud.zone, "new", hypervisor="KVM"))
        taken = cloud.take(volume)
        assert _post_process_failed(cloud, taken.job_id) == self.UNBOXED

    def test_the_clusters_setting_does_not_reach_it_the_global_one_does(self) -> None:
        """Set for the cluster only, incremental is off for the volume; set globally, it is on, and the chain's
        post-processing reads no cluster id."""
        cloud = Cloud()
        cloud.engine.set_config(
            "kvm.incremental.snapshot", value=True, scope="Cluster", scope_id=cloud.cluster("KVM").id
        )
        volume = cloud.volume("kvm-nfs", vm=False)
        taken = cloud.take(volume)
        assert (_ref(cloud, taken.snapshot.id).kvm_checkpoint_path, _post_process_failed(cloud, taken.job_id)) == (
            None,
            self.UNBOXED,
        )
        cloud.engine.set_config("kvm.incremental.snapshot", value=True)
        ids = _takes(cloud, volume, 2)
        assert _chain(cloud, ids) == [(0, PHYSICAL, False), (ids[0], DELTA, False)]
        assert [u.size for u in cloud.engine.store.find(UsageEvent, "type = 'SNAPSHOT.CREATE'")] == [PHYSICAL, DELTA]


class TestConvertBeforeAZoneCopy:
    """§7.4, §16.7: a KVM delta is converted into one full file on its store, copied, and the file deleted."""

    @pytest.mark.violates("counts-match-recount", "usage-matches-objects")
    def test_a_delta_is_converted_a_root_is_not(self) -> None:
        """The delta goes BackingUp and back while ``<path>_temp`` is written; zone2 gets one full file, parent 0."""
        cloud = Cloud(config=INCREMENTAL)
        z2 = second_zone(cloud)
        volume = cloud.volume("kvm-nfs")
        root = cloud.take(volume, zone_ids=[z2.id])
        delta = cloud.take(volume, zone_ids=[z2.id])
        assert snapshot_log(cloud.engine, root.snapshot.id)[-1] == (
            "event",
            "CreatedOnPrimary",
            "OperationNotPerformed",
            "BackedUp",
        )
        assert delta.log("snapshot")[-3:] == [
            ("snapshot", 2, "CreatedOnPrimary", "OperationNotPerformed", "BackedUp"),
            ("snapshot", 2, "BackedUp", "BackupToSecondary", "BackingUp"),
            ("snapshot", 2, "BackingUp", "OperationSucceeded", "BackedUp"),
        ]
        copy = cloud.engine.store.first(SnapshotStoreRef, "snapshot_id = 2 AND store_id != 1")
        assert copy is not None
        assert (copy.state, copy.parent_snapshot_id, copy.physical_size, copy.kvm_checkpoint_path) == (
            "Ready",
            0,
            PHYSICAL,
            None,
        )
        source = _ref(cloud, 2).install_path
        assert _objects(cloud, 2) == [
            ("image", "delta", DELTA, True),
            ("image", "checkpoint", 0, True),
            ("primary", "bitmap", 0, True),
            ("image", "converted", PHYSICAL, False),
            ("image", "snapshot", PHYSICAL, True),
        ]
        converted = cloud.engine.store.first(StorageObject, "kind = 'converted'")
        assert converted is not None and converted.path == f"{source}_temp"
        copies = cloud.engine.store.find(UsageEvent, "type = 'SNAPSHOT.COPY'")
        assert [(u.resource_id, u.zone_id) for u in copies] == [(1, z2.id), (2, z2.id)]
        assert cloud.counts()["secondary_storage"] == PHYSICAL + DELTA + 2 * SIZE

    @pytest.mark.violates("usage-matches-objects")
    def test_a_failed_conversion_ends_the_copies_and_the_snapshot_is_backed_up_again(self) -> None:
        """OperationNotPerformed puts it back; the throw skips zone3 too; the take still succeeds (§7.4)."""
        cloud = Cloud(config=INCREMENTAL, faults=FaultPlan().fail("image.convertSnapshot"))
        z2, z3 = second_zone(cloud), second_zone(cloud, "zone3")
        volume = cloud.volume("kvm-nfs")
        _takes(cloud, volume, 1)
        taken = cloud.take(volume, zone_ids=[z2.id, z3.id])
        sid = taken.snapshot.id
        assert taken.status == "SUCCEEDED"
        assert taken.log("snapshot")[-2:] == [
            ("snapshot", sid, "BackedUp", "BackupToSecondary", "BackingUp"),
            ("snapshot", sid, "BackingUp", "OperationNotPerformed", "BackedUp"),
        ]
        injected = "convertSnapshot failed on image (injected fault)"
        text = f"Failed to convert snapshot [{taken.snapshot.uuid}] due to [{injected}]."
        assert ("copies.start_zone_copy", "CloudRuntimeException", text) in taken.failures()
        assert [store for _, store, *_ in _refs(cloud, sid)] == [1]
        assert _present(cloud, sid) == ["delta", "checkpoint", "bitmap"]
        assert cloud.engine.store.count(UsageEvent, "type = 'SNAPSHOT.COPY'") == 0

    @pytest.mark.violates("usage-matches-objects")
    def test_the_copy_api_fails_with_the_conversion(self) -> None:
        """copySnapshot lets the conversion's exception out of its job: 530 with its text."""
        cloud = Cloud(config=INCREMENTAL, faults=FaultPlan().fail("image.convertSnapshot"))
        z2 = second_zone(cloud)
        sid = _takes(cloud, cloud.volume("kvm-nfs"), 2)[1]
        mark = cloud.engine.store.count(TransitionLog)
        job = cloud.engine.copy_snapshot(sid, dest_zone_ids=[z2.id])
        cloud.engine.run()
        uuid = cloud.engine.get(Snapshot, sid).uuid
        assert answer(cloud.engine, job.id) == (
            "FAILED",
            530,
            f"Failed to convert snapshot [{uuid}] due to [convertSnapshot failed on image (injected fault)].",
        )
        assert snapshot_log(cloud.engine, sid, since=mark) == [
            ("event", "BackedUp", "BackupToSecondary", "BackingUp"),
            ("event", "BackingUp", "OperationNotPerformed", "BackedUp"),
        ]

    @pytest.mark.violates("usage-matches-objects")
    def test_a_converted_file_left_by_a_failed_copy_goes_with_the_snapshot(self) -> None:
        """Only a copy that succeeded deletes it; the SSVM's delete of ``*<name>*`` takes it with the delta."""
        cloud = Cloud(config=INCREMENTAL, faults=FaultPlan().fail("image.createAsync"))
        z2 = second_zone(cloud)
        volume = cloud.volume("kvm-nfs")
        _takes(cloud, volume, 1)
        sid = _takes(cloud, volume, 1, zone_ids=[z2.id])[0]
        assert _present(cloud, sid) == ["delta", "checkpoint", "bitmap", "converted"]
        assert cloud.engine.store.count(ActionEvent, "type = 'SNAPSHOT.COPY' AND level = 'ERROR'") == 1
        assert delete(cloud, sid)[0] == "SUCCEEDED"
        assert _present(cloud, sid) == []


def _unreadable(cloud: Cloud) -> list[str]:
    """Present deltas whose parent object is gone from their store."""
    store = cloud.engine.store
    return [
        delta.path
        for delta in store.find(StorageObject, "kind = 'delta' AND deleted_ms IS NULL")
        if store.first(
            StorageObject,
            "store_kind = ? AND store_id = ? AND path = ? AND deleted_ms IS NULL",
            (delta.store_kind, delta.store_id, delta.parent_path),
        )
        is None
    ]


def _refs_without_files(cloud: Cloud) -> list[tuple[int, str, str]]:
    """Ready or Hidden refs whose file is not on their store."""
    store = cloud.engine.store
    missing = []
    for ref in store.find(SnapshotStoreRef, "state IN ('Ready', 'Hidden')"):
        kind = "image" if ref.store_role == "Image" else "primary"
        found = store.first(
            StorageObject,
            "store_kind = ? AND store_id = ? AND path = ? AND deleted_ms IS NULL",
            (kind, ref.store_id, ref.install_path or ""),
        )
        if found is None:
            missing.append((ref.snapshot_id, ref.state, ref.install_path or ""))
    return missing


TAKE = st.tuples(st.just("take"), st.sampled_from([0, 1 << 20, DELTA]))
OPS = st.lists(
    st.one_of(
        TAKE,
        TAKE,
        st.tuples(st.just("delete"), st.integers(0, 9)),
        st.tuples(st.just("incremental"), st.sampled_from([0, 1])),
    ),
    min_size=1,
    max_size=14,
)


@settings(max_examples=80, deadline=None)
@given(OPS, st.integers(2, 5), st.booleans())
def test_no_take_or_delete_leaves_a_delta_without_its_parent(
    ops: list[tuple[str, int]], delta_max: int, backup: bool
) -> None:
    """Whatever is taken (with incremental on or off, changed or not) and deleted in whatever order, every delta on
    storage can still be read and every Ready or Hidden ref has its file; every take and delete succeeds."""
    cloud = Cloud(config={**INCREMENTAL, "snapshot.delta.max": delta_max, "snapshot.backup.to.secondary": backup})
    volume = cloud.volume("kvm-nfs")
    taken: list[int] = []
    for op, arg in ops:
        if op == "take":
            cloud.engine.set_volume_churn(volume, arg)
            taken.extend(_takes(cloud, volume, 1))
        elif op == "incremental":
            cloud.engine.set_config("kvm.incremental.snapshot", bool(arg))
        elif taken:
            sid = taken[arg % len(taken)]
            if snapshot(cloud.engine, sid)[0] == "BackedUp":
                assert delete(cloud, sid)[0] == "SUCCEEDED"
    assert _unreadable(cloud) == []
    assert _refs_without_files(cloud) == []
