"""Simulated time: every timestamp the model writes comes from here, never from the wall clock.

Driver latencies, retry intervals and scheduler polls advance this clock, so that a day of retries takes milliseconds
and the same inputs give the same database, byte for byte (DESIGN.md, "Time and concurrency").
"""

from __future__ import annotations

import datetime as dt
import functools

import attrs

DEFAULT_START = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


@attrs.define
class SimClock:
    """Milliseconds since ``start``; moves only when told to."""

    start: dt.datetime = DEFAULT_START
    now_ms: int = 0

    def advance_to(self, at_ms: int) -> None:
        """Move forward to ``at_ms``; time never runs backwards."""
        if at_ms < self.now_ms:
            raise ValueError(f"the clock is at {self.now_ms} ms and cannot go back to {at_ms} ms")
        self.now_ms = at_ms

    def advance(self, ms: int) -> None:
        """Move forward by ``ms`` milliseconds."""
        self.advance_to(self.now_ms + ms)

    def now(self) -> dt.datetime:
        """The simulated instant, in UTC."""
        return self.at(self.now_ms)

    def at(self, at_ms: int) -> dt.datetime:
        """The instant ``at_ms`` milliseconds after ``start``, in UTC."""
        return self.start + dt.timedelta(milliseconds=at_ms)

    def timestamp(self) -> str:
        """The simulated instant as CloudStack stores a DATETIME (UTC, second precision)."""
        return _timestamp(self.start, self.now_ms)


@functools.lru_cache(maxsize=1024)
def _timestamp(start: dt.datetime, at_ms: int) -> str:
    """``start`` + ``at_ms`` as a DATETIME, formatted once per instant.

    A poll tick asks twice for the same instant (its lock's ``acquired_on``, then what is due), and ``strftime`` is
    a tenth of the tick; the result depends on the two values alone.
    """
    return (start + dt.timedelta(milliseconds=at_ms)).strftime("%Y-%m-%d %H:%M:%S")
