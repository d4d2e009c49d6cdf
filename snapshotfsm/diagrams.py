"""State diagrams generated from the definitions: graphviz DOT (and SVG/PNG through ``dot``) and Mermaid text.

The DOT is built with the ``graphviz`` package straight from :class:`~snapshotfsm.definitions.Definition`, not with
``transitions``' ``GraphMachine``: the definitions carry what the drawing needs (error and failure events, terminal,
transitional and waiting states, rows CloudStack never fires, the usage flag) and ``GraphMachine`` only knows states
and triggers. Output is deterministic: the same definitions give byte-identical DOT and Mermaid.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterable, Sequence
from pathlib import Path

import attrs
import graphviz

from snapshotfsm.definitions import Definition, Definitions, StateDef, TransitionDef
from snapshotfsm.errors import InvalidValue

FORMATS = ("dot", "mmd", "svg", "png")
"""Text formats are always written; ``svg`` and ``png`` need graphviz's ``dot`` program."""
DEFAULT_FORMATS = ("dot", "mmd", "svg")
RENDERED = frozenset({"svg", "png"})
INSTALL_HINT = "install graphviz for SVG/PNG diagrams (Debian/Ubuntu: apt-get install graphviz)"

BIG_MACHINE = 15
"""States above which a workflow machine (drawn top to bottom) is drawn tighter."""
RANKSEP_ACROSS = "1.0"
"""Entity machines run left to right with a label over each edge: the ranks need room for the labels."""
HUB_EDGES = 7
"""Edges at a state from which it is drawn stretched (see :func:`_hub_size`)."""
HUB_INCHES_PER_EDGE = 0.2
ERROR_COLOUR = "#c0392b"
NEVER_COLOUR = "#9e9e9e"
FONT = "Helvetica"
STATE_STYLES = {
    "plain": {"fillcolor": "#ffffff"},
    "transitional": {"fillcolor": "#fff4cc", "style": "rounded,filled,dashed"},
    "waiting": {"fillcolor": "#e3f0fb"},
    "error": {"fillcolor": "#fde0dc", "color": ERROR_COLOUR, "fontcolor": ERROR_COLOUR},
    "terminal": {"peripheries": "2"},
}


@attrs.frozen
class Edge:
    """The transitions from one state to another of one kind, drawn as a single edge labelled with their events."""

    source: str
    dest: str
    kind: str
    """``normal``, ``error`` (a failure event or an error-tagged destination) or ``never`` (never fired upstream)."""
    labels: tuple[str, ...]


def edges(definition: Definition) -> list[Edge]:
    """Transitions merged per (source, dest, kind), in the order their first row appears in the definition.

    Merging keeps a 67-row table such as the volume's readable: parallel edges become one edge with stacked labels.
    """
    merged: dict[tuple[str, str, str], list[str]] = {}
    for t in definition.transitions:
        merged.setdefault((t.source, t.dest, edge_kind(definition, t)), []).append(_label(definition, t))
    return [Edge(source, dest, kind, tuple(labels)) for (source, dest, kind), labels in merged.items()]


def edge_kind(definition: Definition, t: TransitionDef) -> str:
    """How a transition is drawn: error edges apart, rows CloudStack never fires greyed out (spec §1.2 #11)."""
    if t.never_fired:
        return "never"
    if definition.is_error_transition(t):
        return "error"
    return "normal"


def _label(definition: Definition, t: TransitionDef) -> str:
    text = t.event
    if t.usage:
        text += " (U)"
    if t.calls and definition.kind == "workflow":
        text += f" / {t.calls}"
    return text


def state_kind(state: StateDef) -> str:
    """The fill a state gets; terminal is drawn as a double border on top of it."""
    if state.error:
        return "error"
    if state.transitional:
        return "transitional"
    if state.waiting:
        return "waiting"
    return "plain"


def to_dot(definition: Definition) -> graphviz.Digraph:
    """The graphviz graph of one machine, with its legend."""
    big = len(definition.states) > BIG_MACHINE
    across = definition.kind != "workflow"
    drawn = edges(definition)
    graph = graphviz.Digraph(
        definition.name,
        graph_attr={
            "label": _title(definition),
            "labelloc": "t",
            "fontname": FONT,
            "fontsize": "16",
            "rankdir": "LR" if across else "TB",
            "nodesep": "0.35" if big else "0.5",
            "ranksep": RANKSEP_ACROSS if across else ("0.45" if big else "0.6"),
            "newrank": "true",
        },
        node_attr={"shape": "box", "style": "rounded,filled", "fontname": FONT, "fontsize": "11"},
        edge_attr={"fontname": FONT, "fontsize": "9", "arrowsize": "0.7"},
    )
    graph.node("__initial__", "", shape="point", width="0.15", style="filled", fillcolor="black")
    degree = _degrees(drawn)
    for state in definition.states:
        attrs_ = dict(STATE_STYLES[state_kind(state)])
        if state.terminal:
            attrs_.update(STATE_STYLES["terminal"])
        attrs_.update(_hub_size(degree.get(state.name, 0), across=across))
        graph.node(state.name, state.name, **attrs_)
    graph.edge("__initial__", definition.initial)
    for edge in drawn:
        style = _edge_style(edge.kind)
        if edge.source == edge.dest:
            style.update(_loop_ports(edge.kind, across=across))
        graph.edge(edge.source, edge.dest, label="\\l".join(edge.labels) + "\\l", **style)
    _legend(graph, definition)
    return graph


