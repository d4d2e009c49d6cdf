"""The run's record of asynchronous calls, and the lifecycle invariants (``snapshotfsm.invariants.lifecycle``).

Each invariant fails on a hand-made bad database (rows written directly, around the store) and holds on a good one.
"""

from __future__ import annotations

import attrs
import pytest
from cloud import Cloud

from snapshotfsm.engine import Engine
from snapshotfsm.errors import ConcurrencyError, InvalidValue
from snapshotfsm.faults import FaultPlan
from snapshotfsm.invariants import INVARIANTS, Invariant, Run, When, check, lifecycle
from snapshotfsm.record import Call, Delivery, RunRecord
from snapshotfsm.store.records import Snapshot, SnapshotStoreRef, TransitionLog, Volume
from snapshotfsm.store.store import Store


def _answer_due(engine: Engine, label: str) -> None:
    """Run the clock up to (not including) the task labelled ``label``."""
    while engine.scheduler.pending()[0].label != label:
        engine.run(max_tasks=1)


class TestCallbackRecord:
    """``Driver.call`` names every asynchronous call in the run's record and notes each delivery."""

    def test_each_call_is_named_and_its_answer_noted_once(self) -> None:
        """A take on XenServer makes two calls (take, copy); each answer reaches its callback once."""
        cloud = Cloud()
        cloud.take(cloud.volume("xen-nfs"))
        record = cloud.engine.record
        assert record.issued == [
            Call("default.takeSnapshot#1", 1, 0),
            Call("default.copyAsync#2", 1, 2000),
        ]
        assert record.deliveries == [
            Delivery("default.takeSnapshot#1", 2000),
            Delivery("default.copyAsync#2", 32000),
        ]
        assert record.never_answered == {}

    @pytest.mark.violates("counts-match-recount")
    def test_a_no_answer_fault_is_noted_as_never_answered(self) -> None:
        """The call is named; nothing is delivered; the record says why."""
        cloud = Cloud(faults=FaultPlan().fail("default.takeSnapshot", kind="no_answer"))
        cloud.take(cloud.volume("xen-nfs"))
        record = cloud.engine.record
        assert [c.call for c in record.issued] == ["default.takeSnapshot#1"]
        assert record.deliveries == []
        assert record.never_answered == {
            "default.takeSnapshot#1": "injected no_answer fault on default.takeSnapshot: the storage never answers"
        }

    @pytest.mark.violates("answer-matches-state", "counts-match-recount", "no-transitional-state")
    def test_a_call_that_throws_at_once_is_not_an_asynchronous_call(self) -> None:
        """The caller gets the exception: no callback is owed, nothing is noted."""
        cloud = Cloud(faults=FaultPlan().fail("default.takeSnapshot", kind="exception"))
        taken = cloud.take(cloud.volume("xen-nfs"))
        assert taken.status == "FAILED"
        assert cloud.engine.record.issued == []
        assert cloud.engine.record.deliveries == []

    @pytest.mark.violates("counts-match-recount", "no-orphan-object")
    def test_an_answer_to_a_crashed_server_is_dropped(self) -> None:
        """The server crashed after the call: its answer comes back to a new incarnation and is dropped."""
        cloud = Cloud()
        engine = cloud.engine
        cloud.create(cloud.volume("xen-nfs"))
        _answer_due(engine, "default.takeSnapshot")
        engine.crash()
        engine.run()
        assert engine.record.deliveries == [Delivery("default.takeSnapshot#1", 2000, dropped=True)]

    @pytest.mark.violates("counts-match-recount", "no-orphan-object")
    def test_a_crash_that_drops_the_answer_on_its_way_notes_it_dropped(self) -> None:
        """The storage answered, but the server crashed before the answer ran: the crash notes it dropped."""
        cloud = Cloud()
        engine = cloud.engine
        cloud.create(cloud.volume("xen-nfs"))
        _answer_due(engine, "answer default.takeSnapshot")
        engine.crash()
        assert engine.record.deliveries == [Delivery("default.takeSnapshot#1", 2000, dropped=True)]
        engine.run()
        assert len(engine.record.deliveries) == 1

    def test_a_peer_call_names_the_peer(self) -> None:
        """Peers share the record; each call names the server its answer goes to."""
        cloud = Cloud()
        volume = cloud.volume("xen-nfs")
        peer = cloud.engine.peer(2)
        peer.create_snapshot(volume.id)
        peer.run()
        assert [(c.call, c.ms_id) for c in cloud.engine.record.issued] == [
            ("default.takeSnapshot#1", 2),
            ("default.copyAsync#2", 2),
        ]


