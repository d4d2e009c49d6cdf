"""The ``hardened`` profile: profile-only transitions in the definitions, and each fix against what it removes.

Each behaviour test replays one minimal counterexample of ``docs/findings.md`` under both profiles and judges it as
the explorer does (quiesced, every invariant): under ``cloudstack`` it breaks what the finding says, under
``hardened`` nothing.
"""

from __future__ import annotations

import ast
import itertools
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import pytest
from helpers_replay import fault_added

from snapshotfsm.definitions import load_directory, load_file
from snapshotfsm.diagrams import edges, to_mermaid
from snapshotfsm.errors import DefinitionError
from snapshotfsm.explore import replay_case
from snapshotfsm.faults import catalogue
from snapshotfsm.names import JobState, RefState, SnapshotState, VolumeState
from snapshotfsm.orchestration.reconcile import UNDO_TAKE
from snapshotfsm.orchestration.recount import recount
from snapshotfsm.profiles import PROFILES, Profile
from snapshotfsm.store.records import (
    AsyncJob,
    ResourceCount,
    Snapshot,
    SnapshotStoreRef,
    StorageObject,
    TransitionLog,
    UsageEvent,
    Volume,
)

ROOT = Path(__file__).resolve().parent.parent
FLAGS = [f.name for f in attrs.fields(Profile) if f.type in (bool, "bool")]
UPSTREAM_FLAGS = {"peer_cleanup_on_node_left"}
"""Flags that model a reading of upstream, not a fix: ``hardened`` keeps upstream's value."""


def _flag_docs() -> dict[str, str]:
    """Each Profile field's docstring (the string literal after it), read from the source."""
    tree = ast.parse((ROOT / "snapshotfsm" / "profiles.py").read_text(encoding="utf-8"))
    body = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "Profile").body
    docs: dict[str, str] = {}
    for field, after in itertools.pairwise(body):
        named = isinstance(field, ast.AnnAssign) and isinstance(field.target, ast.Name)
        if named and isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant):
            docs[field.target.id] = str(after.value.value)  # type: ignore[union-attr]
    return docs


class TestProfiles:
    """Every fix is a named, documented flag; ``cloudstack`` has none of them and ``hardened`` all."""

    def test_cloudstack_is_upstream(self) -> None:
        """Under ``cloudstack`` every fix is off."""
        cloudstack = PROFILES["cloudstack"]
        assert [f for f in FLAGS if f not in UPSTREAM_FLAGS and getattr(cloudstack, f)] == []

    def test_hardened_has_every_fix(self) -> None:
        """Under ``hardened`` every fix is on."""
        hardened = PROFILES["hardened"]
        assert [f for f in FLAGS if f not in UPSTREAM_FLAGS and not getattr(hardened, f)] == []

    @pytest.mark.parametrize("flag", [f for f in FLAGS if f not in UPSTREAM_FLAGS])
    def test_each_fix_says_what_why_where_and_upstream(self, flag: str) -> None:
        """The docstring cites the spec section it departs from and what upstream would have to change."""
        doc = _flag_docs()[flag]
        assert re.search(r"spec §\d", doc), doc
        assert "Upstream" in doc or "upstream" in doc, doc
        assert "Hardened" in doc, doc

    @pytest.mark.parametrize("flag", [f for f in FLAGS if f not in UPSTREAM_FLAGS])
    def test_each_fix_is_in_the_docs(self, flag: str) -> None:
        """docs/hardened.md has its paragraph and the README lists it."""
        assert f"`{flag}`" in (ROOT / "docs" / "hardened.md").read_text(encoding="utf-8")
        assert f"`{flag}`" in (ROOT / "README.md").read_text(encoding="utf-8")


# --- profile-only transitions in the definitions -------------------------------------------------------------------


@pytest.fixture
def hardened_only(door_workflow: dict[str, Any]) -> dict[str, Any]:
    """The door workflow with a hardened-only way out of Jammed."""
    door_workflow["events"].append({"name": "Unjam"})
    door_workflow["states"][2] = {"name": "Jammed", "tags": ["error"]}
    door_workflow["transitions"].append(
        {"source": "Jammed", "event": "Unjam", "dest": "Closed", "calls": "door.unjam", "profiles": ["hardened"]}
    )
    return door_workflow


