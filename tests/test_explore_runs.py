"""Runs and cases: what a user of ``snapshotfsm explore`` relies on when a finding is printed and replayed.

A finding is worth something only if the one line the report prints (:class:`Case`) replays to the same violations,
if a run gives the same outcome every time, and if a run cut short by a state already explored reports what the whole
run would have. These tests check that on the smallest default scenarios (take, take-delete), and which faults are
tried where. Each closes the worlds it builds: they are about the explorer, not the model (faulted runs break
invariants on purpose, and a closed world is not judged at the test's end).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from snapshotfsm.errors import InvalidValue
from snapshotfsm.explore.explorer import Discovery, discover
from snapshotfsm.explore.points import (
    CLEANUP_CRASH_PHASES,
    CRASH_KINDS,
    DRIVER_KINDS,
    KINDS,
    KINDS_OF,
    ExplorePlan,
    Fault,
    Point,
    faults_at,
)
from snapshotfsm.explore.runs import Case, Outcome, execute, replay
from snapshotfsm.explore.scenarios import Instance, choose, default_scenarios
from snapshotfsm.explore.world import World
from snapshotfsm.profiles import PROFILES

INSTANCES = choose(default_scenarios(), full=True)
NAMES = [i.name for i in INSTANCES]
ONE = next(i for i in INSTANCES if i.scenario.name == "take-delete" and i.servers == 1 and i.values["backup"] == "sync")
"""A take, run, delete, run on one server, backed up synchronously: its clean run breaks nothing."""
TWO = next(i for i in INSTANCES if i.scenario.name == "take" and i.servers == 2)
"""A take on two servers: where ``node_left`` is tried."""
ALL_STEPS = tuple(range(len(ONE.scenario.steps)))


def crash(name: str, nth: int = 1, *, kind: str = "crash", step: int = 1) -> Fault:
    """A crash of ms1 the ``nth`` time it reaches the crash point ``name``."""
    point_kind = "write" if "#" in name else "event"
    return Fault(Point(step, point_kind, name, nth, 1), kind)


def driver(name: str, kind: str, nth: int = 1, *, step: int = 1) -> Fault:
    """A driver call's ``nth`` answer replaced by a fault of ``kind``."""
    return Fault(Point(step, "call", name, nth), kind)


BACKUP_CRASH = crash("take_snapshot.BackUp")
"""A crash as the take starts its backup to secondary: leaves the job failed and the snapshot behind."""


def outcome_of(instance: Instance, faults: Sequence[Fault] = (), **options: object) -> Outcome:
    """Execute and close the world; the outcome."""
    ran = execute(instance, faults, **options)  # type: ignore[arg-type]
    ran.world.engine.close()
    return ran.outcome


@pytest.fixture(scope="module")
def points() -> dict[str, tuple[Point, ...]]:
    """The fault points each small instance's clean run passes, by instance name."""
    return {i.name: discover(Discovery(i.name, "cloudstack", 0, None, full=True)).points for i in (ONE, TWO)}


# --- Case: the replayable line ------------------------------------------------------------------------------------

identifiers = st.from_regex(r"[A-Za-z][A-Za-z0-9_]{0,15}", fullmatch=True)
POINT_NAMES: dict[str, st.SearchStrategy[str]] = {
    "call": st.builds("{}.{}".format, st.sampled_from(["default", "image", "storpool", "powerflex"]), identifiers),
    "event": st.builds("{}.{}".format, identifiers.filter(lambda m: m not in ("restart", "tick")), identifiers),
    "write": st.builds("{}.{}#{}".format, identifiers, identifiers, st.integers(1, 20)),
    "restart": st.builds("restart.{}".format, identifiers),
    "tick": st.builds("tick.{}".format, identifiers),
    "access": st.builds("{}.{}@{}".format, identifiers, identifiers, st.integers(1, 40)),
}
"""Names shaped as the fault catalogue's: ``<driver>.<op>``, ``<machine>.<Event>``, ``<step>#<n>``, ``restart.<phase>``,
``tick.<task>``, and an interleaving point's ``<step>@<n>``."""


