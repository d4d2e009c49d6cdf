"""What each workflow carries from step to step: one typed context per workflow machine (DESIGN.md layer 6).

A context holds what CloudStack keeps in its job thread's locals and objects: the request, the ids learnt so far,
the strategy chosen, the answers that decide the next step. mypy checks every step against its workflow's context;
the runner checks that a run of a machine is given that machine's context (``workflows.CONTEXTS``). A field that a
step sets for later steps is read through an accessor that names the step when it has not run yet.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Any

import attrs

from snapshotfsm.orchestration.contract import NOT_SUMMARISED, Context, unset
from snapshotfsm.strategies.base import BackupPlan, Payload, SnapshotStrategy, SnapshotTake

# --- take_snapshot ---------------------------------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class SnapshotRequest:
    """The createSnapshot call's parameters, as the API hands them to the job (spec §5.1, §5.2)."""

    volume_id: int
    policy_id: int = 0
    name: str | None = None
    location_type: str | None = None
    """As given (case and spaces kept): ``CreateSnapshotCmd.getLocationType`` parses it in each phase."""
    async_backup: bool = False
    quiescevm: bool = False
    zone_ids: tuple[int, ...] = ()
    storage_ids: tuple[int, ...] = ()
    use_storage_replication: bool = False
    tags: tuple[tuple[str, str], ...] = ()

    def cmd_info(self) -> dict[str, Any]:
        """The job's ``job_cmd_info``: the parameters by name (no ``name`` when none was given)."""
        out: dict[str, Any] = {
            "volume_id": self.volume_id,
            "policy_id": self.policy_id,
            "location_type": self.location_type,
            "async_backup": self.async_backup,
            "quiescevm": self.quiescevm,
            "zone_ids": list(self.zone_ids),
            "storage_ids": list(self.storage_ids),
            "use_storage_replication": self.use_storage_replication,
            "tags": dict(self.tags),
        }
        if self.name is not None:
            out["name"] = self.name
        return out


