"""The take itself: ``orchestrateTakeVolumeSnapshot`` (spec §5.3) and ``SnapshotManagerImpl.takeSnapshot`` (§5.4).

Preparation, the strategy, the outer catch's rollback, and post-processing.
"""

from __future__ import annotations

import logging

from snapshotfsm.describe import snapshot_object_str, snapshot_str, volume_str
from snapshotfsm.drivers.base import STORAGE_SYSTEM_SNAPSHOT
from snapshotfsm.drivers.image import ImageStoreDriver
from snapshotfsm.errors import (
    CloudException,
    CloudRuntimeException,
    InvalidParameterValueException,
    NullPointerException,
    UnsupportedOperationException,
)
from snapshotfsm.names import RefState, Take, VolumeState
from snapshotfsm.orchestration import accounting
from snapshotfsm.orchestration.api import backup_to_secondary_for_zone, live, store_resource_type, volume_hypervisor
from snapshotfsm.orchestration.runner import Run, step
from snapshotfsm.orchestration.runtime import Runtime
from snapshotfsm.store.records import (
    Host,
    ImageStore,
    Snapshot,
    SnapshotSchedule,
    SnapshotStoreRef,
    StoragePool,
    VmInstance,
    Volume,
    Zone,
)
from snapshotfsm.strategies.base import Operation, Payload
from snapshotfsm.strategies.base import Take as TakeState

log = logging.getLogger(__name__)

FILE_BASED_POOLS = ("SharedMountPoint", "NetworkFilesystem", "Filesystem")


def attached_or_direct(run: Run, attached: str, direct: str) -> str:
    """The next event on the work-job path or on the detached path."""
    return attached if run.work_job_id is not None else direct


@step("take.orchestrate")
def orchestrate(run: Run) -> str:
    """``orchestrateTakeVolumeSnapshot`` (spec §5.3): Ready re-check, the encrypted-volume rule, the payload."""
    rt = run.rt
    volume = live(rt, Volume, run.volume_id)
    if not isinstance(volume, Volume):
        raise InvalidParameterValueException(f"Creating snapshot failed due to volume:{run.volume_id} doesn't exist")
    if volume.state != VolumeState.Ready:
        raise InvalidParameterValueException(
            f"Volume: {volume_str(volume)} is not in Ready state but {volume.state}. Cannot take snapshot."
        )
    pool = rt.store.get(StoragePool, volume.pool_id or 0)
    # The flag is named isSnapshotOnStorPoolOnly, yet it is true when backup to secondary is ENABLED (spec §5.3).
    storpool_only = pool.pool_type == "StorPool" and rt.config.flag("snapshot.backup.to.secondary")
    vm = rt.store.first(VmInstance, "id = ?", (volume.instance_id,)) if volume.instance_id is not None else None
    if volume.encrypt_format is not None and vm is not None and vm.state != "Stopped" and not storpool_only:
        raise UnsupportedOperationException("Volume snapshots for encrypted volumes are not supported if VM is running")
    run.payload = Payload(
        snapshot_id=run.snapshot_id or 0,
        account_id=run.account_id or 0,
        policy_id=int(run.params.get("policy_id") or 0),
        quiescevm=bool(run.params.get("quiescevm")),
        location_type=run.flags.get("location_type"),
        async_backup=bool(run.params.get("async_backup")),
        zone_ids=tuple(run.flags.get("zone_ids", ())),
        pool_ids=tuple(run.flags.get("pool_ids", ())),
    )
    return Take.Prepare


def cluster_of(rt: Runtime, volume: Volume, pool: StoragePool) -> int | None:
    """``HostDao.findClusterIdByVolumeInfo``: the cluster of the VM's host (or last host), else the pool's."""
    if volume.instance_id is not None:
        vm = rt.store.first(VmInstance, "id = ?", (volume.instance_id,))
        host_id = vm.host_id or vm.last_host_id if vm is not None else None
        if host_id is not None:
            return rt.store.get(Host, host_id).cluster_id
    return pool.cluster_id


