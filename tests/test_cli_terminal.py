"""What a user sees in a terminal: the demo and ``history`` at 80 and 200 columns, why things failed, clear errors.

Every outcome's explanation and every state name must be there whole at both widths: a narrow terminal gets a
layout that wraps between words (one block per scenario, a four-column history), a wide one the full tables.
"""

from __future__ import annotations

import fcntl
import re
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from snapshotfsm import Engine
from snapshotfsm.cli import main
from snapshotfsm.demo import Outcome, run_demo
from snapshotfsm.store.records import Snapshot

WIDTHS = (80, 200)
BOX = "│┃"


def _invoke(args: list[str], width: int) -> Result:
    return CliRunner().invoke(main, args, env={"COLUMNS": str(width)})


def _words(text: str) -> str:
    """The text with box-drawing characters and every run of whitespace made one space."""
    return " ".join(re.sub(rf"[{BOX}━─┏┓┗┛┡┩╇┳┻]", " ", text).split())


def _column(output: str, index: int) -> str:
    """The words of one column of a table, top to bottom, as one string (a wrapped cell joins up again)."""
    cells = []
    for line in output.splitlines():
        parts = re.split(rf"[{BOX}]", line)
        if len(parts) > index:
            cells.append(parts[index])
    return " ".join(" ".join(cells).split())


@pytest.fixture(scope="module")
def demo_db(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Outcome]]:
    """A demo database and the outcomes it printed, built once for the module."""
    db = tmp_path_factory.mktemp("demo") / "demo.db"
    engine, outcomes = run_demo(str(db))
    engine.close()
    return db, outcomes


@pytest.fixture(scope="module")
def demo_output(tmp_path_factory: pytest.TempPathFactory) -> dict[int, tuple[Result, list[Outcome]]]:
    """``snapshotfsm demo`` at each width, and the outcomes the library gives for the same run."""
    found = {}
    for width in WIDTHS:
        db = tmp_path_factory.mktemp(f"demo{width}") / "demo.db"
        result = _invoke(["demo", "--db", str(db)], width)
        engine, outcomes = run_demo(":memory:")
        engine.close()
        found[width] = (result, outcomes)
    return found


class TestDemoFitsTheTerminal:
    @pytest.mark.parametrize("width", WIDTHS)
    def test_no_line_is_wider_than_the_terminal(
        self, demo_output: dict[int, tuple[Result, list[Outcome]]], width: int
    ) -> None:
        result, _ = demo_output[width]
        assert result.exit_code == 0, result.output
        too_wide = [
            line for line in result.output.splitlines() if len(line.rstrip()) > width and "snapshotfsm " not in line
        ]
        assert too_wide == []

    @pytest.mark.parametrize("width", WIDTHS)
    def test_every_explanation_and_state_is_there_whole(
        self, demo_output: dict[int, tuple[Result, list[Outcome]]], width: int
    ) -> None:
        """Each scenario's "what happened" and its state, unbroken (a wrapped line joins up with single spaces)."""
        result, outcomes = demo_output[width]
        text = _column(result.output, 7) if width == 200 else _words(result.output)
        for o in outcomes:
            assert o.note in text, o.note
        states = _column(result.output, 4) if width == 200 else _words(result.output)
        for o in outcomes:
            assert o.snapshot_state in states

    def test_wide_terminals_get_the_table(self, demo_output: dict[int, tuple[Result, list[Outcome]]]) -> None:
        result, _ = demo_output[200]
        assert "┃ scenario " in result.output
        assert "┃ what happened" in result.output

    def test_narrow_terminals_get_a_block_per_scenario(
        self, demo_output: dict[int, tuple[Result, list[Outcome]]]
    ) -> None:
        result, _ = demo_output[80]
        lines = result.output.splitlines()
        assert "attached, Ceph RBD · snapshot 5 · Error (removed)" in lines
        assert "  job FAILED 530 · Default strategy · pool ceph (RBD)" in lines

    def test_the_closing_hints_name_a_failed_snapshot_and_the_absolute_diagrams_directory(
        self, demo_output: dict[int, tuple[Result, list[Outcome]]]
    ) -> None:
        result, _ = demo_output[80]
        text = _words(result.output)
        assert re.search(r"why one failed: snapshotfsm history --db \S+demo.db --snapshot 5", text)
        assert f"state diagrams: snapshotfsm diagrams (writes {Path.cwd() / 'diagrams'})" in text


class TestDemoLock:
    def test_a_second_demo_on_the_same_database_is_refused(self, tmp_path: Path) -> None:
        """While one demo holds the lock, another changes nothing and exits 1 with the reason."""
        db = tmp_path / "demo.db"
        db.write_bytes(b"")
        with (tmp_path / "demo.db.lock").open("a") as held:
            fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
            result = _invoke(["demo", "--db", str(db)], 80)
        assert result.exit_code == 1
        assert result.output == (
            f"Error: {db}: another snapshotfsm demo is running on this database (it holds {db}.lock); "
            "nothing was changed\n"
        )
        assert db.read_bytes() == b""

    def test_the_lock_is_released_when_the_demo_ends(self, tmp_path: Path) -> None:
        db = tmp_path / "demo.db"
        engine, _ = run_demo(str(db))
        engine.close()
        with (tmp_path / "demo.db.lock").open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)  # would raise BlockingIOError if still held


