"""CloudStack's recount of an account's resource counts from its live objects, and ``updateResourceCount`` (§19.2).

``ResourceLimitManagerImpl.recalculateAccountResourceCount`` computes each type from the tables, quirks included:

- ``snapshot``: ``SnapshotDaoImpl.countSnapshotsForAccount``, the account's rows not removed, not ``Error`` or
  ``Destroyed``, not of type ``GROUP``; ``Allocated`` through ``Destroying`` all count.
- ``secondary_storage``: the ``physical_size`` of ``Ready`` ``Image`` refs of the account's snapshots. The join does
  not look at ``snapshots.removed``, so a soft-removed snapshot's ``Ready`` image ref still counts; a ``Hidden`` ref
  (a deleted chain parent whose file a child still needs, §16.3) does not, although its file is still there.
- ``primary_storage``: ``SnapshotDataStoreDaoImpl.getSnapshotsPhysicalSizeOnPrimaryStorageByAccountId``, the
  ``physical_size`` of ``Ready`` ``Primary`` refs of non-removed snapshots that have no ``Image`` ref in any state
  (backup off, ``locationtype=primary``, primary-only StorPool or Ceph); a snapshot also backed up counts only there.

Model boundary: CloudStack adds the account's volumes to ``primary_storage`` (and its volumes on secondary and its
templates to ``secondary_storage``). The model's inventory (``add_volume``, ``add_template``) is added without those
charges, and nothing in the model charges a volume or a template, so the recount leaves those terms out: it counts
what the model charges, snapshots only.

Each term is written once as SQL (:class:`Term`): for one account (:func:`recount`), or grouped by account and set
against ``resource_count`` in one pass (:func:`discrepancies`, for the invariants). None loads a table into Python.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import attrs

from snapshotfsm.errors import InvalidValue, NotFound
from snapshotfsm.names import RefState, SnapshotState
from snapshotfsm.orchestration.accounting import PRIMARY_STORAGE, SECONDARY_STORAGE, SNAPSHOT
from snapshotfsm.orchestration.api import SNAPSHOT_TYPES
from snapshotfsm.orchestration.runtime import Runtime
from snapshotfsm.store.records import Account, ResourceCount
from snapshotfsm.store.store import Store

log = logging.getLogger(__name__)

RESOURCES = (SNAPSHOT, PRIMARY_STORAGE, SECONDARY_STORAGE)
"""The types the model counts, in ``Resource.ResourceType.values()`` order, the order the API recounts them in."""

_SNAPSHOT_REF = "snapshots s CROSS JOIN snapshot_store_ref r ON r.snapshot_id = s.id"
"""Refs with their snapshot, read snapshot first (``CROSS JOIN`` fixes SQLite's loop order): one account's recount
goes through its snapshots (``snapshots.account_id``), then each one's refs, not through every ref of a state."""


@attrs.frozen
class Term:
    """One type's recount as SQL: the aggregate, the rows it reads, their filter and the column naming the account."""

    resource: str
    amount: str
    rows: str
    where: str
    account: str
    params: tuple[object, ...]

    def for_account(self) -> str:
        """The recount of one account (its id is the last parameter)."""
        return f"SELECT {self.amount} FROM {self.rows} WHERE {self.where} AND {self.account} = ?"

    def by_account(self) -> str:
        """The recount of every account that has rows, as ``(account_id, amount)``."""
        return (
            f"SELECT {self.account} AS account_id, {self.amount} AS amount"
            f" FROM {self.rows} WHERE {self.where} GROUP BY {self.account}"
        )


TERMS: dict[str, Term] = {
    SNAPSHOT: Term(
        SNAPSHOT,
        "COUNT(*)",
        "snapshots s",
        "s.removed IS NULL AND s.status NOT IN (?, ?) AND s.snapshot_type <> ?",
        "s.account_id",
        (SnapshotState.Error, SnapshotState.Destroyed, SNAPSHOT_TYPES.index("GROUP")),
    ),
    PRIMARY_STORAGE: Term(
        PRIMARY_STORAGE,
        "COALESCE(SUM(r.physical_size), 0)",
        _SNAPSHOT_REF,
        "s.removed IS NULL AND r.state = ? AND r.store_role = ? AND NOT EXISTS"
        " (SELECT 1 FROM snapshot_store_ref i WHERE i.snapshot_id = r.snapshot_id AND i.store_role = ?)",
        "s.account_id",
        (RefState.Ready, "Primary", "Image"),
    ),
    SECONDARY_STORAGE: Term(
        SECONDARY_STORAGE,
        "COALESCE(SUM(r.physical_size), 0)",
        _SNAPSHOT_REF,
        "r.state = ? AND r.store_role = ?",
        "s.account_id",
        (RefState.Ready, "Image"),
    ),
}
"""Spec §19.2, per type; the volume and template terms are left out (see the module's docstring)."""


@attrs.frozen
class Discrepancy:
    """An account whose ``resource_count`` of a type differs from the recount (``count`` None: no row)."""

    account_id: int
    resource: str
    count: int | None
    recount: int


def recount(rt_or_store: Runtime | Store, account_id: int, *, resource: str | None = None) -> dict[str, int]:
    """What ``recalculateAccountResourceCount`` computes for the account, per type; nothing is written (spec §19.2).

    ``resource`` narrows it to one type (the API's ``resourcetype``); by default every type the model counts.

    Raises:
        InvalidValue: ``rt_or_store`` is neither a runtime nor a store, ``account_id`` is not an int, or
            ``resource`` is not a type the model counts.
        NotFound: no account with that id, or it was removed (CloudStack's ``findById`` does not see it).
    """
    store = _store_of(rt_or_store)
    _account(store, account_id)
    return {name: _amount(store, name, account_id) for name in _resources(resource)}


def update_resource_count(
    rt: Runtime, account_id: int, *, resource: str | None = None
) -> dict[str, tuple[int | None, int]]:
    """``updateResourceCount`` for one account: each type recounted and written; returns what changed (spec §19.2).

    As ``recalculateResourceCount`` does, one type after the other, each write its own transaction (no transaction
    spans the call: ``@DB`` is inert, §21.1), so a crash between two types leaves the first written. A type whose
    count already matches is not written; a type without a ``resource_count`` row gets one, even at 0
    (``ResourceCountDao.persist``). The answer maps each type written to its count before (None: there was no row)
    and after. Each count that moved is noted in the run's record as a charge of the account for its own objects.

    Raises:
        InvalidValue: ``account_id`` is not an int, or ``resource`` is not a type the model counts; nothing written.
        NotFound: no account with that id, or it was removed; nothing is written.
    """
    account = _account(rt.store, account_id)
    names = _resources(resource)
    changed: dict[str, tuple[int | None, int]] = {}
    for name in names:
        before, after = _write(rt, account, name)
        if before != after:
            changed[name] = (before, after)
    return changed


def discrepancies(store: Store) -> Iterator[Discrepancy]:
    """Every live account and type whose ``resource_count`` differs from the recount, by type then account id.

    One aggregate query per type, streamed: the recount grouped by account, set against the rows. A missing row
    reads as 0 (an account with nothing to count and no row is no discrepancy).
    """
    for name in RESOURCES:
        term = TERMS[name]
        sql = (
            "SELECT a.id, c.count, COALESCE(x.amount, 0) FROM account a"
            " LEFT JOIN resource_count c ON c.account_id = a.id AND c.type = ?"
            f" LEFT JOIN ({term.by_account()}) x ON x.account_id = a.id"
            " WHERE a.removed IS NULL AND COALESCE(c.count, 0) <> COALESCE(x.amount, 0) ORDER BY a.id"
        )
        for account_id, count, amount in store.conn.execute(sql, (name, *term.params)):
            yield Discrepancy(account_id, name, count, amount)


def _write(rt: Runtime, account: Account, name: str) -> tuple[int | None, int]:
    """Recount one type and write it when it differs; its count before (None: no row) and after."""
    store = rt.store
    new = _amount(store, name, account.id)
    row = store.first(ResourceCount, "account_id = ? AND type = ?", (account.id, name))
    if row is None:
        store.insert(ResourceCount(type=name, account_id=account.id, domain_id=account.domain_id, count=new))
        old = None
    elif row.count != new:
        store.update(row, count=new)
        old = row.count
    else:
        return row.count, new
    if new != (old or 0):
        rt.record.charge(account.id, name, new - (old or 0), account.id, rt.clock.now_ms)
        if name == SNAPSHOT:
            log.warning(
                "Discrepancy in the resource count (original count=%s correct count = %s) for type %s for account"
                " ID %s is fixed during resource count recalculation.",
                old or 0,
                new,
                name,
                account.id,
            )
    return old, new


def _amount(store: Store, name: str, account_id: int) -> int:
    term = TERMS[name]
    return int(store.conn.execute(term.for_account(), (*term.params, account_id)).fetchone()[0])


def _store_of(rt_or_store: object) -> Store:
    if isinstance(rt_or_store, Runtime):
        return rt_or_store.store
    if isinstance(rt_or_store, Store):
        return rt_or_store
    raise InvalidValue("recount source", rt_or_store, "a Runtime or a Store")


def _account(store: Store, account_id: object) -> Account:
    """The live account ``account_id``."""
    if not isinstance(account_id, int) or isinstance(account_id, bool):
        raise InvalidValue("account id", account_id, "an integer account id")
    found = store.first(Account, "id = ? AND removed IS NULL", (account_id,))
    if found is None:
        raise NotFound("account", account_id)
    return found


def _resources(resource: str | None) -> tuple[str, ...]:
    if resource is None:
        return RESOURCES
    if resource not in RESOURCES:
        raise InvalidValue("resource type", resource, "one of " + ", ".join(RESOURCES))
    return (resource,)
