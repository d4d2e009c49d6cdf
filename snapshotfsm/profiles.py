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
    peer_cleanup_on_node_left: bool = attrs.field(default=True)
    """spec §10.1: a live server runs ``cleanupLeftOverJobs`` for a peer that left (``onManagementNodeLeft``).

    Read at U, the job manager is never registered as a cluster listener and its handler passes the ``mshost`` row
    id where the server id belongs, so the peer's jobs would wait for that server's own restart. The spec is the
    reference until it is corrected; ``Profile("cloudstack", peer_cleanup_on_node_left=False)`` models the reading.
    """


PROFILES: dict[str, Profile] = {
    "cloudstack": Profile("cloudstack"),
    "hardened": Profile("hardened", snapshot_compare_and_swap=True),
}
"""``hardened`` changes only named behaviours: snapshots get a compare-and-swap."""


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
