"""What a snapshot strategy is (DESIGN.md layer 5): a priority for each operation, and hooks the workflows call.

CloudStack's ``StorageStrategyFactoryImpl.bestMatch`` asks every strategy ``canHandle(snapshot, zoneId, op)`` and
keeps the first one whose priority is strictly greater than the best so far, starting from CANT_HANDLE (spec §6.1).
The take workflow is the same for every strategy; a strategy changes it at fixed points: the checks, lock and volume
event before the driver is called (``before_take``), the ``finally`` block after it answers (``after_take``), how the
snapshot is backed up (``backup_plan``), and the clean-up after a backup (``post_snapshot_creation``).
"""

from __future__ import annotations

import contextlib
import enum
import logging
from collections.abc import Callable, Generator
from typing import ClassVar

import attrs

from snapshotfsm.chains import volume_cluster_id
from snapshotfsm.config import Config
from snapshotfsm.drivers.base import Answer, Callback
from snapshotfsm.drivers.image import ImageStoreDriver
from snapshotfsm.drivers.primary import DefaultPrimaryDriver, PrimaryDriver
from snapshotfsm.drivers.registry import Drivers
from snapshotfsm.errors import CloudException, CloudRuntimeException, MsCrash
from snapshotfsm.names import RefEvent, RefState, VolumeState
from snapshotfsm.objects import store_ref_event
from snapshotfsm.store.records import (
    ImageStore,
    NamedLock,
    OpLock,
    Snapshot,
    SnapshotDetail,
    SnapshotStoreRef,
    StoragePool,
    UsageEvent,
    Volume,
)
from snapshotfsm.store.store import Store

log = logging.getLogger(__name__)


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
    EMPTY_DELTA = "empty_delta"
    """XenServer answered the take with its parent's path: an image ref on the parent's file, nothing copied."""


@attrs.frozen
class BackupPlan:
    """How a strategy backs up a snapshot on primary (spec §5.8, §7.3): one value from the strategy to the driver.

    For a copy, ``full`` is what ``DefaultSnapshotStrategy.backupSnapshot`` sets on the snapshot (XenServer's delta
    on its parent's file); the delta's parent is the new image ref's (spec §16.1). An empty delta names the parent's
    image ref (``parent_ref_id``), whose file the new image ref shares.
    """

    kind: BackupKind
    full: bool = True
    parent_ref_id: int | None = None