# --- the invariants ------------------------------------------------------------------------------------------------


def _store(cloud: Cloud) -> Store:
    return cloud.engine.store


def _run(cloud: Cloud) -> Run:
    return Run(cloud.engine.store, cloud.engine.record)


def _found(inv: Invariant, cloud: Cloud) -> list[tuple[str, str]]:
    """The violations of ``inv`` as (subject, detail)."""
    return [(v.subject, v.detail) for v in inv(_run(cloud))]


def _taken() -> tuple[Cloud, Snapshot]:
    """A cloud with one BackedUp snapshot of a XenServer volume."""
    cloud = Cloud()
    taken = cloud.take(cloud.volume("xen-nfs"))
    return cloud, cloud.engine.snapshot_of(taken.job_id)


def _log(store: Store, machine: str, entity_id: int, source: str, event: str, dest: str, **extra: object) -> None:
    """A ``transition_log`` row written directly, around the store."""
    row: dict[str, object] = {"kind": "event", "ms_id": 1, "at_ms": 0, "overwrote": None, **extra}
    store.conn.execute(
        "INSERT INTO transition_log (machine, entity_id, source, event, dest, kind, ms_id, at_ms, overwrote)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (machine, entity_id, source, event, dest, row["kind"], row["ms_id"], row["at_ms"], row["overwrote"]),
    )


class TestTable:
    """The module lists its invariants, each declared with what it reads and when it must hold."""

    def test_the_lifecycle_invariants_are_listed_in_the_package(self) -> None:
        """Every invariant of the module is in the package's table, with a docstring."""
        assert [(i.name, i.when, sorted(x.value for x in i.inputs)) for i in lifecycle.INVARIANTS] == [
            ("state-matches-log", When.ALWAYS, ["database"]),
            ("legal-transitions", When.ALWAYS, ["database"]),
            ("no-blind-overwrite", When.ALWAYS, ["database"]),
            ("one-winner", When.ALWAYS, ["database"]),
            ("locks-released", When.QUIESCENT, ["database"]),
            ("callbacks-once", When.QUIESCENT, ["record"]),
            ("no-transitional-state", When.RESTARTED, ["database"]),
        ]
        assert set(lifecycle.INVARIANTS) <= set(INVARIANTS)
        assert all(i.doc for i in lifecycle.INVARIANTS)

    def test_a_quiesced_run_breaks_none(self) -> None:
        """Takes, a delete and a quiescence: every invariant holds after the restart."""
        cloud = Cloud()
        volume = cloud.volume("xen-nfs")
        first = cloud.take(volume)
        cloud.take(volume)
        cloud.engine.delete_snapshot(cloud.engine.snapshot_of(first.job_id).id)
        cloud.engine.run()
        cloud.engine.quiesce()
        assert check(_run(cloud), at=When.RESTARTED) == []


