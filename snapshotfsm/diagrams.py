"""State diagrams generated from the definitions: graphviz DOT (and SVG/PNG through ``dot``) and Mermaid text.

The DOT is built with the ``graphviz`` package straight from :class:`~snapshotfsm.definitions.Definition`, not with
``transitions``' ``GraphMachine``: the definitions carry what the drawing needs (error and failure events, terminal,
transitional and waiting states, rows CloudStack never fires, the usage flag) and ``GraphMachine`` only knows states
and triggers. Output is deterministic: the same definitions give byte-identical DOT and Mermaid.
"""

from __future__ import annotations

import html
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
PROFILE_COLOUR = "#1f6fb2"
FONT = "Helvetica"
STATE_STYLES = {
    "plain": {"fillcolor": "#ffffff"},
    "transitional": {"fillcolor": "#fff4cc", "style": "rounded,filled,dashed"},
    "waiting": {"fillcolor": "#e3f0fb"},
    "error": {"fillcolor": "#fde0dc", "color": ERROR_COLOUR, "fontcolor": ERROR_COLOUR},
    "terminal": {"peripheries": "2"},
}


UNREACHABLE_COLOUR = "#757575"
UNREACHABLE_STYLE = {"fillcolor": "#eeeeee", "style": "rounded,filled,dotted", "fontcolor": UNREACHABLE_COLOUR}
"""A state no transition reaches from the initial one (CloudStack declares some): grey and dotted, and labelled."""


@attrs.frozen
class Edge:
    """The transitions from one state to another of one kind, drawn as a single edge labelled with their events."""

    source: str
    dest: str
    kind: str
    """``normal``, ``error`` (a failure event or an error-tagged destination), ``never`` (never fired upstream) or
    ``profile`` (exists only under some profiles, named in its label: a fix of the ``hardened`` profile)."""
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
    """How a transition is drawn: error edges apart, rows CloudStack never fires greyed out (spec §1.2 #11).

    A transition that only some profiles have is drawn in its own colour whatever else it is: it is not
    CloudStack's, and a reader comparing with upstream must see that at once.
    """
    if t.profiles:
        return "profile"
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
    if t.profiles:
        text += f" [{', '.join(t.profiles)}]"
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
    reachable = definition.reachable()
    for state in definition.states:
        attrs_ = dict(STATE_STYLES[state_kind(state)])
        if state.terminal:
            attrs_.update(STATE_STYLES["terminal"])
        attrs_.update(_hub_size(degree.get(state.name, 0), across=across))
        label = state.name
        if state.name not in reachable:
            attrs_.update(UNREACHABLE_STYLE)
            label += "\\n(unreachable)"
        graph.node(state.name, label, **attrs_)
    graph.edge("__initial__", definition.initial)
    loops: dict[str, list[Edge]] = {}
    for edge in drawn:
        if edge.source == edge.dest:
            loops.setdefault(edge.source, []).append(edge)
            continue
        graph.edge(edge.source, edge.dest, label="\\l".join(edge.labels) + "\\l", **_edge_style(edge.kind))
    for name, its_loops in loops.items():
        graph.edge(name, name, **_loop(its_loops, across=across))
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


def _loop(loops: Sequence[Edge], *, across: bool) -> dict[str, str]:
    """One self-loop per state, on the side away from its neighbours, listing every event of each kind in its colour.

    Dot stacks a state's several loops with their labels over each other, and a loop drawn below one state meets
    the loop drawn above the state under it (volume's ``Destroy`` and ``Expunged``, both with a success and a
    failure loop). One loop per state, always above it (left of it top to bottom), keeps each label by its own
    state: normal events in black, error ones in red with ✗, never-fired ones grey. The line takes the style of
    its most ordinary kind.
    """
    order = ("normal", "error", "never", "profile")
    ordered = sorted(loops, key=lambda e: order.index(e.kind))
    colours = {"normal": "black", "error": ERROR_COLOUR, "never": NEVER_COLOUR, "profile": PROFILE_COLOUR}
    marks = {"normal": "", "error": " ✗", "never": " ·", "profile": " ◆"}
    lines = [
        f'<FONT COLOR="{colours[e.kind]}">{html.escape(label)}{marks[e.kind]}</FONT><BR ALIGN="LEFT"/>'
        for e in ordered
        for label in e.labels
    ]
    side = "n" if across else "e"
    style = _edge_style(ordered[0].kind)
    return {**style, "label": "<" + "".join(lines) + ">", "tailport": side, "headport": side}


def _title(definition: Definition) -> str:
    title = definition.title or definition.name
    cited = f" (spec {definition.spec})" if definition.spec else ""
    return f"{definition.name}: {title}{cited}" if title != definition.name else f"{definition.name}{cited}"