class TestHistoryFitsTheTerminal:
    @pytest.mark.parametrize("width", WIDTHS)
    def test_a_failed_snapshots_story_says_why(self, demo_db: tuple[Path, list[Outcome]], width: int) -> None:
        """The Ceph snapshot: its take job, work job, refs, volume and usage, and the cause on its Unwind row."""
        db, _ = demo_db
        result = _invoke(["history", "--db", str(db), "--snapshot", "5"], width)
        assert result.exit_code == 0, result.output
        assert all(len(line.rstrip()) <= width for line in result.output.splitlines())
        text = _words(result.output)
        why = _column(result.output, 11) if width == 200 else _column(result.output, 3)
        assert "CloudRuntimeException: backup copy failed (demo fault) (API error 530); step backup.answered" in why
        for name in ("take_snapshot", "async_job", "vm_work_job", "snapshot_store_ref", "volume", "usage_event"):
            assert name in text
        for state in ("Allocated", "Creating", "CreatedOnPrimary", "BackingUp", "Error", "Snapshotting", "Ready"):
            assert re.search(rf"(?<![A-Za-z]){state}(?![A-Za-z])", result.output), state
        assert "SnapshotObject.deleteIfNotReady" in result.output
        assert "SNAPSHOT.ON_PRIMARY" in result.output

    def test_the_whole_run_at_100_columns_keeps_the_time_whole(self, demo_db: tuple[Path, list[Outcome]]) -> None:
        db, _ = demo_db
        result = _invoke(["history", "--db", str(db)], 100)
        assert result.exit_code == 0
        assert len(re.findall(r"\b\d\d:\d\d:\d\d\.\d\d\d\b", result.output)) == 656  # every row's time, whole
        assert all(len(line.rstrip()) <= 100 for line in result.output.splitlines())

    def test_only_snapshot_keeps_the_old_view(self, demo_db: tuple[Path, list[Outcome]]) -> None:
        db, _ = demo_db
        result = _invoke(["history", "--db", str(db), "--snapshot", "5", "--only-snapshot"], 200)
        assert result.exit_code == 0
        assert "transition log of" in result.output
        assert "(6 rows)" in result.output
        assert "snapshot_store_ref" not in result.output

    def test_history_only_reads(self, demo_db: tuple[Path, list[Outcome]]) -> None:
        """The file's bytes are as they were, and no -wal or -shm file is left beside it."""
        db, _ = demo_db
        before = db.read_bytes()
        assert _invoke(["history", "--db", str(db)], 80).exit_code == 0
        assert db.read_bytes() == before
        assert not Path(f"{db}-wal").exists()
        assert not Path(f"{db}-shm").exists()


class TestHistoryMistakes:
    @pytest.mark.parametrize(
        ("args", "message"),
        [
            (["--snapshot", "999"], "no snapshot with id 999 in {db}; its snapshot ids run from 1 to 17"),
            (["--volume", "999"], "no volume with id 999 in {db}; its volume ids run from 1 to 9"),
            (["--job", "999"], "no job with id 999 in {db}; its job ids run from 1 to 34"),
            (
                ["--machine", "snapshots"],
                (
                    "no machine named 'snapshots' (did you mean 'snapshot'?); machines: async_job, backup_task, "
                    "copy_snapshot, copy_snapshot_job, delete_snapshot, retention, snapshot, snapshot_store_ref, "
                    "storage_gc, take_snapshot, vm_work_job, volume"
                ),
            ),
            (["--machine", "snapshot", "--entity", "999"], "no snapshot with id 999 in the transition log of {db}"),
            (["--entity", "3"], "--entity needs --machine, the machine the id belongs to (e.g. --machine volume)"),
            (["--only-snapshot"], "--only-snapshot needs --snapshot ID"),
        ],
    )
    def test_is_an_error_not_an_empty_table(
        self, demo_db: tuple[Path, list[Outcome]], args: list[str], message: str
    ) -> None:
        db, _ = demo_db
        result = _invoke(["history", "--db", str(db), *args], 80)
        assert result.exit_code == 1
        assert result.output == f"Error: {message.format(db=db)}\n"


class TestEngineFailures:
    def test_the_cause_of_a_failed_snapshot(self, demo_db: tuple[Path, list[Outcome]]) -> None:
        """``Engine.failures``: the exception, message, step, the API code its job answered with, its log row."""
        db, _ = demo_db
        engine = Engine.open(db)
        [cause] = engine.failures(snapshot=5)
        assert (cause.exception, cause.failure.message, cause.failure.step, cause.code) == (
            "CloudRuntimeException",
            "backup copy failed (demo fault)",
            "backup.answered",
            530,
        )
        assert cause.seq is not None
        row = next(r for r in engine.story(5) if r.seq == cause.seq)
        assert row.causes == (cause,)
        assert [c.failure.step for c in engine.failures()] == ["backup.answered", "take.orchestrate"]
        assert engine.failures(snapshot=2) == []
        assert engine.store.count(Snapshot) == 17
        engine.close()