@st.composite
def faults(draw: st.DrawFn) -> Fault:
    """A fault of a kind its point accepts, ``restart_crash`` written with its cleanup phase as the explorer does."""
    point_kind = draw(st.sampled_from(list(KINDS_OF)))
    kind = draw(st.sampled_from(KINDS_OF[point_kind] or (f"preempt:{draw(st.integers(0, 3))}",)))
    if kind == "restart_crash":
        kind = f"restart_crash:{draw(st.sampled_from(CLEANUP_CRASH_PHASES))}"
    ms = None if point_kind == "call" else draw(st.none() | st.sampled_from([1, 2]))
    step = draw(st.integers(0, 9))
    return Fault(Point(step, point_kind, draw(POINT_NAMES[point_kind]), draw(st.integers(1, 50)), ms), kind)


@st.composite
def cases(draw: st.DrawFn) -> Case:
    """A case over a default instance: a subset of its steps, a few faults, any profile and seed."""
    instance = draw(st.sampled_from(INSTANCES))
    steps = draw(st.lists(st.sampled_from(range(len(instance.scenario.steps))), unique=True).map(sorted))
    return Case(
        instance.name,
        tuple(steps),
        tuple(draw(st.lists(faults(), max_size=3))),
        draw(st.sampled_from(list(PROFILES))),
        draw(st.integers(0, 2**32)),
    )


def without_steps(case: Case) -> Case:
    """The case as its line tells it: the program step each fault fell in is not written (a replay counts every
    point from the program's start, so it does not need it), and reads back as 0."""
    return attrs.evolve(case, faults=tuple(attrs.evolve(f, point=attrs.evolve(f.point, step=0)) for f in case.faults))


