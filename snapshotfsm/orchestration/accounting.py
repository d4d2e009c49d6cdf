"""Resource limits and counts, usage events and action events (spec §5.1, §5.4 steps 11-14, §5.10)."""

from __future__ import annotations

import logging

from snapshotfsm.errors import CloudRuntimeException, ResourceAllocationException
from snapshotfsm.orchestration.runtime import Runtime
from snapshotfsm.store.records import (
    SYSTEM_ACCOUNT_ID,
    SYSTEM_USER_ID,
    Account,
    ActionEvent,
    Alert,
    ResourceCount,
    ResourceLimit,
    Snapshot,
    UsageEvent,
)

log = logging.getLogger(__name__)

ALERT_TYPE_UPDATE_RESOURCE_COUNT = "ALERT_TYPE_UPDATE_RESOURCE_COUNT"
"""``AlertManager.AlertType.ALERT_TYPE_UPDATE_RESOURCE_COUNT`` (22, "ALERT.RESOURCE.COUNT"): not repeatable."""

SNAPSHOT = "snapshot"
PRIMARY_STORAGE = "primary_storage"
SECONDARY_STORAGE = "secondary_storage"
STORAGE_TYPES = (PRIMARY_STORAGE, SECONDARY_STORAGE)
KB = 1 << 10
GIB = 1 << 30

_DEFAULT_LIMIT_KEYS = {
    SNAPSHOT: ("max.account.snapshots", 1),
    PRIMARY_STORAGE: ("max.account.primary.storage", GIB),
    SECONDARY_STORAGE: ("max.account.secondary.storage", GIB),
}


def readable_size(size: int) -> str:
    """``NumbersUtil.toHumanReadableSize`` with human-readable sizes on (the default): ``(1.00 GB) 1073741824``."""
    if 0 <= size < KB:
        text = f"{size} bytes"
    else:
        for unit, scale, digits in (("KB", 1 << 10, 2), ("MB", 1 << 20, 2), ("GB", 1 << 30, 2), ("TB", 1 << 40, 4)):
            if size < scale << 10 or unit == "TB":
                text = f"{size / scale:.{digits}f} {unit}"
                break
    return f"({text}) {size}"


def limit_of(rt: Runtime, account: Account, resource: str) -> int:
    """The account's limit for ``resource``: its ``resource_limit`` row, else the default; -1 is unlimited."""
    row = rt.store.first(ResourceLimit, "account_id = ? AND type = ?", (account.id, resource))
    if row is not None:
        return row.max
    key, unit = _DEFAULT_LIMIT_KEYS[resource]
    return rt.config.number(key) * unit


def count_of(rt: Runtime, account_id: int, resource: str) -> int:
    """The account's current count of ``resource``."""
    row = rt.store.first(ResourceCount, "account_id = ? AND type = ?", (account_id, resource))
    return 0 if row is None else row.count


def check_limit(rt: Runtime, account: Account, resource: str, amount: int) -> None:
    """``ResourceLimitManagerImpl.checkResourceLimit`` (the CheckedReservation of spec §5.1); root admins pass.

    Raises:
        ResourceAllocationException: the count plus ``amount`` would exceed the account's limit.
    """
    if account.type == 1:
        return
    limit = limit_of(rt, account, resource)
    current = count_of(rt, account.id, resource)
    if limit == -1 or current + amount <= limit:
        return
    show = readable_size if resource in STORAGE_TYPES else str
    message = (
        f"Maximum amount of resources of Type = '{resource}', tag = 'null' for Account Name = {account.account_name}"
        f" in Domain Id = {account.domain_id} is exceeded: Account Resource Limit = {show(limit)}, Current Account"
        f" Resource Amount = {show(current)}, Current Account Resource Reservation = {show(0)}, Requested Resource"
        f" Amount = {show(amount)}."
    )
    raise ResourceAllocationException(message, resource_type=resource)


