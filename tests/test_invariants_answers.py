"""The answer invariants (snapshotfsm.invariants.answers), each on hand-written good and bad databases."""

from __future__ import annotations

import pytest
from invariant_rows import Rows

from snapshotfsm import invariants
from snapshotfsm.errors import InvalidValue
from snapshotfsm.invariants import Input, When, answers, violations
from snapshotfsm.invariants.answers import answer_matches_state, command, same_error_same_code, usage_matches_objects
from snapshotfsm.orchestration.restart import CANCELLED_TEXT

CRE = "com.cloud.utils.exception.CloudRuntimeException"
IPVE = "com.cloud.exception.InvalidParameterValueException"
SAE = "org.apache.cloudstack.api.ServerApiException"
UOE = "java.lang.UnsupportedOperationException"


@pytest.fixture
def rows() -> Rows:
    return Rows()


class TestTable:
    """The module's table, and its place in the package's."""

    def test_each_is_declared_with_when_and_inputs(self) -> None:
        declared = [(i.name, i.when, i.inputs) for i in answers.INVARIANTS]
        assert declared == [
            ("answer-matches-state", When.QUIESCENT, frozenset({Input.DATABASE})),
            ("usage-matches-objects", When.QUIESCENT, frozenset({Input.DATABASE, Input.STORAGE})),
            ("same-error-same-code", When.ALWAYS, frozenset({Input.DATABASE})),
        ]

    def test_each_says_what_it_means(self) -> None:
        for inv in answers.INVARIANTS:
            assert len(inv.doc.splitlines()) > 3, inv.name

    def test_the_package_lists_them(self) -> None:
        assert all(inv in invariants.INVARIANTS for inv in answers.INVARIANTS)

    def test_a_point_checks_what_is_due_there(self, rows: Rows) -> None:
        """Only ALWAYS invariants are checked at ALWAYS: a FAILED take that left its snapshot live is not seen."""
        rows.job("create", "FAILED", rows.snapshot("Allocated"), code=530)
        run = invariants.Run(store=rows.store)
        assert violations(answers.INVARIANTS, run, at=When.ALWAYS) == []
        assert [v.invariant for v in violations(answers.INVARIANTS, run, at=When.QUIESCENT)] == ["answer-matches-state"]

    @pytest.mark.parametrize(
        ("job_cmd", "name"),
        [
            ("org.apache.cloudstack.api.command.user.snapshot.CreateSnapshotCmd", "createSnapshot"),
            ("CopySnapshotCmd", "copySnapshot"),
            ("com.cloud.vm.VmWorkTakeVolumeSnapshot", "vmWorkTakeVolumeSnapshot"),
        ],
    )
    def test_a_command_is_named_as_the_api_names_it(self, job_cmd: str, name: str) -> None:
        assert command(job_cmd) == name


