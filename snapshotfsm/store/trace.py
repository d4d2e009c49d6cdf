"""Reading back the SQL a store ran, as ``sqlite3``'s trace callback reports it.

``Connection.set_trace_callback`` hands over every statement with its bound values written in as literals. Two
tools need the statement without them: the benchmarks replay a trace with the literals bound again as parameters
(so that a repeated statement is compiled once, as the engine's are), and the query-plan test explains each distinct
query once, whatever values it ran with. One tokenizer serves both.
"""

from __future__ import annotations

import re

WRITES = frozenset({"INSERT", "UPDATE", "DELETE", "REPLACE"})
"""The statement kinds that write rows."""
PARAMETERISED = frozenset({"SELECT", "INSERT", "UPDATE", "DELETE", "REPLACE", "WITH"})
"""Statements whose literals may become parameters; PRAGMA values and savepoint names may not."""

_TOKEN = re.compile(
    r"(?P<blob>[xX]'[0-9a-fA-F]*')"
    r"|(?P<text>'(?:[^']|'')*')"
    r"|(?P<word>\"(?:[^\"]|\"\")*\"|`[^`]*`|\[[^\]]*\]|[A-Za-z_][A-Za-z0-9_$]*)"
    r"|(?P<number>(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?)"
    r"|(?P<other>\s+|.)",
    re.DOTALL,
)
"""SQLite's tokens as far as literals go: blobs, strings, identifiers and keywords (quoted or not), numbers."""
_WRITE_IN_WITH = re.compile(r"(?i)\b(INSERT|UPDATE|DELETE|REPLACE)\b")


def verb(sql: str) -> str:
    """The statement's kind: its first keyword (a WITH statement is the write it contains, else a SELECT)."""
    parts = sql.split(None, 1)
    word = parts[0].rstrip(";").upper() if parts else ""
    if word == "WITH":
        found = _WRITE_IN_WITH.search(sql)
        return found.group(1).upper() if found else "SELECT"
    return word


def parameterise(sql: str, *, nulls: bool = True) -> tuple[str, tuple[object, ...]]:
    """The expanded text with its literals turned back into parameters, and their values.

    ``'it''s'`` gives ``'it's'``, ``12`` gives ``12``, ``1.5`` gives ``1.5``, ``x'00ff'`` gives bytes, and ``NULL``
    gives ``None`` unless ``nulls`` is False: a query plan differs between ``x IS NOT NULL`` (an index range) and
    ``x IS NOT ?``, and the engine writes its ``IS NULL`` tests as text, so the plan of the text is the one SQLite
    chose. A minus sign stays in the text (``-?``), which reads the same. Statements other than SELECT and the
    writes (BEGIN, SAVEPOINT, PRAGMA, ...) are kept as they are: their words cannot be parameters.
    """
    if verb(sql) not in PARAMETERISED:
        return sql, ()
    out: list[str] = []
    params: list[object] = []
    for token in _TOKEN.finditer(sql):
        kind, text = token.lastgroup, token.group()
        if kind == "text":
            params.append(text[1:-1].replace("''", "'"))
        elif kind == "blob":
            params.append(bytes.fromhex(text[2:-1]))
        elif kind == "number":
            params.append(float(text) if any(c in text for c in ".eE") else int(text))
        elif kind == "word" and nulls and text.upper() == "NULL":
            params.append(None)
        else:
            out.append(text)
            continue
        out.append("?")
    return "".join(out), tuple(params)
