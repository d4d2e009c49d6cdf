"""Resource limits and counts, usage events and action events (spec §5.1, §5.4 steps 11-14, §5.10)."""

from __future__ import annotations

from snapshotfsm.errors import ResourceAllocationException
from snapshotfsm.orchestration.runtime import Runtime
from snapshotfsm.store.records import (
    SYSTEM_USER_ID,
    Account,
    ActionEvent,
    Alert,
    ResourceCount,
    ResourceLimit,
    Snapshot,
    UsageEvent,
)

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


def change_count(rt: Runtime, account_id: int, resource: str, delta: int) -> None:
    """``incrementResourceCount`` / ``decrementResourceCount`` on ``resource_count``."""
    row = rt.store.first(ResourceCount, "account_id = ? AND type = ?", (account_id, resource))
    if row is None:
        rt.store.insert(ResourceCount(type=resource, account_id=account_id, count=delta))
    else:
        rt.store.update(row, count=row.count + delta)


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


def alert(rt: Runtime, alert_type: str, subject: str, zone_id: int | None) -> None:
    """An ``alert`` row (``ALERT_TYPE_UPDATE_RESOURCE_COUNT`` when a recurring snapshot hits a limit, spec §5.1)."""
    rt.store.insert(Alert(type=alert_type, subject=subject, data_center_id=zone_id, created=rt.clock.timestamp()))