@attrs.define
class StrategyEnv:
    """What strategies reach: the store, the drivers (for capabilities), the config and the calling server.

    ``thread`` is the thread that runs the current step, as CloudStack's lock table knows it (spec §21.1): the
    executor thread of an async job (the API job, or the VM work job of an attached take), a ``BackupSnapshotTask``
    try, the storage GC, the scheduler, the start-up thread. The runner sets it for each step; it owns the locks
    the step takes, and the end of that thread's context releases what it still holds (:meth:`end_thread`).

    ``give_back_primary`` is ``decrementResourceCount(account, primary_storage, amount)``, set by the engine: no
    upstream strategy touches a count, only a ``hardened`` fix that gives back inside a strategy's transaction.
    """

    store: Store
    drivers: Drivers
    config: Config
    ms_id: int
    thread: str = ""
    give_back_primary: Callable[[int, int], None] | None = None

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

    # --- locks (spec §21.1) ----------------------------------------------------------------------------------------

    def acquire_lock(self, key: str, owner: str | None = None) -> bool:
        """``acquireInLockTable`` / ``lockInLockTable``: an ``op_lock`` row (``Merovingian2``), held by a thread.

        The row names this server and ``owner`` (default: :attr:`thread`); the lock is re-entrant for that thread
        (without Merovingian's count: the first release frees it).
        It is written on its own, as Merovingian writes over a connection of its own: never part of a caller's
        transaction, never rolled back with one (spec §21.1, §21.5).

        Taken or refused at once: CloudStack polls every 5 s up to its timeout (``lock.timeout``, 300 s, for
        ``acquireInLockTable``) before it gives up, which the model does not (audit E-16). Callers that ignore a
        refusal (``deleteSnapshotInfos``, spec §21.6 quirk 3) go on at once, as CloudStack does after its wait.

        Returns:
            False when another server or thread holds it.
        """
        owner = self.thread if owner is None else owner
        held = self.store.first(OpLock, "key = ?", (key,))
        if held is not None:
            return held.ms_id == self.ms_id and held.owner == owner
        self.store.insert(OpLock(key=key, ms_id=self.ms_id, owner=owner, acquired_on=self.store.clock.timestamp()))
        return True

    def release_lock(self, key: str, owner: str | None = None) -> None:
        """``releaseFromLockTable``: the row goes if this server's ``owner`` (default: :attr:`thread`) holds it."""
        owner = self.thread if owner is None else owner
        held = self.store.first(OpLock, "key = ? AND ms_id = ? AND owner = ?", (key, self.ms_id, owner))
        if held is not None:
            self.store.delete(held, by="releaseFromLockTable")

    def end_thread(self, owner: str) -> int:
        """``Merovingian2.cleanupThread``: the thread's outermost context closes; the locks it still holds go.

        A lock not released on an exception is thus held to the end of the job (or task) that took it, not for ever
        (spec §21.1, §21.7 on §5.7). Returns how many rows went.
        """
        held = self.store.find(OpLock, "ms_id = ? AND owner = ?", (self.ms_id, owner))
        for lock in held:
            self.store.delete(lock, by="Merovingian2.cleanupThread")
        return len(held)

    def global_lock(self, name: str, owner: str | None = None) -> bool:
        """``GlobalLock.getInternLock(name).lock(timeout)``: a MySQL named lock (``GET_LOCK``), apart from ``op_lock``.

        Spec §21.1: independent of transactions, released by ``unlock`` or when the holder's database session ends;
        that a crash of the holding server ends its session and frees the lock is MySQL behaviour, UNVERIFIED in the
        spec. The model keeps it in ``named_lock`` and drops a server's rows when it crashes (``restart.crash``).

        Taken or refused at once (CloudStack waits up to the timeout the caller gives, audit E-16). A holder is
        refused too: no model thread takes one of these twice, and a second run of a single-threaded timer task (the
        collector, the poller) could not start while the first one blocks.

        Returns:
            False when anyone holds it.
        """
        if self.store.first(NamedLock, "name = ?", (name,)) is not None:
            return False
        owner = self.thread if owner is None else owner
        self.store.insert(NamedLock(name=name, ms_id=self.ms_id, owner=owner, acquired_on=self.store.clock.timestamp()))
        return True

    def global_unlock(self, name: str) -> None:
        """``GlobalLock.unlock()`` (``RELEASE_LOCK``): the lock goes if this server holds it."""
        held = self.store.first(NamedLock, "name = ? AND ms_id = ?", (name, self.ms_id))
        if held is not None:
            self.store.delete(held, by="GlobalLock.unlock")


def finally_unless_crash(release: Callable[[], object]) -> contextlib.AbstractContextManager[None]:
    """A Java ``finally`` around the block: ``release`` runs however the block ends, unless the server dies in it.

    A crash is the process's death: no ``finally`` of it runs, and a dead server writes nothing on its way out.
    """
    return _FinallyUnlessCrash(release)


class _FinallyUnlessCrash:
    """:func:`finally_unless_crash`: a class rather than a generator, as ``Store.atomic``'s, for the same reason.

    Every poll tick of the snapshot scheduler enters two (spec §9.2): 0.3 µs each here, 0.9 µs for a generator.
    An exception ``release`` raises replaces the block's, chained to it, as it did from the generator.
    """

    __slots__ = ("release",)

    def __init__(self, release: Callable[[], object]) -> None:
        self.release = release

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        if exc_type is None or not issubclass(exc_type, MsCrash):
            self.release()


@attrs.frozen
class DriverDelete:
    """Where a strategy's delete blocks on a future: a driver's ``deleteAsync`` of ``path`` (spec §9.4)."""

    driver: PrimaryDriver | ImageStoreDriver
    path: str
    checkpoint_path: str | None = None
    """The KVM checkpoint the delete command names, which the host deletes with the file (spec §16.6)."""

    def start(self, on_answer: Callback) -> None:
        """Make the call; the driver answers ``on_answer`` on the simulated clock (a pending request of a step)."""
        self.driver.delete_snapshot(self.path, on_answer, checkpoint_path=self.checkpoint_path)