class TestSucceededTakeOrCopy:
    """A SUCCEEDED take or copy promises a live BackedUp snapshot, which only another job may take away."""

    def test_holds_for_a_backed_up_snapshot(self, rows: Rows) -> None:
        s = rows.snapshot()
        rows.job("create", "SUCCEEDED", s)
        rows.job("copy", "SUCCEEDED", s)
        assert rows.check(answer_matches_state) == []

    def test_a_snapshot_short_of_backed_up_breaks_it(self, rows: Rows) -> None:
        s = rows.snapshot("CreatedOnPrimary")
        job = rows.job("create", "SUCCEEDED", s)
        assert rows.details(answer_matches_state) == [
            f"job {job} (createSnapshot): SUCCEEDED, but snapshot {s} is CreatedOnPrimary: not a final good state"
        ]

    def test_a_later_delete_by_another_job_is_no_breach(self, rows: Rows) -> None:
        s = rows.snapshot("Destroyed")
        rows.job("create", "SUCCEEDED", s)
        delete = rows.job("delete", "SUCCEEDED", s)
        rows.log("snapshot", s, "BackedUp", "DestroyRequested", "Destroying", job_id=delete)
        rows.log("snapshot", s, "Destroying", "OperationSucceeded", "Destroyed", job_id=delete)
        assert rows.check(answer_matches_state) == []

    def test_its_own_job_taking_it_away_breaks_it(self, rows: Rows) -> None:
        """An asynchronous backup that failed after the job answered (spec §7.2) runs for that job."""
        s = rows.snapshot("Error", removed=True)
        job = rows.job("create", "SUCCEEDED", s)
        rows.log("snapshot", s, "BackingUp", "OperationFailed", "Error", job_id=job)
        rows.log("snapshot", s, "Error", "cleanupOnSnapshotBackupFailure", "Error", job_id=job, kind="remove")
        assert rows.details(answer_matches_state) == [
            (
                f"job {job} (createSnapshot): SUCCEEDED, but snapshot {s} is Error and removed: its own job took it "
                "out of use (event OperationFailed)"
            )
        ]

    def test_no_job_taking_it_away_breaks_it(self, rows: Rows) -> None:
        s = rows.snapshot(removed=True)
        job = rows.job("copy", "SUCCEEDED", s)
        rows.log("snapshot", s, "BackedUp", "SnapshotDaoImpl.remove", "BackedUp", job_id=None, kind="remove")
        assert rows.details(answer_matches_state) == [
            (
                f"job {job} (copySnapshot): SUCCEEDED, but snapshot {s} is BackedUp and removed: no job took it out of "
                "use (removed by SnapshotDaoImpl.remove)"
            )
        ]

    def test_a_snapshot_with_no_row(self, rows: Rows) -> None:
        job = rows.job("create", "SUCCEEDED", 99)
        assert rows.details(answer_matches_state) == [
            f"job {job} (createSnapshot): SUCCEEDED, but snapshot 99 has no row: not a final good state"
        ]

    def test_jobs_still_running_are_not_judged(self, rows: Rows) -> None:
        rows.job("create", "IN_PROGRESS", rows.snapshot("Creating"))
        assert rows.check(answer_matches_state) == []


class TestFailedTake:
    """A FAILED take leaves no live snapshot and nothing a recount charges (spec §19.2)."""

    def test_holds_for_an_error_snapshot_with_nothing_ready(self, rows: Rows) -> None:
        s = rows.snapshot("Error")
        rows.ref(s, "Primary", "Destroyed", "pool/s1")
        rows.job("create", "FAILED", s, code=530)
        assert rows.check(answer_matches_state) == []

    @pytest.mark.parametrize("status", ["Allocated", "Creating", "CreatedOnPrimary", "BackingUp", "BackedUp"])
    def test_a_live_snapshot_breaks_it(self, rows: Rows, status: str) -> None:
        s = rows.snapshot(status)
        job = rows.job("create", "FAILED", s, code=530)
        assert rows.details(answer_matches_state) == [
            f"job {job} (createSnapshot): FAILED, but left snapshot {s} live ({status})"
        ]

    def test_a_removed_snapshot_is_not_live(self, rows: Rows) -> None:
        rows.job("create", "FAILED", rows.snapshot("BackedUp", removed=True), code=530)
        assert rows.check(answer_matches_state) == []

    def test_a_ready_image_ref_is_charged_even_when_removed(self, rows: Rows) -> None:
        s = rows.snapshot("Error", removed=True)
        rows.ref(s, "Image", "Ready", "snap/s1")
        job = rows.job("create", "FAILED", s, code=530)
        assert rows.details(answer_matches_state) == [
            f"job {job} (createSnapshot): FAILED, but left 1 Ready image ref(s) of snapshot {s} (secondary_storage)"
        ]

    def test_a_ready_primary_ref_is_charged_without_an_image_ref(self, rows: Rows) -> None:
        s = rows.snapshot("Error")
        rows.ref(s, "Primary", "Ready", "pool/s1")
        job = rows.job("create", "FAILED", s, code=530)
        assert rows.details(answer_matches_state) == [
            f"job {job} (createSnapshot): FAILED, but left 1 Ready primary ref(s) of snapshot {s} (primary_storage)"
        ]

    def test_a_ready_primary_ref_is_not_charged_beside_an_image_ref_or_once_removed(self, rows: Rows) -> None:
        beside, removed = rows.snapshot("Error"), rows.snapshot("Error", removed=True)
        rows.ref(beside, "Primary", "Ready", "pool/a")
        rows.ref(beside, "Image", "Destroyed", "snap/a")
        rows.ref(removed, "Primary", "Ready", "pool/b")
        rows.job("create", "FAILED", beside, code=530)
        rows.job("create", "FAILED", removed, code=530)
        assert rows.check(answer_matches_state) == []


