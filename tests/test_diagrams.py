"""Diagrams generated from the definitions (issue 2): files per format, styles a reader relies on, determinism."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from snapshotfsm import diagrams
from snapshotfsm.cli import main
from snapshotfsm.definitions import project_definitions

REPO = Path(__file__).resolve().parent.parent
HAS_DOT = shutil.which("dot") is not None


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every machine in every format, once for the module (rendering through dot takes a few seconds)."""
    out = tmp_path_factory.mktemp("diagrams")
    result = CliRunner().invoke(main, ["diagrams", "--out", str(out), "--format", "dot,mmd,svg,png"])
    assert result.exit_code == 0, result.output
    return out


def _edges(dot: str, source: str, dest: str) -> list[str]:
    """The attribute lists of the DOT edges from ``source`` to ``dest``."""
    return re.findall(rf"^\s*{re.escape(source)} -> {re.escape(dest)} \[(.*)\]$", dot, re.MULTILINE)


def test_every_machine_gets_every_format(rendered: Path) -> None:
    formats = ("dot", "mmd", "svg", "png") if HAS_DOT else ("dot", "mmd")
    expected = sorted(f"{name}.{fmt}" for name in project_definitions() for fmt in formats)
    assert sorted(p.name for p in rendered.iterdir()) == expected
    if HAS_DOT:
        assert (rendered / "volume.svg").read_text().lstrip().startswith("<?xml")
        assert (rendered / "volume.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_committed_diagrams_are_what_the_definitions_generate(rendered: Path) -> None:
    """diagrams/ is regenerated with ``snapshotfsm diagrams``; DOT and Mermaid must match byte for byte."""
    committed = REPO / "diagrams"
    stale = [
        f"{name}.{fmt}"
        for name in project_definitions()
        for fmt in ("dot", "mmd")
        if not (committed / f"{name}.{fmt}").is_file()
        or (committed / f"{name}.{fmt}").read_bytes() != (rendered / f"{name}.{fmt}").read_bytes()
    ]
    assert stale == [], "stale diagrams; run: snapshotfsm diagrams"


def test_output_is_byte_identical_on_a_second_run(tmp_path: Path) -> None:
    first = diagrams.write(project_definitions(), tmp_path / "a", ["dot", "mmd"])
    second = diagrams.write(project_definitions(), tmp_path / "b", ["dot", "mmd"])
    assert [p.read_bytes() for p in first.files] == [p.read_bytes() for p in second.files]


def test_error_edges_are_red_and_dashed(rendered: Path) -> None:
    """snapshot Creating -OperationFailed-> Error (spec §1.2) is an error edge; Creating -> CreatedOnPrimary is not."""
    dot = (rendered / "snapshot.dot").read_text()
    [failed] = _edges(dot, "Creating", "Error")
    assert "OperationFailed" in failed
    assert f'color="{diagrams.ERROR_COLOUR}"' in failed
    assert "style=dashed" in failed
    [succeeded] = _edges(dot, "Creating", "CreatedOnPrimary")
    assert "color" not in succeeded
    assert "dashed" not in succeeded


def test_a_workflow_step_failure_is_an_error_edge(rendered: Path) -> None:
    """take_snapshot's on_error rows (a failure event) are drawn apart and name the rollback step."""
    dot = (rendered / "take_snapshot.dot").read_text()
    [abort] = _edges(dot, "AwaitingPrimary", "TakeAborted")
    assert "AbortTake / primary.abort" in abort
    assert "style=dashed" in abort


def test_the_never_fired_row_is_grey_and_dotted(rendered: Path) -> None:
    """Spec §1.2 #11 (BackedUp -CopyingRequested-> Copying) is in CloudStack's table but never fired."""
    dot = (rendered / "snapshot.dot").read_text()
    [copying] = _edges(dot, "BackedUp", "Copying")
    assert f'color="{diagrams.NEVER_COLOUR}"' in copying
    assert "style=dotted" in copying
    assert "never fired by CloudStack" in dot


def test_terminal_transitional_and_error_states_are_distinguishable(rendered: Path) -> None:
    dot = (rendered / "snapshot.dot").read_text()
    assert re.search(r"^\s*Destroyed \[.*peripheries=2", dot, re.MULTILINE)
    assert re.search(r"^\s*Creating \[.*dashed", dot, re.MULTILINE)
    assert re.search(rf'^\s*Error \[.*color="{diagrams.ERROR_COLOUR}"', dot, re.MULTILINE)
    assert not re.search(r"^\s*Allocated \[.*(peripheries|dashed)", dot, re.MULTILINE)


def test_parallel_transitions_are_merged_into_one_labelled_edge(rendered: Path) -> None:
    """Volume Ready <- Snapshotting has OperationSucceeded (normal) and OperationFailed (error): two edges, not one."""
    dot = (rendered / "volume.dot").read_text()
    edges = _edges(dot, "Snapshotting", "Ready")
    assert len(edges) == 2
    assert sum("OperationFailed" in e for e in edges) == 1
    definition = project_definitions()["volume"]
    assert len(diagrams.edges(definition)) < len(definition.transitions)
    drawn = sum(len(e.labels) for e in diagrams.edges(definition))
    assert drawn == len(definition.transitions)


def test_every_diagram_has_a_legend(rendered: Path) -> None:
    for name in project_definitions():
        assert "Legend" in (rendered / f"{name}.dot").read_text()
        assert "Legend:" in (rendered / f"{name}.mmd").read_text()


def test_mermaid_marks_error_edges_and_state_classes(rendered: Path) -> None:
    mmd = (rendered / "snapshot.mmd").read_text()
    assert mmd.startswith("---\ntitle: snapshot")
    assert "    [*] --> Allocated\n" in mmd
    assert "    Creating --> Error: OperationFailed ✗ error\n" in mmd
    assert "    BackedUp --> Copying: CopyingRequested · never fired\n" in mmd
    assert "    class Error error\n" in mmd
    assert "    Destroyed --> [*]\n" in mmd


def test_without_dot_the_text_formats_are_written_with_a_note(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(diagrams.shutil, "which", lambda _: None)
    result = CliRunner().invoke(main, ["diagrams", "--out", str(tmp_path), "--format", "dot,svg"])
    assert result.exit_code == 0, result.output
    assert "note: no SVG written: install graphviz" in result.output
    assert "apt-get install graphviz" in result.output
    assert sorted({p.suffix for p in tmp_path.iterdir()}) == [".dot"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--format", "dot,jpeg"], "Error: --format: 'jpeg' is not a format; choose from dot, mmd, svg, png"),
        (["--format", ","], "Error: --format: no format given; choose from dot, mmd, svg, png"),
    ],
)
def test_a_bad_format_is_refused_and_nothing_is_written(tmp_path: Path, args: list[str], message: str) -> None:
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["diagrams", "--out", str(out), *args])
    assert result.exit_code == 1
    assert message in result.output
    assert not out.exists()


