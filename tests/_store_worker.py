"""Management servers in their own processes, for ``test_store_processes.py``; and the log-consistency oracle.

Run by path with the test's interpreter (``sys.executable``), from any directory::

    python tests/_store_worker.py race PATH MS_ID fresh|preloaded
    python tests/_store_worker.py churn PATH MS_ID SEED ACKS

``race`` opens ``Engine.open(PATH, ms_id=MS_ID)``, prints ``ready``, waits for a line on stdin (the start signal
shared by every worker) and then tries ``SnapshotRequested`` on every volume in id order: ``fresh`` loads each volume
just before its transition, ``preloaded`` loaded them all before the start (so that every loss is a lost
compare-and-swap). It prints one JSON line: the ids it won and how many it lost to a ``ConcurrencyError`` or found
already moved (``IllegalTransition``).

``churn`` opens the store, prints ``ready`` and moves random entities by random legal events until it is killed,
appending ``<log id> <machine> <entity id> <dest>`` to ACKS (one ``write`` each) after every transition returned.

:func:`consistency_problems` is the oracle both test files apply to a database: every entity's state is the ``dest``
of its last log row, its ``update_count`` is the number of its logged state changes, and the log has no gap.
"""

from __future__ import annotations

import itertools
import json
import os
import random
import sys
from collections import defaultdict

from snapshotfsm.errors import ConcurrencyError, IllegalTransition
from snapshotfsm.store import Store
from snapshotfsm.store.records import Snapshot, SnapshotStoreRef, Volume

CHURNED = (Volume, Snapshot, SnapshotStoreRef)
"""The tables the churn worker moves (volumes and store refs have a compare-and-swap counter, snapshots do not)."""

STATE_CHANGES = ("event", "direct")
"""Log kinds that write the state column and bump the counter (``create``, ``remove`` and ``delete`` do not)."""


def consistency_problems(store: Store) -> list[str]:
    """What is wrong between the entity rows and ``transition_log``; an empty list when they agree.

    For every row of a table driven by an entity machine: its first log row is its creation, each later row
    starts where the previous one ended (or says what it ``overwrote``), the last one ends in the row's state, and
    ``update_count`` (where the table has one) counts the state changes. The log's ids run 1..N without a gap.
    """
    conn = store.conn
    problems: list[str] = []
    count, low, high = conn.execute("SELECT count(*), min(id), max(id) FROM transition_log").fetchone()
    if count and (low, high) != (1, count):
        problems.append(f"transition_log ids run {low}..{high} over {count} rows: a gap or a hole")
    logs: dict[tuple[str, int], list[tuple[str, str, str, str | None]]] = defaultdict(list)
    rows = conn.execute("SELECT machine, entity_id, source, dest, kind, overwrote FROM transition_log ORDER BY id")
    for machine, entity_id, source, dest, kind, overwrote in rows:
        logs[machine, entity_id].append((source, dest, kind, overwrote))
    for name, binding in store.bindings.items():
        if store.definitions[name].kind != "entity":
            continue
        table = binding.record.table
        counter = binding.counter or "NULL"
        for entity_id, value, counted in conn.execute(f"SELECT id, {binding.column}, {counter} FROM {table}"):
            where = f"{name} {entity_id}"
            entries = logs.pop((name, entity_id), [])
            if not entries or entries[0][2] != "create":
                problems.append(f"{where}: no creation logged")
                continue
            for (_, before, _, _), (source, _, kind, overwrote) in itertools.pairwise(entries):
                if before not in (source, overwrote):
                    problems.append(f"{where}: its {kind} row starts at {source}, but the row before ended at {before}")
            state = binding.state_of(value)
            if entries[-1][1] != state:
                problems.append(f"{where}: the row is {state} but its last log row ends at {entries[-1][1]}")
            changes = sum(1 for e in entries if e[2] in STATE_CHANGES)
            if binding.counter and counted != changes:
                problems.append(f"{where}: update_count {counted} but {changes} state changes logged")
    for (name, entity_id), entries in logs.items():
        if store.definitions[name].kind == "entity" and entries[-1][2] != "delete":
            problems.append(f"{name} {entity_id}: logged but the row is gone and no delete was logged")
    return problems


def _say(line: str) -> None:
    """One line to the parent, at once (it is waiting for it)."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def _race(path: str, ms_id: int, mode: str) -> None:
    from snapshotfsm.engine import Engine  # noqa: PLC0415 - the churn worker does without the engine's imports

    engine = Engine.open(path, ms_id=ms_id)
    ids = [v.id for v in engine.store.find(Volume)]
    preloaded = {v: engine.get(Volume, v) for v in ids} if mode == "preloaded" else {}
    _say("ready")
    sys.stdin.readline()
    won: list[int] = []
    lost = taken = 0
    for volume_id in ids:
        volume = preloaded.get(volume_id) or engine.get(Volume, volume_id)
        try:
            engine.transit(volume, "SnapshotRequested")
        except ConcurrencyError:
            lost += 1
        except IllegalTransition:
            taken += 1
        else:
            won.append(volume_id)
    engine.close()
    _say(json.dumps({"ms_id": ms_id, "won": won, "lost": lost, "taken": taken}))


def _churn(path: str, ms_id: int, seed: int, acks: str) -> None:
    rng = random.Random(seed)  # noqa: S311 - a reproducible choice of events, not a secret
    store = Store.open(path, ms_id=ms_id)
    entities = [(cls, row.id) for cls in CHURNED for row in store.find(cls)]
    fd = os.open(acks, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    _say("ready")
    while True:
        cls, entity_id = rng.choice(entities)
        entity = store.get(cls, entity_id)
        machine = store.machines[store.binding(entity).machine]
        allowed = machine.allowed(store.state_of(entity))
        if not allowed:
            continue
        store.clock.advance(1)
        moved = store.transit(entity, rng.choice(allowed), job_id=rng.choice((None, seed)))
        log_id = store.conn.execute("SELECT last_insert_rowid()").fetchone()[0]
        os.write(fd, f"{log_id} {machine.name} {entity_id} {store.state_of(moved)}\n".encode())


def main(argv: list[str]) -> None:
    """Run the worker named by ``argv[0]``."""
    command, path, ms_id, *rest = argv
    if command == "race":
        _race(path, int(ms_id), rest[0])
    elif command == "churn":
        _churn(path, int(ms_id), int(rest[0]), rest[1])
    else:
        raise SystemExit(f"unknown worker {command!r} (race, churn)")


if __name__ == "__main__":
    main(sys.argv[1:])
