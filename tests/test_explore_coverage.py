"""The explanations of ``unreached.toml`` name workflow transitions that exist (no exploration is run here)."""

from __future__ import annotations

import re

import pytest

from snapshotfsm.definitions import project_definitions
from snapshotfsm.errors import ScenarioError
from snapshotfsm.explore.coverage import REASONS, coverage, explanations, transition_text, workflow_share
from snapshotfsm.explore.scenarios import OPT_IN_POOLS, default_scenarios, load_scenario, parse_scenario

TEXT = re.compile(r"^(?P<machine>[a-z_]+): (?P<source>\w+) --(?P<event>\w+)--> (?P<dest>\w+)$")


def _workflow_transitions() -> set[str]:
    return {
        transition_text(name, t.source, t.event, t.dest)
        for name, definition in project_definitions().items()
        if definition.kind == "workflow"
        for t in definition.transitions
    }


def test_every_explanation_names_an_existing_workflow_transition() -> None:
    known = _workflow_transitions()
    entries = explanations()
    assert entries, "unreached.toml explains nothing"
    for text, (reason, why) in entries.items():
        assert TEXT.match(text), f"{text!r} is not in transition_text's format"
        assert text in known, f"{text!r} is not a workflow transition of project_definitions()"
        assert reason in REASONS
        assert len(why) > 80, f"{text}: the explanation is too short to say why"


def test_explained_transitions_are_reported_with_their_reason() -> None:
    entries = explanations()
    machines = coverage(project_definitions(), [])
    missing = {m.transition: m for c in machines if c.kind == "workflow" for m in c.missing}
    for text, (reason, why) in entries.items():
        assert missing[text].reason == reason
        assert missing[text].why == why
    done, total = workflow_share(machines)
    assert done == 0
    assert total == len(_workflow_transitions())


def test_malformed_entries_are_refused(tmp_path) -> None:
    bad = tmp_path / "unreached.toml"
    bad.write_text('[[unreached]]\ntransition = "x"\nreason = "maybe"\nwhy = "y"\n', encoding="utf-8")
    with pytest.raises(ScenarioError):
        explanations.__wrapped__(bad)


def test_opt_in_pools_and_cloud_keys() -> None:
    """A pool shape of OPT_IN_POOLS only where a scenario names it; ``[cloud]`` keys are checked."""
    raw = {"description": "d", "cloud": {"image_store": False}, "step": [{"call": "createSnapshot"}]}
    scenario = parse_scenario(raw, name="s")
    assert scenario.cloud == {"image_store": False}
    assert not set(scenario.dimensions["pool"]) & set(OPT_IN_POOLS)
    with pytest.raises(ScenarioError, match=r"cloud\.images"):
        parse_scenario({**raw, "cloud": {"images": False}}, name="s")
    with pytest.raises(ScenarioError, match="location_type"):
        parse_scenario({**raw, "step": [{"call": "createSnapshot", "location_type": "TERTIARY"}]}, name="s")
    create = {"call": "createSnapshot", "quiescevm": True, "location_type": "SECONDARY", "zone_copy": True}
    step = parse_scenario({**raw, "step": [create]}, name="s").steps[0]
    assert str(step) == "createSnapshot quiescevm locationtype SECONDARY to zone 2 too"


def test_scenario_files_load() -> None:
    for scenario in default_scenarios():
        assert load_scenario(scenario.path).name == scenario.name