def _edge_style(kind: str) -> dict[str, str]:
    if kind == "error":
        return {"color": ERROR_COLOUR, "fontcolor": ERROR_COLOUR, "style": "dashed", "penwidth": "1.3"}
    if kind == "never":
        return {"color": NEVER_COLOUR, "fontcolor": NEVER_COLOUR, "style": "dotted"}
    if kind == "profile":
        return {"color": PROFILE_COLOUR, "fontcolor": PROFILE_COLOUR, "style": "bold"}
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
    if len(definition.reachable()) < len(definition.states):
        rows.append(
            f'<TR><TD BGCOLOR="#eeeeee" STYLE="dotted"><FONT COLOR="{UNREACHABLE_COLOUR}">unreachable</FONT></TD>'
            '<TD ALIGN="LEFT">no transition reaches it from the initial state</TD></TR>'
        )
    rows.append(
        '<TR><TD><FONT COLOR="#c0392b">- - -&gt;</FONT></TD>'
        '<TD ALIGN="LEFT"><FONT COLOR="#c0392b">error transition: failure event or into an error state</FONT></TD></TR>'
    )
    if any(t.never_fired for t in definition.transitions):
        rows.append(
            '<TR><TD><FONT COLOR="#9e9e9e">· · ·&gt;</FONT></TD>'
            '<TD ALIGN="LEFT"><FONT COLOR="#9e9e9e">in the table, never fired by CloudStack</FONT></TD></TR>'
        )
    if definition.profiled:
        rows.append(
            f'<TR><TD><FONT COLOR="{PROFILE_COLOUR}"><B>——&gt;</B></FONT></TD>'
            f'<TD ALIGN="LEFT"><FONT COLOR="{PROFILE_COLOUR}">only under the profiles in [brackets]'
            " (a fix, not CloudStack's)</FONT></TD></TR>"
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
        "    classDef unreachable fill:#eeeeee,color:#757575,stroke-dasharray:2 2",
        f"    [*] --> {definition.initial}",
    ]
    marks = {"normal": "", "error": " ✗ error", "never": " · never fired", "profile": " ◆ profile only"}
    for edge in edges(definition):
        label = "<br>".join(edge.labels) + marks[edge.kind]
        lines.append(f"    {edge.source} --> {edge.dest}: {label}")
    lines += [f"    {s.name} --> [*]" for s in definition.states if s.terminal]
    reachable = definition.reachable()
    for kind in ("error", "transitional", "waiting", "terminal", "unreachable"):
        members = [s.name for s in definition.states if _has_class(s, kind, reachable)]
        if members:
            lines.append(f"    class {','.join(members)} {kind}")
    lines += [
        f"    note right of {definition.initial}",
        "        Legend: red = error state; yellow, dashed = transitional; blue = waiting;",
        "        thick border = terminal; '✗ error' = error transition; '· never fired' = never fired upstream;",
        "        (U) = usage flag; grey, dotted = unreachable (no transition reaches it)"
        + (";" if definition.profiled else ""),
        *(
            ["        '◆ profile only' = only under the profiles in [brackets] (a fix, not CloudStack's)"]
            if definition.profiled
            else []
        ),
        "    end note",
    ]
    return "\n".join(lines) + "\n"


def _has_class(state: StateDef, kind: str, reachable: frozenset[str]) -> bool:
    if kind == "unreachable":
        return state.name not in reachable
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

    SVG and PNG are skipped (and reported) without ``dot``, unless nothing else was asked for: then there is
    nothing to write, which is an error rather than "wrote 0 files".

    Raises:
        InvalidValue: a format is unknown; only formats that need ``dot`` were asked for and it is not installed;
            ``out_dir`` or one of its parents is a file; the directory cannot be created or written (a read-only
            place, ``/proc``). Nothing is written in the first three cases.
    """
    chosen = parse_formats(formats)
    render = dot_available()
    skipped = tuple(f for f in chosen if f in RENDERED and not render)
    if skipped == chosen:
        message = f"--format {','.join(chosen)}: needs graphviz's dot, which is not installed; {INSTALL_HINT}"
        raise InvalidValue("--format", ",".join(chosen), "a format dot is not needed for", message=message)
    _check_out_dir(out_dir)
    files: list[Path] = []
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
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
    except OSError as exc:
        done = f"{len(files)} files were written before" if files else "nothing was written"
        message = f"--out: cannot write into {out_dir} ({exc.strerror or exc}); {done}"
        raise InvalidValue("--out", str(out_dir), "a directory that can be written", message=message) from exc
    return Written(tuple(files), skipped)


def _check_out_dir(out_dir: Path) -> None:
    """Refuse an ``out_dir`` that is, or lies below, a regular file, before anything is created."""
    for place in (out_dir, *out_dir.parents):
        if place.exists():
            if place.is_dir():
                return
            below = "" if place == out_dir else f" (so {out_dir} cannot be a directory)"
            message = f"--out: {place} is a file, not a directory{below}; nothing was written"
            raise InvalidValue("--out", str(out_dir), "a directory", message=message)


def default_out_dir() -> Path:
    """``diagrams/`` of the current directory, absolute: where ``snapshotfsm diagrams`` writes without ``--out``.

    Never the source checkout: a command run elsewhere must not write into the installed package's tree.
    """
    return Path("diagrams").absolute()
