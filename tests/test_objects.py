"""``objects.store_ref_event``: ``SnapshotObject.processEvent(ObjectInDataStore event[, answer])`` (spec §3, §21.2).

Every exception of the event is wrapped as CloudRuntimeException("Failed to update state: " + e.toString());
``deleteIfNotReady`` runs after OperationFailed whether the event moved or threw; the answer's fields are a commit of
their own before the event, so a crash can fall between the two.
"""

from __future__ import annotations

import pytest
from cloud import PHYSICAL, Cloud, Taken

from snapshotfsm.describe import snapshot_object_str
from snapshotfsm.drivers.base import Answer
from snapshotfsm.errors import CloudRuntimeException, NullPointerException
from snapshotfsm.faults import FaultPlan
from snapshotfsm.names import RefEvent, RefState
from snapshotfsm.objects import AnswerType, store_ref_event
from snapshotfsm.store.records import Snapshot, SnapshotStoreRef, Volume

NO_TRANSITION = "Failed to update state: com.cloud.utils.fsm.NoTransitionException: "
NO_MAPPING = (
    "Failed to update state: com.cloud.utils.exception.CloudRuntimeException: can't find mapping in "
    "ObjectInDataStore table for: {object}"
)
GONE_IN_FINALLY = (
    'Cannot invoke "org.apache.cloudstack.engine.subsystem.api.storage.DataObjectInStore.getState()" because "obj" '
    "is null"
)
NULL_ANSWER = 'Cannot invoke "Object.getClass()" because "answer" is null'


@pytest.fixture
def taken() -> Taken:
    """A XenServer snapshot on NFS, backed up: a Ready primary ref and a Ready image ref."""
    cloud = Cloud()
    return cloud.take(cloud.volume("xen-nfs"))


def _primary(taken: Taken) -> SnapshotStoreRef:
    return taken.ref("Primary")


def _in(taken: Taken, state: str) -> SnapshotStoreRef:
    """The primary ref, put in ``state`` by a direct write (as CloudStack's own direct writes do)."""
    return taken.engine.store.write_state_directly(_primary(taken), state, by="test")


def _row(taken: Taken, ref: SnapshotStoreRef) -> SnapshotStoreRef | None:
    return taken.engine.store.first(SnapshotStoreRef, "id = ?", (ref.id,))


class TestEventFailures:
    """Whatever ``ObjectInDataStoreManagerImpl.update`` throws comes out as "Failed to update state: ..."."""

    def test_a_refused_event_is_wrapped(self, taken: Taken) -> None:
        """NoTransitionException inside a CloudRuntimeException; the ref is untouched."""
        ref = _primary(taken)
        with pytest.raises(CloudRuntimeException) as caught:
            store_ref_event(taken.engine.store, ref, RefEvent.CreateOnlyRequested)
        assert type(caught.value) is CloudRuntimeException
        assert caught.value.message.startswith(NO_TRANSITION)
        assert _row(taken, ref) == ref

    def test_a_lost_race_is_wrapped(self, taken: Taken) -> None:
        """A stale record loses the compare-and-swap: ConcurrentOperationException, wrapped."""
        stale = _primary(taken)
        store_ref_event(taken.engine.store, stale, RefEvent.OperationSucceeded)  # Ready -> Ready, update_count + 1
        with pytest.raises(CloudRuntimeException) as caught:
            store_ref_event(taken.engine.store, stale, RefEvent.DestroyRequested)
        assert caught.value.message == (
            "Failed to update state: com.cloud.exception.ConcurrentOperationException: Multiple threads are trying "
            "to update data object state, racing condition"
        )

    @pytest.mark.violates("no-orphan-object")
    def test_a_ref_gone_is_a_missing_mapping(self, taken: Taken) -> None:
        """A row deleted underneath: "can't find mapping", printed with the SnapshotObject."""
        ref = _primary(taken)
        taken.engine.store.delete(ref, by="test")
        with pytest.raises(CloudRuntimeException) as caught:
            store_ref_event(taken.engine.store, ref, RefEvent.DestroyRequested)
        snapshot = taken.engine.get(Snapshot, ref.snapshot_id)
        assert caught.value.message == NO_MAPPING.format(object=snapshot_object_str(snapshot, ref.store_id))


