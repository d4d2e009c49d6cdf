"""The state and event names code uses, each checked against ``states/*.toml`` when this module is imported.

A class lists names as annotations only; defining it checks every name against the machine's definition and
fills in the value, so a misspelt name fails at import with the file, the machine and a did-you-mean, never deep
inside a job (style.md, "Names come from the definitions").
"""

from __future__ import annotations

from typing import ClassVar

from snapshotfsm.definitions import project_definitions


class MachineNames:
    """Base: ``class X(MachineNames, machine="snapshot", kind="event")`` with ``Name: ClassVar[str]`` lines."""

    def __init_subclass__(cls, *, machine: str, kind: str) -> None:
        definition = project_definitions()[machine]
        check = definition.event if kind == "event" else definition.state
        for name in cls.__annotations__:
            setattr(cls, name, check(name))


class SnapshotState(MachineNames, machine="snapshot", kind="state"):
    """``snapshots.status`` (spec §1.1)."""

    Allocated: ClassVar[str]
    Creating: ClassVar[str]
    CreatedOnPrimary: ClassVar[str]
    BackingUp: ClassVar[str]
    BackedUp: ClassVar[str]
    Destroying: ClassVar[str]
    Destroyed: ClassVar[str]
    Hidden: ClassVar[str]
    Error: ClassVar[str]


class SnapshotEvent(MachineNames, machine="snapshot", kind="event"):
    """``Snapshot.Event`` (spec §1.1)."""

    CreateRequested: ClassVar[str]
    OperationNotPerformed: ClassVar[str]
    BackupToSecondary: ClassVar[str]
    DestroyRequested: ClassVar[str]
    OperationSucceeded: ClassVar[str]
    OperationFailed: ClassVar[str]


class VolumeState(MachineNames, machine="volume", kind="state"):
    """``volumes.state`` (spec §2.1)."""

    Ready: ClassVar[str]
    Snapshotting: ClassVar[str]
    Expunged: ClassVar[str]


class VolumeEvent(MachineNames, machine="volume", kind="event"):
    """``Volume.Event`` (spec §2.2)."""

    SnapshotRequested: ClassVar[str]
    OperationSucceeded: ClassVar[str]
    OperationFailed: ClassVar[str]


class RefState(MachineNames, machine="snapshot_store_ref", kind="state"):
    """``snapshot_store_ref.state`` (spec §3)."""

    Allocated: ClassVar[str]
    Creating: ClassVar[str]
    Created: ClassVar[str]
    Ready: ClassVar[str]
    Copying: ClassVar[str]
    Destroying: ClassVar[str]
    Destroyed: ClassVar[str]
    Hidden: ClassVar[str]


class RefEvent(MachineNames, machine="snapshot_store_ref", kind="event"):
    """``ObjectInDataStoreStateMachine.Event`` (spec §3)."""

    CreateOnlyRequested: ClassVar[str]
    CopyRequested: ClassVar[str]
    DestroyRequested: ClassVar[str]
    OperationSucceeded: ClassVar[str]
    OperationFailed: ClassVar[str]


class JobState(MachineNames, machine="async_job", kind="state"):
    """``JobInfo.Status`` (spec §4.1); ``async_job.job_status`` stores the :meth:`ordinal` of one, not its name."""

    IN_PROGRESS: ClassVar[str]
    SUCCEEDED: ClassVar[str]
    FAILED: ClassVar[str]
    CANCELLED: ClassVar[str]

    @staticmethod
    def ordinal(name: str) -> int:
        """The integer ``async_job.job_status`` holds for state ``name``, from ``states/async_job.toml``.

        For SQL on the column: ``"job_status = ?", (JobState.ordinal(JobState.FAILED),)``; ``Store.state_of`` turns
        a stored ordinal back into the name.

        Raises:
            DefinitionError: ``name`` is not a state of ``async_job``.
        """
        ordinal = project_definitions()["async_job"].state_def(name).ordinal
        assert ordinal is not None  # the loader gives every state of a machine an ordinal, or none
        return ordinal


class JobEvent(MachineNames, machine="async_job", kind="event"):
    """Our names for ``completeAsyncJob``'s outcomes (states/async_job.toml)."""

    CompleteSucceeded: ClassVar[str]
    CompleteFailed: ClassVar[str]
    CompleteCancelled: ClassVar[str]


