"""CloudStack's recount and ``updateResourceCount`` (``orchestration/recount.py``; spec §19.2).

The recount is read on rows written by hand, one quirk at a time: what counts on ``snapshot``, ``secondary_storage``
(Ready image refs, soft-removed snapshots included, Hidden refs not) and ``primary_storage`` (Ready primary refs of
live snapshots that have no image ref at all). Volumes and templates are never charged in the model, so they are
not recounted either.
"""

from __future__ import annotations

import pytest
from cloud import PHYSICAL, SIZE, Cloud
from helpers_counts import Rows

from snapshotfsm.errors import InvalidValue, NotFound, ServerDown
from snapshotfsm.orchestration import recount
from snapshotfsm.store.records import ResourceCount

ZERO = {"snapshot": 0, "primary_storage": 0, "secondary_storage": 0}
GROUP = 7
"""``Snapshot.Type.GROUP.ordinal()``."""


class TestSnapshotCount:
    """``countSnapshotsForAccount``: not removed, not Error or Destroyed, not GROUP."""

    def test_an_account_with_nothing_counts_zero(self):
        """No snapshots, no refs: every type is 0."""
        assert Rows().recount() == ZERO

    @pytest.mark.violates("counts-match-recount", params=["Allocated", "BackedUp", "CreatedOnPrimary"])
    @pytest.mark.violates(
        "counts-match-recount", "no-transitional-state", params=["BackingUp", "Copying", "Creating", "Destroying"]
    )
    @pytest.mark.parametrize(
        "status", ["Allocated", "Creating", "CreatedOnPrimary", "BackingUp", "BackedUp", "Copying", "Destroying"]
    )
    def test_a_snapshot_in_a_live_state_counts(self, status: str):
        """Every state but Error and Destroyed counts, Allocated (no ref yet) included."""
        rows = Rows()
        rows.snapshot(status)
        assert rows.recount() == {**ZERO, "snapshot": 1}

    @pytest.mark.parametrize("status", ["Error", "Destroyed"])
    def test_error_and_destroyed_do_not_count(self, status: str):
        """``status NOT IN (Error, Destroyed)``."""
        rows = Rows()
        rows.snapshot(status)
        assert rows.recount() == ZERO

    def test_a_soft_removed_snapshot_does_not_count(self):
        """``removed IS NULL``: a removed BackedUp row is not counted."""
        rows = Rows()
        rows.snapshot(removed=True)
        assert rows.recount()["snapshot"] == 0

    @pytest.mark.violates("counts-match-recount")
    def test_a_group_snapshot_does_not_count(self):
        """``snapshot_type`` GROUP is left out; FROM_GROUP is not."""
        rows = Rows()
        rows.snapshot(type=GROUP)
        rows.snapshot(type=GROUP + 1)
        assert rows.recount()["snapshot"] == 1

    @pytest.mark.violates("counts-match-recount", "ready-ref-has-object")
    def test_another_accounts_snapshots_are_not_counted(self):
        """Only the account's own rows."""
        rows = Rows()
        theirs = rows.snapshot(account_id=rows.cloud.bob.id)
        rows.ref(theirs, "Image")
        assert rows.recount() == ZERO
        assert recount.recount(rows.store, rows.cloud.bob.id) == {
            "snapshot": 1,
            "primary_storage": 0,
            "secondary_storage": PHYSICAL,
        }