class TestSucceededDelete:
    """A SUCCEEDED delete leaves the snapshot Destroyed or removed, or, for one zone, nothing Ready there."""

    @pytest.mark.parametrize(("status", "removed"), [("Destroyed", False), ("BackedUp", True)])
    def test_holds_when_the_snapshot_is_gone(self, rows: Rows, status: str, removed: bool) -> None:
        rows.job("delete", "SUCCEEDED", rows.snapshot(status, removed=removed))
        assert rows.check(answer_matches_state) == []

    def test_a_snapshot_still_there_breaks_it(self, rows: Rows) -> None:
        s = rows.snapshot("Destroying")
        job = rows.job("delete", "SUCCEEDED", s)
        assert rows.details(answer_matches_state) == [
            f"job {job} (deleteSnapshot): SUCCEEDED, but snapshot {s} is Destroying"
        ]

    def test_a_zone_delete_needs_no_ready_ref_left_in_that_zone(self, rows: Rows) -> None:
        s = rows.snapshot()
        rows.ref(s, "Image", "Ready", "snap/s1")
        rows.ref(s, "Image", "Destroyed", "snap/s1", store_id=rows.image2.id)
        rows.job("delete", "SUCCEEDED", s, info={"id": s, "zoneid": rows.zone2.id})
        assert rows.check(answer_matches_state) == []
        job = rows.job("delete", "SUCCEEDED", s, info={"id": s, "zoneid": rows.zone.id})
        assert rows.details(answer_matches_state) == [
            (
                f"job {job} (deleteSnapshot): SUCCEEDED for zone {rows.zone.id}, but snapshot {s} still has 1 Ready "
                "ref(s) there"
            )
        ]

    @pytest.mark.parametrize(
        ("info", "what"),
        [("not json", "job_cmd_info"), ("[1]", "job_cmd_info"), ('{"zoneid": "1"}', "job_cmd_info zoneid")],
    )
    def test_a_job_whose_parameters_do_not_read_is_refused(self, rows: Rows, info: str, what: str) -> None:
        job = rows.job("delete", "SUCCEEDED", rows.snapshot(), info=info)
        with pytest.raises(InvalidValue, match=f"^async_job {job} {what} must be ") as caught:
            rows.check(answer_matches_state)
        assert caught.value.value in (info, "1")


