"""Hypothesis profiles for the whole suite, the invariants after every scenario, and small definitions.

Every test that builds an engine is judged at its end: each world it built is quiesced and every invariant
evaluated (``snapshotfsm.testing.invariants``). The test declares what it expects to break with
``@pytest.mark.violates("invariant", ..., params=[...], tests=[...])`` (only for those parametrize ids, or for those
test functions of a class that inherits them, such as the contract suites); under the
``cloudstack`` profile those are upstream's behaviour, or rows the test wrote by hand. Anything else fails the test,
and so does a declared violation that does not happen. Property tests (Hypothesis) are judged inside their examples
instead: their examples change from run to run. ``SNAPSHOTFSM_RECORD_VIOLATIONS=<file>`` writes what each test
breaks to that file (JSON lines) instead of judging.

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
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

from snapshotfsm.testing.invariants import judge, open_worlds, tracking_engines

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


# --- the invariants after every scenario ---------------------------------------------------------------------------


def _declared(item: pytest.Item) -> set[str]:
    """The invariants this test (this parametrize id) declares it breaks."""
    callspec = getattr(item, "callspec", None)
    case = callspec.id if callspec is not None else None
    names: set[str] = set()
    function = getattr(item, "originalname", item.name)
    for mark in item.iter_markers("violates"):
        params, tests = mark.kwargs.get("params"), mark.kwargs.get("tests")
        if (params is None or case in params) and (tests is None or function in tests):
            names.update(mark.args)
    return names


def _is_property_test(item: pytest.Item) -> bool:
    function = getattr(item, "function", None)
    return bool(getattr(function, "is_hypothesis_test", False)) or "hypothesis.stateful" in repr(
        getattr(item, "cls", None).__mro__ if getattr(item, "cls", None) else ()
    )


@pytest.fixture(autouse=True)
def invariants_hold(request: pytest.FixtureRequest) -> Iterator[None]:
    """Quiesce every world the test built and judge it: only the violations it declares may happen, and must."""
    with tracking_engines() as built:
        yield
    if _is_property_test(request.node) or not built:
        return
    found = sorted({v.invariant for world in open_worlds(built) for v in judge(world)})
    record = os.environ.get("SNAPSHOTFSM_RECORD_VIOLATIONS")
    if record:
        with Path(record).open("a", encoding="utf-8") as out:
            out.write(json.dumps({"test": request.node.nodeid, "violations": found}) + "\n")
        return
    declared = sorted(_declared(request.node))
    assert found == declared, (
        f"invariants broken: {found}, declared: {declared} "
        f"(unexpected: {sorted(set(found) - set(declared))}, missing: {sorted(set(declared) - set(found))})"
    )
