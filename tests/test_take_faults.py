"""The take-snapshot workflow when something fails: a fault at each driver call of the take path, and the other
failures of spec §5.4-§5.8 (no image store, no host, quiesce, a held lock, no strategy, StorPool's path check).

One table, :data:`FAULTS`, says for each failure what a user finds afterwards: the API job, the snapshot, the volume,
the snapshot's store refs, its details, the usage events, the account's counters, the failed step and the work job's
marshalled exception. The counters tell where CloudStack failed: inside SnapshotManagerImpl.takeSnapshot's try, its
outer catch gives the snapshot and its size back (spec §5.4 step 14); before it, nothing is given back.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import attrs
import pytest
from cloud import PHYSICAL, SIZE, Cloud, Taken

from snapshotfsm.errors import CloudRuntimeException
from snapshotfsm.faults import FaultPlan
from snapshotfsm.store.records import OpLock, Snapshot, VmInstance
from snapshotfsm.strategies.default import DefaultSnapshotStrategy
from snapshotfsm.testing.invariants import share

ON_PRIMARY = ["SNAPSHOT.ON_PRIMARY"]
GIVEN_BACK = {"snapshot": 0, "primary_storage": 0, "secondary_storage": 0}
KEPT = {"snapshot": 1, "primary_storage": 0, "secondary_storage": SIZE}
"""What allocation counted, left in place when the failure is outside SnapshotManagerImpl's try (or never ends)."""
CRE = "com.cloud.utils.exception.CloudRuntimeException"
INTERNAL = "Failed to create Snapshot due to an internal error creating Snapshot for volume {uuid}"


def snapshot_object(taken: Taken, *, image_store: int = 0) -> str:
    """``SnapshotObject.toString``: the VO as it was loaded (Allocated), its pool and its image store (0: none)."""
    s = taken.snapshot
    vo = (
        f'Snapshot {{"id":{s.id},"volumeId":{s.volume_id},"name":"{s.name}","state":"Allocated","version":"2.2",'
        f'"uuid":"{s.uuid}"}}'
    )
    return f"{vo}, dataStoreId {taken.volume.pool_id}, imageStore id {image_store}, checkpointPath null."


@attrs.frozen
class Expect:
    """What one failure leaves behind."""

    status: str
    snapshot: str
    volume: str
    refs: list[tuple[str, str]]
    usage: list[str]
    counts: dict[str, int]
    failure: tuple[str, str, str] | None
    """(step, exception class, message); the message may use ``{object}`` for ``SnapshotObject.toString``."""
    work: str | None
    """The work job's ``job_result``: ``<exception class>:<message>``."""
    removed: bool = False
    details: tuple[str, ...] = ()
    code: int = 530


def _ops(op: str, kind: str = "error") -> Callable[[Cloud], None]:
    def setup(cloud: Cloud) -> None:
        cloud.faults.fail(op, kind=kind)  # type: ignore[arg-type]

    return setup


def _host_down(cloud: Cloud) -> None:
    cloud.engine.store.update(cloud.host("XenServer"), status="Down")


def _no_image_store(cloud: Cloud) -> None:
    """Set by the Cloud built without an image store (see FAULTS' shapes)."""


@attrs.frozen
class Case:
    """A failure: the volume's shape, what breaks it, createSnapshot arguments, and an action between create and run."""

    shape: str
    setup: Callable[[Cloud], None]
    kwargs: dict[str, object] = attrs.field(factory=dict)
    image_store: bool = True
    between: Callable[[Cloud, Taken], None] | None = None


def _lock_held_elsewhere(cloud: Cloud, taken: Taken) -> None:
    cloud.engine.add(OpLock(key=f"snapshots{taken.snapshot.id}", ms_id=2, owner="another job"))


TAKE_ERROR = ("primary.answered", "CloudRuntimeException", "takeSnapshot failed on default (injected fault)")
TAKE_THREW = ("primary.request", "CloudRuntimeException", "Failed to take snapshot {object}")
COPY_ERROR = ("backup.answered", "CloudRuntimeException", "copyAsync failed on default (injected fault)")
NO_HOST = "No remote endpoint to send createObjectCommand, check if host or ssvm is down?"
NO_IMAGE = f"Failed to copy snapshot:{CRE}: can not find an image stores"
NULL_COPY = 'java.lang.NullPointerException: Cannot invoke "Object.getClass()" because "answer" is null'