class TestCaseLine:
    def test_shown_as_explore_prints_it(self) -> None:
        """The line names steps from 1, each fault as KIND@POINT@N with its server, the profile and the seed."""
        case = Case(
            ONE.name, (0, 2), (BACKUP_CRASH, driver("image.deleteAsync", "no_answer", 2)), profile="hardened", seed=7
        )
        assert str(case) == (
            f"{ONE.name} steps=1,3 faults=crash@take_snapshot.BackUp@1/ms1 no_answer@image.deleteAsync@2 "
            "profile=hardened seed=7"
        )

    def test_nothing_is_none(self) -> None:
        """No steps and no faults are written ``none``, which reads back as empty."""
        case = Case(ONE.name, (), ())
        assert str(case) == f"{ONE.name} steps=none faults=none profile=cloudstack seed=0"
        assert Case.parse(str(case)) == case

    def test_restart_crash_keeps_its_phase(self) -> None:
        """A restart crash is written with the cleanup phase its restart dies in, and read back with it."""
        fault = crash("take_snapshot.BackUp", kind="restart_crash:redelete_destroying", step=0)
        case = Case(ONE.name, ALL_STEPS, (fault,))
        assert "faults=restart_crash:redelete_destroying@take_snapshot.BackUp@1/ms1 " in str(case)
        assert Case.parse(str(case)) == case

    @given(cases())
    def test_round_trip(self, case: Case) -> None:
        """Whatever the explorer prints, ``--replay`` reads back: the same instance, steps, faults, profile, seed."""
        line = str(case)
        parsed = Case.parse(line)
        assert parsed == without_steps(case)
        assert str(parsed) == line

    def test_every_fault_of_a_clean_run_round_trips(self, points: dict[str, tuple[Point, ...]]) -> None:
        """Each fault the explorer would try on a real instance survives its own line, its point's kind included."""
        for instance in (ONE, TWO):
            for fault in faults_at(points[instance.name], KINDS, servers=instance.servers):
                case = Case(instance.name, ALL_STEPS[:2], (fault,))
                assert Case.parse(str(case)) == without_steps(case), str(case)

    @pytest.mark.parametrize(
        ("text", "message"),
        [
            (f"{ONE.name} step=1", "replay case: unknown field 'step'"),
            (f"{ONE.name} steps=1 faults=crash", "replay case: 'crash' is not KIND@POINT@N[/msK]"),
            (
                f"{ONE.name} faults=explode@take_snapshot.Allocate@1",
                "replay case: 'explode@take_snapshot.Allocate@1' is not KIND@POINT@N[/msK]",
            ),
            (
                f"{ONE.name} faults=crash@take_snapshot.Allocate@first",
                "replay case: 'crash@take_snapshot.Allocate@first' is not KIND@POINT@N[/msK]",
            ),
            (
                f"{ONE.name} faults=crash@take_snapshot.Allocate@1/msX",
                "replay case: 'crash@take_snapshot.Allocate@1/msX' is not KIND@POINT@N[/msK]",
            ),
            (f"{ONE.name} faults=crash@@1", "replay case: 'crash@@1' is not KIND@POINT@N[/msK]"),
        ],
        ids=["unknown-field", "no-point", "unknown-kind", "count-not-a-number", "server-not-a-number", "no-name"],
    )
    def test_malformed_word_is_named(self, text: str, message: str) -> None:
        """A wrong field or fault is quoted back, so the user sees which word of a long line to fix."""
        with pytest.raises(InvalidValue) as caught:
            Case.parse(text)
        assert str(caught.value) == message
        assert (caught.value.what, caught.value.value) == ("replay case", text)

    @pytest.mark.parametrize(
        "text",
        [
            "",
            "steps=1 faults=none",
            f"{ONE.name} steps=0",
            f"{ONE.name} steps=1,x",
            f"{ONE.name} steps=1 2",
            f"{ONE.name} seed=-1",
            f"{ONE.name} seed=x",
        ],
        ids=[
            "empty",
            "no-instance",
            "step-zero",
            "step-not-a-number",
            "stray-word",
            "negative-seed",
            "seed-not-a-number",
        ],
    )
    def test_malformed_line_shows_the_expected_form(self, text: str) -> None:
        """Any other malformed line is refused, quoting it and the form explore prints."""
        with pytest.raises(InvalidValue) as caught:
            Case.parse(text)
        expected = (
            "INSTANCE steps=1,2 faults=KIND@POINT@N[/msK] ... profile=NAME seed=N (as explore prints it; a "
            "preemption is preempt:K@STEP@M@N[/msK])"
        )
        assert str(caught.value) == f"replay case must be {expected} (got {text!r} that is a str)"

    @pytest.mark.parametrize(
        "word",
        [
            "crash:x@take_snapshot.Allocate@1/ms1",
            "error:x@default.takeSnapshot@1",
            "restart_crash:nowhere@take_snapshot.Allocate@1/ms1",
            "crash@take_snapshot.Allocate@1/ms",
            "restart_crash@take_snapshot.Allocate@1/ms1",
        ],
        ids=["phase-on-crash", "phase-on-driver-kind", "unknown-phase", "server-missing", "restart-crash-no-phase"],
    )
    def test_malformed_fault_kind_is_named(self, word: str) -> None:
        """A fault word the explorer never prints is refused at parse, quoting it."""
        with pytest.raises(InvalidValue) as caught:
            Case.parse(f"{ONE.name} steps=1,2 faults={word}")
        assert str(caught.value) == f"replay case: {word!r} is not KIND@POINT@N[/msK]"


# --- execute: determinism and pruning -----------------------------------------------------------------------------


