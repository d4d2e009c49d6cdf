"""Several management servers in their own processes on one database file: races, and SIGKILL while writing.

The workers are ``tests/_store_worker.py``, run by path with this interpreter. Each race starts every worker at once:
a worker prints ``ready`` once it has opened the database (and, in ``preloaded`` mode, read every volume), and all of
them get the start line together. The kills use wall-clock delays on purpose: a kill must land at a moment nobody
chose, inside SQLite's commit as often as anywhere else.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from _store_worker import CHURNED, consistency_problems

from snapshotfsm.engine import Engine
from snapshotfsm.store import Store
from snapshotfsm.store.records import Snapshot, SnapshotStoreRef, TransitionLog, Volume

WORKER = Path(__file__).with_name("_store_worker.py")
PARENT_MS = 100
"""The server id of the process that builds the database; the workers are servers 1, 2, 3."""


@contextmanager
def workers(*argvs: list[str]) -> Iterator[list[subprocess.Popen[str]]]:
    """Start one worker per argument list; kill (by pid) any still running when the block ends."""
    procs: list[subprocess.Popen[str]] = []
    try:
        for argv in argvs:
            procs.append(  # noqa: PERF401 - one at a time, so that those started are killed if a later start fails
                subprocess.Popen(
                    [sys.executable, str(WORKER), *argv],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                )
            )
        yield procs
    finally:
        for proc in procs:
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
            proc.communicate()


def wait_ready(proc: subprocess.Popen[str]) -> None:
    """Block until the worker says it has opened the database; show its stderr if it died instead."""
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if line != "ready\n":
        proc.wait(timeout=30)
        pytest.fail(f"worker exited with {proc.returncode} before it was ready: {proc.communicate()[1]}")


def build(path: Path, volumes: int = 0, snapshots: int = 0, refs: int = 0) -> None:
    """A database with ``volumes`` Ready volumes, ``snapshots`` snapshots and ``refs`` Ready store refs."""
    store = Store.open(path, ms_id=PARENT_MS)
    with store.atomic():
        for i in range(volumes):
            store.insert(Volume(name=f"vol{i}", account_id=1, data_center_id=1, size=1 << 30))
        for i in range(snapshots):
            store.insert(Snapshot(name=f"snap{i}", account_id=1, data_center_id=1, volume_id=i % max(volumes, 1) + 1))
        for i in range(refs):
            store.insert(
                SnapshotStoreRef(store_id=1, store_role="Image", snapshot_id=i % max(snapshots, 1) + 1, state="Ready")
            )
    store.close()


@pytest.mark.parametrize("mode", ["fresh", "preloaded"])
def test_racing_servers_each_volume_is_won_exactly_once(tmp_path: Path, mode: str) -> None:
    """Three servers try SnapshotRequested on the same 200 volumes at once: one winner per volume, a gapless log."""
    path = tmp_path / "cloud.db"
    volumes = 200
    build(path, volumes=volumes)
    # A first server has run on the file. (Engines opened at once on a database no engine has opened yet can
    # collide: Inventory.ensure_system_account reads, then inserts account 1, outside a write transaction.)
    Engine.open(path, ms_id=PARENT_MS).close()
    servers = (1, 2, 3)
    with workers(*(["race", str(path), str(ms), mode] for ms in servers)) as procs:
        for proc in procs:
            wait_ready(proc)
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        results = []
        for proc in procs:
            out, err = proc.communicate(timeout=120)
            assert proc.returncode == 0, err
            results.append(json.loads(out))
    won = {ms["ms_id"]: ms["won"] for ms in results}
    assert sum(len(ids) for ids in won.values()) == volumes
    assert sorted(v for ids in won.values() for v in ids) == list(range(1, volumes + 1))
    for result in results:
        assert len(result["won"]) + result["lost"] + result["taken"] == volumes
        if mode == "preloaded":  # every record was read before the start: each loss is a lost compare-and-swap
            assert result["taken"] == 0

    store = Store.open(path)
    moves = store.find(TransitionLog, "kind = 'event'")
    assert [(m.source, m.event, m.dest) for m in moves] == [("Ready", "SnapshotRequested", "Snapshotting")] * volumes
    assert sorted(m.entity_id for m in moves) == list(range(1, volumes + 1))
    assert {m.entity_id: m.ms_id for m in moves} == {v: ms for ms, ids in won.items() for v in ids}
    assert {(v.state, v.update_count) for v in store.find(Volume)} == {("Snapshotting", 1)}
    ids = [h.seq for h in store.history()]
    assert ids == list(range(1, 2 * volumes + 1))
    assert {h.ms_id for h in store.history() if h.kind == "create"} == {PARENT_MS}
    assert consistency_problems(store) == []
    store.close()


def test_sigkill_while_writing_leaves_every_transition_whole_or_absent(tmp_path: Path) -> None:
    """A server killed at random moments, again and again: each transition is all there (row, counter, log) or not."""
    path = tmp_path / "cloud.db"
    build(path, volumes=150, snapshots=60, refs=120)
    rng = random.Random(20260101)  # noqa: S311 - reproducible delays, not secrets
    logged = Store.open(path)
    total = logged.count(TransitionLog)
    logged.close()
    kills = 10
    for round_ in range(kills):
        acks = tmp_path / f"acks-{round_}.txt"
        argv = ["churn", str(path), str(round_ + 1), str(1000 + round_), str(acks)]
        with workers(argv) as (proc,):
            wait_ready(proc)
            time.sleep(rng.uniform(0.05, 0.35))
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
            assert proc.returncode == -signal.SIGKILL

        store = Store.open(path)  # recovery happens here, as a restarted server would see it
        assert store.conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert consistency_problems(store) == []
        now = store.count(TransitionLog)
        assert now > total, f"round {round_}: the worker wrote nothing before it was killed"
        total = now
        # Durability: every transition the worker saw returned is in the log, as the worker saw it.
        for line in acks.read_text(encoding="utf-8").splitlines():
            seq, machine, entity_id, dest = line.split()
            row = store.get(TransitionLog, int(seq))
            assert (row.machine, row.entity_id, row.dest, row.ms_id) == (machine, int(entity_id), dest, round_ + 1)
        store.close()

    store = Store.open(path)
    per_kind = {cls.table: store.count(cls) for cls in CHURNED}
    assert per_kind == {"volumes": 150, "snapshots": 60, "snapshot_store_ref": 120}
    assert {h.ms_id for h in store.history() if h.kind == "event"} == set(range(1, kills + 1))
    store.close()
