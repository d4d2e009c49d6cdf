"""Building the cloud the model acts on: zones, pools, image stores, clusters, hosts, accounts, VMs and volumes.

:class:`Inventory` is a base of :class:`~snapshotfsm.engine.Engine`, so these are ``engine.add_zone(...)`` and so on.

Each function fills in what CloudStack would (uuids from the engine's seeded generator, a StorPool volume's device
path, a KVM host's ``snapshot`` capability) and refuses values CloudStack would not accept.
"""

from __future__ import annotations

from snapshotfsm.describe import vm_str, volume_str
from snapshotfsm.errors import InvalidParameterValueException, InvalidValue, PermissionDeniedException
from snapshotfsm.names import VolumeState
from snapshotfsm.orchestration.api_errors import check_length, refusal
from snapshotfsm.orchestration.runtime import Runtime
from snapshotfsm.store.records import (
    SYSTEM_ACCOUNT_ID,
    Account,
    Cluster,
    Host,
    ImageStore,
    ResourceCount,
    ResourceLimit,
    SimVolume,
    StoragePool,
    StoragePoolDetail,
    Template,
    VmInstance,
    VmSnapshot,
    Volume,
    Zone,
)

HYPERVISORS = ("KVM", "XenServer", "VMware", "Ovm", "External", "Any", "None", "Hyperv", "LXC", "Simulator")
FORMATS = ("QCOW2", "VHD", "RAW", "OVA", "DIR", "VMDK", "ISO")
VM_STATES = ("Starting", "Running", "Stopping", "Stopped", "Destroyed", "Expunging", "Migrating", "Error")
ZONE_TYPES = ("Core", "Edge")


