"""Hypothesis profiles for the whole suite, and small definitions written to ``tmp_path``.

- ``dev`` (the default): few examples, so that ``pytest`` stays fast; failures found earlier replay from the local
  example database (``.hypothesis/``).
- ``ci`` (chosen when the ``CI`` environment variable is set): the same budget, derandomized and without an example
  database, so that a clean clone runs the same examples every time and a failure prints a blob to reproduce it.
- ``thorough``: many more examples, for a run by hand before a release.

Pick one with ``pytest --hypothesis-profile=thorough`` or ``HYPOTHESIS_PROFILE=thorough``. No profile has a deadline or
the too-slow health check: nothing in the suite depends on wall-clock time (the model runs on a simulated clock).
Tests that need another size say so with their own ``settings``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

collect_ignore = ["plugins"]
"""A third-party plugin's own tests, run in its own environment by test_plugins.py, not here."""

_UNTIMED = [HealthCheck.too_slow]  # timing-based, like deadline: neither belongs in a simulated-clock suite

settings.register_profile("dev", max_examples=25, deadline=None, suppress_health_check=_UNTIMED)
settings.register_profile(
    "ci",
    max_examples=25,
    derandomize=True,
    database=None,
    print_blob=True,
    deadline=None,
    suppress_health_check=_UNTIMED,
)
settings.register_profile("thorough", max_examples=500, deadline=None, suppress_health_check=_UNTIMED)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if os.environ.get("CI") else "dev"))


# --- small definitions written to tmp_path --------------------------------------------------------------------------


def _value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string of these simple values is a TOML basic string
    if isinstance(value, list):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {value!r} as TOML here")


def dump_toml(doc: dict[str, Any]) -> str:
    """TOML text for a definition-shaped document: plain keys, tables, and arrays of tables."""
    lines: list[str] = []
    plain = {k: v for k, v in doc.items() if not isinstance(v, dict | list) or (isinstance(v, list) and not v)}
    lines.extend(f"{k} = {_value(v)}" for k, v in plain.items())
    for key, value in doc.items():
        if isinstance(value, dict):
            lines.append(f"\n[{key}]")
            lines.extend(f"{k} = {_value(v)}" for k, v in value.items())
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            for row in value:
                lines.append(f"\n[[{key}]]")
                lines.extend(f"{k} = {_value(v)}" for k, v in row.items())
    return "\n".join(lines) + "\n"


@pytest.fixture
def door() -> dict[str, Any]:
    """A minimal valid entity definition: a door that opens, closes, and is removed for good."""
    return {
        "machine": {"name": "door", "kind": "entity", "title": "Door", "initial": "Closed"},
        "states": [{"name": "Closed"}, {"name": "Open"}, {"name": "Gone", "tags": ["terminal"]}],
        "events": [{"name": "Open"}, {"name": "Close"}, {"name": "Remove"}],
        "transitions": [
            {"source": "Closed", "event": "Open", "dest": "Open"},
            {"source": "Open", "event": "Close", "dest": "Closed"},
            {"source": "Closed", "event": "Remove", "dest": "Gone"},
        ],
    }


@pytest.fixture
def door_workflow() -> dict[str, Any]:
    """A minimal valid workflow definition: opening runs a step, and a failing step jams the door."""
    return {
        "machine": {"name": "door", "kind": "workflow", "initial": "Closed"},
        "states": [{"name": "Closed"}, {"name": "Open"}, {"name": "Jammed", "tags": ["terminal", "error"]}],
        "events": [{"name": "Open"}, {"name": "Close"}, {"name": "Jam", "failure": True}],
        "transitions": [
            {"source": "Closed", "event": "Open", "dest": "Open", "calls": "door.open", "on_error": "Jam"},
            {"source": "Closed", "event": "Jam", "dest": "Jammed", "calls": "door.jam"},
            {"source": "Open", "event": "Close", "dest": "Closed", "calls": "door.close"},
        ],
    }


@pytest.fixture
def write_definition(tmp_path: Path) -> Callable[..., Path]:
    """Write a document (or raw text) as ``<tmp_path>/<file>`` and return its path; ``file`` defaults to door.toml."""

    def write(doc: dict[str, Any] | str, file: str = "door.toml") -> Path:
        path = tmp_path / file
        path.write_text(doc if isinstance(doc, str) else dump_toml(doc), encoding="utf-8")
        return path

    return write
