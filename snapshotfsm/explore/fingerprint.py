"""The fingerprint of a world's state: equal fingerprints, equal futures (TLC's fingerprints of visited states).

What a run will still do depends on the database (CloudStack's tables, ours, the simulated storage), on what each
management server holds in memory (its live runs and what they wait for, its scheduled tasks, whether it is up), on
the observer's record that the invariants read, on the faults still to fire and on the rest of the program. The
fingerprint digests all of it, canonicalised so that two runs that reached one state by different paths match:

- UUIDs are numbered in the order they first appear (the engine draws them from a seeded generator, so two paths
  draw different ones for the same rows);
- timestamps (``DATETIME`` text and ``*_ms`` columns) become their distance to the simulated now;
- the record's call numbers are renumbered in the order the calls were made.

Row ids are kept as they are: SQLite gives each new row the next one, so they follow from the history and the same
rows have the same ids; a canonical renaming would need every foreign key to be known, and a wrong one would merge
states that differ.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from snapshotfsm.engine import Engine
    from snapshotfsm.record import RunRecord

_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_STAMP = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d")
_CALL_NUMBER = re.compile(r"#\d+$")


class Canon:
    """Canonical text for one fingerprint: UUIDs numbered by first appearance, times relative to ``now_ms``."""

    def __init__(self, now_ms: int, epoch: dt.datetime) -> None:
        self.now_ms = now_ms
        self.epoch = epoch
        self.uuids: dict[str, str] = {}
        self._stamps: dict[str, str] = {}

    def text(self, text: str) -> str:
        """``text`` with its UUIDs and timestamps canonical."""
        if "-" not in text:
            return text
        return _STAMP.sub(self._stamp, _UUID.sub(self._uuid, text))

    def value(self, column: str, value: object) -> object:
        """A column's value, canonical."""
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, int) and not isinstance(value, bool) and column.endswith("_ms") and value > 0:
            return f"now-{self.now_ms - value}ms"
        return value

    def _uuid(self, match: re.Match[str]) -> str:
        return self.uuids.setdefault(match.group(0), f"uuid{len(self.uuids)}")

    def _stamp(self, match: re.Match[str]) -> str:
        text = match.group(0)
        found = self._stamps.get(text)
        if found is None:
            stamp = dt.datetime.strptime(text, "%Y-%m-%d %H:%M:%S").replace(tzinfo=dt.UTC)
            found = f"now-{(self.now_ms - int((stamp - self.epoch).total_seconds() * 1000)) // 1000}s"
            self._stamps[text] = found
        return found


def fingerprint(servers: Iterable[Engine], *, extra: object = ()) -> str:
    """The digest of the world the ``servers`` share (database, memories, record, scheduler), plus ``extra``.

    ``extra`` is what the caller knows of the future that the world does not hold: the program still to run, the
    fault rules not yet fired, what a crash will lead to.
    """
    servers = list(servers)
    first = servers[0]
    clock = first.clock
    canon = Canon(clock.now_ms, clock.start)
    digest = hashlib.blake2b(digest_size=16)
    for chunk in _parts(servers, canon):
        digest.update(chunk.encode())
        digest.update(b"\x00")
    digest.update(repr(extra).encode())
    return digest.hexdigest()


def _parts(servers: list[Engine], canon: Canon) -> Iterator[str]:
    store = servers[0].store
    conn = store.conn
    tables = [
        row[0]
        for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")
    ]
    for table in sorted(tables):
        cursor = conn.execute(f'SELECT * FROM "{table}" ORDER BY rowid')
        rows = cursor.fetchall()
        if not rows:
            continue
        times = [n for n, d in enumerate(cursor.description) if d[0].endswith("_ms")]
        if times:
            rows = [tuple(canon.value("_ms", v) if n in times else v for n, v in enumerate(row)) for row in rows]
        yield f"table {table} {canon.text(repr(rows))}"
    now = canon.now_ms
    yield "tasks"
    for task in servers[0].scheduler.pending():
        yield repr((task.at_ms - now, task.label, task.owner, task.periodic))
    for server in sorted(servers, key=lambda s: s.ms_id):
        rt = server.rt
        yield f"server {server.ms_id} down={rt.down} incarnation={rt.incarnation}"
        for run in server.runner.live_runs():
            summary = {k: canon.value(k, v) for k, v in run.ctx.summary().items()}
            waits = server.runner.awaiting.get(run.id, [])
            yield repr((run.id, run.machine, run.state, summary, waits, run.suspended is not None))
    yield from _record(servers[0].record, canon)


def _record(record: RunRecord, canon: Canon) -> Iterator[str]:
    numbers = {call.call: n for n, call in enumerate(record.issued)}

    def call(name: str) -> str:
        return _CALL_NUMBER.sub(f"#{numbers.get(name, -1)}", name)

    now = canon.now_ms
    yield "record"
    for c in record.issued:
        yield repr(("issued", call(c.call), c.ms_id, now - c.at_ms))
    for d in record.deliveries:
        yield repr(("delivered", call(d.call), now - d.at_ms, d.dropped))
    for name, why in sorted(record.never_answered.items()):
        yield repr(("unanswered", call(name), why))
    for charge in record.charges:
        yield repr(("charge", charge.account_id, charge.resource, charge.delta, charge.owner_id, now - charge.at_ms))
