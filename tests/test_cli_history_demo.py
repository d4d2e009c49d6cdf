"""The ``history`` and ``demo`` commands: each is one library call, rendered; errors are "Error: ..." and exit 1."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner
from lifecycle_cloud import refs, stored

from snapshotfsm.cli import main
from snapshotfsm.demo import run_demo
from snapshotfsm.engine import Engine
from snapshotfsm.store.records import Snapshot


def _database(path: Path) -> int:
    engine = Engine.open(path)
    zone = engine.add_zone("z")
    engine.add_image_store(zone, "s")
    cluster = engine.add_cluster(zone, "c", hypervisor="XenServer")
    host = engine.add_host(cluster, "h")
    pool = engine.add_pool(zone, "p", cluster=cluster)
    alice = engine.add_account("alice")
    vm = engine.add_vm(alice, zone, "vm", hypervisor="XenServer", host=host)
    volume = engine.add_volume(alice, pool, "v", size=1 << 30, vm=vm, format="VHD")
    job = engine.create_snapshot(volume.id)
    engine.run()
    engine.close()
    return job.instance_id or 0


class TestHistory:
    def test_a_snapshots_history_reads_like_the_walkthrough(self, tmp_path: Path) -> None:
        """A snapshot's rows, in order, from create to BackedUp (spec §13.1)."""
        db = tmp_path / "h.db"
        snapshot_id = _database(db)
        args = ["history", "--db", str(db), "--snapshot", str(snapshot_id), "--only-snapshot"]
        result = CliRunner().invoke(main, args, env={"COLUMNS": "200"})
        assert result.exit_code == 0, result.output
        moves = [line for line in result.output.splitlines() if "│ snapshot " in line]
        assert [m.split("│")[8].strip() for m in moves] == [
            "create",
            "CreateRequested",
            "OperationSucceeded",
            "BackupToSecondary",
            "OperationSucceeded",
        ]
        assert "(5 rows)" in result.output

    def test_the_whole_run_and_a_job(self, tmp_path: Path) -> None:
        """Without a filter every row is listed; --job keeps the rows written for that job."""
        db = tmp_path / "h.db"
        _database(db)
        everything = CliRunner().invoke(main, ["history", "--db", str(db)])
        job = CliRunner().invoke(main, ["history", "--db", str(db), "--job", "1"])
        assert everything.exit_code == job.exit_code == 0
        assert len(everything.output.splitlines()) > len(job.output.splitlines()) > 10

    def test_a_missing_file_is_an_error(self, tmp_path: Path) -> None:
        """A path with no file is refused and nothing is created."""
        result = CliRunner().invoke(main, ["history", "--db", str(tmp_path / "nope.db")])
        assert result.exit_code == 1
        assert result.output == f"Error: {tmp_path / 'nope.db'}: no such database file\n"
        assert not (tmp_path / "nope.db").exists()

    def test_an_empty_file_is_an_error_and_stays_empty(self, tmp_path: Path) -> None:
        """A zero-byte file is not given a schema: history only reads."""
        path = tmp_path / "empty.db"
        path.touch()
        result = CliRunner().invoke(main, ["history", "--db", str(path)])
        assert result.exit_code == 1
        assert result.output == f"Error: {path}: is an empty file, not a snapshotfsm database; nothing was changed\n"
        assert path.read_bytes() == b""
        assert sorted(p.name for p in tmp_path.iterdir()) == ["empty.db"]
        assert not (tmp_path / "nope.db").exists()

    def test_a_foreign_file_is_an_error(self, tmp_path: Path) -> None:
        """A file that is not a snapshotfsm database is refused and left as it was."""
        path = tmp_path / "x.db"
        path.write_bytes(b"hello")
        result = CliRunner().invoke(main, ["history", "--db", str(path)])
        assert result.exit_code == 1
        assert "not a SQLite database" in result.output
        assert path.read_bytes() == b"hello"

    def test_two_filters_are_refused(self, tmp_path: Path) -> None:
        """--snapshot and --volume together are ambiguous."""
        db = tmp_path / "h.db"
        _database(db)
        result = CliRunner().invoke(main, ["history", "--db", str(db), "--snapshot", "1", "--volume", "1"])
        assert result.exit_code == 1
        assert result.output == "Error: give at most one of --snapshot, --volume, --job, --machine\n"


class TestDemo:
    def test_the_demo_prints_every_scenario_and_where_to_look(self, tmp_path: Path) -> None:
        """The table names each scenario; the database holds what it says."""
        db = tmp_path / "demo.db"
        result = CliRunner().invoke(main, ["demo", "--db", str(db)], env={"COLUMNS": "200"})
        assert result.exit_code == 0, result.output
        for scenario in (
            "crash, then restart",
            "XenServer NFS, sync backup",
            "KVM NFS",
            "detached",
            "Ceph RBD",
            "PowerFlex",
            "StorPool",
            "managed SolidFire",
            "encrypted on a running VM",
            "async backup",
            "zone copy",
            "hourly policy",
        ):
            assert scenario in result.output
        assert f"snapshotfsm history --db {db} --snapshot 2" in " ".join(result.output.split())
        engine = Engine.open(db)
        states = {s.id: s.status for s in engine.store.find(Snapshot)}
        assert states[2] == "BackedUp"
        assert "Destroyed" in states.values()
        engine.close()

    def test_the_demo_shows_a_xenserver_chain_and_the_delete_of_its_middle(self) -> None:
        """Full, delta, delta (§16.2), one line each; the middle's delete hides its ref and keeps its file (§16.3)."""
        engine, outcomes = run_demo(":memory:")
        chain = [o for o in outcomes if o.scenario.startswith("XenServer chain")]
        first, second, third = (o.snapshot_id for o in chain[:3])
        assert [(o.scenario, o.snapshot_state, o.job, o.note) for o in chain] == [
            (
                "XenServer chain: 1st",
                "BackedUp",
                "SUCCEEDED",
                "a full copy: 8.00 GiB on secondary, a new chain (§16.2)",
            ),
            (
                "XenServer chain: 2nd",
                "BackedUp",
                "SUCCEEDED",
                f"a delta on snapshot {first}: 2.00 GiB on secondary (§16.2)",
            ),
            (
                "XenServer chain: 3rd",
                "BackedUp",
                "SUCCEEDED",
                f"a delta on snapshot {second}: 2.00 GiB on secondary (§16.2)",
            ),
            (
                "XenServer chain: delete the 2nd",
                "Destroyed",
                "SUCCEEDED",
                "its image ref is Hidden and its file kept: the 3rd delta needs it (§16.3)",
            ),
        ]
        assert chain[3].snapshot_id == second
        assert [state for _, state in refs(engine, second)] == ["Hidden"]
        assert stored(engine, third) == [("primary", True), ("image", True)]
        engine.close()
