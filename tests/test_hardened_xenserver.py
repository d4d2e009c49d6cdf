"""The ``hardened`` fixes of XenServer's chains (F9, R5 of ``docs/findings.md``) and of the delete racing a copy (R6).

A XenServer host deletes a volume's other snapshot files when a backup copy completes (spec §16.2 item 5); the refs
follow only when the management server processes that copy's answer (``postSnapshotCreation``, §5.9). Each test
replays the explorer's minimal case under ``hardened`` with the fix's flag off (it breaks what the finding says) and
on (nothing), and checks what a user would see: rows, states, counts, the job's answer.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs
import pytest
from helpers_replay import broken

from snapshotfsm.explore import Ran, replay_case
from snapshotfsm.names import JobState, RefState, SnapshotState
from snapshotfsm.orchestration.recount import recount
from snapshotfsm.profiles import PROFILES
from snapshotfsm.store.records import AsyncJob, ResourceCount, Snapshot, SnapshotStoreRef, StorageObject, UsageEvent
from snapshotfsm.store.store import Store

LOST_ANSWER = (
    "two-policies:nfs-xenserver/running/plain/async/no-copies/one-server steps=1,2,3,4"
    " faults=crash@backup.answered#1@2/ms1"
)
"""F9/R5, crash: snapshot 2's copy completed (the host deleted snapshot 1's file); the crash lost its answer."""
CROSSED_COPIES = (
    "retention-during-backup:nfs-xenserver/detached/plain/sync/no-copies/one-server steps=1,2,3,4"
    " faults=preempt:0@default.copyAsync@5@1/ms1"
)
"""R5, no fault: two backups of one volume whose copies cross; the later deletes the file the earlier backed up."""
GC_CRASH = (
    "policy:nfs-xenserver/stopped/plain/no-backup/no-copies/two-servers steps=1,2,3 faults=crash@gc.start#2@1/ms1"
)
"""A crash at the GC's start on a policy's XenServer chain: it once deleted the file of a Hidden ref with a live child
as an orphan and crashed before the ref went; that file is owned now, and nothing breaks with or without the flag."""
KEPT_ON_PRIMARY = (
    "chain:nfs-xenserver/detached/encrypted/async/no-copies/two-servers steps=1,2,3"
    " faults=crash@backup_task.Backup@1/ms1"
)
"""Snapshot 1's backup task is lost, the restart keeps it on primary; snapshot 2's backup then deletes its file."""
DELTA_CORRECTION = (
    "chain:nfs-xenserver/detached/encrypted/async/no-copies/two-servers steps=1,2,3"
    " faults=crash@backup_task.answered#4@2/ms1"
)
"""Snapshot 2's async delta backup: a crash between the callback and the correction of its charge to the delta."""
ARCHIVE_CLEANUP = (
    "secondary-archive:solidfire-xenserver/running/plain/async/no-copies/one-server steps=1"
    " faults=crash@backup_task.cleanup#2@1/ms1"
)
"""The async archive fails every try; the crash falls inside the hardened cleanup (kept on primary, recount)."""
COPY_DURING_DELETE = (
    "copy-during-delete:nfs-xenserver/detached/plain/sync/no-copies/one-server steps=1,2,3,4 faults=none"
)
"""R6, no fault: a delete issued while a copy to zone 2 writes its destination ref."""


TurnOff = Callable[..., None]


@pytest.fixture
def without(monkeypatch: pytest.MonkeyPatch) -> TurnOff:
    """``without(*flags)``: ``hardened`` with those flags off, for the rest of the test."""

    def turn_off(*flags: str) -> None:
        off: dict[str, Any] = dict.fromkeys(flags, False)
        monkeypatch.setitem(PROFILES, "hardened", attrs.evolve(PROFILES["hardened"], **off))

    return turn_off


def _replay(case: str) -> Ran:
    return replay_case(f"{case} profile=hardened seed=0")


def _broken(case: str) -> set[str]:
    return {invariant for invariant, _ in broken(f"{case} profile=hardened seed=0")}


def _counts(store: Store, account_id: int) -> dict[str, int]:
    return {r.type: r.count for r in store.find(ResourceCount, "account_id = ?", (account_id,))}


def _present(store: Store, ref: SnapshotStoreRef) -> bool:
    kind = "primary" if ref.store_role == "Primary" else "image"
    found = store.first(
        StorageObject,
        "store_kind = ? AND store_id = ? AND path = ? AND deleted_ms IS NULL",
        (kind, ref.store_id, ref.install_path),
    )
    return found is not None


