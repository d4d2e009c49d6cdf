"""CloudStack's data objects: how its code fires state-machine events, with the quirks the spec records.

These wrap :meth:`Store.transit` the way CloudStack's ``VolumeObject``, ``SnapshotObject`` and
``ObjectInDataStoreManagerImpl`` wrap ``StateMachine2.transitTo``: which refusals become exceptions, which are only
logged, and what else happens around the event. Strategies (layer 5) and orchestration (layer 6) both go through
here, so that a behaviour is written once.
"""

from __future__ import annotations

import logging
from typing import Any

from snapshotfsm.drivers.base import Answer
from snapshotfsm.errors import (
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


def store_ref_event(store: Store, ref: SnapshotStoreRef, event: str, answer: Answer | None = None) -> SnapshotStoreRef:
    """``SnapshotObject.processEvent(ObjectInDataStore event[, answer])`` (spec §3); the ref as the move wrote it.

    With an answer, its install path and physical size are copied onto the ref first (here: in the same write).
    After ``OperationFailed``, a ref that is not ``Destroying`` is hard-deleted unless it is ``Ready``
    (``deleteIfNotReady``): the record returned is then the last state of a row that is gone.

    Raises:
        NoTransitionException: the store-ref machine has no such transition.
        ConcurrentOperationException: the compare-and-swap lost ("Multiple threads ... racing condition").
    """
    fields: dict[str, Any] = {}
    if answer is not None and answer.result:
        if answer.path is not None:
            fields["install_path"] = answer.path
        if answer.physical_size > 0:
            fields["physical_size"] = answer.physical_size
    try:
        moved = store.transit(ref, event, **fields)
    except IllegalTransition as exc:
        raise NoTransitionException(str(exc)) from exc
    except NotFound as exc:
        raise NullPointerException(f"{exc} (the row was removed)") from exc
    except ConcurrencyError as exc:
        raise ConcurrentOperationException(
            f"Multiple threads are trying to update data object state, racing condition: {exc}"
        ) from exc
    if event == RefEvent.OperationFailed and moved.state not in (RefState.Destroying, RefState.Ready):
        store.delete(moved, by="SnapshotObject.deleteIfNotReady")
    return moved
