"""``StorPoolSnapshotStrategy``: DELETE and COPY of StorPool-resident snapshots (spec §6.2, §8).

TAKE and BACKUP of StorPool volumes go to the Default strategy, with the StorPool driver doing the work; this
strategy's own take and revert are never selected.
"""

from __future__ import annotations

import logging

import attrs

from snapshotfsm.chains import chain_parent, live_child, same_path
from snapshotfsm.describe import snapshot_str
from snapshotfsm.drivers.base import Answer
from snapshotfsm.drivers.storpool import SP_DEV_PATH, StorPoolDriver, sp_name
from snapshotfsm.errors import (
    CloudException,
    CloudRuntimeException,
    InvalidParameterValueException,
    NullPointerException,
)
from snapshotfsm.names import RefEvent, RefState, SnapshotEvent, SnapshotState
from snapshotfsm.objects import snapshot_event, store_ref_event
from snapshotfsm.store.records import (
    Snapshot,
    SnapshotDetail,
    SnapshotStoreRef,
    SnapshotZoneRef,
    StoragePool,
)
from snapshotfsm.strategies.base import (
    DeleteRun,
    Operation,
    Priority,
    SnapshotStrategy,
    StrategyEnv,
    left_to_gc,
    service_delete,
    store_zone,
)

log = logging.getLogger(__name__)
SPS = "StorPoolSnapshotStrategy"

SP_RECOVERED_SNAPSHOT = "SP_RECOVERED_SNAPSHOT"


