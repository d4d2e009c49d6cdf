"""Which transitions of every machine an exploration's runs made, and why the others were not.

Every workflow transition that some scenario and fault can reach should be exercised; each one that is not is listed
with its explanation from ``unreached.toml`` (next to this module): ``construction`` (no run can make it, and why)
or ``gap`` (a run could, but no scenario of the default set does), under every profile or the ``profiles`` an
entry names. One without an explanation is reported as
``unexplained``: a test keeps that list empty. Entity machines (CloudStack's tables) are reported too; many of their
transitions belong to operations the model does not run (volume migration, templates), so they have no target.
"""

from __future__ import annotations

import functools
import tomllib
from collections.abc import Iterable
from pathlib import Path

import attrs

from snapshotfsm.definitions import Definitions
from snapshotfsm.errors import ScenarioError
from snapshotfsm.profiles import PROFILES

UNREACHED = Path(__file__).with_name("unreached.toml")
REASONS = ("construction", "gap")
FIELDS = frozenset({"transition", "reason", "why", "profiles"})


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


@attrs.frozen
class Explanation:
    """Why a workflow transition is not made, under the profiles it holds for (every profile when none are named)."""

    transition: str
    reason: str
    why: str
    profiles: tuple[str, ...] = ()

    def holds_under(self, profile: str) -> bool:
        """Whether this entry explains its transition in runs of ``profile``."""
        return not self.profiles or profile in self.profiles


@functools.cache
def explanations(path: Path = UNREACHED) -> tuple[Explanation, ...]:
    """The entries of ``unreached.toml``, in file order.

    A fix of one profile can make a transition unreachable there while the other still makes it (``hardened``'s
    failed storage delete no longer fails the delete), so an entry may name the ``profiles`` it explains.

    Raises:
        ScenarioError: the file is malformed (naming the entry), or an entry names an unknown profile or
            explains a transition twice for one profile.
    """
    raw = tomllib.loads(path.read_text(encoding="utf-8"))
    out: list[Explanation] = []
    for n, entry in enumerate(raw.get("unreached", []), 1):
        key = f"unreached {n}"
        if not isinstance(entry, dict) or not {"transition", "reason", "why"} <= set(entry) <= FIELDS:
            raise ScenarioError(str(path), key, "must have transition, reason and why, and may have profiles")
        if entry["reason"] not in REASONS:
            raise ScenarioError(str(path), f"{key}: reason", f"must be one of {', '.join(REASONS)}")
        profiles = entry.get("profiles", [])
        if not isinstance(profiles, list) or (not profiles and "profiles" in entry):
            raise ScenarioError(str(path), f"{key}: profiles", "must be a non-empty list of profile names")
        unknown = [p for p in profiles if p not in PROFILES]
        if unknown:
            raise ScenarioError(
                str(path), f"{key}: profiles", f"no profile named {unknown[0]!r}; profiles: {', '.join(PROFILES)}"
            )
        found = Explanation(str(entry["transition"]), str(entry["reason"]), str(entry["why"]), tuple(profiles))
        for profile in PROFILES:
            if found.holds_under(profile) and any(
                e.transition == found.transition and e.holds_under(profile) for e in out
            ):
                raise ScenarioError(
                    str(path), key, f"{found.transition!r} is already explained under profile {profile!r}"
                )
        out.append(found)
    return tuple(out)


def transition_text(machine: str, source: str, event: str, dest: str) -> str:
    """How a transition is named in reports and in ``unreached.toml``."""
    return f"{machine}: {source} --{event}--> {dest}"


def coverage(
    definitions: Definitions, exercised: Iterable[tuple[str, str, str, str]], profile: str = "cloudstack"
) -> list[MachineCoverage]:
    """Each machine of ``definitions`` against the ``(machine, source, event, dest)`` the runs of ``profile`` made."""
    done = set(exercised)
    known = {e.transition: (e.reason, e.why) for e in explanations() if e.holds_under(profile)}
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