CASES: dict[str, Case] = {
    "takeSnapshot error": Case("xen-nfs", _ops("default.takeSnapshot")),
    "takeSnapshot exception": Case("xen-nfs", _ops("default.takeSnapshot", "exception")),
    "takeSnapshot no answer": Case("xen-nfs", _ops("default.takeSnapshot", "no_answer")),
    "takeSnapshot null answer": Case("xen-nfs", _ops("default.takeSnapshot", "null_answer")),
    "copyAsync error": Case("xen-nfs", _ops("copyAsync")),
    "copyAsync exception": Case("xen-nfs", _ops("copyAsync", "exception")),
    "copyAsync no answer": Case("xen-nfs", _ops("copyAsync", "no_answer")),
    "copyAsync null answer": Case("xen-nfs", _ops("copyAsync", "null_answer")),
    "no Up host": Case("xen-nfs", _host_down),
    "no image store for the backup": Case("xen-nfs", _no_image_store, image_store=False),
    "no image store, KVM file-based": Case("kvm-nfs", _no_image_store, image_store=False),
    "quiescevm on Default": Case("xen-nfs", _no_image_store, kwargs={"quiescevm": True}),
    "snapshot locked elsewhere": Case("xen-nfs", _no_image_store, between=_lock_held_elsewhere),
    "StorageSystem takeSnapshot error": Case("solidfire", _ops("managed.takeSnapshot")),
    "StorPool copyAsync error": Case("storpool", _ops("storpool.copyAsync")),
}

