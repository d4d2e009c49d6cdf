"""Invariants of resource counts: at rest they equal the recount, never below zero, each charge to the owner."""

from __future__ import annotations

from collections.abc import Iterator

from snapshotfsm.invariants.base import Input, Invariant, Run, Violation, When, invariant
from snapshotfsm.orchestration.recount import discrepancies


@invariant("counts-match-recount", When.QUIESCENT, Input.DATABASE)
def counts_match_recount(run: Run) -> Iterator[Violation]:
    """Once nothing more will happen, every live account's count of each type equals CloudStack's own recount.

    The recount (spec §19.2, :mod:`snapshotfsm.orchestration.recount`) computes a count from the objects the account
    has; the run-time bookkeeping adds and subtracts as operations go. When the two disagree, a limit check refuses
    or allows by a number that is not the account's usage, until an administrator's ``updateResourceCount`` quietly
    resets it. Only at rest: while an operation is under way, its charge may legitimately run ahead of its object.
    A missing ``resource_count`` row reads as 0.
    """
    for found in discrepancies(run.store):
        count = "no resource_count row" if found.count is None else f"count {found.count}"
        yield Violation(
            "counts-match-recount",
            f"account {found.account_id} {found.resource}",
            f"{count}, the recount gives {found.recount} (off by {(found.count or 0) - found.recount:+d})",
        )


@invariant("no-negative-count", When.ALWAYS, Input.DATABASE)
def no_negative_count(run: Run) -> Iterator[Violation]:
    """No resource count is ever below zero.

    A count is a number of objects or of bytes an account holds: below zero, more was given back than was ever
    charged (a double decrement, or a decrement for a charge that never happened), and the account may then go over
    its limit by that much.
    """
    rows = run.store.conn.execute(
        "SELECT account_id, type, count FROM resource_count WHERE count < 0 ORDER BY account_id, type"
    )
    for account_id, resource, count in rows:
        yield Violation("no-negative-count", f"account {account_id} {resource}", f"count {count}")


@invariant("charge-to-owner", When.ALWAYS, Input.RECORD)
def charge_to_owner(run: Run) -> Iterator[Violation]:
    """Every change of a resource count in the run's record was made to the account that owns what it was for.

    Limits are per account: a charge to another account (a caller, an administrator, an id of another kind read as
    an account id) leaves the owner's usage uncounted and another account's overcounted, and no later give-back of
    the owner's object can set either right. A charge whose owner was not noted cannot be judged and is skipped; a
    run without a record has nothing to check.
    """
    if run.record is None:
        return
    for charge in run.record.charges:
        if charge.owner_id is not None and charge.account_id != charge.owner_id:
            yield Violation(
                "charge-to-owner",
                f"account {charge.account_id} {charge.resource}",
                f"charged {charge.delta:+d} at {charge.at_ms} ms for an object of account {charge.owner_id}",
            )


INVARIANTS: tuple[Invariant, ...] = (counts_match_recount, no_negative_count, charge_to_owner)
"""The resource-count invariants, in the order they are checked."""
