"""Every ``spec §N.M`` the code cites resolves to a heading of the reference in ``docs/reference/``.

Users of the package never see the notes the model was built from; what a docstring cites must be in the
repository, under the same number.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
REFERENCE = ROOT / "docs" / "reference"
CITATION = re.compile(r"§\s?(\d+(?:\.\d+)*)")
HEADING = re.compile(r"^#+ §(\d+(?:\.\d+)*)\b", re.MULTILINE)
SOURCES = [*sorted((ROOT / "snapshotfsm").rglob("*.py")), *sorted((ROOT / "states").glob("*.toml"))]


def _headings() -> set[str]:
    found: set[str] = set()
    for page in REFERENCE.glob("*.md"):
        found.update(HEADING.findall(page.read_text(encoding="utf-8")))
    return found


def _citations(text: str) -> set[str]:
    return {number.rstrip(".") for number in CITATION.findall(text)}


def test_the_reference_has_both_pages():
    assert sorted(p.name for p in REFERENCE.glob("*.md")) == ["snapshot-operations.md", "take-path.md"]


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_cited_section_has_a_heading(source: Path):
    missing = sorted(_citations(source.read_text(encoding="utf-8")) - _headings())
    assert missing == [], f"{source.relative_to(ROOT)} cites sections the reference lacks: {missing}"


def test_a_missing_section_is_caught():
    """The check is not vacuous: a citation of a section nobody wrote is reported."""
    assert _citations("see spec §99.7 and §5.4") - _headings() == {"99.7"}


MODEL_LINE = re.compile(r"^In the model[^:]*:(.*?)(?:\n\n|\Z)", re.MULTILINE | re.DOTALL)
PATH_AND_NAMES = re.compile(r"`(snapshotfsm/[\w/]+\.py|states/\w+\.toml|tests/\w+\.py)`(?:\s*\(([^)]*)\))?")


def _model_references() -> list[tuple[str, str, str]]:
    """(page, path, name) for every file and name an "In the model" paragraph points at."""
    found = []
    for page in sorted(REFERENCE.glob("*.md")):
        for paragraph in MODEL_LINE.findall(page.read_text(encoding="utf-8")):
            for path, names in PATH_AND_NAMES.findall(paragraph):
                found.append((page.name, path, ""))
                found.extend((page.name, path, n.rsplit(".", 1)[-1]) for n in re.findall(r"`([\w.]+)`", names))
    return found


def test_the_model_lines_point_somewhere():
    assert len(_model_references()) > 100


@pytest.mark.parametrize(("page", "path", "name"), _model_references())
def test_every_file_and_name_the_reference_points_at_exists(page: str, path: str, name: str):
    """A file renamed or a function moved makes the reference's pointer stale: this names it."""
    source = ROOT / path
    assert source.exists(), f"{page} points at {path}, which does not exist"
    if name:
        assert re.search(rf"\b{re.escape(name)}\b", source.read_text(encoding="utf-8")), (
            f"{page} says {path} holds {name}, which it does not"
        )
