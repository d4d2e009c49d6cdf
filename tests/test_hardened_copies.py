"""The ``hardened`` profile: a lost backup task's zone copies, job-less allocations and the restart's recount.

Each test replays one minimal counterexample of the explorer (``/tmp``-free: the case strings are below) and checks
what a user would notice: refs, counts against the recount, job answers. Under ``hardened`` the faulted run breaks
nothing its clean run does not.
"""

from __future__ import annotations

from collections.abc import Iterator

import attrs
import pytest
from helpers_replay import fault_added

from snapshotfsm.explore import replay_case
from snapshotfsm.explore.runs import Ran
from snapshotfsm.names import JobState, RefState, SnapshotState
from snapshotfsm.orchestration.recount import recount
from snapshotfsm.profiles import PROFILES
from snapshotfsm.store.records import AsyncJob, ResourceCount, Snapshot, SnapshotStoreRef, StorageObject
from snapshotfsm.store.store import Store

CASES = {
    "task-zone-copy": "zone-copy:nfs-xenserver/detached/plain/async/zone-copy/one-server steps=1 "
    "faults=crash@copies.zone_answered#1@1/ms1",
    "task-zone-copy-then-delete": "delete-zones:rbd/running/plain/async/zone-copy/two-servers steps=1,2,5 "
    "faults=crash@copies.zone_answered#1@1/ms1",
    "zone-copy-charge": "delete-zones:rbd/running/plain/async/zone-copy/two-servers steps=1,2,5 "
    "faults=crash@copies.zone_answered#3@1/ms1",
    "node-left-allocation": "two-servers:ontap/detached/plain/async/no-copies/two-servers steps=1,2 "
    "faults=node_left@api.allocate#2@1/ms2",
    "jobless-allocation-deleted": "two-policies:solidfire/running/plain/no-backup/no-copies/two-servers steps=1,3,4 "
    "faults=crash@api.allocate#2@1/ms1",
    "restart-cancels-refusal": "chain:powerflex/running/encrypted/no-backup/no-copies/one-server steps=1,2,3 "
    "faults=crash@jobs.fail#1@1/ms1",
}
"""Minimal cases of the explorer's report on the default set (seed 0)."""
CLOUDSTACK_BREAKS = {
    "task-zone-copy": ["no-orphan-object", "no-transitional-state"],
    "task-zone-copy-then-delete": [
        "no-orphan-object",
        "no-transitional-state",
        "ready-ref-has-object",
        "usage-matches-objects",
    ],
    "zone-copy-charge": [],
    "node-left-allocation": ["counts-match-recount"],
    "jobless-allocation-deleted": ["counts-match-recount"],
    "restart-cancels-refusal": ["counts-match-recount"],
}
"""What each case breaks under ``cloudstack`` beyond its clean run (upstream's behaviour, kept), subject by subject.
Upstream's clean runs of the node-left and refusal cases already break ``primary_storage`` (N1, N2); their faults
add the ``snapshot`` count of the row the restart leaves charged."""


@pytest.fixture
def replayed() -> Iterator[list[Ran]]:
    """Replays made by a test, their engines closed after it."""
    runs: list[Ran] = []
    yield runs
    for ran in runs:
        ran.world.engine.close()


def _replay(runs: list[Ran], name: str, profile: str = "hardened") -> Store:
    ran = replay_case(f"{CASES[name]} profile={profile} seed=0")
    runs.append(ran)
    return ran.world.engine.store


def _counts(store: Store, account_id: int = 2) -> dict[str, int]:
    return {c.type: c.count for c in store.find(ResourceCount, "account_id = ?", (account_id,))}


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("profile", ["cloudstack", "hardened"])
def test_minimal_case(name: str, profile: str) -> None:
    """Under ``cloudstack`` what upstream breaks; under ``hardened`` nothing beyond the clean run."""
    assert fault_added(CASES[name], profile) == ([] if profile == "hardened" else CLOUDSTACK_BREAKS[name])


