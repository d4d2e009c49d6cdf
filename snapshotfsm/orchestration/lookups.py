"""What several workflows read the same way: live rows, a volume's hypervisor, the backup switch, shared API checks.

The create phase (spec §5.1), the execute phase (§5.2), the take (§5.4), policies (§9.1) and copySnapshot (§7.4)
each call CloudStack's same helpers (``VolumeInfo.getHypervisorType``, ``SnapshotHelper``, ``checkAccess``); they
live here once.
"""

from __future__ import annotations

from typing import TypeVar

from snapshotfsm.describe import volume_str
from snapshotfsm.drivers.base import CAN_COPY_SNAPSHOT_BETWEEN_ZONES_AND_SAME_POOL_TYPE
from snapshotfsm.errors import (
    CloudException,
    CloudRuntimeException,
    InvalidParameterValueException,
    NullPointerException,
    PermissionDeniedException,
)
from snapshotfsm.orchestration import accounting
from snapshotfsm.orchestration.runtime import Runtime
from snapshotfsm.store.records import Account, Cluster, StoragePool, Template, VmInstance, Volume, Zone

LiveRow = TypeVar("LiveRow", Volume, Zone, StoragePool, VmInstance)


def live(rt: Runtime, cls: type[LiveRow], row_id: int | None) -> LiveRow | None:
    """A row that exists and is not soft-removed, or None (the DAOs' ``findById``)."""
    if row_id is None:
        return None
    return rt.store.first(cls, "id = ? AND removed IS NULL", (row_id,))


def volume_pool(rt: Runtime, volume: Volume) -> StoragePool:
    """The volume's pool (``storagePoolDao.findById(volume.getPoolId())``).

    Raises:
        NullPointerException: the volume has no pool (CloudStack dereferences the null; the create phase refuses such
            a volume, so only a row changed underneath a job gets here).
    """
    if volume.pool_id is None:
        raise NullPointerException(f"volume {volume.id} has no pool (a null StoragePoolVO)")
    return rt.store.get(StoragePool, volume.pool_id)


def volume_hypervisor(rt: Runtime, volume: Volume) -> str:
    """``VolumeInfo.getHypervisorType``: the VM's hypervisor, else the pool's (zone-wide) or its cluster's."""
    if volume.instance_id is not None:
        vm = rt.store.first(VmInstance, "id = ?", (volume.instance_id,))
        if vm is not None:
            return vm.hypervisor_type
    if volume.pool_id is not None:
        pool = rt.store.get(StoragePool, volume.pool_id)
        if pool.hypervisor:
            return pool.hypervisor
        if pool.cluster_id is not None:
            return rt.store.get(Cluster, pool.cluster_id).hypervisor_type
    return "None"


def backup_to_secondary_for_zone(rt: Runtime, zone: Zone) -> bool:
    """``isBackupSnapshotToSecondaryForZone``: the switch is on and the zone is not Edge (spec §5.4 step 2)."""
    return rt.config.flag("snapshot.backup.to.secondary") and zone.type != "Edge"


def store_resource_type(rt: Runtime, zone: Zone, location_type: str | None) -> str:
    """``getStoreResourceType``: secondary storage unless backup is off for the zone or the location is PRIMARY."""
    if not backup_to_secondary_for_zone(rt, zone) or location_type == "PRIMARY":
        return accounting.PRIMARY_STORAGE
    return accounting.SECONDARY_STORAGE


def check_access(caller: Account, owner_id: int) -> None:
    """``AccountManager.checkAccess``: an account acts on its own resources; a root admin on any."""
    if caller.type != 1 and caller.id != owner_id:
        raise PermissionDeniedException("Caller does not have permission to operate with provided resource.")


def parse_location_type(raw: str | None, volume_id: int) -> str | None:
    """``CreateSnapshotCmd.getLocationType``: case-insensitive PRIMARY/SECONDARY, else CloudRuntimeException."""
    if raw is None:
        return None
    value = raw.strip().upper()
    if value not in ("PRIMARY", "SECONDARY"):
        raise CloudRuntimeException(
            f"Invalid locationType {raw}Specified for volume {volume_id} Valid values are: primary,secondary "
        )
    return value


