"""Machine-driven columns are compared and written only through the names of ``snapshotfsm/names.py`` (style.md item 1).

The columns in scope are the ones a machine of ``states/`` drives: ``snapshots.status``, ``volumes.state``,
``snapshot_store_ref.state``, ``async_job.job_status`` (an ordinal), ``vm_work_job.state`` and ``workflow.state``
(every workflow machine). Each module of the package is read with ``ast`` (nothing is imported) and these are offences:

- a comparison (``==``, ``!=``, ``in``, ``not in``, ``is``, a ``match`` case) with a string literal, or a tuple, list
  or set of them: flagged when the literal is a state or event name of an in-scope machine, or, when the other side
  is known to be a state column, whatever the literal (a name the machine lacks is a bug too);
- an integer compared with ``job_status``;
- a literal passed as the event of a transition call (``Store.transit``, ``store_ref_event``, ``snapshot_event``,
  ``volume_transit``, and every function of the package with a parameter named ``event``) or as the state of
  ``write_state_directly``;
- a literal state column value in a record constructor (``Snapshot(status=...)``, ``Workflow(state=...)``), a record
  class's default, ``update``/``evolve`` keywords, a ``{"state": ...}`` entry, or a parameter default that flows into
  one of those or into a transition call;
- SQL text comparing ``status``/``state``/``job_status`` with a quoted literal (or an integer, for ``job_status``),
  and a literal bound to such a comparison's ``?`` through the parameters tuple;
- a tuple, list or set made only of state or event names (a module constant such as ``CHAIN_DELETABLE``).

How a column is told from an out-of-scope one: a literal counts only when it is a state or event name of an in-scope
machine (so ``mshost.state = 'Up'`` or ``storage_pool.status = 'Up'`` never count), unless the context shows which
column it is. Context is the record class of the receiver, found without importing: a parameter's annotation, an
assignment from a record constructor or from a store call naming the class (``store.first(VmInstance, ...)``), a loop
over such a call; and, in SQL, the table of the ``FROM``/``UPDATE``/``JOIN`` clause around the comparison or else the
record class passed to ``find``/``first``/``count``. A receiver of an out-of-scope class (``vm.state`` of a
``VmInstance``, a ``VmSnapshot`` query) is left alone; a receiver of a machine's class is held to that machine. What
no context settles is listed in :data:`ALLOWED`, with the reason.
"""

from __future__ import annotations

import ast
import re
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import pytest

from snapshotfsm.definitions import project_definitions
from snapshotfsm.store.records import ALL_RECORDS, Workflow

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "snapshotfsm"

EXEMPT = frozenset({"snapshotfsm/names.py", "snapshotfsm/definitions.py"})
"""Where names are declared (``names.py``) and loaded from the TOML (``definitions.py``)."""

ALLOWED: dict[tuple[str, str], str] = {
    # (module, the offending line's text, stripped): why that literal is not a machine-driven column.
    # Empty: every out-of-scope use in the package is settled by its context (a VmInstance receiver, a VmSnapshot
    # query, an ActionEvent keyword, a tuple that mixes in names of no machine).
}


# --- the scope, from the definitions --------------------------------------------------------------------------------


class Column(NamedTuple):
    """A machine-driven column: its record class, table and column, and the machines that drive it."""

    record: str
    table: str
    column: str
    machines: tuple[str, ...]

    def __str__(self) -> str:
        return f"{self.table}.{self.column}"


def _columns() -> dict[str, Column]:
    """In-scope columns by record class name: each entity machine's ``table``/``column``, and ``workflow.state``."""
    definitions = project_definitions()
    by_table = {cls.table: cls.__name__ for cls in ALL_RECORDS}
    out: dict[str, Column] = {}
    for d in definitions.values():
        if d.kind == "entity":
            out[by_table[d.table]] = Column(by_table[d.table], d.table, d.column, (d.name,))
    workflows = tuple(d.name for d in definitions.values() if d.kind == "workflow")
    out[Workflow.__name__] = Column(Workflow.__name__, Workflow.table, "state", workflows)
    return out


DEFINITIONS = project_definitions()
COLUMNS = _columns()
COLUMN_BY_TABLE = {c.table: c for c in COLUMNS.values()}
RECORDS = {cls.__name__: cls.table for cls in ALL_RECORDS}
STATE_COLUMNS = frozenset(c.column for c in COLUMNS.values())
STATES = {
    n: tuple(m for m, d in DEFINITIONS.items() if n in d.state_names)
    for d in DEFINITIONS.values()
    for n in d.state_names
}
EVENTS = {
    n: tuple(m for m, d in DEFINITIONS.items() if n in d.event_names)
    for d in DEFINITIONS.values()
    for n in d.event_names
}
ORDINALS = {s.ordinal: s.name for s in DEFINITIONS["async_job"].states if s.ordinal is not None}
JOB_STATUS = COLUMNS["AsyncJob"]

MACHINE_OF_CALL = {"store_ref_event": "snapshot_store_ref", "snapshot_event": "snapshot", "volume_transit": "volume"}
"""Transition helpers of ``objects.py`` that name no record class in their call: the machine each one fires."""
EXPLICIT_EVENT_SINKS = {"transit": 1, "store_ref_event": 2, "snapshot_event": 2, "volume_transit": 2}
"""The brief's transition calls: where their event goes (positional index, receiver not counted)."""
STATE_SINKS = {"write_state_directly": 1}
"""Calls that write a state: the index of the state argument (``Store.write_state_directly(entity, state)``)."""
TYPE_GENERICS = frozenset(
    {"Callable", "ClassVar", "Optional", "Union", "type", "list", "tuple", "dict", "set", "frozenset", "Mapping"}
    | {"Sequence", "Iterable", "Iterator", "Generator", "Collection", "Annotated", "TypeVar"}
)
"""Subscripted types whose brackets may hold forward references as strings (``Literal`` is not one of them)."""
WRITES = frozenset({"update", "evolve", "_evolve"})
"""Calls whose keywords (or mapping) set columns of a record: a literal state there is a write."""


