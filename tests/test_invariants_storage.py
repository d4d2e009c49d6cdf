"""The storage invariants (snapshotfsm.invariants.storage), each on hand-written good and bad databases."""

from __future__ import annotations

import pytest
from cloud import Cloud
from invariant_rows import Rows
from lifecycle_cloud import delete

from snapshotfsm import invariants
from snapshotfsm.invariants import Input, When, answers, storage, violations
from snapshotfsm.invariants.storage import delta_has_parent, no_orphan_object, ready_ref_has_object


@pytest.fixture
def rows() -> Rows:
    return Rows()


class TestTable:
    """The module's table, and its place in the package's."""

    def test_each_is_declared_with_when_and_inputs(self) -> None:
        declared = [(i.name, i.when, i.inputs) for i in storage.INVARIANTS]
        assert declared == [
            ("no-orphan-object", When.QUIESCENT, frozenset({Input.DATABASE, Input.STORAGE})),
            ("ready-ref-has-object", When.QUIESCENT, frozenset({Input.DATABASE, Input.STORAGE})),
            ("delta-has-parent", When.ALWAYS, frozenset({Input.STORAGE})),
        ]

    def test_each_says_what_it_means(self) -> None:
        for inv in storage.INVARIANTS:
            assert len(inv.doc.splitlines()) > 3, inv.name

    def test_the_package_lists_them(self) -> None:
        assert all(inv in invariants.INVARIANTS for inv in storage.INVARIANTS)

    def test_an_empty_database_breaks_none(self, rows: Rows) -> None:
        run = invariants.Run(store=rows.store)
        assert violations((*storage.INVARIANTS, *answers.INVARIANTS), run, at=When.RESTARTED) == []

    @pytest.mark.violates("counts-match-recount")
    def test_a_run_that_went_well_breaks_none(self) -> None:
        """XenServer: a full copy and two deltas, a zone copy, the middle one deleted (hidden), then the newest."""
        cloud = Cloud()
        zone2 = cloud.engine.add_zone("zone2")
        cloud.engine.add_image_store(zone2, "secondary2")
        volume = cloud.volume("xen-nfs")
        ids = [cloud.take(volume).snapshot.id for _ in range(3)]
        job = cloud.engine.copy_snapshot(ids[0], dest_zone_ids=[zone2.id])
        cloud.engine.run()
        assert cloud.engine.job_status(job.id) == "SUCCEEDED"
        assert delete(cloud, ids[1])[0] == "SUCCEEDED"
        assert delete(cloud, ids[2])[0] == "SUCCEEDED"
        run = invariants.Run(store=cloud.engine.store, record=cloud.engine.record)
        assert violations((*storage.INVARIANTS, *answers.INVARIANTS), run, at=When.QUIESCENT) == []