class StorPoolSnapshotStrategy(SnapshotStrategy):
    """HIGHEST for DELETE and COPY of snapshots that live on StorPool."""

    name = "StorPoolSnapshotStrategy"

    def can_handle(self, env: StrategyEnv, snapshot: Snapshot, op: Operation, zone_id: int | None) -> Priority:
        """Spec §6.2: only DELETE and COPY; no StorPool pool at all no; then by where the snapshot's refs are.

        With no primary row in ``snapshot_view`` (of the zone, when given), HIGHEST when the snapshot's first image
        ref has a StorPool path; else HIGHEST when a StorPool pool, of any zone, holds a Ready or Created ref.
        """
        if op not in (Operation.DELETE, Operation.COPY):
            return Priority.CANT_HANDLE
        pools = env.store.find(StoragePool, "pool_type = 'StorPool' AND removed IS NULL")
        if not pools:
            return Priority.CANT_HANDLE
        rows = view_rows(env, snapshot.id, zone_id)
        if not any(row.role == "Primary" for row in rows):
            first_image = env.store.first(SnapshotStoreRef, "snapshot_id = ? AND store_role = 'Image'", (snapshot.id,))
            on_storpool = first_image is not None and (first_image.install_path or "").startswith(SP_DEV_PATH)
            return Priority.HIGHEST if rows and on_storpool else Priority.CANT_HANDLE
        for pool in pools:
            ref = env.store.first(
                SnapshotStoreRef,
                "store_role = 'Primary' AND store_id = ? AND snapshot_id = ?",
                (pool.id, snapshot.id),
            )
            if ref is not None and ref.state in (RefState.Ready, RefState.Created):
                return Priority.HIGHEST
            if ref is not None and _resumable(env, snapshot, ref):
                return Priority.HIGHEST
        return Priority.CANT_HANDLE

    def copy_snapshot(
        self, env: StrategyEnv, snapshot: Snapshot, src_ref: SnapshotStoreRef, dest_pool: StoragePool
    ) -> str | None:
        """``StorPoolSnapshotStrategy.copySnapshot`` (spec §8): the error to complete the callback with, or None.

        Each step persists what it did before the next one runs, so a failure leaves the partial state CloudStack
        leaves: an exported snapshot and its ``SP_RECOVERED_SNAPSHOT`` detail, cleared later by the recovery check.
        The error texts keep upstream's ``{}`` placeholders, which ``String.format`` never fills.
        """
        location = env.config.text("sp.cluster.location", pool=dest_pool.id) or None
        if location is None:
            # CloudStack completes the callback with this error, then falls through and completes it a second
            # time with no error; that second completion finds the destination ref already deleted.
            return "The snapshot is not in the right location"
        src_pool = env.store.get(StoragePool, src_ref.store_id)
        source = env.driver(src_pool)
        dest = env.driver(dest_pool)
        assert isinstance(source, StorPoolDriver)
        assert isinstance(dest, StorPoolDriver)
        name = sp_name(src_ref.install_path or "")
        if not source.snapshot_export(name, location).result:
            return "Failed to export snapshot [{}] from [{}] due to [{}]"
        env.add_detail(snapshot.id, SP_RECOVERED_SNAPSHOT, f"{name};{location}", display=True)
        if not dest.snapshot_from_remote(name, source, snapshot.size, snapshot.id).result:
            return "Failed to copy snapshot [{}] to [{}] due to [{}]"
        if not dest.snapshot_reconcile(name).result:
            return "Failed to reconcile snapshot [{}] from [{}] due to [{}]"
        return None

    def delete(self, env: StrategyEnv, snapshot_id: int, zone_id: int | None) -> DeleteRun:
        """``StorPoolSnapshotStrategy.deleteSnapshot`` (spec §8): per primary row of ``snapshot_view``, then the sweep.

        Each primary row (only the zone's first, when a zone is given) deletes the StorPool snapshot by its global
        name, so a second row finds the object gone (``objectDoesNotExist``: true). A snapshot with no row left to
        show but the view's empty one (every ref Destroyed or hidden) fails on that row's null store role. Whatever
        the rows returned, when every ref left is Destroyed or Destroying the snapshot is written Destroyed directly.
        No Snapshot event is fired anywhere; hardened (``storpool_delete_marks_snapshot``), a whole delete of a
        BackedUp snapshot moves it to Destroying first and back to BackedUp when it fails.

        Raises:
            CloudRuntimeException: "Cannot delete snapshot due to ..." around anything a row threw.
        """
        store = env.store
        snapshot = store.get(Snapshot, snapshot_id)
        name = self._snapshot_name(env, snapshot)
        marked = (
            store.profile.storpool_delete_marks_snapshot
            and zone_id is None
            and snapshot.status == SnapshotState.BackedUp
        )
        if marked:
            # Hardened: the snapshot says a delete is under way before StorPool is asked (the restart's re-delete,
            # spec §10.3, then finds it); upstream fires no snapshot event here.
            snapshot = snapshot_event(store, snapshot, SnapshotEvent.DestroyRequested)
        try:
            result = yield from self._delete_rows(env, snapshot, zone_id, name)
        except CloudException:
            if marked:
                _unmark(env, snapshot_id)
            raise
        if marked and not result:
            _unmark(env, snapshot_id)
        return result

    def _delete_rows(self, env: StrategyEnv, snapshot: Snapshot, zone_id: int | None, name: str | None) -> DeleteRun:
        """The body of ``deleteSnapshot``: each primary row of ``snapshot_view``, then the sweep to Destroyed."""
        store = env.store
        snapshot_id = snapshot.id
        result = False
        try:
            for row in view_rows(env, snapshot_id, zone_id):
                if row.role is None or row.store_id is None:
                    raise NullPointerException(NO_STORE_ROLE)
                if row.role == "Image":
                    continue
                pool = store.get(StoragePool, row.store_id)
                if zone_id is not None:
                    if row.zone_id != zone_id:
                        continue
                    result = yield from self._delete_on(env, snapshot, zone_id, name, pool)
                    break
                result = yield from self._delete_on(env, snapshot, zone_id, name, pool)
        except CloudException as exc:
            raise CloudRuntimeException(f"Cannot delete snapshot due to {exc.message}") from exc
        remaining = store.find(SnapshotStoreRef, "snapshot_id = ?", (snapshot_id,))
        if all(r.state in (RefState.Destroyed, RefState.Destroying) for r in remaining):
            current = store.first(Snapshot, "id = ?", (snapshot_id,))
            if current is not None and current.status != SnapshotState.Destroyed:
                store.write_state_directly(
                    current, SnapshotState.Destroyed, by="StorPoolSnapshotStrategy.updateSnapshotToDestroyed"
                )
            return True
        return result

    @staticmethod
    def _snapshot_name(env: StrategyEnv, snapshot: Snapshot) -> str | None:
        """``StorPoolHelper.getSnapshotName``: from the detail named after the uuid, else the first StorPool ref.

        In the second case the detail is added, so the next delete finds the name even when the ref is gone.
        """
        detail = env.store.first(SnapshotDetail, "snapshot_id = ? AND name = ?", (snapshot.id, snapshot.uuid))
        if detail is not None:
            return sp_name(detail.value) if detail.value.startswith(SP_DEV_PATH) else None
        live = env.store.find(SnapshotStoreRef, "snapshot_id = ? AND state != ?", (snapshot.id, RefState.Destroyed))
        for ref in live:
            if (ref.install_path or "").startswith(SP_DEV_PATH):
                env.add_detail(snapshot.id, snapshot.uuid, ref.install_path or "", display=False)
                return sp_name(ref.install_path or "")
        return None

    def _delete_on(
        self, env: StrategyEnv, snapshot: Snapshot, zone_id: int | None, name: str | None, pool: StoragePool
    ) -> DeleteRun:
        """The inner ``deleteSnapshot``: StorPool's ``snapshotDelete``, then the rows, with the primary refs moved."""
        driver = env.driver(pool)
        assert isinstance(driver, StorPoolDriver)
        hardened = env.store.profile.failed_storage_delete_left_to_gc
        marks = env.store.profile.storpool_delete_marks_snapshot
        try:
            answer = driver.snapshot_delete(name or "null")
        except CloudException as exc:
            if not hardened:
                raise
            answer = Answer(result=False, details=exc.message)
        exported = not answer.result and "still exported" in answer.details
        # Hardened (storpool_delete_marks_snapshot): StorPool has no such snapshot, so it is deleted: the rows go on.
        gone = marks and not answer.result and answer.details.startswith("objectDoesNotExist")
        primaries = [
            r
            for r in env.store.find(
                SnapshotStoreRef, "snapshot_id = ? AND state != ?", (snapshot.id, RefState.Destroyed)
            )
            if r.store_role == "Primary" and (zone_id is None or store_zone(env.store, r) == zone_id)
        ]
        if not (marks and exported):
            # Hardened: a refused delete deleted nothing, and its refs stay as they were (upstream leaves them
            # Destroying, for the storage GC to delete what StorPool kept).
            _process(env, primaries, RefEvent.DestroyRequested)
        if not answer.result and not gone:
            if exported:
                if not marks:
                    _process(env, primaries, RefEvent.OperationFailed)
                raise CloudRuntimeException(
                    f"The snapshot [{name}] was exported to another cluster. [{answer.details}]"
                )
            log.warning("Failed to clean-up Storpool snapshot %s. Error: %s", name, answer.details)
            if answer.details.startswith("objectDoesNotExist"):
                return True
        result = False
        left = hardened and not answer.result and not gone
        if answer.result or gone or left:
            # Hardened (``base.left_to_gc``): the primary refs stay Destroying for the storage GC; the rows go on.
            result = yield from self._delete_from_db(env, snapshot, zone_id)
        if result and left:
            _process(env, primaries, RefEvent.OperationFailed)
        elif result:
            _process(env, primaries, RefEvent.OperationSucceeded)
            for ref in env.store.find(
                SnapshotStoreRef, "snapshot_id = ? AND state = ?", (snapshot.id, RefState.Destroyed)
            ):
                if SP_DEV_PATH.rstrip("/") in (ref.install_path or ""):
                    env.store.delete(ref, by="StorPoolSnapshotStrategy.cleanUpDestroyedRecords")
        else:
            _process(env, primaries, RefEvent.OperationFailed)
        return result

    def _delete_from_db(self, env: StrategyEnv, snapshot: Snapshot, zone_id: int | None) -> DeleteRun:
        """``deleteSnapshotFromDbIfNeeded``: the rows, after the StorPool snapshot is already gone.

        Upstream removes the ``snapshot_details`` row whose *id* is the snapshot's id (not the detail it found), and
        checks the snapshot's state only now, so a refused state leaves the storage side deleted.

        Raises:
            InvalidParameterValueException: a zone delete of an Allocated or CreatedOnPrimary snapshot, or a state
                that cannot be deleted.
        """
        store = env.store
        if store.first(SnapshotDetail, "snapshot_id = ? AND name = ?", (snapshot.id, snapshot.uuid)) is not None:
            wrong = store.first(SnapshotDetail, "id = ?", (snapshot.id,))
            if wrong is not None:
                store.delete(wrong, by="SnapshotDetailsDao.remove(snapshotId)")
        state = snapshot.status
        if zone_id is not None and state in (SnapshotState.Allocated, SnapshotState.CreatedOnPrimary):
            raise InvalidParameterValueException(f"Snapshot in {state} can not be deleted for a zone")
        if state == SnapshotState.Allocated:
            store.remove(store.get(Snapshot, snapshot.id), by="StorPoolSnapshotStrategy.deleteSnapshotFromDbIfNeeded")
            return True
        if state == SnapshotState.Destroyed:
            return True
        if state == SnapshotState.Error:
            refs = store.find(SnapshotStoreRef, "snapshot_id = ? AND state != ?", (snapshot.id, RefState.Destroyed))
            gone = [r for r in refs if zone_id is None or store_zone(env.store, r) == zone_id]
            for ref in gone:
                store.delete(ref, by="StorPoolSnapshotStrategy.deleteSnapshotFromDbIfNeeded (expunge)")
            if len(gone) == len(refs):
                store.remove(
                    store.get(Snapshot, snapshot.id), by="StorPoolSnapshotStrategy.deleteSnapshotFromDbIfNeeded"
                )
            return True
        if state not in (SnapshotState.BackedUp, SnapshotState.Destroying):
            raise InvalidParameterValueException(
                f"Can't delete snapshot {snapshot_str(snapshot)} due to it is in {state} Status"
            )
        images = [
            r
            for r in env.image_refs(snapshot.id)
            if (zone_id is not None and store_zone(env.store, r) == zone_id)
            or (zone_id is None and r.state == RefState.Ready)
        ]
        for ref in images:
            deleted = yield from self._delete_on_image(env, ref)
            if not deleted:
                return False
        for zone_ref in store.find(SnapshotZoneRef, "snapshot_id = ? AND removed IS NULL", (snapshot.id,)):
            if zone_id is None or zone_ref.zone_id == zone_id:
                store.remove(zone_ref, by="SnapshotZoneDao.removeSnapshotFromZone")
        return True

    def _delete_on_image(self, env: StrategyEnv, ref: SnapshotStoreRef) -> DeleteRun:
        """``deleteSnapshotOnImageAndPrimary``: SPS's own chain delete on the image store, then ``display=false``.

        The walk goes up the parents while the snapshot is Destroying, Destroyed, Error or BackedUp and has no live
        child; it deletes on the image store only when the image ref's path is not a StorPool path (a backup that
        StorPool keeps itself); storage errors are logged and the walk goes on.
        """
        store = env.store
        on_storpool = (ref.install_path or "").startswith(SP_DEV_PATH)
        result = False
        result_set = False
        current: SnapshotStoreRef | None = ref
        while current is not None and store.get(Snapshot, current.snapshot_id).status in SPS_CHAIN_STATES:
            if live_child(store, current) is not None:
                break
            parent = chain_parent(store, current)
            if same_path(current, parent):
                moved = store_ref_event(store, current, RefEvent.DestroyRequested)
                store_ref_event(store, moved, RefEvent.OperationSucceeded)
                result, result_set = True, True
            elif not on_storpool:
                try:
                    deleted = yield from service_delete(env, current)
                except CloudException as exc:
                    log.debug("Failed to delete snapshot on storage. %s", exc)
                    if left_to_gc(env, current, exc) and not result_set:
                        # Hardened: the file is the storage GC's now; the delete goes on as if it went.
                        result, result_set = True, True
                else:
                    if not result_set:
                        result, result_set = deleted, True
            current = parent
        fresh = store.first(SnapshotStoreRef, "id = ?", (ref.id,))
        if fresh is not None:
            store.update(fresh, display=False)
        return result


