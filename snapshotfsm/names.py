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
    Ready: ClassVar[str]
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
    """``JobInfo.Status`` (spec §4.1)."""

    IN_PROGRESS: ClassVar[str]
    SUCCEEDED: ClassVar[str]
    FAILED: ClassVar[str]
    CANCELLED: ClassVar[str]


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
    Succeeded: ClassVar[str]
    Failed: ClassVar[str]
