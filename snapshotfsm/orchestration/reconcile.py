"""The ``hardened`` profile's reconciliations: what a restart or the storage GC puts right that upstream leaves.

Upstream's restart (spec §10.1) fails every job a dead server ran and cleans up only an ``Allocated`` or
``Creating`` snapshot; the storage GC (§10.5) deletes what rows say is gone, never what storage holds that no row
owns; nothing closes a bill whose object went by a path that publishes no usage event (§5.10). Each function here is
called only under the profile flag that names it (``snapshotfsm.profiles.Profile``), from the module where the
behaviour lives (``restart``, ``gc``); none of them is CloudStack's.

Every state change goes through the entity machines' own transitions (``states/*.toml``, never changed by a
profile) or, where CloudStack itself writes a state directly (``cleanupSnapshot``'s Error), through a named direct
write: the log says which method did it and that it is a hardened one.
"""

from __future__ import annotations

import logging

import attrs

from snapshotfsm.errors import CloudException
from snapshotfsm.names import (
    JobEvent,
    JobState,
    RefEvent,
    RefState,
    SnapshotEvent,
    SnapshotState,
    VolumeEvent,
    VolumeState,
)
from snapshotfsm.objects import snapshot_event, store_ref_event, volume_transit
from snapshotfsm.orchestration import accounting, recount
from snapshotfsm.orchestration.jobs import complete, serialized_response
from snapshotfsm.orchestration.lookups import store_resource_type
from snapshotfsm.orchestration.runtime import Runtime
from snapshotfsm.store.ownership import (
    DELETE,
    OFF_PRIMARY,
    ON_PRIMARY,
    ORPHAN_PARAMS,
    OWNED,
    STARTS,
    STOPPED,
    has_object,
)
from snapshotfsm.store.records import (
    AsyncJob,
    Snapshot,
    SnapshotStoreRef,
    StorageObject,
    TransitionLog,
    UsageEvent,
    Volume,
    Zone,
)
from snapshotfsm.store.store import Store
from snapshotfsm.strategies.base import counted_on_primary

log = logging.getLogger(__name__)

UNDO_TAKE = "AsyncJobManagerImpl.cleanupSnapshot (hardened: undo the take)"
"""How the log names the restart's undo of a take it failed (a direct write, as upstream's cleanupSnapshot's)."""
FINISH_DELETE = "updateSnapshotToDestroyed (hardened: the restart ends a delete whose refs all went)"
"""How the log names the restart's Destroyed write for a left-over delete that got that far (a direct write)."""
GONE = (SnapshotState.Error, SnapshotState.Destroyed)
IN_FLIGHT = (
    SnapshotState.Allocated,
    SnapshotState.Creating,
    SnapshotState.CreatedOnPrimary,
    SnapshotState.BackingUp,
)
"""Snapshot states whose objects may exist before the rows that will own them: the GC leaves their objects alone."""


def recount_account(rt: Runtime, account_id: int, ms_id: int) -> None:
    """``updateResourceCount`` for the account (spec §19.2): what a restart cannot know it charged, it recounts.

    ``ms_id`` is the server whose left-over jobs the cleanup fails: this one at its restart, a peer that left
    (``onManagementNodeLeft``). Only an account with no job under way on another live server is recounted: a take
    or delete running there has charged or will give back by amounts the recount cannot see yet, and recounting
    under it would make the count drift the other way (below zero, once that operation corrects its charge). The
    cleaned server's jobs are over by now (the cleanup failed them); when a peer left, this server's own jobs are
    still running and count as such.
    """
    if _busy_elsewhere(rt, account_id, ms_id):
        log.info("recount of account %s deferred: work under way on another server", account_id)
        return
    _recount(rt, account_id)


