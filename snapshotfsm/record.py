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
class Call:
    """One asynchronous driver call: its name (driver, operation, call number), the server it answers, and when."""

    call: str
    ms_id: int | None
    """The management server whose callback the answer goes to (None: not said)."""
    at_ms: int


@attrs.frozen
class Delivery:
    """One answer a driver delivered to a callback: which call (driver, operation, call number) and when.

    ``dropped``: the answer came back to a server that crashed since the call (its incarnation changed, or the crash
    dropped the answer on its way). It reached no callback, so it does not count as delivered; it is noted so that
    the call's missing delivery is explained.
    """

    call: str
    at_ms: int
    dropped: bool = False


@attrs.frozen
class Moment:
    """One thing that happened, as a sequence diagram shows it: who told whom what, when.

    ``source`` and ``target`` are participants: ``api`` (the caller), ``ms<id>`` (a management server), a driver's
    kind (``default``, ``image``, ``storpool``...). ``after_log`` is how many ``transition_log`` rows existed then,
    so that the moments interleave with the database's own log in the order they happened.
    """

    kind: str
    source: str
    target: str
    text: str
    at_ms: int
    after_log: int


@attrs.define
class RunRecord:
    """The notebook: resource-count changes, asynchronous calls and their deliveries, in the order they happened."""

    charges: list[Charge] = attrs.field(factory=list)
    deliveries: list[Delivery] = attrs.field(factory=list)
    calls: int = 0
    """How many asynchronous driver calls were made (each gets a number, its ``call`` name ends with it)."""
    issued: list[Call] = attrs.field(factory=list)
    """Every asynchronous call, in the order it was made."""
    never_answered: dict[str, str] = attrs.field(factory=dict)
    """Calls whose answer will never come, by name, with why (the storage never answers: a ``no_answer`` fault)."""
    timeline: list[Moment] | None = None
    """Every moment, in order, when kept (a list): API calls, driver calls and answers, crashes and restarts. The
    explorer keeps it to draw a counterexample; None (the default) keeps nothing and costs nothing."""

    def charge(self, account_id: int, resource: str, delta: int, owner_id: int | None, at_ms: int) -> None:
        """Note a resource-count change."""
        self.charges.append(Charge(account_id, resource, delta, owner_id, at_ms))

    def new_call(self, name: str, *, ms_id: int | None = None, at_ms: int = 0) -> str:
        """A unique name for an asynchronous call of ``name`` (``default.takeSnapshot#12``), noted as issued.

        ``ms_id`` is the server the answer goes back to, ``at_ms`` when the call was made.
        """
        self.calls += 1
        call = f"{name}#{self.calls}"
        self.issued.append(Call(call, ms_id, at_ms))
        return call

    def delivered(self, call: str, at_ms: int, *, dropped: bool = False) -> None:
        """Note that ``call``'s answer reached its callback, or (``dropped``) was lost because its server crashed."""
        self.deliveries.append(Delivery(call, at_ms, dropped))

    def note(self, kind: str, source: str, target: str, text: str, *, at_ms: int, after_log: int) -> None:
        """Add a moment to the timeline, when one is kept."""
        if self.timeline is not None:
            self.timeline.append(Moment(kind, source, target, text, at_ms, after_log))

    def unanswered(self, call: str, why: str) -> None:
        """Note that ``call`` will never be answered, and why: nothing will reach its callback."""
        self.never_answered[call] = why