def test_an_out_path_that_is_a_file_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "file.txt"
    target.write_text("keep me")
    result = CliRunner().invoke(main, ["diagrams", "--out", str(target)])
    assert result.exit_code == 1
    assert f"Error: --out: {target} is a file, not a directory; nothing was written" in result.output
    assert target.read_text() == "keep me"


def test_a_broken_definition_is_reported_and_nothing_is_written(tmp_path: Path) -> None:
    states = tmp_path / "states"
    states.mkdir()
    (states / "door.toml").write_text('[machine]\nname = "door"\n')
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["diagrams", "--states", str(states), "--out", str(out)])
    assert result.exit_code == 1
    assert result.output.startswith("Error: ")
    assert "door" in result.output
    assert not out.exists()


def test_the_default_output_is_diagrams_of_the_current_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Never the source checkout: run from anywhere, it writes ./diagrams there and says where, absolutely."""
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["diagrams", "--format", "dot"])
    assert result.exit_code == 0, result.output
    assert result.output == f"wrote {len(project_definitions())} files for 12 machines to {tmp_path / 'diagrams'}\n"
    assert min(p.name for p in (tmp_path / "diagrams").iterdir()) == "async_job.dot"


def test_an_out_path_below_a_regular_file_is_refused(tmp_path: Path) -> None:
    """``--out somefile/sub``: the file is named, it is left as it was, and nothing is created."""
    somefile = tmp_path / "somefile"
    somefile.write_text("keep me")
    result = CliRunner().invoke(main, ["diagrams", "--out", str(somefile / "sub"), "--format", "dot"])
    assert result.exit_code == 1
    assert result.output == (
        f"Error: --out: {somefile} is a file, not a directory (so {somefile / 'sub'} cannot be a directory); "
        "nothing was written\n"
    )
    assert somefile.read_text() == "keep me"


def test_an_out_path_where_nothing_can_be_created_is_refused() -> None:
    """``/proc`` takes no new directory (even for root, as CI runs): one line, exit 1, no traceback."""
    result = CliRunner().invoke(main, ["diagrams", "--out", "/proc/snapshotfsm-x", "--format", "dot"])
    assert result.exit_code == 1
    assert result.output.startswith("Error: --out: cannot write into /proc/snapshotfsm-x (")
    assert result.output.endswith("); nothing was written\n")
    assert len(result.output.splitlines()) == 1
    assert not Path("/proc/snapshotfsm-x").exists()


def test_only_rendered_formats_without_dot_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``--format png`` without dot has nothing to write: an error naming the fix, not "wrote 0 files"."""
    monkeypatch.setattr(diagrams.shutil, "which", lambda _: None)
    result = CliRunner().invoke(main, ["diagrams", "--out", str(tmp_path / "d"), "--format", "png"])
    assert result.exit_code == 1
    assert result.output == (
        "Error: --format png: needs graphviz's dot, which is not installed; install graphviz for SVG/PNG diagrams "
        "(Debian/Ubuntu: apt-get install graphviz)\n"
    )
    assert not (tmp_path / "d").exists()


