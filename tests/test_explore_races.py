"""Races: interleaving points, schedules of preemptions, and what the explorer reports of them.

Two createSnapshot of one detached volume are the smallest contending program: nothing serialises them (no VM work
queue), so a preemption inside one take's steps lets the other in between its reads and writes. The tests run that
instance and check what a user of ``snapshotfsm explore`` sees: which points and tasks a schedule may choose, the
states a preempted run ends in, the one line that replays it, the diagram that shows it, and the counts. Worlds are
closed: faulted and preempted runs break invariants on purpose.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

from snapshotfsm.cli import main
from snapshotfsm.clock import SimClock
from snapshotfsm.errors import InvalidValue, ScenarioError
from snapshotfsm.explore import explorer
from snapshotfsm.explore.explorer import Discovery, Options, discover
from snapshotfsm.explore.fingerprint import fingerprint
from snapshotfsm.explore.points import ExplorePlan, Fault, Point, Traced
from snapshotfsm.explore.races import Footprint, preemptions, window
from snapshotfsm.explore.runs import Case, execute, replay
from snapshotfsm.explore.scenarios import choose, default_scenarios, parse_scenario
from snapshotfsm.faults import Access
from snapshotfsm.scheduler import Scheduler
from snapshotfsm.store.records import AsyncJob, Snapshot

INSTANCES = choose(default_scenarios(), full=True)
DETACHED = next(i for i in INSTANCES if i.name == "two-takes:nfs-xenserver/detached/plain/async/no-copies/one-server")
"""Two takes of one detached volume, one server: no work queue keeps them apart."""
RACE = "primary.begin@3"
"""Take 1 is about to read the volume as it begins on primary: take 2 may run first there."""


def preempted(point: str = RACE, nth: int = 1, choice: int = 0) -> Fault:
    return Fault(Point(0, "access", point, nth, 1), f"preempt:{choice}")


# --- the scheduler ------------------------------------------------------------------------------------------------


def test_ready_is_what_is_due_now_or_else_the_next_thing_but_never_a_poller_not_yet_due() -> None:
    scheduler = Scheduler(SimClock())
    ran: list[str] = []
    scheduler.call_later(0, lambda: ran.append("now"), label="now")
    scheduler.call_later(5_000, lambda: ran.append("later"), label="later")
    scheduler.call_later(100, lambda: None, label="poll", periodic=True)
    assert [t.label for t in scheduler.ready()] == ["now"]
    scheduler.run_one()
    assert [t.label for t in scheduler.ready()] == ["later"]


def test_a_task_let_in_runs_inside_the_running_one_and_the_clock_moves_to_it() -> None:
    scheduler = Scheduler(SimClock())
    ran: list[str] = []

    def first() -> None:
        ran.append("first starts")
        scheduler.preempt(scheduler.ready()[0])
        ran.append(f"first resumes at {scheduler.clock.now_ms}")

    scheduler.call_later(0, first, label="first")
    late = scheduler.call_later(2_000, lambda: ran.append(f"second, in {scheduler.running[0].label}"), label="second")
    scheduler.run()
    assert ran == ["first starts", "second, in first", "first resumes at 2000"]
    assert scheduler.ran == 2
    with pytest.raises(ValueError, match="'second' is not pending"):
        scheduler.preempt(late)


# --- the conflict rule --------------------------------------------------------------------------------------------

TABLES = st.sampled_from(["snapshots", "volumes", "snapshot_store_ref", "transition_log"])
ACCESSES = st.builds(
    Access, st.sampled_from(["read", "query", "insert", "write"]), TABLES, st.one_of(st.none(), st.integers(1, 3))
)


@given(done=ACCESSES, others=st.lists(ACCESSES, max_size=6))
def test_a_task_that_touches_no_table_of_the_access_never_conflicts_with_it(done: Access, others: list[Access]) -> None:
    footprint = Footprint()
    for access in others:
        footprint.add(access)
    if all(a.table != done.table for a in others):
        assert not footprint.conflicts(done)


@given(table=TABLES, row=st.integers(1, 3))
def test_a_write_conflicts_with_a_read_of_its_row_both_ways_and_reads_never_conflict(table: str, row: int) -> None:
    reader, writer = Footprint(), Footprint()
    reader.add(Access("read", table, row))
    writer.add(Access("write", table, row))
    appended = table == "transition_log"
    assert writer.conflicts(Access("read", table, row)) is not appended
    assert reader.conflicts(Access("write", table, row)) is not appended
    assert not reader.conflicts(Access("read", table, row))


def test_preemptions_come_right_after_a_conflicting_access_and_a_second_stays_in_the_first_ones_window() -> None:
    def at(n: int, task: int, op: str, table: str, row: int | None, ready: tuple[int, ...] = ()) -> Traced:
        return Traced(Point(0, "access", f"s@{n}", 1, 1), Access(op, table, row), task, ready)

    trace = [
        at(1, 1, "read", "volumes", 1, ready=(2,)),
        at(2, 1, "read", "accounts", 1, ready=(2,)),  # after a read of the volume task 2 writes: a point
        at(3, 1, "write", "volumes", 1, ready=(2,)),  # after a read of what task 2 never touches: none
        at(4, 2, "write", "volumes", 1),
        at(5, 1, "read", "snapshots", 9, ready=(3,)),  # task 1's turn goes on; task 3 reads nothing of it
        at(6, 3, "read", "snapshots", 8),
    ]
    found = preemptions(trace, before_step=1)
    assert [(f.point.name, f.kind) for f in found] == [("s@2", "preempt:0")]
    assert window(trace, 1) == 4
    assert preemptions(trace, before_step=1, after=1, until=window(trace, 1)) == []
    assert preemptions(trace, before_step=0) == []


# --- one schedule -------------------------------------------------------------------------------------------------


def test_the_clean_run_of_two_detached_takes_offers_preemptions_and_one_lets_the_second_take_in() -> None:
    found = discover(Discovery(DETACHED.name, "cloudstack", 0, None, full=False, races=True))
    offered = {(f.point.name, f.point.nth, f.point.ms, f.kind) for f in found.schedules}
    assert (RACE, 1, 1, "preempt:0") in offered
    assert all(f.choice is not None and f.point.kind == "access" for f in found.schedules)
    plain = discover(Discovery(DETACHED.name, "cloudstack", 0, None, full=False))
    assert plain.schedules == ()


def test_both_detached_takes_pass_the_check_and_the_preempted_one_fails_leaving_its_snapshot_allocated() -> None:
    ran = execute(DETACHED, [preempted()], timeline=True)
    store = ran.world.engine.store
    try:
        first, second = (store.get(AsyncJob, job) for job in ran.world.jobs if job is not None)
        assert (store.state_of(first), store.state_of(second)) == ("FAILED", "SUCCEEDED")
        assert store.state_of(store.get(Snapshot, first.instance_id or 0)) == "Allocated"
        assert store.state_of(store.get(Snapshot, second.instance_id or 0)) == "BackedUp"
        broken = {(v.invariant, v.subject) for v in ran.outcome.violations}
        assert ("answer-matches-state", f"job {first.id} (createSnapshot)") in broken
        moments = [m.kind for m in ran.world.record.timeline or []]
        assert (moments.count("preempt"), moments.count("resume")) == (1, 1)
    finally:
        ran.world.engine.close()


def test_on_powerflex_the_losing_take_frees_the_volume_that_the_winning_take_holds() -> None:
    instance = next(i for i in INSTANCES if i.name == "two-takes:powerflex/detached/plain/async/no-copies/one-server")
    ran = execute(instance, [preempted()])
    store = ran.world.engine.store
    try:
        first, second = ran.world.jobs
        log = [(r.source, r.event, r.dest, r.job_id) for r in store.history(machine="volume")]
        assert log[1:] == [
            ("Ready", "SnapshotRequested", "Snapshotting", second),
            ("Snapshotting", "OperationFailed", "Ready", first),
            ("Ready", "OperationSucceeded", "Ready", second),
        ]
    finally:
        ran.world.engine.close()


def test_a_schedule_replays_from_its_line_to_the_same_world() -> None:
    case = Case(DETACHED.name, tuple(range(len(DETACHED.scenario.steps))), (preempted(),))
    line = str(case)
    assert "faults=preempt:0@primary.begin@3@1/ms1" in line
    assert Case.parse(line) == case
    runs = [replay(line, instances=INSTANCES, timeline=False) for _ in range(2)]
    try:
        prints = {fingerprint(r.world.servers.values()) for r in runs}
        assert len(prints) == 1
        assert runs[0].outcome == runs[1].outcome
    finally:
        for r in runs:
            r.world.engine.close()


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("preempt:x@primary.begin@3@1/ms1", "is not KIND@POINT@N"),
        ("preempt@primary.begin@3@1/ms1", "is not KIND@POINT@N"),
        ("preempt:0@primary.begin@1/ms1", "is not KIND@POINT@N"),
    ],
)
def test_a_malformed_preemption_is_refused_naming_it(text: str, why: str) -> None:
    with pytest.raises(InvalidValue, match=why):
        Case.parse(f"{DETACHED.name} steps=1,2,3 faults={text}")


def test_a_preemption_that_finds_no_task_ready_does_not_fire() -> None:
    plan = ExplorePlan().preempt(RACE, nth=1, ms_id=1, choice=5)
    ran = execute(DETACHED, plan=plan)
    try:
        assert not plan.all_fired()
        assert plan.preempted == []
    finally:
        ran.world.engine.close()


def test_the_sequence_diagram_boxes_what_ran_while_the_take_was_preempted() -> None:
    ran = replay(str(Case(DETACHED.name, (0, 1, 2), (preempted(),))), instances=INSTANCES)
    try:
        from snapshotfsm.explore import render  # noqa: PLC0415 - only this test draws

        text = render.sequence_diagram(ran.world.engine.store, ran.world.record.timeline, title="race")
        start = text.index("⏸ preempted at primary.begin@3 (before read volumes)")
        end = text.index("▶ resumes at primary.begin@3")
        assert start < text.index("volume 1 Ready → Snapshotting", start) < end
        lines = [line.strip() for line in text.splitlines()]
        note = next(n for n, line in enumerate(lines) if line.startswith("Note over MS1: ⏸"))
        back = next(n for n, line in enumerate(lines) if line.startswith("Note over MS1: ▶"))
        assert (lines[note - 1], lines[back + 1]) == ("rect rgb(255, 243, 205)", "end")
    finally:
        ran.world.engine.close()


# --- the explorer -------------------------------------------------------------------------------------------------


def test_the_explorer_reports_the_race_with_a_minimal_schedule_and_counts_its_schedules() -> None:
    found = explorer.explore(Options(scenarios=(DETACHED.name,), kinds=(), preemptions=2))
    assert found.stats["schedules"] > 0
    assert found.stats["faulted_runs"] == 0
    raced = [g for g in found.groups if g.point.startswith("primary.begin@<n>")]
    assert raced, [g.point for g in found.groups]
    minimal = raced[0].minimal
    assert minimal is not None
    assert [f.kind for f in minimal.case.faults] == ["preempt:0"]
    assert minimal.shown is not None and "⏸ preempted at" in minimal.shown.sequence
    depth = {len(j.faults) for runs in found.judged.values() for j in runs}
    assert depth == {1, 2}
    none = explorer.explore(Options(scenarios=(DETACHED.name,), kinds=(), preemptions=0, shrink=False))
    assert none.stats["schedules"] == 0


def test_preemptions_below_zero_are_refused() -> None:
    with pytest.raises(InvalidValue, match="preemptions"):
        Options(preemptions=-1).check()


def test_the_cli_explores_schedules_only_and_writes_their_count(tmp_path: Path) -> None:
    runner = CliRunner()
    path = tmp_path / "r.json"
    result = runner.invoke(
        main,
        ["explore", "--scenario", DETACHED.name, "--faults", "none", "--preemptions", "1", "--json", str(path)],
    )
    assert result.exit_code == 0, result.output
    document = json.loads(path.read_text(encoding="utf-8"))
    assert document["options"]["preemptions"] == 1
    assert document["runs"]["cloudstack"]["faulted"] == 0
    assert document["runs"]["cloudstack"]["schedules"] == document["stats"]["schedules"] > 0
    assert any(
        f["minimal"]["case"].endswith("faults=preempt:0@primary.begin@3@1/ms1 profile=cloudstack seed=0")
        for f in document["findings"]
    )
    bad = runner.invoke(main, ["explore", "--scenario", DETACHED.name, "--preemptions", "-2"])
    assert bad.exit_code != 0
    assert "preemptions" in bad.output


# --- scenarios ----------------------------------------------------------------------------------------------------


def test_contending_must_be_a_boolean_and_a_restart_step_names_a_server() -> None:
    base = {"description": "d", "step": [{"call": "createSnapshot"}]}
    with pytest.raises(ScenarioError, match=r"contending.*true or false"):
        parse_scenario({**base, "contending": "yes"}, name="x")
    with pytest.raises(ScenarioError, match="restart"):
        parse_scenario({**base, "step": [{"restart": 3}]}, name="x")
    scenario = parse_scenario({**base, "contending": True, "step": [{"restart": 1}]}, name="x")
    assert scenario.contending
    assert str(scenario.steps[0]) == "ms1 starts again"


def test_the_contending_scenarios_are_the_ones_the_issue_names() -> None:
    contending = {s.name for s in default_scenarios() if s.contending}
    assert contending == {
        "two-takes",
        "two-servers",
        "delete-during-take",
        "retention-during-backup",
        "restart-while-peer-works",
        "two-policies",
        "copy-during-delete",
    }


def test_every_contending_instance_offers_schedules_and_every_other_offers_none() -> None:
    for instance in choose(default_scenarios(), full=False):
        races = instance.scenario.contending
        found = discover(Discovery(instance.name, "cloudstack", 0, None, full=False, races=races))
        assert bool(found.schedules) is instance.scenario.contending, instance.name
        assert all(f.point.step < len(instance.scenario.steps) for f in found.schedules)
