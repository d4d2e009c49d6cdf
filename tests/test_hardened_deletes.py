"""The ``hardened`` profile's fixes of interrupted deletes (F6a, F4 on StorPool) and of StorPool's async pool copy (N7).

Each test replays the explorer's case under ``hardened`` and under ``hardened`` without the one flag, and checks what
a user would notice: the job's answer, the snapshot's and refs' states, the counts against the recount. Without the
flag the explorer's group is back (the faulted run breaks the invariant on a subject its clean run leaves alone).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator

import pytest
from helpers_replay import hardened_without

from snapshotfsm.explore import replay_case
from snapshotfsm.explore.runs import Ran
from snapshotfsm.names import JobState, RefState, SnapshotState
from snapshotfsm.orchestration.recount import recount
from snapshotfsm.store.records import (
    AsyncJob,
    ResourceCount,
    Snapshot,
    SnapshotStoreRef,
    StorageObject,
    TransitionLog,
)
from snapshotfsm.store.store import Store

POWERFLEX = "copy:powerflex/running/plain/sync/no-copies/one-server steps=1,2,5 faults=crash@delete.answered#1@1/ms1"
SOLIDFIRE = (
    "policy:solidfire/detached/plain/async/no-copies/one-server steps=1,2,3 faults=crash@delete.answered#2@1/ms1"
)
STORPOOL_WAIT = (
    "storpool-copies:storpool/running/plain/sync/pool-copy/one-server steps=1,3,4,5 "
    "faults=crash@delete.answered#2@1/ms1"
)
STORPOOL_AFTER_CALL = (
    "delete-zones:storpool/stopped/plain/sync/pool-copy/one-server steps=1,2,3,5 faults=crash@delete.start#4@2/ms1"
)
STORPOOL_EXPORTED = (
    "storpool-copies:storpool/running/plain/sync/pool-copy/one-server steps=1,2,3,4,5,6 "
    "faults=crash@tick.StorPoolSnapshotRecoveryCheck@1/ms1"
)
STORPOOL_GC_RACE = (
    "storpool-copies:storpool/running/plain/sync/pool-copy/one-server steps=1,3,4,5 "
    "faults=no_answer@image.deleteAsync@2"
)
STORPOOL_RETENTION = (
    "retention-during-backup:storpool/stopped/plain/async/no-copies/two-servers steps=1,2,3,4,5 "
    "faults=crash@delete.answered#1@1/ms1"
)
N7 = "take:storpool/running/encrypted/async/pool-copy/one-server steps=1 faults=none"
ZONES_THEN_POOLS_EXPORT_FAILS = (
    "storpool-copies:storpool/running/plain/async/pool-copy/one-server steps=1 "
    "faults=exception@storpool.snapshotExport@1"
)


Replay = Callable[..., Ran]
"""``replay(case, without=None)``: the case's run under ``hardened``, or with the flag (or flags) ``without`` off."""


@pytest.fixture
def replay(monkeypatch: pytest.MonkeyPatch) -> Iterator[Replay]:
    """Replay a case under ``hardened``, or under ``hardened`` with flags off; every world is closed after."""
    opened: list[Ran] = []

    def run(case: str, without: str | tuple[str, ...] | None = None) -> Ran:
        profile = "hardened"
        if without is not None:
            profile = hardened_without(monkeypatch, *((without,) if isinstance(without, str) else without))
        ran = replay_case(f"{case} profile={profile} seed=0")
        opened.append(ran)
        return ran

    yield run
    for ran in opened:
        ran.world.engine.close()


def _new(replay: Replay, case: str, without: str | tuple[str, ...] | None = None) -> set[str]:
    """The invariants the faulted run breaks on subjects the same program run clean leaves alone."""
    faulted = replay(case, without)
    clean = replay(re.sub(r"faults=.*$", "faults=none", case), without)
    return {inv for inv, _ in faulted.outcome.broken() - clean.outcome.broken()}


def _counts_match(store: Store, account_id: int = 2) -> bool:
    charged = {r.type: r.count for r in store.find(ResourceCount, "account_id = ?", (account_id,))}
    return charged == recount(store, account_id)


def _job(store: Store, job_id: int) -> str:
    return store.state_of(store.get(AsyncJob, job_id))