def test_unreachable_states_are_marked_in_the_drawing_and_the_legend(rendered: Path) -> None:
    """volume's Destroying (spec §2.3: no transition enters it) is grey, dotted and labelled; the legend says why."""
    dot = (rendered / "volume.dot").read_text()
    [node] = re.findall(r"^\s*Destroying \[(.*)\]$", dot, re.MULTILINE)
    assert 'label="Destroying\\n(unreachable)"' in node
    assert "dotted" in node
    assert "no transition reaches it from the initial state" in dot
    assert "unreachable" not in (rendered / "take_snapshot.dot").read_text()
    mmd = (rendered / "volume.mmd").read_text()
    assert "    class Destroying,NotUploaded,UploadInProgress,UploadError,UploadAbandoned unreachable\n" in mmd


def test_a_state_has_one_self_loop_with_every_label(rendered: Path) -> None:
    """Destroy's success and failure loops are one loop above it, the failure in red: no labels over each other."""
    dot = (rendered / "volume.dot").read_text()
    [loop] = _edges(dot, "Destroy", "Destroy")
    assert "OperationSucceeded (U)" in loop
    assert f'<FONT COLOR="{diagrams.ERROR_COLOUR}">OperationFailed (U) ✗</FONT>' in loop
    assert "tailport=n" in loop


def test_a_row_with_several_sources_is_drawn_from_each(rendered: Path) -> None:
    """take_snapshot writes Unwind once for six sources: six error edges into Unwound, each with the rollback step."""
    dot = (rendered / "take_snapshot.dot").read_text()
    row = next(t for t in project_definitions()["take_snapshot"].transitions if t.event == "Unwind")
    sources = [t.source for t in project_definitions()["take_snapshot"].transitions if t.number == row.number]
    assert len(sources) == 6
    for source in sources:
        [edge] = _edges(dot, source, "Unwound")
        assert "Unwind / take.unwind" in edge
        assert "style=dashed" in edge