class WorkState(MachineNames, machine="vm_work_job", kind="state"):
    """A work job's place in the VM's queue (states/vm_work_job.toml)."""

    Queued: ClassVar[str]
    Running: ClassVar[str]
    Done: ClassVar[str]
    Failed: ClassVar[str]


class WorkEvent(MachineNames, machine="vm_work_job", kind="event"):
    """Moves through the VM's queue (states/vm_work_job.toml)."""

    Dispatch: ClassVar[str]
    Complete: ClassVar[str]
    Fail: ClassVar[str]
    Cancel: ClassVar[str]


class Take(MachineNames, machine="take_snapshot", kind="event"):
    """Events of the take-snapshot job (states/take_snapshot.toml)."""

    Allocate: ClassVar[str]
    Submit: ClassVar[str]
    Execute: ClassVar[str]
    Enqueue: ClassVar[str]
    RunDirect: ClassVar[str]
    Dispatch: ClassVar[str]
    Orchestrate: ClassVar[str]
    Prepare: ClassVar[str]
    ChooseStrategy: ClassVar[str]
    BeginTake: ClassVar[str]
    RequestPrimary: ClassVar[str]
    PrimaryAnswered: ClassVar[str]
    BackUp: ClassVar[str]
    Copy: ClassVar[str]
    BackUpLater: ClassVar[str]
    BackUpDirectly: ClassVar[str]
    MarkBackedUp: ClassVar[str]
    SkipBackup: ClassVar[str]
    BackupAnswered: ClassVar[str]
    PostProcess: ClassVar[str]
    Retained: ClassVar[str]
    CopyToZones: ClassVar[str]
    CopyToPools: ClassVar[str]
    ZonesCopied: ClassVar[str]
    PoolsCopied: ClassVar[str]
    CompleteWork: ClassVar[str]
    Complete: ClassVar[str]
    Abandon: ClassVar[str]
    Unwind: ClassVar[str]
    FailWork: ClassVar[str]
    Fail: ClassVar[str]


class TakeState(MachineNames, machine="take_snapshot", kind="state"):
    """States of the take-snapshot job (states/take_snapshot.toml)."""

    Requested: ClassVar[str]
    Rejected: ClassVar[str]
    AwaitingPrimary: ClassVar[str]
    Succeeded: ClassVar[str]
    Failed: ClassVar[str]


class Task(MachineNames, machine="backup_task", kind="event"):
    """Events of the async backup task (states/backup_task.toml)."""

    Run: ClassVar[str]
    Backup: ClassVar[str]
    MarkBackedUp: ClassVar[str]
    CopyOnPools: ClassVar[str]
    CopyAnswered: ClassVar[str]
    CopyToZones: ClassVar[str]
    ZoneCopiesDone: ClassVar[str]
    PoolCopiesDone: ClassVar[str]
    Finish: ClassVar[str]
    Retry: ClassVar[str]
    CleanUp: ClassVar[str]


class Copy(MachineNames, machine="copy_snapshot", kind="event"):
    """Events of the copy workflow (states/copy_snapshot.toml)."""

    CopyToZone: ClassVar[str]
    ZoneAnswered: ClassVar[str]
    ZoneFailed: ClassVar[str]
    CopyToPool: ClassVar[str]
    PoolFailed: ClassVar[str]
    Finish: ClassVar[str]


class CopyJob(MachineNames, machine="copy_snapshot_job", kind="event"):
    """Events of the copySnapshot job (states/copy_snapshot_job.toml)."""

    Start: ClassVar[str]
    Copied: ClassVar[str]
    Fail: ClassVar[str]


class Delete(MachineNames, machine="delete_snapshot", kind="event"):
    """Events of the delete workflow (states/delete_snapshot.toml)."""

    Start: ClassVar[str]
    DriverAnswered: ClassVar[str]
    Finish: ClassVar[str]
    GiveUp: ClassVar[str]
    Fail: ClassVar[str]


class Retention(MachineNames, machine="retention", kind="event"):
    """Events of retention (states/retention.toml)."""

    DeleteOldest: ClassVar[str]
    Deleted: ClassVar[str]
    Finish: ClassVar[str]


class Gc(MachineNames, machine="storage_gc", kind="event"):
    """Events of the storage GC (states/storage_gc.toml)."""

    Start: ClassVar[str]
    DriverAnswered: ClassVar[str]
    Finish: ClassVar[str]
