"""Replaying an explorer case in a test: what it breaks, and what its fault adds to the same program run clean.

The ``hardened`` tests judge a finding's minimal case against its clean run: a fault is charged only with the
violations, on subjects, that the clean run does not show (upstream's clean runs already break some counts).
"""

from __future__ import annotations

import re

import attrs
import pytest

from snapshotfsm.explore import replay_case
from snapshotfsm.profiles import PROFILES


def broken(case: str) -> set[tuple[str, str]]:
    """The (invariant, subject) pairs the replayed ``case`` (with its profile and seed) breaks; its world closed."""
    ran = replay_case(case)
    try:
        return set(ran.outcome.broken())
    finally:
        ran.world.engine.close()


def fault_added(case: str, profile: str) -> list[str]:
    """The invariants ``case`` (no profile, no seed) breaks under ``profile`` on subjects its clean run leaves alone."""
    clean = re.sub(r"faults=.*$", "faults=none", case)
    new = broken(f"{case} profile={profile} seed=0") - broken(f"{clean} profile={profile} seed=0")
    return sorted({invariant for invariant, _ in new})


def hardened_without(monkeypatch: pytest.MonkeyPatch, *flags: str) -> str:
    """The name of a profile registered for this test: ``hardened`` with ``flags`` off."""
    name = "hardened-without-" + "-".join(flags)
    monkeypatch.setitem(PROFILES, name, attrs.evolve(PROFILES["hardened"], **dict.fromkeys(flags, False)))
    return name
