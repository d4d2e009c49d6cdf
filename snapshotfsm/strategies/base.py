"""What a snapshot strategy is (DESIGN.md layer 5): a priority for each operation, and hooks the workflows call.

CloudStack's ``StorageStrategyFactoryImpl.bestMatch`` asks every strategy ``canHandle(snapshot, zoneId, op)`` and
keeps the first one whose priority is strictly greater than the best so far, starting from CANT_HANDLE (spec §6.1).
The take workflow is the same for every strategy; a strategy changes it at fixed points: the checks, lock and volume
event before the driver is called (``before_take``), the ``finally`` block after it answers (``after_take``), how the
snapshot is backed up (``backup_plan``), and the clean-up after a backup (``post_snapshot_creation``).
"""

from __future__ import annotations

import enum
from collections.abc import Generator
from typing import ClassVar

import attrs

from snapshotfsm.config import Config
from snapshotfsm.drivers.base import Answer, Callback
from snapshotfsm.drivers.image import ImageStoreDriver
from snapshotfsm.drivers.primary import PrimaryDriver
from snapshotfsm.drivers.registry import Drivers
from snapshotfsm.errors import CloudRuntimeException
from snapshotfsm.names import RefEvent, RefState
from snapshotfsm.objects import store_ref_event
from snapshotfsm.store.records import (
    ImageStore,
    OpLock,
    Snapshot,
    SnapshotDetail,
    SnapshotStoreRef,
    StoragePool,
    Volume,
)
from snapshotfsm.store.store import Store


class Priority(enum.IntEnum):
    """``StrategyPriority`` in ordinal order (spec §6.1): there is no HIGH, and no snapshot strategy uses HYPERVISOR."""

    CANT_HANDLE = 0
    DEFAULT = 1
    HYPERVISOR = 2
    HIGHEST = 3


class Operation(enum.StrEnum):
    """``SnapshotStrategy.SnapshotOperation``."""

    TAKE = "TAKE"
    BACKUP = "BACKUP"
    DELETE = "DELETE"
    REVERT = "REVERT"
    COPY = "COPY"


@attrs.define
class Payload:
    """``CreateSnapshotPayload``: what the API call asked for, as it travels with the snapshot (spec §5.3, §5.4)."""

    snapshot_id: int
    account_id: int
    policy_id: int = 0
    quiescevm: bool = False
    location_type: str | None = None
    async_backup: bool = False
    zone_ids: tuple[int, ...] = ()
    pool_ids: tuple[int, ...] = ()
    kvm_incremental: bool = False


@attrs.define
class SnapshotTake:
    """A take in progress, as the strategies see it."""

    snapshot: Snapshot
    volume: Volume
    pool: StoragePool
    payload: Payload
    cluster_id: int | None = None
    locked: bool = False
    image_store_id: int | None = None
    """The image store pre-selected for a KVM file-based snapshot (``SnapshotObject.setImageStore``), if any."""


class BackupKind(enum.StrEnum):
    """How a snapshot on primary reaches secondary storage (spec §5.7, §5.8)."""

    COPY = "copy"
    """``SnapshotServiceImpl.backupSnapshot``: a copy to an image store, full or a delta on a parent."""
    MARK_BACKED_UP = "mark_backed_up"
    """StorageSystem with a PRIMARY location: BackupToSecondary then OperationSucceeded, nothing copied."""


@attrs.frozen
class BackupPlan:
    """How a strategy backs up a snapshot on primary (spec §5.8, §7.3): one value from the strategy to the driver.

    For a copy, ``full`` and ``parent_path`` are what ``DefaultSnapshotStrategy.backupSnapshot`` puts on the
    snapshot's payload for the hypervisor (XenServer's delta on its parent's file); the backup steps hand the plan
    to the driver's ``backup_snapshot`` as it is.
    """

    kind: BackupKind
    full: bool = True
    parent_path: str | None = None