def _one_of(what: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise InvalidValue(what, value, "one of " + ", ".join(allowed))


def _name(what: str, param: str, value: object) -> str:
    """A name as CloudStack's API takes it: a string within the parameter's length (``param``: its Java field)."""
    if not isinstance(value, str):
        raise InvalidValue(what, value, "a string")
    check_length(param, value)
    return value


class Inventory:
    """Methods that add inventory to the database of ``self.rt``."""

    rt: Runtime

    def ensure_system_account(self) -> Account:
        """Account 1, ``system``: every CloudStack database has it; scheduled snapshots run as its user (§9.2)."""
        # One write transaction: servers opening a fresh database together must not both insert it.
        with self.rt.store.atomic():
            found = self.rt.store.first(Account, "id = ?", (SYSTEM_ACCOUNT_ID,))
            if found is not None:
                return found
            account = self.rt.store.insert(
                Account(id=SYSTEM_ACCOUNT_ID, account_name="system", uuid=self.rt.new_uuid(), type=1)
            )
            for resource in ("snapshot", "primary_storage", "secondary_storage"):
                self.rt.store.insert(ResourceCount(type=resource, account_id=SYSTEM_ACCOUNT_ID, count=0))
            return account

    def add_zone(
        self, name: str, *, type: str = "Core", enabled: bool = True, backup_provider: str | None = None
    ) -> Zone:
        """A zone; an Edge zone never backs snapshots up to secondary (spec §5.4 step 2).

        Raises:
            ApiError: 431, a name over 255 characters, or one another zone has (``createZone``'s messages).
            InvalidValue: a zone type that is not Core or Edge. Nothing is written.
        """
        _name("zone name", "zoneName", name)
        _one_of("zone type", type, ZONE_TYPES)
        if self.rt.store.first(Zone, "name = ? AND removed IS NULL", (name,)) is not None:
            raise refusal(
                InvalidParameterValueException(
                    "A zone with that name already exists. Please specify a unique zone name."
                )
            )
        return self.rt.store.insert(
            Zone(
                name=name,
                uuid=self.rt.new_uuid(),
                type=type,
                allocation_state="Enabled" if enabled else "Disabled",
                backup_provider=backup_provider,
            )
        )

    def add_account(self, name: str, *, admin: bool = False, limits: dict[str, int] | None = None) -> Account:
        """An account (``admin`` = root admin) with optional resource limits, and zeroed resource counts.

        Raises:
            ApiError: 431, a name over 255 characters or one another account has (``createAccount``'s messages).
        """
        _name("account name", "accountName", name)
        if self.rt.store.first(Account, "account_name = ?", (name,)) is not None:
            raise refusal(InvalidParameterValueException(f"The specified account: {name} already exists"))
        account = self.rt.store.insert(Account(account_name=name, uuid=self.rt.new_uuid(), type=1 if admin else 0))
        for resource in ("snapshot", "primary_storage", "secondary_storage"):
            self.rt.store.insert(ResourceCount(type=resource, account_id=account.id, count=0))
        for resource, value in (limits or {}).items():
            self.set_limit(account, resource, value)
        return account

    def set_limit(self, account: Account, resource: str, value: int) -> None:
        """An account's limit: ``snapshot`` (a count), ``primary_storage`` or ``secondary_storage`` (bytes).

        -1 means unlimited.
        """
        _one_of("resource type", resource, ("snapshot", "primary_storage", "secondary_storage"))
        row = self.rt.store.first(ResourceLimit, "account_id = ? AND type = ?", (account.id, resource))
        if row is None:
            self.rt.store.insert(ResourceLimit(type=resource, account_id=account.id, max=value))
        else:
            self.rt.store.update(row, max=value)

    def add_cluster(self, zone: Zone, name: str, *, hypervisor: str = "KVM", supports_resign: bool = False) -> Cluster:
        """A cluster of one hypervisor; ``supports_resign`` is XenServer's "supports resigning" for managed storage."""
        _name("cluster name", "clusterName", name)
        _one_of("hypervisor", hypervisor, HYPERVISORS)
        return self.rt.store.insert(
            Cluster(name=name, data_center_id=zone.id, hypervisor_type=hypervisor, supports_resign=supports_resign)
        )

    def add_host(self, cluster: Cluster, name: str, *, status: str = "Up", capabilities: str | None = None) -> Host:
        """A host; KVM hosts advertise ``snapshot`` unless ``capabilities`` says otherwise (spec §5.1 step 6)."""
        caps = (
            capabilities
            if capabilities is not None
            else ("hvm,snapshot" if cluster.hypervisor_type == "KVM" else "hvm")
        )
        return self.rt.store.insert(
            Host(
                name=name,
                data_center_id=cluster.data_center_id,
                cluster_id=cluster.id,
                hypervisor_type=cluster.hypervisor_type,
                status=status,
                capabilities=caps,
            )
        )

    def add_pool(
        self,
        zone: Zone,
        name: str,
        *,
        pool_type: str = "NetworkFilesystem",
        cluster: Cluster | None = None,
        provider: str = "DefaultPrimary",
        managed: bool = False,
        hypervisor: str | None = None,
        capabilities: dict[str, bool] | None = None,
        capacity_bytes: int = 0,
    ) -> StoragePool:
        """Primary storage: cluster-scoped when a cluster is given, else zone-wide with a hypervisor.

        Managed zone-wide pools use hypervisor ``Any``; ``capabilities`` overrides what the driver advertises. The
        pool's ``provider`` must be an installed driver's, and serve ``pool_type``.

        Raises:
            InvalidValue: no installed driver is ``provider``, or it does not serve ``pool_type`` (the message lists
                what is installed); a hypervisor that is not CloudStack's. Nothing is written.
            ApiError: 431, a name over 255 characters.
        """
        _name("pool name", "storagePoolName", name)
        self.rt.drivers.installed.for_pool(provider, pool_type)
        if hypervisor is not None:
            _one_of("hypervisor", hypervisor, HYPERVISORS)
        pool = self.rt.store.insert(
            StoragePool(
                name=name,
                uuid=self.rt.new_uuid(),
                data_center_id=zone.id,
                cluster_id=cluster.id if cluster else None,
                pool_type=pool_type,
                storage_provider_name=provider,
                is_managed=managed,
                scope="CLUSTER" if cluster else "ZONE",
                hypervisor=hypervisor if cluster is None else None,
                capacity_bytes=capacity_bytes,
            )
        )
        for cap, on in (capabilities or {}).items():
            self.rt.store.insert(StoragePoolDetail(pool_id=pool.id, name=cap, value="true" if on else "false"))
        return pool

    def add_image_store(self, zone: Zone, name: str, *, total_size: int = 0) -> ImageStore:
        """Secondary storage of a zone; ``total_size`` 0 means unbounded.

        Raises:
            ApiError: 431, a name over 255 characters, or one another image store has (``addImageStore``).
        """
        _name("image store name", "name", name)
        if self.rt.store.first(ImageStore, "name = ?", (name,)) is not None:
            raise refusal(
                InvalidParameterValueException(
                    f"The image store with name {name} already exists, try creating with another name"
                )
            )
        return self.rt.store.insert(ImageStore(name=name, data_center_id=zone.id, total_size=total_size))

    def add_template(self, name: str, *, system: bool = False) -> Template:
        """A template; volumes of a SYSTEM template are refused (spec §5.1 step 1)."""
        return self.rt.store.insert(Template(name=name, type="SYSTEM" if system else "USER"))

    def add_vm(
        self,
        account: Account,
        zone: Zone,
        name: str,
        *,
        hypervisor: str = "KVM",
        state: str = "Running",
        host: Host | None = None,
        user_vm_type: str | None = None,
        backup_offering_id: int | None = None,
    ) -> VmInstance:
        """A user VM; its state matters to the KVM and encryption checks, never to the attached/detached branch."""
        _one_of("hypervisor", hypervisor, HYPERVISORS)
        _one_of("VM state", state, VM_STATES)
        return self.rt.store.insert(
            VmInstance(
                name=name,
                host_name=name,
                uuid=self.rt.new_uuid(),
                state=state,
                hypervisor_type=hypervisor,
                account_id=account.id,
                data_center_id=zone.id,
                host_id=host.id if host else None,
                last_host_id=host.id if host else None,
                user_vm_type=user_vm_type,
                backup_offering_id=backup_offering_id,
            )
        )

    def add_vm_snapshot(
        self, vm: VmInstance, *, type: str = "Disk", state: str = "Ready", kvm_file_based: bool = False
    ) -> VmSnapshot:
        """A VM snapshot (spec §5.1 step 6, §6.2 Default TAKE)."""
        _one_of("VM snapshot type", type, ("Disk", "DiskAndMemory"))
        return self.rt.store.insert(VmSnapshot(vm_id=vm.id, type=type, state=state, kvm_file_based=kvm_file_based))

    def add_volume(
        self,
        account: Account,
        pool: StoragePool,
        name: str,
        *,
        size: int,
        vm: VmInstance | None = None,
        format: str = "QCOW2",
        encrypted: bool = False,
        state: str = VolumeState.Ready,
        template: Template | None = None,
        volume_type: str = "DATADISK",
    ) -> Volume:
        """A volume on ``pool``, attached to ``vm`` when given. A StorPool volume gets a ``/dev/storpool-byid`` path.

        Raises:
            ApiError: 531 when ``vm`` belongs to another account (``attachVolume``'s same-owner check); 431 for a
                name over 255 characters.
            InvalidValue: a format that is not CloudStack's, a size that is not a positive integer. Nothing is
                written.
        """
        _name("volume name", "volumeName", name)
        _one_of("volume format", format, FORMATS)
        if not isinstance(size, int) or isinstance(size, bool):
            raise InvalidValue("volume size", size, "an integer number of bytes (e.g. 10 << 30 for 10 GiB)")
        if size <= 0:
            raise InvalidValue("volume size", size, "a positive number of bytes")
        uuid = self.rt.new_uuid()
        path = f"/dev/storpool-byid/{uuid[:8]}.b" if pool.pool_type == "StorPool" else uuid
        volume = Volume(
            name=name,
            uuid=uuid,
            account_id=account.id,
            domain_id=account.domain_id,
            data_center_id=pool.data_center_id,
            pool_id=pool.id,
            instance_id=vm.id if vm else None,
            template_id=template.id if template else None,
            volume_type=volume_type,
            size=size,
            format=format,
            path=path,
            state=state,
            encrypt_format="LUKS" if encrypted else None,
            created=self.rt.clock.timestamp(),
        )
        if vm is not None and vm.account_id != account.id:
            # AccountManagerImpl.checkAccess(caller, null, true, volume, vm): the entities must share an owner.
            message = f"Entity {vm_str(vm)} and entity {volume_str(volume)} belong to different accounts"
            raise refusal(PermissionDeniedException(message))
        return self.rt.store.insert(volume)

    def set_volume_churn(self, volume: Volume | int, churn: int) -> None:
        """How many bytes of ``volume`` change between two of its snapshots: the size of its deltas (spec §16.2).

        The simulated storage's answer to "what changed": without a setting a volume changes by an eighth of its
        size between snapshots; 0 means nothing changed, so that a XenServer take answers with the previous
        snapshot's path (the empty delta of spec §16.2).

        Raises:
            InvalidValue: no such volume, or ``churn`` is not a number of bytes between 0 and the volume's size.
        """
        volume_id = volume.id if isinstance(volume, Volume) else volume
        found = self.rt.store.first(Volume, "id = ?", (volume_id,))
        if found is None:
            raise InvalidValue("volume", volume_id, "the id of a volume")
        if not isinstance(churn, int) or isinstance(churn, bool) or not 0 <= churn <= found.size:
            raise InvalidValue("volume churn", churn, f"a number of bytes from 0 to the volume's size ({found.size})")
        with self.rt.store.atomic():
            row = self.rt.store.first(SimVolume, "volume_id = ?", (found.id,))
            if row is None:
                self.rt.store.insert(SimVolume(volume_id=found.id, churn=churn))
            else:
                self.rt.store.update(row, churn=churn)