def _busy_elsewhere(rt: Runtime, account_id: int, ms_id: int) -> bool:
    """Whether a job of the account is under way on a live server other than ``ms_id``, the one being cleaned."""
    busy = rt.store.count(
        AsyncJob,
        "account_id = ? AND job_status = ? AND removed IS NULL"
        " AND COALESCE(job_executing_msid, job_init_msid) <> ?"
        " AND COALESCE(job_executing_msid, job_init_msid) IN (SELECT msid FROM mshost WHERE state = 'Up')",
        (account_id, JobState.ordinal(JobState.IN_PROGRESS), ms_id),
    )
    return busy > 0


def recount_account_at_rest(rt: Runtime, snapshot_id: int, account_id: int) -> bool:
    """``updateResourceCount`` for the account if nothing of it is under way; whether it was made (spec §19.2).

    Outside a restart this server's own work counts too: a job of the account still running anywhere, or another
    of its snapshots still being taken or backed up, has charges the recount cannot see yet (see
    :func:`recount_account`). ``snapshot_id`` is the one whose outcome asks for the recount.
    """
    busy = rt.store.count(
        AsyncJob,
        "account_id = ? AND job_status = ? AND removed IS NULL"
        " AND COALESCE(job_executing_msid, job_init_msid) IN (SELECT msid FROM mshost WHERE state = 'Up')",
        (account_id, JobState.ordinal(JobState.IN_PROGRESS)),
    ) + rt.store.count(
        Snapshot,
        f"account_id = ? AND id <> ? AND removed IS NULL AND status IN ({', '.join('?' * len(IN_FLIGHT))})",
        (account_id, snapshot_id, *IN_FLIGHT),
    )
    if busy:
        log.info("recount of account %s skipped: work of it under way", account_id)
        return False
    _recount(rt, account_id)
    return True


def _recount(rt: Runtime, account_id: int) -> None:
    """The recount itself; an account removed meanwhile has nothing to count (only logged)."""
    try:
        recount.update_resource_count(rt, account_id)
    except CloudException as exc:  # an account removed meanwhile: nothing to count
        log.warning("recount of account %s failed: %s", account_id, exc)


def undo_take(rt: Runtime, snapshot_id: int) -> None:
    """A take whose job the restart failed is undone whole, so that the job's FAILED answer is true (spec §10.1).

    The volume leaves ``Snapshotting`` (OperationFailed), each store ref that is not Destroyed goes to
    ``Destroying`` (a ``Creating`` one through OperationFailed first), and the snapshot is set ``Error`` directly,
    as upstream's ``cleanupSnapshot`` sets a refused one: the storage GC then deletes the files and the rows
    (§10.5), and its usage reconciliation closes what was billed. The account is recounted by the caller.
    """
    store = rt.store
    snapshot = store.first(Snapshot, "id = ?", (snapshot_id,))
    if snapshot is None:
        return
    volume = store.first(Volume, "id = ?", (snapshot.volume_id,))
    if volume is not None and volume.state == VolumeState.Snapshotting:
        volume_transit(store, volume.id, VolumeEvent.OperationFailed)
    _destroy_refs(rt, snapshot_id)
    if snapshot.removed is None and snapshot.status not in GONE:
        store.write_state_directly(snapshot, SnapshotState.Error, by=UNDO_TAKE)


def _destroy_refs(rt: Runtime, snapshot_id: int) -> None:
    """Every ref of the snapshot that is not Destroyed goes: one that never had a file at once, else to Destroying.

    A Creating ref is failed (its row then goes, ``deleteIfNotReady``), an Allocated one is deleted; the others
    go to Destroying, for the GC to delete with their files.
    """
    store = rt.store
    for ref in store.find(SnapshotStoreRef, "snapshot_id = ? AND state NOT IN (?, ?)", (snapshot_id, *_DONE)):
        if ref.state in UNMADE:
            fail_unmade_ref(store, ref, by=UNDO_TAKE)
        elif store.definitions["snapshot_store_ref"].transition(ref.state, RefEvent.DestroyRequested) is not None:
            store_ref_event(store, ref, RefEvent.DestroyRequested)