class TestDeleteIfNotReady:
    """After OperationFailed the ref is read again and deleted unless Destroying or Ready (the finally block)."""

    @pytest.mark.violates("no-orphan-object")
    def test_a_failed_create_is_deleted(self, taken: Taken) -> None:
        """Creating -> Allocated, then the row goes; the record returned is its last state."""
        ref = _in(taken, RefState.Creating)
        moved = store_ref_event(taken.engine.store, ref, RefEvent.OperationFailed)
        assert moved.state == RefState.Allocated
        assert _row(taken, ref) is None

    @pytest.mark.violates("no-orphan-object")
    def test_it_runs_when_the_event_threw(self, taken: Taken) -> None:
        """Hidden has no OperationFailed: the event throws, and the row is deleted all the same."""
        ref = _in(taken, RefState.Hidden)
        with pytest.raises(CloudRuntimeException) as caught:
            store_ref_event(taken.engine.store, ref, RefEvent.OperationFailed)
        assert caught.value.message.startswith(NO_TRANSITION)
        assert _row(taken, ref) is None

    @pytest.mark.violates("usage-matches-objects")
    def test_a_destroying_ref_is_kept(self, taken: Taken) -> None:
        """Destroying -> Destroying: left for the storage GC."""
        ref = _in(taken, RefState.Destroying)
        store_ref_event(taken.engine.store, ref, RefEvent.OperationFailed)
        assert _row(taken, ref) is not None

    def test_a_ready_ref_is_kept_after_a_failed_copy(self, taken: Taken) -> None:
        """Copying -> Ready: deleteIfNotReady keeps a Ready row."""
        ref = _in(taken, RefState.Copying)
        store_ref_event(taken.engine.store, ref, RefEvent.OperationFailed)
        row = _row(taken, ref)
        assert row is not None
        assert row.state == RefState.Ready

    @pytest.mark.violates("no-orphan-object")
    def test_a_ref_gone_throws_from_the_finally_block(self, taken: Taken) -> None:
        """The finally block dereferences the missing row: its NullPointerException replaces the wrapped one."""
        ref = _primary(taken)
        taken.engine.store.delete(ref, by="test")
        with pytest.raises(NullPointerException) as caught:
            store_ref_event(taken.engine.store, ref, RefEvent.OperationFailed)
        assert caught.value.message == GONE_IN_FINALLY