FAULTS: dict[str, Expect] = {
    # §5.6 step 5: the callback fails the snapshot (Error) and its ref (deleted); ON_PRIMARY is still published.
    "takeSnapshot error": Expect(
        "FAILED", "Error", "Ready", [], ON_PRIMARY, GIVEN_BACK, TAKE_ERROR, f"{CRE}:{TAKE_ERROR[2]}"
    ),
    # §5.6 step 4: OperationFailed is fired on the stale original object and refused: rows stay Creating.
    "takeSnapshot exception": Expect(
        "FAILED",
        "Creating",
        "Ready",
        [("Primary", "Creating")],
        [],
        GIVEN_BACK,
        TAKE_THREW,
        f"{CRE}:Failed to take snapshot {{object}}",
    ),
    # future.get() never returns: the job, the volume and the snapshot wait forever.
    "takeSnapshot no answer": Expect(
        "IN_PROGRESS", "Creating", "Snapshotting", [("Primary", "Creating")], [], KEPT, None, None, code=0
    ),
    # §5.6 step 6: processEvent's NPE fails the snapshot only; updateSnapSize's NPE is wrapped by the outer catch.
    "takeSnapshot null answer": Expect(
        "FAILED",
        "Error",
        "Ready",
        [("Primary", "Creating")],
        [],
        GIVEN_BACK,
        ("primary.answered", "NullPointerException", "answer is null in updateSnapSizeAndCheckpointPathIfPossible"),
        f"{CRE}:Failed to create snapshot",
    ),
    # §5.8 step 4, sync: the image ref fails (deleted), then cleanupOnSnapshotBackupFailure.
    "copyAsync error": Expect(
        "FAILED",
        "Error",
        "Ready",
        [("Primary", "Destroyed")],
        ON_PRIMARY,
        GIVEN_BACK,
        COPY_ERROR,
        f"{CRE}:{COPY_ERROR[2]}",
        removed=True,
    ),
    # §5.8 step 3: the copy throws before it starts: the snapshot fails, the image ref is left Creating.
    "copyAsync exception": Expect(
        "FAILED",
        "Error",
        "Ready",
        [("Primary", "Ready"), ("Image", "Creating")],
        ON_PRIMARY,
        GIVEN_BACK,
        (
            "backup.request",
            "CloudRuntimeException",
            f"Failed to copy snapshot:{CRE}: default driver threw on copyAsync (injected fault)",
        ),
        f"{CRE}:Failed to copy snapshot:{CRE}: default driver threw on copyAsync (injected fault)",
        details=("MS_ID",),
    ),
    "copyAsync no answer": Expect(
        "IN_PROGRESS",
        "BackingUp",
        "Ready",
        [("Primary", "Ready"), ("Image", "Creating")],
        ON_PRIMARY,
        KEPT,
        None,
        None,
        details=("MS_ID",),
        code=0,
    ),
    # copySnapshotAsyncCallback: a null answer is not a failed result; processEvent(OperationSucceeded, null)
    # throws a NullPointerException (answer.getClass()), caught: nothing moves, and the future fails.
    "copyAsync null answer": Expect(
        "FAILED",
        "BackingUp",
        "Ready",
        [("Primary", "Ready"), ("Image", "Creating")],
        ON_PRIMARY,
        GIVEN_BACK,
        ("backup.answered", "CloudRuntimeException", NULL_COPY),
        f"{CRE}:{NULL_COPY}",
        details=("MS_ID",),
    ),
    # The default driver's EndPointSelector finds no host: an error answer, as takeSnapshot error.
    "no Up host": Expect(
        "FAILED",
        "Error",
        "Ready",
        [],
        ON_PRIMARY,
        GIVEN_BACK,
        ("primary.answered", "CloudRuntimeException", NO_HOST),
        f"{CRE}:{NO_HOST}",
    ),
    # §5.8 step 2: thrown inside backupSnapshot's try: OperationFailed (BackingUp to Error).
    "no image store for the backup": Expect(
        "FAILED",
        "Error",
        "Ready",
        [("Primary", "Ready")],
        ON_PRIMARY,
        GIVEN_BACK,
        ("backup.request", "CloudRuntimeException", NO_IMAGE),
        f"{CRE}:{NO_IMAGE}",
        details=("MS_ID",),
    ),
    # §5.4 step 3: thrown before SnapshotManagerImpl's try: the counters stay incremented.
    "no image store, KVM file-based": Expect(
        "FAILED",
        "Allocated",
        "Ready",
        [],
        [],
        KEPT,
        (
            "take.prepare",
            "CloudRuntimeException",
            "Could not find any secondary storage to allocate snapshot [{object}].",
        ),
        f"{CRE}:Could not find any secondary storage to allocate snapshot [{{object}}].",
    ),
    # §5.5 step 1: an InvalidParameterValueException is a CloudRuntimeException: rethrown as it is, not wrapped.
    "quiescevm on Default": Expect(
        "FAILED",
        "Allocated",
        "Ready",
        [],
        [],
        GIVEN_BACK,
        ("primary.begin", "InvalidParameterValueException", "can't handle quiescevm equal true for volume snapshot"),
        "com.cloud.exception.InvalidParameterValueException:can't handle quiescevm equal true for volume snapshot",
    ),
    # §5.5 step 2: acquireInLockTable fails before the volume is touched.
    "snapshot locked elsewhere": Expect(
        "FAILED",
        "Allocated",
        "Ready",
        [],
        [],
        GIVEN_BACK,
        ("primary.begin", "CloudRuntimeException", "Failed to get lock on snapshot: {object}"),
        f"{CRE}:Failed to get lock on snapshot: {{object}}",
    ),
    "StorageSystem takeSnapshot error": Expect(
        "FAILED",
        "Error",
        "Ready",
        [],
        ON_PRIMARY,
        GIVEN_BACK,
        ("primary.answered", "CloudRuntimeException", "takeSnapshot failed on managed (injected fault)"),
        f"{CRE}:takeSnapshot failed on managed (injected fault)",
        details=("takeSnapshot",),
    ),
    "StorPool copyAsync error": Expect(
        "FAILED",
        "Error",
        "Ready",
        [("Primary", "Destroyed")],
        ON_PRIMARY,
        GIVEN_BACK,
        ("backup.answered", "CloudRuntimeException", "copyAsync failed on storpool (injected fault)"),
        f"{CRE}:copyAsync failed on storpool (injected fault)",
        removed=True,
        details=("<uuid>", "spStoragePoolId"),
    ),
}


@functools.cache
def run_case(name: str) -> tuple[Cloud, Taken]:
    """Build the case's cloud, take a snapshot of a new volume of its shape, run until idle.

    Cached: each case runs once per session, and the tests only read what it left; its world is judged by the
    invariants in :func:`test_each_case_is_judged`, on a world of its own.
    """
    cloud, taken = _run_case(name)
    share(cloud.engine)
    return cloud, taken


def _run_case(name: str) -> tuple[Cloud, Taken]:
    case = CASES[name]
    cloud = Cloud(faults=FaultPlan(), image_store=case.image_store)
    case.setup(cloud)
    taken = cloud.create(cloud.volume(case.shape), **case.kwargs)
    if case.between is not None:
        case.between(cloud, taken)
    cloud.engine.run()
    return cloud, taken


