"""An exploration as a report: the JSON document (schema ``snapshotfsm-explore/1``); the CLI prints its summary.

The JSON is the stable form (``docs/explore.md`` documents every key): same scenarios, options and seed, same
document, whatever the worker count, except ``stats`` (times, and how much work fingerprints saved), which says how
the run went rather than what it found.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from snapshotfsm.definitions import project_definitions
from snapshotfsm.explore.coverage import MachineCoverage, coverage, workflow_share
from snapshotfsm.explore.explorer import Exploration, Group, exercised, matrix

SCHEMA = "snapshotfsm-explore/1"


def replay_command(case: str) -> str:
    """The command line that replays a case."""
    return f"snapshotfsm explore --replay '{case}'"


def report(exploration: Exploration) -> dict[str, Any]:
    """The exploration as the JSON document."""
    options = exploration.options
    runs: dict[str, dict[str, int]] = {}
    for profile in options.profiles:
        mine = [j for (p, _), r in exploration.judged.items() if p == profile for j in r]
        schedules = sum(j.schedule for j in mine)
        runs[profile] = {
            "clean": sum(p == profile for p, _ in exploration.clean),
            "faulted": len(mine) - schedules,
            "schedules": schedules,
        }
    covered = exercised(exploration)
    return {
        "schema": SCHEMA,
        "options": {
            "profiles": list(options.profiles),
            "scenarios": list(options.scenarios),
            "kinds": list(options.kinds),
            "seed": options.seed,
            "budget": options.budget,
            "full": options.full,
            "preemptions": options.preemptions,
        },
        "instances": [i.name for i in exploration.instances],
        "runs": runs,
        "matrix": matrix(exploration),
        "groups": group_matrix(exploration),
        "totals": totals(exploration),
        "findings": [_finding(g) for g in exploration.groups],
        "coverage": {
            profile: _coverage(coverage(project_definitions().for_profile(profile), done, profile))
            for profile, done in covered.items()
        },
        "stats": dict(exploration.stats),
    }


def group_matrix(exploration: Exploration) -> dict[str, dict[str, int]]:
    """Invariant by profile: how many groups (an invariant at one fault point) broke it; the rows of ``matrix``.

    Side by side with ``matrix`` (runs), this is what a fix of one profile removed: a class of violation is a few
    groups of many runs each.
    """
    out: dict[str, dict[str, int]] = {}
    for group in exploration.groups:
        row = out.setdefault(group.invariant, dict.fromkeys(exploration.options.profiles, 0))
        row[group.profile] += 1
    return dict(sorted(out.items()))


def totals(exploration: Exploration) -> dict[str, dict[str, int]]:
    """Per profile: the groups found and the runs they hold, every invariant together."""
    out = {profile: {"groups": 0, "runs": 0} for profile in exploration.options.profiles}
    for group in exploration.groups:
        out[group.profile]["groups"] += 1
        out[group.profile]["runs"] += len(group.members)
    return out


def _finding(group: Group) -> dict[str, Any]:
    shortest = group.shortest()
    out: dict[str, Any] = {
        "profile": group.profile,
        "invariant": group.invariant,
        "point": group.point,
        "kinds": sorted(group.kinds),
        "runs": len(group.members),
        "instances": sorted(group.instances),
        "shortest": {"case": str(shortest.case), "length": shortest.length},
    }
    minimal = group.minimal
    if minimal is not None:
        faults = minimal.case.faults
        out["minimal"] = {
            "case": str(minimal.case),
            "kind": faults[0].kind if faults else "none",
            "length": minimal.length,
            "steps": len(minimal.case.steps),
            "replay": replay_command(str(minimal.case)),
        }
        if minimal.shown is not None:
            out["violations"] = [{"subject": s, "detail": d} for s, d in minimal.shown.violations]
            out["rows"] = [{"table": t, "row": r} for t, r in minimal.shown.rows]
            out["log"] = list(minimal.shown.log)
            out["sequence"] = minimal.shown.sequence
    return out


def _coverage(machines: list[MachineCoverage]) -> dict[str, Any]:
    done, total = workflow_share(machines)
    flows = [x for m in machines if m.kind == "workflow" for x in m.missing]
    unreachable = sum(x.reason == "construction" for x in flows)
    reachable = total - unreachable
    return {
        "workflow": {
            "transitions": total,
            "exercised": done,
            "share": round(done / total, 4) if total else 1.0,
            "unreachable": unreachable,
            "reachable_share": round(done / reachable, 4) if reachable else 1.0,
            "unexplained": sum(x.reason == "unexplained" for x in flows),
        },
        "machines": {
            m.machine: {
                "kind": m.kind,
                "transitions": m.transitions,
                "exercised": m.exercised,
                "missing": [{"transition": x.transition, "reason": x.reason, "why": x.why} for x in m.missing],
            }
            for m in machines
        },
    }


def without_stats(document: Mapping[str, Any]) -> dict[str, Any]:
    """The document less ``stats``: what must be the same for the same options and seed."""
    return {k: v for k, v in document.items() if k != "stats"}


def dumps(document: Mapping[str, Any]) -> str:
    """The document as JSON text (stable key order, two-space indent)."""
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"