class TestSecondaryStorage:
    """The ``physical_size`` of Ready Image refs of the account's snapshots."""

    @pytest.mark.violates("counts-match-recount", "ready-ref-has-object")
    def test_a_backed_up_snapshot_counts_its_image_ref_only(self):
        """Ready on both stores: secondary counts the image ref; primary nothing (the snapshot has an image ref)."""
        rows = Rows()
        snapshot = rows.snapshot()
        rows.ref(snapshot, "Primary", physical=PHYSICAL + 1)
        rows.ref(snapshot, "Image")
        assert rows.recount() == {"snapshot": 1, "primary_storage": 0, "secondary_storage": PHYSICAL}

    @pytest.mark.violates("counts-match-recount", "ready-ref-has-object")
    def test_a_soft_removed_snapshots_ready_image_ref_still_counts(self):
        """Quirk: the join does not look at ``snapshots.removed``; the snapshot itself is no longer counted."""
        rows = Rows()
        rows.ref(rows.snapshot(removed=True), "Image")
        assert rows.recount() == {**ZERO, "secondary_storage": PHYSICAL}

    @pytest.mark.violates("counts-match-recount", "ready-ref-has-object")
    def test_a_destroyed_snapshots_ready_image_ref_still_counts(self):
        """An empty delta's ref stays Ready under a Destroyed snapshot (§16.3): counted."""
        rows = Rows()
        rows.ref(rows.snapshot("Destroyed"), "Image", physical=0)
        rows.ref(rows.snapshot("Destroyed"), "Image", physical=3)
        assert rows.recount() == {**ZERO, "secondary_storage": 3}

    @pytest.mark.violates("ready-ref-has-object")
    def test_a_hidden_ref_is_not_counted(self):
        """Quirk: a chain parent's ref hidden by its delete keeps its file, and the recount leaves it out."""
        rows = Rows()
        rows.ref(rows.snapshot("Destroyed"), "Image", "Hidden")
        assert rows.recount() == ZERO

    @pytest.mark.violates("counts-match-recount", params=["Allocated", "Created"])
    @pytest.mark.violates("counts-match-recount", "no-transitional-state", params=["Copying", "Creating"])
    @pytest.mark.parametrize("state", ["Allocated", "Creating", "Created", "Copying", "Destroying", "Destroyed"])
    def test_an_image_ref_not_ready_is_not_counted(self, state: str):
        """Only ``state = Ready``."""
        rows = Rows()
        rows.ref(rows.snapshot(), "Image", state)
        assert rows.recount() == {**ZERO, "snapshot": 1}


class TestPrimaryStorage:
    """Ready Primary refs of live snapshots with no Image ref in any state."""

    @pytest.mark.violates("counts-match-recount", "ready-ref-has-object")
    def test_backup_off_counts_the_primary_ref(self):
        """A snapshot kept on primary only (backup off, ``locationtype=primary``)."""
        rows = Rows()
        rows.ref(rows.snapshot(), "Primary")
        assert rows.recount() == {"snapshot": 1, "primary_storage": PHYSICAL, "secondary_storage": 0}

    @pytest.mark.violates("counts-match-recount", "no-transitional-state", "ready-ref-has-object", params=["Creating"])
    @pytest.mark.violates("counts-match-recount", "ready-ref-has-object", params=["Allocated", "Hidden", "Ready"])
    @pytest.mark.violates("ready-ref-has-object", params=["Destroyed"])
    @pytest.mark.parametrize("state", ["Allocated", "Creating", "Ready", "Hidden", "Destroyed"])
    def test_an_image_ref_in_any_state_takes_the_primary_ref_out(self, state: str):
        """``NOT EXISTS`` an Image ref, whatever its state."""
        rows = Rows()
        snapshot = rows.snapshot()
        rows.ref(snapshot, "Primary")
        rows.ref(snapshot, "Image", state)
        assert rows.recount()["primary_storage"] == 0

    @pytest.mark.violates("counts-match-recount", "no-transitional-state", "ready-ref-has-object")
    def test_an_async_backup_under_way_counts_on_neither_store(self):
        """CreatedOnPrimary, its primary ref Ready and its image ref Creating: neither storage term counts it."""
        rows = Rows()
        snapshot = rows.snapshot("BackingUp")
        rows.ref(snapshot, "Primary")
        rows.ref(snapshot, "Image", "Creating")
        assert rows.recount() == {**ZERO, "snapshot": 1}

    @pytest.mark.violates("ready-ref-has-object")
    def test_a_removed_snapshots_primary_ref_is_not_counted(self):
        """``snapshots.removed IS NULL``, unlike the secondary term."""
        rows = Rows()
        rows.ref(rows.snapshot(removed=True), "Primary")
        assert rows.recount() == ZERO

    @pytest.mark.violates("counts-match-recount", params=["Allocated", "Destroyed", "Destroying"])
    @pytest.mark.violates("counts-match-recount", "no-transitional-state", params=["Creating"])
    @pytest.mark.parametrize("state", ["Allocated", "Creating", "Destroying", "Destroyed"])
    def test_a_primary_ref_not_ready_is_not_counted(self, state: str):
        """Only ``state = Ready``."""
        rows = Rows()
        rows.ref(rows.snapshot(), "Primary", state)
        assert rows.recount()["primary_storage"] == 0

    @pytest.mark.violates("counts-match-recount", "ready-ref-has-object")
    def test_refs_on_several_pools_add_up(self):
        """A snapshot copied to other pools counts each Ready primary ref."""
        rows = Rows()
        snapshot = rows.snapshot()
        rows.ref(snapshot, "Primary", physical=5)
        rows.ref(snapshot, "Primary", physical=7)
        assert rows.recount()["primary_storage"] == 12