def _module_paths() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if p.relative_to(ROOT).as_posix() not in EXEMPT)


def _names_classes(paths: list[Path]) -> dict[tuple[str, str], tuple[str, frozenset[str]]]:
    """``(machine, kind) -> (class, names)`` for every ``MachineNames`` subclass in the package (names.py first)."""
    out: dict[tuple[str, str], tuple[str, frozenset[str]]] = {}
    for path in [PACKAGE / "names.py", *paths]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef):
                kw = {k.arg: k.value.value for k in node.keywords if isinstance(k.value, ast.Constant)}
                machine, kind = kw.get("machine"), kw.get("kind")
                if isinstance(machine, str) and isinstance(kind, str):
                    listed = frozenset(
                        s.target.id
                        for s in node.body
                        if isinstance(s, ast.AnnAssign) and isinstance(s.target, ast.Name)
                    )
                    out.setdefault((machine, kind), (node.name, listed))
    return out


NAMES_CLASSES = _names_classes(_module_paths())


def _event_sinks(paths: list[Path]) -> dict[str, frozenset[int]]:
    """Function name -> positions of its ``event`` parameter (self and cls not counted), over the package."""
    out: dict[str, set[int]] = {name: {i} for name, i in EXPLICIT_EVENT_SINKS.items()}
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name != "__init__":
                params = [a.arg for a in node.args.posonlyargs + node.args.args if a.arg not in {"self", "cls"}]
                kwonly = [a.arg for a in node.args.kwonlyargs]
                if "event" in params:
                    out.setdefault(node.name, set()).add(params.index("event"))
                elif "event" in kwonly:
                    out.setdefault(node.name, set())
    return {name: frozenset(i) for name, i in out.items()}


EVENT_SINKS = _event_sinks(_module_paths())


# --- what to write instead ------------------------------------------------------------------------------------------


MACHINE_COLUMN = {m: c for c in COLUMNS.values() for m in c.machines}


def _suggest(name: str, pairs: list[tuple[str, str]]) -> str:
    """``use SnapshotState.BackedUp`` (or several), naming the names class of each ``(machine, kind)``."""
    options: list[str] = []
    for machine, kind in pairs:
        cls, listed = NAMES_CLASSES.get((machine, kind), (None, frozenset()))
        if cls is None:
            option = f"a names class for the {kind}s of {machine!r}"
        else:
            option = f"{cls}.{name}" + ("" if name in listed else f" (add {name} to {cls})")
        if option not in options:
            options.append(option)
    return "use " + " or ".join(options)


def _machines_for(value: str, columns: tuple[Column, ...] | None, kinds: tuple[str, ...]) -> list[tuple[str, str]]:
    """``(machine, kind)`` pairs that have ``value`` among their names, limited to ``columns``' machines if given."""
    allowed = None if columns is None else {m for c in columns for m in c.machines}
    pairs: list[tuple[str, str]] = []
    for kind in kinds:
        table = STATES if kind == "state" else EVENTS
        pairs.extend((m, kind) for m in table.get(value, ()) if allowed is None or m in allowed)
    return pairs


def _target(columns: tuple[Column, ...] | None, pairs: list[tuple[str, str]]) -> str:
    """What the literal stands for: the columns, or (unknown) the columns and events its name can belong to."""
    if columns is not None:
        return " or ".join(dict.fromkeys(str(c) for c in columns))
    parts = [str(MACHINE_COLUMN[m]) if kind == "state" else f"an event of {m}" for m, kind in pairs]
    return " or ".join(dict.fromkeys(parts))


# --- offences -------------------------------------------------------------------------------------------------------


class Offence(NamedTuple):
    """One literal where a name belongs: where, which literal, and the message."""

    path: str
    line: int
    literal: str | int
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.message}"


class Subject(NamedTuple):
    """What a literal is compared with: known columns, an out-of-scope column, or unknown (``columns`` None)."""

    text: str
    columns: tuple[Column, ...] | None = None
    out_of_scope: bool = False
    precise: bool = False


_UNKNOWN = object()  # a variable whose record class differs between assignments