@pytest.mark.parametrize("name", list(FAULTS))
def test_failure_outcome(name: str) -> None:
    """The states, counters, usage, failed step and job results each failure leaves (see :data:`FAULTS`)."""
    cloud, taken = run_case(name)
    expect = FAULTS[name]
    obj = snapshot_object(taken)
    snapshot = taken.snapshot
    found = {
        "job": (taken.status, taken.job.job_result_code),
        "snapshot": (snapshot.status, snapshot.removed is not None),
        "volume": taken.volume.state,
        "refs": [(role, state) for role, state, _ in taken.refs()],
        "details": sorted("<uuid>" if key == snapshot.uuid else key for key in taken.details()),
        "usage": [u[0] for u in taken.usage()],
        "counts": cloud.counts(),
        "failures": taken.failures(),
        "work": taken.work_result,
    }
    wanted = {
        "job": (expect.status, expect.code),
        "snapshot": (expect.snapshot, expect.removed),
        "volume": expect.volume,
        "refs": expect.refs,
        "details": sorted(expect.details),
        "usage": expect.usage,
        "counts": expect.counts,
        "failures": [] if expect.failure is None else [(*expect.failure[:2], expect.failure[2].format(object=obj))],
        "work": None if expect.work is None else expect.work.format(object=obj),
    }
    assert found == wanted
    if expect.status == "FAILED":
        assert taken.error == (530, INTERNAL.format(uuid=taken.volume.uuid))
        assert taken.work_state == ("FAILED", "Failed")
    else:
        assert taken.work_state == ("IN_PROGRESS", "Running")


@pytest.mark.parametrize("name", ["takeSnapshot no answer", "copyAsync no answer"])
def test_no_answer_leaves_nothing_to_run(name: str) -> None:
    """A driver that never answers leaves the job IN_PROGRESS with nothing scheduled: run() returns at once."""
    cloud, taken = run_case(name)
    assert cloud.engine.scheduler.pending() == []
    assert cloud.engine.run() == 0
    assert taken.status == "IN_PROGRESS"
    assert taken.job.job_result is None


LOG_TAILS = {
    "takeSnapshot error": [
        ("snapshot", 1, "Creating", "OperationFailed", "Error"),
        ("snapshot_store_ref", 1, "Creating", "OperationFailed", "Allocated"),
        ("snapshot_store_ref", 1, "Allocated", "SnapshotObject.deleteIfNotReady", ""),
        ("volume", 1, "Snapshotting", "OperationFailed", "Ready"),
    ],
    "takeSnapshot exception": [("volume", 1, "Snapshotting", "OperationFailed", "Ready")],
    "takeSnapshot no answer": [],
    "takeSnapshot null answer": [
        ("snapshot", 1, "Creating", "OperationFailed", "Error"),
        ("volume", 1, "Snapshotting", "OperationFailed", "Ready"),
    ],
    "copyAsync error": [
        ("snapshot_store_ref", 1, "Creating", "OperationSucceeded", "Ready"),
        ("snapshot", 1, "Creating", "OperationSucceeded", "CreatedOnPrimary"),
        ("volume", 1, "Snapshotting", "OperationSucceeded", "Ready"),
        ("snapshot", 1, "CreatedOnPrimary", "BackupToSecondary", "BackingUp"),
        ("snapshot_store_ref", 2, "", "create", "Allocated"),
        ("snapshot_store_ref", 2, "Allocated", "CreateOnlyRequested", "Creating"),
        ("snapshot_store_ref", 2, "Creating", "OperationFailed", "Allocated"),
        ("snapshot_store_ref", 2, "Allocated", "SnapshotObject.deleteIfNotReady", ""),
        ("snapshot_store_ref", 1, "Ready", "DestroyRequested", "Destroying"),  # cleanupOnSnapshotBackupFailure
        ("snapshot_store_ref", 1, "Destroying", "OperationSucceeded", "Destroyed"),
        ("snapshot", 1, "BackingUp", "OperationFailed", "Error"),
        ("snapshot", 1, "Error", "cleanupOnSnapshotBackupFailure", "Error"),  # soft-removed
    ],
}
TAKE_START = [
    ("volume", 1, "Ready", "SnapshotRequested", "Snapshotting"),
    ("snapshot_store_ref", 1, "", "create", "Allocated"),
    ("snapshot", 1, "Allocated", "CreateRequested", "Creating"),
    ("snapshot_store_ref", 1, "Allocated", "CreateOnlyRequested", "Creating"),
]


