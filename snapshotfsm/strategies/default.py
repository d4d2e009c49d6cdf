"""``DefaultSnapshotStrategy`` (formerly XenserverSnapshotStrategy): TAKE, BACKUP and DELETE by default.

It takes the snapshots of every pool without a storage-system snapshot (spec §5.5, §5.9, §6.2, §7.3).
"""

from __future__ import annotations

import json
import logging

from snapshotfsm.chains import (
    chain_parent,
    image_ref_in_zone,
    live_child,
    newest_ready_ref,
    parent_paths,
    root_snapshot_id,
    same_path,
    update_end_of_chain,
)
from snapshotfsm.describe import snapshot_object_str, snapshot_str
from snapshotfsm.drivers.primary import CLVM_POOL_TYPES
from snapshotfsm.errors import (
    CloudException,
    CloudRuntimeException,
    InvalidParameterValueException,
    NeverAnswered,
    NotFound,
    NoTransitionException,
    NullPointerException,
    SnapshotFSMError,
)
from snapshotfsm.names import RefEvent, RefState, SnapshotEvent, SnapshotState, VolumeEvent
from snapshotfsm.objects import snapshot_event, volume_transit
from snapshotfsm.store.records import (
    Snapshot,
    SnapshotStoreRef,
    SnapshotZoneRef,
    StoragePool,
    VmInstance,
    VmSnapshot,
    Volume,
    VolumeDetail,
)
from snapshotfsm.strategies.base import (
    BackupKind,
    BackupPlan,
    BlockedForEver,
    DeleteRun,
    Operation,
    Priority,
    SnapshotStrategy,
    SnapshotTake,
    StrategyEnv,
    counted_on_primary,
    left_to_gc,
    lock_key,
    off_primary_usage,
    primary_ref,
    service_delete_blocking,
    store_zone,
)

log = logging.getLogger(__name__)
MS_ID = "MS_ID"


