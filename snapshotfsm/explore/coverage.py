"""Which transitions of every machine an exploration's runs made, and why the others were not.

Every workflow transition that some scenario and fault can reach should be exercised; each one that is not is listed
with its explanation from ``unreached.toml`` (next to this module): ``construction`` (no run can make it, and why)
or ``gap`` (a run could, but no scenario of the default set does). One without an explanation is reported as
``unexplained``: a test keeps that list empty. Entity machines (CloudStack's tables) are reported too; many of their
transitions belong to operations the model does not run (volume migration, templates), so they have no target.
"""

from __future__ import annotations

import functools
import tomllib
from collections.abc import Iterable, Mapping
from pathlib import Path

import attrs

from snapshotfsm.definitions import Definitions
from snapshotfsm.errors import ScenarioError

UNREACHED = Path(__file__).with_name("unreached.toml")
REASONS = ("construction", "gap")


@attrs.frozen
class Missing:
    """A transition no run made: ``machine: source --event--> dest``, with why."""

    transition: str
    reason: str
    """``construction``, ``gap`` or ``unexplained``."""
    why: str


@attrs.frozen
class MachineCoverage:
    """One machine's transitions: how many, how many some run made, and the others."""

    machine: str
    kind: str
    transitions: int
    exercised: int
    missing: tuple[Missing, ...]


@functools.cache
def explanations(path: Path = UNREACHED) -> Mapping[str, tuple[str, str]]:
    """``machine: source --event--> dest`` -> (reason, why), from ``unreached.toml``.

    Raises:
        ScenarioError: the file is malformed (naming the entry).
    """
    raw = tomllib.loads(path.read_text(encoding="utf-8"))
    out: dict[str, tuple[str, str]] = {}
    for n, entry in enumerate(raw.get("unreached", []), 1):
        key = f"unreached {n}"
        if not isinstance(entry, dict) or set(entry) != {"transition", "reason", "why"}:
            raise ScenarioError(str(path), key, "must have exactly transition, reason and why")
        if entry["reason"] not in REASONS:
            raise ScenarioError(str(path), f"{key}: reason", f"must be one of {', '.join(REASONS)}")
        out[str(entry["transition"])] = (str(entry["reason"]), str(entry["why"]))
    return out


def transition_text(machine: str, source: str, event: str, dest: str) -> str:
    """How a transition is named in reports and in ``unreached.toml``."""
    return f"{machine}: {source} --{event}--> {dest}"


def coverage(definitions: Definitions, exercised: Iterable[tuple[str, str, str, str]]) -> list[MachineCoverage]:
    """Each machine of ``definitions`` against the ``(machine, source, event, dest)`` some run made."""
    done = set(exercised)
    known = explanations()
    out = []
    for name, definition in definitions.items():
        rows = list(dict.fromkeys((t.source, t.event, t.dest) for t in definition.transitions))
        missing = []
        for source, event, dest in rows:
            if (name, source, event, dest) in done:
                continue
            text = transition_text(name, source, event, dest)
            reason, why = known.get(text, ("unexplained", ""))
            missing.append(Missing(text, reason, why))
        out.append(MachineCoverage(name, definition.kind, len(rows), len(rows) - len(missing), tuple(missing)))
    return out


def workflow_share(machines: Iterable[MachineCoverage]) -> tuple[int, int]:
    """Workflow transitions exercised, of all workflow transitions."""
    flows = [m for m in machines if m.kind == "workflow"]
    return sum(m.exercised for m in flows), sum(m.transitions for m in flows)
