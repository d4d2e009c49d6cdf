"""The fault explorer: every fault at every point of scenarios given as data, judged by the invariants.

From Python::

    from snapshotfsm.explore import Options, document, explore, replay_case

    found = explore(Options(scenarios=("take",), workers=2))
    report = document(found)            # the JSON report (schema snapshotfsm-explore/1)
    ran = replay_case(report["findings"][0]["minimal"]["case"])
    ran.outcome.violations              # the counterexample's violations, again

The same from a terminal: ``snapshotfsm explore --scenario take --workers 2``; ``docs/explore.md`` has the scenario
format and the report's schema.
"""

from __future__ import annotations

from snapshotfsm.explore.explorer import Exploration, Options, explore, instances_for
from snapshotfsm.explore.report import report as document
from snapshotfsm.explore.runs import Case, Outcome, Ran, replay


def replay_case(case: Case | str, *, scenario_dir: str | None = None) -> Ran:
    """Run a case again, as a report prints it, with its timeline kept (for its sequence diagram).

    Raises:
        InvalidValue: the case does not parse, or names no instance of the scenarios.
    """
    return replay(case, instances=instances_for(Options(scenario_dir=scenario_dir, full=True)))


__all__ = ["Case", "Exploration", "Options", "Outcome", "Ran", "document", "explore", "instances_for", "replay_case"]
