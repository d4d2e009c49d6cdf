"""CloudStack's tables as the spec writes them, transcribed from ``spec/cloudstack-snapshots.md``, as test data.

CI runs on a clean clone without the spec, so the expected tables live here, in the spec's own notation, to be diffed
against the spec by eye; ``test_spec_tables.py`` parses them and compares them with ``states/*.toml``. They are
transcribed from the spec text, not generated from the definitions: a definition that drifts from CloudStack fails.

Markup kept as the spec has it: backticks around enum lists, ``**bold**`` in the volume table, the ``(T)``/``(F)``
transitional flag after each volume state and the ``(U)`` usage flag after a volume row.
"""

# ruff: noqa: E501 - the spec's lines are kept verbatim, so that they diff against it line for line

from __future__ import annotations

# --- spec §1.1: Snapshot.State and Snapshot.Event (api/.../com/cloud/storage/Snapshot.java) ----------------------

SNAPSHOT_STATES = """
`Allocated, Creating, CreatedOnPrimary, BackingUp, BackedUp, Copying, Destroying, Destroyed,
Hidden, Error`
"""

SNAPSHOT_EVENTS = """
`CreateRequested, OperationNotPerformed, BackupToSecondary, BackedupToSecondary, DestroyRequested,
CopyingRequested, OperationSucceeded, OperationFailed`
"""

# --- spec §1.2: SnapshotStateMachineManagerImpl, 18 entries, in registration order --------------------------------

SNAPSHOT_TRANSITIONS = """
| # | from | event | to |
|---|------|-------|----|
| 1 | Allocated | CreateRequested | Creating |
| 2 | Creating | OperationSucceeded | CreatedOnPrimary |
| 3 | Creating | OperationNotPerformed | BackedUp |
| 4 | Creating | OperationFailed | Error |
| 5 | CreatedOnPrimary | BackupToSecondary | BackingUp |
| 6 | CreatedOnPrimary | OperationNotPerformed | BackedUp |
| 7 | BackingUp | OperationSucceeded | BackedUp |
| 8 | BackingUp | OperationFailed | Error |
| 9 | BackingUp | OperationNotPerformed | BackedUp |
| 10 | BackedUp | DestroyRequested | Destroying |
| 11 | BackedUp | CopyingRequested | Copying |
| 12 | BackedUp | BackupToSecondary | BackingUp |
| 13 | Copying | OperationSucceeded | BackedUp |
| 14 | Copying | OperationFailed | BackedUp |
| 15 | Destroying | OperationSucceeded | Destroyed |
| 16 | Destroying | OperationFailed | BackedUp |
| 17 | Destroying | DestroyRequested | Destroying |
| 18 | BackingUp | BackupToSecondary | BackingUp |
"""

# --- spec §2.1: Volume.State, with CloudStack's transitional flag (T/F) ------------------------------------------

VOLUME_STATES = """
Allocated(F), Creating(T), Ready(F), Migrating(T), Snapshotting(T), RevertSnapshotting(T), Resizing(T), Expunging(T),
Expunged(F), Destroy(F), Destroying(F), UploadOp(T), Copying(T), Uploaded(F), NotUploaded(T), UploadInProgress(T),
UploadError(F), UploadAbandoned(F), Attaching(T), Restoring(T), Consolidating(T), RestoreError(F).
"""

# --- spec §2.2: Volume.Event -----------------------------------------------------------------------------------

VOLUME_EVENTS = """
CreateRequested, CopyRequested, CopySucceeded, CopyFailed, OperationFailed, OperationSucceeded, OperationRetry,
UploadRequested, MigrationRequested, MigrationCopyRequested, MigrationCopySucceeded, MigrationCopyFailed,
SnapshotRequested, RevertSnapshotRequested, DestroyRequested, RecoverRequested, ExpungingRequested, ResizeRequested,
AttachRequested, OperationTimeout, RestoreRequested, RestoreSucceeded, RestoreFailed, ConsolidationRequested.
"""

# --- spec §2.3: Volume.State's static block (s_fsm), 67 entries, in registration order; (U) = USAGE impact flag ---