class TestFailedDeleteOrCopy:
    """A FAILED delete or copy leaves what it moved as it found it, and nothing it created."""

    def test_holds_when_everything_moved_is_back(self, rows: Rows) -> None:
        s = rows.snapshot()
        ref = rows.ref(s, "Image", "Ready", "snap/s1")
        job = rows.job("delete", "FAILED", s, code=530)
        rows.log("snapshot", s, "BackedUp", "DestroyRequested", "Destroying", job_id=job)
        rows.log("snapshot_store_ref", ref, "Ready", "DestroyRequested", "Destroying", job_id=job)
        rows.log("snapshot_store_ref", ref, "Destroying", "OperationFailed", "Ready", job_id=job, kind="direct")
        rows.log("snapshot", s, "Destroying", "OperationFailed", "BackedUp", job_id=job)
        assert rows.check(answer_matches_state) == []

    def test_a_ref_left_destroying_breaks_it(self, rows: Rows) -> None:
        s = rows.snapshot()
        ref = rows.ref(s, "Primary", "Destroying", "pool/s1")
        job = rows.job("delete", "FAILED", s, code=530)
        rows.log("snapshot_store_ref", ref, "Ready", "DestroyRequested", "Destroying", job_id=job)
        assert rows.details(answer_matches_state) == [
            (
                f"job {job} (deleteSnapshot): FAILED, but snapshot_store_ref {ref} it moved is Destroying (it found it "
                "Ready)"
            )
        ]

    def test_the_state_found_is_what_the_first_move_overwrote(self, rows: Rows) -> None:
        s = rows.snapshot("Destroying")
        job = rows.job("delete", "FAILED", s, code=530)
        rows.log("snapshot", s, "BackedUp", "DestroyRequested", "Destroying", job_id=job, overwrote="Destroying")
        assert rows.check(answer_matches_state) == []

    def test_a_copy_that_left_a_ref_it_created_breaks_it(self, rows: Rows) -> None:
        s = rows.snapshot()
        made = rows.ref(s, "Image", "Ready", "snap/s1", store_id=rows.image2.id)
        gone = 999
        job = rows.job("copy", "FAILED", s, code=534)
        rows.log("snapshot_store_ref", made, "", "create", "Allocated", job_id=job, kind="create")
        rows.log("snapshot_store_ref", gone, "", "create", "Allocated", job_id=job, kind="create")
        rows.log("snapshot_store_ref", gone, "Allocated", "deleteIfNotReady", "", job_id=job, kind="delete")
        assert rows.details(answer_matches_state) == [
            f"job {job} (copySnapshot): FAILED, but snapshot_store_ref {made} it moved is Ready (it found it absent)"
        ]

    def test_a_removal_is_a_change(self, rows: Rows) -> None:
        s = rows.snapshot("BackedUp", removed=True)
        job = rows.job("delete", "FAILED", s, code=530)
        rows.log("snapshot", s, "BackedUp", "SnapshotDaoImpl.remove", "BackedUp", job_id=job, kind="remove")
        assert rows.details(answer_matches_state) == [
            (
                f"job {job} (deleteSnapshot): FAILED, but snapshot {s} it moved is BackedUp and removed (it found it "
                "BackedUp)"
            )
        ]

    def test_what_other_jobs_moved_is_not_this_ones(self, rows: Rows) -> None:
        s = rows.snapshot("Destroyed")
        rows.job("delete", "FAILED", s, code=530)
        later = rows.job("delete", "SUCCEEDED", s)
        rows.log("snapshot", s, "BackedUp", "DestroyRequested", "Destroying", job_id=later)
        assert rows.check(answer_matches_state) == []


