"""How CloudStack prints its objects inside messages (the VOs' ``toString``), so that messages match verbatim.

``ReflectionToStringBuilderUtils.reflectOnlySelectedFields`` prints the chosen fields in JSON style, in the order the
class declares them: commons-lang3 3.11 (CloudStack's version at U) walks ``getDeclaredFields`` unsorted, whatever
order the ``toString`` names them in.
"""

from __future__ import annotations

import json

from snapshotfsm.store.records import Account, Snapshot, StoragePool, VmInstance, Volume, Zone


def _fields(**values: object) -> str:
    return json.dumps(values, separators=(",", ":"))


def volume_str(v: Volume) -> str:
    """``VolumeVO.toString``."""
    return "Volume " + _fields(id=v.id, name=v.name, instanceId=v.instance_id, volumeType=v.volume_type, uuid=v.uuid)


def snapshot_str(s: Snapshot) -> str:
    """``SnapshotVO.toString``."""
    return "Snapshot " + _fields(
        id=s.id, volumeId=s.volume_id, name=s.name, state=s.status, version=s.version, uuid=s.uuid
    )


def snapshot_object_str(s: Snapshot, store_id: int | None, image_store_id: int | None = None) -> str:
    """``SnapshotObject.toString``: the VO, the store it was loaded on, its image store (0 when none), no checkpoint.

    Messages that print a ``SnapshotInfo`` rather than its VO use this form.
    """
    stores = f"dataStoreId {_long(store_id)}, imageStore id {_long(image_store_id)}"
    return f"{snapshot_str(s)}, {stores}, checkpointPath null."


def _long(value: int | None) -> int:
    """A ``long`` field as Java prints it: an id never set is 0."""
    return 0 if value is None else value


def vm_str(vm: VmInstance) -> str:
    """``VMInstanceVO.toString``."""
    return "VM instance " + _fields(id=vm.id, state=vm.state, instanceName=vm.name, type=vm.type, uuid=vm.uuid)


def zone_str(z: Zone) -> str:
    """``DataCenterVO.toString``."""
    return f'Zone {{"id": "{z.id}", "name": "{z.name}", "uuid": "{z.uuid}"}}'


def account_str(a: Account) -> str:
    """``AccountVO.toString``."""
    return "Account [" + _fields(id=a.id, accountName=a.account_name, uuid=a.uuid) + "]"


def pool_str(p: StoragePool) -> str:
    """``StoragePoolVO.toString``."""
    return "StoragePool " + _fields(id=p.id, name=p.name, uuid=p.uuid, poolType=p.pool_type)
