"""``StorageSystemSnapshotStrategy``: snapshots taken by the storage array itself (spec §5.7, §6.2).

It handles pools whose driver advertises STORAGE_SYSTEM_SNAPSHOT: SolidFire-like managed storage, PowerFlex, and
the fork's ONTAP.
"""

from __future__ import annotations

import contextlib
import logging

from snapshotfsm.drivers.base import (
    CAN_CREATE_VOLUME_FROM_SNAPSHOT,
    CAN_REVERT_VOLUME_TO_SNAPSHOT,
    STORAGE_SYSTEM_SNAPSHOT,
)
from snapshotfsm.errors import (
    CloudException,
    CloudRuntimeException,
    InvalidParameterValueException,
    NoTransitionException,
)
from snapshotfsm.names import RefState, SnapshotEvent, SnapshotState, VolumeEvent
from snapshotfsm.objects import missing_store_ref, snapshot_event, volume_transit
from snapshotfsm.store.records import (
    Cluster,
    Host,
    Snapshot,
    SnapshotDetail,
    SnapshotStoreRef,
    StoragePool,
    VmInstance,
    Volume,
    VolumeDetail,
)
from snapshotfsm.strategies.base import (
    BackupKind,
    BackupPlan,
    DeleteRun,
    Operation,
    Priority,
    SnapshotStrategy,
    SnapshotTake,
    StrategyEnv,
    left_to_gc,
    lock_key,
    off_primary_usage,
    primary_ref,
    ready_primary_ref,
    service_delete,
    service_delete_blocking,
)

log = logging.getLogger(__name__)

SUPPORTED_FORMATS = ("VHD", "OVA", "QCOW2", "RAW")


