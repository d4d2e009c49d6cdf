"""The snapshotfsm package has no import cycle, read from the source with ``ast`` (no module is imported).

Every import statement is an edge: at module level, inside a function (a "function-local" import that only defers
the cycle) and under ``if TYPE_CHECKING:`` (a cycle that only the type checker sees is still tangled layering).
Only modules of the package are nodes; the standard library and third-party packages are left out. An edge goes:

- for ``import a.b.c``, to the module ``a.b.c`` (not to its parent packages, although Python runs their
  ``__init__`` first: otherwise every module would depend on the package root and everything would be one cycle);
- for ``from a.b import c``, to ``a.b.c`` when that is a module of the package, else to ``a.b`` (its
  ``__init__.py``, which defines or re-exports ``c``); relative imports are resolved against the importing module's
  package first;
- never from a module to itself.

So a submodule that takes a name from the package root (``from snapshotfsm import Engine``) depends on
``snapshotfsm/__init__.py``, which imports ``snapshotfsm.engine`` and everything below it: if the submodule is among
those, that is a cycle. A submodule imports from the module that defines the name, never from the root. Imports made
by name at run time (``importlib``, entry points) are not seen.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import NamedTuple

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "snapshotfsm"


class Site(NamedTuple):
    """One import statement that makes an edge: file (relative to the package's parent), line, and how it is nested."""

    path: str
    line: int
    nesting: str  # "", "function-local", "TYPE_CHECKING" or both

    def __str__(self) -> str:
        return f"{self.path}:{self.line}" + (f" ({self.nesting})" if self.nesting else "")


Graph = dict[str, dict[str, list[Site]]]  # module -> imported module -> the statements that import it


def _modules(package_dir: Path) -> dict[str, Path]:
    """Every module of the package by dotted name; a package's name stands for its ``__init__.py``."""
    modules = {}
    for path in sorted(package_dir.rglob("*.py")):
        parts = path.relative_to(package_dir.parent).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def _is_type_checking(test: ast.expr) -> bool:
    """Whether an ``if`` tests ``TYPE_CHECKING`` or ``typing.TYPE_CHECKING``."""
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _import_statements(tree: ast.Module) -> list[tuple[ast.Import | ast.ImportFrom, str]]:
    """Every import statement of a module with its nesting, wherever it is written."""
    found: list[tuple[ast.Import | ast.ImportFrom, str]] = []

    def visit(node: ast.AST, nesting: tuple[str, ...]) -> None:
        if isinstance(node, ast.Import | ast.ImportFrom):
            found.append((node, ", ".join(nesting)))
            return
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda) and "function-local" not in nesting:
            nesting = (*nesting, "function-local")
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for statement in node.body:
                visit(statement, nesting if "TYPE_CHECKING" in nesting else (*nesting, "TYPE_CHECKING"))
            for statement in node.orelse:
                visit(statement, nesting)
            return
        for child in ast.iter_child_nodes(node):
            visit(child, nesting)

    visit(tree, ())
    return found


def _within(name: str, modules: dict[str, Path]) -> str | None:
    """The longest leading part of a dotted name that is a module of the package, or None (stdlib, third party)."""
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        if (prefix := ".".join(parts[:end])) in modules:
            return prefix
    return None


def _targets(node: ast.Import | ast.ImportFrom, module: str, modules: dict[str, Path]) -> list[str]:
    """The modules of the package one import statement depends on."""
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
        return [target for name in names if (target := _within(name, modules)) is not None]
    base = node.module or ""
    if node.level:
        is_package = modules[module].name == "__init__.py"
        package = module.split(".") if is_package else module.split(".")[:-1]
        base = ".".join([*package[: len(package) - node.level + 1], *([base] if base else [])])
    targets = []
    for alias in node.names:
        if f"{base}.{alias.name}" in modules:
            targets.append(f"{base}.{alias.name}")
        elif (target := _within(base, modules)) is not None:
            targets.append(target)
    return targets


def import_graph(package_dir: Path) -> Graph:
    """The import graph of a package, read statically from its source files."""
    modules = _modules(package_dir)
    graph: Graph = {module: {} for module in modules}
    for module, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        relative = path.relative_to(package_dir.parent).as_posix()
        for node, nesting in _import_statements(tree):
            site = Site(relative, node.lineno, nesting)
            for target in _targets(node, module, modules):
                sites = graph[module].setdefault(target, []) if target != module else [site]
                if site not in sites:
                    sites.append(site)
    return graph