class DefaultSnapshotStrategy(SnapshotStrategy):
    """The strategy of last resort: DEFAULT for TAKE, BACKUP and DELETE; never COPY."""

    name = "DefaultSnapshotStrategy"

    def can_handle(
        self,
        env: StrategyEnv,
        snapshot: Snapshot,
        op: Operation,
        zone_id: int | None,  # noqa: ARG002
    ) -> Priority:
        """Spec §6.2: never COPY; DEFAULT for everything else, with two exceptions.

        TAKE is refused when the VM has KVM file-based Disk VM snapshots or any DiskAndMemory VM snapshot; REVERT
        has rules of its own (:meth:`_can_revert`).
        """
        if op is Operation.COPY:
            return Priority.CANT_HANDLE
        volume = env.store.get(Volume, snapshot.volume_id)
        if op is Operation.TAKE:
            # vmInstanceDao.findById skips soft-removed rows: a removed VM's volume is handled like a detached one.
            vm = env.store.first(VmInstance, "id = ? AND removed IS NULL", (volume.instance_id,))
            if volume.instance_id is None or vm is None:
                return Priority.DEFAULT
            vm_snaps = env.store.find(VmSnapshot, "vm_id = ? AND removed IS NULL", (volume.instance_id,))
            if any(v.type == "Disk" and v.kvm_file_based for v in vm_snaps) or any(
                v.type == "DiskAndMemory" for v in vm_snaps
            ):
                return Priority.CANT_HANDLE
            return Priority.DEFAULT
        if op is Operation.REVERT:
            return self._can_revert(env, snapshot)
        return Priority.DEFAULT

    @staticmethod
    def _can_revert(env: StrategyEnv, snapshot: Snapshot) -> Priority:
        """Spec §14.4: a QCOW2 volume with a Ready ref in its zone, or a CLVM one with a Ready image ref in its zone.

        The volume is read as ``volumeDao.findById`` does (a removed one is not found: CANT_HANDLE), and its pool is
        ``pool_id`` only.
        """
        volume = env.store.first(Volume, "id = ? AND removed IS NULL", (snapshot.volume_id,))
        if volume is None:
            return Priority.CANT_HANDLE
        ready = [
            r
            for r in env.store.find(SnapshotStoreRef, "snapshot_id = ? AND state = ?", (snapshot.id, RefState.Ready))
            if store_zone(env.store, r) == volume.data_center_id
        ]
        if volume.format == "QCOW2" and ready:
            return Priority.DEFAULT
        pool = None if volume.pool_id is None else env.store.get(StoragePool, volume.pool_id)
        if pool is not None and pool.pool_type in CLVM_POOL_TYPES and any(r.store_role == "Image" for r in ready):
            return Priority.DEFAULT
        return Priority.CANT_HANDLE

    def before_take(self, env: StrategyEnv, take: SnapshotTake) -> None:
        """Spec §5.5 steps 1-3: refuse quiesce, lock the snapshot row, volume SnapshotRequested.

        SnapshotRequested is outside the inner try/finally, so a volume that is not Ready raises here without an
        OperationFailed, and only the lock is released (by ``after_take``'s caller on the error path).
        """
        if take.payload.quiescevm:
            raise InvalidParameterValueException("can't handle quiescevm equal true for volume snapshot")
        if not env.acquire_lock(lock_key(take.snapshot.id)):
            text = snapshot_object_str(take.snapshot, take.pool.id, take.image_store_id)
            raise CloudRuntimeException(f"Failed to get lock on snapshot: {text}")
        take.locked = True
        try:
            volume_transit(env.store, take.volume.id, VolumeEvent.SnapshotRequested)
        except BaseException:
            self.release(env, take)
            raise

    def after_take(self, env: StrategyEnv, take: SnapshotTake, *, ok: bool) -> None:
        """Spec §5.5 steps 5-6: volume back to Ready, the MS_ID detail on success, and the lock released."""
        try:
            volume_transit(
                env.store, take.volume.id, VolumeEvent.OperationSucceeded if ok else VolumeEvent.OperationFailed
            )
            if ok:
                env.add_detail(take.snapshot.id, MS_ID, str(env.ms_id), display=False)
        finally:
            self.release(env, take)

    @staticmethod
    def release(env: StrategyEnv, take: SnapshotTake) -> None:
        """Release the snapshot's lock (the outer ``finally`` of DefaultSnapshotStrategy.takeSnapshot)."""
        if take.locked:
            env.release_lock(lock_key(take.snapshot.id))
            take.locked = False

    def delete(self, env: StrategyEnv, snapshot_id: int, zone_id: int | None) -> DeleteRun:
        """Spec §9.4: the per-state rules, then the store refs and their chains."""
        return _DefaultDelete(env).run(snapshot_id, zone_id)

    def backup_plan(self, env: StrategyEnv, take: SnapshotTake) -> BackupPlan:
        """``DefaultSnapshotStrategy.backupSnapshot``'s decision (spec §7.3, §16.2): an empty delta, a delta or a full.

        An empty delta when the snapshot's primary path is its parent's and the parent's first Ready-or-Hidden image
        ref in the parent's zone is Ready. Otherwise full, unless XenServer with a Ready primary and a Ready image
        ref of the volume: when the oldest Ready primary ref is on the volume's pool and is not the newest (the
        snapshot's own), the newest image ref's chain is followed up to ``snapshot.delta.max - 1`` links and the
        backup is a delta until that many are found. When the oldest is on another pool (the volume migrated), that
        stale ref is deleted and the backup is full.
        """
        snapshot, volume, store = take.snapshot, take.volume, env.store
        current = primary_ref(store, snapshot.id, take.pool.id)
        parent = chain_parent(store, current) if current is not None else None
        if current is not None and parent is not None and same_path(current, parent):
            on_image = image_ref_in_zone(store, parent.snapshot_id, store_zone(store, parent))
            if on_image is not None and on_image.state == RefState.Ready:
                return BackupPlan(BackupKind.EMPTY_DELTA, full=False, parent_ref_id=on_image.id)
            log.debug("parent snapshot hasn't been backed up yet")
        latest_image = newest_ready_ref(store, volume.id, "Image")
        latest_primary = newest_ready_ref(store, volume.id, "Primary")
        if latest_image is None or latest_primary is None or snapshot.hypervisor_type != "XenServer":
            return BackupPlan(BackupKind.COPY, full=True)
        oldest = newest_ready_ref(store, volume.id, "Primary", oldest=True)
        if oldest is None or oldest.id == latest_primary.id:
            return BackupPlan(BackupKind.COPY, full=True)
        if oldest.store_id != volume.pool_id:
            store.delete(oldest, by="DefaultSnapshotStrategy.backupSnapshot (volume migrated)")
            return BackupPlan(BackupKind.COPY, full=True)
        delta_max = env.config.number("snapshot.delta.max")
        links, ref = 1, latest_image
        while links < delta_max and ref.parent_snapshot_id:
            found = image_ref_in_zone(store, ref.parent_snapshot_id, volume.data_center_id)
            if found is None:
                break
            ref, links = found, links + 1
        if links >= delta_max:
            return BackupPlan(BackupKind.COPY, full=True)
        return BackupPlan(BackupKind.COPY, full=False)

    def post_snapshot_creation(self, env: StrategyEnv, take: SnapshotTake) -> None:
        """Spec §5.9: in one transaction, remove MS_ID and the parents' primary refs (§21.2 ``postSnapshotCreation``).

        Unless the pool is RBD, each parent's primary ref on this pool is deleted with a usage OFF_PRIMARY; the
        current primary ref gets ``parent_snapshot_id = 0``. The catch is inside the transaction, after the MS_ID
        delete: an error is only logged, and what was done before it commits with the rest (the take goes on). A row
        gone meanwhile (``NotFound``: CloudStack's null from ``findById``, dereferenced) is caught there too.
        """
        snapshot_id = take.snapshot.id
        with env.store.atomic():
            env.remove_detail(snapshot_id, MS_ID)
            try:
                self._drop_parents_on_primary(env, take)
            except (CloudException, NotFound) as exc:
                log.warning("Failed to delete snapshot [%s] from primary storage: %s", snapshot_id, exc)

    @staticmethod
    def _drop_parents_on_primary(env: StrategyEnv, take: SnapshotTake) -> None:
        """The parents' primary refs go, each with an OFF_PRIMARY usage event; the snapshot's ref ends its chain.

        Spec §5.9, §16.2 item 5. Only when the snapshot's ref has a parent. The usage events all carry the immediate
        parent's account, zone, id and name, with sizes 0, whichever ref is deleted (upstream's quirk). On RBD the
        parents' refs stay; the ``parent_snapshot_id = 0`` write happens anyway. A parent whose row is gone throws
        at its first use, before any write (caught by the caller).

        Raises:
            NullPointerException: the parent's snapshot row is gone (not on RBD).
        """
        current = primary_ref(env.store, take.snapshot.id, take.pool.id)
        if current is None or not current.parent_snapshot_id:
            return
        parent = env.store.first(Snapshot, "id = ? AND removed IS NULL", (current.parent_snapshot_id,))
        if take.pool.pool_type != "RBD":
            if parent is None:
                # getParent wraps the null row of a removed parent; its first use throws.
                raise NullPointerException(
                    'Cannot invoke "com.cloud.storage.SnapshotVO.getId()" because "this.snapshot" is null'
                )
            parent_id = parent.id
            while parent_id:
                ref = primary_ref(env.store, parent_id, take.pool.id)
                if ref is None:
                    break
                parent_id = ref.parent_snapshot_id
                off_primary_usage(env.store, parent, virtual_size=0)
                _give_back_on_primary(env, ref)
                env.store.delete(ref, by="DefaultSnapshotStrategy.postSnapshotCreation")
        env.store.update(current, parent_snapshot_id=0)


