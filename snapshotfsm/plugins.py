"""Entry-point groups: how built-in and third-party drivers and strategies are found (as TaskFlow finds its engines).

Built-ins register in this project's ``pyproject.toml`` under the same groups a third party uses; only their order
is ours: the built-ins first, in a fixed order (the factory keeps the first strict maximum, so order decides ties),
then every other entry point by name.
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Sequence
from typing import TypeVar

from snapshotfsm.errors import InvalidValue

Plugin = TypeVar("Plugin")


def load_group(group: str, base: type[Plugin], builtin_order: Sequence[str]) -> tuple[type[Plugin], ...]:
    """The classes registered under entry-point ``group``: ``builtin_order`` first, then the others by name.

    Raises:
        InvalidValue: an entry point that does not load a subclass of ``base``, or a built-in that is missing (the
            package is not installed: its entry points come with its metadata).
    """
    points = {ep.name: ep for ep in importlib.metadata.entry_points(group=group)}
    missing = [name for name in builtin_order if name not in points]
    if missing:
        raise InvalidValue(
            f"entry-point group {group!r}",
            sorted(points),
            f"the built-ins {', '.join(builtin_order)}",
            message=f"entry-point group {group!r} lacks the built-ins {', '.join(missing)}: install snapshotfsm "
            "(pip install -e .) so that its entry points are registered",
        )
    names = [*builtin_order, *sorted(n for n in points if n not in builtin_order)]
    found: list[type[Plugin]] = []
    for name in names:
        loaded = points[name].load()
        if not (isinstance(loaded, type) and issubclass(loaded, base)):
            raise InvalidValue(
                f"entry point {name!r} of {group!r} ({points[name].value})", loaded, f"a {base.__name__} subclass"
            )
        found.append(loaded)
    return tuple(found)
