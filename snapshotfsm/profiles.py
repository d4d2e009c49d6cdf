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
    peer_cleanup_on_node_left: bool = attrs.field(default=False)
    """spec §10.1: at U the job manager never hears that a peer left, so nobody cleans the peer's jobs."""


PROFILES: dict[str, Profile] = {
    "cloudstack": Profile("cloudstack"),
    "hardened": Profile("hardened", snapshot_compare_and_swap=True, peer_cleanup_on_node_left=True),
}
"""``hardened`` changes only named behaviours: snapshots get a compare-and-swap, and a live server cleans up after
a peer that left, as ``onManagementNodeLeft`` intends."""


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