class TestProfileOnlyTransitions:
    """``profiles = [...]`` on a workflow transition: validated at load, shown by check, diagrams and faults."""

    def test_loaded_and_filtered_per_profile(
        self, hardened_only: dict[str, Any], write_definition: Callable[..., Path]
    ) -> None:
        """The machine of each profile has the transitions of that profile."""
        definition = load_file(write_definition(hardened_only))
        assert definition.transition("Jammed", "Unjam") is not None
        assert definition.for_profile("hardened").transition("Jammed", "Unjam") is not None
        assert definition.for_profile("cloudstack").transition("Jammed", "Unjam") is None
        assert definition.for_profile("cloudstack").allowed("Jammed") == ()

    def test_same_definitions_object_per_profile(
        self, hardened_only: dict[str, Any], write_definition: Callable[..., Path]
    ) -> None:
        """Engines cache by identity: one profile's definitions are one object."""
        write_definition(hardened_only)
        definitions = load_directory(write_definition(hardened_only).parent)
        assert definitions.for_profile("hardened") is definitions.for_profile("hardened")
        assert load_directory().for_profile("cloudstack") is not None

    def test_unknown_profile_names_file_machine_and_key(
        self, hardened_only: dict[str, Any], write_definition: Callable[..., Path]
    ) -> None:
        """A misspelt profile is refused with the nearest name."""
        hardened_only["transitions"][-1]["profiles"] = ["hardend"]
        path = write_definition(hardened_only)
        with pytest.raises(DefinitionError) as info:
            load_file(path)
        assert str(info.value) == (
            f"{path}: machine 'door', transition 4: profiles: 'hardend' is not a profile "
            "(known: cloudstack, hardened) (did you mean 'hardened'?)"
        )

    def test_entity_machines_refuse_profiles(self, door: dict[str, Any], write_definition: Callable[..., Path]) -> None:
        """An entity machine is CloudStack's table: no profile changes it."""
        door["transitions"][0]["profiles"] = ["hardened"]
        with pytest.raises(DefinitionError, match="transition 1: profiles: an entity machine is CloudStack's table"):
            load_file(write_definition(door))

    def test_an_error_transition_must_exist_wherever_its_step_does(
        self, door_workflow: dict[str, Any], write_definition: Callable[..., Path]
    ) -> None:
        """A step present under every profile cannot fail into a hardened-only error transition."""
        door_workflow["transitions"][1]["profiles"] = ["hardened"]
        with pytest.raises(DefinitionError, match=r"transition 1: on_error: its error transition 2 .* cloudstack"):
            load_file(write_definition(door_workflow))

    def test_diagrams_and_faults_show_it(
        self, hardened_only: dict[str, Any], write_definition: Callable[..., Path]
    ) -> None:
        """The edge is drawn as profile-only, labelled with its profile; the crash point says where it exists."""
        definition = load_file(write_definition(hardened_only))
        unjam = next(e for e in edges(definition) if e.source == "Jammed")
        assert (unjam.kind, unjam.labels) == ("profile", ("Unjam / door.unjam [hardened]",))
        assert "Jammed --> Closed: Unjam / door.unjam [hardened] ◆ profile only" in to_mermaid(definition)
        definitions = load_directory(write_definition(hardened_only).parent)
        point = next(p for p in catalogue(definitions, ()).crash_points if p.name == "door.Unjam")
        assert (point.profiles, point.transitions) == (("hardened",), ("Jammed --Unjam--> Closed [hardened]",))


# --- each fix against the counterexample it removes ----------------------------------------------------------------