class TestAnswerFields:
    """``processEvent(event, answer)``: the answer's fields by their own update, then the event."""

    @pytest.mark.violates("no-orphan-object")
    def test_the_fields_are_written_before_the_event_and_kept_when_it_fails(self, taken: Taken) -> None:
        """Two commits: a refused event leaves the answer's fields written."""
        ref = _in(taken, RefState.Destroyed)
        answer = Answer(result=True, path="new/path", physical_size=123)
        with pytest.raises(CloudRuntimeException):
            store_ref_event(
                taken.engine.store, ref, RefEvent.CreateOnlyRequested, answer, answer_type=AnswerType.CREATE_OBJECT
            )
        row = _row(taken, ref)
        assert row is not None
        assert (row.state, row.install_path, row.physical_size) == (RefState.Destroyed, "new/path", 123)

    @pytest.mark.violates("no-orphan-object", "ready-ref-has-object")
    def test_a_create_answer_keeps_the_physical_size_when_it_is_0(self, taken: Taken) -> None:
        """CreateObjectAnswer: the physical size only when it is above 0."""
        ref = store_ref_event(
            taken.engine.store,
            _primary(taken),
            RefEvent.OperationSucceeded,
            Answer(result=True, path="p", physical_size=0),
            answer_type=AnswerType.CREATE_OBJECT,
        )
        assert (ref.install_path, ref.physical_size) == ("p", PHYSICAL)

    @pytest.mark.violates("counts-match-recount", "no-orphan-object", "ready-ref-has-object")
    def test_a_copy_answer_writes_a_physical_size_of_0(self, taken: Taken) -> None:
        """CopyCmdAnswer: the physical size whenever it is set, 0 included ("For S3 delta snapshot ...")."""
        ref = store_ref_event(
            taken.engine.store,
            taken.ref("Image"),
            RefEvent.OperationSucceeded,
            Answer(result=True, path="p", physical_size=0),
            answer_type=AnswerType.COPY_CMD,
        )
        assert (ref.install_path, ref.physical_size) == ("p", 0)

    @pytest.mark.violates("counts-match-recount", "no-orphan-object", "ready-ref-has-object")
    @pytest.mark.parametrize(("parent_path", "parent"), [(None, 0), ("parent/path", 7)])
    def test_a_copy_answer_without_a_parent_path_resets_the_parent(
        self, taken: Taken, parent_path: str | None, parent: int
    ) -> None:
        """``parent_snapshot_id = 0`` when the copy answer names no parent path; left as it was otherwise."""
        ref = taken.engine.store.update(taken.ref("Image"), parent_snapshot_id=7)
        moved = store_ref_event(
            taken.engine.store,
            ref,
            RefEvent.OperationSucceeded,
            Answer(result=True, path="p", physical_size=1, parent_path=parent_path),
            answer_type=AnswerType.COPY_CMD,
        )
        assert moved.parent_snapshot_id == parent

    @pytest.mark.violates("counts-match-recount", "no-orphan-object", "ready-ref-has-object")
    def test_a_copy_answer_with_a_volume_path_moves_the_volume(self, taken: Taken) -> None:
        """The copy's side effect on the volume: its path becomes the one the answer carries."""
        store_ref_event(
            taken.engine.store,
            taken.ref("Image"),
            RefEvent.OperationSucceeded,
            Answer(result=True, path="p", volume_path="moved/volume"),
            answer_type=AnswerType.COPY_CMD,
        )
        assert taken.engine.get(Volume, taken.snapshot.volume_id).path == "moved/volume"

    def test_a_null_answer_is_a_null_pointer_not_wrapped(self, taken: Taken) -> None:
        """``"Unknown answer: " + answer.getClass()`` dereferences the null answer; nothing is written."""
        ref = _primary(taken)
        with pytest.raises(NullPointerException) as caught:
            store_ref_event(taken.engine.store, ref, RefEvent.OperationSucceeded, None, answer_type=AnswerType.COPY_CMD)
        assert caught.value.message == NULL_ANSWER
        assert _row(taken, ref) == ref

    @pytest.mark.violates("no-orphan-object")
    def test_a_failing_answer_with_operation_failed_deletes_the_ref(self, taken: Taken) -> None:
        """The catch of the answer's half runs deleteIfNotReady before rethrowing."""
        ref = _in(taken, RefState.Creating)
        with pytest.raises(NullPointerException):
            store_ref_event(taken.engine.store, ref, RefEvent.OperationFailed, None, answer_type=AnswerType.COPY_CMD)
        assert _row(taken, ref) is None


@pytest.mark.violates("counts-match-recount", "no-orphan-object")
def test_a_crash_can_fall_between_the_answer_fields_and_the_event() -> None:
    """``primary.answered#2``: the take's answer fields are written, the ref is still Creating (spec §21.5)."""
    cloud = Cloud(faults=FaultPlan().crash("primary.answered#2"))
    taken = cloud.take(cloud.volume("xen-nfs"))
    assert cloud.engine.crashes == ["primary.answered#2"]
    ref = taken.ref("Primary")
    assert (ref.state, ref.physical_size) == (RefState.Creating, PHYSICAL)
    assert ref.install_path is not None
    assert taken.snapshot.status == "Creating"
