"""Judge a test's engines by the invariants once nothing more will happen (the harness of issue 13).

A scenario test builds engines and does what it does; at its end each world it built (an engine and its peers share
one) is quiesced (:meth:`Engine.quiesce`: run to idle, crash and restart every server, a cycle of the background
tasks, idle again) and every invariant is evaluated. The test declares the violations it expects, which under the
``cloudstack`` profile are upstream's behaviour; any other is a failure. Plugin authors use the same pieces:
:func:`tracking_engines` to see the engines a block builds, :func:`judge` to quiesce and evaluate one world.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator

from snapshotfsm.engine import Engine
from snapshotfsm.invariants import Run, Violation, When, check


@contextlib.contextmanager
def tracking_engines() -> Iterator[list[Engine]]:
    """The engines built inside the block, in order (peers included)."""
    built: list[Engine] = []
    original = Engine.__init__

    def init(self: Engine, *args: object, **kwargs: object) -> None:
        original(self, *args, **kwargs)  # type: ignore[arg-type]
        built.append(self)

    Engine.__init__ = init  # type: ignore[method-assign]
    try:
        yield built
    finally:
        Engine.__init__ = original  # type: ignore[method-assign]


SHARED: set[int] = set()
"""Worlds that several tests read (a cached scenario): judged by a test of their own, never at another's end."""


def share(engine: Engine) -> Engine:
    """Mark the engine's world as read by several tests: the end of a test that reads it does not quiesce it."""
    SHARED.add(id(engine.record))
    return engine


def open_worlds(engines: list[Engine]) -> list[Engine]:
    """One engine per world (the first built), leaving out shared worlds and worlds whose database was closed."""
    seen: set[int] = set(SHARED)
    worlds = []
    for engine in engines:
        if id(engine.record) in seen:
            continue
        seen.add(id(engine.record))
        try:
            engine.store.conn.execute("SELECT 1")
        except sqlite3.ProgrammingError:
            continue
        worlds.append(engine)
    return worlds


def judge(engine: Engine) -> list[Violation]:
    """Quiesce the engine's world and evaluate every invariant due after a restart."""
    engine.quiesce()
    return check(Run(engine.store, engine.record), at=When.RESTARTED)
