"""The explanations of ``unreached.toml`` name workflow transitions that exist (no exploration is run here)."""

from __future__ import annotations

import re

import pytest

from snapshotfsm.definitions import project_definitions
from snapshotfsm.errors import ScenarioError
from snapshotfsm.explore.coverage import REASONS, coverage, explanations, transition_text, workflow_share
from snapshotfsm.explore.scenarios import OPT_IN_POOLS, default_scenarios, load_scenario, parse_scenario
from snapshotfsm.profiles import PROFILES

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
    for entry in entries:
        assert TEXT.match(entry.transition), f"{entry.transition!r} is not in transition_text's format"
        assert entry.transition in known, f"{entry.transition!r} is not a workflow transition of project_definitions()"
        assert entry.reason in REASONS
        assert len(entry.why) > 80, f"{entry.transition}: the explanation is too short to say why"


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_explained_transitions_are_reported_with_their_reason_under_their_profiles(profile: str) -> None:
    """An entry naming profiles explains the transition under those only; elsewhere it is unexplained."""
    definitions = project_definitions().for_profile(profile)
    machines = coverage(definitions, [], profile)
    missing = {m.transition: m for c in machines if c.kind == "workflow" for m in c.missing}
    for entry in explanations():
        if entry.transition not in missing:
            continue
        shown = missing[entry.transition]
        if entry.holds_under(profile):
            assert (shown.reason, shown.why) == (entry.reason, entry.why)
        elif not any(e.transition == entry.transition and e.holds_under(profile) for e in explanations()):
            assert (shown.reason, shown.why) == ("unexplained", "")
    done, total = workflow_share(machines)
    assert done == 0
    assert total == sum(
        len({(t.source, t.event, t.dest) for t in d.transitions}) for d in definitions.values() if d.kind == "workflow"
    )


def test_a_profile_entry_explains_nothing_under_another_profile(tmp_path) -> None:
    path = tmp_path / "unreached.toml"
    text = "delete_snapshot: Deleting --Fail--> Failed"
    path.write_text(
        f'[[unreached]]\ntransition = "{text}"\nreason = "construction"\nwhy = "w"\nprofiles = ["hardened"]\n',
        encoding="utf-8",
    )
    (entry,) = explanations.__wrapped__(path)
    assert (entry.holds_under("hardened"), entry.holds_under("cloudstack")) == (True, False)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ('transition = "x"\nreason = "maybe"\nwhy = "y"\n', "reason: must be one of construction, gap"),
        ('transition = "x"\nwhy = "y"\n', "must have transition, reason and why, and may have profiles"),
        ('transition = "x"\nreason = "gap"\nwhy = "y"\nwhen = "z"\n', "may have profiles"),
        ('transition = "x"\nreason = "gap"\nwhy = "y"\nprofiles = []\n', "must be a non-empty list"),
        ('transition = "x"\nreason = "gap"\nwhy = "y"\nprofiles = ["strict"]\n', "no profile named 'strict'"),
        (
            (
                'transition = "x"\nreason = "gap"\nwhy = "y"\nprofiles = ["hardened"]\n'
                '[[unreached]]\ntransition = "x"\nreason = "gap"\nwhy = "z"\n'
            ),
            "'x' is already explained under profile 'hardened'",
        ),
    ],
)
def test_malformed_entries_are_refused(tmp_path, body: str, message: str) -> None:
    bad = tmp_path / "unreached.toml"
    bad.write_text("[[unreached]]\n" + body, encoding="utf-8")
    with pytest.raises(ScenarioError, match=re.escape(message)):
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