def _degrees(drawn: Sequence[Edge]) -> dict[str, int]:
    """How many drawn edges (self-loops aside) touch each state."""
    degree: dict[str, int] = {}
    for edge in drawn:
        if edge.source != edge.dest:
            degree[edge.source] = degree.get(edge.source, 0) + 1
            degree[edge.dest] = degree.get(edge.dest, 0) + 1
    return degree


def _hub_size(degree: int, *, across: bool) -> dict[str, str]:
    """Stretch a hub state along the side its edges arrive on, so that they fan out instead of meeting in one point.

    Without it the volume's ``Ready`` (25 edges: a request, a success and a failure for each operation) is a knot
    of arrowheads whose labels cannot be told apart.
    """
    if degree < HUB_EDGES:
        return {}
    if across:
        return {"height": f"{HUB_INCHES_PER_EDGE * degree:.1f}"}
    return {"width": f"{HUB_INCHES_PER_EDGE * 1.5 * degree:.1f}"}


def _loop_ports(kind: str, *, across: bool) -> dict[str, str]:
    """Self-loops on opposite sides of the state: normal ones on one side, error and never-fired on the other.

    Left to itself dot stacks every loop of a state on one side with their labels over each other (volume's
    ``Allocated``, ``Ready``, ``Destroy`` and ``Expunged`` each have a success and a failure loop).
    """
    side = ("n" if across else "e") if kind == "normal" else ("s" if across else "w")
    return {"tailport": side, "headport": side}


def _title(definition: Definition) -> str:
    title = definition.title or definition.name
    cited = f" (spec {definition.spec})" if definition.spec else ""
    return f"{definition.name}: {title}{cited}" if title != definition.name else f"{definition.name}{cited}"


def _edge_style(kind: str) -> dict[str, str]:
    if kind == "error":
        return {"color": ERROR_COLOUR, "fontcolor": ERROR_COLOUR, "style": "dashed", "penwidth": "1.3"}
    if kind == "never":
        return {"color": NEVER_COLOUR, "fontcolor": NEVER_COLOUR, "style": "dotted"}
    return {}


def _legend(graph: graphviz.Digraph, definition: Definition) -> None:
    """A box below the machine showing each style the diagram uses, so that a reader needs no other key."""
    rows = [
        '<TR><TD COLSPAN="2"><B>Legend</B></TD></TR>',
        '<TR><TD BGCOLOR="#ffffff" STYLE="rounded">state</TD><TD ALIGN="LEFT">a state</TD></TR>',
        '<TR><TD BGCOLOR="#ffffff" BORDER="3">terminal</TD><TD ALIGN="LEFT">terminal (double border)</TD></TR>',
        '<TR><TD BGCOLOR="#fde0dc"><FONT COLOR="#c0392b">error</FONT></TD><TD ALIGN="LEFT">error state</TD></TR>',
    ]
    if any(s.transitional for s in definition.states):
        rows.append(
            '<TR><TD BGCOLOR="#fff4cc">transitional</TD><TD ALIGN="LEFT">transitional (dashed border)</TD></TR>'
        )
    if any(s.waiting for s in definition.states):
        rows.append('<TR><TD BGCOLOR="#e3f0fb">waiting</TD><TD ALIGN="LEFT">waits for a driver or a timer</TD></TR>')
    rows.append(
        '<TR><TD><FONT COLOR="#c0392b">- - -&gt;</FONT></TD>'
        '<TD ALIGN="LEFT"><FONT COLOR="#c0392b">error transition: failure event or into an error state</FONT></TD></TR>'
    )
    if any(t.never_fired for t in definition.transitions):
        rows.append(
            '<TR><TD><FONT COLOR="#9e9e9e">· · ·&gt;</FONT></TD>'
            '<TD ALIGN="LEFT"><FONT COLOR="#9e9e9e">in the table, never fired by CloudStack</FONT></TD></TR>'
        )
    if any(t.usage for t in definition.transitions):
        rows.append('<TR><TD>(U)</TD><TD ALIGN="LEFT">the transition has CloudStack\'s usage flag</TD></TR>')
    if definition.kind == "workflow":
        rows.append('<TR><TD>E / step</TD><TD ALIGN="LEFT">event E runs the step callback</TD></TR>')
    table = '<TABLE BORDER="0" CELLBORDER="1" CELLSPACING="0" CELLPADDING="4">' + "".join(rows) + "</TABLE>"
    graph.node("__legend__", f"<{table}>", shape="plaintext", style="", fontsize="9")


