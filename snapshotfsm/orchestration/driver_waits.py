"""A strategy's delete written as a generator, resumed each time a driver answers (spec §9.4, §10.5).

CloudStack's delete code blocks on each driver future in its own thread; here the generator yields where it would
block, the workflow waits in a state, and the driver's callback fires the workflow's event to resume it.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import attrs

from snapshotfsm.drivers.base import Answer
from snapshotfsm.errors import CloudException
from snapshotfsm.orchestration.runner import Run
from snapshotfsm.strategies.base import DriverDelete


@attrs.frozen
class Returned:
    """The generator finished with ``value`` (a strategy's boolean result, or None)."""

    value: Any


def resume(run: Run, answer: Answer | None, answered_event: str) -> Returned | None:
    """Send ``answer`` into ``run.continuation``; None while it waits on a driver delete, else what it returned.

    A driver that throws at the call has its exception thrown into the generator at the point of the call, where
    CloudStack's own try/catch around it sees it. What the generator raises propagates to the caller's step.
    """
    gen: Generator[DriverDelete, Answer | None, Any] = run.continuation
    error: CloudException | None = None
    while True:
        try:
            request = gen.throw(error) if error is not None else gen.send(answer)
        except StopIteration as done:
            return Returned(done.value)

        def answered(reply: Answer | None) -> None:
            run.answer = reply
            run.rt.runner.fire(run, answered_event)

        try:
            request.driver.delete_snapshot(request.path, answered)
        except CloudException as exc:
            error, answer = exc, None
            continue
        return None