class TestNoOrphanObject:
    """Nothing on storage that no live row owns."""

    def test_holds_for_files_named_by_live_refs(self, rows: Rows) -> None:
        s = rows.snapshot()
        rows.ref(s, "Primary", "Ready", "pool/s1")
        rows.ref(s, "Image", "Ready", "snap/s1")
        rows.obj("primary", "pool/s1", s)
        rows.obj("image", "snap/s1", s)
        assert rows.check(no_orphan_object) == []

    def test_deleted_objects_are_not_looked_at(self, rows: Rows) -> None:
        rows.obj("image", "snap/gone", None, deleted=True)
        assert rows.check(no_orphan_object) == []

    def test_an_object_no_ref_names_is_an_orphan(self, rows: Rows) -> None:
        s = rows.snapshot()
        oid = rows.obj("image", "snap/s1", s)
        assert rows.details(no_orphan_object) == [
            (
                f"image store {rows.image.id}: snap/s1: snapshot object {oid} (snapshot {s}) is present, "
                "but no live row owns it"
            )
        ]

    def test_the_ref_must_be_on_the_objects_store(self, rows: Rows) -> None:
        """Same path, other store: a primary ref does not own an image object, nor a ref on image2 one on image."""
        s = rows.snapshot()
        rows.ref(s, "Primary", "Ready", "p")
        rows.ref(s, "Image", "Ready", "p", store_id=rows.image2.id)
        rows.obj("image", "p", s)
        assert len(rows.check(no_orphan_object)) == 1

    @pytest.mark.parametrize(
        ("status", "removed", "ref_state"),
        [("BackedUp", False, "Destroyed"), ("BackedUp", True, "Ready"), ("Destroyed", False, "Ready")],
    )
    def test_a_destroyed_ref_a_removed_or_destroyed_snapshot_owns_nothing(
        self, rows: Rows, status: str, removed: bool, ref_state: str
    ) -> None:
        s = rows.snapshot(status, removed=removed)
        rows.ref(s, "Image", ref_state, "snap/s1")
        rows.obj("image", "snap/s1", s)
        assert len(rows.check(no_orphan_object)) == 1

    @pytest.mark.parametrize("status", ["Error", "Destroying", "CreatedOnPrimary"])
    def test_a_snapshot_a_delete_can_still_reach_owns_its_files(self, rows: Rows, status: str) -> None:
        s = rows.snapshot(status)
        rows.ref(s, "Primary", "Destroying", "pool/s1")
        rows.obj("primary", "pool/s1", s)
        assert rows.check(no_orphan_object) == []

    def test_a_hidden_ancestor_is_owned_through_the_deltas_on_it(self, rows: Rows) -> None:
        """§16.3: a Destroyed snapshot's Hidden file stays while a live delta (two levels down here) needs it."""
        root, middle, last = rows.snapshot("Destroyed"), rows.snapshot("Destroyed"), rows.snapshot()
        rows.ref(root, "Image", "Hidden", "snap/root")
        rows.ref(middle, "Image", "Hidden", "snap/middle")
        rows.ref(last, "Image", "Ready", "snap/last")
        rows.obj("image", "snap/root", root)
        rows.obj("image", "snap/middle", middle, kind="delta", parent="snap/root")
        rows.obj("image", "snap/last", last, kind="delta", parent="snap/middle")
        assert rows.check(no_orphan_object) == []

    def test_a_hidden_file_no_live_delta_needs_is_an_orphan(self, rows: Rows) -> None:
        root, last = rows.snapshot("Destroyed"), rows.snapshot("Destroyed")
        rows.ref(root, "Image", "Hidden", "snap/root")
        rows.obj("image", "snap/root", root)
        rows.obj("image", "snap/last", last, kind="delta", parent="snap/root", deleted=True)
        assert [v.subject for v in rows.check(no_orphan_object)] == [f"image store {rows.image.id}: snap/root"]

    def test_a_file_shared_by_an_empty_delta_needs_one_live_owner(self, rows: Rows) -> None:
        """§16.2: the child's ref names the parent's file; deleting both leaves it with no owner (the §16.3 quirk)."""
        parent, child = rows.snapshot("Destroyed"), rows.snapshot()
        rows.ref(parent, "Image", "Hidden", "snap/parent")
        rows.ref(child, "Image", "Ready", "snap/parent")
        rows.obj("image", "snap/parent", parent)
        assert rows.check(no_orphan_object) == []
        rows.store.conn.execute("UPDATE snapshots SET status = 'Destroyed' WHERE id = ?", (child,))
        assert len(rows.check(no_orphan_object)) == 1

    def test_a_checkpoint_goes_with_its_refs_file(self, rows: Rows) -> None:
        """§16.4: owned while a live ref names it beside an owned file, Hidden ancestors included."""
        root, last = rows.snapshot("Destroyed"), rows.snapshot()
        rows.ref(root, "Image", "Hidden", "snap/root", checkpoint="cp/root")
        rows.ref(last, "Image", "Ready", "snap/last", checkpoint="cp/last")
        rows.obj("image", "snap/root", root)
        rows.obj("image", "snap/last", last, kind="delta", parent="snap/root")
        rows.obj("image", "cp/root", root, kind="checkpoint")
        rows.obj("image", "cp/last", last, kind="checkpoint")
        assert rows.check(no_orphan_object) == []

    def test_a_checkpoint_no_ref_names_is_an_orphan(self, rows: Rows) -> None:
        s = rows.snapshot()
        rows.ref(s, "Image", "Ready", "snap/s1")
        rows.obj("image", "snap/s1", s)
        oid = rows.obj("image", "cp/s1", s, kind="checkpoint")
        assert rows.details(no_orphan_object) == [
            (
                f"image store {rows.image.id}: cp/s1: checkpoint object {oid} (snapshot {s}) is present, "
                "but no live row owns it"
            )
        ]

    def test_a_bitmap_lives_while_its_checkpoint_is_owned(self, rows: Rows) -> None:
        """§16.6: the volume's bitmap of a checkpoint goes with it; a bitmap whose checkpoint went is left over."""
        s = rows.snapshot()
        rows.ref(s, "Image", "Ready", "snap/s1", checkpoint="cp/s1")
        rows.obj("image", "snap/s1", s)
        checkpoint = rows.obj("image", "cp/s1", s, kind="checkpoint")
        rows.obj("primary", "vol#bitmap/s1", s, kind="bitmap")
        assert rows.check(no_orphan_object) == []
        rows.store.conn.execute("UPDATE sim_object SET deleted_ms = 9 WHERE id = ?", (checkpoint,))
        assert [v.subject for v in rows.check(no_orphan_object)] == [f"primary store {rows.pool.id}: vol#bitmap/s1"]

    def test_a_converted_temp_file_is_named_by_no_row(self, rows: Rows) -> None:
        """§16.7: a ``_temp`` left behind by a copy that did not complete is an orphan, its snapshot live or not."""
        s = rows.snapshot()
        rows.ref(s, "Image", "Ready", "snap/s1")
        rows.obj("image", "snap/s1", s)
        rows.obj("image", "snap/s1_temp", s, kind="converted")
        assert [v.subject for v in rows.check(no_orphan_object)] == [f"image store {rows.image.id}: snap/s1_temp"]

    def test_an_object_of_no_snapshot_says_so(self, rows: Rows) -> None:
        oid = rows.obj("primary", "/dev/storpool-byid/1.2", None, kind="recovering")
        assert rows.details(no_orphan_object) == [
            (
                f"primary store {rows.pool.id}: /dev/storpool-byid/1.2: recovering object {oid} (no snapshot) is "
                "present, but no live row owns it"
            )
        ]