def to_mermaid(definition: Definition) -> str:
    """``stateDiagram-v2`` text: error and never-fired edges are marked in their labels, states by class."""
    lines = ["---", f"title: {_title(definition)}", "---", "stateDiagram-v2"]
    if definition.kind == "workflow":
        lines.append("    direction LR")
    lines += [
        "    classDef error fill:#fde0dc,stroke:#c0392b,color:#c0392b",
        "    classDef transitional fill:#fff4cc,stroke-dasharray:4 2",
        "    classDef waiting fill:#e3f0fb",
        "    classDef terminal stroke-width:3px",
        f"    [*] --> {definition.initial}",
    ]
    marks = {"normal": "", "error": " ✗ error", "never": " · never fired"}
    for edge in edges(definition):
        label = "<br>".join(edge.labels) + marks[edge.kind]
        lines.append(f"    {edge.source} --> {edge.dest}: {label}")
    lines += [f"    {s.name} --> [*]" for s in definition.states if s.terminal]
    for kind in ("error", "transitional", "waiting", "terminal"):
        members = [s.name for s in definition.states if _has_class(s, kind)]
        if members:
            lines.append(f"    class {','.join(members)} {kind}")
    lines += [
        f"    note right of {definition.initial}",
        "        Legend: red = error state; yellow, dashed = transitional; blue = waiting;",
        "        thick border = terminal; '✗ error' = error transition; '· never fired' = never fired upstream;",
        "        (U) = usage flag",
        "    end note",
    ]
    return "\n".join(lines) + "\n"


def _has_class(state: StateDef, kind: str) -> bool:
    if kind == "terminal":
        return state.terminal
    return state_kind(state) == kind


def parse_formats(text: str | Iterable[str]) -> tuple[str, ...]:
    """``"dot,svg"`` or a list of names, checked and in :data:`FORMATS` order.

    Raises:
        InvalidValue: an empty list or a name that is not a format.
    """
    names = [n.strip().lower() for n in (text.split(",") if isinstance(text, str) else text)]
    names = [n for n in names if n]
    unknown = [n for n in names if n not in FORMATS]
    if unknown or not names:
        wrong = f"{', '.join(repr(n) for n in unknown)} is not a format" if unknown else "no format given"
        message = f"--format: {wrong}; choose from {', '.join(FORMATS)} (comma-separated)"
        raise InvalidValue("--format", text, ", ".join(FORMATS), message=message)
    return tuple(f for f in FORMATS if f in names)


@attrs.frozen
class Written:
    """What :func:`write` wrote, and whether it had to skip the rendered formats."""

    files: tuple[Path, ...]
    skipped: tuple[str, ...] = ()
    """Rendered formats asked for but not written because ``dot`` is not installed."""


def dot_available() -> bool:
    """Whether graphviz's ``dot`` program is on the PATH."""
    return shutil.which("dot") is not None


def write(definitions: Definitions, out_dir: Path, formats: Sequence[str] = DEFAULT_FORMATS) -> Written:
    """Write every machine's diagrams into ``out_dir`` as ``<machine>.<format>``; created when missing.

    Nothing is written when ``out_dir`` is not a directory. SVG and PNG are skipped (and reported) without ``dot``.

    Raises:
        InvalidValue: ``out_dir`` exists and is not a directory, or a format is unknown.
    """
    chosen = parse_formats(formats)
    if out_dir.exists() and not out_dir.is_dir():
        message = f"--out: {out_dir} is a file, not a directory; nothing was written"
        raise InvalidValue("--out", str(out_dir), "a directory", message=message)
    render = dot_available()
    skipped = tuple(f for f in chosen if f in RENDERED and not render)
    out_dir.mkdir(parents=True, exist_ok=True)
    files: list[Path] = []
    for name, definition in definitions.items():
        graph = to_dot(definition)
        for fmt in chosen:
            path = out_dir / f"{name}.{fmt}"
            if fmt == "dot":
                path.write_text(graph.source, encoding="utf-8")
            elif fmt == "mmd":
                path.write_text(to_mermaid(definition), encoding="utf-8")
            elif fmt not in skipped:
                path.write_bytes(graph.pipe(format=fmt))
            else:
                continue
            files.append(path)
    return Written(tuple(files), skipped)


def default_out_dir(definitions: Definitions) -> Path:
    """``diagrams/`` beside the project's ``states/`` in a source checkout, else ``./diagrams``."""
    states = Path(definitions.directory)
    if (states.parent / "pyproject.toml").is_file():
        return states.parent / "diagrams"
    return Path.cwd() / "diagrams"