def kvm_file_based(rt: Runtime, volume: Volume, pool: StoragePool) -> bool:
    """``isHypervisorKvmAndFileBasedStorage`` (spec §5.4 step 2)."""
    return volume_hypervisor(rt, volume) == "KVM" and pool.pool_type in FILE_BASED_POOLS


def find_image_store(rt: Runtime, snapshot: Snapshot) -> ImageStore | None:
    """``findSnapshotImageStore``: the parent's store for a delta, else a writable store of the zone with room.

    With several candidates CloudStack picks one with free capacity; the model takes the first by id, so that runs
    are reproducible.
    """
    stores = rt.store.find(
        ImageStore,
        "data_center_id = ? AND removed IS NULL AND readonly = 0 AND role = 'Image'",
        (snapshot.data_center_id,),
    )
    for store in stores:
        if store.total_size == 0 or store.total_size - store.used_bytes >= snapshot.size:
            return store
    return None


def new_image_ref(rt: Runtime, snapshot: Snapshot, image_store_id: int) -> SnapshotStoreRef:
    """``ObjectInDataStoreManagerImpl.create`` on an image store: an Allocated ref at the snapshot's install path."""
    return rt.store.insert(
        SnapshotStoreRef(
            store_id=image_store_id,
            store_role="Image",
            snapshot_id=snapshot.id,
            volume_id=snapshot.volume_id,
            state=RefState.Allocated,
            size=snapshot.size,
            install_path=ImageStoreDriver.install_path(snapshot),
            created=rt.clock.timestamp(),
            last_updated=rt.clock.timestamp(),
        )
    )


@step("take.prepare")
def prepare(run: Run) -> str:
    """Spec §5.4 steps 1-4: flags, the pre-selected image store (KVM file-based), ``updateSnapshotPayload``.

    Step 3 runs before SnapshotManagerImpl's try block: its failure gives nothing back (``take.abandon``).
    """
    rt = run.rt
    assert run.payload is not None
    snapshot = rt.store.get(Snapshot, run.snapshot_id or 0)
    volume = rt.store.get(Volume, run.volume_id or 0)
    pool = rt.store.get(StoragePool, volume.pool_id or 0)
    zone = rt.store.get(Zone, volume.data_center_id)
    cluster_id = cluster_of(rt, volume, pool)
    file_based = kvm_file_based(rt, volume, pool)
    backup_on = backup_to_secondary_for_zone(rt, zone)
    run.flags.update(kvm_file_based=file_based, backup_on=backup_on, cluster_id=cluster_id)
    if file_based and backup_on:
        image = find_image_store(rt, snapshot)
        if image is None:
            text = snapshot_object_str(snapshot, pool.id)
            raise CloudRuntimeException(f"Could not find any secondary storage to allocate snapshot [{text}].")
        run.flags["image_store_id"] = image.id
    payload = run.payload
    if pool.is_managed and payload.location_type is None:
        payload.location_type = "PRIMARY"
    elif not pool.is_managed:
        payload.location_type = None
    if file_based and rt.config.flag("kvm.incremental.snapshot", cluster=cluster_id):
        payload.kvm_incremental = True
    run.take = TakeState(
        snapshot=snapshot,
        volume=volume,
        pool=pool,
        payload=payload,
        cluster_id=cluster_id,
        image_store_id=run.flags.get("image_store_id"),
    )
    return Take.ChooseStrategy


@step("take.abandon")
def abandon(run: Run) -> str:
    """Nothing to give back: the exception was thrown before SnapshotManagerImpl's try (spec §5.4 step 3)."""
    return attached_or_direct(run, Take.FailWork, Take.Fail)