@attrs.define(kw_only=True, eq=False)
class TakeContext(Context):
    """The take-snapshot job (``take_snapshot``): one createSnapshot call from its create phase to its job's end."""

    request: SnapshotRequest = attrs.field(metadata=NOT_SUMMARISED)
    """Kept by the job (``job_cmd_info``), not repeated in the workflow row."""
    caller_id: int
    """The calling account of the create phase (the system account for a scheduled snapshot)."""
    user_id: int
    """The calling user (CallContext's; the system user for a scheduled snapshot)."""
    execute_account_id: int | None = None
    """The account the job runs as, when it differs from the create phase's caller (the scheduler's, spec §9.2)."""
    scheduled: bool = False
    """Dispatched by ``SnapshotSchedulerImpl`` (spec §9.2), which writes its own Scheduled event and submits the job
    itself: no ``ApiServer.processAsyncCmd``, so no Scheduled event of the API's."""
    intercepted: bool = False
    """An ``@ActionEvent`` method is running (``allocSnapshot`` in the create phase, ``takeSnapshot`` in the job):
    an exception leaving it makes ``ActionEventInterceptor`` write its ERROR event (spec §5.10)."""
    account_id: int = 0
    """The snapshot's owner (set by ``api.allocate``)."""
    vm_id: int | None = None
    work_job_id: int | None = None
    """The VmWorkTakeVolumeSnapshot work job of the attached path (spec §4.3); None on the detached path."""
    location_type: str | None = None
    zone_ids: tuple[int, ...] = ()
    pool_ids: tuple[int, ...] = ()
    api_error: tuple[int, str] | None = None
    """The API's answer to a refusal or a failure: error code and text."""
    given_back: bool = attrs.field(default=False, metadata=NOT_SUMMARISED)
    """``SnapshotManagerImpl.takeSnapshot``'s outer catch gave back the allocation's charges (``take.unwind``): read
    by the ``hardened`` profile's ``refused_take_gives_back``, which gives them back once, here or in the refusal."""
    _payload: Payload | None = attrs.field(default=None, metadata=NOT_SUMMARISED)
    _take: SnapshotTake | None = attrs.field(default=None, metadata=NOT_SUMMARISED)
    _strategy: SnapshotStrategy | None = None
    kvm_file_based: bool = False
    backup_on: bool = False
    image_store_id: int | None = None
    """The image store pre-selected for a KVM file-based snapshot (spec §5.4 step 3)."""
    primary_ref_id: int = 0
    image_ref_id: int = 0
    backup_orig_state: str = ""
    """The snapshot's state before the backup's BackupToSecondary (``backupSnapshot``'s ``origState``)."""
    backup_plan: BackupPlan | None = None
    post_process_failed: str | None = None
    pools_copied: bool = False
    data_store_role: str | None = None
    retention: RetentionContext | None = None
    copies: CopyContext | None = None

    def new_payload(self, *, location_type: str | None) -> Payload:
        """``CreateSnapshotPayload`` for this take; the detached path builds it without a location type (spec §4.3)."""
        return Payload(
            snapshot_id=self.snapshot_id,
            account_id=self.account_id,
            policy_id=self.request.policy_id,
            quiescevm=self.request.quiescevm,
            location_type=location_type,
            async_backup=self.request.async_backup,
            zone_ids=self.zone_ids,
            pool_ids=self.pool_ids,
        )

    def refusal(self) -> tuple[int, str]:
        """The API's error code and text (set by ``api.reject`` or ``jobs.fail``)."""
        if self.api_error is None:
            raise unset("take_snapshot", "api_error", "api.reject or jobs.fail")
        return self.api_error

    @property
    def attached(self) -> bool:
        """The take runs in a work job on the VM's queue (spec §4.3)."""
        return self.work_job_id is not None

    @property
    def queue_vm_id(self) -> int:
        """The VM whose queue the work job waits in (set by ``api.validate`` when the volume has a VM)."""
        if self.vm_id is None:
            raise unset("take_snapshot", "vm_id", "api.validate")
        return self.vm_id

    @property
    def work_job(self) -> int:
        """The work job's id, on the attached path."""
        if self.work_job_id is None:
            raise unset("take_snapshot", "work_job_id", "dispatch.enqueue")
        return self.work_job_id

    @property
    def payload(self) -> Payload:
        """``CreateSnapshotPayload`` (set by ``take.orchestrate`` or ``dispatch.run_direct``)."""
        if self._payload is None:
            raise unset("take_snapshot", "payload", "take.orchestrate or dispatch.run_direct")
        return self._payload

    @payload.setter
    def payload(self, value: Payload) -> None:
        self._payload = value

    @property
    def take(self) -> SnapshotTake:
        """The take as the strategies see it (set by ``take.prepare``)."""
        if self._take is None:
            raise unset("take_snapshot", "take", "take.prepare")
        return self._take

    @take.setter
    def take(self, value: SnapshotTake) -> None:
        self._take = value

    @property
    def strategy(self) -> SnapshotStrategy:
        """The TAKE strategy (set by ``take.choose_strategy``)."""
        if self._strategy is None:
            raise unset("take_snapshot", "strategy", "take.choose_strategy")
        return self._strategy

    @strategy.setter
    def strategy(self, value: SnapshotStrategy) -> None:
        self._strategy = value

    @property
    def plan(self) -> BackupPlan:
        """How the strategy backs the snapshot up (set by ``backup.choose``)."""
        if self.backup_plan is None:
            raise unset("take_snapshot", "backup_plan", "backup.choose")
        return self.backup_plan


# --- backup_task -----------------------------------------------------------------------------------------------------