class TestNoTransitionalState:
    """``no-transitional-state``: nothing mid-operation and no job unfinished after quiescence and restart."""

    def test_holds_on_a_quiesced_cloud(self) -> None:
        """A take that ended leaves nothing transitional."""
        cloud, _ = _taken()
        cloud.engine.quiesce()
        assert _found(lifecycle.no_transitional_state, cloud) == []

    @pytest.mark.violates(
        "answer-matches-state", "counts-match-recount", "no-orphan-object", "no-transitional-state", "state-matches-log"
    )
    def test_fails_on_rows_left_mid_operation(self) -> None:
        """A snapshot Creating (soft-removed too), a job IN_PROGRESS and a work job Queued are each found."""
        cloud, snapshot = _taken()
        conn = _store(cloud).conn
        conn.execute("UPDATE snapshots SET status = 'Creating', removed = '2026-01-01 00:00:00' WHERE id = ?", [1])
        conn.execute("UPDATE async_job SET job_status = 0 WHERE id = 1")
        conn.execute("UPDATE vm_work_job SET state = 'Queued'")
        assert snapshot.id == 1
        assert _found(lifecycle.no_transitional_state, cloud) == [
            (
                "async_job 1",
                (
                    "is IN_PROGRESS (soft-removed), a transitional state, after quiescence and restart: nothing will"
                    " finish it"
                ),
            ),
            (
                "snapshot 1",
                (
                    "is Creating (soft-removed), a transitional state, after quiescence and restart: nothing will"
                    " finish it"
                ),
            ),
            ("vm_work_job 2", "is Queued, a waiting state, after quiescence and restart: nothing will finish it"),
        ]


class TestLocksReleased:
    """``locks-released``: no ``op_lock`` row and no named lock once nothing more will happen."""

    def test_holds_when_every_thread_ended(self) -> None:
        """A finished take released its locks."""
        cloud, _ = _taken()
        assert _found(lifecycle.locks_released, cloud) == []

    @pytest.mark.violates("locks-released")
    def test_fails_on_a_row_lock_and_a_global_lock(self) -> None:
        """Each held lock is named with its holder."""
        cloud, _ = _taken()
        conn = _store(cloud).conn
        conn.execute("INSERT INTO op_lock (key, ms_id, owner, acquired_on) VALUES ('snapshots1', 1, 'job-1', 't0')")
        conn.execute(
            "INSERT INTO named_lock (name, ms_id, owner, acquired_on) VALUES ('storagemgr.cleanup', 2, '', 't1')"
        )
        assert _found(lifecycle.locks_released, cloud) == [
            ("op_lock snapshots1", "still held by management server 1, thread job-1, since t0"),
            ("named_lock storagemgr.cleanup", "still held by management server 2, thread ?, since t1"),
        ]