VOLUME_TRANSITIONS = """
1 Allocated-CreateRequested→Creating; 2 Allocated-DestroyRequested→Destroy; 3 Allocated-OperationFailed→Allocated;
4 Allocated-OperationSucceeded→Allocated; 5 Creating-OperationRetry→Creating; 6 Creating-OperationFailed→Allocated;
7 Creating-OperationSucceeded→Ready; 8 Creating-DestroyRequested→Destroy; 9 Creating-CreateRequested→Creating;
10 Ready-CreateRequested→Creating; 11 Ready-ResizeRequested→Resizing; 12 Resizing-OperationSucceeded→Ready (U);
13 Resizing-OperationFailed→Ready; 14 Allocated-UploadRequested→UploadOp; 15 Uploaded-CopyRequested→Copying;
16 **Ready-OperationSucceeded→Ready**; 17 **Ready-OperationFailed→Ready**; 18 Copying-OperationSucceeded→Ready (U);
19 Copying-OperationFailed→Uploaded; 20 UploadOp-DestroyRequested→Destroy; 21 Ready-DestroyRequested→Destroy;
22 Destroy-ExpungingRequested→Expunging; 23 Expunging-ExpungingRequested→Expunging; 24 Expunging-OperationSucceeded→Expunged;
25 Expunging-OperationFailed→Destroy; **26 Ready-SnapshotRequested→Snapshotting; 27 Snapshotting-OperationSucceeded→Ready;
28 Snapshotting-OperationFailed→Ready; 29 Ready-RevertSnapshotRequested→RevertSnapshotting;
30 RevertSnapshotting-OperationSucceeded→Ready; 31 RevertSnapshotting-OperationFailed→Ready**;
32 Allocated-MigrationCopyRequested→Creating; 33 Creating-MigrationCopyFailed→Allocated; 34 Creating-MigrationCopySucceeded→Ready (U);
35 Ready-MigrationRequested→Migrating; 36 Migrating-OperationSucceeded→Ready; 37 Migrating-OperationFailed→Ready;
38 Destroy-OperationSucceeded→Destroy (U); 39 Destroy-OperationFailed→Destroy (U); 40 UploadOp-OperationSucceeded→Uploaded;
41 UploadOp-OperationFailed→Allocated; 42 Uploaded-DestroyRequested→Destroy; 43 Expunged-ExpungingRequested→Expunged;
44 Expunged-OperationSucceeded→Expunged; 45 Expunged-OperationFailed→Expunged; 46 NotUploaded-OperationTimeout→UploadAbandoned;
47 NotUploaded-UploadRequested→UploadInProgress; 48 NotUploaded-OperationSucceeded→Uploaded; 49 NotUploaded-OperationFailed→UploadError;
50 UploadInProgress-OperationSucceeded→Uploaded; 51 UploadInProgress-OperationFailed→UploadError;
52 UploadInProgress-OperationTimeout→UploadError; 53 UploadError-DestroyRequested→Destroy; 54 UploadAbandoned-DestroyRequested→Destroy;
55 Ready-AttachRequested→Attaching; 56 Attaching-OperationSucceeded→Ready; 57 Attaching-OperationFailed→Ready;
58 Destroy-RecoverRequested→Ready; 59 Ready-RestoreRequested→Restoring; 60 Expunged-RestoreRequested→Restoring;
61 Destroy-RestoreRequested→Restoring; 62 Restoring-RestoreSucceeded→Ready; 63 Restoring-RestoreFailed→Ready;
64 Ready-ConsolidationRequested→Consolidating; 65 Consolidating-OperationSucceeded→Ready; 66 Consolidating-OperationFailed→RestoreError;
67 RestoreError-RestoreFailed→RestoreError.
"""

# --- spec §3: ObjectInDataStoreStateMachine (enums) and ObjectInDataStoreManagerImpl (26 entries, in order) --------

SNAPSHOT_STORE_REF_STATES = """
`Allocated, Creating2, Creating, Created, Ready, Copying, Migrating, Migrated, Destroying, Destroyed, Failed, Hidden`
"""

SNAPSHOT_STORE_REF_EVENTS = """
`CreateRequested, CreateOnlyRequested, DestroyRequested, OperationSucceeded, OperationFailed, CopyRequested,
CopyingRequested, MigrationRequested, MigrationSucceeded, MigrationFailed, MigrationCopyRequested, MigrationCopySucceeded,
MigrationCopyFailed, ResizeRequested, ExpungeRequested, MigrateDataRequested`
"""

SNAPSHOT_STORE_REF_TRANSITIONS = """
| # | from | event | to |
|---|------|-------|----|
| 1 | Allocated | CreateOnlyRequested | Creating |
| 2 | Allocated | DestroyRequested | Destroying |
| 3 | Allocated | OperationFailed | Failed |
| 4 | Allocated | OperationSucceeded | Ready |
| 5 | Creating | OperationFailed | Allocated |
| 6 | Creating | OperationSucceeded | Ready |
| 7 | Ready | CopyingRequested | Copying |
| 8 | Copying | OperationSucceeded | Ready |
| 9 | Copying | OperationFailed | Ready |
| 10 | Ready | DestroyRequested | Destroying |
| 11 | Destroying | DestroyRequested | Destroying |
| 12 | Destroying | OperationSucceeded | Destroyed |
| 13 | Destroying | OperationFailed | Destroying |
| 14 | Destroyed | DestroyRequested | Destroyed |
| 15 | Destroyed | OperationSucceeded | Destroyed |
| 16 | Destroyed | OperationFailed | Destroyed |
| 17 | Failed | DestroyRequested | Destroying |
| 18 | Ready | OperationSucceeded | Ready |
| 19 | Ready | MigrateDataRequested | Migrating |
| 20 | Ready | CopyRequested | Copying |
| 21 | Allocated | MigrateDataRequested | Migrating |
| 22 | Migrating | MigrationFailed | Failed |
| 23 | Migrating | MigrationSucceeded | Destroyed |
| 24 | Migrating | OperationSucceeded | Ready |
| 25 | Migrating | OperationFailed | Ready |
| 26 | Hidden | DestroyRequested | Destroying |
"""

# --- spec §4.1: JobInfo.Status, stored in async_job.job_status as an ordinal -------------------------------------

ASYNC_JOB_STATUS = """
IN_PROGRESS=0, SUCCEEDED=1, FAILED=2, CANCELLED=3
"""
ASYNC_JOB_NOT_DONE = ("IN_PROGRESS",)  # "IN_PROGRESS (not done), SUCCEEDED, FAILED, CANCELLED (all three done)"