CASES = {
    "F1": "delete-during-take:powerflex/detached/plain/sync/no-copies/one-server steps=1 "
    "faults=crash@primary.answered#4@1/ms1",
    "F1a": "copy:nfs-kvm/running/plain/sync/no-copies/one-server steps=1 faults=crash@api.allocate#2@1/ms1",
    "F2": "take-delete:nfs-vmware/detached/encrypted/sync/no-copies/one-server steps=1 "
    "faults=exception@default.takeSnapshot@1",
    "F3": "take-delete:nfs-vmware/detached/encrypted/sync/no-copies/one-server steps=1 "
    "faults=error@default.takeSnapshot@1",
    "F8": "two-takes:rbd/detached/plain/async/no-copies/one-server steps=1 faults=crash@backup_task.Run@1/ms1",
    "N1": "no-image-store:nfs-kvm/detached/encrypted/sync/no-copies/one-server steps=1 faults=none",
    "N1-delete": "refused-takes:rbd/running/plain/sync/no-copies/one-server steps=1,2,3,4 faults=none",
    "N1-archive": "secondary-archive:solidfire-xenserver/running/plain/sync/no-copies/one-server steps=1 faults=none",
    "N2": "two-takes:nfs-xenserver/detached/plain/async/no-copies/one-server steps=1 faults=none",
    "N2-delta": "chain:nfs-xenserver/detached/encrypted/async/no-copies/two-servers steps=1,2,3 faults=none",
    "N3": "delete-during-take:powerflex/detached/plain/sync/no-copies/one-server steps=1,2,3,4 faults=none",
    "N4": "delete-zones:nfs-xenserver/running/plain/sync/zone-copy/one-server steps=1,2,3,4,5,6 faults=none",
    "N4-primary": "copy:powerflex/running/plain/sync/no-copies/one-server steps=1,2,5 faults=none",
    "N4-pool": "pool-copy-task:storpool/running/plain/no-backup/pool-copy/one-server steps=1 faults=none",
    "R1": "two-takes:nfs-xenserver/detached/plain/async/no-copies/one-server steps=1,2 "
    "faults=preempt:0@primary.begin@3@1/ms1",
    "R2": "two-takes:nfs-xenserver/detached/plain/async/no-copies/one-server steps=1,2 "
    "faults=preempt:1@createSnapshot@3@2/ms1",
    "R3": "copy-during-delete:nfs-xenserver/running/plain/sync/no-copies/one-server steps=1,2,3,4 "
    "faults=preempt:0@copies.start_zone_copy@14@1/ms1",
}
BROKEN = {
    "F1": ["answer-matches-state", "counts-match-recount", "no-transitional-state"],
    "F1a": ["counts-match-recount"],
    "F2": ["answer-matches-state", "counts-match-recount", "no-transitional-state"],
    "F3": ["usage-matches-objects"],
    "F8": ["answer-matches-state", "counts-match-recount"],
    "N1": ["answer-matches-state", "counts-match-recount"],
    "N1-delete": ["answer-matches-state", "counts-match-recount", "no-negative-count"],
    "N1-archive": ["answer-matches-state", "counts-match-recount"],
    "N2": ["counts-match-recount", "no-negative-count"],
    "N2-delta": ["counts-match-recount", "no-negative-count"],
    "N3": ["counts-match-recount"],
    "N4": ["counts-match-recount"],
    "N4-primary": ["counts-match-recount"],
    "N4-pool": ["counts-match-recount"],
    "R1": ["answer-matches-state", "counts-match-recount", "no-negative-count"],
    "R2": ["answer-matches-state", "counts-match-recount", "no-negative-count"],
    "R3": ["usage-matches-objects"],
}


def _ids() -> list[tuple[str, str]]:
    return [(name, profile) for name in CASES for profile in ("cloudstack", "hardened")]