class TestInterruptedDeleteCompletes:
    """``interrupted_delete_completes``: the restart's re-delete ends the delete as it would have ended."""

    def test_a_resumed_delete_gives_back_what_it_found(self, replay: Replay) -> None:
        """PowerFlex: the job re-run after the crash SUCCEEDED and gave back the primary charge its refs had."""
        store = replay(POWERFLEX).world.engine.store
        assert _job(store, 3) == JobState.SUCCEEDED
        assert store.get(Snapshot, 1).status == SnapshotState.Destroyed
        primary = store.first(ResourceCount, "account_id = 2 AND type = 'primary_storage'")
        assert primary is not None
        assert primary.count == 0
        assert _counts_match(store)

    def test_without_it_the_primary_charge_stays(self, replay: Replay) -> None:
        """Without the flag the re-run finds the ref Destroying and gives back nothing (counts-match-recount)."""
        assert _new(replay, POWERFLEX, "interrupted_delete_completes") == {"counts-match-recount"}
        assert _new(replay, POWERFLEX) == set()

    def test_a_destroying_snapshot_whose_files_went_is_destroyed(self, replay: Replay) -> None:
        """SolidFire retention: the array delete had answered; the restart writes the snapshot's end."""
        store = replay(SOLIDFIRE).world.engine.store
        snapshot = store.get(Snapshot, 1)
        assert snapshot.status == SnapshotState.Destroyed
        ends = store.find(TransitionLog, "machine = 'snapshot' AND entity_id = 1 AND dest = ?", ("Destroyed",))
        assert [(r.source, r.event, r.job_id) for r in ends] == [("Destroying", "OperationSucceeded", None)]
        assert _counts_match(store)

    def test_without_it_the_snapshot_stays_destroying(self, replay: Replay) -> None:
        """Without the flag no strategy takes the re-delete and the snapshot is Destroying for good."""
        assert _new(replay, SOLIDFIRE, "interrupted_delete_completes") == {"no-transitional-state"}
        assert _new(replay, SOLIDFIRE) == set()


class TestStorPoolDeleteMarksSnapshot:
    """``storpool_delete_marks_snapshot``: a whole StorPool delete is visible on its snapshot, and resumable."""

    def test_a_delete_cut_while_it_waits_is_finished_by_its_job(self, replay: Replay) -> None:
        """The crash fell between the image deletes: the restart re-runs job 3, which SUCCEEDED and removed it all."""
        store = replay(STORPOOL_WAIT).world.engine.store
        assert _job(store, 3) == JobState.SUCCEEDED
        assert store.get(Snapshot, 1).status == SnapshotState.Destroyed
        assert store.find(SnapshotStoreRef, "snapshot_id = 1 AND state != ?", (RefState.Destroyed,)) == []
        first = store.first(TransitionLog, "machine = 'snapshot' AND entity_id = 1 AND job_id = 3")
        assert first is not None
        assert (first.source, first.event, first.dest) == ("BackedUp", "DestroyRequested", "Destroying")
        assert _counts_match(store)

    @pytest.mark.parametrize(
        ("case", "broken", "also"),
        [
            (STORPOOL_WAIT, {"answer-matches-state"}, ()),
            (STORPOOL_AFTER_CALL, {"ready-ref-has-object"}, ("gc_drops_refs_of_deleted_files",)),
            (STORPOOL_EXPORTED, {"answer-matches-state"}, ()),
            (STORPOOL_GC_RACE, {"answer-matches-state"}, ()),
            (STORPOOL_RETENTION, {"answer-matches-state"}, ()),
        ],
        ids=["waiting", "after-the-call", "still-exported", "gc-race", "retention"],
    )
    def test_without_it_the_group_is_back(
        self, replay: Replay, case: str, broken: set[str], also: tuple[str, ...]
    ) -> None:
        """Each of the explorer's StorPool groups: gone under ``hardened``, back without the flag (and ``also``,
        the flags that remove the same group another way: the GC drops a ref whose file StorPool deleted)."""
        assert _new(replay, case) == set()
        assert _new(replay, case, ("storpool_delete_marks_snapshot", *also)) == broken
        if also:
            assert _new(replay, case, "storpool_delete_marks_snapshot") == set()

    def test_a_delete_refused_as_still_exported_moves_nothing(self, replay: Replay) -> None:
        """The recovery check never ran: the FAILED delete left the snapshot and its primary refs as they were."""
        store = replay(STORPOOL_EXPORTED).world.engine.store
        delete = store.first(AsyncJob, "job_cmd LIKE '%DeleteSnapshotCmd'")
        assert delete is not None
        assert store.state_of(delete) == JobState.FAILED
        assert store.get(Snapshot, 1).status == SnapshotState.BackedUp
        primaries = store.find(SnapshotStoreRef, "snapshot_id = 1 AND store_role = 'Primary'")
        assert [r.state for r in primaries] == [RefState.Ready, RefState.Ready]