@attrs.define
class StrategyEnv:
    """What strategies reach: the store, the drivers (for capabilities), the config and the calling server."""

    store: Store
    drivers: Drivers
    config: Config
    ms_id: int

    def pool_of(self, volume: Volume) -> StoragePool | None:
        """The volume's pool (``pool_id``, falling back to ``last_pool_id``, as StorageSystem's canHandle does)."""
        pool_id = volume.pool_id if volume.pool_id is not None else volume.last_pool_id
        return None if pool_id is None else self.store.get(StoragePool, pool_id)

    def driver(self, pool: StoragePool) -> PrimaryDriver:
        """The driver serving ``pool``."""
        return self.drivers.primary(pool)

    def driver_for(self, ref: SnapshotStoreRef) -> PrimaryDriver | ImageStoreDriver:
        """The driver of the store a ref lives on."""
        if ref.store_role == "Primary":
            return self.drivers.primary(self.store.get(StoragePool, ref.store_id))
        return self.drivers.image(self.store.get(ImageStore, ref.store_id))

    def capabilities(self, pool: StoragePool) -> frozenset[str]:
        """What ``pool``'s driver advertises (``getCapabilities``)."""
        return self.driver(pool).pool_capabilities()

    def primary_refs(self, snapshot_id: int) -> list[SnapshotStoreRef]:
        """The snapshot's store refs on primary storage."""
        return self.store.find(SnapshotStoreRef, "snapshot_id = ? AND store_role = 'Primary'", (snapshot_id,))

    def image_refs(self, snapshot_id: int) -> list[SnapshotStoreRef]:
        """The snapshot's store refs on image stores."""
        return self.store.find(SnapshotStoreRef, "snapshot_id = ? AND store_role = 'Image'", (snapshot_id,))

    def add_detail(self, snapshot_id: int, name: str, value: str, *, display: bool = True) -> None:
        """``snapshot_details`` row (``addDetail``)."""
        self.store.insert(SnapshotDetail(snapshot_id=snapshot_id, name=name, value=value, display=display))

    def remove_detail(self, snapshot_id: int, name: str) -> None:
        """Delete the ``snapshot_details`` rows of that name (``removeDetail``)."""
        for detail in self.store.find(SnapshotDetail, "snapshot_id = ? AND name = ?", (snapshot_id, name)):
            self.store.delete(detail, by="SnapshotDetailsDao.removeDetail")

    def acquire_lock(self, key: str, owner: str = "") -> bool:
        """``acquireInLockTable`` / ``GlobalLock``: a named cluster-wide lock in ``op_lock``.

        Merovingian locks are re-entrant for the thread that holds them: here, for the same server and ``owner``.
        False when anyone else holds it (the callers' waits are not modelled: they give up at once).
        """
        held = self.store.first(OpLock, "key = ?", (key,))
        if held is not None:
            return held.ms_id == self.ms_id and held.owner == owner
        self.store.insert(OpLock(key=key, ms_id=self.ms_id, owner=owner, acquired_on=self.store.clock.timestamp()))
        return True

    def release_lock(self, key: str) -> None:
        """``releaseFromLockTable``."""
        held = self.store.first(OpLock, "key = ?", (key,))
        if held is not None:
            self.store.delete(held, by="releaseFromLockTable")


@attrs.frozen
class DriverDelete:
    """Where a strategy's delete blocks on a future: a driver's ``deleteAsync`` of ``path`` (spec §9.4)."""

    driver: PrimaryDriver | ImageStoreDriver
    path: str

    def start(self, on_answer: Callback) -> None:
        """Make the call; the driver answers ``on_answer`` on the simulated clock (a pending request of a step)."""
        self.driver.delete_snapshot(self.path, on_answer)


DeleteRun = Generator[DriverDelete, Answer | None, bool]
"""A strategy's ``deleteSnapshot``: yields each driver delete it waits for, receives the answer, returns the result."""


def service_delete(env: StrategyEnv, ref: SnapshotStoreRef) -> DeleteRun:
    """``SnapshotServiceImpl.deleteSnapshot`` and ``deleteSnapshotCallback`` (spec §9.4).

    The ref is DestroyRequested (Ready or Hidden to Destroying), the driver deletes, then the ref is Destroyed, or
    stays Destroying when the driver failed, which throws.

    Raises:
        CloudRuntimeException: the driver's error.
    """
    moved = store_ref_event(env.store, ref, RefEvent.DestroyRequested)
    answer = yield DriverDelete(env.driver_for(moved), moved.install_path or "")
    if answer is None or not answer.result:
        store_ref_event(env.store, moved, RefEvent.OperationFailed)
        raise CloudRuntimeException(answer.details if answer is not None else "null answer")
    store_ref_event(env.store, moved, RefEvent.OperationSucceeded)
    return True


def primary_ref(store: Store, snapshot_id: int | None, pool_id: int | None) -> SnapshotStoreRef | None:
    """The snapshot's ref on primary storage ``pool_id``, if it has one."""
    return store.first(
        SnapshotStoreRef, "snapshot_id = ? AND store_role = 'Primary' AND store_id = ?", (snapshot_id, pool_id)
    )


