"""Entities at rest: one frozen ``attrs`` record per table, named and shaped after CloudStack's (spec §11).

The schema is generated from these records (``schema.py``), so a column is written once. Records are plain values:
nothing is bound to them, and the store returns a new record for every change (``attrs.evolve``). Only the columns
the model uses are kept; the names are CloudStack's, so that a row can be compared with a CloudStack database.
"""

from __future__ import annotations

from typing import Any, ClassVar, TypeVar

import attrs

from snapshotfsm.names import JobState, RefState, SnapshotState, VolumeState, WorkState


def _flag(default: bool = False) -> Any:
    """A boolean column: SQLite hands back 0/1, the record holds a bool."""
    return attrs.field(default=default, converter=bool)


@attrs.frozen(kw_only=True)
class Record:
    """Base of every record: an integer ``id`` primary key.

    ``id`` is 0 on a record built in Python and not yet inserted: :meth:`Store.insert` returns the record with the
    id SQLite gave it (rowids start at 1), so that every stored record, and every id code passes on, is a plain
    ``int``.
    """

    table: ClassVar[str]
    indexes: ClassVar[tuple[tuple[str, ...], ...]] = ()
    unique: ClassVar[tuple[tuple[str, ...], ...]] = ()
    id: int = 0


R = TypeVar("R", bound=Record)


# --- inventory -----------------------------------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class Zone(Record):
    """A zone; ``type`` Edge turns backup to secondary off (spec §5.4 step 2)."""

    table: ClassVar[str] = "data_center"
    name: str
    uuid: str = ""
    type: str = "Core"
    allocation_state: str = "Enabled"
    backup_provider: str | None = None
    removed: str | None = None


@attrs.frozen(kw_only=True)
class Domain(Record):
    """An account domain (limits roll up here in CloudStack; the model keeps one per cloud)."""

    table: ClassVar[str] = "domain"
    name: str
    uuid: str = ""


SYSTEM_ACCOUNT_ID = 1
"""CloudStack's system account, which the scheduler, the restart cleanup and the async backup task act as."""
SYSTEM_USER_ID = 1
"""The system account's user: ``Account.ACCOUNT_ID_SYSTEM`` and ``User.UID_SYSTEM`` are both 1."""


@attrs.frozen(kw_only=True)
class Account(Record):
    """An account; ``type`` 1 is a root admin, who may act on any account's volumes."""

    table: ClassVar[str] = "account"
    unique: ClassVar[tuple[tuple[str, ...], ...]] = (("account_name",),)
    account_name: str
    uuid: str = ""
    type: int = 0
    domain_id: int = 1
    state: str = "enabled"
    removed: str | None = None


@attrs.frozen(kw_only=True)
class ResourceLimit(Record):
    """An account's limit for one resource type (``snapshot``, ``primary_storage``, ``secondary_storage``)."""

    table: ClassVar[str] = "resource_limit"
    unique: ClassVar[tuple[tuple[str, ...], ...]] = (("account_id", "type"),)
    type: str
    account_id: int
    max: int


@attrs.frozen(kw_only=True)
class ResourceCount(Record):
    """An account's current usage of one resource type (spec §5.1, §5.4 steps 12 and 14)."""

    table: ClassVar[str] = "resource_count"
    unique: ClassVar[tuple[tuple[str, ...], ...]] = (("account_id", "type"),)
    type: str
    account_id: int
    domain_id: int = 1
    count: int = 0
    tag: str | None = None


@attrs.frozen(kw_only=True)
class Cluster(Record):
    """A cluster of hosts running one hypervisor."""

    table: ClassVar[str] = "cluster"
    name: str
    data_center_id: int
    hypervisor_type: str
    supports_resign: bool = _flag()
    removed: str | None = None