class TestRecountArguments:
    """Bad input: a clear error naming the value."""

    @pytest.mark.violates("counts-match-recount")
    def test_one_type(self):
        """``resource`` narrows the answer to that type."""
        rows = Rows()
        rows.snapshot()
        assert recount.recount(rows.engine.rt, rows.alice.id, resource="snapshot") == {"snapshot": 1}

    def test_an_unknown_account(self):
        """NotFound, with the id."""
        with pytest.raises(NotFound) as info:
            recount.recount(Rows().store, 99)
        assert str(info.value) == "no account with id 99"

    def test_a_removed_account(self):
        """A removed account is not found, as CloudStack's ``findById`` does not see it."""
        rows = Rows()
        rows.store.update(rows.alice, removed="2026-01-01 00:00:00")
        with pytest.raises(NotFound) as info:
            recount.recount(rows.store, rows.alice.id)
        assert str(info.value) == f"no account with id {rows.alice.id}"

    @pytest.mark.parametrize("value", ["2", True, None])
    def test_an_account_id_of_the_wrong_type(self, value: object):
        """InvalidValue, showing the value and its type."""
        with pytest.raises(InvalidValue) as info:
            recount.recount(Rows().store, value)  # type: ignore[arg-type]
        kind = type(value).__name__
        assert str(info.value) == f"account id must be an integer account id (got {value!r} that is a {kind})"

    def test_an_unknown_type(self):
        """InvalidValue listing the types the model counts."""
        with pytest.raises(InvalidValue) as info:
            recount.recount(Rows().store, 2, resource="volume")
        assert str(info.value) == (
            "resource type must be one of snapshot, primary_storage, secondary_storage (got 'volume' that is a str)"
        )

    def test_not_a_store(self):
        """The first argument is a Runtime or a Store."""
        with pytest.raises(InvalidValue) as info:
            recount.recount("cloud.db", 2)  # type: ignore[arg-type]
        assert str(info.value) == "recount source must be a Runtime or a Store (got 'cloud.db' that is a str)"


