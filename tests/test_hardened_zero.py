"""``snapshotfsm explore --profile hardened`` on the default set: no invariant broken, races included.

The promise of ``docs/hardened.md``: every class of violation the explorer finds under ``cloudstack`` has a fix that
``hardened`` turns on. A change that adds an operation, a scenario or an invariant keeps this true in the same change,
with a fix or with its violations fixed otherwise. The default set is explored once (two local processes, every fault
kind, schedules of the contending scenarios with up to two preemptions), as the README's command does.
"""

from __future__ import annotations

from typing import Any

import pytest

from snapshotfsm.explore import Options, document, explore
from snapshotfsm.explore.explorer import instances_for
from snapshotfsm.explore.scenarios import default_scenarios

PROFILE = "hardened"


@pytest.fixture(scope="module")
def report() -> dict[str, Any]:
    """The default set under ``hardened``; groups are not shrunk (a failure names each group's shortest run, which
    ``--replay`` shows with its violations)."""
    return document(explore(Options(profiles=(PROFILE,), workers=2, shrink=False)))


def _groups(report: dict[str, Any], scenario: str) -> list[str]:
    """Each group breaking an invariant on ``scenario``, with the command that replays its shortest run."""
    return [
        f"{f['invariant']} at {f['point']} ({f['runs']} runs)\n  snapshotfsm explore --replay '{f['shortest']['case']}'"
        for f in report["findings"]
        if any(i.split(":", 1)[0] == scenario for i in f["instances"])
    ]


def test_every_instance_of_the_default_set_ran_faulted_and_raced(report: dict[str, Any]) -> None:
    """Not zero for want of runs: every instance ran clean, thousands faulted, and the races' schedules too."""
    runs = report["runs"][PROFILE]
    assert runs["clean"] == len(instances_for(Options(profiles=(PROFILE,)))) == len(report["instances"])
    assert runs["faulted"] > 5000
    assert runs["schedules"] > 500


@pytest.mark.parametrize("scenario", sorted(s.name for s in default_scenarios()))
def test_no_invariant_breaks(report: dict[str, Any], scenario: str) -> None:
    broken = _groups(report, scenario)
    assert not broken, f"{len(broken)} group(s) under hardened on {scenario}:\n" + "\n".join(broken)


def test_the_totals_are_zero(report: dict[str, Any]) -> None:
    assert report["totals"][PROFILE] == {"groups": 0, "runs": 0}
    assert report["matrix"] == {}


def test_every_transition_not_made_is_explained(report: dict[str, Any]) -> None:
    """A fix may make a transition unreachable under hardened; ``unreached.toml`` then says why, for this profile."""
    machines = report["coverage"][PROFILE]["machines"]
    unexplained = [
        m["transition"]
        for machine in machines.values()
        if machine["kind"] == "workflow"
        for m in machine["missing"]
        if m["reason"] == "unexplained"
    ]
    assert unexplained == []