@attrs.define(kw_only=True, eq=False)
class BackupTaskContext(Context):
    """``BackupSnapshotTask`` (``backup_task``): the async backup of one snapshot, with its retries (spec §7.2)."""

    account_id: int
    strategy: SnapshotStrategy
    """The TAKE strategy when backup is on (it backs up, and copies to the pool ids), the COPY strategy when the task
    only copies (spec §5.4 step 8, §7.2)."""
    payload: Payload = attrs.field(metadata=NOT_SUMMARISED)
    pool_id: int
    """The snapshot's primary pool."""
    attempts: int
    """Tries left after the current one (``backup.retry - 1`` at first, spec §7.2)."""
    zone_ids: tuple[int, ...] = ()
    pool_ids: tuple[int, ...] = ()
    copy_only: bool = False
    """Backup off: the task only copies to the pools (spec §5.4 step 8)."""
    backup_plan: BackupPlan | None = None
    image_ref_id: int = 0
    backup_orig_state: str = ""
    """The snapshot's state before this try's BackupToSecondary (``backupSnapshot``'s ``origState``)."""
    cleanup_failed: str | None = None
    copies: CopyContext | None = None
    thread: str = attrs.field(
        default=attrs.Factory(lambda self: self.try_thread(), takes_self=True), metadata={"summary": False}
    )
    """Each try runs on a pool thread of its own (spec §21.3): named after the attempts it has left."""

    def try_thread(self) -> str:
        """The thread of the try that has ``attempts`` left after it."""
        return f"BackupSnapshotTask snapshot {self.snapshot_id} attempts {self.attempts}"

    @property
    def plan(self) -> BackupPlan:
        """How the strategy backs the snapshot up (set by ``backup_task.run``)."""
        if self.backup_plan is None:
            raise unset("backup_task", "backup_plan", "backup_task.run")
        return self.backup_plan


# --- copy_snapshot ---------------------------------------------------------------------------------------------------


@attrs.define(kw_only=True, eq=False)
class ZoneTarget:
    """A zone to copy to; planned when its turn comes (``copySnapshotChainToZone``, spec §7.4)."""

    zone_id: int
    planned: bool = False
    chain: tuple[int, ...] = ()
    """The snapshots of the chain missing in the zone, oldest first."""
    size: int = 0
    dest: int | None = None
    """The destination image store."""
    incremental: bool = False
    """The snapshot's source ref has a KVM checkpoint: only it is copied, converted first (spec §7.4, §16.7)."""


@attrs.frozen
class PoolTarget:
    """A pool to copy to with the COPY strategy (``copySnapshotOnPool``, spec §7.4, §8)."""

    pool_id: int


@attrs.frozen
class Thrown:
    """What a copy threw out of CloudStack's copy loop, for the caller to see (spec §7.4)."""

    type: str
    message: str
    caught_by_zone_copies: bool
    """``copyNewSnapshotToZones`` catches it and goes on to its completed action event."""


@attrs.define(kw_only=True, eq=False)
class CopyContext(Context):
    """Copies of one snapshot to zones and pools (``copy_snapshot``, spec §7.4, §8)."""

    account_id: int
    """The snapshot's owner."""
    calling_user_id: int
    calling_account_id: int
    """CallContext's user and account (the system's, 1 and 1, in a background task)."""
    targets: list[ZoneTarget | PoolTarget] = attrs.field(factory=list)
    strategy: SnapshotStrategy | None = None
    """The strategy ``copySnapshotOnPool`` is given for the pool targets (spec §7.4, §7.2)."""
    position: int = 0
    chain_index: int = 0
    zone_ids: tuple[int, ...] = ()
    """The zones asked for (``copyNewSnapshotToZones``' completed event lists them)."""
    action_event: bool = False
    """Write ``copyNewSnapshotToZones``' completed action event at the end."""
    src: int | None = None
    """The source image store of zone copies."""
    done: list[int] = attrs.field(factory=list)
    failed_zones: list[int] = attrs.field(factory=list)
    copied_pools: list[int] = attrs.field(factory=list)
    failed_pools: list[int] = attrs.field(factory=list)
    dest_ref_id: int = 0
    pool_id: int = 0
    """The pool of the copy in progress."""
    converted: str | None = None
    """The converted file the zone copy in progress reads, on the source store (spec §16.7)."""
    thrown: Thrown | None = None

    def target(self) -> ZoneTarget | PoolTarget:
        """The target in progress."""
        return self.targets[self.position]

    def zone_target(self) -> ZoneTarget:
        """The zone target in progress."""
        target = self.targets[self.position]
        if not isinstance(target, ZoneTarget):
            raise unset("copy_snapshot", "zone target", "copies.next_target (the target is a pool)")
        return target