UNMADE = (RefState.Allocated, RefState.Creating)
"""Ref states before the file is made: such a ref goes as a failed copy's does (:func:`fail_unmade_ref`)."""


def fail_unmade_ref(store: Store, ref: SnapshotStoreRef, *, by: str) -> None:
    """A ref whose file was never made goes, as a failed copy's does (spec §3, §7.4); others are left as they are.

    A Creating one is failed: OperationFailed, after which ``deleteIfNotReady`` deletes its row. An Allocated one
    (no request sent yet) is deleted, named ``by``.
    """
    if ref.state == RefState.Creating:
        _fail(store, ref)
    elif ref.state == RefState.Allocated:
        store.delete(ref, by=by)


def _fail(store: Store, ref: SnapshotStoreRef) -> None:
    """A Creating ref is failed: OperationFailed, after which ``deleteIfNotReady`` deletes its row (spec §3)."""
    store_ref_event(store, ref, RefEvent.OperationFailed)


_DONE = (RefState.Destroying, RefState.Destroyed)


def undo_copy(rt: Runtime, job: AsyncJob) -> None:
    """A copy job the restart failed leaves nothing it created: its refs go, their files to the GC (spec §7.4).

    The FAILED answer says no copy was made; a ref it created (``Creating``, or ``Ready`` when the crash fell
    between the ref and the job's end) is failed and hard-deleted, as the copy's own failure path deletes it
    (``ObjectInDataStoreManagerImpl.deleteIfNotReady``).
    """
    store = rt.store
    created = store.find(TransitionLog, "machine = 'snapshot_store_ref' AND kind = 'create' AND job_id = ?", (job.id,))
    for row in created:
        ref = store.first(SnapshotStoreRef, "id = ?", (row.entity_id,))
        if ref is None:
            continue
        if ref.state == RefState.Creating:
            _fail(store, ref)
        else:
            store.delete(ref, by="SnapshotServiceImpl.copySnapshot (hardened: undo the copy)")


def finish_delete_job(rt: Runtime, job: AsyncJob) -> None:
    """A delete job whose snapshot is already gone answers SUCCEEDED: what it was asked to do is done (§9.4)."""
    result = serialized_response("SuccessResponse", "null", {"success": True})
    complete(rt, job, JobEvent.CompleteSucceeded, 0, result)


def finish_backup(
    rt: Runtime, snapshot: Snapshot, *, by: str = "BackupSnapshotTask (hardened: lost with its server)"
) -> None:
    """A backup task lost with its server (spec §7.2): its snapshot ends BackedUp, on secondary or on primary only.

    The take's job already answered SUCCEEDED. A copy whose image ref is Ready finished: the snapshot is
    OperationSucceeded. Otherwise the image refs it was writing are failed and deleted, and the snapshot is kept on
    primary storage (OperationNotPerformed, as with ``snapshot.backup.to.secondary`` off, §5.4 step 8): an
    administrator can back it up again, and nothing is lost or billed twice.
    """
    store = rt.store
    image = store.find(SnapshotStoreRef, "snapshot_id = ? AND store_role = 'Image'", (snapshot.id,))
    if snapshot.status == SnapshotState.BackingUp and any(r.state == RefState.Ready for r in image):
        snapshot_event(store, snapshot, SnapshotEvent.OperationSucceeded)
        return
    for ref in image:
        fail_unmade_ref(store, ref, by=by)
    snapshot_event(store, snapshot, SnapshotEvent.OperationNotPerformed)


def in_flight(store_snapshot_status: str | None) -> bool:
    """Whether a snapshot in this state may have objects that no row names yet."""
    return store_snapshot_status in IN_FLIGHT