def _give_back_on_primary(env: StrategyEnv, ref: SnapshotStoreRef) -> None:
    """Hardened (``storage_charged_as_recounted``): a parent's primary ref the recount counted gives its size back.

    Departs from spec §5.9: ``postSnapshotCreation`` decrements nothing. A parent with no image ref (one kept on
    primary after its backup failed, or whose lost backup task the restart ended there) is counted on
    ``primary_storage`` by the recount (§19.2); once the XenServer host has deleted its file and its ref goes, so
    does that charge, in the same transaction.
    """
    if env.give_back_primary is None or not env.store.profile.storage_charged_as_recounted:
        return
    if counted_on_primary(env.store, ref):
        env.give_back_primary(env.store.get(Snapshot, ref.snapshot_id).account_id, ref.physical_size)


class _DefaultDelete:
    """``DefaultSnapshotStrategy.deleteSnapshot`` and its helpers (spec §9.4), as a generator over driver waits."""

    def __init__(self, env: StrategyEnv) -> None:
        self.env = env
        self.store = env.store

    def run(self, snapshot_id: int, zone_id: int | None) -> DeleteRun:
        snapshot = self.store.get(Snapshot, snapshot_id)
        state = snapshot.status
        if zone_id is not None and state in (SnapshotState.Allocated, SnapshotState.CreatedOnPrimary):
            raise InvalidParameterValueException(f"Snapshot in {state} can not be deleted for a zone")
        if state == SnapshotState.Allocated:
            self.store.remove(snapshot, by="DefaultSnapshotStrategy.deleteSnapshot")
            return True
        if state == SnapshotState.Destroyed:
            return True
        if state == SnapshotState.Error:
            refs = [r for r in self._refs(snapshot_id, None) if r.state != RefState.Destroyed]
            deleted = [r for r in refs if zone_id is None or store_zone(self.store, r) == zone_id]
            for ref in deleted:
                self.store.delete(ref, by="DefaultSnapshotStrategy.deleteSnapshot (expunge)")
            if len(deleted) == len(refs):
                self.store.remove(snapshot, by="DefaultSnapshotStrategy.deleteSnapshot")
            return True
        if state == SnapshotState.CreatedOnPrimary:
            self.store.write_state_directly(
                snapshot, SnapshotState.Destroyed, by="DefaultSnapshotStrategy.deleteSnapshot"
            )
            return True
        if state not in (SnapshotState.BackedUp, SnapshotState.Destroying):
            raise InvalidParameterValueException(
                f"Can't delete snapshot {snapshot_str(snapshot)} due to it is in {state} Status"
            )
        return (yield from self._destroy_entries_and_files(snapshot, zone_id))

    def _refs(self, snapshot_id: int, zone_id: int | None) -> list[SnapshotStoreRef]:
        refs = self.store.find(SnapshotStoreRef, "snapshot_id = ?", (snapshot_id,))
        return [r for r in refs if zone_id is None or store_zone(self.store, r) == zone_id]

    def _destroy_entries_and_files(self, snapshot: Snapshot, zone_id: int | None) -> DeleteRun:
        """``destroySnapshotEntriesAndFiles``: every ref, the zone rows, then Destroyed once no ref is left."""
        if not (yield from self._delete_infos(snapshot, zone_id)):
            return False
        for zone_ref in self.store.find(SnapshotZoneRef, "snapshot_id = ? AND removed IS NULL", (snapshot.id,)):
            if zone_id is None or zone_ref.zone_id == zone_id:
                self.store.remove(zone_ref, by="SnapshotZoneDao.removeSnapshotFromZone")
        update_end_of_chain(self.store, snapshot)
        # Hardened (``base.left_to_gc``): a ref left Destroying for the storage GC is gone as far as the delete goes.
        gone = (RefState.Destroyed, RefState.Destroying) if self.store.profile.failed_storage_delete_left_to_gc else ()
        if [r for r in self._refs(snapshot.id, None) if r.state != RefState.Destroyed and r.state not in gone]:
            return True
        self.store.write_state_directly(
            self.store.get(Snapshot, snapshot.id),
            SnapshotState.Destroyed,
            by="DefaultSnapshotStrategy.updateSnapshotToDestroyed",
        )
        return True

    def _delete_infos(self, snapshot: Snapshot, zone_id: int | None) -> DeleteRun:
        """``deleteSnapshotInfos``: under the chain root's lock, each ref of the snapshot (in the zone), in one T.

        Spec §21.2 (``DefaultSnapshotStrategy.deleteSnapshot`` row), §21.3, §21.4.1, §21.6 quirk 3:

        - ``acquireInLockTable(rootId)`` writes its ``op_lock`` row over a connection of its own: taken before the
          transaction, kept when it rolls back. A refusal is ignored (the delete goes on without the lock), and the
          lock is released only after a normal return: on an exception it stays until the job's thread ends.
        - In the transaction: every ref and snapshot event of the call, the ``Hidden`` marks, ``display=false``, and
          the driver deletes' callbacks, which the image and default primary drivers complete on this thread
          (``service_delete_blocking``). Any exception leaving the block rolls all of it back: the snapshot back to
          BackedUp (or to a committed Destroying), its refs to Ready or Hidden with their ``display`` and
          ``update_count``. Files already deleted on storage stay deleted. A ``NoTransitionException`` is caught per
          ref inside (that ref returns false) and rolls nothing back.
        - A delete never answered blocks the thread for ever inside its transaction, which is never committed: the
          block rolls back (no one ever sees its writes) and the delete waits for ever, the job IN_PROGRESS, the
          lock held. No SQLite transaction stays open across the scheduler's turns.

        Not modelled: the Snapshot FSM events rolled back here were published on the event bus upstream (§21.6
        quirk 6); the history keeps only what committed. Other threads cannot see or touch the rows of the open
        transaction, as InnoDB would guarantee, because nothing else runs while it is open.
        """
        refs = [r for r in self._refs(snapshot.id, zone_id) if r.state != RefState.Destroyed]
        if self.store.profile.delete_refuses_during_copy:
            self._refuse_during_copy(snapshot, refs)
        key = lock_key(root_snapshot_id(self.store, snapshot.id))
        self.env.acquire_lock(key)  # a refusal (CloudStack's null after lock.timeout) is ignored, spec §21.6 quirk 3
        try:
            with self.store.atomic():
                result = False
                for ref in refs:
                    if self._delete_info(snapshot, ref):
                        result = True
        except NeverAnswered as blocked:
            yield BlockedForEver(blocked.operation)
            raise SnapshotFSMError(f"{blocked.operation} answered a call that never answers") from blocked
        self.env.release_lock(key)
        return result

    def _refuse_during_copy(self, snapshot: Snapshot, refs: list[SnapshotStoreRef]) -> None:
        """Hardened (``delete_refuses_during_copy``): no file is deleted while a ref cannot be destroyed.

        Departs from spec §9.4, §16.3: a copy's destination ref is ``Creating`` until the copy answers, and
        DestroyRequested has no transition there; upstream's ``deleteSnapshotChain`` throws on it after the files of
        the refs before it went, and the rollback of ``deleteSnapshotInfos`` (§21.4.1) leaves those refs Ready,
        naming nothing. Here the delete is refused first, with nothing written or deleted.

        Raises:
            InvalidParameterValueException: a ref of the snapshot in the delete's scope is in a state that cannot be
                destroyed (a copy to it is under way).
        """
        machine = self.store.definitions["snapshot_store_ref"]
        for ref in refs:
            if machine.transition(ref.state, RefEvent.DestroyRequested) is None:
                raise InvalidParameterValueException(
                    f"Can't delete snapshot {snapshot_str(snapshot)}: its {ref.store_role} store ref {ref.id} is"
                    f" {ref.state} (a copy is in progress); try again once it is done"
                )

    def _delete_info(self, snapshot: Snapshot, ref: SnapshotStoreRef) -> bool:
        """``deleteSnapshotInfo``: the last live ref moves the snapshot through Destroying to Destroyed."""
        alive = [r for r in self._refs(snapshot.id, None) if r.state not in (RefState.Destroyed, RefState.Hidden)]
        last = len(alive) <= 1
        current = self.store.get(Snapshot, snapshot.id)
        try:
            if last:
                current = snapshot_event(self.store, current, SnapshotEvent.DestroyRequested)
            if self.store.count(VolumeDetail, "name = 'SNAPSHOT_ID' AND value = ?", (str(snapshot.id),)):
                snapshot_event(self.store, current, SnapshotEvent.OperationFailed)
                volumes = [
                    d.volume_id
                    for d in self.store.find(VolumeDetail, "name = 'SNAPSHOT_ID' AND value = ?", (str(snapshot.id),))
                ]
                # reflectOnlySelectedFields(snapshotVO, "id", "uuid", "volumeId", "name"), in declaration order, and
                # for the details a JSON array of {"resourceId": volume id}.
                selected = json.dumps(
                    {"id": current.id, "volumeId": current.volume_id, "name": current.name, "uuid": current.uuid},
                    separators=(",", ":"),
                )
                used_by = ",".join(json.dumps({"resourceId": v}, separators=(",", ":")) for v in volumes)
                raise CloudRuntimeException(
                    f"Unable to delete snapshot [{selected}] because it is being used by the following volumes: "
                    f"[{used_by}]."
                )
            self._delete_chain(ref)
            fresh = self.store.first(SnapshotStoreRef, "id = ?", (ref.id,))
            if fresh is not None:
                self.store.update(fresh, display=False)
            if last:
                snapshot_event(self.store, self.store.get(Snapshot, snapshot.id), SnapshotEvent.OperationSucceeded)
        except NoTransitionException as exc:
            log.warning("Failed to delete %s: %s", snapshot_str(snapshot), exc)
            return False
        return True

    def _delete_chain(self, ref: SnapshotStoreRef) -> bool:
        """``deleteSnapshotChain``: delete a ref and walk up its parents, or only hide a ref that has a child.

        The walk goes on while the parent's snapshot is Destroying, Destroyed, Error or Hidden. Each storage delete
        is answered on this thread (``service_delete_blocking``). A KVM ref's child is looked for on every store of
        its role, and its parent is the parent's ref with a checkpoint, on any store (spec §16.3). The snapshot's TO
        is built first, outside the catch: for KVM that looks up every parent, and one with refs but no checkpoint
        throws as it is.

        Raises:
            CloudRuntimeException: "Failed to delete snapshot chain." (what the walk threw), or the TO's parent
                lookup (see :func:`snapshotfsm.chains.incremental_parent`).
        """
        parent_paths(self.store, ref)
        result = False
        result_set = False
        current: SnapshotStoreRef | None = ref
        try:
            while current is not None:
                if live_child(self.store, current) is not None:
                    self.store.write_state_directly(
                        current, RefState.Hidden, by="DefaultSnapshotStrategy.deleteSnapshotChain"
                    )
                    break
                parent = chain_parent(self.store, current)
                if same_path(current, parent):
                    if not result_set:
                        result, result_set = True, True
                else:
                    try:
                        deleted = service_delete_blocking(self.env, current)
                    except CloudException as exc:
                        # Hardened: the file is left to the storage GC; the refs of files that went stay so.
                        if not left_to_gc(self.env, current, exc):
                            raise
                        deleted = True
                    if not result_set:
                        result, result_set = deleted, True
                current = parent
                if current is None:
                    break
                parent_state = self.store.get(Snapshot, current.snapshot_id).status
                if parent_state not in CHAIN_DELETABLE:
                    break
        except CloudException as exc:
            log.warning("Failed to delete snapshot chain: %s", exc)
            raise CloudRuntimeException("Failed to delete snapshot chain.") from exc
        return result


CHAIN_DELETABLE = (SnapshotState.Destroying, SnapshotState.Destroyed, SnapshotState.Error, SnapshotState.Hidden)
"""``snapshotStatesAbleToDeleteSnapshot``: parents whose snapshot is in one of these are deleted with the chain."""