def _strongly_connected(graph: Graph) -> list[list[str]]:
    """Tarjan's strongly connected components of the graph, each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph[node]):
            if target not in index:
                connect(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            connect(node)
    return components


def _cycles_from(graph: Graph, members: set[str], path: list[str], found: list[list[str]]) -> None:
    """Every cycle that continues ``path`` within ``members`` and closes at its first module, the smallest."""
    for target in sorted(graph[path[-1]]):
        if target == path[0]:
            found.append(list(path))
        elif target in members and target > path[0] and target not in path:
            _cycles_from(graph, members, [*path, target], found)


def cycles(graph: Graph) -> list[list[str]]:
    """Every elementary import cycle, each starting at its smallest module, in order; the first module is not repeated.

    Cycles are enumerated within each strongly connected component of two or more modules, which is cheap at the
    size of a tangle a package can have.
    """
    found: list[list[str]] = []
    for component in _strongly_connected(graph):
        for start in component:
            _cycles_from(graph, set(component), [start], found)
    return sorted(found)


def report(graph: Graph, found: list[list[str]]) -> str:
    """The cycles as ``a -> b -> a``, each followed by the import statements that make its edges."""
    lines = [f"{len(found)} import cycle(s); to break one, remove every import listed under one of its edges:"]
    for cycle in found:
        lines.append(" -> ".join([*cycle, cycle[0]]))
        for source, target in zip(cycle, [*cycle[1:], cycle[0]], strict=True):
            lines.extend(f"    {site} imports {target}" for site in graph[source][target])
    return "\n".join(lines)


def test_the_package_has_no_import_cycle() -> None:
    """No module of snapshotfsm imports, through any chain, a module that imports it back."""
    graph = import_graph(PACKAGE)
    found = cycles(graph)
    if found:
        pytest.fail(report(graph, found), pytrace=False)


FAKE_PACKAGE = {
    "__init__.py": "from fake.errors import Oops\nfrom fake.api import call\n\nVERSION = 1\n",
    "errors.py": "from fake import VERSION\n\n\nclass Oops(Exception):\n    pass\n",
    "api.py": "import json\n\nimport attrs\n\nfrom fake.jobs import run\n\n\ndef call():\n    return run()\n",
    "jobs.py": "def run():\n    from . import api\n\n    return api\n",
    "cli.py": "from fake import call, sub\nfrom fake.sub import runner\n",
    "sub/__init__.py": "",
    "sub/runner.py": (
        "import typing\n\nif typing.TYPE_CHECKING:\n    from .runtime import Runtime\nelse:\n    Runtime = None\n"
    ),
    "sub/runtime.py": "from fake.sub.runner import Runtime as _\nimport fake.errors\n",
}


def test_cycles_are_found_through_local_type_checking_and_root_imports(tmp_path: Path) -> None:
    """A function-local import, a TYPE_CHECKING import and a name taken from the package root all close cycles."""
    for name, source in FAKE_PACKAGE.items():
        (tmp_path / "fake" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "fake" / name).write_text(source, encoding="utf-8")
    graph = import_graph(tmp_path / "fake")
    assert report(graph, cycles(graph)).splitlines() == [
        "3 import cycle(s); to break one, remove every import listed under one of its edges:",
        "fake -> fake.errors -> fake",
        "    fake/__init__.py:1 imports fake.errors",
        "    fake/errors.py:1 imports fake",
        "fake.api -> fake.jobs -> fake.api",
        "    fake/api.py:5 imports fake.jobs",
        "    fake/jobs.py:2 (function-local) imports fake.api",
        "fake.sub.runner -> fake.sub.runtime -> fake.sub.runner",
        "    fake/sub/runner.py:4 (TYPE_CHECKING) imports fake.sub.runtime",
        "    fake/sub/runtime.py:1 imports fake.sub.runner",
    ]
    assert graph["fake.cli"] == {
        "fake": [Site("fake/cli.py", 1, "")],
        "fake.sub": [Site("fake/cli.py", 1, "")],
        "fake.sub.runner": [Site("fake/cli.py", 2, "")],
    }