def delete_orphans(rt: Runtime) -> int:
    """Delete each object on storage that no live row owns (the ``no-orphan-object`` query); returns how many.

    An object whose snapshot is still being taken, backed up or copied is left: its ref may not name it yet. The
    storage's own listing and delete are used (a reconciliation, such as StorPool's, not a driver command), so
    there is no fault point here: what a pass misses, the next one deletes.
    """
    store = rt.store
    deleted = 0
    for object_id, *_ in store.conn.execute(OWNED, ORPHAN_PARAMS).fetchall():
        obj = store.get(StorageObject, object_id)
        if obj.snapshot_id is not None:
            snapshot = store.first(Snapshot, "id = ? AND removed IS NULL", (obj.snapshot_id,))
            if snapshot is not None and in_flight(snapshot.status):
                continue
        store.update(obj, deleted_ms=rt.clock.now_ms)
        _destroy_refs_naming(rt, obj)
        deleted += 1
    return deleted


def _destroy_refs_naming(rt: Runtime, obj: StorageObject) -> None:
    """A ref of a gone snapshot that still names the deleted file (a chain's Hidden parent) is Destroyed with it.

    ``deleteSnapshotChain`` (spec §16.3) does the same when the last child of a Hidden parent goes; a child undone
    by a restart or failed by its backup never gets there.
    """
    store = rt.store
    role = "Primary" if obj.store_kind == "primary" else "Image"
    for ref in store.find(
        SnapshotStoreRef,
        "store_role = ? AND store_id = ? AND install_path = ? AND state IN (?, ?)",
        (role, obj.store_id, obj.path, RefState.Ready, RefState.Hidden),
    ):
        moved = store_ref_event(store, ref, RefEvent.DestroyRequested)
        store_ref_event(store, moved, RefEvent.OperationSucceeded)


_PRIMARY_REFS_WITHOUT_FILE = """
SELECT r.id FROM snapshot_store_ref r
WHERE r.store_role = 'Primary' AND r.state IN (?, ?) AND r.install_path IS NOT NULL AND NOT EXISTS (
    SELECT 1 FROM sim_object o
    WHERE o.store_kind = 'primary' AND o.store_id = r.store_id AND o.path = r.install_path AND o.deleted_ms IS NULL)
ORDER BY r.id
"""
GONE_FROM_POOL = "StorageManagerImpl.cleanupStorage (hardened: its file is gone from the pool)"
"""How the log names the GC's removal of a primary ref whose file is gone (``gc_drops_refs_of_deleted_files``)."""


def drop_refs_of_deleted_files(rt: Runtime) -> int:
    """Delete each Ready or Hidden primary ref whose file the pool no longer holds; returns how many.

    Spec §5.9, §16.2 item 5: a XenServer host deletes the volume's other snapshot files when a backup copy
    completes, and ``postSnapshotCreation`` deletes their refs only when the answer is processed; an answer lost
    (a crash, a restart that undoes the take), failed, or crossed by another backup of the volume leaves refs that
    name nothing. Each goes as ``postSnapshotCreation`` deletes a parent's (the row hard-deleted), with the
    ``primary_storage`` it was charged when the recount counts it (a snapshot with no image ref, §19.2), in one
    transaction; :func:`close_bills` then stops its ON_PRIMARY. A snapshot still being taken or backed up is left
    alone: a KVM host deletes the file it copied before that answer arrives, and the answer removes the ref. The
    pool's own listing is read (as :func:`delete_orphans` does), so there is no fault point but the writes.
    """
    store = rt.store
    dropped = 0
    found = store.conn.execute(_PRIMARY_REFS_WITHOUT_FILE, (RefState.Ready, RefState.Hidden)).fetchall()
    for (ref_id,) in found:
        ref = store.get(SnapshotStoreRef, ref_id)
        snapshot = store.first(Snapshot, "id = ? AND removed IS NULL", (ref.snapshot_id,))
        if snapshot is not None and in_flight(snapshot.status):
            continue
        with store.atomic():
            if snapshot is not None and counted_on_primary(store, ref):
                owner = snapshot.account_id
                accounting.change_count(rt, owner, accounting.PRIMARY_STORAGE, -ref.physical_size, owner_id=owner)
            store.delete(ref, by=GONE_FROM_POOL)
        dropped += 1
    return dropped