def _literals(node: ast.AST | None) -> Iterator[ast.Constant]:
    """The constants a value may be: itself, both arms of ``a if c else b``, the items of a tuple, list or set."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str | int) and not isinstance(node.value, bool):
        yield node
    elif isinstance(node, ast.IfExp):
        yield from _literals(node.body)
        yield from _literals(node.orelse)
    elif isinstance(node, ast.Tuple | ast.List | ast.Set):
        for elt in node.elts:
            yield from _literals(elt)
    elif isinstance(node, ast.BoolOp):
        for value in node.values:
            yield from _literals(value)


def _call_name(call: ast.Call) -> str | None:
    func = call.func
    if isinstance(func, ast.Name):
        return func.id
    if isinstance(func, ast.Attribute):
        return func.attr
    return None


def _annotation_record(annotation: ast.expr | None) -> str | None:
    """The one record class an annotation names (``Snapshot | None`` gives Snapshot), else None."""
    if annotation is None:
        return None
    if isinstance(annotation, ast.Constant) and isinstance(annotation.value, str):
        try:
            annotation = ast.parse(annotation.value, mode="eval").body
        except SyntaxError:
            return None
    found = {n.id for n in ast.walk(annotation) if isinstance(n, ast.Name) and n.id in RECORDS}
    return found.pop() if len(found) == 1 else None


class Scope:
    """Record classes of a function's variables, and variables that hold a state column's value (flow-insensitive)."""

    def __init__(self, parent: Scope | None) -> None:
        self.parent = parent
        self.types: dict[str, object] = {}
        self.values: dict[str, Subject] = {}

    def type_of(self, name: str) -> str | None:
        scope: Scope | None = self
        while scope is not None:
            if name in scope.types:
                found = scope.types[name]
                return found if isinstance(found, str) else None
            scope = scope.parent
        return None

    def value_of(self, name: str) -> Subject | None:
        scope: Scope | None = self
        while scope is not None:
            if name in scope.values:
                return scope.values[name]
            scope = scope.parent
        return None

    def bind(self, name: str, record: str | None) -> None:
        if record is None:
            return
        if self.types.get(name, record) != record:
            self.types[name] = _UNKNOWN
        else:
            self.types[name] = record


def _own_nodes(node: ast.AST) -> Iterator[ast.AST]:
    """The nodes of a function or module body, not descending into nested functions or classes."""
    todo = list(ast.iter_child_nodes(node))
    while todo:
        child = todo.pop()
        yield child
        if not isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef | ast.Lambda):
            todo.extend(ast.iter_child_nodes(child))


# --- SQL ------------------------------------------------------------------------------------------------------------

_SQL_COMPARE = re.compile(
    r"(?:\b(?P<alias>\w+)\.)?\b(?P<column>job_status|status|state)\s*"
    r"(?P<op>==|!=|<>|=|(?i:not\s+in|in|is\s+not|is|not\s+like|like|glob)\b)\s*"
    r"(?P<value>\((?:[^()']|'(?:[^']|'')*')*\)|'(?:[^']|'')*'|-?\d+\b|\?)"
)
_SQL_TOKEN = re.compile(r"'(?:[^']|'')*'|\(|\)|\?|\b(?i:from|update|join|into)\s+(\w+)")
_SQL_ITEM = re.compile(r"'((?:[^']|'')*)'|(-?\d+)|(\?)")


def _sql_table(text: str, pos: int) -> str | None:
    """The table of the innermost ``FROM``/``UPDATE``/``JOIN``/``INTO`` clause enclosing ``pos`` (subqueries too)."""
    stack: list[str | None] = [None]
    for m in _SQL_TOKEN.finditer(text, 0, pos):
        piece = m.group(0)
        if piece == "(":
            stack.append(None)
        elif piece == ")" and len(stack) > 1:
            stack.pop()
        elif m.group(1):
            stack[-1] = m.group(1)
    return next((t for t in reversed(stack) if t), None)


def _placeholders_before(text: str, pos: int) -> int:
    return sum(1 for m in _SQL_TOKEN.finditer(text, 0, pos) if m.group(0) == "?")


def _sql_text(node: ast.AST) -> str | None:
    """The text of a string expression: a literal, an f-string (``{}`` for each value), or ``+`` of those."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        return "".join(str(v.value) if isinstance(v, ast.Constant) else "{}" for v in node.values)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        left, right = _sql_text(node.left), _sql_text(node.right)
        return None if left is None or right is None else left + right
    return None


class SqlItem(NamedTuple):
    """One value a state column is compared with in SQL: a quoted literal, an integer, or the ``?`` at ``index``."""

    column: str
    table: str | None
    literal: str | int | None
    index: int | None


def sql_comparisons(text: str) -> Iterator[SqlItem]:
    """Every value compared with a ``status``/``state``/``job_status`` column in ``text``."""
    for m in _SQL_COMPARE.finditer(text):
        table = _sql_table(text, m.start())
        value_start = m.start("value")
        for item in _SQL_ITEM.finditer(m.group("value")):
            quoted, number, mark = item.groups()
            if mark:
                index = _placeholders_before(text, value_start + item.start())
                yield SqlItem(m.group("column"), table, None, index)
            elif number is not None:
                yield SqlItem(m.group("column"), table, int(number), None)
            else:
                yield SqlItem(m.group("column"), table, quoted.replace("''", "'"), None)


# --- the scanner ----------------------------------------------------------------------------------------------------