@attrs.frozen(kw_only=True)
class Host(Record):
    """A hypervisor host; KVM hosts advertise a ``snapshot`` capability (spec §5.1 step 6)."""

    table: ClassVar[str] = "host"
    indexes: ClassVar[tuple[tuple[str, ...], ...]] = (("cluster_id",),)
    name: str
    data_center_id: int
    cluster_id: int
    hypervisor_type: str
    status: str = "Up"
    capabilities: str = ""
    removed: str | None = None


@attrs.frozen(kw_only=True)
class StoragePool(Record):
    """Primary storage; its ``pool_type`` and provider choose the simulated driver (DESIGN.md layer 4)."""

    table: ClassVar[str] = "storage_pool"
    indexes: ClassVar[tuple[tuple[str, ...], ...]] = (("data_center_id", "pool_type"),)
    name: str
    uuid: str = ""
    data_center_id: int
    cluster_id: int | None = None
    pool_type: str
    storage_provider_name: str = "DefaultPrimary"
    is_managed: bool = _flag()
    scope: str = "CLUSTER"
    hypervisor: str | None = None
    status: str = "Up"
    capacity_bytes: int = 0
    used_bytes: int = 0
    removed: str | None = None


@attrs.frozen(kw_only=True)
class StoragePoolDetail(Record):
    """A named pool detail; capabilities a pool advertises beyond its driver's defaults live here."""

    table: ClassVar[str] = "storage_pool_details"
    unique: ClassVar[tuple[tuple[str, ...], ...]] = (("pool_id", "name"),)
    pool_id: int
    name: str
    value: str


@attrs.frozen(kw_only=True)
class ImageStore(Record):
    """Secondary storage of a zone (role Image)."""

    table: ClassVar[str] = "image_store"
    indexes: ClassVar[tuple[tuple[str, ...], ...]] = (("data_center_id",),)
    name: str
    data_center_id: int
    role: str = "Image"
    protocol: str = "nfs"
    total_size: int = 0
    used_bytes: int = 0
    readonly: bool = _flag()
    removed: str | None = None


@attrs.frozen(kw_only=True)
class Template(Record):
    """A template; volumes of ``SYSTEM`` templates may not be snapshotted (spec §5.1 step 1)."""

    table: ClassVar[str] = "vm_template"
    name: str
    type: str = "USER"


@attrs.frozen(kw_only=True)
class VmInstance(Record):
    """A virtual machine; only whether a volume's VM exists decides the queued path (spec §4.3)."""

    table: ClassVar[str] = "vm_instance"
    name: str
    host_name: str = ""
    uuid: str = ""
    state: str = "Running"
    hypervisor_type: str = "KVM"
    type: str = "User"
    user_vm_type: str | None = None
    account_id: int
    data_center_id: int
    host_id: int | None = None
    last_host_id: int | None = None
    backup_offering_id: int | None = None
    removed: str | None = None


@attrs.frozen(kw_only=True)
class VmSnapshot(Record):
    """A VM snapshot; its type and state decide some strategy and hypervisor checks (spec §5.1, §6.2)."""

    table: ClassVar[str] = "vm_snapshots"
    indexes: ClassVar[tuple[tuple[str, ...], ...]] = (("vm_id",),)
    vm_id: int
    name: str = ""
    type: str = "Disk"
    state: str = "Ready"
    kvm_file_based: bool = _flag()
    removed: str | None = None


@attrs.frozen(kw_only=True)
class Volume(Record):
    """A volume; ``state`` is driven by the volume machine (spec §2) with compare-and-swap on ``update_count``."""

    table: ClassVar[str] = "volumes"
    indexes: ClassVar[tuple[tuple[str, ...], ...]] = (("instance_id",), ("pool_id",), ("account_id",))
    name: str
    uuid: str = ""
    account_id: int
    domain_id: int = 1
    data_center_id: int
    pool_id: int | None = None
    last_pool_id: int | None = None
    instance_id: int | None = None
    template_id: int | None = None
    volume_type: str = "DATADISK"
    size: int
    format: str = "QCOW2"
    path: str = ""
    state: str = VolumeState.Ready
    update_count: int = 0
    updated: str | None = None
    encrypt_format: str | None = None
    created: str | None = None
    removed: str | None = None


