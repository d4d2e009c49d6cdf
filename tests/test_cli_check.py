"""``snapshotfsm check``: counts and findings of a directory of definitions; a broken one is "Error: ...", exit 1."""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from snapshotfsm.cli import main
from snapshotfsm.definitions import default_states_dir, load_directory


def _check(*args: str) -> Result:
    return CliRunner().invoke(main, ["check", *args])


def _table(output: str) -> dict[str, tuple[str, ...]]:
    """The rows of the counts table: machine -> (kind, states, events, transitions, rows, findings)."""
    rows = {}
    for line in output.splitlines():
        cells = [c.strip() for c in re.split(r"[│┃]", line)[1:-1]]
        if len(cells) == 8 and cells[2].isdigit():
            rows[cells[0]] = tuple(cells[1:])
    return rows


@pytest.fixture(scope="module")
def result() -> Result:
    """One run of ``snapshotfsm check`` on the project's definitions, shared by the tests that read it."""
    return _check()


class TestCheckProjectDefinitions:
    """``check`` with no argument reads the project's states/."""

    def test_exits_zero(self, result: Result) -> None:
        """Findings are warnings: the project's definitions are valid."""
        assert result.exit_code == 0, result.output

    def test_entity_machines_with_the_spec_counts(self, result: Result) -> None:
        """The five entity machines, with the counts of spec §1.2, §2.3, §3, §4.1 and §4.3: one row per transition."""
        rows = _table(result.output)
        assert {name: row[:5] for name, row in rows.items() if row[0] == "entity"} == {
            "async_job": ("entity", "4", "3", "3", "3"),
            "snapshot": ("entity", "10", "8", "18", "18"),
            "snapshot_store_ref": ("entity", "12", "16", "26", "26"),
            "vm_work_job": ("entity", "4", "4", "5", "5"),
            "volume": ("entity", "22", "24", "67", "67"),
        }

    def test_workflow_transitions_count_pairs_and_rows_count_rows(self, result: Result) -> None:
        """A row with a list of sources counts as one transition per source in "transitions", as one in "rows"."""
        rows = _table(result.output)
        assert {name: row[:5] for name, row in rows.items() if row[0] == "workflow"} == {
            "backup_task": ("workflow", "9", "12", "20", "14"),  # 2 rows hardened only
            "copy_snapshot": ("workflow", "3", "6", "7", "6"),
            "copy_snapshot_job": ("workflow", "4", "3", "4", "3"),
            "delete_snapshot": ("workflow", "5", "5", "6", "5"),
            "retention": ("workflow", "4", "4", "5", "4"),
            "storage_gc": ("workflow", "3", "3", "3", "3"),
            "take_snapshot": ("workflow", "29", "33", "52", "33"),
        }

    def test_every_machine_of_states_is_listed(self, result: Result) -> None:
        """One row per definition file, entity and workflow alike, and the summary line counts them."""
        definitions = load_directory(default_states_dir())
        assert sorted(_table(result.output)) == sorted(definitions)
        findings = sum(len(d.findings()) for d in definitions.values())
        assert result.output.splitlines()[-1] == f"{len(definitions)} machines valid, {findings} warnings"

    def test_says_which_warnings_are_expected_and_what_a_row_reference_means(self, result: Result) -> None:
        """All 27 warnings are on CloudStack's own tables; '(#11)' is explained with the row it names."""
        text = " ".join(result.output.split())
        assert (
            "note: the 27 warnings on snapshot, snapshot_store_ref, volume are expected: these entity machines are "
            "CloudStack's own state tables, copied verbatim (spec §1.2, §2.3, §3)"
        ) in text
        assert "snapshot's #11 is spec §1.2 row 11, BackedUp -CopyingRequested-> Copying" in text

    def test_snapshot_findings(self, result: Result) -> None:
        """Hidden unreachable, Copying only through never-fired #11, BackedupToSecondary unused (spec §1.2 notes)."""
        warnings = [line for line in result.output.splitlines() if line.startswith("warning: snapshot: ")]
        assert warnings == [
            "warning: snapshot: state 'Hidden' cannot be reached from 'Allocated'",
            "warning: snapshot: state 'Copying' can be reached only through transitions that are never fired (#11)",
            "warning: snapshot: state 'Hidden' has no exit to another state and is not tagged terminal",
            "warning: snapshot: event 'BackedupToSecondary' is declared but no transition uses it",
        ]
        assert _table(result.output)["snapshot"][6] == "4"

    def test_volume_findings(self, result: Result) -> None:
        """CopySucceeded and CopyFailed appear in no transition (spec §2.2); Destroying is never entered."""
        output = result.output
        assert "warning: volume: event 'CopySucceeded' is declared but no transition uses it" in output
        assert "warning: volume: event 'CopyFailed' is declared but no transition uses it" in output
        assert "warning: volume: state 'Destroying' cannot be reached from 'Allocated'" in output