class Scanner(ast.NodeVisitor):
    """Finds the offences of one module's source; see the module docstring for what counts."""

    def __init__(self, path: str, source: str) -> None:
        self.path = path
        self.lines = source.splitlines()
        self.tree = ast.parse(source)
        self.offences: list[Offence] = []
        self.judged: set[int] = set()  # ids of constants a rule already looked at (reported or found out of scope)
        self.scope = Scope(None)

    def scan(self) -> list[Offence]:
        self._fill(self.scope, self.tree)
        self.visit(self.tree)
        return sorted(set(self.offences), key=lambda o: (o.line, str(o.literal), o.message))

    def report(self, line: int, literal: str | int, message: str) -> None:
        self.offences.append(Offence(self.path, line, literal, message))

    # --- types ------------------------------------------------------------------------------------------------------

    def _fill(self, scope: Scope, node: ast.AST) -> None:
        """Bind the variables of a function (parameters, assignments, loops) to record classes where it is clear."""
        previous, self.scope = self.scope, scope
        try:
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                args = node.args
                for a in [*args.posonlyargs, *args.args, *args.kwonlyargs]:
                    scope.bind(a.arg, _annotation_record(a.annotation))
            for child in _own_nodes(node):
                self._bind(scope, child)
        finally:
            self.scope = previous

    def _bind(self, scope: Scope, node: ast.AST) -> None:
        if isinstance(node, ast.Assign):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    scope.bind(target.id, self.record_of(node.value))
                    if (subject := self._column_value(node.value)) is not None:
                        scope.values[target.id] = subject
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            scope.bind(node.target.id, _annotation_record(node.annotation) or self.record_of(node.value))
        elif isinstance(node, ast.For | ast.comprehension) and isinstance(node.target, ast.Name):
            scope.bind(node.target.id, self.record_of(node.iter))
        elif isinstance(node, ast.NamedExpr):
            scope.bind(node.target.id, self.record_of(node.value))

    def record_of(self, node: ast.AST | None) -> str | None:
        """The record class an expression holds (or a list of), when a constructor, store call or name says so."""
        if isinstance(node, ast.Name):
            return self.scope.type_of(node.id)
        if isinstance(node, ast.Call):
            return self._record_of_call(node)
        if isinstance(node, ast.Subscript):
            return self.record_of(node.value)
        if isinstance(node, ast.IfExp):
            return self.record_of(node.body) or self.record_of(node.orelse)
        if isinstance(node, ast.BoolOp):
            return next((r for v in node.values if (r := self.record_of(v))), None)
        return None

    def _record_of_call(self, node: ast.Call) -> str | None:
        name = _call_name(node)
        if name in RECORDS:
            return name
        named = [a.id for a in node.args if isinstance(a, ast.Name) and a.id in RECORDS]
        if len(named) == 1:  # store.get(Snapshot, ...), store.find(VmSnapshot, ...), ...
            return named[0]
        if name in {"transit", "update", "reload", "insert", "write_state_directly", "remove"} and node.args:
            return self.record_of(node.args[0])
        if name in MACHINE_OF_CALL:
            return MACHINE_COLUMN[MACHINE_OF_CALL[name]].record
        return None

    def _column_value(self, node: ast.AST) -> Subject | None:
        """A state column read into a variable (``state = snapshot.status``): the subject it stands for."""
        subject = self.subject(node)
        return subject if subject.columns is not None or subject.out_of_scope else None

    def subject(self, node: ast.AST) -> Subject:
        """What ``node`` holds, as far as columns go."""
        text = ast.unparse(node)
        if isinstance(node, ast.Attribute):
            return self._attribute_subject(node, text)
        if isinstance(node, ast.Call) and _call_name(node) == "state_of" and node.args:
            record = self.record_of(node.args[0])
            if record in COLUMNS:
                return Subject(text, (COLUMNS[record],), precise=True)
            if record is not None:
                return Subject(text, out_of_scope=True)
            return Subject(text, tuple(COLUMNS.values()))
        if isinstance(node, ast.Name) and (held := self.scope.value_of(node.id)) is not None:
            return held._replace(text=f"{node.id} (= {held.text})")
        return Subject(text)

    def _attribute_subject(self, node: ast.Attribute, text: str) -> Subject:
        record = self.record_of(node.value)
        if record is not None:
            column = COLUMNS.get(record)
            if column is not None and column.column == node.attr:
                return Subject(text, (column,), precise=True)
            return Subject(text, out_of_scope=True)  # another column, or a record no machine drives
        if node.attr in STATE_COLUMNS:
            return Subject(text, tuple(c for c in COLUMNS.values() if c.column == node.attr))
        return Subject(text)

    # --- scopes -----------------------------------------------------------------------------------------------------

    def visit_FunctionDef(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        scope = Scope(self.scope)
        self._fill(scope, node)
        self._check_defaults(node)
        previous, self.scope = self.scope, scope
        try:
            self.generic_visit(node)
        finally:
            self.scope = previous

    visit_AsyncFunctionDef = visit_FunctionDef  # noqa: N815

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        column = COLUMNS.get(node.name)
        if column is not None:
            for stmt in node.body:
                target = stmt.target if isinstance(stmt, ast.AnnAssign) else None
                if isinstance(target, ast.Name) and target.id == column.column:
                    self._written(stmt.value, (column,), f"the default of {node.name}.{column.column}")
        self.generic_visit(node)

    def visit_Subscript(self, node: ast.Subscript) -> None:
        """``Callable[["Run"], ...]``: strings inside a generic type's brackets are forward references, not names."""
        base = node.value
        generic = base.id if isinstance(base, ast.Name) else base.attr if isinstance(base, ast.Attribute) else ""
        if generic in TYPE_GENERICS:
            self.judged.update(id(n) for n in ast.walk(node.slice) if isinstance(n, ast.Constant))
        self.generic_visit(node)

    def visit_Expr(self, node: ast.Expr) -> None:
        if isinstance(node.value, ast.Constant):  # a docstring, or a bare string: prose, not SQL
            return
        self.generic_visit(node)

    # --- judging one literal ----------------------------------------------------------------------------------------

    def _judge(self, const: ast.Constant, subject: Subject, verb: str) -> None:
        """Report ``const`` if it is a name the subject's columns (or, unknown, any machine) could hold."""
        self.judged.add(id(const))
        if subject.out_of_scope:
            return
        value, columns = const.value, subject.columns
        if isinstance(value, int):
            if columns is not None and JOB_STATUS in columns:
                fix = f"use JobState.ordinal(JobState.{ORDINALS.get(value, '?')})"
                self.report(const.lineno, value, f"{value} {verb} {JOB_STATUS} [{subject.text}] ({fix})")
            return
        pairs = _machines_for(value, columns, ("state",) if columns is not None else ("state", "event"))
        if pairs:
            target = _target(columns if subject.precise else None, pairs)
            self.report(const.lineno, value, f"{value!r} {verb} {target} [{subject.text}] ({_suggest(value, pairs)})")
        elif columns is not None and subject.precise:
            machines = ", ".join(m for c in columns for m in c.machines)
            message = f"{value!r} {verb} {_target(columns, [])} [{subject.text}], but no state of {machines} has it"
            self.report(const.lineno, value, message)

    def _compared(self, side: ast.AST, subject: Subject) -> None:
        for const in _literals(side):
            self._judge(const, subject, "compared with")

    def _written(self, value: ast.AST | None, columns: tuple[Column, ...] | None, how: str) -> None:
        subject = Subject(how, columns, precise=columns is not None)
        for const in _literals(value):
            self._judge(const, subject, "written to")

    # --- comparisons ------------------------------------------------------------------------------------------------

    def visit_Compare(self, node: ast.Compare) -> None:
        operands = [node.left, *node.comparators]
        for i, op in enumerate(node.ops):
            if isinstance(op, ast.Eq | ast.NotEq | ast.In | ast.NotIn | ast.Is | ast.IsNot):
                left, right = operands[i], operands[i + 1]
                for side, other in ((left, right), (right, left)):
                    if not isinstance(other, ast.Constant):
                        self._compared(side, self.subject(other))
        self.generic_visit(node)

    def visit_Match(self, node: ast.Match) -> None:
        subject = self.subject(node.subject)
        for case in node.cases:
            for pattern in ast.walk(case.pattern):
                if isinstance(pattern, ast.MatchValue):
                    self._compared(pattern.value, subject)
        self.generic_visit(node)

    # --- calls: transitions, records, writes, SQL -------------------------------------------------------------------

    def visit_Call(self, node: ast.Call) -> None:
        name = _call_name(node)
        if name in EVENT_SINKS:
            self._event_call(node, name)
        if name in STATE_SINKS:
            self._written(self._argument(node, STATE_SINKS[name], "state"), self._entity_columns(node), f"{name}()")
        if name in COLUMNS:
            column = self._record_column(node, name)
            for kw in node.keywords:
                if kw.arg == column.column:
                    self._written(kw.value, (column,), f"{name}({kw.arg}=...)")
        if name in WRITES:
            for kw in node.keywords:
                if kw.arg in STATE_COLUMNS:
                    columns = self._entity_columns(node) or tuple(c for c in COLUMNS.values() if c.column == kw.arg)
                    self._written(kw.value, columns, f"{name}({kw.arg}=...)")
        self._sql_call(node)
        self.generic_visit(node)

    @staticmethod
    def _record_column(node: ast.Call, name: str) -> Column:
        """The column a record constructor writes; ``Workflow(machine="take_snapshot", ...)`` narrows the machine."""
        column = COLUMNS[name]
        machine = next((kw.value for kw in node.keywords if kw.arg == "machine"), None)
        if isinstance(machine, ast.Constant) and machine.value in column.machines:
            return column._replace(machines=(machine.value,))
        return column

    def _entity_columns(self, node: ast.Call) -> tuple[Column, ...] | None:
        """The column of the record a call acts on (its first argument), when known and machine-driven."""
        record = self.record_of(node.args[0]) if node.args else None
        return (COLUMNS[record],) if record in COLUMNS else None

    @staticmethod
    def _argument(node: ast.Call, index: int | None, keyword: str) -> ast.expr | None:
        """The argument a call passes for parameter ``keyword`` at position ``index`` (None: keyword only)."""
        for kw in node.keywords:
            if kw.arg == keyword:
                return kw.value
        args = node.args
        if index is None or index >= len(args) or any(isinstance(a, ast.Starred) for a in args[: index + 1]):
            return None
        return args[index]

    def _event_call(self, node: ast.Call, name: str) -> None:
        machine = MACHINE_OF_CALL.get(name)
        columns = self._entity_columns(node) if machine is None else (MACHINE_COLUMN[machine],)
        machines = tuple(m for c in columns for m in c.machines) if columns else None
        for index in sorted(EVENT_SINKS[name]) or [None]:
            for const in _literals(self._argument(node, index, "event")):
                if isinstance(const.value, str):
                    self._event(const, machines, f"passed as the event of {name}()")

    def _event(self, const: ast.Constant, machines: tuple[str, ...] | None, how: str) -> None:
        self.judged.add(id(const))
        value = str(const.value)
        pairs = [(m, "event") for m in EVENTS.get(value, ()) if machines is None or m in machines]
        if pairs:
            self.report(const.lineno, value, f"{value!r} {how} ({_suggest(value, pairs)})")
        elif machines is not None:
            self.report(const.lineno, value, f"{value!r} {how}, but no event of {', '.join(machines)} has that name")
        elif value in STATES:
            self.report(const.lineno, value, f"{value!r} {how}, but it is a state name, not an event")

    def visit_Dict(self, node: ast.Dict) -> None:
        for key, value in zip(node.keys, node.values, strict=True):
            if isinstance(key, ast.Constant) and key.value in STATE_COLUMNS:
                columns = tuple(c for c in COLUMNS.values() if c.column == key.value)
                for const in _literals(value):
                    self._judge(const, Subject(f"{{{key.value!r}: ...}}", columns), "written to")
        self.generic_visit(node)

    def _check_defaults(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        """A parameter's literal default that reaches a record's state keyword or a transition call."""
        args = node.args
        positional = [a.arg for a in [*args.posonlyargs, *args.args]]
        defaults = dict(zip(positional[len(positional) - len(args.defaults) :], args.defaults, strict=True))
        defaults.update({a.arg: d for a, d in zip(args.kwonlyargs, args.kw_defaults, strict=True) if d is not None})
        if not defaults:
            return
        for call in (n for n in _own_nodes(node) if isinstance(n, ast.Call)):
            for param, sink, columns, is_event in self._sinks(call):
                if param not in defaults:
                    continue
                how = f"{sink} through {node.name}({param}=...)"
                if is_event:
                    for const in _literals(defaults[param]):
                        if isinstance(const.value, str):
                            self._event(const, None, f"is the event of {how}")
                else:
                    self._written(defaults[param], columns, how)

    def _sinks(self, call: ast.Call) -> Iterator[tuple[str, str, tuple[Column, ...] | None, bool]]:
        """``(parameter, how, columns, is_event)`` for each plain name a call passes where a state or event goes."""
        name = _call_name(call) or ""
        if name in COLUMNS:
            column = COLUMNS[name]
            for kw in call.keywords:
                if kw.arg == column.column and isinstance(kw.value, ast.Name):
                    yield kw.value.id, f"{name}({kw.arg}=...)", (column,), False
        for index in EVENT_SINKS.get(name, ()):
            if isinstance(value := self._argument(call, index, "event"), ast.Name):
                yield value.id, f"{name}()", None, True
        if name in STATE_SINKS and isinstance(value := self._argument(call, STATE_SINKS[name], "state"), ast.Name):
            yield value.id, f"{name}()", self._entity_columns(call), False

    # --- SQL --------------------------------------------------------------------------------------------------------

    def _sql_call(self, node: ast.Call) -> None:
        """SQL text passed to a call, read with the call's record class and its parameters tuple."""
        record = next((a.id for a in node.args if isinstance(a, ast.Name) and a.id in RECORDS), None)
        params_kw = next((kw.value for kw in node.keywords if kw.arg in {"params", "parameters"}), None)
        for i, arg in enumerate(node.args):
            if (text := _sql_text(arg)) is None or id(arg) in self.judged:
                continue
            params = params_kw or (node.args[i + 1] if i + 1 < len(node.args) else None)
            self._sql(arg, text, RECORDS[record] if record else None, params)
            for const in (n for n in ast.walk(params) if isinstance(n, ast.Constant)) if params else ():
                self.judged.add(
                    id(const)
                )  # the SQL rule decides for parameters: a literal not bound to a state is fine

    def _sql(self, node: ast.AST, text: str, table: str | None, params: ast.AST | None) -> None:
        for const in (n for n in ast.walk(node) if isinstance(n, ast.Constant)):
            self.judged.add(id(const))
        self.judged.add(id(node))
        for item in sql_comparisons(text):
            where = item.table or table
            if where is not None and where not in COLUMN_BY_TABLE:
                continue  # a table no machine drives: vm_instance, vm_snapshots, mshost, ...
            column = COLUMN_BY_TABLE.get(where) if where else None
            if column is not None and column.column != item.column:
                continue
            columns = (column,) if column else tuple(c for c in COLUMNS.values() if c.column == item.column)
            subject = Subject("SQL", columns, precise=column is not None)
            if item.index is not None:
                self._sql_param(params, item.index, subject)
            elif item.literal is not None:
                self._sql_literal(node, item.literal, subject)

    def _sql_literal(self, node: ast.AST, literal: str | int, subject: Subject) -> None:
        columns = subject.columns or ()
        if isinstance(literal, int):
            if JOB_STATUS in columns:
                fix = f"bind JobState.ordinal(JobState.{ORDINALS.get(literal, '?')}) as a ? parameter"
                self.report(
                    self._line_of(node, str(literal)), literal, f"{literal} compared with {JOB_STATUS} in SQL ({fix})"
                )
            return
        pairs = _machines_for(literal, columns, ("state",))
        line = self._line_of(node, f"'{literal}'")
        if pairs:
            fix = "bind " + _suggest(literal, pairs).removeprefix("use ") + " as a ? parameter"
            target = _target(columns if subject.precise else None, pairs)
            self.report(line, literal, f"{literal!r} compared with {target} in SQL ({fix})")
        elif subject.precise:
            machines = ", ".join(m for c in columns for m in c.machines)
            message = f"{literal!r} compared with {_target(columns, [])} in SQL, but no state of {machines} has it"
            self.report(line, literal, message)

    def _sql_param(self, params: ast.AST | None, index: int, subject: Subject) -> None:
        """The parameter bound to the ``index``-th ``?`` (a tuple or list display only)."""
        if not isinstance(params, ast.Tuple | ast.List) or any(isinstance(e, ast.Starred) for e in params.elts):
            return
        if index < len(params.elts):
            self._compared(params.elts[index], subject._replace(text="a ? parameter of the SQL"))

    def _line_of(self, node: ast.AST, needle: str) -> int:
        """The source line of ``needle`` inside a (possibly multi-line) string expression."""
        start = getattr(node, "lineno", 1)
        end = getattr(node, "end_lineno", start) or start
        return next((n for n in range(start, end + 1) if needle in self.lines[n - 1]), start)

    # --- whatever is left: SQL outside calls, collections of names --------------------------------------------------

    def visit_Constant(self, node: ast.Constant) -> None:
        if id(node) not in self.judged and isinstance(node.value, str):
            self._sql(node, node.value, None, None)

    def visit_JoinedStr(self, node: ast.JoinedStr) -> None:
        if id(node) not in self.judged and (text := _sql_text(node)) is not None:
            self._sql(node, text, None, None)
        self.generic_visit(node)

    def visit_BinOp(self, node: ast.BinOp) -> None:
        if id(node) not in self.judged and (text := _sql_text(node)) is not None:
            self._sql(node, text, None, None)
        self.generic_visit(node)

    def visit_Tuple(self, node: ast.Tuple | ast.List | ast.Set) -> None:
        consts = [e for e in node.elts if isinstance(e, ast.Constant) and isinstance(e.value, str)]
        named = all(c.value in STATES or c.value in EVENTS for c in consts)
        if consts and len(consts) == len(node.elts) and named and not any(id(c) in self.judged for c in consts):
            for const in consts:
                value = str(const.value)
                pairs = _machines_for(value, None, ("state", "event"))
                message = f"{value!r} in a collection of names: {_target(None, pairs)} ({_suggest(value, pairs)})"
                self.report(const.lineno, value, message)
                self.judged.add(id(const))
        self.generic_visit(node)

    visit_List = visit_Tuple  # noqa: N815
    visit_Set = visit_Tuple  # noqa: N815


def scan_source(source: str, path: str = "<string>") -> list[Offence]:
    """The offences of one module's source text."""
    return Scanner(path, source).scan()


def scan_package() -> list[Offence]:
    """The offences of every module of the package, allowed ones left out."""
    out: list[Offence] = []
    for path in _module_paths():
        rel = path.relative_to(ROOT).as_posix()
        source = path.read_text()
        lines = source.splitlines()
        out.extend(o for o in scan_source(source, rel) if (rel, lines[o.line - 1].strip()) not in ALLOWED)
    return out


# --- the tests ------------------------------------------------------------------------------------------------------


def test_machine_driven_columns_use_names() -> None:
    """No literal stands for a state or event of an in-scope machine anywhere in the package."""
    offences = scan_package()
    assert not offences, "state/event literals where names.py belongs:\n" + "\n".join(map(str, offences))


def test_the_allowlist_is_current() -> None:
    """Every allowed line still exists and still holds a literal the scanner would flag."""
    found: set[tuple[str, str]] = set()
    for path in _module_paths():
        rel = path.relative_to(ROOT).as_posix()
        source = path.read_text()
        lines = source.splitlines()
        found.update((rel, lines[o.line - 1].strip()) for o in scan_source(source, rel))
    assert set(ALLOWED) <= found, f"stale allowlist entries: {sorted(set(ALLOWED) - found)}"


# --- the scanner is not vacuous: each kind of offence, planted, is reported -----------------------------------------

PLANTED = {
    "comparison": (
        """
        def f(snapshot: Snapshot) -> bool:
            return snapshot.status == "BackedUp"
        """,
        ["2: 'BackedUp' compared with snapshots.status [snapshot.status] (use SnapshotState.BackedUp)"],
    ),
    "comparison through a variable": (
        """
        def f(store):
            state = store.get(Snapshot, 1).status
            return state in ("Allocated", "CreatedOnPrimary")
        """,
        [
            (
                "3: 'Allocated' compared with snapshots.status [state (= store.get(Snapshot, 1).status)]"
                " (use SnapshotState.Allocated)"
            ),
            (
                "3: 'CreatedOnPrimary' compared with snapshots.status [state (= store.get(Snapshot, 1).status)]"
                " (use SnapshotState.CreatedOnPrimary)"
            ),
        ],
    ),
    "comparison, receiver unknown": (
        """
        def f(refs):
            return [r for r in refs if r.state != "Destroyed"]
        """,
        ["2: 'Destroyed' compared with snapshot_store_ref.state [r.state] (use RefState.Destroyed)"],
    ),
    "comparison with a name the machine lacks": (
        """
        def f(ref: SnapshotStoreRef):
            return ref.state == "Error"
        """,
        ["2: 'Error' compared with snapshot_store_ref.state [ref.state], but no state of snapshot_store_ref has it"],
    ),
    "comparison with an ordinal": (
        """
        def f(job: AsyncJob):
            return job.job_status == 2
        """,
        ["2: 2 compared with async_job.job_status [job.job_status] (use JobState.ordinal(JobState.FAILED))"],
    ),
    "comparison in a match": (
        """
        def f(snapshot: Snapshot):
            match snapshot.status:
                case "Error":
                    return 1
        """,
        ["3: 'Error' compared with snapshots.status [snapshot.status] (use SnapshotState.Error)"],
    ),
    "transit event": (
        """
        def f(store, snapshot: Snapshot):
            store.transit(snapshot, "DestroyRequested")
        """,
        ["2: 'DestroyRequested' passed as the event of transit() (use SnapshotEvent.DestroyRequested)"],
    ),
    "store_ref_event, both arms": (
        """
        def f(store, ref, ok):
            store_ref_event(store, ref, "OperationSucceeded" if ok else "OperationFailed")
        """,
        [
            "2: 'OperationFailed' passed as the event of store_ref_event() (use RefEvent.OperationFailed)",
            "2: 'OperationSucceeded' passed as the event of store_ref_event() (use RefEvent.OperationSucceeded)",
        ],
    ),
    "volume_transit event": (
        """
        def f(store):
            volume_transit(store, 1, "SnapshotRequested")
        """,
        ["2: 'SnapshotRequested' passed as the event of volume_transit() (use VolumeEvent.SnapshotRequested)"],
    ),
    "snapshot_event with another machine's event": (
        """
        def f(store, snapshot):
            snapshot_event(store, snapshot, "SnapshotRequested")
        """,
        ["2: 'SnapshotRequested' passed as the event of snapshot_event(), but no event of snapshot has that name"],
    ),
    "direct write": (
        """
        def f(store, volume: Volume):
            store.write_state_directly(volume, "Ready", by="cleanupVolumeDuringSnapshotFailure")
        """,
        ["2: 'Ready' written to volumes.state [write_state_directly()] (use VolumeState.Ready)"],
    ),
    "SQL literal": (
        """
        def f(store):
            return store.find(SnapshotStoreRef, "snapshot_id = ? AND state != 'Destroyed'", (1,))
        """,
        ["2: 'Destroyed' compared with snapshot_store_ref.state in SQL (bind RefState.Destroyed as a ? parameter)"],
    ),
    "SQL list across lines, with a name the machine lacks": (
        """
        def f(store):
            return store.first(
                SnapshotStoreRef,
                "parent_snapshot_id = ?"
                " AND state NOT IN ('Destroyed', 'Error')",
                (1,),
            )
        """,
        [
            "5: 'Destroyed' compared with snapshot_store_ref.state in SQL (bind RefState.Destroyed as a ? parameter)",
            "5: 'Error' compared with snapshot_store_ref.state in SQL, but no state of snapshot_store_ref has it",
        ],
    ),
    "SQL parameter": (
        """
        def f(store):
            return store.find(Snapshot, "volume_id = ? AND status = ?", (1, "BackedUp"))
        """,
        ["2: 'BackedUp' compared with snapshots.status [a ? parameter of the SQL] (use SnapshotState.BackedUp)"],
    ),
    "SQL ordinals": (
        """
        def f(store):
            store.find(AsyncJob, "job_status = 0 AND job_init_msid = ?", (1,))
            return store.find(AsyncJob, "job_status = ? AND job_init_msid = ?", (2, 1))
        """,
        [
            (
                "2: 0 compared with async_job.job_status in SQL"
                " (bind JobState.ordinal(JobState.IN_PROGRESS) as a ? parameter)"
            ),
            (
                "3: 2 compared with async_job.job_status [a ? parameter of the SQL]"
                " (use JobState.ordinal(JobState.FAILED))"
            ),
        ],
    ),
    "SQL subquery on another table": (
        """
        def f(store):
            return store.count(
                Snapshot,
                "volume_id IN (SELECT id FROM volumes WHERE state = 'Ready') AND status = ?",
                (SnapshotState.BackedUp,),
            )
        """,
        ["4: 'Ready' compared with volumes.state in SQL (bind VolumeState.Ready as a ? parameter)"],
    ),
    "SQL outside a call": (
        """
        SQL = "SELECT id FROM snapshots WHERE status = 'Error'"
        """,
        ["1: 'Error' compared with snapshots.status in SQL (bind SnapshotState.Error as a ? parameter)"],
    ),
    "record keyword": (
        """
        def f():
            return Snapshot(name="s", status="BackedUp", volume_id=1)
        """,
        ["2: 'BackedUp' written to snapshots.status [Snapshot(status=...)] (use SnapshotState.BackedUp)"],
    ),
    "record keyword, ordinal": (
        """
        def f():
            return AsyncJob(job_cmd="x", job_status=1, account_id=1)
        """,
        ["2: 1 written to async_job.job_status [AsyncJob(job_status=...)] (use JobState.ordinal(JobState.SUCCEEDED))"],
    ),
    "record keyword, workflow": (
        """
        def f():
            return Workflow(machine="take_snapshot", state="Succeeded", ms_id=1)
        """,
        ["2: 'Succeeded' written to workflow.state [Workflow(state=...)] (use TakeState.Succeeded)"],
    ),
    "record class default": (
        """
        class Volume(Record):
            state: str = "Ready"
        """,
        ["2: 'Ready' written to volumes.state [the default of Volume.state] (use VolumeState.Ready)"],
    ),
    "parameter default written to a record": (
        """
        def add_volume(self, *, state: str = "Ready") -> Volume:
            return self.store.insert(Volume(name="v", state=state))
        """,
        [
            (
                "1: 'Ready' written to volumes.state [Volume(state=...) through add_volume(state=...)]"
                " (use VolumeState.Ready)"
            )
        ],
    ),
    "update keyword": (
        """
        def f(store, volume: Volume):
            store.update(volume, state="Ready")
        """,
        ["2: 'Ready' written to volumes.state [update(state=...)] (use VolumeState.Ready)"],
    ),
    "mapping entry": (
        """
        ROW = {"state": "Hidden", "role": "Image"}
        """,
        ["1: 'Hidden' written to snapshot_store_ref.state [{'state': ...}] (use RefState.Hidden)"],
    ),
    "collection of names": (
        """
        CHAIN = ("BackingUp", "Error")
        """,
        [
            "1: 'BackingUp' in a collection of names: snapshots.status (use SnapshotState.BackingUp)",
            "1: 'Error' in a collection of names: snapshots.status (use SnapshotState.Error)",
        ],
    ),
}


@pytest.mark.parametrize(("source", "expected"), PLANTED.values(), ids=PLANTED.keys())
def test_each_kind_of_offence_is_reported(source: str, expected: list[str]) -> None:
    """A planted literal of each kind is reported, at its line, with the name to use."""
    found = [str(o).removeprefix("<string>:") for o in scan_source(textwrap.dedent(source).lstrip("\n"))]
    assert found == expected


OUT_OF_SCOPE = '''
"""Prose is not SQL: status = 'Error'."""
from collections.abc import Callable

StepFn = Callable[["Run"], str | None]
VM_STATES = ("Starting", "Running", "Stopped", "Destroyed")


def f(store, rt, host, snapshot: Snapshot) -> None:
    vm = store.first(VmInstance, "id = ?", (1,))
    if vm.state in ("Destroyed", "Expunging"):
        return
    store.count(VmSnapshot, "vm_id = ? AND state IN ('Creating', 'Expunging')", (1,))
    store.find(ManagementServer, "state = ?", ("Up",))
    store.find(SnapshotDetail, "name = ? AND value = ?", ("Ready", "Destroyed"))
    if host.status == "Up" or snapshot.status == SnapshotState.BackedUp:
        return
    action_event(rt, "SNAPSHOT.CREATE", "taking snapshot", state="Scheduled")
    ActionEvent(type="SNAPSHOT.CREATE", account_id=1, state="Created")
    machine, entity_id = "snapshot", 1
'''


def test_out_of_scope_columns_are_not_reported() -> None:
    """VM, VM-snapshot, host, mshost and action-event states, details, forward references and prose pass."""
    assert scan_source(OUT_OF_SCOPE) == []


def test_offences_planted_in_a_real_module_are_found() -> None:
    """A real module is clean; the same module with one offence of each kind appended reports exactly those."""
    path = PACKAGE / "strategies" / "base.py"
    source = path.read_text()
    assert scan_source(source) == []
    planted = "\n\n" + textwrap.dedent(
        """\
        def _planted(store: Store, snapshot: Snapshot, ref: SnapshotStoreRef) -> None:
            if snapshot.status == "BackedUp":
                store_ref_event(store, ref, "DestroyRequested")
            store.find(SnapshotStoreRef, "snapshot_id = ? AND state = 'Ready'", (snapshot.id,))
            store.insert(Snapshot(name="x", volume_id=1, data_center_id=1, account_id=1, status="Destroyed"))
        """
    )
    first = len(source.splitlines()) + 4  # two blank lines, the def, then the first planted line
    found = [(o.line - first, o.literal) for o in scan_source(source + planted, "base.py")]
    assert found == [(0, "BackedUp"), (1, "DestroyRequested"), (2, "Ready"), (3, "Destroyed")]