@pytest.mark.parametrize("name", list(LOG_TAILS))
def test_failure_log(name: str) -> None:
    """The entity machines' log from the driver call on, then the work job and the API job failing (in that order)."""
    _, taken = run_case(name)
    log = taken.log("snapshot", "volume", "snapshot_store_ref")
    assert log[0] == ("snapshot", 1, "", "create", "Allocated")
    assert log[1:] == TAKE_START + LOG_TAILS[name]
    jobs = taken.log("async_job", "vm_work_job")[4:]
    if taken.status == "FAILED":
        assert jobs == [
            ("vm_work_job", 2, "Running", "Fail", "Failed"),
            ("async_job", 2, "IN_PROGRESS", "CompleteFailed", "FAILED"),
            ("async_job", 1, "IN_PROGRESS", "CompleteFailed", "FAILED"),
        ]
    else:
        assert jobs == []


def test_the_copy_failure_removes_ms_id_and_the_image_ref() -> None:
    """cleanupOnSnapshotBackupFailure removes MS_ID; the failed image ref's row is gone; the pool keeps its file."""
    _, taken = run_case("copyAsync error")
    assert taken.details() == {}
    assert [role for role, _, _ in taken.refs()] == ["Primary"]
    assert len(taken.objects("primary")) == 1  # nothing deletes the snapshot from the pool
    assert taken.objects("image") == []


def test_storpool_deletes_its_snapshot_when_the_backup_fails() -> None:
    """The StorPool driver answers a failed backup by deleting the snapshot on StorPool (spec §8)."""
    _, taken = run_case("StorPool copyAsync error")
    assert taken.objects("primary") == []


def test_storage_system_keeps_the_lock_until_its_job_ends() -> None:
    """StorageSystemSnapshotStrategy does not release its lock when the take throws (spec §5.7); the end of the
    work job's thread releases it (``Merovingian2.cleanupThread``, spec §21.7 on §5.7)."""
    cloud, taken = run_case("StorageSystem takeSnapshot error")
    assert taken.status == "FAILED"
    assert cloud.engine.store.count(OpLock) == 0


@pytest.mark.parametrize("name", ["takeSnapshot error", "copyAsync error", "snapshot locked elsewhere"])
def test_default_releases_the_lock(name: str) -> None:
    """DefaultSnapshotStrategy releases its lock in a finally block; a lock someone else holds stays theirs."""
    cloud, _ = run_case(name)
    owners = [lock.owner for lock in cloud.engine.store.find(OpLock)]
    assert owners == (["another job"] if name == "snapshot locked elsewhere" else [])


@pytest.mark.violates("usage-matches-objects")
def test_the_snapshot_can_be_taken_again_after_a_failure() -> None:
    """A fault on the first call only: the volume is Ready again and the next snapshot succeeds."""
    cloud = Cloud(faults=FaultPlan().fail("default.takeSnapshot"))
    volume = cloud.volume("xen-nfs")
    first, second = cloud.take(volume), cloud.take(volume)
    assert (first.status, second.status) == ("FAILED", "SUCCEEDED")
    assert cloud.counts() == {"snapshot": 1, "primary_storage": 0, "secondary_storage": PHYSICAL}


class TestStorPoolPath:
    """Spec §8, §5.6 step 4: a StorPool volume whose path is not a StorPool device."""

    @pytest.mark.violates("answer-matches-state", "counts-match-recount", "no-transitional-state")
    def test_the_driver_throws_and_the_snapshot_stays_creating(self) -> None:
        """UnsupportedOperationException thrown at the call becomes "Failed to take snapshot ..."; the job fails
        with 530 (the cause that reaches execute() is the CloudRuntimeException); rows stay Creating."""
        cloud = Cloud()
        volume = cloud.volume("storpool")
        cloud.engine.store.update(volume, path="/dev/sdb")
        taken = cloud.take(volume)
        obj = snapshot_object(taken)
        assert taken.error == (530, INTERNAL.format(uuid=volume.uuid))
        assert (taken.snapshot.status, taken.volume.state) == ("Creating", "Ready")
        assert taken.refs() == [("Primary", "Creating", None)]
        assert taken.failures() == [("primary.request", "CloudRuntimeException", f"Failed to take snapshot {obj}")]
        assert taken.work_result == f"{CRE}:Failed to take snapshot {obj}"
        assert cloud.counts() == GIVEN_BACK
        assert taken.usage() == []
        assert taken.details() == {}