@attrs.frozen(kw_only=True)
class VolumeDetail(Record):
    """A volume detail; ``SNAPSHOT_ID`` marks a volume created from a snapshot (spec §9.4)."""

    table: ClassVar[str] = "volume_details"
    indexes: ClassVar[tuple[tuple[str, ...], ...]] = (("volume_id",), ("name", "value"))
    volume_id: int
    name: str
    value: str


# --- snapshots -----------------------------------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class Snapshot(Record):
    """``snapshots``: no ``update_count``; ``SnapshotDaoImpl.updateState`` writes without compare-and-swap (§11)."""

    table: ClassVar[str] = "snapshots"
    indexes: ClassVar[tuple[tuple[str, ...], ...]] = (
        ("volume_id", "snapshot_type"),
        ("status", "volume_id"),
        ("account_id",),
    )
    uuid: str = ""
    data_center_id: int
    account_id: int
    domain_id: int = 1
    volume_id: int
    disk_offering_id: int | None = None
    name: str
    status: str = SnapshotState.Allocated
    snapshot_type: int = 0
    type_description: str = "MANUAL"
    size: int = 0
    location_type: str | None = None
    hypervisor_type: str = ""
    version: str = "2.2"
    created: str | None = None
    removed: str | None = None


@attrs.frozen(kw_only=True)
class SnapshotStoreRef(Record):
    """``snapshot_store_ref``: a snapshot's copy on one store; compare-and-swap on ``update_count`` (§3, §11)."""

    table: ClassVar[str] = "snapshot_store_ref"
    indexes: ClassVar[tuple[tuple[str, ...], ...]] = (
        ("snapshot_id", "store_role"),
        ("parent_snapshot_id", "store_role", "store_id"),
        ("state", "snapshot_id"),
        ("volume_id", "store_role"),
    )
    store_id: int
    store_role: str
    snapshot_id: int
    volume_id: int | None = None
    state: str = RefState.Allocated
    update_count: int = 0
    updated: str | None = None
    created: str | None = None
    last_updated: str | None = None
    size: int = 0
    physical_size: int = 0
    parent_snapshot_id: int = 0
    end_of_chain: bool = _flag()
    job_id: str | None = None
    install_path: str | None = None
    kvm_checkpoint_path: str | None = None
    download_url: str | None = None
    error_str: str | None = None
    display: bool = _flag(default=True)
    ref_cnt: int = 0


@attrs.frozen(kw_only=True)
class SnapshotDetail(Record):
    """A ``snapshot_details`` row; the keys are listed in spec §7.5."""

    table: ClassVar[str] = "snapshot_details"
    indexes: ClassVar[tuple[tuple[str, ...], ...]] = (("snapshot_id", "name"), ("name", "value"))
    snapshot_id: int
    name: str
    value: str
    display: bool = _flag(default=True)


@attrs.frozen(kw_only=True)
class SnapshotZoneRef(Record):
    """Which zones hold a snapshot (spec §5.4 step 9, §7.4)."""

    table: ClassVar[str] = "snapshot_zone_ref"
    indexes: ClassVar[tuple[tuple[str, ...], ...]] = (("snapshot_id", "zone_id"), ("zone_id",))
    zone_id: int
    snapshot_id: int
    created: str | None = None
    last_updated: str | None = None
    removed: str | None = None


@attrs.frozen(kw_only=True)
class SnapshotPolicy(Record):
    """A recurring-snapshot policy: one per (volume, interval) (spec §9.1)."""

    table: ClassVar[str] = "snapshot_policy"
    indexes: ClassVar[tuple[tuple[str, ...], ...]] = (("volume_id", "interval"),)
    uuid: str = ""
    volume_id: int
    schedule: str
    timezone: str = "UTC"
    interval: int
    max_snaps: int
    active: bool = _flag(default=True)
    account_id: int
    domain_id: int = 1
    display: bool = _flag(default=True)