@attrs.frozen
class ViewRow:
    """What the strategy reads of a ``snapshot_view`` row: the ref's store role and id, and its zone."""

    role: str | None
    store_id: int | None
    zone_id: int | None


def view_rows(env: StrategyEnv, snapshot_id: int, zone_id: int | None) -> list[ViewRow]:
    """``SnapshotJoinDao.listBySnapshotIdAndZoneId`` (spec §8): the snapshot's ``snapshot_view`` rows, by zone if given.

    The view joins only refs that are not Destroyed and are displayed; with none, the snapshot still has a row, with
    no store role, one for each of its zones (``snapshot_zone_ref``), or one with no zone at all. A removed
    snapshot has no row.
    """
    store = env.store
    if store.first(Snapshot, "id = ? AND removed IS NULL", (snapshot_id,)) is None:
        return []
    refs = store.find(
        SnapshotStoreRef, "snapshot_id = ? AND state != ? AND display = 1", (snapshot_id, RefState.Destroyed)
    )
    rows = [ViewRow(r.store_role, r.store_id, store_zone(env.store, r)) for r in refs]
    if not rows:
        zones = store.find(SnapshotZoneRef, "snapshot_id = ? AND removed IS NULL", (snapshot_id,))
        rows = [ViewRow(None, None, z.zone_id) for z in zones] or [ViewRow(None, None, None)]
    return [row for row in rows if zone_id is None or row.zone_id == zone_id]


