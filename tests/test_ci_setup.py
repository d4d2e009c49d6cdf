""".ci/setup on a machine we control: stub programs on a PATH that holds only what the script may use.

A failed graphviz install shows apt's own words and exits non-zero; pip runs again only when pyproject.toml changed.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TOOLS = ("bash", "cat", "cut", "dirname", "id", "mktemp", "rm", "sed", "sha256sum")


def _stub(directory: Path, name: str, body: str) -> None:
    path = directory / name
    path.write_text("#!/bin/bash\n" + body + "\n")
    path.chmod(path.stat().st_mode | stat.S_IEXEC)


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    """A checkout holding .ci/setup and pyproject.toml, with a stub .venv whose pip records each call."""
    (tmp_path / ".ci").mkdir()
    shutil.copy2(ROOT / ".ci" / "setup", tmp_path / ".ci" / "setup")
    shutil.copy2(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    (tmp_path / ".venv" / "bin").mkdir(parents=True)
    _stub(tmp_path / ".venv" / "bin", "python", f'[ "$1" = -m ] && echo pip >> "{tmp_path}/pip-calls"; exit 0')
    return tmp_path


def _path(tmp_path: Path, *, dot: bool, apt: str | None) -> str:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for tool in TOOLS:
        found = shutil.which(tool)
        assert found is not None, tool
        if not (bin_dir / tool).exists():
            (bin_dir / tool).symlink_to(found)
    if dot:
        _stub(bin_dir, "dot", "exit 0")
    if apt is not None:
        _stub(bin_dir, "apt-get", apt)
    return str(bin_dir)


def _setup(checkout: Path, path: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(checkout / ".ci" / "setup")],
        env={**os.environ, "PATH": path},
        capture_output=True,
        text=True,
        check=False,
    )


def test_a_failed_graphviz_install_says_why_and_fails(checkout: Path) -> None:
    apt = 'echo "E: Unable to locate package graphviz" >&2; exit 100'
    result = _setup(checkout, _path(checkout, dot=False, apt=apt))
    assert result.returncode == 1
    assert "setup: error: graphviz's dot is missing and could not be installed." in result.stderr
    assert "  E: Unable to locate package graphviz" in result.stderr
    assert not (checkout / "pip-calls").exists()


def test_pip_runs_again_only_when_pyproject_changes(checkout: Path) -> None:
    path = _path(checkout, dot=True, apt=None)
    for _ in range(2):
        assert _setup(checkout, path).returncode == 0
    assert (checkout / "pip-calls").read_text().splitlines() == ["pip"]
    with (checkout / "pyproject.toml").open("a") as pyproject:
        pyproject.write("\n# changed\n")
    assert _setup(checkout, path).returncode == 0
    assert (checkout / "pip-calls").read_text().splitlines() == ["pip", "pip"]