class TestNoStrategy:
    """Spec §5.4 step 5: no strategy can TAKE: the row is soft-removed, counters given back, an UOE thrown."""

    @staticmethod
    def _message(taken: Taken) -> str:
        s = taken.snapshot
        vo = (
            f'Snapshot {{"id":{s.id},"volumeId":{s.volume_id},"name":"{s.name}","state":"Allocated","version":"2.2",'
            f'"uuid":"{s.uuid}"}}'
        )
        volume = taken.volume.uuid
        return (
            f"Unable to find a snapshot strategy to create snapshot [{vo}] of volume [{volume}]. Please check the logs."
        )

    def test_attached_disk_and_memory_vm_snapshot(self) -> None:
        """Default can't TAKE with a DiskAndMemory VM snapshot; through the work job the UOE is the cause: 432."""
        cloud = Cloud()
        volume = cloud.volume("kvm-nfs")
        cloud.engine.add_vm_snapshot(cloud.engine.get(VmInstance, volume.instance_id or 0), type="DiskAndMemory")
        taken = cloud.take(volume)
        message = self._message(taken)
        assert taken.error == (432, f"Failed to create Snapshot due to unsupported operation: {message}")
        assert (taken.snapshot.status, taken.snapshot.removed is not None) == ("Allocated", True)
        assert taken.kinds("snapshot")[-1] == ("remove", "SnapshotManagerImpl.takeSnapshot (no strategy)", "Allocated")
        assert taken.refs() == []
        assert taken.volume.state == "Ready"
        assert cloud.counts() == GIVEN_BACK
        assert taken.failures() == [("take.choose_strategy", "UnsupportedOperationException", message)]
        assert taken.work_result == f"java.lang.UnsupportedOperationException:{message}"

    @pytest.mark.violates("usage-matches-objects", params=["False"])
    @pytest.mark.parametrize("kvm_file_based", [True, False])
    def test_disk_vm_snapshots(self, kvm_file_based: bool) -> None:
        """A Disk VM snapshot stops Default only when it is a KVM file-based one."""
        cloud = Cloud()
        volume = cloud.volume("kvm-nfs")
        vm = cloud.engine.get(VmInstance, volume.instance_id or 0)
        cloud.engine.add_vm_snapshot(vm, type="Disk", kvm_file_based=kvm_file_based)
        taken = cloud.take(volume)
        assert taken.job.job_result_code == (432 if kvm_file_based else 0)

    def test_detached_is_an_internal_error(self) -> None:
        """Detached, the UOE reaches execute() unwrapped and its cause is not an UOE: 530 (spec §5.2).

        Default always handles a detached volume, so the deployment here has no Default strategy: only strategies
        that cannot take this NFS volume's snapshot (as a plugin-only deployment would).
        """
        cloud = Cloud()
        factory = cloud.engine.rt.factory
        factory.strategies = [s for s in factory.strategies if not isinstance(s, DefaultSnapshotStrategy)]
        volume = cloud.volume("xen-nfs", vm=False)
        taken = cloud.take(volume)
        assert taken.error == (530, INTERNAL.format(uuid=volume.uuid))
        assert taken.work_job is None
        assert (taken.snapshot.status, taken.snapshot.removed is not None) == ("Allocated", True)
        assert cloud.counts() == GIVEN_BACK
        assert taken.failures() == [("take.choose_strategy", "UnsupportedOperationException", self._message(taken))]


CALLBACK_THREW = (
    "Failed to copy snapshot:java.lang.RuntimeException: InvocationTargetException when invoking RPC callback for "
    "command: copySnapshotAsyncCallback"
)