@attrs.frozen(kw_only=True)
class SnapshotPolicyDetail(Record):
    """Zone and pool ids a policy copies its snapshots to (names ``zoneid`` and ``storageid``, spec §7.5)."""

    table: ClassVar[str] = "snapshot_policy_details"
    indexes: ClassVar[tuple[tuple[str, ...], ...]] = (("policy_id",),)
    policy_id: int
    name: str
    value: str


@attrs.frozen(kw_only=True)
class SnapshotSchedule(Record):
    """The next run of a policy and the job that ran it (spec §9.2)."""

    table: ClassVar[str] = "snapshot_schedule"
    indexes: ClassVar[tuple[tuple[str, ...], ...]] = (("policy_id",), ("async_job_id", "scheduled_timestamp"))
    uuid: str = ""
    volume_id: int
    policy_id: int
    scheduled_timestamp: str
    async_job_id: int | None = None
    snapshot_id: int | None = None


# --- jobs ----------------------------------------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class AsyncJob(Record):
    """``async_job``: ``job_status`` holds the ordinal of JobInfo.Status (spec §4.1)."""

    table: ClassVar[str] = "async_job"
    indexes: ClassVar[tuple[tuple[str, ...], ...]] = (
        ("job_status", "job_executing_msid"),
        ("job_status", "job_init_msid", "job_cmd", "removed"),
        ("instance_type", "instance_id"),
        ("job_init_msid", "job_dispatcher"),
        ("job_executing_msid",),
    )
    uuid: str = ""
    job_dispatcher: str = "ApiAsyncJobDispatcher"
    user_id: int = 1
    account_id: int
    job_cmd: str
    job_cmd_info: str = "{}"
    job_status: int = JobState.ordinal(JobState.IN_PROGRESS)
    job_process_status: int = 0
    job_result_code: int = 0
    job_result: str | None = None
    instance_type: str | None = None
    instance_id: int | None = None
    related: str = ""
    job_init_msid: int | None = None
    job_executing_msid: int | None = None
    job_complete_msid: int | None = None
    created: str | None = None
    last_updated: str | None = None
    removed: str | None = None


@attrs.frozen(kw_only=True)
class VmWorkJob(Record):
    """``vm_work_job``: the id is the work job's ``async_job`` id; ``state`` (ours) is its place in the VM's queue."""

    table: ClassVar[str] = "vm_work_job"
    indexes: ClassVar[tuple[tuple[str, ...], ...]] = (("state", "vm_instance_id"),)
    step: str = "Starting"
    vm_type: str = "Instance"
    vm_instance_id: int
    secondary_object: int | None = None
    state: str = WorkState.Queued


@attrs.frozen(kw_only=True)
class OpLock(Record):
    """``op_lock``: a row lock of ``acquireInLockTable``/``lockInLockTable`` (``snapshots<id>``, ``vm_instance<id>``).

    ``ms_id`` is CloudStack's ``mac`` (the server), ``owner`` its ``thread``: the thread that holds it (spec §21.1).
    """

    table: ClassVar[str] = "op_lock"
    indexes: ClassVar[tuple[tuple[str, ...], ...]] = (("ms_id", "owner"),)
    unique: ClassVar[tuple[tuple[str, ...], ...]] = (("key",),)
    key: str
    ms_id: int
    owner: str = ""
    acquired_on: str | None = None


@attrs.frozen(kw_only=True)
class NamedLock(Record):
    """A ``GlobalLock`` (MySQL ``GET_LOCK``; this table is ours), not an ``op_lock`` row (spec §21.1, §21.7 on §11).

    ``snapshot.poll``, ``storagemgr.cleanup``, ``createSnapshotPolicy_<volumeId>``: held by a server's database
    session, which a crash ends.
    """

    table: ClassVar[str] = "named_lock"
    unique: ClassVar[tuple[tuple[str, ...], ...]] = (("name",),)
    name: str
    ms_id: int
    owner: str = ""
    acquired_on: str | None = None


