"""The explorer on a Dask cluster (``explore --dask``): the report one local process gives, and a clear refusal of a
cluster it cannot use, before any run."""

from __future__ import annotations

import json
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import attrs
import pytest
from click.testing import CliRunner, Result
from distributed import LocalCluster

from snapshotfsm.cli import main
from snapshotfsm.errors import ClusterError, InvalidValue
from snapshotfsm.explore import Options, cluster, document, explore
from snapshotfsm.explore.report import without_stats
from snapshotfsm.explore.scenarios import default_scenarios_dir

SUBSET = (
    "take:storpool/stopped/plain/sync/pool-copy/two-servers",
    "take-delete:nfs-vmware/stopped/plain/async/no-copies/one-server",
)
"""Two instances of the full product (one and two servers, a StorPool pool copy, an async backup)."""
SELECTION = ["--full", *(a for name in SUBSET for a in ("--scenario", name)), "--budget", "200", "--seed", "1"]
"""Their faults sampled: 200 runs, more than one batch of an instance, in about 3 s on one process."""


@pytest.fixture(scope="module")
def scheduler() -> Iterator[str]:
    """A local cluster of two single-threaded worker processes (jobs are pickled, as to remote machines)."""
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as local:
        yield local.scheduler_address


def _explore(*args: str) -> Result:
    return CliRunner().invoke(main, ["explore", *args], env={"COLUMNS": "200"})


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class TestTheReport:
    """A Dask cluster explores what one local process explores, and reports it the same."""

    def test_the_cluster_gives_the_report_of_one_worker(self, scheduler: str, tmp_path: Path) -> None:
        local, dask = tmp_path / "local.json", tmp_path / "dask.json"
        ran = _explore(*SELECTION, "--workers", "1", "--json", str(local))
        assert ran.exit_code == 0, ran.output
        ran = _explore(*SELECTION, "--dask", scheduler, "--json", str(dask))
        assert ran.exit_code == 0, ran.output
        one, two = (json.loads(p.read_text(encoding="utf-8")) for p in (local, dask))
        assert one["runs"]["cloudstack"]["faulted"] == 200
        assert one["findings"]
        assert without_stats(one) == without_stats(two)
        assert two["stats"]["workers"] == 2

    def test_a_scenario_directory_every_worker_reads(self, scheduler: str, tmp_path: Path) -> None:
        scenarios = tmp_path / "scenarios"
        scenarios.mkdir()
        (scenarios / "take.toml").write_bytes((default_scenarios_dir() / "take.toml").read_bytes())
        options = Options(scenarios=(SUBSET[0],), full=True, budget=20, scenario_dir=str(scenarios))
        here = document(explore(options))
        there = document(explore(attrs.evolve(options, dask=scheduler)))
        assert without_stats(here) == without_stats(there)


class TestClustersItCannotUse:
    """A cluster that cannot give the local report is refused in one line, before any run and any file is written."""

    def test_an_address_that_is_not_a_scheduler_address(self, tmp_path: Path) -> None:
        report = tmp_path / "report.json"
        ran = _explore("--scenario", "take", "--dask", "http://127.0.0.1:8787", "--json", str(report))
        assert ran.exit_code == 1
        assert ran.output.startswith("Error: Dask scheduler http://127.0.0.1:8787: not a scheduler address (unknown")
        assert ran.output.endswith("; e.g. tcp://host:8786\n")
        assert ran.output.count("\n") == 1
        assert not report.exists()

    def test_an_address_where_no_scheduler_answers(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(cluster, "CONNECT_TIMEOUT", 0.5)
        address = f"tcp://127.0.0.1:{_free_port()}"
        report = tmp_path / "report.json"
        ran = _explore("--scenario", "take", "--dask", address, "--json", str(report))
        assert ran.exit_code == 1
        assert ran.output == (
            f"Error: Dask scheduler {address}: no scheduler answered within 0.5 s (is `dask scheduler` running "
            "there?)\n"
        )
        assert not report.exists()

    def test_a_scheduler_without_workers(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(cluster, "CONNECT_TIMEOUT", 0.5)
        with LocalCluster(n_workers=0, processes=False, dashboard_address=":0") as empty:
            ran = _explore("--scenario", "take", "--dask", empty.scheduler_address)
            assert ran.exit_code == 1
            assert ran.output == (
                f"Error: Dask scheduler {empty.scheduler_address}: no worker joined within 0.5 s (start some: dask "
                f"worker {empty.scheduler_address})\n"
            )

    def test_workers_that_read_other_scenarios(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """A relative scenario directory is the workers' own directory's: here, another one's files, then none."""
        theirs, ours = tmp_path / "theirs", tmp_path / "ours"
        for root, scenario in ((theirs, "take"), (ours, "take-delete")):
            (root / "scenarios").mkdir(parents=True)
            (root / "scenarios" / "x.toml").write_bytes((default_scenarios_dir() / f"{scenario}.toml").read_bytes())
        monkeypatch.chdir(theirs)
        with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=":0") as local:
            monkeypatch.chdir(ours)
            with pytest.raises(ClusterError, match=r"worker tcp://\S+ has other scenarios than this machine"):
                explore(Options(scenarios=("x",), scenario_dir="scenarios", dask=local.scheduler_address))
            (ours / "mine").mkdir()
            (ours / "mine" / "x.toml").write_bytes((ours / "scenarios" / "x.toml").read_bytes())
            with pytest.raises(
                ClusterError,
                match=r"worker tcp://\S+ cannot explore: ScenarioError: mine: directory: does not exist",
            ):
                explore(Options(scenarios=("x",), scenario_dir="mine", dask=local.scheduler_address))

    def test_without_distributed(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setitem(sys.modules, "distributed", None)
        ran = _explore("--scenario", "take", "--dask", "tcp://127.0.0.1:8786")
        assert ran.exit_code == 1
        assert ran.output == "Error: --dask needs the distributed package: pip install 'snapshotfsm[dask]'\n"

    def test_workers_and_dask_together(self) -> None:
        ran = _explore("--scenario", "take", "--dask", "tcp://127.0.0.1:8786", "--workers", "2")
        assert ran.exit_code == 1
        assert ran.output == (
            "Error: workers=2 and dask exclude each other: the Dask cluster's own workers run the jobs (dask worker "
            "--nworkers N gives it more)\n"
        )

    def test_an_empty_address(self) -> None:
        with pytest.raises(InvalidValue, match="dask must be a Dask scheduler's address such as tcp://host:8786"):
            explore(Options(dask=" "))
