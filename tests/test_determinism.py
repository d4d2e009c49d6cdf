"""Same inputs and seed, same database and same report; another seed changes only what the seed drives."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from snapshotfsm.demo import run_demo
from snapshotfsm.errors import StoreError


def _demo(path: Path, seed: int) -> list[object]:
    engine, outcomes = run_demo(str(path), seed=seed)
    engine.close()
    return list(outcomes)


def _dump(path: Path) -> list[str]:
    conn = sqlite3.connect(path)
    try:
        return list(conn.iterdump())
    finally:
        conn.close()


def test_same_seed_gives_the_same_database_byte_for_byte(tmp_path: Path) -> None:
    """Two demo runs with one seed leave identical files and identical reports."""
    first, second = tmp_path / "a.db", tmp_path / "b.db"
    assert _demo(first, 7) == _demo(second, 7)
    assert _dump(first) == _dump(second)
    assert first.read_bytes() == second.read_bytes()


def test_another_seed_changes_the_uuids_not_the_story(tmp_path: Path) -> None:
    """A different seed gives other uuids, but the same states, jobs and transitions."""
    first, second = tmp_path / "a.db", tmp_path / "b.db"
    report_a, report_b = _demo(first, 1), _demo(second, 2)
    assert [(o.scenario, o.snapshot_state, o.job) for o in report_a] == [  # type: ignore[attr-defined]
        (o.scenario, o.snapshot_state, o.job)
        for o in report_b  # type: ignore[attr-defined]
    ]
    query = "SELECT machine, entity_id, source, event, dest, kind FROM transition_log ORDER BY id"
    with sqlite3.connect(first) as a, sqlite3.connect(second) as b:
        assert a.execute(query).fetchall() == b.execute(query).fetchall()
        uuids = "SELECT uuid FROM snapshots ORDER BY id"
        assert a.execute(uuids).fetchall() != b.execute(uuids).fetchall()


def test_the_demo_refuses_to_overwrite_a_foreign_file(tmp_path: Path) -> None:
    """The demo recreates its database, but never deletes a file that is not a snapshotfsm database."""
    foreign = tmp_path / "notes.db"
    foreign.write_text("my notes, not a database\n")
    with pytest.raises(StoreError, match=r"notes\.db: not a SQLite database \(file is not a database\)"):
        run_demo(str(foreign))
    assert foreign.read_text() == "my notes, not a database\n"