NEW_CASES = {
    "F5-async-error": "two-takes:rbd/detached/plain/async/no-copies/one-server steps=1 "
    "faults=error@default.copyAsync@1",
    "F5-async-every-try": "two-takes:rbd/detached/plain/async/no-copies/one-server steps=1 "
    "faults=error@default.copyAsync@1 error@default.copyAsync@2 error@default.copyAsync@3 error@default.copyAsync@4",
    "F5-async-null": "take-delete:nfs-vmware/stopped/plain/async/no-copies/one-server steps=1,2,3 "
    "faults=null_answer@default.copyAsync@1",
    "F5-sync-null": "zone-copy:nfs-xenserver/detached/plain/sync/zone-copy/one-server steps=1 "
    "faults=null_answer@default.copyAsync@1",
    "F6b-default": "restart-while-peer-works:nfs-xenserver/detached/plain/sync/no-copies/two-servers steps=1,2,3 "
    "faults=error@image.deleteAsync@1",
    "F6b-storage-system": "copy-during-delete:ontap/detached/plain/sync/no-copies/one-server steps=1,2,4 "
    "faults=exception@ontap.deleteAsync@1",
    "F6b-storpool": "delete-zones:storpool/stopped/plain/sync/pool-copy/one-server steps=1,2,5 "
    "faults=error@storpool.snapshotDelete@1",
    "F4-copy": "zone-copy:nfs-xenserver/detached/plain/async/zone-copy/one-server steps=1 "
    "faults=no_answer@image.createAsync@1",
    "F4-delete": "copy:powerflex/running/plain/sync/no-copies/one-server steps=1,2,5 "
    "faults=no_answer@powerflex.deleteAsync@1",
    "F4-backup": "two-takes:rbd/detached/plain/async/no-copies/one-server steps=1 faults=no_answer@default.copyAsync@1",
    "F6a-storage-system": "copy-during-delete:ontap/detached/plain/sync/no-copies/one-server steps=1,2,4 "
    "faults=crash@delete.start#4@1/ms1",
    "F6a-zone": "delete-zones:nfs-vmware/detached/encrypted/sync/zone-copy/one-server steps=1,2,3 "
    "faults=crash@delete.finish#1@1/ms1",
    "F6a-storpool": "delete-zones:storpool/stopped/plain/sync/pool-copy/one-server steps=1,2,5 "
    "faults=crash@delete.answered#2@1/ms1",
    "F8-storage-system": "delete-during-take:powerflex/detached/plain/async/no-copies/two-servers steps=1 "
    "faults=crash@backup_task.mark_backed_up#2@1/ms1",
    "deferred-recount": "two-servers:nfs-xenserver/detached/plain/async/no-copies/two-servers steps=1,2 "
    "faults=crash@api.allocate#2@1/ms2",
}
"""Cases judged as the explorer judges them: what the run breaks that the same program run clean does not."""
NEW_BROKEN = {
    "F5-async-error": ["answer-matches-state", "counts-match-recount", "usage-matches-objects"],
    "F5-async-every-try": ["answer-matches-state", "counts-match-recount", "usage-matches-objects"],
    "F5-async-null": ["no-transitional-state", "ready-ref-has-object", "usage-matches-objects"],
    "F5-sync-null": ["usage-matches-objects"],
    "F4-copy": ["no-transitional-state"],
    "F4-delete": ["answer-matches-state", "no-transitional-state", "usage-matches-objects"],
    "F4-backup": ["answer-matches-state", "counts-match-recount", "usage-matches-objects"],
    "F6a-storage-system": ["answer-matches-state", "no-transitional-state"],
    "F6a-zone": ["answer-matches-state", "usage-matches-objects"],
    "F6a-storpool": ["answer-matches-state", "counts-match-recount", "usage-matches-objects"],
    "F8-storage-system": ["answer-matches-state", "no-transitional-state"],
    "deferred-recount": ["counts-match-recount"],
    "F6b-default": ["ready-ref-has-object", "usage-matches-objects"],
    "F6b-storage-system": ["answer-matches-state", "usage-matches-objects"],
    "F6b-storpool": ["answer-matches-state", "usage-matches-objects"],
}


def _new_ids() -> list[tuple[str, str]]:
    return [(name, profile) for name in NEW_CASES for profile in ("cloudstack", "hardened")]


