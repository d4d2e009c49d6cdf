"""Profiles: named sets of behaviours the engine runs under.

``cloudstack`` reproduces upstream 4.23 as the spec describes it, including behaviour that looks wrong. A later
profile may change named behaviours (never the entity tables), so that the explorer can compare both on the same
scenarios.
"""

from __future__ import annotations

import attrs

from snapshotfsm.errors import InvalidValue


@attrs.frozen
class Profile:
    """The behaviours that differ between profiles, each named for what it changes."""

    name: str
    snapshot_compare_and_swap: bool = attrs.field(default=False)
    """Races on ``snapshots``: a state write compares and swaps (departs from spec §11).

    Upstream's ``SnapshotDaoImpl.updateState`` updates by id alone, so the last writer wins and a stale
    ``SnapshotObject`` overwrites a state another thread wrote (``no-blind-overwrite``, ``one-winner``). Hardened,
    the write checks the state it read, as every other table's ``updateState`` does, and a loser writes nothing.
    Upstream would add the ``state``/``update_count`` condition to ``SnapshotDaoImpl.updateState``'s UPDATE.
    """
    restart_resolves_left_over_jobs: bool = attrs.field(default=False)
    """F1, F1a, F4, F6a, F7, F8: a restart leaves no job's work half done (departs from spec §10.1, §7.2).

    Upstream's ``cleanupLeftOverJobs`` fails every IN_PROGRESS job of the dead server whatever it already did; its
    ``cleanupSnapshot`` only soft-removes an Allocated snapshot (no decrement) and fails a Creating one, so a take that
    got further leaves a CreatedOnPrimary/BackingUp/BackedUp snapshot live under a FAILED job, the volume Snapshotting,
    refs Creating and counts as far as the crash let them; a delete reads FAILED while the restart's re-delete (§10.3)
    destroys the snapshot; a lost ``BackupSnapshotTask`` leaves its snapshot CreatedOnPrimary for good. Hardened, the
    restart makes each answer true: a failed take is undone whole (volume Ready, refs Destroying for the GC, snapshot
    Error, as ``cleanupSnapshot`` writes it), a failed copy deletes the refs it created, a delete whose snapshot is gone
    answers SUCCEEDED, one still Destroying is re-run under its own job (StorageSystem's delete then takes Destroying as
    it takes BackedUp) and one whose refs in its scope are all Destroyed or Destroying (a zone delete, StorPool) answers
    SUCCEEDED, a lost backup task's snapshot ends BackedUp (on primary only when its copy had not finished; found
    through its SUCCEEDED take's server when StorageSystem left no MS_ID detail), and each account touched is recounted
    (``updateResourceCount``, §19.2), since no one knows how far its charges went; an Allocated snapshot whose job never
    ran gives back ``allocSnapshot``'s charges exactly when a peer's work would defer that recount. Upstream would have
    to give ``cleanupResources`` these cases (``AsyncJobManagerImpl``,
    ``SnapshotManagerImpl.cleanupFailedSnapshotsCreatedWithDefaultStrategy``), persist the backup task or resume it from
    the MS_ID detail, and let ``SnapshotManagerImpl.start`` complete the job of the snapshot it re-deletes.
    """
    gc_reconciles_storage: bool = attrs.field(default=False)
    """Orphans and open bills of F1, F3, F5, F6, F7, F8, N6: the storage GC reconciles storage and usage with the rows.

    Upstream's ``cleanupStorage`` (spec §10.5) deletes what the rows say is gone; an object no row owns (a file a
    driver made before a crash lost its answer, a converted ``_temp`` file, a copy whose ref was rolled back) is
    never freed, and an object that went by a path that publishes no usage event (the expunge of an Error
    snapshot, ``cleanupOnSnapshotBackupFailure``, the KVM host's delete of the primary copy, the CLVM ref removal;
    §5.10) is billed for ever. Hardened, each GC pass deletes every object no live row owns (the objects of a
    snapshot still being taken, backed up or copied excepted) and writes the OFF_PRIMARY or DELETE event of every
    bill whose object is gone. Upstream would need a per-store listing against ``snapshot_store_ref`` in
    ``StorageManagerImpl.cleanupStorage`` (StorPool's reconcile API is one) and a usage sanity pass that publishes
    the missing stop events (``UsageSanityChecker`` only reports).
    """
    allocation_is_atomic: bool = attrs.field(default=False)
    """F1a: ``allocSnapshot``'s row and its two charges commit together (departs from spec §5.1, §21.2, §21.4.3).

    Upstream inserts the Allocated row, then increments ``snapshot`` and the store's size count, each in its own
    transaction (``@DB`` opens none, §21.7): a crash between them leaves a row the recount counts and nobody
    charged. Hardened, the insert and both increments are one transaction; an increment that fails takes the row
    back with it. Upstream would wrap ``SnapshotManagerImpl.allocSnapshot``'s persist and
    ``_resourceLimitMgr.incrementResourceCount`` calls in one ``Transaction.execute``. A crash between the
    allocation and ``submitAsyncJob`` leaves a row no job names: ``restart_resolves_left_over_jobs`` removes it.
    """
    fail_take_on_current_snapshot: bool = attrs.field(default=False)
    """F2, F3 (null answer): a failed take fails the snapshot and the ref it moved (departs from spec §5.6 4, 6).

    When the driver throws synchronously, upstream fires OperationFailed on the original ``SnapshotObject``, whose
    in-memory state is still Allocated: NoTransition is caught, and the snapshot and its primary ref stay Creating
    for good while the job fails and the counts are given back. A null answer fails the snapshot but leaves the
    primary ref Creating. Hardened, OperationFailed goes to the snapshot as the take moved it (Creating to Error)
    and to the primary ref (Creating, whose row then goes). Upstream would fire it on the object returned by
    ``processEvent(CreateRequested)`` in ``SnapshotServiceImpl.takeSnapshot``'s catch, and fail the ref in
    ``createSnapshotAsyncCallback`` when the answer is null.
    """
    usage_only_for_objects: bool = attrs.field(default=False)
    """F3, N5: SNAPSHOT.ON_PRIMARY is published only for a file on primary storage (departs from spec §5.6 item 7).

    Upstream publishes ON_PRIMARY whenever the take throws nothing: after a failed answer (the snapshot is Error
    and has no file) and on KVM file-based storage with backup on, whose file is written straight to secondary
    (§13.2, ``postSnapshotDirectlyToSecondary``): both bill an object that never was on primary. Hardened, it is
    published only for a take that succeeded and did not go to a pre-selected image store. Upstream would move the
    ``UsageEventUtils.publishUsageEvent(SNAPSHOT_ON_PRIMARY)`` of ``DefaultSnapshotStrategy.takeSnapshot`` into
    the success branch and skip it when ``isKvmAndFileBasedStorage`` and backup is on.
    """
    failed_backup_matches_answer: bool = attrs.field(default=False)
    """F5: a failed backup copy leaves what the take answered (departs from spec §5.8 steps 3-4, §7.2).

    Upstream's ``copySnapshotAsyncCallback``, on a failed copy of the async backup, soft-removes the snapshot of a
    take that already answered SUCCEEDED; the retries then fail on the removed row, the last one's
    ``cleanupOnSnapshotBackupFailure`` rolls back, and the primary ref stays Ready for a file nobody owns; a copy
    that throws before it starts sends that snapshot to Error, for the GC to expunge; and a null answer is taken
    for a success whose ref event throws, leaving the image ref Creating. Hardened, a null copy answer is a failed
    copy, and a failed try of the async task fails its image ref and keeps the snapshot BackedUp on primary only
    (OperationNotPerformed, as with backup off, §5.4 step 8); the next try backs it up from there and the last
    leaves it so, never running ``cleanupOnSnapshotBackupFailure``, and recounts its account (the allocation
    charged secondary storage, §5.1) when nothing of it is under way. The sync backup keeps upstream's cleanup: its
    job answers FAILED. Upstream would make ``copySnapshotAsyncCallback`` treat a null answer as a failure and, on
    the async path, fire OperationNotPerformed instead of ``snapshotDao.remove``, and give
    ``BackupSnapshotTask`` no ``cleanupOnSnapshotBackupFailure`` after its last try.
    """
    failed_storage_delete_left_to_gc: bool = attrs.field(default=False)
    """F6b: a storage delete that fails leaves its file to the storage GC (departs from spec §9.4, §21.4.1).

    Upstream's ``deleteSnapshotInfos`` runs every ref's storage delete in one transaction: when one fails, all of
    it rolls back, and a ref whose file another delete of the same call already removed is Ready again, naming
    nothing; StorageSystem and StorPool commit the ref Destroying, put the snapshot back and answer FAILED, and the
    GC then deletes that file under the BackedUp snapshot. Hardened, a ref whose storage delete fails stays
    Destroying (its own OperationFailed) and the delete goes on as if the file went: the snapshot ends Destroyed,
    the job SUCCEEDED with its give-backs and usage events, and the GC's sweep of Destroying refs (§10.5) deletes
    the file. Every ref then says what storage holds. Upstream would catch the failed delete per ref in
    ``DefaultSnapshotStrategy.deleteSnapshotChain`` (and in ``StorageSystemSnapshotStrategy``'s and
    ``StorPoolSnapshotStrategy``'s ``deleteSnapshot``) and leave the Destroying ref to ``cleanupStorage``.
    """
    future_wait_is_bounded: bool = attrs.field(default=False)
    """F4: a driver call's future waits ``async.call.wait`` seconds, then fails (departs from spec §5.6 step 6, §9.4).

    Upstream's ``AsyncCallFuture.get()`` waits with no timeout: a storage call that never answers holds its job
    IN_PROGRESS (and, inside ``deleteSnapshotInfos``, its transaction and lock) until a restart fails the job, and
    the restart leaves the copies and deletes it interrupted half done (image refs Creating, snapshots Destroying).
    Hardened, an unanswered call fails after ``async.call.wait`` seconds (default 3600) with a timeout answer, and
    the caller takes its own failure path: a copy fails its ref, a delete leaves the ref to the storage GC
    (``failed_storage_delete_left_to_gc``), a backup try fails. A blocking call's wait is not timed (the model
    passes no time on it). Upstream would call ``future.get(timeout, unit)`` with a configured wait, as
    ``backup.snapshot.wait`` bounds the backup command on the agent, and complete the future with a failed result.
    """
    peer_cleanup_on_node_left: bool = attrs.field(default=True)
    """spec §10.1: a live server runs ``cleanupLeftOverJobs`` for a peer that left (``onManagementNodeLeft``).

    Read at U, the job manager is never registered as a cluster listener and its handler passes the ``mshost`` row
    id where the server id belongs, so the peer's jobs would wait for that server's own restart. The spec is the
    reference until it is corrected; ``Profile("cloudstack", peer_cleanup_on_node_left=False)`` models the reading.
    """


PROFILES: dict[str, Profile] = {
    "cloudstack": Profile("cloudstack"),
    "hardened": Profile(
        "hardened",
        snapshot_compare_and_swap=True,
        restart_resolves_left_over_jobs=True,
        gc_reconciles_storage=True,
        allocation_is_atomic=True,
        fail_take_on_current_snapshot=True,
        usage_only_for_objects=True,
        failed_backup_matches_answer=True,
        failed_storage_delete_left_to_gc=True,
        future_wait_is_bounded=True,
    ),
}
"""``hardened`` turns every fix on (``docs/hardened.md`` says what each removes); entity tables stay upstream's."""


def get_profile(name: str | Profile) -> Profile:
    """The profile called ``name`` (a Profile passes through).

    Raises:
        InvalidValue: no profile has that name.
    """
    if isinstance(name, Profile):
        return name
    try:
        return PROFILES[name]
    except KeyError:
        raise InvalidValue("profile", name, f"one of {', '.join(sorted(PROFILES))}") from None