class TestGcDropsRefsOfDeletedFiles:
    """``gc_drops_refs_of_deleted_files``: the GC deletes a primary ref whose file the host deleted."""

    @pytest.mark.parametrize("case", [LOST_ANSWER, CROSSED_COPIES], ids=["lost-answer", "crossed"])
    def test_without_the_flag_a_ref_names_a_gone_file(self, case: str, without: TurnOff) -> None:
        """With the flag off, the run ends with a Ready or Hidden primary ref whose file is gone.

        ``GC_CRASH`` is gone from this list: the GC no longer takes the file of a Hidden ref with a live child for
        an orphan (``no-orphan-object`` counts the chain's Hidden parents as owned), so it deletes nothing there.
        """
        without("gc_drops_refs_of_deleted_files")
        assert "ready-ref-has-object" in _broken(case)

    @pytest.mark.parametrize("case", [LOST_ANSWER, CROSSED_COPIES, GC_CRASH], ids=["lost-answer", "crossed", "gc"])
    def test_with_it_nothing_breaks(self, case: str) -> None:
        """Under ``hardened`` the same run breaks nothing."""
        assert _broken(case) == set()

    def test_a_lost_answer_leaves_the_snapshot_on_secondary_billed_off_primary(self) -> None:
        """Snapshot 1 keeps its backup; its primary ref is gone and ON_PRIMARY is stopped."""
        ran = _replay(LOST_ANSWER)
        store = ran.world.engine.store
        try:
            assert store.get(Snapshot, 1).status == SnapshotState.BackedUp
            refs = store.find(SnapshotStoreRef, "snapshot_id = 1")
            assert [(r.store_role, r.state) for r in refs] == [("Image", RefState.Ready)]
            assert all(_present(store, r) for r in refs)
            usage = [u.type for u in store.find(UsageEvent, "resource_id = 1 AND type LIKE '%PRIMARY'")]
            assert usage == ["SNAPSHOT.ON_PRIMARY", "SNAPSHOT.OFF_PRIMARY"]
        finally:
            ran.world.engine.close()

    def test_every_live_primary_ref_names_a_file_after_crossed_copies(self) -> None:
        """The ref whose file the crossing copy deleted went; the remaining primary refs all name a file."""
        ran = _replay(CROSSED_COPIES)
        store = ran.world.engine.store
        try:
            primary = store.find(SnapshotStoreRef, "store_role = 'Primary' AND state IN (?, ?)", ("Ready", "Hidden"))
            assert all(_present(store, r) for r in primary)
            assert store.first(SnapshotStoreRef, "snapshot_id = 3 AND store_role = 'Primary'") is None
            assert store.get(Snapshot, 3).status == SnapshotState.BackedUp
        finally:
            ran.world.engine.close()


class TestParentKeptOnPrimary:
    """``storage_charged_as_recounted``: ``postSnapshotCreation`` gives back a parent's primary charge."""

    def test_without_the_flag_primary_storage_keeps_the_charge(self, without: TurnOff) -> None:
        """With the flag off, ``primary_storage`` keeps the size of a file the host deleted."""
        without("storage_charged_as_recounted")
        assert "counts-match-recount" in _broken(KEPT_ON_PRIMARY)

    def test_with_it_the_counts_are_the_recount(self) -> None:
        """Snapshot 1 kept on primary lost its file to snapshot 2's backup; its charge went with its ref."""
        ran = _replay(KEPT_ON_PRIMARY)
        store = ran.world.engine.store
        try:
            assert store.find(SnapshotStoreRef, "snapshot_id = 1") == []
            counts = _counts(store, 2)
            assert counts["primary_storage"] == 0
            assert counts == recount(store, 2)
            assert not ran.outcome.broken()
        finally:
            ran.world.engine.close()


class TestAtomicCorrections:
    """A crash between a hardened step's writes: they commit together (``correction_on_charged_counter``,
    ``failed_backup_matches_answer``)."""

    def test_the_delta_correction_commits_with_the_backup(self) -> None:
        """Snapshot 2's delta backup is charged the delta's size, crash or not."""
        ran = _replay(DELTA_CORRECTION)
        store = ran.world.engine.store
        try:
            assert _counts(store, 2) == recount(store, 2)
            assert not ran.outcome.broken()
        finally:
            ran.world.engine.close()

    def test_the_archive_kept_on_primary_is_recounted(self) -> None:
        """The snapshot every archive try failed is BackedUp on primary and charged there, not on secondary."""
        ran = _replay(ARCHIVE_CLEANUP)
        store = ran.world.engine.store
        try:
            assert store.get(Snapshot, 1).status == SnapshotState.BackedUp
            counts = _counts(store, 2)
            assert (counts["primary_storage"] > 0, counts["secondary_storage"]) == (True, 0)
            assert counts == recount(store, 2)
        finally:
            ran.world.engine.close()


class TestDeleteRefusesDuringCopy:
    """``delete_refuses_during_copy``: a delete does not start while a copy writes one of the snapshot's refs."""

    def test_without_the_flag_the_rolled_back_delete_leaves_refs_naming_nothing(self, without: TurnOff) -> None:
        """With the flag off, the delete's rollback leaves the zone-1 refs Ready over deleted files."""
        without("delete_refuses_during_copy")
        assert "ready-ref-has-object" in _broken(COPY_DURING_DELETE)

    def test_with_it_the_delete_fails_with_nothing_done_and_the_copy_ends(self) -> None:
        """The delete job FAILED, says why; the snapshot and both zones' copies are whole."""
        ran = _replay(COPY_DURING_DELETE)
        store = ran.world.engine.store
        try:
            delete = store.first(AsyncJob, "job_cmd LIKE '%DeleteSnapshotCmd'")
            assert delete is not None
            assert store.state_of(delete) == JobState.FAILED
            assert "a copy is in progress" in (delete.job_result or "")
            assert store.get(Snapshot, 1).status == SnapshotState.BackedUp
            refs = store.find(SnapshotStoreRef, "snapshot_id = 1")
            assert [r.state for r in refs] == [RefState.Ready] * 3
            assert all(_present(store, r) for r in refs)
            assert not ran.outcome.broken()
        finally:
            ran.world.engine.close()
