"""How CloudStack prints its objects inside messages (the VOs' ``toString``), so that messages match verbatim.

``ReflectionToStringBuilderUtils.reflectOnlySelectedFields`` prints the chosen fields in JSON style.
"""

from __future__ import annotations

import json

from snapshotfsm.store.records import Account, Snapshot, StoragePool, VmInstance, Volume, Zone


def _fields(**values: object) -> str:
    return json.dumps(values, separators=(",", ":"))


def volume_str(v: Volume) -> str:
    """``VolumeVO.toString``."""
    return "Volume " + _fields(id=v.id, uuid=v.uuid, name=v.name, volumeType=v.volume_type, instanceId=v.instance_id)


def snapshot_str(s: Snapshot) -> str:
    """``SnapshotVO.toString``."""
    return "Snapshot " + _fields(
        id=s.id, uuid=s.uuid, name=s.name, volumeId=s.volume_id, version=s.version, state=s.status
    )


def snapshot_object_str(s: Snapshot, store_id: int | None, image_store_id: int | None = None) -> str:
    """``SnapshotObject.toString``: the VO, the store it was loaded on, its image store (0 when none), no checkpoint.

    Messages that print a ``SnapshotInfo`` rather than its VO use this form.
    """
    stores = f"dataStoreId {store_id or 0}, imageStore id {image_store_id or 0}"
    return f"{snapshot_str(s)}, {stores}, checkpointPath null."


def vm_str(vm: VmInstance) -> str:
    """``VMInstanceVO.toString``."""
    return "VM instance " + _fields(id=vm.id, instanceName=vm.name, uuid=vm.uuid, type=vm.type, state=vm.state)


def zone_str(z: Zone) -> str:
    """``DataCenterVO.toString``."""
    return f'Zone {{"id": "{z.id}", "name": "{z.name}", "uuid": "{z.uuid}"}}'


def account_str(a: Account) -> str:
    """``AccountVO.toString``."""
    return "Account [" + _fields(uuid=a.uuid, accountName=a.account_name, id=a.id) + "]"


def pool_str(p: StoragePool) -> str:
    """``StoragePoolVO.toString``."""
    return "StoragePool " + _fields(id=p.id, uuid=p.uuid, name=p.name, poolType=p.pool_type)