class TestAsyncPoolCopyBacksUpFirst:
    """``async_pool_copy_backs_up_first`` (N7): the task backs up, then copies to the pools with the COPY strategy."""

    def test_a_retry_after_a_failed_pool_copy_does_not_back_up_again(self, replay: Replay) -> None:
        """Backed up, copied to zone 2, the pool copy throws: the retry copies to the pool only (one image ref per
        store, every one charged)."""
        store = replay(ZONES_THEN_POOLS_EXPORT_FAILS).world.engine.store
        image = store.find(SnapshotStoreRef, "snapshot_id = 1 AND store_role = 'Image'")
        assert sorted(r.store_id for r in image) == [1, 2]
        assert all(r.state == RefState.Ready for r in image)
        task = [r.event for r in store.find(TransitionLog, "machine = 'backup_task'", order_by="id")]
        assert task[task.index("Retry") :] == ["Retry", "CopyOnPools", "PoolCopiesDone"]
        assert _counts_match(store)

    def test_the_snapshot_is_backed_up_and_no_ref_waits(self, replay: Replay) -> None:
        """The take SUCCEEDED, the snapshot has a Ready image ref, and no pool ref is left Creating."""
        store = replay(N7).world.engine.store
        assert _job(store, 1) == JobState.SUCCEEDED
        assert store.get(Snapshot, 1).status == SnapshotState.BackedUp
        refs = store.find(SnapshotStoreRef, "snapshot_id = 1")
        assert [(r.store_role, r.state) for r in refs] == [("Primary", RefState.Ready), ("Image", RefState.Ready)]
        task = store.find(TransitionLog, "machine = 'backup_task'", order_by="id")
        assert [r.event for r in task] == ["create", "Run", "Backup", "CopyAnswered", "CopyOnPools", "PoolCopiesDone"]

    def test_without_it_the_snapshot_is_never_backed_up(self, replay: Replay) -> None:
        """Without the flag the TAKE strategy's empty copy leaves the pool ref Creating until the restart fails it
        (``restart_resolves_left_over_jobs``), and the SUCCEEDED take's snapshot has no copy on secondary."""
        store = replay(N7, "async_pool_copy_backs_up_first").world.engine.store
        refs = store.find(SnapshotStoreRef, "snapshot_id = 1")
        assert [(r.store_role, r.state) for r in refs] == [("Primary", RefState.Ready)]
        hardened = replay(N7)
        assert hardened.outcome.violations == ()
        refs = hardened.world.engine.store.find(SnapshotStoreRef, "snapshot_id = 1 AND store_role = 'Image'")
        assert [r.state for r in refs] == [RefState.Ready]

    def test_a_failed_backup_try_keeps_the_storpool_snapshot(self, replay: Replay) -> None:
        """``failed_backup_matches_answer`` on StorPool: the driver keeps its snapshot, which the primary ref names."""
        case = f"{N7.replace('steps=1 ', 'steps=1,2 ').replace('faults=none', 'faults=error@storpool.copyAsync@1')}"
        ran = replay(case)
        store = ran.world.engine.store
        assert store.get(Snapshot, 1).status == SnapshotState.BackedUp
        primary = store.first(SnapshotStoreRef, "snapshot_id = 1 AND store_role = 'Primary' AND store_id = 1")
        assert primary is not None
        assert primary.state == RefState.Ready
        assert store.first(StorageObject, "path = ? AND deleted_ms IS NULL", (primary.install_path,)) is not None
        assert _new(replay, case) == set()


R1_POWERFLEX = (
    "two-takes:powerflex/detached/plain/async/no-copies/one-server steps=1,2 faults=preempt:0@primary.begin@3@1/ms1"
)


class TestFailedTakeReleasesOnlyItsVolume:
    """``failed_take_releases_only_its_volume`` (R1's volume write): the loser leaves the winner's volume alone."""

    @staticmethod
    def _volume_moves(ran: Ran) -> list[tuple[str, str, int | None]]:
        store = ran.world.engine.store
        rows = store.find(TransitionLog, "machine = 'volume' AND entity_id = 1 AND source != ''", order_by="id")
        return [(r.source, r.dest, r.job_id) for r in rows]

    def test_the_volume_stays_snapshotting_under_the_winner(self, replay: Replay) -> None:
        """Take 1 is refused the volume take 2 holds: only take 2 moves it, Snapshotting until its take ends."""
        assert self._volume_moves(replay(R1_POWERFLEX)) == [("Ready", "Snapshotting", 2), ("Snapshotting", "Ready", 2)]

    def test_without_it_the_loser_sends_the_volume_back(self, replay: Replay) -> None:
        """Without the flag the loser's finally moves take 2's volume to Ready while take 2 still runs."""
        moves = self._volume_moves(replay(R1_POWERFLEX, "failed_take_releases_only_its_volume"))
        assert moves == [("Ready", "Snapshotting", 2), ("Snapshotting", "Ready", 1), ("Ready", "Ready", 2)]