class TestFixesAgainstClean:
    """A finding's minimal case judged against its clean run: the fault's own violations, or none under hardened."""

    @pytest.mark.parametrize(("name", "profile"), _new_ids(), ids=[f"{n}-{p}" for n, p in _new_ids()])
    def test_minimal_case(self, name: str, profile: str) -> None:
        """Under ``cloudstack`` the finding's invariants; under ``hardened`` none beyond the clean run's."""
        assert fault_added(NEW_CASES[name], profile) == ([] if profile == "hardened" else NEW_BROKEN[name])

    def test_a_failed_async_backup_keeps_the_snapshot_on_primary(self) -> None:
        """F5 under hardened: the failed try leaves the SUCCEEDED take's snapshot live, and the retry backs it up."""
        ran = replay_case(f"{NEW_CASES['F5-async-error']} profile=hardened seed=0")
        store = ran.world.engine.store
        try:
            assert store.state_of(store.get(AsyncJob, 1)) == JobState.SUCCEEDED
            snapshot = store.get(Snapshot, 1)
            assert (snapshot.status, snapshot.removed) == (SnapshotState.BackedUp, None)
            refs = store.find(SnapshotStoreRef, "snapshot_id = 1")
            assert [(r.store_role, r.state) for r in refs] == [("Primary", RefState.Ready), ("Image", RefState.Ready)]
            failed_try = store.find(
                TransitionLog, "machine = 'snapshot' AND entity_id = 1 AND event = ?", ("OperationNotPerformed",)
            )
            assert [(r.source, r.dest) for r in failed_try] == [("BackingUp", "BackedUp")]
        finally:
            ran.world.engine.close()

    def test_an_async_backup_that_never_succeeds_leaves_it_on_primary(self) -> None:
        """F5 under hardened, every try failing: BackedUp on primary only, charged there, never removed."""
        ran = replay_case(f"{NEW_CASES['F5-async-every-try']} profile=hardened seed=0")
        store = ran.world.engine.store
        try:
            snapshot = store.get(Snapshot, 1)
            assert (snapshot.status, snapshot.removed) == (SnapshotState.BackedUp, None)
            refs = store.find(SnapshotStoreRef, "snapshot_id = 1")
            assert [(r.store_role, r.state) for r in refs] == [("Primary", RefState.Ready)]
            assert recount(store, snapshot.account_id) == {
                r.type: r.count for r in store.find(ResourceCount, "account_id = ?", (snapshot.account_id,))
            }
        finally:
            ran.world.engine.close()

    def test_a_failed_storage_delete_is_left_to_the_gc(self) -> None:
        """F6b under hardened: the delete SUCCEEDED, its ref stayed Destroying, and the GC deleted the file later."""
        ran = replay_case(f"{NEW_CASES['F6b-default']} profile=hardened seed=0")
        store = ran.world.engine.store
        try:
            delete = store.first(AsyncJob, "job_cmd LIKE '%DeleteSnapshotCmd'")
            assert delete is not None
            assert store.state_of(delete) == JobState.SUCCEEDED
            image = store.find(TransitionLog, "machine = 'snapshot_store_ref' AND entity_id = 2", order_by="id")
            moves = [
                (r.source, r.event, r.dest, r.job_id is not None) for r in image if r.source in ("Ready", "Destroying")
            ]
            assert moves == [
                ("Ready", "DestroyRequested", "Destroying", True),
                ("Destroying", "OperationFailed", "Destroying", True),
                ("Destroying", "DestroyRequested", "Destroying", False),  # the GC's sweep, no job
                ("Destroying", "OperationSucceeded", "Destroyed", False),
            ]
            assert store.find(StorageObject, "deleted_ms IS NULL AND snapshot_id = 1") == []
        finally:
            ran.world.engine.close()

    def test_an_unanswered_call_times_out(self) -> None:
        """F4 under hardened: the zone copy's future fails after ``async.call.wait`` s and its ref goes."""
        ran = replay_case(f"{NEW_CASES['F4-copy']} profile=hardened seed=0")
        store = ran.world.engine.store
        try:
            refs = store.find(SnapshotStoreRef, "snapshot_id = 1 AND store_role = 'Image'")
            assert [r.state for r in refs] == [RefState.Ready]  # the backup's; the zone copy's ref was failed
            failed = store.find(TransitionLog, "machine = 'snapshot_store_ref' AND event = 'OperationFailed'")
            assert [(r.entity_id, r.source, r.at_ms) for r in failed] == [(3, "Creating", 2_000 + 30_000 + 3_600_000)]
        finally:
            ran.world.engine.close()


