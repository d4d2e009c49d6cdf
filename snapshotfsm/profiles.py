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
    through its SUCCEEDED take's server when StorageSystem left no MS_ID detail), a copy the lost task was making to
    another zone or pool (its destination ref still Creating) is failed as the copy's own failure path fails it, and
    each account touched is recounted (``updateResourceCount``, §19.2), since no one knows how far its charges went,
    unless a job of it is under way on another live server (the cleaning server's own jobs, when it cleans up for a
    peer that left); an Allocated snapshot whose job never ran gives back ``allocSnapshot``'s charges exactly when
    such work would defer that recount. Upstream would have to give ``cleanupResources`` these cases
    (``AsyncJobManagerImpl``, ``SnapshotManagerImpl.cleanupFailedSnapshotsCreatedWithDefaultStrategy``), persist the
    backup task or resume it from the MS_ID detail (kept until the task's copies end), and let
    ``SnapshotManagerImpl.start`` complete the job of the snapshot it re-deletes.
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
    refused_take_gives_back: bool = attrs.field(default=False)
    """N1, R2: a take that fails before its snapshot left ``Allocated`` gives back its charges and its row (spec §5.2).

    Upstream's refusals in the execute phase (``takeSnapshotInternal``'s and ``orchestrateTakeVolumeSnapshot``'s
    checks, §5.2, §5.3: the volume not Ready, an encrypted volume of a running VM; no image store, §5.4 step 3) are
    thrown before ``SnapshotManagerImpl.takeSnapshot``'s try, and ``CreateSnapshotCmd.execute`` only maps them: the
    ``snapshot`` count and the store size ``allocSnapshot`` charged (§5.1) stay, and the snapshot stays
    ``Allocated`` under a FAILED job. A refusal inside the try (a strategy's, or a volume taken meanwhile) gives
    the charges back (§5.4 step 14) but leaves the row ``Allocated`` too, and a delete of that row gives back the
    ``snapshot`` count a second time (§9.4). Hardened, the failed job gives back what the take has not given back
    yet and soft-removes the row if it is still ``Allocated``, as ``cleanupSnapshot`` (§10.1) removes one, or undoes
    a snapshot refused once on primary (a StorageSystem archive, §5.7) as the restart undoes a take; a delete of an
    ``Allocated`` row leaves the counts to its take, which always fails on the removed row, unless no job names the
    row and the server that allocated it is down (a crash between ``allocSnapshot`` and ``submitAsyncJob``): no take
    will run, and the delete gives back both charges. Upstream would release the charges in
    ``CreateSnapshotCmd.execute``'s catch (or move the checks inside the try) and remove the row there, and in
    ``deleteSnapshot`` give back nothing for an ``Allocated`` row a job names, both charges for one no job names.
    """
    correction_on_charged_counter: bool = attrs.field(default=False)
    """N2: the take's size correction comes off the counter its allocation charged (departs from spec §5.4 step 12).

    ``allocSnapshot`` charges the whole volume size to ``secondary_storage`` when backup is on (§5.1), and the
    post-processing gives back ``volumeSize - physicalSize`` from the counter of the data-store role it finds;
    with ``asyncbackup`` that role is forced to ``Primary`` (§5.4 step 10 and its accounting note), so
    ``primary_storage``, never charged, goes below zero by that much per snapshot while ``secondary_storage``
    keeps the volume size. Hardened, the correction comes off the store type ``getStoreResourceType`` gave the
    allocation, by the same amount; once the async backup lands, the difference between the primary file's and the
    backup's physical size is corrected on it too (a delta is smaller), in the transaction of the copy's callback
    (a crash between them would leave the BackedUp snapshot charged the primary size, and no restart looks at it
    again), so that the count is what the recount finds (§19.2). Upstream would pass
    ``getStoreResourceType(zone, locationType)`` to the ``decrementResourceCount`` of
    ``SnapshotManagerImpl.takeSnapshot`` and correct again in ``BackupSnapshotTask``.
    """
    chain_end_without_cluster: bool = attrs.field(default=False)
    """N3: a KVM take whose volume has no cluster is post-processed (departs from spec §5.4 step 9, §16.6).

    ``findClusterIdByVolumeInfo`` gives a null cluster for a volume with no VM or whose VM never had a host, and
    ``postCreateSnapshot`` hands it to ``endLastChainIfNeeded(long clusterId, long volumeId)``: the unboxing throws,
    the post-processing stops ("post process snapshot failed" is only logged), and there is no ``snapshot_zone_ref``
    row, no SNAPSHOT.CREATE usage and no size correction (§5.4 steps 9-12), so the count keeps the whole volume
    size while the recount finds the physical size. Hardened, the null cluster is not unboxed: the cluster only
    selects the value of ``kvm.incremental.snapshot``, already read at its global value (``valueIn(null)``, §16.4),
    and the chain's end is looked up by volume as for any other. Upstream would make ``endLastChainIfNeeded`` take
    a ``Long`` (or skip it for a null cluster), as ``endCurrentChainIfNeeded``'s caller already reads the setting.
    """
    storage_charged_as_recounted: bool = attrs.field(default=False)
    """N4: copies charge, and a delete gives back, what the recount counts (departs from spec §7.4, §9.4).

    A zone copy charges ``secondary_storage`` the ref's ``size`` (the volume size), while the delete gives back each
    Ready image ref's ``physical_size`` and the recount counts that (§19.2); a pool copy charges the calling user's
    id (the system's: no one) the snapshot's size, even for a backed-up snapshot whose primary files the recount
    does not count; and the delete never gives back ``primary_storage``, so a snapshot kept on primary (backup
    off, StorPool, Ceph) is charged for ever. Hardened, a zone copy charges the physical size it stored, a pool copy
    charges its owner the copy's physical size unless the snapshot has an image ref, and the delete gives back the
    physical size of each Ready primary ref of a snapshot that had no image ref; so does ``postSnapshotCreation``
    (§5.9) for a parent's primary ref it deletes after a XenServer host deleted the file (a parent kept on primary
    when its backup failed or its task was lost), in its transaction. Upstream would charge ``getPhysicalSize()``
    in ``copySnapshotToZone``, the owner in ``copySnapshotOnPool``, and decrement ``primary_storage`` in
    ``SnapshotManagerImpl.deleteSnapshot`` and ``DefaultSnapshotStrategy.postSnapshotCreation`` as
    ``getSnapshotsPhysicalSizeOnPrimaryStorageByAccountId`` counts it.
    """
    delete_bills_only_made_copies: bool = attrs.field(default=False)
    """R3: a delete publishes SNAPSHOT.DELETE only for the zones that hold the object (departs from spec §9.4).

    ``deleteSnapshot`` collects the zones of every ref of the snapshot that is not Destroyed, and publishes
    SNAPSHOT.DELETE in each. A copy to another zone inserts its destination ref ``Allocated`` before it asks the
    store for the file (§7.4); a delete that runs in between takes that ref and bills a stop in a zone that never
    held the object (``usage-matches-objects``). Hardened, an ``Allocated`` ref gives the delete no zone. Upstream
    would list the zones from the refs that are ``Ready`` (or past it) in ``SnapshotManagerImpl.deleteSnapshot``, or
    lock the snapshot for the copy as ``destroySnapshotEntriesAndFiles`` locks its chain.
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
    charged secondary storage, §5.1) when nothing of it is under way, in the same transaction as the snapshot's
    last write (a crash between them would leave it BackedUp and charged on secondary, which no restart looks at
    again); StorPool's driver, which deletes its snapshot when a backup copy fails (§8), keeps it on such a try. The
    sync backup keeps upstream's cleanup: its job answers FAILED. Upstream would make ``copySnapshotAsyncCallback``
    treat a null answer as a failure and, on the async path, fire OperationNotPerformed instead of
    ``snapshotDao.remove``, give ``BackupSnapshotTask`` no ``cleanupOnSnapshotBackupFailure`` after its last try, and
    keep StorPool's ``copyAsync`` from deleting the snapshot the task keeps.
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
    interrupted_delete_completes: bool = attrs.field(default=False)
    """F6a: the start-up re-delete ends an interrupted delete as it would have ended (departs from spec §10.3, §9.4).

    Upstream's ``SnapshotManagerImpl.start`` runs ``deleteSnapshot`` again for every Destroying snapshot. That second
    run reads the refs as the crash left them: the refs the first run had moved to Destroying or Destroyed give back
    nothing (``deleteSnapshot`` gives back only the Ready refs it finds), so a PowerFlex snapshot kept on primary stays
    charged its ``primary_storage``; and a StorageSystem snapshot whose array delete had answered (its primary ref
    Destroyed, the snapshot still Destroying) finds no DELETE strategy (``canHandle`` wants a Ready primary ref), so it
    stays Destroying for good. Hardened, the delete job the restart runs again (``restart_resolves_left_over_jobs``)
    gives back, and bills the stop of, what its first run found (each row's state before that job first moved it),
    and a Destroying snapshot with no ref left but Destroyed gets the write the crash cut off (OperationSucceeded),
    its account recounted (§19.2); of two servers' re-deletes of one snapshot, only the one that writes its Destroyed
    gives back the ``snapshot`` count. Upstream would have to persist what the delete found (or make the give-backs
    part of the ref's own Destroyed write) and let ``start`` complete a snapshot whose files are already gone.
    """
    storpool_delete_marks_snapshot: bool = attrs.field(default=False)
    """F6a, F4 (StorPool): a whole StorPool delete moves its snapshot to Destroying first (departs from spec §8, §9.4).

    Upstream's ``StorPoolSnapshotStrategy.deleteSnapshot`` fires no snapshot event: the snapshot stays BackedUp until
    every ref went (``updateSnapshotToDestroyed``). It deletes the StorPool snapshot before its refs move, so a crash
    in between leaves Ready refs naming nothing, and a crash anywhere in it leaves nothing the start-up re-delete of
    Destroying snapshots (§10.3) can find; meanwhile the storage GC takes the Destroying refs and
    ``cleanupSecondaryStorage`` removes the snapshot as if no one had asked (§10.5). A re-run would not help either:
    ``objectDoesNotExist`` returns true before the rows and backups are touched, and ``canHandle`` wants a Ready
    primary ref. And a delete refused because the snapshot is "still exported" leaves its primary refs Destroying, so
    the GC deletes what the refused delete kept. Hardened, a whole delete of a BackedUp snapshot fires DestroyRequested
    on it before it asks StorPool, and OperationFailed (back to BackedUp) when it fails; a StorPool pool's Destroying
    primary ref of a Destroying snapshot still selects the strategy; ``objectDoesNotExist`` goes on with the rows as a
    successful delete does; "still exported" leaves the refs as they were; and the GC leaves a Destroying snapshot
    to its delete. Upstream would add these events to ``deleteSnapshot``, test the answer before
    ``processResult(DestroyRequested)``, delete the rows on ``objectDoesNotExist``, and skip Destroying snapshots in
    ``cleanupSecondaryStorage``.
    """
    async_pool_copy_backs_up_first: bool = attrs.field(default=False)
    """N7: the async backup task backs up, then copies to the pools with the COPY strategy (departs from spec §7.2).

    Upstream's ``BackupSnapshotTask.runInContext`` backs up only when there are no pool ids, and copies to the pool
    ids with the strategy it was given, the TAKE strategy when backup is on (Default for StorPool), whose
    ``copySnapshot`` is the interface's empty default: the pool ref stays Creating and the snapshot is never backed
    up, under a SUCCEEDED take. Hardened, the task backs up as it does without pool ids (and makes its zone copies),
    then copies to the pools with the COPY strategy, as the synchronous take's ``copyNewSnapshotToZonesOnPrimary``
    does (§5.4 step 13); a retry after a try whose backup completed and whose pool copy failed copies to the pools
    only (a second backup would make a second, uncharged image ref). Upstream would drop the
    ``CollectionUtils.isEmpty(poolIds)`` condition, look the COPY strategy up for the pool copies, and let a retry
    start where the failed try stopped.
    """
    failed_take_releases_only_its_volume: bool = attrs.field(default=False)
    """R1 (the volume write): a StorageSystem take refused the volume leaves it to its holder (departs from spec §5.7).

    ``StorageSystemSnapshotStrategy.takeSnapshot`` fires the volume's SnapshotRequested inside its try, and its
    finally fires OperationFailed on any failure: a take that lost the volume to another (two takes of a detached
    volume, which nothing serialises, §4.3, §5.2 step 5) is refused SnapshotRequested, and its finally then sends
    the winner's Snapshotting volume back to Ready while the winner's take still runs, so a third take, a detach or a
    migration may start on it. Hardened, the finally's OperationFailed is fired only by a take whose
    SnapshotRequested went through. Upstream would move ``SnapshotRequested`` before the try, as
    ``DefaultSnapshotStrategy.takeSnapshot`` has it, or remember in the try that it was fired.
    """
    gc_drops_refs_of_deleted_files: bool = attrs.field(default=False)
    """F9, R5: the storage GC deletes a primary ref whose file the host deleted (departs from spec §10.5, §5.9).

    A XenServer host keeps one snapshot file of a volume on its pool: when a backup copy completes it deletes the
    others (``destroySnapshotOnPrimaryStorageExceptThis``, §16.2 item 5), and the management server deletes their
    refs only when it processes that copy's answer (``postSnapshotCreation``). A crash that loses the answer, a
    restart that undoes the take it belonged to, or two backups of one volume whose copies cross (the later copy
    deletes the file of the snapshot the earlier one just backed up) leaves Ready refs, and a chain's Hidden ones,
    naming files that are gone: the database offers a snapshot on primary that a revert or a volume from it would
    not find, ``primary_storage`` keeps its charge and ON_PRIMARY bills for ever. Hardened, each GC pass reads the
    pools' listing and deletes every Ready or Hidden primary ref whose file is gone, as ``postSnapshotCreation``
    deletes a parent's, giving back in the same transaction the ``primary_storage`` the recount counted for it (a
    snapshot with no image ref, §19.2); the pass's usage reconciliation then stops its ON_PRIMARY. A snapshot still
    being taken or backed up is left alone (a KVM host deletes the file it copied before that answer arrives).
    Upstream would list each pool's snapshot files against ``snapshot_store_ref`` in
    ``StorageManagerImpl.cleanupStorage``, or have the backup answer name the files the host deleted so that
    ``copySnapshotAsyncCallback`` deletes their refs with the image ref's update.
    """
    delete_refuses_during_copy: bool = attrs.field(default=False)
    """R6: a delete refuses a snapshot that a copy is writing, before it deletes any file (departs from spec §9.4).

    ``DefaultSnapshotStrategy.deleteSnapshotInfos`` deletes each ref's file inside one transaction (§16.3, §21.2).
    A ``copySnapshot`` to another zone issued just before leaves its destination ref ``Creating`` until the copy
    answers, and DestroyRequested has no transition there: ``deleteSnapshotChain`` throws "Failed to delete snapshot
    chain." after the primary and image files went, the transaction rolls back (§21.4.1), and the snapshot is
    BackedUp again with Ready refs naming nothing (``ready-ref-has-object``) under a FAILED delete. Hardened, the
    delete first checks that every ref in its scope can be destroyed and otherwise fails its job, with nothing
    written or deleted; the copy then ends and a later delete removes every copy. Upstream would make that check in
    ``DefaultSnapshotStrategy.deleteSnapshot`` before ``destroySnapshotEntriesAndFiles``, or hold the snapshot's
    lock for the copy as ``deleteSnapshotInfos`` holds the chain root's.
    """
    zone_copy_is_atomic: bool = attrs.field(default=False)
    """F7: a zone copy's ref, zone row, charge and usage event commit together (departs from spec §7.4, §21.2).

    When the image store answers a copy to another zone, upstream commits the ref's path and size, its
    OperationSucceeded (Ready), the ``snapshot_zone_ref`` row, the ``secondary_storage`` increment and the
    SNAPSHOT.COPY usage event each alone: a crash between them leaves a Ready copy that was never charged or never
    added to its zone, so the count stays below what the recount finds, and the delete that later gives the copy
    back drives it below zero. The restart cannot tell such a copy from a finished one (a copy made by the async
    backup task has no job for it to fail). Hardened, the five writes are one transaction: a crash leaves the ref
    Creating, which the restart fails (``restart_resolves_left_over_jobs``), or the whole copy. Upstream would wrap
    the writes of ``SnapshotServiceImpl.copySnapshotZoneAsyncCallback`` and ``copySnapshotToZone``'s bookkeeping
    after it in one ``Transaction.execute``.
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
        refused_take_gives_back=True,
        correction_on_charged_counter=True,
        chain_end_without_cluster=True,
        storage_charged_as_recounted=True,
        delete_bills_only_made_copies=True,
        failed_backup_matches_answer=True,
        failed_storage_delete_left_to_gc=True,
        future_wait_is_bounded=True,
        interrupted_delete_completes=True,
        storpool_delete_marks_snapshot=True,
        async_pool_copy_backs_up_first=True,
        failed_take_releases_only_its_volume=True,
        gc_drops_refs_of_deleted_files=True,
        delete_refuses_during_copy=True,
        zone_copy_is_atomic=True,
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
