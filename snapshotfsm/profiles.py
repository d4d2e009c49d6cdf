"""Profiles: named sets of behaviours the engine runs under.

``cloudstack`` reproduces upstream 4.23 as the spec describes it, including behaviour that looks wrong. A later
profile may change named behaviours (never the entity tables), so that the explorer can compare both on the same
scenarios.
"""

from __future__ import annotations

import attrs

from snapshotfsm.errors import InvalidValue


@attrs.frozen
class Profile:
    """The behaviours that differ between profiles, each named for what it changes."""

    name: str
    snapshot_compare_and_swap: bool = attrs.field(default=False)
    """spec §11: ``SnapshotDaoImpl.updateState`` does no compare-and-swap, so the last writer wins on ``snapshots``."""


PROFILES: dict[str, Profile] = {
    "cloudstack": Profile("cloudstack", snapshot_compare_and_swap=False),
}


def get_profile(name: str | Profile) -> Profile:
    """The profile called ``name`` (a Profile passes through).

    Raises:
        InvalidValue: no profile has that name.
    """
    if isinstance(name, Profile):
        return name
    try:
        return PROFILES[name]
    except KeyError:
        raise InvalidValue("profile", name, f"one of {', '.join(sorted(PROFILES))}") from None