class TestStateMatchesLog:
    """``state-matches-log``: each row's state is its last logged destination; no row moved or vanished unlogged."""

    def test_holds_after_a_take(self) -> None:
        """Every entity and workflow row agrees with its log."""
        cloud, _ = _taken()
        assert _found(lifecycle.state_matches_log, cloud) == []

    @pytest.mark.violates("answer-matches-state", "counts-match-recount", "state-matches-log", "usage-matches-objects")
    def test_fails_on_a_state_written_around_the_store(self) -> None:
        """A snapshot and a workflow whose state column was set directly."""
        cloud, _ = _taken()
        conn = _store(cloud).conn
        conn.execute("UPDATE snapshots SET status = 'Error' WHERE id = 1")
        conn.execute("UPDATE workflow SET state = 'Started' WHERE id = 1")
        assert _found(lifecycle.state_matches_log, cloud) == [
            ("snapshot 1", "is Error but its last logged transition (OperationSucceeded) ends at BackedUp"),
            ("take_snapshot 1", "is Started but its last logged transition (Complete) ends at Succeeded"),
        ]

    @pytest.mark.violates("counts-match-recount", "no-orphan-object", "state-matches-log")
    def test_fails_on_a_row_with_no_log_and_a_row_gone_unlogged(self) -> None:
        """A volume inserted directly has no log; a ref deleted directly is logged but gone."""
        cloud, _ = _taken()
        conn = _store(cloud).conn
        row = attrs.asdict(Volume(id=99, name="ghost", account_id=2, data_center_id=1, size=1), recurse=False)
        conn.execute(f"INSERT INTO volumes ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})", list(row.values()))
        conn.execute("DELETE FROM snapshot_store_ref WHERE id = 2")
        assert _found(lifecycle.state_matches_log, cloud) == [
            ("snapshot_store_ref 2", "is gone, but its last logged transition left it Ready"),
            ("volume 99", "is Ready but no transition of it was ever logged"),
        ]

    @pytest.mark.violates("state-matches-log")
    def test_fails_on_a_row_whose_log_ends_with_a_delete(self) -> None:
        """The log says the row went; it is there."""
        cloud, _ = _taken()
        _log(_store(cloud), "snapshot", 1, "BackedUp", "Test.delete", "", kind="delete")
        assert _found(lifecycle.state_matches_log, cloud) == [
            ("snapshot 1", "is BackedUp but its log ends with a delete (Test.delete)")
        ]

    @pytest.mark.violates("answer-matches-state", "state-matches-log")
    def test_async_job_states_are_compared_by_name(self) -> None:
        """``async_job`` stores ordinals; the log names states."""
        cloud, _ = _taken()
        _store(cloud).conn.execute("UPDATE async_job SET job_status = 2 WHERE id = 1")
        assert _found(lifecycle.state_matches_log, cloud) == [
            ("async_job 1", "is FAILED but its last logged transition (CompleteSucceeded) ends at SUCCEEDED")
        ]


class TestLegalTransitions:
    """``legal-transitions``: every logged move is its machine's; writes outside it name their code."""

    def test_holds_after_a_take_a_delete_and_a_restart(self) -> None:
        """Events, direct writes, creations, removes and deletes of a real run are all legal."""
        cloud, snapshot = _taken()
        cloud.engine.delete_snapshot(snapshot.id)
        cloud.engine.run()
        cloud.engine.quiesce()
        assert _found(lifecycle.legal_transitions, cloud) == []

    @pytest.mark.violates("legal-transitions", "state-matches-log")
    def test_fails_on_each_kind_of_illegal_row(self) -> None:
        """Hand-written log rows: each is named with what is wrong with it."""
        cloud, _ = _taken()
        store = _store(cloud)
        mark = store.count(TransitionLog)
        _log(store, "snapshot", 1, "BackedUp", "CreateRequested", "Creating")
        _log(store, "snapshot", 1, "Allocated", "CreateRequested", "BackedUp")
        _log(store, "snapshot", 1, "BackedUp", "OperationFailed", "Error", kind="direct")
        _log(store, "snapshot", 1, "BackedUp", "Cleanup.run", "Gone", kind="direct")
        _log(store, "snapshot", 1, "BackedUp", "x = 1", "Error", kind="direct")
        _log(store, "door", 1, "", "create", "Closed", kind="create")
        _log(store, "snapshot", 1, "", "create", "Nowhere", kind="create")
        _log(store, "snapshot", 1, "BackedUp", "Dao.remove", "Error", kind="remove")
        _log(store, "snapshot", 1, "BackedUp", "Dao.expunge", "BackedUp", kind="delete")
        _log(store, "snapshot", 1, "BackedUp", "Dao.update", "Error", kind="patch")
        assert _found(lifecycle.legal_transitions, cloud) == [
            ("snapshot 1", f"log row {mark + 1}: CreateRequested is not a transition of snapshot from 'BackedUp'"),
            ("snapshot 1", f"log row {mark + 2}: Allocated --CreateRequested--> goes to Creating, not BackedUp"),
            (
                "snapshot 1",
                (
                    f"log row {mark + 3}: a direct write by 'OperationFailed', which does not name the CloudStack"
                    " method that made it"
                ),
            ),
            ("snapshot 1", f"log row {mark + 4}: a direct write of 'Gone', not a state of snapshot"),
            (
                "snapshot 1",
                (
                    f"log row {mark + 5}: a direct write by 'x = 1', which does not name the CloudStack method that"
                    " made it"
                ),
            ),
            ("door 1", f"log row {mark + 6}: no machine 'door'"),
            ("snapshot 1", f"log row {mark + 7}: a creation in 'Nowhere', not a state of snapshot"),
            ("snapshot 1", f"log row {mark + 8}: a soft remove that moved BackedUp to Error"),
            ("snapshot 1", f"log row {mark + 9}: a delete from 'BackedUp' that left 'BackedUp'"),
            ("snapshot 1", f"log row {mark + 10}: unknown kind of write 'patch'"),
        ]

    @pytest.mark.violates("state-matches-log")
    def test_a_direct_write_may_carry_a_note(self) -> None:
        """``Class.method (why)`` names a method."""
        cloud, _ = _taken()
        _log(_store(cloud), "snapshot", 1, "BackedUp", "Dao.expunge (expunge)", "Error", kind="direct")
        assert _found(lifecycle.legal_transitions, cloud) == []