class StorageSystemSnapshotStrategy(SnapshotStrategy):
    """HIGHEST for TAKE, BACKUP and DELETE when the pool's driver advertises STORAGE_SYSTEM_SNAPSHOT."""

    name = "StorageSystemSnapshotStrategy"

    def can_handle(self, env: StrategyEnv, snapshot: Snapshot, op: Operation, zone_id: int | None) -> Priority:
        """Spec §6.2."""
        if op is Operation.COPY:
            return Priority.CANT_HANDLE
        volume = env.store.get(Volume, snapshot.volume_id)
        if op is Operation.DELETE:
            return self._can_delete(env, snapshot, zone_id)
        if op is Operation.REVERT:
            return self._can_revert(env, snapshot, volume)
        pool = env.pool_of(volume)
        if pool is not None and STORAGE_SYSTEM_SNAPSHOT in env.capabilities(pool):
            return Priority.HIGHEST
        return Priority.CANT_HANDLE

    def _can_delete(self, env: StrategyEnv, snapshot: Snapshot, zone_id: int | None) -> Priority:
        if snapshot.location_type == "SECONDARY":
            return Priority.CANT_HANDLE
        if any(r.state == RefState.Ready for r in env.image_refs(snapshot.id)):
            return Priority.CANT_HANDLE
        primary = ready_primary_ref(env.store, snapshot.id)
        if primary is None:
            return Priority.CANT_HANDLE
        pool = env.store.get(StoragePool, primary.store_id)
        if zone_id is not None and zone_id != pool.data_center_id:
            return Priority.CANT_HANDLE
        return Priority.HIGHEST if STORAGE_SYSTEM_SNAPSHOT in env.capabilities(pool) else Priority.CANT_HANDLE

    def _can_revert(self, env: StrategyEnv, snapshot: Snapshot, volume: Volume) -> Priority:
        """Spec §14.4: the snapshot's pool (its first Ready primary ref), then the volume's, is asked in turn.

        With the ``takeSnapshot`` detail "true" the question is ``CAN_REVERT_VOLUME_TO_SNAPSHOT``, and a snapshot
        without a Ready primary ref is refused before the volume's pool is asked; without it, whether the pool is
        managed.
        """
        if volume.removed is not None or volume.format not in SUPPORTED_FORMATS:
            return Priority.CANT_HANDLE
        ref = ready_primary_ref(env.store, snapshot.id)
        snapshot_pool = None if ref is None else env.store.get(StoragePool, ref.store_id)
        volume_pool = env.pool_of(volume)
        detail = env.store.first(SnapshotDetail, "snapshot_id = ? AND name = 'takeSnapshot'", (snapshot.id,))
        if detail is not None and detail.value == "true":
            if snapshot_pool is None:
                return Priority.CANT_HANDLE
            pools = [snapshot_pool, volume_pool]
            ok = any(p is not None and CAN_REVERT_VOLUME_TO_SNAPSHOT in env.capabilities(p) for p in pools)
        else:
            ok = any(p is not None and p.is_managed for p in (snapshot_pool, volume_pool))
        return Priority.HIGHEST if ok else Priority.CANT_HANDLE

    def before_take(self, env: StrategyEnv, take: SnapshotTake) -> None:
        """Spec §5.7: verify format and location type, lock, then the volume's SnapshotRequested.

        SnapshotRequested is inside the try, so a refused one still gets the finally's OperationFailed; the lock is
        then left held. Hardened (``failed_take_releases_only_its_volume``), only a take whose SnapshotRequested went
        through sends the volume back.
        """
        volume = take.volume
        if volume.format not in SUPPORTED_FORMATS:
            raise CloudRuntimeException(
                "Only the following image types are currently supported: VHD, OVA, QCOW2, and RAW"
            )
        if take.payload.location_type == "SECONDARY" and volume.format != "VHD":
            raise CloudRuntimeException(
                "Only the 'VHD' image type can be used when 'LocationType' is set to 'SECONDARY'."
            )
        if volume.format == "VHD":
            # The model's stand-in for getHost(volumeId): the cluster of the VM's host, else the pool's.
            cluster_id = take.cluster_id if take.cluster_id is not None else take.pool.cluster_id
            cluster = env.store.get(Cluster, cluster_id) if cluster_id is not None else None
            clone = cluster is not None and cluster.supports_resign
        else:
            clone = True
        if not env.acquire_lock(lock_key(take.snapshot.id)):
            raise CloudRuntimeException(f"Failed to acquire lock on the following snapshot: {take.snapshot.id}")
        take.locked = True
        requested = False
        try:
            volume_transit(env.store, volume.id, VolumeEvent.SnapshotRequested)
            requested = True
            if CAN_CREATE_VOLUME_FROM_SNAPSHOT in env.capabilities(take.pool) and clone:
                env.add_detail(take.snapshot.id, "takeSnapshot", "true", display=False)
        except BaseException:
            # Hardened (failed_take_releases_only_its_volume): a refused SnapshotRequested left the volume to the
            # take that holds it (spec §5.7); upstream's finally sends it back to Ready under that take.
            if requested or not env.store.profile.failed_take_releases_only_its_volume:
                volume_transit(env.store, volume.id, VolumeEvent.OperationFailed)
            raise

    def after_take(self, env: StrategyEnv, take: SnapshotTake, *, ok: bool) -> None:
        """The finally block: volume OperationSucceeded or OperationFailed; no MS_ID detail (spec §5.7).

        The lock is released only on success: its release sits after the finally block and is skipped when the
        take throws. It is then held until the job's thread ends (``jobs.complete``, spec §21.7 on §5.7).
        """
        volume_transit(env.store, take.volume.id, VolumeEvent.OperationSucceeded if ok else VolumeEvent.OperationFailed)
        if ok and take.locked:
            env.release_lock(lock_key(take.snapshot.id))
            take.locked = False

    def backup_plan(self, env: StrategyEnv, take: SnapshotTake) -> BackupPlan:
        """StorageSystemSnapshotStrategy.backupSnapshot: archive only SECONDARY snapshots.

        Other location types are ``markAsBackedUp`` (BackupToSecondary then OperationSucceeded). SECONDARY needs a
        host (:func:`_archive_host`), volume-from-snapshot support, and a compute cluster that supports resigning;
        then a full copy.
        """
        if take.payload.location_type != "SECONDARY":
            return BackupPlan(BackupKind.MARK_BACKED_UP)
        host = _archive_host(env, take.volume)
        if CAN_CREATE_VOLUME_FROM_SNAPSHOT not in env.capabilities(take.pool):
            raise CloudRuntimeException(
                "Cannot archive snapshot: 'canStorageSystemCreateVolumeFromSnapshot' was false."
            )
        if not env.store.get(Cluster, host.cluster_id).supports_resign:
            raise CloudRuntimeException("Cannot archive snapshot: 'computeClusterSupportsResign' was false.")
        return BackupPlan(BackupKind.COPY, full=True)

    def post_snapshot_creation(self, env: StrategyEnv, take: SnapshotTake) -> None:
        """Spec §5.9: write the payload's locationType into ``snapshots.location_type``.

        A SECONDARY snapshot is then deleted from primary storage (``snapshotSvr.deleteSnapshot``): the primary ref
        DestroyRequested, the driver's delete, waited for on the caller's thread, then Destroyed. No transaction is
        open (§21.2 ``SnapshotServiceImpl.deleteSnapshot`` row), so a failed delete leaves the ref Destroying,
        committed, for the storage GC. A failure is only logged.

        Raises:
            NeverAnswered: the driver never answers the delete: the caller's thread waits for good.
        """
        snapshot = env.store.get(Snapshot, take.snapshot.id)
        env.store.update(snapshot, location_type=take.payload.location_type)
        if take.payload.location_type != "SECONDARY":
            return
        try:
            _delete_on_primary(env, snapshot, take.pool)
        except CloudException as exc:
            log.warning("Failed to clean up snapshot '%s' on primary storage: %s", snapshot.id, exc.message)

    def delete(self, env: StrategyEnv, snapshot_id: int, zone_id: int | None) -> DeleteRun:
        """Spec §9.4: Destroyed is done, Error is soft-removed, only BackedUp is deleted, from primary storage."""
        del zone_id
        snapshot = env.store.get(Snapshot, snapshot_id)
        if snapshot.status == SnapshotState.Destroyed:
            return True
        if snapshot.status == SnapshotState.Error:
            env.store.remove(snapshot, by="StorageSystemSnapshotStrategy.deleteSnapshot")
            return True
        # Hardened (``restart_resolves_left_over_jobs``): the re-delete of a Destroying snapshot (spec §10.3), run
        # under its left-over job, goes on where the crash stopped it; upstream refuses it here, so it never ends.
        resumable = (SnapshotState.BackedUp, SnapshotState.Destroying)
        if snapshot.status not in (resumable if env.store.profile.restart_resolves_left_over_jobs else resumable[:1]):
            raise InvalidParameterValueException(
                f"Unable to delete snapshot '{snapshot_id}' because it is in the following state: {snapshot.status}"
            )
        return (yield from self._cleanup_on_primary(env, snapshot))

    def _cleanup_on_primary(self, env: StrategyEnv, snapshot: Snapshot) -> DeleteRun:
        """``cleanupSnapshotOnPrimaryStore``: Destroying, the array delete, then Destroyed and usage OFF_PRIMARY.

        A failed delete puts the snapshot back to BackedUp and returns false.
        """
        ref = self.primary_ref(env, snapshot.id)
        if ref is None:
            env.store.remove(snapshot, by="StorageSystemSnapshotStrategy.cleanupSnapshotOnPrimaryStore")
            return True
        if ref.state == RefState.Copying:
            raise InvalidParameterValueException(
                f"Unable to delete snapshot '{snapshot.id}' because it is in the copying state"
            )
        try:
            snapshot = snapshot_event(env.store, snapshot, SnapshotEvent.DestroyRequested)
            if env.store.count(VolumeDetail, "name = 'SNAPSHOT_ID' AND value = ?", (str(snapshot.id),)):
                with contextlib.suppress(NoTransitionException):
                    snapshot_event(env.store, snapshot, SnapshotEvent.OperationFailed)
                raise InvalidParameterValueException(
                    f"Unable to perform delete operation, Snapshot with id: {snapshot.id} is in use  "
                )
        except NoTransitionException:
            return False
        try:
            try:
                yield from service_delete(env, ref)
            except CloudException as exc:
                # Hardened: the array's snapshot is left to the storage GC (``left_to_gc``); the delete goes on.
                if not left_to_gc(env, ref, exc):
                    raise
            snapshot = snapshot_event(env.store, snapshot, SnapshotEvent.OperationSucceeded)
            off_primary_usage(env.store, snapshot, virtual_size=None)
        except CloudException:
            with contextlib.suppress(NoTransitionException):
                snapshot_event(env.store, env.store.get(Snapshot, snapshot.id), SnapshotEvent.OperationFailed)
            return False
        return True

    @staticmethod
    def primary_ref(env: StrategyEnv, snapshot_id: int) -> SnapshotStoreRef | None:
        """The snapshot's primary ref, if any."""
        refs = env.primary_refs(snapshot_id)
        return refs[0] if refs else None