class TestFixes:
    """A finding's minimal case: what it breaks under ``cloudstack``, nothing under ``hardened``."""

    @pytest.mark.parametrize(("name", "profile"), _ids(), ids=[f"{n}-{p}" for n, p in _ids()])
    def test_minimal_case(self, name: str, profile: str) -> None:
        """The replay's own judgement agrees with the fixture's: the finding's invariants, or none."""
        ran = replay_case(f"{CASES[name]} profile={profile} seed=0")
        try:
            found = sorted({v.invariant for v in ran.outcome.violations})
        finally:
            ran.world.engine.close()
        assert found == ([] if profile == "hardened" else BROKEN[name])

    def test_a_failed_take_is_undone_by_the_restart(self) -> None:
        """F1 under hardened: the job FAILED, the volume Ready, the snapshot set Error by the restart, then expunged."""
        ran = replay_case(f"{CASES['F1']} profile=hardened seed=0")
        store = ran.world.engine.store
        try:
            assert store.state_of(store.get(AsyncJob, 1)) == JobState.FAILED
            assert store.get(Volume, 1).state == VolumeState.Ready
            assert store.first(Snapshot, "id = 1") is None
            undo = store.find(TransitionLog, "machine = 'snapshot' AND kind = 'direct'")
            assert [(r.source, r.event, r.dest) for r in undo] == [("CreatedOnPrimary", UNDO_TAKE, "Error")]
            assert store.find(StorageObject, "deleted_ms IS NULL") == []
        finally:
            ran.world.engine.close()

    def test_a_lost_backup_task_ends_backed_up(self) -> None:
        """F8 under hardened: the SUCCEEDED async take's snapshot is BackedUp, kept on primary, its bill open."""
        ran = replay_case(f"{CASES['F8']} profile=hardened seed=0")
        store = ran.world.engine.store
        try:
            assert store.state_of(store.get(AsyncJob, 1)) == JobState.SUCCEEDED
            assert store.get(Snapshot, 1).status == SnapshotState.BackedUp
            refs = store.find(SnapshotStoreRef, "snapshot_id = 1")
            assert [(r.store_role, r.state) for r in refs] == [("Primary", RefState.Ready)]
            # The volume has no cluster: post-processed under chain_end_without_cluster (N3), so SNAPSHOT.CREATE too.
            assert [u.type for u in store.find(UsageEvent)] == ["SNAPSHOT.ON_PRIMARY", "SNAPSHOT.CREATE"]
        finally:
            ran.world.engine.close()

    @staticmethod
    def _counts(store: Any) -> dict[str, int]:
        return {c.type: c.count for c in store.find(ResourceCount, "account_id = 2")}

    def test_a_refused_take_leaves_no_row_and_no_charge(self) -> None:
        """N1 under hardened: the job FAILED (530), the Allocated snapshot removed, every count back to zero."""
        ran = replay_case(f"{CASES['N1']} profile=hardened seed=0")
        store = ran.world.engine.store
        try:
            job = store.get(AsyncJob, 1)
            assert (store.state_of(job), job.job_result_code) == (JobState.FAILED, 530)
            assert store.get(Snapshot, 1).removed is not None
            assert self._counts(store) == {"snapshot": 0, "primary_storage": 0, "secondary_storage": 0}
        finally:
            ran.world.engine.close()

    def test_an_async_take_is_corrected_on_secondary(self) -> None:
        """N2 under hardened: the backed-up snapshot is charged its backup's size on secondary, nothing on primary."""
        ran = replay_case(f"{CASES['N2']} profile=hardened seed=0")
        store = ran.world.engine.store
        try:
            image = store.first(SnapshotStoreRef, "snapshot_id = 1 AND store_role = 'Image'")
            assert image is not None and image.state == RefState.Ready
            expected = {"snapshot": 1, "primary_storage": 0, "secondary_storage": image.physical_size}
            assert self._counts(store) == expected
        finally:
            ran.world.engine.close()