def change_count(rt: Runtime, account_id: int, resource: str, delta: int, *, owner_id: int) -> None:
    """``incrementResourceCount`` (``delta`` > 0) or ``decrementResourceCount`` (< 0) on ``resource_count``.

    An increment is its own transaction (``removeResourceReservationIfNeededAndIncrementResourceCount``, spec §21.2
    row ``CreateSnapshotCmd.create → allocSnapshot``; the model keeps no ``resource_reservation`` rows, so the
    block is the count update alone). When no ``resource_count`` row of the account matches,
    ``ResourceCountDaoImpl.updateCountByDeltaForIds`` updates nothing and answers false: an increment then throws
    (spec §21.4.3), a decrement only sends an ``ALERT_TYPE_UPDATE_RESOURCE_COUNT`` alert. No row is ever inserted.
    The system account's counts are never changed (``ResourceLimitManagerImpl`` returns first for account 1).

    ``owner_id`` is the account that owns the object charged for (the snapshot), which CloudStack does not pass:
    a count that moved, once committed, is noted in the run's record with it, so that an invariant can compare
    the account charged with the owner. A change of 0 writes nothing (``updateResourceCountForAccount`` returns
    first).

    Raises:
        CloudRuntimeException: an increment found no ``resource_count`` row of the account ("Failed to increment
            resource count of type <type> for account id=<id>").
    """
    if account_id == SYSTEM_ACCOUNT_ID or delta == 0:
        return
    with rt.store.atomic():
        row = rt.store.first(ResourceCount, "account_id = ? AND type = ?", (account_id, resource))
        if row is not None:
            rt.store.update(row, count=row.count + delta)
        elif delta > 0:
            raise CloudRuntimeException(
                f"Failed to increment resource count of type {resource} for account id={account_id}"
            )
    if row is not None:
        rt.record.charge(account_id, resource, delta, owner_id, rt.clock.now_ms)
        return
    if delta < 0:
        text = f"Failed to decrement resource count of type {resource} for account id={account_id}"
        alert(rt, ALERT_TYPE_UPDATE_RESOURCE_COUNT, text)


def decrement(rt: Runtime, account_id: int, resource: str, amount: int, *, owner_id: int) -> None:
    """``decrementResourceCount(account, type, amount)``: an amount below zero is only logged, never added (quirk).

    ``updateResourceCountForAccount`` warns "Resource count delta is negative" and changes nothing, so a correction
    that would raise a count (a snapshot larger than its volume) is dropped.
    """
    if amount < 0:
        log.warning(
            "Resource count delta is negative, delta = %s for Account = %s Type = %s", amount, account_id, resource
        )
        return
    change_count(rt, account_id, resource, -amount, owner_id=owner_id)


def usage(
    rt: Runtime,
    event_type: str,
    snapshot: Snapshot,
    *,
    size: int | None,
    virtual_size: int | None = None,
    zone_id: int | None = None,
    named: bool = True,
) -> None:
    """A ``usage_event`` row for a snapshot (spec §5.10), as ``UsageEventUtils.saveUsageEvent`` writes it.

    ``resource_type`` stays NULL: the snapshot events are saved through the overloads that do not set it.
    ``named=False`` for ``SNAPSHOT.COPY``, which upstream publishes with a null resource name (spec §7.4).
    """
    rt.store.insert(
        UsageEvent(
            type=event_type,
            created=rt.clock.timestamp(),
            account_id=snapshot.account_id,
            zone_id=snapshot.data_center_id if zone_id is None else zone_id,
            resource_id=snapshot.id,
            resource_name=snapshot.name if named else None,
            offering_id=snapshot.disk_offering_id,
            size=size,
            virtual_size=virtual_size,
        )
    )


def action_event(
    rt: Runtime,
    event_type: str,
    description: str,
    *,
    account_id: int,
    resource_id: int | None,
    state: str,
    level: str = "INFO",
    user_id: int = SYSTEM_USER_ID,
) -> None:
    """An ``event`` row, as an ``@ActionEvent`` method writes (spec §5.10); the user is the system's unless given."""
    rt.store.insert(
        ActionEvent(
            type=event_type,
            state=state,
            description=description,
            level=level,
            user_id=user_id,
            account_id=account_id,
            resource_id=resource_id,
            created=rt.clock.timestamp(),
        )
    )


def alert(rt: Runtime, alert_type: str, subject: str, zone_id: int = 0) -> None:
    """``AlertManagerImpl.sendAlert``: an ``alert`` row, unless one of that type and zone is already there.

    Upstream passes zone 0 for the resource-count alerts (spec §5.1). A type whose repetition is not allowed
    (``ALERT_TYPE_UPDATE_RESOURCE_COUNT``; ``alert.allowed.repetitive.types`` is empty by default) is written only
    while no unarchived alert of the same type and zone exists (``getAlertForTrivialAlertType``); the model
    archives no alert, so such an alert is written once per zone.
    """
    if rt.store.first(Alert, "type = ? AND data_center_id = ?", (alert_type, zone_id)) is not None:
        return
    rt.store.insert(Alert(type=alert_type, subject=subject, data_center_id=zone_id, created=rt.clock.timestamp()))