class TestUsageMatchesObjects:
    """Usage bills what existed, and a start whose object went has its stop."""

    def test_holds_for_objects_there_and_stops_after_those_gone(self, rows: Rows) -> None:
        live, gone = rows.snapshot(), rows.snapshot("Destroyed")
        rows.obj("primary", "pool/live", live)
        rows.obj("image", "snap/live", live)
        rows.obj("primary", "pool/gone", gone, deleted=True)
        rows.obj("image", "snap/gone", gone, deleted=True)
        rows.obj("image", "copy/gone", gone, store_id=rows.image2.id, deleted=True)
        for event in ("SNAPSHOT.ON_PRIMARY", "SNAPSHOT.CREATE"):
            rows.usage(event, live)
        rows.usage("SNAPSHOT.ON_PRIMARY", gone)
        rows.usage("SNAPSHOT.CREATE", gone)
        rows.usage("SNAPSHOT.COPY", gone, zone_id=rows.zone2.id)
        rows.usage("SNAPSHOT.OFF_PRIMARY", gone)
        rows.usage("SNAPSHOT.DELETE", gone)
        rows.usage("SNAPSHOT.DELETE", gone, zone_id=rows.zone2.id)
        assert rows.check(usage_matches_objects) == []

    def test_a_snapshot_never_on_primary_is_billed_there(self, rows: Rows) -> None:
        """KVM file-based with backup on writes straight to secondary (spec §13.2), yet ON_PRIMARY is written."""
        s = rows.snapshot()
        rows.obj("image", "snap/s1", s)
        rows.usage("SNAPSHOT.ON_PRIMARY", s)
        assert rows.details(usage_matches_objects) == [
            f"usage_event 1 (SNAPSHOT.ON_PRIMARY): snapshot {s} never had an object on primary storage"
        ]

    def test_an_object_in_another_zone_does_not_count(self, rows: Rows) -> None:
        s = rows.snapshot()
        rows.obj("image", "snap/s1", s)
        rows.usage("SNAPSHOT.COPY", s, zone_id=rows.zone2.id)
        rows.usage("SNAPSHOT.DELETE", s, zone_id=rows.zone2.id)
        assert rows.details(usage_matches_objects) == [
            f"usage_event 1 (SNAPSHOT.COPY): snapshot {s} never had an object in zone {rows.zone2.id}",
            f"usage_event 2 (SNAPSHOT.DELETE): snapshot {s} never had an object in zone {rows.zone2.id}",
        ]

    def test_checkpoints_and_temp_files_are_no_snapshot_data(self, rows: Rows) -> None:
        s = rows.snapshot()
        rows.obj("primary", "cp/s1", s, kind="checkpoint")
        rows.obj("primary", "vol#bitmap/s1", s, kind="bitmap")
        rows.obj("primary", "pool/s1_temp", s, kind="converted")
        rows.usage("SNAPSHOT.ON_PRIMARY", s)
        assert len(rows.check(usage_matches_objects)) == 1

    def test_a_file_a_ref_names_counts_as_the_snapshots(self, rows: Rows) -> None:
        """§16.2: the empty delta's refs name its parent's files; a Destroyed ref no longer holds them.

        The primary ref is on the other zone's pool: a pool of zone 1 would still hold zone 1's copy.
        """
        parent, child = rows.snapshot(), rows.snapshot()
        rows.obj("primary", "pool/p", parent, store_id=rows.pool2.id)
        rows.obj("image", "snap/p", parent)
        rows.ref(child, "Primary", "Ready", "pool/p", store_id=rows.pool2.id)
        ref = rows.ref(child, "Image", "Ready", "snap/p")
        rows.usage("SNAPSHOT.ON_PRIMARY", child)
        rows.usage("SNAPSHOT.CREATE", child)
        assert rows.check(usage_matches_objects) == []
        rows.store.conn.execute("UPDATE snapshot_store_ref SET state = 'Destroyed' WHERE id = ?", (ref,))
        assert rows.details(usage_matches_objects) == [
            (
                f"usage_event 2 (SNAPSHOT.CREATE): snapshot {child} has no object in zone {rows.zone.id} any more, "
                "and no SNAPSHOT.DELETE followed"
            )
        ]

    def test_a_start_whose_object_went_needs_a_stop_after_it(self, rows: Rows) -> None:
        s = rows.snapshot("Destroyed")
        rows.obj("primary", "pool/s1", s, deleted=True)
        rows.obj("image", "snap/s1", s, deleted=True)
        rows.usage("SNAPSHOT.OFF_PRIMARY", s)
        rows.usage("SNAPSHOT.DELETE", s, zone_id=rows.zone2.id)
        rows.usage("SNAPSHOT.ON_PRIMARY", s)
        rows.usage("SNAPSHOT.CREATE", s)
        assert rows.details(usage_matches_objects) == [
            f"usage_event 2 (SNAPSHOT.DELETE): snapshot {s} never had an object in zone {rows.zone2.id}",
            (
                f"usage_event 3 (SNAPSHOT.ON_PRIMARY): snapshot {s} has no object on primary storage any more, and no "
                "SNAPSHOT.OFF_PRIMARY or SNAPSHOT.DELETE followed"
            ),
            (
                f"usage_event 4 (SNAPSHOT.CREATE): snapshot {s} has no object in zone {rows.zone.id} any more, and no "
                "SNAPSHOT.DELETE followed"
            ),
        ]

    def test_a_delete_ends_the_primary_bill_too(self, rows: Rows) -> None:
        s = rows.snapshot("Destroyed")
        rows.obj("primary", "pool/s1", s, deleted=True)
        rows.usage("SNAPSHOT.ON_PRIMARY", s)
        rows.usage("SNAPSHOT.DELETE", s)
        assert rows.check(usage_matches_objects) == []

    def test_other_events_are_not_looked_at(self, rows: Rows) -> None:
        rows.usage("VOLUME.CREATE", rows.snapshot())
        assert rows.check(usage_matches_objects) == []


