"""The README's Python examples type-check under ``mypy --strict`` and run as written.

The examples are the ```` ```python ```` fenced blocks of README.md, in order. They form one session: a later block
uses names an earlier one defined (``engine``, ``volume``, ...), so they are checked and run together.

- Type check: one ``mypy --strict`` run over a file holding every block at its README line (all other lines blank),
  so each error is reported as ``README.md:<line> (block <n>)``.
- Run: the blocks run in order, statement by statement, in one namespace, in an empty working directory. A block
  with a bare ``...`` statement anywhere (a placeholder for code the reader writes, as in the FaultPlan example) is
  type-checked but not run.
- A statement whose comment is ``# <Error>: <text>``, ``<Error>`` being an exception class of
  ``snapshotfsm.errors``, must raise exactly that class with a message starting with ``<text>``; comment-only lines
  right after it continue ``<text>`` (joined with single spaces).
- An expression statement whose whole comment is a Python literal (``engine.job_status(job.id)  # 'SUCCEEDED'``)
  must evaluate to that value.
"""

from __future__ import annotations

import ast
import io
import re
import subprocess
import sys
import tokenize
from pathlib import Path
from typing import Any, NamedTuple

import pytest

from snapshotfsm import Engine, errors

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"


class Block(NamedTuple):
    """One ```` ```python ```` block: its number (from 1), the README line of its first line, and its source."""

    number: int
    first_line: int
    source: str

    def where(self, line: int) -> str:
        """A README line of this block, as failures show it."""
        return f"README.md:{line} (block {self.number})"


def _python_blocks() -> list[Block]:
    """The README's Python blocks, in order."""
    text = README.read_text(encoding="utf-8")
    found = re.finditer(r"^```python[ \t]*\n(.*?)^```[ \t]*$", text, re.MULTILINE | re.DOTALL)
    blocks = [Block(n, text.count("\n", 0, m.start(1)) + 1, m.group(1)) for n, m in enumerate(found, start=1)]
    assert blocks, "README.md has no ```python block"
    return blocks


def _is_placeholder(block: Block) -> bool:
    """Whether the block has a bare ``...`` statement, so it is an outline and not a program."""
    return any(
        isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and node.value.value is Ellipsis
        for node in ast.walk(ast.parse(block.source))
    )


def _comments(block: Block) -> dict[int, str]:
    """Each comment of the block by README line, without its ``#`` and surrounding spaces."""
    tokens = tokenize.generate_tokens(io.StringIO(block.source).readline)
    return {
        block.first_line + token.start[0] - 1: token.string.removeprefix("#").strip()
        for token in tokens
        if token.type == tokenize.COMMENT
    }


class Expectation(NamedTuple):
    """What the README says a statement does: raise ``error`` with a message starting ``text``, or evaluate to
    ``value`` (``error`` is None)."""

    line: int
    error: type[BaseException] | None
    text: str
    value: object = None


def _expectation(statement: ast.stmt, comments: dict[int, str], source_lines: list[str]) -> Expectation | None:
    """The expectation written in the statement's comments, if any; ``source_lines`` are the README's lines."""
    last = statement.end_lineno or statement.lineno
    for line in range(statement.lineno, last + 1):
        comment = comments.get(line)
        if comment is None:
            continue
        marker = re.fullmatch(r"([A-Za-z_]\w*):\s*(.*)", comment)
        error = getattr(errors, marker.group(1), None) if marker else None
        if marker and isinstance(error, type) and issubclass(error, BaseException):
            parts = [marker.group(2)]
            after = line + 1
            while after in comments and source_lines[after - 1].lstrip().startswith("#"):
                parts.append(comments[after])
                after += 1
            return Expectation(line, error, " ".join(part for part in parts if part))
        if isinstance(statement, ast.Expr) and line == last:
            try:
                value = ast.literal_eval(comment)
            except (ValueError, SyntaxError):
                continue
            return Expectation(line, None, comment, value)
    return None


def _run(block: Block, statement: ast.stmt, namespace: dict[str, Any], expected: Expectation | None) -> None:
    """Run one top-level statement and check it against what the README says it does."""
    if isinstance(statement, ast.Expr) and expected is not None and expected.error is None:
        code = compile(ast.Expression(statement.value), str(README), "eval")
        value = eval(code, namespace)  # noqa: S307 - the README's own examples
        if value != expected.value:
            pytest.fail(
                f"{block.where(expected.line)}: {ast.unparse(statement)} is {value!r}; the README says {expected.text}",
                pytrace=False,
            )
        return
    code = compile(ast.Module([statement], type_ignores=[]), str(README), "exec")
    if expected is None:
        exec(code, namespace)  # noqa: S102 - the README's own examples
        return
    assert expected.error is not None
    name = expected.error.__name__
    try:
        exec(code, namespace)  # noqa: S102 - the README's own examples
    except Exception as raised:  # noqa: BLE001 - any other class is reported below
        if type(raised) is not expected.error:
            pytest.fail(
                f"{block.where(expected.line)} should raise {name}; it raised {type(raised).__name__}: {raised}",
                pytrace=False,
            )
        if not str(raised).startswith(expected.text):
            pytest.fail(
                f"{block.where(expected.line)} raised {name}: {raised}\nthe README says it starts: {expected.text}",
                pytrace=False,
            )
    else:
        pytest.fail(f"{block.where(expected.line)} should raise {name}; it ran without error", pytrace=False)


def test_the_examples_run_and_raise_where_the_readme_says(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every runnable block runs in order in one session; marked lines raise and evaluate to what their comments say."""
    monkeypatch.chdir(tmp_path)
    source_lines = README.read_text(encoding="utf-8").splitlines()
    namespace: dict[str, Any] = {"__name__": "readme"}
    try:
        for block in _python_blocks():
            if _is_placeholder(block):
                continue
            tree = ast.parse(block.source)
            ast.increment_lineno(tree, block.first_line - 1)
            comments = _comments(block)
            for statement in tree.body:
                _run(block, statement, namespace, _expectation(statement, comments, source_lines))
    finally:
        for value in namespace.values():
            if isinstance(value, Engine):
                value.close()


def test_the_examples_pass_mypy_strict(tmp_path: Path) -> None:
    """``mypy --strict`` finds no error in the blocks, each read after the blocks before it."""
    blocks = _python_blocks()
    lines = [""] * len(README.read_text(encoding="utf-8").splitlines())
    for block in blocks:
        for offset, line in enumerate(block.source.splitlines()):
            lines[block.first_line - 1 + offset] = line
    module = tmp_path / "readme_examples.py"
    module.write_text("\n".join(lines) + "\n", encoding="utf-8")
    command = [sys.executable, "-m", "mypy", "--strict", "--config-file", str(ROOT / "pyproject.toml")]
    command += ["--follow-imports=silent", "--cache-dir", str(tmp_path / "mypy_cache"), str(module)]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
    if result.returncode != 0:

        def in_readme(match: re.Match[str]) -> str:
            line = int(match.group(1))
            block = next(b for b in reversed(blocks) if b.first_line <= line)
            return f"{block.where(line)}:"

        output = result.stdout + result.stderr
        output = re.sub(rf"^{re.escape(str(module))}:(\d+):", in_readme, output, flags=re.MULTILINE)
        pytest.fail(f"mypy --strict on README.md's examples:\n{output}", pytrace=False)