def live_child(store: Store, ref: SnapshotStoreRef) -> SnapshotStoreRef | None:
    """A ref on the same store whose parent is ``ref``'s snapshot and that is not being or already deleted.

    A delta with such a child cannot go: the chain deletes of spec §9.4 stop (or hide the ref) there.
    """
    # CloudStack's getChild also excludes 'Error', which is no state of snapshot_store_ref: that term never matched.
    return store.first(
        SnapshotStoreRef,
        "store_id = ? AND store_role = ? AND parent_snapshot_id = ? AND state NOT IN (?, ?)",
        (ref.store_id, ref.store_role, ref.snapshot_id, RefState.Destroyed, RefState.Destroying),
    )


def parent_of(store: Store, ref: SnapshotStoreRef) -> SnapshotStoreRef | None:
    """The ref of ``ref``'s parent snapshot on the same store, if it has one."""
    if not ref.parent_snapshot_id:
        return None
    return store.first(
        SnapshotStoreRef,
        "store_id = ? AND store_role = ? AND snapshot_id = ?",
        (ref.store_id, ref.store_role, ref.parent_snapshot_id),
    )


def shares_parent_path(store: Store, ref: SnapshotStoreRef) -> bool:
    """The parent's ref has the same install path (case-insensitive): an empty delta, nothing of its own to delete."""
    parent = parent_of(store, ref)
    return (
        parent is not None
        and bool(parent.install_path)
        and (parent.install_path or "").lower() == (ref.install_path or "").lower()
    )


class SnapshotStrategy:
    """Base of the snapshot strategies; the default hooks do nothing, so a strategy overrides what it changes."""

    name: ClassVar[str]

    def can_handle(self, env: StrategyEnv, snapshot: Snapshot, op: Operation, zone_id: int | None) -> Priority:
        """``canHandle``: how well this strategy handles ``op`` on ``snapshot`` (spec §6.2)."""
        raise NotImplementedError

    def before_take(self, env: StrategyEnv, take: SnapshotTake) -> None:
        """Checks, lock and the volume's SnapshotRequested, before ``SnapshotServiceImpl.takeSnapshot``."""
        raise NotImplementedError(f"{self.name} does not take snapshots")

    def after_take(self, env: StrategyEnv, take: SnapshotTake, *, ok: bool) -> None:
        """The ``finally`` block once the driver has answered (``ok``) or the take failed."""
        raise NotImplementedError(f"{self.name} does not take snapshots")

    def backup_plan(self, env: StrategyEnv, take: SnapshotTake) -> BackupPlan:
        """How to back the snapshot up to secondary storage."""
        raise NotImplementedError(f"{self.name} does not back up snapshots")

    def post_snapshot_creation(self, env: StrategyEnv, take: SnapshotTake) -> None:
        """``postSnapshotCreation`` after a successful backup."""

    def delete(self, env: StrategyEnv, snapshot_id: int, zone_id: int | None) -> DeleteRun:  # noqa: ARG002
        """``deleteSnapshot(snapshotId, zoneId)``: a generator that yields the driver deletes it waits for."""
        raise NotImplementedError(f"{self.name} does not delete snapshots")
        yield  # pragma: no cover

    def copy_snapshot(
        self, env: StrategyEnv, snapshot: Snapshot, src_ref: SnapshotStoreRef, dest_pool: StoragePool
    ) -> str | None:
        """``copySnapshot`` to another pool (COPY): the error the callback completes with, or None.

        The interface's default, which Default and StorageSystem keep, is an empty method: it never completes the
        callback. The copy workflow does not call it on a strategy that does not override it (:func:`copies_snapshots`)
        and waits for good instead (spec §7.2).
        """
        raise NotImplementedError(f"{self.name} does not copy snapshots")

    def __repr__(self) -> str:
        return f"<{self.name}>"


def copies_snapshots(strategy: SnapshotStrategy) -> bool:
    """Whether ``strategy`` has a ``copySnapshot`` of its own, one that completes the copy's callback."""
    return type(strategy).copy_snapshot is not SnapshotStrategy.copy_snapshot


def lock_key(snapshot_id: int) -> str:
    """The ``op_lock`` key of ``acquireInLockTable(snapshotId)``: table name plus id (spec §5.5)."""
    return f"snapshots{snapshot_id}"