NO_STORE_ROLE = (
    'Cannot invoke "com.cloud.storage.DataStoreRole.isImageStore()" because the return value of '
    '"com.cloud.api.query.vo.SnapshotJoinVO.getStoreRole()" is null'
)
"""Java 17's message for the view row of a snapshot with no ref to show."""

SPS_CHAIN_STATES = (SnapshotState.Destroying, SnapshotState.Destroyed, SnapshotState.Error, SnapshotState.BackedUp)
"""The snapshot states SPS's ``deleteSnapshotChain`` walks through (BackedUp too, unlike the default strategy's)."""


def _resumable(env: StrategyEnv, snapshot: Snapshot, ref: SnapshotStoreRef) -> bool:
    """Hardened (``storpool_delete_marks_snapshot``): a delete cut short left this primary ref for its re-run.

    Upstream's ``canHandle`` wants a Ready or Created ref on a StorPool pool (spec §6.2), which the first run of the
    delete has already moved to Destroying; the re-delete of the Destroying snapshot (§10.3) would find no strategy.
    """
    return (
        env.store.profile.storpool_delete_marks_snapshot
        and snapshot.status == SnapshotState.Destroying
        and ref.state == RefState.Destroying
    )


def _unmark(env: StrategyEnv, snapshot_id: int) -> None:
    """Hardened (``storpool_delete_marks_snapshot``): a failed whole delete puts its snapshot back (OperationFailed)."""
    current = env.store.first(Snapshot, "id = ? AND removed IS NULL", (snapshot_id,))
    if current is not None and current.status == SnapshotState.Destroying:
        snapshot_event(env.store, current, SnapshotEvent.OperationFailed)


def _process(env: StrategyEnv, refs: list[SnapshotStoreRef], event: str) -> None:
    """``processResult``: the event on each primary ref, read afresh as ``ObjectInDataStoreManager.update`` does.

    Raises:
        CloudRuntimeException: "Failed to update state: ..." when a ref has no such transition or is gone.
        NullPointerException: OperationFailed on a ref that is gone (``processEvent``'s finally block).
    """
    for ref in refs:
        current = env.store.first(SnapshotStoreRef, "id = ?", (ref.id,))
        if current is None and env.store.profile.failed_storage_delete_left_to_gc:
            continue  # Hardened: the storage GC took the Destroying ref while the delete waited (``base.left_to_gc``)
        store_ref_event(env.store, current if current is not None else ref, event)