class TestUpdateResourceCount:
    """``Engine.update_resource_count``: each type recounted, written when it differs, and what changed answered."""

    @pytest.mark.violates("ready-ref-has-object")
    def test_writes_the_recount_and_answers_what_changed(self):
        """Counts off on two types: both written; the answer gives each one's count before and after."""
        rows = Rows()
        rows.ref(rows.snapshot(), "Image")
        rows.set_count("snapshot", 3)
        rows.set_count("secondary_storage", 1)
        assert rows.engine.update_resource_count(rows.alice) == {
            "snapshot": (3, 1),
            "secondary_storage": (1, PHYSICAL),
        }
        assert rows.cloud.counts() == {"snapshot": 1, "primary_storage": 0, "secondary_storage": PHYSICAL}
        assert rows.engine.update_resource_count(rows.alice.id) == {}

    def test_counts_that_match_are_not_written(self):
        """Nothing differs: nothing is written, the answer is empty."""
        rows = Rows()
        before = rows.cloud.dump()
        assert rows.engine.update_resource_count(rows.alice) == {}
        assert rows.cloud.dump() == before

    def test_a_missing_row_is_inserted(self):
        """``ResourceCountDao.persist``: a type without a row gets one, even at 0 (before: None)."""
        rows = Rows()
        rows.snapshot()
        for row in rows.store.find(ResourceCount, "account_id = ?", (rows.alice.id,)):
            rows.store.delete(row, by="test")
        assert rows.engine.update_resource_count(rows.alice) == {
            "snapshot": (None, 1),
            "primary_storage": (None, 0),
            "secondary_storage": (None, 0),
        }
        assert rows.cloud.counts() == {"snapshot": 1, "primary_storage": 0, "secondary_storage": 0}

    @pytest.mark.violates("counts-match-recount")
    def test_one_type(self):
        """``resource``: only that type is recounted and written."""
        rows = Rows()
        rows.set_count("snapshot", 4)
        rows.set_count("primary_storage", 4)
        assert rows.engine.update_resource_count(rows.alice, resource="primary_storage") == {"primary_storage": (4, 0)}
        assert rows.cloud.counts() == {"snapshot": 4, "primary_storage": 0, "secondary_storage": 0}

    def test_each_change_is_noted_as_the_accounts_own(self):
        """The run's record gets one charge per count moved, of the account, for the account's own objects."""
        rows = Rows()
        rows.set_count("snapshot", 3)
        rows.engine.update_resource_count(rows.alice)
        alice = rows.alice.id
        assert [(c.account_id, c.resource, c.delta, c.owner_id) for c in rows.engine.record.charges] == [
            (alice, "snapshot", -3, alice)
        ]

    @pytest.mark.violates("counts-match-recount", "ready-ref-has-object")
    def test_recount_only_computes(self):
        """``Engine.recount`` answers what would be written and writes nothing."""
        rows = Rows()
        rows.ref(rows.snapshot(), "Primary")
        before = rows.cloud.dump()
        assert rows.engine.recount(rows.alice) == {"snapshot": 1, "primary_storage": PHYSICAL, "secondary_storage": 0}
        assert rows.engine.recount(rows.alice.id, resource="snapshot") == {"snapshot": 1}
        assert rows.cloud.dump() == before

    def test_an_async_backup_drift_is_set_right(self):
        """Allocation charged secondary, the size correction went to primary (§5.4): the recount sets both right."""
        cloud = Cloud()
        taken = cloud.take(cloud.volume("xen-nfs"), async_backup=True)
        assert taken.status == "SUCCEEDED"
        drifted = cloud.counts()
        assert drifted == {"snapshot": 1, "primary_storage": -(SIZE - PHYSICAL), "secondary_storage": SIZE}
        assert cloud.engine.update_resource_count(cloud.alice) == {
            "primary_storage": (-(SIZE - PHYSICAL), 0),
            "secondary_storage": (SIZE, PHYSICAL),
        }

    @pytest.mark.violates("counts-match-recount")
    @pytest.mark.parametrize(
        ("account", "resource", "error", "message"),
        [
            (99, None, NotFound, "no account with id 99"),
            ("alice", None, InvalidValue, "updateResourceCount account must be an account id (int) or an Account"),
            (2, "volume", InvalidValue, "resource type must be one of snapshot, primary_storage, secondary_storage"),
        ],
    )
    def test_bad_input_changes_nothing(self, account: object, resource: str | None, error: type, message: str):
        """An unknown account, an argument of the wrong type, an unknown type: refused, the database as it was."""
        rows = Rows()
        rows.set_count("snapshot", 3)
        before = rows.cloud.dump()
        with pytest.raises(error) as info:
            rows.engine.update_resource_count(account, resource=resource)  # type: ignore[arg-type]
        assert str(info.value).startswith(message)
        assert rows.cloud.dump() == before
        assert rows.engine.record.charges == []

    def test_a_down_server_refuses(self):
        """A crashed management server takes no API call until it restarts."""
        rows = Rows()
        rows.engine.crash()
        with pytest.raises(ServerDown):
            rows.engine.update_resource_count(rows.alice)