class TestExecute:
    @pytest.mark.parametrize(
        "fault",
        [BACKUP_CRASH, driver("default.copyAsync", "no_answer"), crash("backup.request#2")],
        ids=str,
    )
    def test_deterministic(self, fault: Fault) -> None:
        """One instance, one fault, twice: the same violations, transitions, length and settling."""
        first = outcome_of(ONE, [fault])
        assert first.violations, "the fault should break something, or the comparison says little"
        assert outcome_of(ONE, [fault]) == first

    def test_deterministic_with_a_peer_taking_over(self, points: dict[str, tuple[Point, ...]]) -> None:
        """With two servers and ``node_left``, the peer's takeover is as repeatable as a restart."""
        events = [p for p in points[TWO.name] if p.kind == "event" and p.ms == 1 and p.step < len(TWO.scenario.steps)]
        fault = Fault(events[len(events) // 2], "node_left")
        first = outcome_of(TWO, [fault])
        assert outcome_of(TWO, [fault]) == first

    def test_clean_run_breaks_nothing(self) -> None:
        """The instance the tests fault is sound without faults (what they see is the faults' doing), and its outcome
        shows the snapshot's life: taken, backed up, deleted."""
        clean = outcome_of(ONE)
        assert (clean.violations, clean.settled) == ((), True)
        assert {
            ("snapshot", "BackingUp", "OperationSucceeded", "BackedUp"),
            ("snapshot", "Destroying", "OperationSucceeded", "Destroyed"),
        } <= clean.exercised
        assert clean.length >= len(clean.exercised)

    def test_same_fault_twice_is_pruned(self) -> None:
        """A run reaching a state an earlier run explored stops there, and reports that run's outcome."""
        seen: dict[str, Outcome] = {}
        first = execute(ONE, [BACKUP_CRASH], seen=seen)
        second = execute(ONE, [BACKUP_CRASH], seen=seen)
        for ran in (first, second):
            ran.world.engine.close()
        assert (first.pruned, second.pruned) == (False, True)
        assert second.outcome == first.outcome == outcome_of(ONE, [BACKUP_CRASH])
        assert len(second.world.outcomes) < len(ONE.scenario.steps)

    def test_event_and_its_first_write_lead_to_one_state(self) -> None:
        """A crash at an event and one at that event's step's first write leave the same world: the second run is cut
        short, and what it reports is what running it in full reports."""
        at_event, at_write = crash("take_snapshot.Allocate", step=0), crash("api.allocate#1", step=0)
        seen: dict[str, Outcome] = {}
        first = execute(ONE, [at_event], seen=seen)
        pruned = execute(ONE, [at_write], seen=seen)
        for ran in (first, pruned):
            ran.world.engine.close()
        assert (first.pruned, pruned.pruned) == (False, True)
        assert pruned.outcome == outcome_of(ONE, [at_write])

    def test_pruning_never_changes_an_outcome(self, points: dict[str, tuple[Point, ...]]) -> None:
        """Over a batch sharing fingerprints, as a worker runs it, every outcome is the one an unshared run gives."""
        every = faults_at(points[ONE.name], KINDS, servers=1)
        batch = [f for f in every if f.point.step <= 1][:60]
        seen: dict[str, Outcome] = {}
        pruned = 0
        for fault in batch:
            ran = execute(ONE, [fault], seen=seen)
            ran.world.engine.close()
            pruned += ran.pruned
            assert ran.outcome == outcome_of(ONE, [fault]), str(fault)
        assert pruned, "no run of the batch was cut short: the property was not exercised"

    def test_different_futures_are_not_merged(self) -> None:
        """Crashes of the same state with different futures ahead (a crash still to fire) are not taken for one."""
        seen: dict[str, Outcome] = {}
        execute(ONE, [crash("take_snapshot.Allocate", step=0)], seen=seen).world.engine.close()
        later = [crash("take_snapshot.Allocate", step=0), crash("delete_snapshot.Finish", step=3)]
        ran = execute(ONE, later, seen=seen)
        ran.world.engine.close()
        assert not ran.pruned
        assert ran.outcome == outcome_of(ONE, later)


# --- where faults are tried ---------------------------------------------------------------------------------------

ONE_OF_EACH = (
    Point(0, "call", "default.takeSnapshot", 1),
    Point(0, "event", "take_snapshot.Allocate", 1, 1),
    Point(0, "write", "api.allocate#1", 1, 1),
    Point(1, "restart", "restart.release_locks", 1, 1),
    Point(1, "tick", "tick.SnapshotPollTask", 1, 1),
)


class TestFaultsAt:
    def test_one_server(self) -> None:
        """Driver faults at calls; a crash everywhere else; a restart crash after an event only; no peer to take
        over."""
        assert [(f.point.kind, f.kind) for f in faults_at(ONE_OF_EACH, KINDS, servers=1)] == [
            ("call", "error"),
            ("call", "exception"),
            ("call", "no_answer"),
            ("call", "null_answer"),
            ("event", "crash"),
            ("event", "restart_crash:redelete_destroying"),
            ("write", "crash"),
            ("restart", "crash"),
            ("tick", "crash"),
        ]

    def test_two_servers_add_node_left(self) -> None:
        """With a peer, a crash at an event, a write or a tick is also tried as the peer taking the jobs over; a crash
        inside a restart's cleanup is not (the peer's takeover is not a restart)."""
        one = set(faults_at(ONE_OF_EACH, KINDS, servers=1))
        two = set(faults_at(ONE_OF_EACH, KINDS, servers=2))
        assert one < two
        assert sorted((f.point.kind, f.kind) for f in two - one) == [
            ("event", "node_left"),
            ("tick", "node_left"),
            ("write", "node_left"),
        ]

    @given(st.lists(st.sampled_from(ONE_OF_EACH)), st.sets(st.sampled_from(KINDS)), st.sampled_from([1, 2]))
    def test_only_kinds_asked_for_where_they_apply(self, chosen: list[Point], kinds: set[str], servers: int) -> None:
        """Every fault is of a kind asked for, at a point that accepts it; node_left only with two servers, restart
        crashes only at events; and every such fault is there, once per point."""
        found = faults_at(chosen, kinds, servers=servers)
        for fault in found:
            base = fault.kind.partition(":")[0]
            assert base in kinds
            assert base in KINDS_OF[fault.point.kind]
            assert base != "node_left" or servers == 2
            assert base != "restart_crash" or fault.point.kind == "event"
            assert (base in DRIVER_KINDS) == (fault.point.kind == "call")
        expected = sum(
            len(CLEANUP_CRASH_PHASES) if k == "restart_crash" else 1
            for p in chosen
            for k in KINDS_OF[p.kind]
            if k in kinds and (k != "node_left" or servers == 2)
        )
        assert len(found) == expected

    def test_real_points(self, points: dict[str, tuple[Point, ...]]) -> None:
        """On real clean runs: no node_left on one server, some on two; restart crashes at events only."""
        one = faults_at(points[ONE.name], KINDS, servers=ONE.servers)
        two = faults_at(points[TWO.name], KINDS, servers=TWO.servers)
        assert not [f for f in one if f.kind == "node_left"]
        assert [f for f in two if f.kind == "node_left"]
        for fault in one + two:
            assert not fault.kind.startswith("restart_crash") or fault.point.kind == "event"
        assert {f.kind for f in one} == {*DRIVER_KINDS, "crash", "restart_crash:redelete_destroying"}
        assert set(CRASH_KINDS) - {"restart_crash"} <= {f.kind for f in two}


# --- the plan: counted from the first step ------------------------------------------------------------------------


class TestExplorePlan:
    def test_building_the_cloud_is_not_counted(self) -> None:
        """Building a world restarts its servers; a crash rule at a restart phase must not fire before ``arm``."""
        plan = ExplorePlan()
        plan.crash("restart.release_locks", nth=1, ms_id=1)
        world = World(ONE, faults=plan)
        world.engine.close()
        assert not world.engine.down
        assert plan.fired == []

    def test_armed_the_same_rule_fires_at_the_first_restart_after(self) -> None:
        """Once armed, the rule counts from the program on: it fires at quiescence's restart, the first it reaches."""
        plan = ExplorePlan()
        plan.crash("restart.release_locks", nth=1, ms_id=1)
        world = World(ONE, faults=plan, arm=plan.arm)
        for step in ALL_STEPS:
            world.run_step(step)
        assert plan.fired == []
        world.quiesce()
        world.engine.close()
        assert [f.op for f in plan.fired] == ["crash@restart.release_locks"]

    def test_points_are_traced_with_their_step(self) -> None:
        """A tracing plan notes each point with the program step it fell in (quiescence: one past the last), counting
        each point's times per server from the first step."""
        plan = ExplorePlan(trace=True)
        world = World(ONE, faults=plan, arm=plan.arm)
        for step in ALL_STEPS:
            plan.step = step
            world.run_step(step)
        plan.step = len(ALL_STEPS)
        world.quiesce()
        world.engine.close()
        traced = plan.points or []
        assert traced[0] == Point(0, "event", "take_snapshot.Allocate", 1, 1)
        assert [p.step for p in traced] == sorted(p.step for p in traced)
        steps = {p.name: p.step for p in traced if p.nth == 1}
        assert steps["take_snapshot.BackUp"] == 1
        assert steps["delete_snapshot.Finish"] == 3
        assert steps["restart.release_locks"] == len(ALL_STEPS)
        assert Point(len(ALL_STEPS), "restart", "restart.release_locks", 1, 1) in traced
        counted: dict[tuple[str, int | None], int] = {}
        for point in traced:
            key = (point.name, point.ms)
            counted[key] = counted.get(key, 0) + 1
            assert point.nth == counted[key], point

    def test_untraced_plan_keeps_no_points(self) -> None:
        """The explorer's faulted runs do not trace: their plan keeps nothing."""
        plan = ExplorePlan()
        world = World(ONE, faults=plan, arm=plan.arm)
        world.run_step(0)
        world.engine.close()
        assert plan.points is None


# --- replay -------------------------------------------------------------------------------------------------------


class TestReplay:
    @pytest.mark.parametrize(
        ("fault", "steps"),
        [
            (BACKUP_CRASH, ALL_STEPS),
            (crash("take_snapshot.BackUp", kind="restart_crash:redelete_destroying"), ALL_STEPS),
            (driver("image.deleteAsync", "error"), ALL_STEPS),
            (BACKUP_CRASH, (0, 1)),
        ],
        ids=["crash", "restart-crash", "driver-error", "fewer-steps"],
    )
    def test_reproduces_the_violations(self, fault: Fault, steps: tuple[int, ...]) -> None:
        """The printed line replays to what the explorer saw, with a timeline for the sequence diagram."""
        expected = outcome_of(ONE, [fault], steps=steps)
        assert expected.violations
        ran = replay(str(Case(ONE.name, steps, (fault,))), instances=INSTANCES)
        ran.world.engine.close()
        assert ran.outcome == expected
        assert ran.world.record.timeline

    def test_a_case_object_is_replayed_too(self) -> None:
        """A :class:`Case` needs no round trip through text."""
        expected = outcome_of(ONE, [BACKUP_CRASH])
        ran = replay(Case(ONE.name, ALL_STEPS, (BACKUP_CRASH,)), instances=INSTANCES, timeline=False)
        ran.world.engine.close()
        assert ran.outcome == expected
        assert ran.world.record.timeline is None

    def test_unknown_instance(self) -> None:
        """A line from another scenario tree (or mistyped) is refused, saying where instance names come from."""
        with pytest.raises(InvalidValue) as caught:
            replay("take:nowhere steps=1 faults=none", instances=INSTANCES)
        assert str(caught.value) == (
            "replay case must be an instance of the scenarios (`explore --list` names them) "
            "(got 'take:nowhere' that is a str)"
        )

    def test_step_out_of_range(self) -> None:
        """A step the instance's program does not have is refused, with the range it has."""
        with pytest.raises(InvalidValue) as caught:
            replay(f"{ONE.name} steps=1,5 faults=none", instances=INSTANCES)
        assert f"steps of {ONE.name} (1 to 4)" in str(caught.value)

    def test_step_out_of_range_shows_the_step_as_written(self) -> None:
        """The refused step is shown as the user wrote it (from 1), not as an internal index."""
        with pytest.raises(InvalidValue) as caught:
            replay(f"{ONE.name} steps=1,5 faults=none", instances=INSTANCES)
        assert re.search(r"\b5\b", str(caught.value))
        assert "(0, 4)" not in str(caught.value)