@step("take.choose_strategy")
def choose_strategy(run: Run) -> str:
    """Spec §5.4 step 5: the factory's TAKE strategy; none soft-removes the row and throws an UOE."""
    rt = run.rt
    assert run.take is not None
    snapshot = run.take.snapshot
    if rt.store.first(Snapshot, "id = ? AND removed IS NULL", (snapshot.id,)) is None:
        # getSnapshot(snapshotId, store) wraps findById's null for a row soft-removed meanwhile (a deleteSnapshot
        # of the Allocated snapshot while its work job waited in the VM's queue): canHandle dereferences it.
        raise NullPointerException(f"snapshot {snapshot.id} was removed before its take began (null SnapshotVO)")
    strategy = rt.factory.best(rt.strategy_env, snapshot, Operation.TAKE)
    if strategy is None:
        rt.store.remove(snapshot, by="SnapshotManagerImpl.takeSnapshot (no strategy)")
        volume = run.take.volume
        raise UnsupportedOperationException(
            f"Unable to find a snapshot strategy to create snapshot [{snapshot_str(snapshot)}] of volume "
            f"[{volume.uuid}]. Please check the logs."
        )
    run.strategy = strategy
    run.flags["strategy"] = strategy.name
    return Take.BeginTake


@step("take.unwind")
def unwind(run: Run) -> str:
    """The outer catch of SnapshotManagerImpl.takeSnapshot (spec §5.4 step 14).

    It gives back the snapshot count and the store size, wraps what is neither a CloudRuntimeException nor an UOE,
    and rethrows. Snapshot rows stay as the failure left them.
    """
    rt = run.rt
    assert run.payload is not None
    assert run.error is not None
    volume = rt.store.get(Volume, run.volume_id or 0)
    zone = rt.store.get(Zone, volume.data_center_id)
    account_id = run.payload.account_id
    accounting.change_count(rt, account_id, accounting.SNAPSHOT, -1)
    store_type = store_resource_type(rt, zone, run.payload.location_type)
    accounting.change_count(rt, account_id, store_type, -volume.size)
    if not isinstance(run.error, (CloudRuntimeException, UnsupportedOperationException)):
        run.error = CloudRuntimeException("Failed to create snapshot", cause=run.error)
    return attached_or_direct(run, Take.FailWork, Take.Fail)


def data_store_role(rt: Runtime, run: Run, snapshot: Snapshot) -> str:
    """Spec §5.4 step 10: Primary for an async backup; else ``SnapshotHelper.getDataStoreRole`` when backup is on."""
    flags, payload = run.flags, run.payload
    assert payload is not None
    if payload.async_backup and flags["backup_on"] and not flags["kvm_file_based"]:
        return "Primary"
    if not flags["backup_on"]:
        return "Primary"
    primary = rt.store.first(SnapshotStoreRef, "snapshot_id = ? AND store_role = 'Primary'", (snapshot.id,))
    if primary is None:
        return "Image"
    pool = rt.store.get(StoragePool, primary.store_id)
    volume = rt.store.get(Volume, snapshot.volume_id)
    backup_config = rt.config.flag("snapshot.backup.to.secondary")
    if (pool.pool_type in ("RBD", "PowerFlex") or volume_hypervisor(rt, volume) == "KVM") and not backup_config:
        return "Primary"
    if STORAGE_SYSTEM_SNAPSHOT in rt.strategy_env.capabilities(pool):
        return "Primary"
    return "Image"


@step("take.post_create")
def post_create(run: Run) -> str | None:
    """``postCreateSnapshot`` (spec §5.4 step 9, §9.3): the policy's schedule, then retention.

    Retention deletes older recurring snapshots through the delete workflow; the job waits for them. Any failure
    here ends the post-processing ("post process snapshot failed" is only logged).
    """
    rt = run.rt
    assert run.payload is not None
    snapshot = rt.store.get(Snapshot, run.snapshot_id or 0)
    try:
        policy_id = run.payload.policy_id
        if policy_id:
            schedule = rt.store.first(SnapshotSchedule, "policy_id = ?", (policy_id,))
            if schedule is not None:
                rt.store.update(schedule, snapshot_id=snapshot.id)
        if snapshot.type_description in ("HOURLY", "DAILY", "WEEKLY", "MONTHLY"):
            from snapshotfsm.orchestration import retention  # noqa: PLC0415

            if retention.start(run, snapshot, policy_id, resume_event=Take.Retained):
                return None
    except CloudException as exc:
        _post_process_failed(run, exc)
    return Take.Retained