@attrs.frozen(kw_only=True)
class ManagementServer(Record):
    """A management server sharing the database; ``state`` Down after a crash until it restarts (spec §10)."""

    table: ClassVar[str] = "mshost"
    unique: ClassVar[tuple[tuple[str, ...], ...]] = (("msid",),)
    msid: int
    name: str = ""
    state: str = "Up"
    last_update: str | None = None


# --- accounting ----------------------------------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class UsageEvent(Record):
    """A ``usage_event`` row (spec §5.10)."""

    table: ClassVar[str] = "usage_event"
    indexes: ClassVar[tuple[tuple[str, ...], ...]] = (("resource_id", "type"),)
    type: str
    created: str | None = None
    account_id: int
    zone_id: int
    resource_id: int
    resource_name: str | None = None
    """NULL for SNAPSHOT.COPY (spec §7.4)."""
    offering_id: int | None = None
    template_id: int | None = None
    size: int | None = None
    resource_type: str | None = None
    processed: bool = _flag()
    virtual_size: int | None = None
    vm_id: int | None = None


@attrs.frozen(kw_only=True)
class ActionEvent(Record):
    """An ``event`` row: the action events of ``@ActionEvent`` methods (spec §5.10)."""

    table: ClassVar[str] = "event"
    type: str
    state: str = "Completed"
    description: str = ""
    level: str = "INFO"
    user_id: int = 1
    account_id: int
    resource_id: int | None = None
    created: str | None = None


@attrs.frozen(kw_only=True)
class Alert(Record):
    """An ``alert`` row, e.g. ALERT_TYPE_UPDATE_RESOURCE_COUNT when a recurring snapshot hits a limit (spec §5.1)."""

    table: ClassVar[str] = "alert"
    type: str
    subject: str
    data_center_id: int | None = None
    created: str | None = None


@attrs.frozen(kw_only=True)
class ResourceTag(Record):
    """A ``resource_tags`` row: the tags of createSnapshot are put on the new snapshot (spec §5.2)."""

    table: ClassVar[str] = "resource_tags"
    indexes: ClassVar[tuple[tuple[str, ...], ...]] = (("resource_type", "resource_id"),)
    uuid: str = ""
    key: str
    value: str
    resource_id: int
    resource_uuid: str = ""
    resource_type: str
    account_id: int
    domain_id: int = 1


@attrs.frozen(kw_only=True)
class Configuration(Record):
    """A config value at one scope (spec §7.1); a key without a row has its default."""

    table: ClassVar[str] = "configuration"
    unique: ClassVar[tuple[tuple[str, ...], ...]] = (("name", "scope", "scope_id"),)
    name: str
    scope: str = "Global"
    scope_id: int = 0
    value: str


# --- ours ----------------------------------------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class TransitionLog(Record):
    """One transition, as the durable primitive wrote it; ``seq`` orders the whole run without gaps.

    ``kind`` is ``event`` for a transition of the machine, ``direct`` for one of CloudStack's writes that bypass it
    (spec §1.2 notes, §3), where ``event`` names the CloudStack method. ``source`` is the state the caller's record
    held; ``overwrote`` the state the row really held when that differed: an event can do that only on ``snapshots``,
    which has no compare-and-swap (spec §11), a direct write on any table.
    """

    table: ClassVar[str] = "transition_log"
    indexes: ClassVar[tuple[tuple[str, ...], ...]] = (("machine", "entity_id"), ("job_id",))
    machine: str
    entity_id: int
    source: str
    event: str
    dest: str
    kind: str = "event"
    job_id: int | None = None
    ms_id: int
    at_ms: int
    overwrote: str | None = None

    @property
    def seq(self) -> int:
        """The position of this transition in the run (the row id)."""
        return self.id