class TestSameErrorSameCode:
    """One exception class, one API error code, on every path."""

    def test_holds_for_one_code_per_class(self, rows: Rows) -> None:
        for cmd, exc, code in (("create", CRE, 530), ("delete", CRE, 530), ("delete", IPVE, 431)):
            rows.failure(rows.job(cmd, "FAILED", rows.snapshot(), code=code), exc)
        assert rows.check(same_error_same_code) == []

    def test_two_codes_for_one_class_break_it(self, rows: Rows) -> None:
        first = rows.job("create", "FAILED", rows.snapshot(), code=530)
        rows.failure(first, IPVE, step="api.validate")
        for _ in range(2):
            rows.failure(rows.job("delete", "FAILED", rows.snapshot(), code=431), IPVE, step="delete.start")
        assert [(v.subject, v.detail) for v in rows.check(same_error_same_code)] == [
            (
                IPVE,
                (
                    "answered 431 on 2 job(s), e.g. job 2 (deleteSnapshot) at take_snapshot delete.start; "
                    "530 on 1 job(s), e.g. job 1 (createSnapshot) at take_snapshot api.validate"
                ),
            )
        ]

    def test_a_job_answers_for_its_last_failure(self, rows: Rows) -> None:
        job = rows.job("create", "FAILED", rows.snapshot(), code=530)
        rows.failure(job, IPVE)
        rows.failure(job, CRE)
        rows.failure(rows.job("delete", "FAILED", rows.snapshot(), code=431), IPVE)
        assert rows.check(same_error_same_code) == []

    def test_only_failed_jobs_answer(self, rows: Rows) -> None:
        rows.failure(rows.job("create", "SUCCEEDED", rows.snapshot()), CRE)
        rows.failure(rows.job("create", "FAILED", rows.snapshot(), code=530), CRE)
        assert rows.check(same_error_same_code) == []

    def test_a_job_the_restart_cancelled_answers_for_the_restart(self, rows: Rows) -> None:
        """The step's exception died with the server: the client saw the cancellation (530), not that error."""
        rows.failure(rows.job("create", "FAILED", rows.snapshot(), code=432), UOE, step="take.orchestrate")
        cancelled = rows.job("create", "FAILED", rows.snapshot(), code=530, result=CANCELLED_TEXT)
        rows.failure(cancelled, UOE, step="take.orchestrate")
        assert rows.check(same_error_same_code) == []
        rows.failure(rows.job("create", "FAILED", rows.snapshot(), code=530), UOE, step="take.orchestrate")
        assert [v.subject for v in rows.check(same_error_same_code)] == [UOE]

    def test_a_server_api_exception_carries_its_own_code(self, rows: Rows) -> None:
        rows.failure(rows.job("copy", "FAILED", rows.snapshot(), code=431), SAE)
        rows.failure(rows.job("copy", "FAILED", rows.snapshot(), code=534), SAE)
        assert rows.check(same_error_same_code) == []
