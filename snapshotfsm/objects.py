"""CloudStack's data objects: how its code fires state-machine events, with the quirks the spec records.

These wrap :meth:`Store.transit` the way CloudStack's ``VolumeObject``, ``SnapshotObject`` and
``ObjectInDataStoreManagerImpl`` wrap ``StateMachine2.transitTo``: which refusals become exceptions, which are only
logged, and what else happens around the event. Strategies (layer 5) and orchestration (layer 6) both go through
here, so that a behaviour is written once.
"""

from __future__ import annotations

import enum
import logging
from typing import Any

from snapshotfsm.describe import snapshot_object_str
from snapshotfsm.drivers.base import Answer
from snapshotfsm.errors import (
    CloudException,
    CloudRuntimeException,
    ConcurrencyError,
    ConcurrentOperationException,
    IllegalTransition,
    NotFound,
    NoTransitionException,
    NullPointerException,
)
from snapshotfsm.names import RefEvent, RefState
from snapshotfsm.store.records import Snapshot, SnapshotStoreRef, Volume
from snapshotfsm.store.store import Store

log = logging.getLogger(__name__)


def volume_transit(store: Store, volume_id: int, event: str) -> bool:
    """``VolumeObject.stateTransit`` (spec §2.4): re-read the row, fire, re-read.

    A refused event becomes a CloudRuntimeException; a lost compare-and-swap only returns False, with no
    exception, and the snapshot strategies ignore that value. A row removed underneath is CloudStack's null VO,
    dereferenced: a NullPointerException (here and in the two functions below).

    Raises:
        CloudRuntimeException: the volume machine has no such transition from the row's state.
    """
    try:
        volume = store.get(Volume, volume_id)
    except NotFound as exc:
        raise NullPointerException(f"{exc} (the row was removed)") from exc
    try:
        store.transit(volume, event)
    except IllegalTransition as exc:
        raise CloudRuntimeException(f"Unable to transition volume {volume.name} to {event}: {exc}") from exc
    except ConcurrencyError as exc:
        log.warning("volume %s: %s", volume_id, exc)
        return False
    return True


def snapshot_event(store: Store, snapshot: Snapshot, event: str) -> Snapshot:
    """``SnapshotObject.processEvent(Snapshot.Event)``: fire against the in-memory state the caller holds.

    ``snapshots`` has no compare-and-swap, so the write always lands (spec §11); the only guard is the machine's
    check against ``snapshot.status``, which may be stale.

    Raises:
        NoTransitionException: no transition for that event from the state the caller holds.
    """
    try:
        return store.transit(snapshot, event)
    except IllegalTransition as exc:
        raise NoTransitionException(str(exc)) from exc
    except NotFound as exc:
        raise NullPointerException(f"{exc} (the row was removed)") from exc


class AnswerType(enum.StrEnum):
    """The answer ``SnapshotObject.processEvent(event, answer)`` is handed: it copies different fields from each."""

    CREATE_OBJECT = "CreateObjectAnswer"
    """The primary driver's answer to ``takeSnapshot`` (``createSnapshotAsyncCallback``, spec §5.6)."""
    COPY_CMD = "CopyCmdAnswer"
    """A copy's answer: the backup to an image store (``copySnapshotAsyncCallback``, spec §5.8)."""


DATA_OBJECT_IN_STORE = "org.apache.cloudstack.engine.subsystem.api.storage.DataObjectInStore"
SNAPSHOT_OBJECT_TO = "org.apache.cloudstack.storage.to.SnapshotObjectTO"
SNAPSHOT_DATA_STORE_VO = "org.apache.cloudstack.storage.datastore.db.SnapshotDataStoreVO"


def store_ref_event(
    store: Store,
    ref: SnapshotStoreRef,
    event: str,
    answer: Answer | None = None,
    *,
    answer_type: AnswerType | None = None,
) -> SnapshotStoreRef:
    """``SnapshotObject.processEvent(ObjectInDataStore event[, answer])`` (spec §3); the ref as the move wrote it.

    With ``answer_type`` (the form with an answer), the answer's fields are first written to the ref by their own
    update, a commit apart from the event's (spec §21.2): a crash can fall between the two. A ``CreateObjectAnswer``
    gives the install path, and the physical size when it is above 0; a ``CopyCmdAnswer`` gives the install path and
    the physical size (0 included), resets ``parent_snapshot_id`` to 0 when it names no parent path, and moves the
    volume's path when it carries one (a third commit). A null answer, or one with no data (a failed answer), is a
    NullPointerException there, raised as it is; with OperationFailed the ref is then deleted unless Ready.

    The event is then fired (``ObjectInDataStoreManagerImpl.update``). Whatever that throws is wrapped as
    ``CloudRuntimeException("Failed to update state: " + e.toString())``: a refused event (NoTransitionException),
    a lost compare-and-swap (ConcurrentOperationException) or a row gone ("can't find mapping ..."). After
    OperationFailed, moved or not, the ref is read again and, unless it is Destroying, hard-deleted when it is not
    Ready (``deleteIfNotReady``, in a ``finally``): the record returned is then the last state of a row that is gone.
    A row gone by then is a NullPointerException from that ``finally``, which replaces the exception in flight.

    The ref is the caller's record (CloudStack re-reads it by store and snapshot; the model's refs of one snapshot
    on one store are told apart by id), so a stale record loses the compare-and-swap.

    Raises:
        CloudRuntimeException: "Failed to update state: ..." (the event failed).
        NullPointerException: a null answer, a failed answer, or the row gone (see above).
    """
    if answer_type is not None:
        ref = _copy_answer(store, ref, event, answer, answer_type)
    failure: CloudRuntimeException | None = None
    moved = ref
    try:
        moved = _update(store, ref, event)
    except CloudException as exc:
        text = f"{exc.java_name}: {exc.message}"
        log.debug("Failed to update state:%s", text)
        failure = CloudRuntimeException(f"Failed to update state: {text}", cause=exc)
    if event == RefEvent.OperationFailed:
        # The finally block: it runs whether the event moved or threw (a crash, not an exception, skips it).
        found = store.first(SnapshotStoreRef, "id = ?", (ref.id,))
        if found is None:
            raise NullPointerException(
                f'Cannot invoke "{DATA_OBJECT_IN_STORE}.getState()" because "obj" is null'
            ) from failure
        if found.state != RefState.Destroying:
            _delete_if_not_ready(store, found)
    if failure is not None:
        raise failure from failure.cause
    return moved