class TestReadyRefHasObject:
    """Every Ready or Hidden ref names an object present on its store."""

    def test_holds_when_the_objects_are_there(self, rows: Rows) -> None:
        s, gone = rows.snapshot(), rows.snapshot("Destroyed")
        rows.ref(s, "Primary", "Ready", "pool/s1")
        rows.ref(gone, "Image", "Hidden", "snap/g")
        rows.obj("primary", "pool/s1", s)
        rows.obj("image", "snap/g", gone)
        assert rows.check(ready_ref_has_object) == []

    @pytest.mark.parametrize("state", ["Allocated", "Creating", "Destroying", "Destroyed"])
    def test_other_states_claim_no_object(self, rows: Rows, state: str) -> None:
        rows.ref(rows.snapshot(), "Image", state, None)
        assert rows.check(ready_ref_has_object) == []

    def test_a_deleted_object_is_missing(self, rows: Rows) -> None:
        s = rows.snapshot()
        ref = rows.ref(s, "Primary", "Ready", "pool/s1")
        rows.obj("primary", "pool/s1", s, deleted=True)
        assert rows.details(ready_ref_has_object) == [
            (
                f"snapshot_store_ref {ref}: Ready ref of snapshot {s} on Primary store {rows.pool.id} names pool/s1, "
                "which is not on its store"
            )
        ]

    def test_a_hidden_ref_needs_its_file_too(self, rows: Rows) -> None:
        s = rows.snapshot("Destroyed")
        rows.ref(s, "Image", "Hidden", "snap/s1")
        assert len(rows.check(ready_ref_has_object)) == 1

    def test_an_object_on_another_store_is_not_its(self, rows: Rows) -> None:
        s = rows.snapshot()
        rows.ref(s, "Image", "Ready", "x")
        rows.obj("primary", "x", s)
        rows.obj("image", "x", s, store_id=rows.image2.id)
        assert len(rows.check(ready_ref_has_object)) == 1

    def test_a_ready_ref_without_a_path(self, rows: Rows) -> None:
        s = rows.snapshot()
        ref = rows.ref(s, "Image", "Ready", None)
        assert rows.details(ready_ref_has_object) == [
            f"snapshot_store_ref {ref}: Ready ref of snapshot {s} on Image store {rows.image.id} names no install path"
        ]


class TestDeltaHasParent:
    """Every present delta's parent is present on its store."""

    def test_holds_on_a_chain(self, rows: Rows) -> None:
        s = rows.snapshot()
        rows.obj("image", "full", s)
        rows.obj("image", "d1", s, kind="delta", parent="full")
        rows.obj("image", "d2", s, kind="delta", parent="d1")
        assert rows.check(delta_has_parent) == []

    def test_a_deleted_delta_needs_nothing(self, rows: Rows) -> None:
        rows.obj("image", "d1", None, kind="delta", parent="gone", deleted=True)
        assert rows.check(delta_has_parent) == []

    def test_a_deleted_parent_breaks_the_delta(self, rows: Rows) -> None:
        s = rows.snapshot()
        rows.obj("image", "full", s, deleted=True)
        oid = rows.obj("image", "d1", s, kind="delta", parent="full")
        assert rows.details(delta_has_parent) == [
            (
                f"image store {rows.image.id}: d1: delta object {oid} of snapshot {s} stands on full, which is not on "
                "the store"
            )
        ]

    def test_the_parent_must_be_on_the_same_store(self, rows: Rows) -> None:
        s = rows.snapshot()
        rows.obj("image", "full", s, store_id=rows.image2.id)
        rows.obj("primary", "full", s)
        rows.obj("image", "d1", s, kind="delta", parent="full")
        assert len(rows.check(delta_has_parent)) == 1

    def test_a_delta_that_names_no_parent(self, rows: Rows) -> None:
        s = rows.snapshot()
        oid = rows.obj("image", "d1", s, kind="delta")
        assert rows.details(delta_has_parent) == [
            f"image store {rows.image.id}: d1: delta object {oid} of snapshot {s} names no parent"
        ]