# --- copy_snapshot_job -----------------------------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class CopyRequest:
    """The copySnapshot call's parameters (spec §7.4)."""

    id: int
    sourcezoneid: int | None = None
    destzoneids: tuple[int, ...] = ()
    storageids: tuple[int, ...] = ()
    usestoragereplication: bool = False

    def cmd_info(self) -> dict[str, Any]:
        """The job's ``job_cmd_info``."""
        return {
            "id": self.id,
            "sourcezoneid": self.sourcezoneid,
            "destzoneids": list(self.destzoneids),
            "storageids": list(self.storageids),
            "usestoragereplication": self.usestoragereplication,
        }


@attrs.define(kw_only=True, eq=False)
class CopyJobContext(Context):
    """The copySnapshot API's job (``copy_snapshot_job``)."""

    request: CopyRequest = attrs.field(metadata=NOT_SUMMARISED)
    caller_id: int
    user_id: int
    in_manager: bool = False
    """``SnapshotManagerImpl.copySnapshot`` was entered: its ``@ActionEvent`` writes the completed event."""
    dest_zone_count: int = 0
    pool_ids: tuple[int, ...] = ()
    can_copy: bool = False
    api_error: tuple[int, str] | None = None
    copies: CopyContext | None = None


# --- delete_snapshot -------------------------------------------------------------------------------------------------


@attrs.frozen
class RefBefore:
    """A ref of the snapshot before the delete: what the counters are given back from (spec §9.4)."""

    role: str
    state: str
    physical_size: int


@attrs.define(kw_only=True, eq=False)
class DeleteContext(Context):
    """deleteSnapshot with the DELETE strategy (``delete_snapshot``, spec §9.4, §8)."""

    caller_id: int
    zone_id: int | None = None
    api: bool = False
    """Called through the API (its job and ``@ActionEvent``), not by retention or the restart."""
    strategy: SnapshotStrategy | None = None
    pre_state: str | None = None
    zones: list[int] = attrs.field(factory=list)
    refs_before: list[RefBefore] = attrs.field(factory=list)
    backed_up: bool = attrs.field(default=False, metadata=NOT_SUMMARISED)
    """The snapshot had an ``Image`` ref (any state) when the delete began: the recount then counts none of its
    primary refs (spec §19.2). Read by the ``hardened`` profile's ``storage_charged_as_recounted``."""
    account_id: int = 0
    result: bool | None = None
    """What the strategy returned (None: it threw, or never ran)."""
    resumed: bool = attrs.field(default=False, metadata=NOT_SUMMARISED)
    """A left-over delete job the restart runs again (``restart_resolves_left_over_jobs``): under the ``hardened``
    profile's ``interrupted_delete_completes`` it gives back what its first run found."""


# --- retention -------------------------------------------------------------------------------------------------------


@attrs.define(kw_only=True, eq=False)
class RetentionContext(Context):
    """Retention after a recurring snapshot (``retention``, spec §9.3)."""

    caller_id: int
    snaps: list[int]
    """The snapshots that count, oldest first."""
    most: int
    """How many may be kept."""
    deleted: list[int] = attrs.field(factory=list)
    oldest: str = ""
    """The oldest one as the action event prints it, read before its delete."""
    delete: DeleteContext | None = None


# --- storage_gc ------------------------------------------------------------------------------------------------------


@attrs.define(kw_only=True, eq=False)
class GcContext(Context):
    """One pass of the storage garbage collector's snapshot work (``storage_gc``, spec §10.5)."""

    deleted_refs: int = 0
    removed_refs: int = 0
    expunged: int = 0


class Machine(enum.StrEnum):
    """The workflow machines, by their definitions' names."""

    TAKE = "take_snapshot"
    BACKUP_TASK = "backup_task"
    COPY = "copy_snapshot"
    COPY_JOB = "copy_snapshot_job"
    DELETE = "delete_snapshot"
    RETENTION = "retention"
    GC = "storage_gc"


CONTEXTS: Mapping[str, type[Context]] = {
    Machine.TAKE: TakeContext,
    Machine.BACKUP_TASK: BackupTaskContext,
    Machine.COPY: CopyContext,
    Machine.COPY_JOB: CopyJobContext,
    Machine.DELETE: DeleteContext,
    Machine.RETENTION: RetentionContext,
    Machine.GC: GcContext,
}
"""The context each workflow machine's steps expect."""