class TestNoBlindOverwrite:
    """``no-blind-overwrite``: no write replaced a state it did not read."""

    def test_holds_after_a_take(self) -> None:
        """Every write of a take read the state it replaced."""
        cloud, _ = _taken()
        assert _found(lifecycle.no_blind_overwrite, cloud) == []

    @pytest.mark.violates("answer-matches-state", "no-blind-overwrite", "usage-matches-objects")
    def test_fails_on_an_event_fired_on_a_stale_snapshot(self) -> None:
        """``snapshots`` has no compare-and-swap: a stale record's event lands over the state another write left."""
        cloud, snapshot = _taken()
        store = _store(cloud)
        store.write_state_directly(snapshot, "Error", by="Test.fail")
        store.transit(snapshot, "DestroyRequested")
        seq = store.count(TransitionLog)
        assert _found(lifecycle.no_blind_overwrite, cloud) == [
            (
                "snapshot 1",
                (
                    f"log row {seq}: event DestroyRequested by management server 1 read BackedUp and wrote Destroying"
                    " over Error"
                ),
            )
        ]

    def test_a_write_of_the_state_the_row_held_is_not_counted(self) -> None:
        """Overwriting a state with itself loses nothing."""
        cloud, _ = _taken()
        _log(_store(cloud), "snapshot", 1, "Allocated", "Dao.set", "BackedUp", kind="direct", overwrote="BackedUp")
        assert _found(lifecycle.no_blind_overwrite, cloud) == []


