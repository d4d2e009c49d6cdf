"""The resource-count invariants (``invariants/counts.py``): each fails on bad rows or records and holds on good ones.

The bad ones are written by hand: a count off or below zero, a charge to an account that does not own its object.
"""

from __future__ import annotations

import pytest
from cloud import PHYSICAL, Cloud
from helpers_counts import Rows

from snapshotfsm import invariants
from snapshotfsm.invariants import INVARIANTS, Input, Run, Violation, When, counts
from snapshotfsm.record import RunRecord
from snapshotfsm.store.records import ResourceCount


def _run(rows: Rows, record: RunRecord | None = None) -> Run:
    return Run(rows.store, record if record is not None else rows.engine.record)


class TestDeclarations:
    """Each is named, timed, declares its inputs, documents itself and is listed in the package's table."""

    def test_the_table(self):
        """Name, when and inputs of each, in order."""
        assert [(i.name, i.when, i.inputs) for i in counts.INVARIANTS] == [
            ("counts-match-recount", When.QUIESCENT, frozenset({Input.DATABASE})),
            ("no-negative-count", When.ALWAYS, frozenset({Input.DATABASE})),
            ("charge-to-owner", When.ALWAYS, frozenset({Input.RECORD})),
        ]

    def test_all_are_in_the_package_table(self):
        """``snapshotfsm.invariants.INVARIANTS`` holds every one of them."""
        assert set(counts.INVARIANTS) <= set(INVARIANTS)

    def test_each_says_what_it_means(self):
        """A docstring of more than its first line."""
        assert all(len(i.doc.splitlines()) > 2 for i in counts.INVARIANTS)

    @pytest.mark.violates("counts-match-recount")
    def test_the_recount_is_checked_at_rest_only(self):
        """``check(at=ALWAYS)`` leaves counts-match-recount out; ``at=QUIESCENT`` runs it."""
        rows = Rows()
        rows.snapshot()
        assert invariants.check(_run(rows), at=When.ALWAYS) == []
        assert [v.invariant for v in invariants.check(_run(rows), at=When.QUIESCENT)] == ["counts-match-recount"]


class TestCountsMatchRecount:
    def test_holds_on_a_fresh_cloud(self):
        """Every count 0, nothing to recount."""
        assert counts.counts_match_recount(_run(Rows())) == []

    def test_holds_after_a_take_and_its_delete(self):
        """A XenServer take (sync backup) and its delete leave counts equal to the recount."""
        cloud = Cloud()
        sid = cloud.take(cloud.volume("xen-nfs")).snapshot.id
        assert counts.counts_match_recount(Run(cloud.engine.store)) == []
        cloud.engine.delete_snapshot(sid)
        cloud.engine.run()
        assert counts.counts_match_recount(Run(cloud.engine.store)) == []

    @pytest.mark.violates("counts-match-recount", "no-negative-count", "ready-ref-has-object")
    def test_fails_on_counts_written_off(self):
        """One violation per account and type that differs, with count, recount and the difference."""
        rows = Rows()
        rows.ref(rows.snapshot(), "Image")
        rows.set_count("snapshot", 1)
        rows.set_count("secondary_storage", PHYSICAL + 5)
        bob = rows.store.first(ResourceCount, "account_id = ? AND type = 'primary_storage'", (rows.cloud.bob.id,))
        assert bob is not None
        rows.store.update(bob, count=-2)
        alice, bob_id = rows.alice.id, rows.cloud.bob.id
        assert counts.counts_match_recount(_run(rows)) == [
            Violation(
                "counts-match-recount", f"account {bob_id} primary_storage", "count -2, the recount gives 0 (off by -2)"
            ),
            Violation(
                "counts-match-recount",
                f"account {alice} secondary_storage",
                f"count {PHYSICAL + 5}, the recount gives {PHYSICAL} (off by +5)",
            ),
        ]

    @pytest.mark.violates("counts-match-recount")
    def test_a_missing_row_reads_as_zero(self):
        """No row and something to count: a violation naming the missing row; no row and nothing to count: none."""
        rows = Rows()
        rows.snapshot()
        for row in rows.store.find(ResourceCount, "account_id = ?", (rows.alice.id,)):
            rows.store.delete(row, by="test")
        assert counts.counts_match_recount(_run(rows)) == [
            Violation(
                "counts-match-recount",
                f"account {rows.alice.id} snapshot",
                "no resource_count row, the recount gives 1 (off by -1)",
            )
        ]

    def test_a_removed_account_is_not_checked(self):
        """The recount of a removed account is refused upstream; nothing to compare."""
        rows = Rows()
        rows.snapshot()
        rows.store.update(rows.alice, removed="2026-01-01 00:00:00")
        assert counts.counts_match_recount(_run(rows)) == []


class TestNoNegativeCount:
    @pytest.mark.violates("counts-match-recount")
    def test_holds_on_zero_and_above(self):
        """Counts of 0 and more."""
        rows = Rows()
        rows.set_count("snapshot", 2)
        assert counts.no_negative_count(_run(rows)) == []

    @pytest.mark.violates("counts-match-recount", "no-negative-count")
    def test_fails_on_a_count_below_zero(self):
        """One violation per row below zero, with its count."""
        rows = Rows()
        rows.set_count("primary_storage", -5)
        assert counts.no_negative_count(_run(rows)) == [
            Violation("no-negative-count", f"account {rows.alice.id} primary_storage", "count -5")
        ]


class TestChargeToOwner:
    def test_holds_when_each_charge_is_the_owners(self):
        """Charges to the owner, and one whose owner was not noted (it cannot be judged)."""
        record = RunRecord()
        record.charge(2, "snapshot", 1, 2, 10)
        record.charge(3, "primary_storage", 5, None, 20)
        assert counts.charge_to_owner(_run(Rows(), record)) == []

    @pytest.mark.violates("usage-matches-objects")
    def test_holds_after_a_take(self):
        """A take's charges, as change_count notes them, are all the owner's."""
        cloud = Cloud()
        cloud.take(cloud.volume("kvm-nfs"))
        assert cloud.engine.record.charges
        assert counts.charge_to_owner(Run(cloud.engine.store, cloud.engine.record)) == []

    def test_fails_on_a_charge_to_another_account(self):
        """The account charged, the delta, when, and whose object it was."""
        record = RunRecord()
        record.charge(4, "primary_storage", 1024, 2, 3000)
        assert counts.charge_to_owner(_run(Rows(), record)) == [
            Violation(
                "charge-to-owner",
                "account 4 primary_storage",
                "charged +1024 at 3000 ms for an object of account 2",
            )
        ]

    def test_a_run_without_a_record_has_nothing_to_check(self):
        """``Run.record`` None: no violation (and no error)."""
        assert counts.charge_to_owner(Run(Rows().store)) == []