class TestLostTaskCopies:
    """``restart_resolves_left_over_jobs``: the zone copy a lost backup task was making is failed by the restart."""

    def test_the_copy_in_flight_is_failed_and_its_file_collected(self, replayed: list[Ran]) -> None:
        """The take SUCCEEDED, the snapshot is BackedUp in its zone, and zone 2 has neither a ref nor a file."""
        store = _replay(replayed, "task-zone-copy")
        assert store.state_of(store.get(AsyncJob, 1)) == JobState.SUCCEEDED
        assert store.get(Snapshot, 1).status == SnapshotState.BackedUp
        refs = store.find(SnapshotStoreRef, "snapshot_id = 1", order_by="id")
        assert [(r.id, r.store_role, r.store_id, r.state) for r in refs] == [
            (1, "Primary", 1, RefState.Ready),
            (2, "Image", 1, RefState.Ready),
        ]
        assert store.find(StorageObject, "store_kind = 'image' AND store_id = 2 AND deleted_ms IS NULL") == []
        assert _counts(store) == recount(store, 2)

    def test_a_later_delete_finds_no_ref_to_refuse(self, replayed: list[Ran]) -> None:
        """The delete after the restart succeeds: no ref Creating makes its chain delete throw and roll back."""
        store = _replay(replayed, "task-zone-copy-then-delete")
        delete = store.first(AsyncJob, "job_cmd LIKE '%DeleteSnapshotCmd'")
        assert delete is not None and store.state_of(delete) == JobState.SUCCEEDED
        assert store.find(SnapshotStoreRef, "state NOT IN (?, ?)", (RefState.Destroyed, RefState.Destroying)) == []
        assert _counts(store) == recount(store, 2)


class TestZoneCopyIsAtomic:
    """``zone_copy_is_atomic``: a crash never leaves a Ready copy that was not charged."""

    def test_a_crash_in_the_bookkeeping_leaves_no_uncharged_copy(
        self, replayed: list[Ran], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Without the flag the delete gives back a copy never charged: secondary goes to -5 GiB; with it, 0."""
        partial = attrs.evolve(PROFILES["hardened"], name="hardened-partial-copy", zone_copy_is_atomic=False)
        monkeypatch.setitem(PROFILES, partial.name, partial)
        torn = _replay(replayed, "zone-copy-charge", profile=partial.name)
        assert _counts(torn)["secondary_storage"] == -(5 << 30)
        whole = _replay(replayed, "zone-copy-charge")
        assert _counts(whole) == recount(whole, 2) == {"snapshot": 0, "primary_storage": 0, "secondary_storage": 0}


class TestDeferredRecount:
    """The restart's recount waits for work under way on a live server, the cleaning server's own included."""

    def test_a_peer_left_between_allocation_and_submit(self, replayed: list[Ran]) -> None:
        """ms1 cleans up for ms2 while its own take runs: ms2's row goes with exactly its charges, no recount."""
        store = _replay(replayed, "node-left-allocation")
        assert store.state_of(store.get(AsyncJob, 1)) == JobState.SUCCEEDED
        assert store.get(Snapshot, 2).removed is not None
        primary = store.first(SnapshotStoreRef, "snapshot_id = 1 AND store_role = 'Primary'")
        assert primary is not None
        assert _counts(store) == recount(store, 2)
        assert _counts(store)["primary_storage"] == primary.physical_size

    def test_a_retention_deletes_the_row_of_a_take_that_never_ran(self, replayed: list[Ran]) -> None:
        """ms1 died after allocating; ms2's retention deletes that row and gives back both of its charges."""
        store = _replay(replayed, "jobless-allocation-deleted")
        assert store.get(Snapshot, 1).removed is not None
        assert store.first(AsyncJob, "instance_id = 1 AND job_cmd LIKE '%CreateSnapshotCmd'") is None
        assert _counts(store) == recount(store, 2)


def test_a_refusal_cancelled_by_the_restart_answers_the_cancellation(replayed: list[Ran]) -> None:
    """The refused take cut by the crash answers 530 "cancelled"; the next refusal 432: two different failures."""
    store = _replay(replayed, "restart-cancels-refusal")
    cancelled, refused = store.find(AsyncJob, "job_cmd LIKE '%CreateSnapshotCmd'")
    assert (cancelled.job_result_code, refused.job_result_code) == (530, 432)
    assert cancelled.job_result == "job cancelled because of management server restart or shutdown"