_OPEN_BILLS = f"""
SELECT u.id FROM usage_event u
WHERE u.type IN ({", ".join("?" * len(STARTS))})
  AND NOT {has_object(present=True)} AND NOT {STOPPED}
ORDER BY u.id
"""


def close_bills(rt: Runtime) -> int:
    """Stop billing what storage no longer holds: OFF_PRIMARY or DELETE for each such open start; how many.

    A snapshot's object can go by a path that publishes nothing (the GC's expunge of an Error snapshot, a failed
    backup's cleanup, a KVM host that deletes the primary copy, the CLVM ref removal; spec §5.10, §10.5): the usage
    server then bills it for ever. The stop is written when the object is found gone, for the start's account,
    zone and resource, as ``UsageEventUtils`` would have written it then.
    """
    store = rt.store
    closed = 0
    for (event_id,) in store.conn.execute(_OPEN_BILLS, STARTS).fetchall():
        start = store.get(UsageEvent, event_id)
        snapshot = store.first(Snapshot, "id = ? AND removed IS NULL", (start.resource_id,))
        if snapshot is not None and in_flight(snapshot.status):
            continue
        stop = OFF_PRIMARY if start.type == ON_PRIMARY else DELETE
        store.insert(attrs.evolve(start, id=0, type=stop, created=rt.clock.timestamp(), size=0, virtual_size=None))
        closed += 1
    return closed


def drop_jobless_allocations(rt: Runtime, ms_id: int) -> int:
    """Allocated snapshots that no job names are removed and their accounts recounted; returns how many.

    A crash between ``allocSnapshot`` and ``submitAsyncJob`` (spec §4.2, §21.2) leaves a row and its charges that
    no job will ever take or clean up (upstream's ``cleanupSnapshot`` runs per job). The create phase runs on one
    server's API thread with no wait between the two, so a restart finds no such row of a live call.
    """
    store = rt.store
    rows = store.find(
        Snapshot,
        "status = ? AND removed IS NULL AND NOT EXISTS (SELECT 1 FROM async_job j WHERE j.instance_id = snapshots.id"
        " AND j.instance_type = 'Snapshot')",
        (SnapshotState.Allocated,),
    )
    for snapshot in rows:
        store.remove(snapshot, by="AsyncJobManagerImpl.cleanupSnapshot (hardened: no job)")
        settle_allocation(rt, snapshot, ms_id)
    return len(rows)


def settle_allocation(rt: Runtime, snapshot: Snapshot, ms_id: int) -> None:
    """The charges of an Allocated snapshot the restart removed: the account recounted, or given back exactly.

    The recount (:func:`recount_account`) waits while a peer runs a job of the account, and nothing makes it
    later. With ``allocation_is_atomic`` the row exists only with both of ``allocSnapshot``'s charges (spec §5.1
    step 6): ``snapshot`` +1 and the store type (``getStoreResourceType``) + the volume size, which the row keeps.
    In that case they are given back at once instead, which needs no account at rest. (No recount of the account
    was made earlier in the same restart: a peer's job that defers one defers them all.)
    """
    if not rt.profile.allocation_is_atomic or not _busy_elsewhere(rt, snapshot.account_id, ms_id):
        recount_account(rt, snapshot.account_id, ms_id)
        return
    zone = rt.store.get(Zone, snapshot.data_center_id)
    store_type = store_resource_type(rt, zone, snapshot.location_type)
    owner = snapshot.account_id
    accounting.change_count(rt, owner, accounting.SNAPSHOT, -1, owner_id=owner)
    accounting.change_count(rt, owner, store_type, -snapshot.size, owner_id=owner)