class TestCheckErrors:
    """A broken definition or a bad path: "Error: ..." on stderr, exit code 1."""

    def test_broken_definition(
        self, door: dict[str, Any], write_definition: Callable[..., Path], tmp_path: Path
    ) -> None:
        """The message names the file, the machine, the key and the problem."""
        door["transitions"][0]["dest"] = "Opn"
        path = write_definition(door)
        result = _check(str(tmp_path))
        assert result.exit_code == 1
        assert result.stderr == (
            f"Error: {path}: machine 'door', transition 1: dest: 'Opn' is not a state (did you mean 'Open'?)\n"
        )
        assert result.stdout == ""

    def test_valid_directory_of_ones_own(
        self, door: dict[str, Any], write_definition: Callable[..., Path], tmp_path: Path
    ) -> None:
        """A plugin author's directory is checked the same way."""
        write_definition(door)
        result = _check(str(tmp_path))
        assert result.exit_code == 0, result.output
        assert _table(result.output) == {"door": ("entity", "3", "3", "3", "3", "-", "0")}
        assert result.output.splitlines()[-1] == "1 machines valid, 0 warnings"

    def test_missing_path(self, tmp_path: Path) -> None:
        """A path that does not exist is named, with what is wrong with it."""
        missing = tmp_path / "no-such-dir"
        result = _check(str(missing))
        assert result.exit_code == 1
        assert result.stderr == (
            f"Error: {missing}: path: does not exist (give a directory of *.toml or one .toml file)\n"
        )

    def test_one_file(self, door: dict[str, Any], write_definition: Callable[..., Path]) -> None:
        """A single .toml is checked as it is, not refused as "not a directory"; no note for one's own machine."""
        path = write_definition(door)
        result = _check(str(path))
        assert result.exit_code == 0, result.output
        assert _table(result.output) == {"door": ("entity", "3", "3", "3", "3", "-", "0")}
        assert "note:" not in result.output

    def test_the_projects_snapshot_file(self) -> None:
        """``check states/snapshot.toml``: its four warnings, said to be expected."""
        result = _check(str(default_states_dir() / "snapshot.toml"))
        assert result.exit_code == 0, result.output
        assert result.output.splitlines()[-1] == "1 machines valid, 4 warnings"
        assert "note: the 4 warnings on snapshot are expected" in result.output

    def test_a_file_that_is_not_utf8(self, tmp_path: Path) -> None:
        """A Latin-1 file: the file, the byte and its offset, and the fix; exit 1, no traceback."""
        path = tmp_path / "door.toml"
        path.write_bytes(b'[machine]\nname = "caf\xe9"\n')
        for target in (path, tmp_path):
            result = _check(str(target))
            assert result.exit_code == 1
            assert result.stderr == (
                f"Error: {path}: file: is not UTF-8 text (byte 0xe9 at offset 21); save it as UTF-8\n"
            )

    def test_a_file_that_is_not_a_definition(self, tmp_path: Path) -> None:
        path = tmp_path / "notes.txt"
        path.write_text("hello")
        result = _check(str(path))
        assert result.exit_code == 1
        assert result.stderr == f"Error: {path}: path: is neither a directory nor a .toml definition file\n"

    def test_directory_without_definitions(self, tmp_path: Path) -> None:
        """An empty directory is an error, not an empty report."""
        result = _check(str(tmp_path))
        assert result.exit_code == 1
        assert result.stderr == f"Error: {tmp_path}: directory: holds no *.toml definitions\n"


class TestCheckSteps:
    """Every ``calls`` must name a registered step: a misspelt one is an error of ``check``, not of the first run."""

    @pytest.fixture
    def states(self, tmp_path: Path) -> Path:
        """A copy of the project's states/, to misspell a step in."""
        return Path(shutil.copytree(default_states_dir(), tmp_path / "states"))

    @staticmethod
    def _misspell(path: Path, right: str, wrong: str) -> None:
        text = path.read_text(encoding="utf-8")
        assert text.count(f'calls = "{right}"') == 1
        path.write_text(text.replace(f'calls = "{right}"', f'calls = "{wrong}"'), encoding="utf-8")

    def test_the_project_calls_only_registered_steps(self, states: Path) -> None:
        """The project's own definitions pass: every ``calls`` resolves."""
        result = _check(str(states))
        assert result.exit_code == 0, result.output
        assert result.stderr == ""

    def test_a_misspelt_step(self, states: Path) -> None:
        """File, machine, row and the nearest step are named; exit 1 and nothing on stdout."""
        path = states / "take_snapshot.toml"
        self._misspell(path, "api.allocate", "api.alocate")
        result = _check(str(states))
        assert result.exit_code == 1
        assert result.stderr == (
            f"Error: {path}: machine 'take_snapshot', transition 1: calls: 'api.alocate' is not a step "
            "(did you mean 'api.allocate'?)\n"
        )
        assert result.stdout == ""

    def test_every_misspelt_step_is_reported(self, states: Path) -> None:
        """One "Error:" line per row with an unknown step, a row listing several sources once, in machine order."""
        take = states / "take_snapshot.toml"
        self._misspell(take, "take.unwind", "take.unwnd")
        retention = states / "retention.toml"
        self._misspell(retention, "retention.finish", "xyzzy")
        result = _check(str(states))
        assert result.exit_code == 1
        assert result.stderr.splitlines() == [
            f"Error: {retention}: machine 'retention', transition 2: calls: 'xyzzy' is not a step",
            (
                f"Error: {take}: machine 'take_snapshot', transition 23: calls: 'take.unwnd' is not a step "
                "(did you mean 'take.unwind'?)"
            ),
        ]