def _post_process_failed(run: Run, exc: CloudException) -> None:
    log.debug("post process snapshot failed: %s", exc)
    run.flags["post_process_failed"] = f"{exc.java_name}: {exc.message}"


def _completion(run: Run) -> str:
    return attached_or_direct(run, Take.CompleteWork, Take.Complete)


@step("take.post_process")
def post_process(run: Run) -> str:
    """Spec §5.4 steps 9-12 (zone, role, usage SNAPSHOT.CREATE, correction), then the copies of step 13."""
    retention_child = next((c for c in run.children if c.machine == "retention"), None)
    if retention_child is not None and retention_child.error is not None:
        _post_process_failed(run, retention_child.error)
    if run.flags.get("post_process_failed"):
        return _completion(run)
    try:
        _post_process(run)
    except CloudException as exc:
        _post_process_failed(run, exc)
        return _completion(run)
    return _next_copy(run, zones_done=False)


def _next_copy(run: Run, *, zones_done: bool) -> str:
    """Step 13: without asyncbackup, zone copies when backup is on, then pool copies."""
    assert run.payload is not None
    payload = run.payload
    if payload.async_backup:
        return _completion(run)
    if not zones_done and run.flags["backup_on"] and payload.zone_ids:
        return Take.CopyToZones
    if payload.pool_ids and not run.flags.get("pools_copied"):
        return Take.CopyToPools
    return _completion(run)


@step("take.copy_to_zones")
def copy_to_zones(run: Run) -> None:
    """``copyNewSnapshotToZones``: the job waits for the copy workflow (spec §7.4)."""
    from snapshotfsm.orchestration import copies  # noqa: PLC0415

    assert run.payload is not None
    snapshot = run.rt.store.get(Snapshot, run.snapshot_id or 0)
    copies.start_zone_copies(run, snapshot, list(run.payload.zone_ids), resume_event=Take.ZonesCopied)


@step("take.copy_to_pools")
def copy_to_pools(run: Run) -> None:
    """``copyNewSnapshotToZonesOnPrimary``: the job waits for the copy workflow (spec §7.4, §8)."""
    from snapshotfsm.orchestration import copies  # noqa: PLC0415

    assert run.payload is not None
    run.flags["pools_copied"] = True
    snapshot = run.rt.store.get(Snapshot, run.snapshot_id or 0)
    copies.start_pool_copies(run, snapshot, list(run.payload.pool_ids), resume_event=Take.PoolsCopied)


@step("take.copies_done")
def copies_done(run: Run) -> str:
    """A copy workflow ended; failed targets were only logged. Pool copies follow zone copies."""
    return _next_copy(run, zones_done=True)


def _post_process(run: Run) -> None:
    rt = run.rt
    assert run.payload is not None
    payload = run.payload
    snapshot = rt.store.get(Snapshot, run.snapshot_id or 0)
    volume = rt.store.get(Volume, snapshot.volume_id)
    from snapshotfsm.orchestration.copies import add_to_zone  # noqa: PLC0415

    add_to_zone(rt, snapshot.id, snapshot.data_center_id)
    role = data_store_role(rt, run, snapshot)
    ready = rt.store.find(
        SnapshotStoreRef, "snapshot_id = ? AND store_role = ? AND state = ?", (snapshot.id, role, RefState.Ready)
    )
    if not ready:
        raise CloudRuntimeException(f"Could not find snapshot {snapshot_str(snapshot)} on [{payload.location_type}]")
    ref = ready[0]
    accounting.usage(rt, "SNAPSHOT.CREATE", snapshot, size=ref.physical_size, virtual_size=volume.size)
    store_type = accounting.SECONDARY_STORAGE if role == "Image" else accounting.PRIMARY_STORAGE
    accounting.change_count(rt, payload.account_id, store_type, -(volume.size - ref.physical_size))
    run.flags["data_store_role"] = role
