"""``StorPoolSnapshotStrategy``: DELETE and COPY of StorPool-resident snapshots (spec §6.2, §8).

TAKE and BACKUP of StorPool volumes go to the Default strategy, with the StorPool driver doing the work; this
strategy's own take and revert are never selected.
"""

from __future__ import annotations

from snapshotfsm.drivers.storpool import SP_DEV_PATH, StorPoolDriver, sp_name
from snapshotfsm.errors import CloudRuntimeException, InvalidParameterValueException
from snapshotfsm.objects import store_ref_event
from snapshotfsm.store.records import Snapshot, SnapshotStoreRef, SnapshotZoneRef, StoragePool
from snapshotfsm.strategies.base import DeleteRun, Operation, Priority, SnapshotStrategy, StrategyEnv

SP_RECOVERED_SNAPSHOT = "SP_RECOVERED_SNAPSHOT"


class StorPoolSnapshotStrategy(SnapshotStrategy):
    """HIGHEST for DELETE and COPY of snapshots that live on StorPool."""

    name = "StorPoolSnapshotStrategy"

    def can_handle(self, env: StrategyEnv, snapshot: Snapshot, op: Operation, zone_id: int | None) -> Priority:
        """Spec §6.2: only DELETE and COPY; no StorPool pool at all no; then by where the snapshot's refs are.

        ``snapshot_view`` joins the refs with their stores' zones: with a zone, only that zone's refs count.
        """
        if op not in (Operation.DELETE, Operation.COPY):
            return Priority.CANT_HANDLE
        pools = env.store.find(StoragePool, "pool_type = 'StorPool' AND removed IS NULL")
        if not pools:
            return Priority.CANT_HANDLE
        by_id = {p.id: p for p in pools}
        primary = [
            r
            for r in env.primary_refs(snapshot.id or 0)
            if zone_id is None or env.store.get(StoragePool, r.store_id).data_center_id == zone_id
        ]
        if not primary:
            images = env.image_refs(snapshot.id or 0)
            if any((r.install_path or "").startswith(SP_DEV_PATH) for r in images):
                return Priority.HIGHEST
            return Priority.CANT_HANDLE
        if any(r.store_id in by_id and r.state in ("Ready", "Created") for r in primary):
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
        env.add_detail(snapshot.id or 0, SP_RECOVERED_SNAPSHOT, f"{name};{location}", display=True)
        if not dest.snapshot_from_remote(name, source, snapshot.size, snapshot.id).result:
            return "Failed to copy snapshot [{}] to [{}] due to [{}]"
        if not dest.snapshot_reconcile(name).result:
            return "Failed to reconcile snapshot [{}] from [{}] due to [{}]"
        return None

    def delete(self, env: StrategyEnv, snapshot_id: int, zone_id: int | None) -> DeleteRun:
        """``StorPoolSnapshotStrategy.deleteSnapshot`` (spec §8).

        For each live primary ref (of the zone, when given): the StorPool ``snapshotDelete`` and DestroyRequested on
        every primary ref. "Still exported" fails the refs (they stay Destroying) and throws; objectDoesNotExist counts
        as success. Then the database rules of the default strategy, the primary refs Destroyed and their rows
        removed, and the snapshot set Destroyed directly once every ref is Destroyed or Destroying.
        """
        store = env.store
        snapshot = store.get(Snapshot, snapshot_id)
        refs = [
            r
            for r in env.primary_refs(snapshot_id)
            if r.state != "Destroyed"
            and (zone_id is None or store.get(StoragePool, r.store_id).data_center_id == zone_id)
        ]
        for ref in refs:
            driver = env.driver(store.get(StoragePool, ref.store_id))
            assert isinstance(driver, StorPoolDriver)
            answer = driver.snapshot_delete(sp_name(ref.install_path or ""))
            primaries = [
                moved
                for r in env.primary_refs(snapshot_id)
                if r.state in ("Ready", "Hidden", "Failed", "Allocated", "Destroying")
                and (moved := store_ref_event(store, r, "DestroyRequested") if r.state != "Destroying" else r)
            ]
            if not answer.result and "still exported" in answer.details:
                for r in primaries:
                    store_ref_event(store, r, "OperationFailed")
                raise CloudRuntimeException(
                    f"The snapshot {snapshot.uuid} is exported to another cluster, it can't be deleted"
                )
            if not answer.result and not answer.details.startswith("objectDoesNotExist"):
                raise CloudRuntimeException(
                    f"Failed to delete snapshot {snapshot.uuid} from StorPool: {answer.details}"
                )
        self._delete_from_db(env, snapshot, zone_id)
        for ref in env.primary_refs(snapshot_id):
            if ref.state == "Destroying":
                moved = store_ref_event(store, ref, "OperationSucceeded")
                if moved is not None and (moved.install_path or "").startswith(SP_DEV_PATH):
                    store.delete(moved, by="StorPoolSnapshotStrategy.deleteSnapshot")
        remaining = store.find(SnapshotStoreRef, "snapshot_id = ?", (snapshot_id,))
        if all(r.state in ("Destroyed", "Destroying") for r in remaining):
            current = store.first(Snapshot, "id = ?", (snapshot_id,))
            if current is not None and current.status != "Destroyed":
                store.write_state_directly(current, "Destroyed", by="StorPoolSnapshotStrategy.deleteSnapshot")
        return True
        yield  # pragma: no cover - StorPool's API calls are synchronous: nothing to wait for

    @staticmethod
    def _delete_from_db(env: StrategyEnv, snapshot: Snapshot, zone_id: int | None) -> None:
        """``deleteSnapshotFromDbIfNeeded``: the default strategy's rules on the rows, image refs and zone rows."""
        store = env.store
        state = snapshot.status
        if state == "Allocated":
            store.remove(snapshot, by="StorPoolSnapshotStrategy.deleteSnapshotFromDbIfNeeded")
            return
        if state == "Destroyed":
            return
        if state == "Error":
            for ref in store.find(SnapshotStoreRef, "snapshot_id = ? AND store_role = 'Image'", (snapshot.id,)):
                store.delete(ref, by="StorPoolSnapshotStrategy.deleteSnapshotFromDbIfNeeded (expunge)")
            return
        if state not in ("BackedUp", "Error", "Destroying"):
            raise InvalidParameterValueException(f"Can't delete snapshot {snapshot.id} due to it is in {state} Status")
        for ref in store.find(SnapshotStoreRef, "snapshot_id = ? AND store_role = 'Image'", (snapshot.id,)):
            if ref.state != "Destroyed":
                store.delete(ref, by="StorPoolSnapshotStrategy.deleteSnapshotFromDbIfNeeded")
        for zone_ref in store.find(SnapshotZoneRef, "snapshot_id = ? AND removed IS NULL", (snapshot.id,)):
            if zone_id is None or zone_ref.zone_id == zone_id:
                store.remove(zone_ref, by="SnapshotZoneDao.removeSnapshotFromZone")