class TestBackupCleanupFails:
    """Spec §21.2: the sync copy fails and ``cleanupOnSnapshotBackupFailure`` rolls its transaction back.

    Its exception leaves the copy's callback (wrapped by ``AsyncCallbackDispatcher.dispatch``) and reaches
    ``backupSnapshot``'s catch, which fires OperationFailed on the snapshot as it holds it in memory: BackingUp (Error,
    committed on its own) when the cleanup failed before its Snapshot event, Error (refused, the row stays
    BackingUp) when after.
    """

    @staticmethod
    def _run(meddle: Callable[[Cloud, Taken], None]) -> tuple[Cloud, Taken]:
        """A XenServer snapshot whose copy fails; ``meddle`` acts while the copy runs."""
        cloud = Cloud(faults=FaultPlan().fail("copyAsync"))
        taken = cloud.create(cloud.volume("xen-nfs"))
        while taken.snapshot.status != "BackingUp":
            cloud.engine.run(max_tasks=1)
        meddle(cloud, taken)
        cloud.engine.run()
        return cloud, taken

    @staticmethod
    def _check_failed(cloud: Cloud, taken: Taken) -> None:
        assert taken.error == (530, INTERNAL.format(uuid=taken.volume.uuid))
        assert taken.failures() == [("backup.answered", "CloudRuntimeException", CALLBACK_THREW)]
        assert cloud.counts() == GIVEN_BACK
        assert taken.details() == {"MS_ID": "1"}

    @pytest.mark.violates("no-orphan-object")
    def test_a_primary_ref_moved_meanwhile(self) -> None:
        """The primary ref is Copying: DestroyRequested is refused, nothing of the cleanup stays; Error, not removed."""

        def copying(cloud: Cloud, taken: Taken) -> None:
            cloud.engine.transit(taken.ref("Primary"), "CopyingRequested")

        cloud, taken = self._run(copying)
        self._check_failed(cloud, taken)
        assert (taken.snapshot.status, taken.snapshot.removed) == ("Error", None)
        assert [(role, state) for role, state, _ in taken.refs()] == [("Primary", "Copying")]
        assert taken.kinds("snapshot")[-2:] == [
            ("event", "BackupToSecondary", "BackingUp"),
            ("event", "OperationFailed", "Error"),
        ]

    @pytest.mark.violates("no-orphan-object")
    def test_a_primary_ref_gone(self) -> None:
        """No primary ref: processEvent's "can't find mapping" rolls the cleanup back; Error, not removed."""

        def gone(cloud: Cloud, taken: Taken) -> None:
            cloud.engine.store.delete(taken.ref("Primary"), by="test")

        cloud, taken = self._run(gone)
        self._check_failed(cloud, taken)
        assert (taken.snapshot.status, taken.snapshot.removed) == ("Error", None)
        assert taken.refs() == []

    @pytest.mark.violates("usage-matches-objects")
    def test_a_failure_after_the_snapshot_event_leaves_backing_up(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """The soft remove fails: the rolled-back Error is still what the snapshot says in memory, so the catch's
        OperationFailed is refused and the row stays BackingUp, its primary ref Ready."""

        def failing_remove(cloud: Cloud, taken: Taken) -> None:
            store = cloud.engine.store
            remove = store.remove

            def remove_or_fail(record: Snapshot, *, by: str) -> Snapshot:
                if by == "cleanupOnSnapshotBackupFailure":
                    raise CloudRuntimeException("DB Exception on: snapshots")
                return remove(record, by=by)

            monkeypatch.setattr(store, "remove", remove_or_fail)

        cloud, taken = self._run(failing_remove)
        self._check_failed(cloud, taken)
        assert (taken.snapshot.status, taken.snapshot.removed) == ("BackingUp", None)
        assert [(role, state) for role, state, _ in taken.refs()] == [("Primary", "Ready")]
        assert taken.kinds("snapshot")[-1] == ("event", "BackupToSecondary", "BackingUp")


@pytest.mark.violates(
    "answer-matches-state", "counts-match-recount", params=["no image store, KVM file-based", "quiescevm on Default"]
)
@pytest.mark.violates(
    "answer-matches-state", "counts-match-recount", "locks-released", params=["snapshot locked elsewhere"]
)
@pytest.mark.violates(
    "answer-matches-state", "counts-match-recount", "no-transitional-state", params=["takeSnapshot exception"]
)
@pytest.mark.violates("counts-match-recount", params=["takeSnapshot no answer"])
@pytest.mark.violates("counts-match-recount", "usage-matches-objects", params=["copyAsync no answer"])
@pytest.mark.violates(
    "usage-matches-objects",
    params=[
        "StorPool copyAsync error",
        "StorageSystem takeSnapshot error",
        "copyAsync error",
        "copyAsync exception",
        "copyAsync null answer",
        "no Up host",
        "no image store for the backup",
        "takeSnapshot error",
    ],
)
@pytest.mark.parametrize("name", sorted(CASES))
def test_each_case_is_judged(name: str) -> None:
    """The cached cases' worlds, built again here so that the invariants judge them at this test's end."""
    _run_case(name)
