"""The explorer as a user runs it: findings of several invariants, replayable and shrunk; the same report whatever
the worker count; coverage; the command line and its errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from snapshotfsm.cli import main
from snapshotfsm.errors import InvalidValue, ScenarioError
from snapshotfsm.explore import Case, Options, document, explore, replay_case
from snapshotfsm.explore.points import Fault, Point
from snapshotfsm.explore.report import SCHEMA, without_stats
from snapshotfsm.explore.shrink import Shrink, shrink

SUBSET = (
    "take:storpool/stopped/plain/sync/pool-copy/two-servers",
    "take-delete:nfs-vmware/stopped/plain/async/no-copies/one-server",
)
"""A small named subset (of the full product): two instances, one and two servers, a StorPool pool copy and an
async backup."""


@pytest.fixture(scope="module")
def one_worker() -> dict[str, Any]:
    """The subset explored in this process."""
    return document(explore(Options(scenarios=SUBSET, workers=1, full=True)))


@pytest.fixture(scope="module")
def two_workers() -> dict[str, Any]:
    """The subset explored on two local processes."""
    return document(explore(Options(scenarios=SUBSET, workers=2, full=True)))


class TestTheReport:
    """What one exploration finds, and that it does not depend on how it was run."""

    def test_one_and_two_workers_give_the_same_report(
        self, one_worker: dict[str, Any], two_workers: dict[str, Any]
    ) -> None:
        assert without_stats(one_worker) == without_stats(two_workers)
        assert two_workers["stats"]["workers"] == 2

    def test_it_finds_violations_of_several_invariants(self, one_worker: dict[str, Any]) -> None:
        assert len(one_worker["matrix"]) >= 3
        assert {"counts-match-recount", "no-orphan-object"} <= set(one_worker["matrix"])

    def test_every_finding_has_a_minimal_replayable_counterexample(self, one_worker: dict[str, Any]) -> None:
        for finding in one_worker["findings"]:
            minimal = finding["minimal"]
            assert 0 < minimal["length"] <= finding["shortest"]["length"]
            assert minimal["steps"] >= 1
            assert minimal["replay"] == f"snapshotfsm explore --replay '{minimal['case']}'"
            assert finding["violations"], finding["point"]
            assert finding["sequence"].splitlines()[3] == "sequenceDiagram"
            assert finding["log"]

    def test_a_replayed_counterexample_shows_its_violation(self, one_worker: dict[str, Any]) -> None:
        finding = next(f for f in one_worker["findings"] if f["point"] != "(no fault)")
        ran = replay_case(finding["minimal"]["case"])
        try:
            shown = {(v.subject, v.detail) for v in ran.outcome.violations if v.invariant == finding["invariant"]}
            assert shown == {(v["subject"], v["detail"]) for v in finding["violations"]}
            assert ran.outcome.length == finding["minimal"]["length"]
        finally:
            ran.world.engine.close()

    def test_faulted_runs_count_only_what_their_fault_added(self, one_worker: dict[str, Any]) -> None:
        runs = one_worker["runs"]["cloudstack"]
        assert runs["clean"] == len(SUBSET)
        assert runs["faulted"] > 100
        assert sum(row["cloudstack"] for row in one_worker["matrix"].values()) == sum(
            f["runs"] for f in one_worker["findings"]
        )

    def test_coverage_is_reported_per_machine(self, one_worker: dict[str, Any]) -> None:
        coverage = one_worker["coverage"]["cloudstack"]
        flow = coverage["workflow"]
        assert 0 < flow["exercised"] < flow["transitions"]
        take = coverage["machines"]["take_snapshot"]
        assert take["kind"] == "workflow"
        assert take["exercised"] + len(take["missing"]) == take["transitions"]
        assert all(m["reason"] in ("construction", "gap", "unexplained") for m in take["missing"])

    def test_the_document_is_json(self, one_worker: dict[str, Any]) -> None:
        assert one_worker["schema"] == SCHEMA
        assert json.loads(json.dumps(one_worker)) == one_worker

    def test_a_budget_takes_the_same_sample_whatever_the_workers(self) -> None:
        options = Options(scenarios=SUBSET[:1], budget=40, seed=3, full=True)
        first = document(explore(options))
        again = document(explore(Options(scenarios=SUBSET[:1], budget=40, seed=3, workers=2, full=True)))
        assert first["runs"]["cloudstack"]["faulted"] == 40
        assert without_stats(first) == without_stats(again)


class TestBadOptions:
    """Bad options are refused before any run, naming what was wrong."""

    def test_an_unknown_fault_kind(self) -> None:
        with pytest.raises(InvalidValue, match="fault kind must be one of error, exception"):
            explore(Options(kinds=("timeout",)))

    def test_an_unknown_profile(self) -> None:
        with pytest.raises(InvalidValue, match="profile"):
            explore(Options(profiles=("nosuch",)))

    def test_a_scenario_pattern_that_matches_nothing(self) -> None:
        with pytest.raises(ScenarioError, match=r"--scenario: tkae: matches no scenario .*did you mean 'take'"):
            explore(Options(scenarios=("tkae",)))

    def test_workers_and_budget_below_one(self) -> None:
        with pytest.raises(InvalidValue, match="workers must be at least 1"):
            explore(Options(workers=0))
        with pytest.raises(InvalidValue, match="budget must be at least 1 run"):
            explore(Options(budget=0))


class TestTheCommand:
    """``snapshotfsm explore`` prints a summary that fits the terminal and writes the JSON report."""

    def test_a_small_exploration(self, tmp_path: Path) -> None:
        out = tmp_path / "report.json"
        result = CliRunner().invoke(
            main,
            ["explore", "--full", "--scenario", SUBSET[1], "--faults", "error,crash", "--json", str(out)],
            env={"COLUMNS": "80"},
        )
        assert result.exit_code == 0, result.output
        report = json.loads(out.read_text(encoding="utf-8"))
        assert report["options"]["kinds"] == ["error", "crash"]
        assert "groups / runs breaking each invariant" in result.output
        assert f"report: {out.resolve()}" in result.output
        assert "snapshotfsm explore --replay '" in result.output
        too_wide = [line for line in result.output.splitlines() if len(line) > 80 and "--replay" not in line]
        assert too_wide == []

    def test_list_faults(self) -> None:
        result = CliRunner().invoke(main, ["explore", "--full", "--scenario", SUBSET[1], "--list-faults"])
        assert result.exit_code == 0, result.output
        assert "faults at the points of 1 instances" in result.output

    def test_replay_prints_the_log_the_diagram_and_the_violations(self, tmp_path: Path) -> None:
        case = f"{SUBSET[1]} steps=1 faults=crash@take_snapshot.PrimaryAnswered@1/ms1 profile=cloudstack seed=0"
        diagram = tmp_path / "run.mmd"
        result = CliRunner().invoke(main, ["explore", "--replay", case, "--mermaid", str(diagram)])
        assert result.exit_code == 0, result.output
        assert "transition log" in result.output
        assert "violations" in result.output
        assert "CRASH at take_snapshot.PrimaryAnswered" in diagram.read_text(encoding="utf-8")

    @pytest.mark.parametrize(
        ("args", "message"),
        [
            (["--faults", "timeout"], "fault kind must be one of"),
            (["--scenario", "nosuch"], "matches no scenario or instance"),
            (["--replay", "garbage"], "replay case"),
            (["--replay", "take:nosuch steps=1 faults=none"], "an instance of the scenarios"),
            (["--json", "/proc/x/report.json"], "is not a writable directory"),
        ],
    )
    def test_errors_are_one_line(self, args: list[str], message: str) -> None:
        result = CliRunner().invoke(main, ["explore", *args])
        assert result.exit_code == 1
        assert message in result.output
        assert "Traceback" not in result.output

    def test_a_report_path_below_a_regular_file(self, tmp_path: Path) -> None:
        blocker = tmp_path / "file"
        blocker.write_text("", encoding="utf-8")
        result = CliRunner().invoke(
            main, ["explore", "--full", "--scenario", SUBSET[1], "--json", str(blocker / "r.json")]
        )
        assert result.exit_code == 1
        assert "is not a writable directory" in result.output


class TestShrinking:
    """Delta debugging over the fault plan, then over the program."""

    def test_a_crash_whose_restart_crashes_too_shrinks_to_the_crash_when_that_shows_it(self) -> None:
        case = Case(
            SUBSET[1],
            (0, 1, 2, 3),
            (Fault(Point(0, "event", "take_snapshot.PrimaryAnswered", 1, 1), "restart_crash:redelete_destroying"),),
        )
        ran = replay_case(case)
        ran.world.engine.close()
        assert "no-orphan-object" in {v.invariant for v in ran.outcome.violations}
        [found] = shrink(Shrink(case, ("no-orphan-object",), None, full=True, length=ran.outcome.length))
        assert [f.kind for f in found.case.faults] == ["crash"]
        assert found.case.steps == (0,)
        assert found.length < ran.outcome.length
        assert found.shown is not None
        assert "CRASH at take_snapshot.PrimaryAnswered" in found.shown.sequence