class TestOneWinner:
    """``one-winner``: of two actors racing for one transition of one entity, at most one logs it."""

    def test_holds_when_a_transition_repeats_after_a_move_back(self) -> None:
        """Two takes of one volume: Ready --SnapshotRequested--> twice, with a move back to Ready between."""
        cloud = Cloud()
        volume = cloud.volume("xen-nfs")
        cloud.take(volume)
        cloud.take(volume)
        assert _found(lifecycle.one_winner, cloud) == []

    @pytest.mark.violates("one-winner", "usage-matches-objects")
    def test_fails_when_two_actors_fire_one_event_from_one_read(self) -> None:
        """Two holders of the same BackedUp record both fire DestroyRequested; without a compare-and-swap both land."""
        cloud, snapshot = _taken()
        store = _store(cloud)
        with store.acting_for(7):
            store.transit(snapshot, "DestroyRequested")
        first = store.count(TransitionLog)
        with store.acting_for(8):
            store.transit(snapshot, "DestroyRequested")
        assert _found(lifecycle.one_winner, cloud) == [
            (
                "snapshot 1",
                (
                    f"BackedUp --DestroyRequested--> logged twice: log row {first} (management server 1, job 7) and log"
                    f" row {first + 1} (management server 1, job 8), both from the same read"
                ),
            )
        ]
        assert _found(lifecycle.no_blind_overwrite, cloud) == []

    @pytest.mark.violates("answer-matches-state", "counts-match-recount", "no-orphan-object")
    def test_a_compare_and_swap_leaves_one_winner(self) -> None:
        """On a ref the second actor's write is refused: nothing to report."""
        cloud, _ = _taken()
        store = _store(cloud)
        ref = store.get(SnapshotStoreRef, 2)
        store.transit(ref, "DestroyRequested")
        with pytest.raises(ConcurrencyError):
            store.transit(ref, "DestroyRequested")
        assert _found(lifecycle.one_winner, cloud) == []

    @pytest.mark.violates("one-winner", "state-matches-log")
    def test_fails_on_three_racers_once_per_loser(self) -> None:
        """Hand-written: a winner and two losers from one read; each loser is reported once, against the winner."""
        cloud, _ = _taken()
        store = _store(cloud)
        mark = store.count(TransitionLog)
        for _ in range(3):
            _log(store, "snapshot", 1, "BackedUp", "DestroyRequested", "Destroying", overwrote="Destroying")
        found = _found(lifecycle.one_winner, cloud)
        assert [detail.split(": ")[0] for _, detail in found] == [
            "BackedUp --DestroyRequested--> logged twice",
            "BackedUp --DestroyRequested--> logged twice",
        ]
        assert [f"log row {mark + 1} " in detail for _, detail in found] == [True, True]


class TestCallbacksOnce:
    """``callbacks-once``: each asynchronous call answered once, unless its server died or it never would be."""

    @pytest.mark.violates("counts-match-recount", "no-orphan-object")
    def test_holds_on_takes_a_crash_and_a_driver_that_never_answers(self) -> None:
        """Delivered, dropped by a crash, never answered: each is as it should be."""
        cloud = Cloud(faults=FaultPlan().fail("default.takeSnapshot", nth=2, kind="no_answer"))
        engine = cloud.engine
        cloud.take(cloud.volume("xen-nfs"))
        cloud.create(cloud.volume("xen-nfs"))
        engine.run()
        cloud.create(cloud.volume("xen-nfs"))
        _answer_due(engine, "default.takeSnapshot")
        engine.crash()
        engine.quiesce()
        assert _found(lifecycle.callbacks_once, cloud) == []

    def test_fails_on_each_wrong_count(self) -> None:
        """Twice, never, delivered and dropped, never-answered yet delivered, and an answer from nowhere."""
        record = RunRecord()
        calls = [record.new_call("default.op", ms_id=1) for _ in range(5)]
        record.delivered(calls[0], 1)
        record.delivered(calls[0], 2)
        record.delivered(calls[2], 1)
        record.delivered(calls[2], 2, dropped=True)
        record.unanswered(calls[3], "no answer")
        record.delivered(calls[3], 1)
        record.delivered(calls[4], 1)
        record.delivered("default.op#9", 1)
        found = [(v.subject, v.detail) for v in lifecycle.callbacks_once(Run(Cloud().engine.store, record))]
        assert found == [
            ("call default.op#1", "made by management server 1: answered 2 times (2 delivered, 0 dropped)"),
            (
                "call default.op#2",
                (
                    "made by management server 1: never answered, though its server did not crash and nothing said it"
                    " never would be"
                ),
            ),
            ("call default.op#3", "made by management server 1: answered 2 times (1 delivered, 1 dropped)"),
            ("call default.op#4", "made by management server 1: noted never answered (no answer), yet delivered"),
            ("call default.op#9", "answered, but the record has no such call"),
        ]

    def test_needs_the_record(self) -> None:
        """A run without a record cannot be checked: the error says what is missing."""
        cloud = Cloud()
        with pytest.raises(InvalidValue, match=r"run\.record"):
            lifecycle.callbacks_once(Run(cloud.engine.store))