@attrs.frozen
class BlockedForEver:
    """Where a thread blocked on a driver call that never answers waits: a request nothing ever answers.

    The job stays IN_PROGRESS and its run waits in its state; nothing is held open across the scheduler's turns.
    """

    operation: str

    def start(self, on_answer: Callback) -> None:
        """Nothing is sent: the answer never comes."""
        del on_answer


DeleteWait = DriverDelete | BlockedForEver
"""What a delete yields to wait on."""
DeleteRun = Generator[DeleteWait, Answer | None, bool]
"""A strategy's ``deleteSnapshot``: yields each driver delete it waits for, receives the answer, returns the result."""


def service_delete(env: StrategyEnv, ref: SnapshotStoreRef) -> DeleteRun:
    """``SnapshotServiceImpl.deleteSnapshot`` and ``deleteSnapshotCallback`` (spec §9.4), answered later.

    The ref is DestroyRequested (Ready or Hidden to Destroying), the driver deletes, then the ref is Destroyed, or
    stays Destroying when the driver failed, which throws. Outside a transaction (the storage GC, StorageSystem and
    StorPool deletes) each of these writes commits on its own (spec §21.2).

    Raises:
        CloudRuntimeException: the driver's error.
    """
    moved = store_ref_event(env.store, ref, RefEvent.DestroyRequested)
    checkpoint = remove_bitmap_if_needed(env, moved)
    answer = yield DriverDelete(env.driver_for(moved), moved.install_path or "", checkpoint)
    return _delete_answered(env, moved, answer)


def service_delete_blocking(env: StrategyEnv, ref: SnapshotStoreRef) -> bool:
    """``SnapshotServiceImpl.deleteSnapshot`` with the driver's ``deleteAsync`` completed on the caller's thread.

    The image and default primary drivers send the delete with a blocking ``sendMessage`` and run
    ``deleteSnapshotCallback`` themselves before ``future.get()`` returns (spec §21.3), so inside
    ``deleteSnapshotInfos`` the callback's ref writes belong to its transaction.

    Raises:
        CloudRuntimeException: the driver's error (the ref was left Destroying, uncommitted), or its exception.
        NeverAnswered: the delete is never answered.
    """
    moved = store_ref_event(env.store, ref, RefEvent.DestroyRequested)
    checkpoint = remove_bitmap_if_needed(env, moved)
    answer = env.driver_for(moved).delete_snapshot_blocking(moved.install_path or "", checkpoint_path=checkpoint)
    return _delete_answered(env, moved, answer)


def left_to_gc(env: StrategyEnv, ref: SnapshotStoreRef, exc: CloudException) -> bool:
    """Hardened (``failed_storage_delete_left_to_gc``): whether a failed storage delete leaves ``ref`` to the GC.

    Departs from spec §9.4 and §21.4.1: upstream rolls ``deleteSnapshotInfos`` back whole (refs whose files already
    went are Ready again) or, on StorageSystem and StorPool, fails the delete with its ref committed Destroying. Here
    a ref the delete moved to Destroying whose file could not be deleted stays Destroying, the delete goes on as if
    the file went, and the storage GC's sweep of Destroying refs (§10.5) deletes the file later: the rows tell the
    truth about every file that did go, and the job's answer about the snapshot. A ref the GC already took while
    the delete waited counts as left to it. False under upstream's profile, or when the ref never got to Destroying
    (nothing was asked of storage).
    """
    if not env.store.profile.failed_storage_delete_left_to_gc:
        return False
    current = env.store.first(SnapshotStoreRef, "id = ?", (ref.id,))
    if current is not None and current.state not in (RefState.Destroying, RefState.Destroyed):
        return False
    log.warning("storage delete of %s failed, left Destroying for the storage GC: %s", ref.install_path, exc)
    return True


