"""Generic invariants over a run: what must always hold, what must hold once nothing more will happen.

``INVARIANTS`` lists them all, each module's in its table; :func:`check` evaluates those due at a point.
"""

from __future__ import annotations

from snapshotfsm.invariants import answers, counts, lifecycle, storage
from snapshotfsm.invariants.base import Input, Invariant, Run, Violation, When, invariant, violations

INVARIANTS: tuple[Invariant, ...] = (
    *lifecycle.INVARIANTS,
    *counts.INVARIANTS,
    *storage.INVARIANTS,
    *answers.INVARIANTS,
)
"""Every invariant, gathered from the modules of this package (each lists its own in a module-level table)."""


def check(run: Run, *, at: When = When.ALWAYS) -> list[Violation]:
    """The breaches of every invariant due at ``at``."""
    return violations(INVARIANTS, run, at=at)


__all__ = ["INVARIANTS", "Input", "Invariant", "Run", "Violation", "When", "check", "invariant", "violations"]