@attrs.frozen(kw_only=True)
class Workflow(Record):
    """A running workflow (a take, a backup task, a delete, a copy): its machine and step, and what it acts on."""

    table: ClassVar[str] = "workflow"
    indexes: ClassVar[tuple[tuple[str, ...], ...]] = (("job_id",), ("state",), ("snapshot_id",))
    machine: str
    state: str
    update_count: int = 0
    job_id: int | None = None
    snapshot_id: int | None = None
    volume_id: int | None = None
    ms_id: int
    context: str = "{}"
    created: str | None = None
    updated: str | None = None


@attrs.frozen(kw_only=True)
class Failure(Record):
    """A step that raised: the error, where it happened, and the error transition it led to (style.md item 10)."""

    table: ClassVar[str] = "failure"
    indexes: ClassVar[tuple[tuple[str, ...], ...]] = (("workflow_id",), ("job_id",))
    workflow_id: int
    job_id: int | None = None
    machine: str
    state: str
    event: str
    step: str
    error_event: str
    exc_type: str
    message: str
    at_ms: int


@attrs.frozen(kw_only=True)
class StorageObject(Record):
    """An object on simulated storage (ours): what a driver holds, so that invariants can compare it with the rows.

    Storage is not a management server's memory: these rows survive a crash. ``store_kind`` is ``primary`` (a
    storage pool) or ``image`` (an image store); ``snapshot_id`` links a snapshot object to its ``snapshots`` row.
    ``kind`` is ``snapshot`` (a full file), ``delta`` (readable through ``parent_path``), or what goes with a KVM
    incremental snapshot (spec §16.4, §16.7): its ``checkpoint`` file, the dirty ``bitmap`` kept in its volume, and
    the ``converted`` file of a zone copy; StorPool marks its snapshots under recovery ``recovering``.
    """

    table: ClassVar[str] = "sim_object"
    indexes: ClassVar[tuple[tuple[str, ...], ...]] = (
        ("store_kind", "store_id", "path"),
        ("snapshot_id",),
        ("volume_id",),
    )
    store_kind: str
    store_id: int
    path: str
    kind: str = "snapshot"
    size: int = 0
    physical_size: int = 0
    snapshot_id: int | None = None
    volume_id: int | None = None
    source_path: str | None = None
    parent_path: str | None = None
    """A delta's parent on the same store: the delta is readable only while that object is there (spec §16.2)."""
    exported_to: str | None = None
    created_ms: int = 0
    deleted_ms: int | None = None


@attrs.frozen(kw_only=True)
class SimVolume(Record):
    """How much of a volume changes between two of its snapshots (ours): the size of a delta (spec §16.2, §16.4).

    A volume without a row changes by :data:`DEFAULT_CHURN_FRACTION` of its size; 0 means nothing changed, so a
    XenServer host answers a take with the previous snapshot's path (the empty delta).
    """

    table: ClassVar[str] = "sim_volume"
    unique: ClassVar[tuple[tuple[str, ...], ...]] = (("volume_id",),)
    volume_id: int
    churn: int


DEFAULT_CHURN_FRACTION = 8
"""A volume with no ``sim_volume`` row changes by 1/8 of its size between two snapshots."""


ALL_RECORDS: tuple[type[Record], ...] = (
    Zone,
    Domain,
    Account,
    ResourceLimit,
    ResourceCount,
    Cluster,
    Host,
    StoragePool,
    StoragePoolDetail,
    ImageStore,
    Template,
    VmInstance,
    VmSnapshot,
    Volume,
    VolumeDetail,
    Snapshot,
    SnapshotStoreRef,
    SnapshotDetail,
    SnapshotZoneRef,
    SnapshotPolicy,
    SnapshotPolicyDetail,
    SnapshotSchedule,
    AsyncJob,
    VmWorkJob,
    OpLock,
    NamedLock,
    ManagementServer,
    UsageEvent,
    ActionEvent,
    Alert,
    ResourceTag,
    Configuration,
    TransitionLog,
    Workflow,
    Failure,
    StorageObject,
    SimVolume,
)