def remove_bitmap_if_needed(env: StrategyEnv, ref: SnapshotStoreRef) -> str | None:
    """The KVM part of ``SnapshotServiceImpl.deleteSnapshot``, after the ref's DestroyRequested (spec §16.6).

    Only for a KVM snapshot whose volume's cluster has ``kvm.incremental.snapshot`` on *now*, and a ref with a
    checkpoint path: ``deleteBitmap`` sends a ``RemoveBitmapCommand`` when the volume is Ready, and the delete command
    then names the checkpoint, which the host deletes with the file. Returns that checkpoint path, or None. With
    incremental turned off since the take, neither the bitmap nor the checkpoint file is ever removed (quirk). The
    model keeps bitmaps only in volumes of the default driver's pools, the file-based pools KVM incremental runs on;
    elsewhere there is nothing to remove.

    Raises:
        CloudRuntimeException: the host failed to remove the bitmap ("Unable to remove bitmap associated with
            snapshot [<name>].").
    """
    snapshot = env.store.first(Snapshot, "id = ?", (ref.snapshot_id,))
    if snapshot is None or snapshot.hypervisor_type != "KVM":
        return None
    volume = env.store.get(Volume, snapshot.volume_id)
    if not env.config.flag("kvm.incremental.snapshot", cluster=volume_cluster_id(env.store, volume)):
        return None
    if ref.kvm_checkpoint_path is None:
        return None
    pool = env.pool_of(volume)
    driver = env.driver(pool) if pool is not None else None
    if volume.state == VolumeState.Ready and isinstance(driver, DefaultPrimaryDriver):
        answer = driver.remove_bitmap(volume, ref.install_path or "")
        if not answer.result:
            log.error("Unable to remove bitmap associated with snapshot %s due to %s.", snapshot.name, answer.details)
            raise CloudRuntimeException(f"Unable to remove bitmap associated with snapshot [{snapshot.name}].")
    return ref.kvm_checkpoint_path


def _delete_answered(env: StrategyEnv, moved: SnapshotStoreRef, answer: Answer | None) -> bool:
    """``deleteSnapshotCallback``: Destroyed, or OperationFailed (stays Destroying) and the driver's error thrown."""
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


def counted_on_primary(store: Store, ref: SnapshotStoreRef) -> bool:
    """Whether the recount's ``primary_storage`` counts this ref (spec §19.2).

    A Ready primary ref of a snapshot that is not removed and has no image ref in any state
    (``getSnapshotsPhysicalSizeOnPrimaryStorageByAccountId``).
    """
    if ref.store_role != "Primary" or ref.state != RefState.Ready:
        return False
    if store.first(Snapshot, "id = ? AND removed IS NULL", (ref.snapshot_id,)) is None:
        return False
    return store.first(SnapshotStoreRef, "snapshot_id = ? AND store_role = 'Image'", (ref.snapshot_id,)) is None


def off_primary_usage(store: Store, snapshot: Snapshot, *, virtual_size: int | None) -> None:
    """A ``SNAPSHOT.OFF_PRIMARY`` usage event of ``snapshot``, size 0 (spec §5.10).

    The default strategy's overload also sets the virtual size (0); StorageSystem's leaves it unset.
    """
    store.insert(
        UsageEvent(
            type="SNAPSHOT.OFF_PRIMARY",
            created=store.clock.timestamp(),
            account_id=snapshot.account_id,
            zone_id=snapshot.data_center_id,
            resource_id=snapshot.id,
            resource_name=snapshot.name,
            size=0,
            virtual_size=virtual_size,
        )
    )


def store_zone(store: Store, ref: SnapshotStoreRef) -> int:
    """``DataStoreManager.getStoreZoneId``: the zone of the pool or image store a ref lives on."""
    if ref.store_role == "Primary":
        return store.get(StoragePool, ref.store_id).data_center_id
    return store.get(ImageStore, ref.store_id).data_center_id


def ready_primary_ref(store: Store, snapshot_id: int) -> SnapshotStoreRef | None:
    """``findOneBySnapshotAndDatastoreRole(id, Primary)``: the snapshot's first Ready ref on primary storage.

    Ready only: the DAO method sets the state parameter (the spec's "any state" for it is upstream's search
    criteria before that parameter is set).
    """
    return store.first(
        SnapshotStoreRef, "snapshot_id = ? AND store_role = 'Primary' AND state = ?", (snapshot_id, RefState.Ready)
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