def add_pools_for_copy_to_primary(
    rt: Runtime, volume: Volume | None, zone_ids: list[int], pool_ids: list[int], replicate: bool
) -> list[int]:
    """``SnapshotHelper.addStoragePoolsForCopyToPrimary`` (spec §5.2 step 1); clears ``zone_ids`` when replicating."""
    if not replicate:
        return pool_ids
    if volume is None:
        raise InvalidParameterValueException("Could not find volume of a snapshot")
    pool = rt.store.get(StoragePool, volume.pool_id) if volume.pool_id is not None else None
    if pool is None or CAN_COPY_SNAPSHOT_BETWEEN_ZONES_AND_SAME_POOL_TYPE not in rt.strategy_env.capabilities(pool):
        raise InvalidParameterValueException("The storage pool does not support copy between zones")
    if not zone_ids:
        raise InvalidParameterValueException("There is no destination zone provided")
    if not pool_ids:
        pool_ids = []
        for zone_id in zone_ids:
            candidates = rt.store.find(
                StoragePool, "pool_type = ? AND data_center_id = ? AND removed IS NULL", (pool.pool_type, zone_id)
            )
            if candidates:
                chosen = [p for p in candidates if rt.config.flag("use.storage.replication", pool=p.id)]
                if not chosen:
                    raise CloudException("No value present (java.util.NoSuchElementException from findFirst().get())")
                pool_ids.append(chosen[0].id)
        if not pool_ids:
            raise InvalidParameterValueException(
                "Cannot copy snapshot to primary storage. There aren't storage pools that support this operation"
            )
    zone_ids.clear()
    return pool_ids


def can_copy_on_primary(rt: Runtime, pool_ids: list[int], volume: Volume) -> bool:
    """``VolumeApiServiceImpl.canCopyOnPrimary`` and ``checkIfThereAreMoreThanOnePoolInTheZone``."""
    if not pool_ids:
        return False
    volume_pool = rt.store.get(StoragePool, volume.pool_id) if volume.pool_id is not None else None
    for pool_id in pool_ids:
        pool = rt.store.first(StoragePool, "id = ?", (pool_id,))
        if (
            pool is not None
            and CAN_COPY_SNAPSHOT_BETWEEN_ZONES_AND_SAME_POOL_TYPE not in rt.strategy_env.capabilities(pool)
            and volume_pool is not None
            and pool.pool_type != volume_pool.pool_type
            and volume.pool_id == pool_id
        ):
            raise InvalidParameterValueException(
                f"The specified pool doesn't support copying snapshots between zones{pool_id}"
            )
    check_one_pool_per_zone(rt, pool_ids)
    return True


def check_one_pool_per_zone(rt: Runtime, pool_ids: list[int]) -> None:
    """``SnapshotHelper.checkIfThereAreMoreThanOnePoolInTheZone``: two existing pools in one zone are refused."""
    zones = [p.data_center_id for i in pool_ids if (p := rt.store.first(StoragePool, "id = ?", (i,))) is not None]
    if sum(1 for z in zones if zones.count(z) > 1) > 1:
        raise CloudRuntimeException("Cannot copy the snapshot on multiple storage pools in one zone")


def refuse_system_template_volume(rt: Runtime, volume: Volume, vm: VmInstance | None) -> None:
    """``isOperationSupported``: a volume made from a SYSTEM template can't be snapshotted, nor given a policy (§5.1).

    It tests ``!CKS || !SHAREDFS``, true for every VM type: no such volume passes, although the intent (and spec
    §5.1) exempts CKS and SharedFS VMs.

    Raises:
        InvalidParameterValueException: the volume's template is a SYSTEM one.
    """
    if volume.template_id is None:
        return
    template = rt.store.first(Template, "id = ?", (volume.template_id,))
    user_vm_type = vm.user_vm_type if vm is not None else None
    if (
        template is not None
        and template.type == "SYSTEM"
        and (user_vm_type is None or user_vm_type != "CKSNode" or user_vm_type != "SharedFSVM")
    ):
        raise InvalidParameterValueException(
            f"Volume: {volume_str(volume)} is for System VM , Creating snapshot against System VM volumes is not"
            " supported"
        )