def missing_store_ref(store: Store, snapshot_id: int, store_id: int) -> CloudRuntimeException:
    """What ``processEvent`` throws for a snapshot that has no ref on ``store_id``: the update found no row."""
    return CloudRuntimeException(
        f"Failed to update state: {CloudRuntimeException.java_name}: {_no_mapping(store, snapshot_id, store_id)}"
    )


def _no_mapping(store: Store, snapshot_id: int, store_id: int) -> str:
    """``ObjectInDataStoreManagerImpl.update``'s message when ``findObject`` finds no row."""
    snapshot = store.first(Snapshot, "id = ?", (snapshot_id,))
    data = snapshot_object_str(snapshot, store_id) if snapshot is not None else f"snapshot {snapshot_id}"
    return f"can't find mapping in ObjectInDataStore table for: {data}"


def _update(store: Store, ref: SnapshotStoreRef, event: str) -> SnapshotStoreRef:
    """``ObjectInDataStoreManagerImpl.update``: the store-ref machine's event, compared-and-swapped.

    Raises:
        NoTransitionException: the store-ref machine has no such transition.
        ConcurrentOperationException: the compare-and-swap lost.
        CloudRuntimeException: the row is gone.
    """
    try:
        return store.transit(ref, event)
    except IllegalTransition as exc:
        raise NoTransitionException(str(exc)) from exc
    except NotFound as exc:
        raise CloudRuntimeException(_no_mapping(store, ref.snapshot_id, ref.store_id)) from exc
    except ConcurrencyError as exc:
        log.debug("store ref %s: %s", ref.id, exc)
        raise ConcurrentOperationException(
            "Multiple threads are trying to update data object state, racing condition"
        ) from exc


def _delete_if_not_ready(store: Store, ref: SnapshotStoreRef) -> None:
    """``ObjectInDataStoreManagerImpl.deleteIfNotReady``: the ref's row goes unless it is Ready."""
    if ref.state != RefState.Ready:
        store.delete(ref, by="SnapshotObject.deleteIfNotReady")


def _copy_answer(
    store: Store, ref: SnapshotStoreRef, event: str, answer: Answer | None, answer_type: AnswerType
) -> SnapshotStoreRef:
    """The first half of ``processEvent(event, answer)``: the answer's fields onto the ref, each write on its own.

    What it throws is rethrown as it is (not wrapped), after ``deleteIfNotReady`` when the event is OperationFailed.

    Raises:
        NullPointerException: a null answer, an answer with no data (failed), or no row for the ref.
    """
    try:
        current = store.first(SnapshotStoreRef, "id = ?", (ref.id,))
        if answer is None:
            # ``answer instanceof ...`` is false for null: "Unknown answer: " + answer.getClass() dereferences it.
            raise NullPointerException('Cannot invoke "Object.getClass()" because "answer" is null')
        if not answer.result:
            raise NullPointerException(f'Cannot invoke "{SNAPSHOT_OBJECT_TO}.getPath()" because "snapshotTO" is null')
        if current is None:
            raise NullPointerException(
                f'Cannot invoke "{SNAPSHOT_DATA_STORE_VO}.setInstallPath(String)" because "snapshotStore" is null'
            )
        fields: dict[str, Any] = {"install_path": answer.path}
        if answer_type is AnswerType.CREATE_OBJECT:
            if answer.physical_size > 0:
                fields["physical_size"] = answer.physical_size
            return store.update(current, **fields)
        # CopyCmdAnswer: "For S3 delta snapshot, physical size is currently not set": set whenever it is not null.
        fields["physical_size"] = answer.physical_size
        if answer.parent_path is None:
            fields["parent_snapshot_id"] = 0
        current = store.update(current, **fields)
        if answer.volume_path is not None:
            _move_volume_path(store, current.volume_id, answer.volume_path)
    except CloudException:
        if event == RefEvent.OperationFailed:
            found = store.first(SnapshotStoreRef, "id = ?", (ref.id,))
            if found is not None:
                _delete_if_not_ready(store, found)
        raise
    return current


def _move_volume_path(store: Store, volume_id: int | None, path: str) -> None:
    """The side effect of a snapshot operation that moved the volume (``volumeDao.update`` with the new path)."""
    volume = store.first(Volume, "id = ? AND removed IS NULL", (volume_id,))
    if volume is None:
        log.error("Couldn't find the original volume: %s", volume_id)
        return
    log.info(
        "Update volume path change due to snapshot operation, volume %s path: %s->%s", volume_id, volume.path, path
    )
    store.update(volume, path=path)
