"""The run's record: what the world saw happen that CloudStack's tables do not keep (ours, for the invariants).

One record per world, shared by every management server of it (``Engine.peer``) and kept across their crashes: it
is an observer's notebook, not any server's memory. The invariants read it beside the database and the storage.
"""

from __future__ import annotations

import attrs


@attrs.frozen
class Charge:
    """One change of a resource count: to whom, of what, by how much, and who owns the object it is for."""

    account_id: int
    resource: str
    delta: int
    owner_id: int | None
    """The account that owns the object charged for, when the caller knows it (None: not said)."""
    at_ms: int


@attrs.frozen
class Delivery:
    """One answer a driver delivered to a callback: which call (driver, operation, call number) and when."""

    call: str
    at_ms: int


@attrs.define
class RunRecord:
    """The notebook: resource-count changes and callback deliveries, in the order they happened."""

    charges: list[Charge] = attrs.field(factory=list)
    deliveries: list[Delivery] = attrs.field(factory=list)
    calls: int = 0
    """How many asynchronous driver calls were made (each gets a number, its ``call`` name ends with it)."""

    def charge(self, account_id: int, resource: str, delta: int, owner_id: int | None, at_ms: int) -> None:
        """Note a resource-count change."""
        self.charges.append(Charge(account_id, resource, delta, owner_id, at_ms))

    def new_call(self, name: str) -> str:
        """A unique name for an asynchronous call of ``name`` (``default.takeSnapshot#12``)."""
        self.calls += 1
        return f"{name}#{self.calls}"

    def delivered(self, call: str, at_ms: int) -> None:
        """Note that ``call``'s answer reached its callback."""
        self.deliveries.append(Delivery(call, at_ms))