def _archive_host(env: StrategyEnv, volume: Volume) -> Host:
    """``getHost(volumeId)``: the host whose cluster decides whether a SECONDARY snapshot can be archived.

    First a host of a XenServer cluster of the volume's zone that supports resigning; else the host of the volume's
    VM (its last host when it has none); else a host of any XenServer cluster of the zone. Clusters and hosts count
    as Enabled (the model keeps no allocation or resource state); among several, the first by id (CloudStack
    shuffles them, which changes the host but not the check that follows).

    Raises:
        CloudRuntimeException: "Unable to locate an applicable host".
    """
    store = env.store
    clusters = store.find(
        Cluster, "data_center_id = ? AND hypervisor_type = 'XenServer' AND removed IS NULL", (volume.data_center_id,)
    )
    hosts = [
        host
        for cluster in sorted(clusters, key=lambda c: not c.supports_resign)
        for host in store.find(Host, "cluster_id = ? AND removed IS NULL", (cluster.id,), limit=1)
    ]
    if hosts and store.get(Cluster, hosts[0].cluster_id).supports_resign:
        return hosts[0]
    vm = store.first(VmInstance, "id = ? AND removed IS NULL", (volume.instance_id,))
    host_id = None if vm is None else vm.host_id if vm.host_id is not None else vm.last_host_id
    found = store.first(Host, "id = ? AND removed IS NULL", (host_id,))
    if found is not None:
        return found
    if hosts:
        return hosts[0]
    raise CloudRuntimeException("Unable to locate an applicable host")


def _delete_on_primary(env: StrategyEnv, snapshot: Snapshot, pool: StoragePool) -> None:
    """``SnapshotServiceImpl.deleteSnapshot`` of the snapshot's primary ref, waited for on the caller's thread.

    The driver answers at once (:func:`service_delete_blocking`): no other work of this server runs in between, as
    the thread blocks on the future. No transaction is open, so each ref write commits on its own.

    Raises:
        CloudRuntimeException: no primary ref ("Failed to update state: ..."), the driver's error (the ref is left
            Destroying), or an exception thrown at the driver's call.
        NeverAnswered: the driver never answers.
    """
    ref = primary_ref(env.store, snapshot.id, pool.id)
    if ref is None:
        raise missing_store_ref(env.store, snapshot.id, pool.id)
    service_delete_blocking(env, ref)
