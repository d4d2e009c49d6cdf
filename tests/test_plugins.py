"""Drivers and strategies from entry points: the built-ins' order, per-engine sets, and a real third-party plugin.

The plugin (``tests/plugins/example_array``) is a package of its own, with its own ``pyproject.toml``. It is built and
installed into a temporary directory (``pip install --target``, never into the project's environment) and exercised
in a subprocess whose path has that directory: its entry points are found as an installed plugin's would be.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from snapshotfsm import Engine
from snapshotfsm.drivers import DriverSet, installed_drivers
from snapshotfsm.drivers.primary import DefaultPrimaryDriver
from snapshotfsm.drivers.storpool import StorPoolDriver
from snapshotfsm.errors import InvalidValue
from snapshotfsm.strategies import installed_strategies
from snapshotfsm.strategies.default import DefaultSnapshotStrategy
from snapshotfsm.testing import PoolShape, QuickCloud

PLUGIN = Path(__file__).parent / "plugins" / "example_array"


def test_the_built_ins_load_through_their_entry_points_in_the_pinned_order() -> None:
    """Default, StorageSystem, Ceph, ScaleIO, StorPool: the factory keeps the first strict maximum, so order counts."""
    assert [s.name for s in installed_strategies()] == [
        "DefaultSnapshotStrategy",
        "StorageSystemSnapshotStrategy",
        "CephSnapshotStrategy",
        "ScaleIOSnapshotStrategy",
        "StorPoolSnapshotStrategy",
    ]
    assert [d.kind for d in installed_drivers()] == ["default", "powerflex", "storpool", "managed", "ontap"]
    assert [s.name for s in Engine.open(":memory:").strategies] == [s.name for s in installed_strategies()]


def test_an_engine_runs_with_the_strategies_and_drivers_it_is_given() -> None:
    """``Engine.open(strategies=..., drivers=...)`` replaces the installed sets for that engine only."""
    engine = Engine.open(":memory:", strategies=[DefaultSnapshotStrategy], drivers=[DefaultPrimaryDriver])
    assert [s.name for s in engine.strategies] == ["DefaultSnapshotStrategy"]
    zone = engine.add_zone("z")
    with pytest.raises(InvalidValue) as caught:
        engine.add_pool(zone, "sp", pool_type="StorPool", provider="StorPool")
    assert str(caught.value) == "no installed driver is storage provider 'StorPool' (installed: DefaultPrimary)"
    assert len(Engine.open(":memory:").strategies) == 5


def test_a_pool_its_provider_does_not_serve_is_refused_and_not_written() -> None:
    """The provider's driver must serve the pool type; the message lists what it serves."""
    cloud = QuickCloud()
    before = cloud.engine.store.conn.total_changes
    with pytest.raises(InvalidValue) as caught:
        cloud.engine.add_pool(cloud.zone, "odd", pool_type="RBD", provider="StorPool")
    assert (
        str(caught.value) == "provider 'StorPool' (StorPoolDriver) does not serve pool type 'RBD' (it serves: StorPool)"
    )
    assert cloud.engine.store.conn.total_changes == before


def test_two_drivers_of_one_provider_are_refused() -> None:
    """A driver set names each provider once."""

    class Rival(StorPoolDriver):
        kind = "rival"

    with pytest.raises(InvalidValue) as caught:
        DriverSet([StorPoolDriver, Rival])
    rival = "test_two_drivers_of_one_provider_are_refused.<locals>.Rival"
    assert str(caught.value) == f"drivers StorPoolDriver and {rival} both claim provider 'StorPool'"


def test_a_strategy_given_twice_is_refused() -> None:
    """The factory's order decides ties, so a strategy appears once."""
    with pytest.raises(InvalidValue) as caught:
        Engine.open(":memory:", strategies=[DefaultSnapshotStrategy, DefaultSnapshotStrategy()])
    assert str(caught.value) == "strategy DefaultSnapshotStrategy is given twice"


def test_the_quick_cloud_takes_a_first_snapshot() -> None:
    """Five lines from nothing to a backed-up snapshot."""
    cloud = QuickCloud()
    job = cloud.take(cloud.volume(PoolShape(hypervisor="XenServer", format="VHD")))
    assert (cloud.engine.job_status(job.id), cloud.engine.snapshot_of(job).status) == ("SUCCEEDED", "BackedUp")


@pytest.fixture(scope="module")
def plugin_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example plugin, built from a copy of its source and installed into a directory of its own."""
    root = tmp_path_factory.mktemp("plugin")
    source = root / "source"
    shutil.copytree(PLUGIN, source)
    site = root / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--no-deps",
            "--no-build-isolation",
            "--target",
            str(site),
            str(source),
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    return site


def _run(site: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(site)}
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, check=False)


SCRIPT = textwrap.dedent(
    """
    import json
    from snapshotfsm import Engine
    from snapshotfsm.store.records import StorageObject

    engine = Engine.open(":memory:")
    zone = engine.add_zone("zone1")
    engine.add_image_store(zone, "secondary")
    cluster = engine.add_cluster(zone, "kvm", hypervisor="KVM")
    host = engine.add_host(cluster, "host1")
    pool = engine.add_pool(zone, "array", pool_type="ExampleFS", provider="ExampleArray", cluster=cluster)
    alice = engine.add_account("alice")
    vm = engine.add_vm(alice, zone, "web", hypervisor="KVM", host=host)
    volume = engine.add_volume(alice, pool, "data", size=1 << 30, vm=vm)
    job = engine.create_snapshot(volume.id)
    engine.run()
    snapshot = engine.snapshot_of(job)
    on_array = [o.path for o in engine.store.find(StorageObject, "store_kind = 'primary' AND deleted_ms IS NULL")]
    take_strategy = engine.strategy_for(snapshot, "TAKE").name
    delete_strategy = engine.strategy_for(snapshot, "DELETE").name
    deleted = engine.delete_snapshot(snapshot.id)
    engine.run()
    left = engine.store.count(StorageObject, "deleted_ms IS NULL")
    print(json.dumps({
        "strategies": [s.name for s in engine.strategies],
        "take": engine.job_status(job.id), "status": snapshot.status, "on_array": on_array,
        "take_strategy": take_strategy, "delete_strategy": delete_strategy,
        "delete": engine.job_status(deleted.id), "after": engine.get(type(snapshot), snapshot.id).status, "left": left,
    }))
    """
)


def test_a_third_party_plugin_takes_backs_up_and_deletes_a_snapshot(plugin_site: Path, tmp_path: Path) -> None:
    """Installed apart, the plugin's driver and strategy are found and run a snapshot's whole life."""
    result = _run(plugin_site, "-c", SCRIPT, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout)
    assert found["strategies"][-1] == "ExampleArraySnapshotStrategy"
    assert (found["take"], found["status"]) == ("SUCCEEDED", "BackedUp")
    assert found["on_array"] and all(p.startswith("examplearray://array/") for p in found["on_array"])
    assert (found["take_strategy"], found["delete_strategy"]) == ("ExampleArraySnapshotStrategy",) * 2
    assert (found["delete"], found["after"], found["left"]) == ("SUCCEEDED", "Destroyed", 0)


def test_the_plugin_passes_the_contract_suites_in_its_own_tests(plugin_site: Path, tmp_path: Path) -> None:
    """A plugin author mixes snapshotfsm's contract suites into their own test case; they pass."""
    tests = tmp_path / "contract_tests.py"
    shutil.copy(PLUGIN / "contract_tests.py", tests)
    result = _run(plugin_site, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tests), cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert " passed" in result.stdout


def test_the_project_environment_does_not_have_the_plugin() -> None:
    """The plugin was installed apart: this process, on the project's environment, does not see it."""
    assert "ExampleArraySnapshotStrategy" not in [s.name for s in installed_strategies()]


def test_the_engine_says_which_strategy_handles_a_snapshot() -> None:
    """``Engine.priorities`` and ``Engine.strategy_for``: the factory's answers without reaching into the engine."""
    cloud = QuickCloud()
    snapshot = cloud.engine.snapshot_of(
        cloud.take(cloud.volume(PoolShape("PowerFlex", "PowerFlex", format="RAW", managed=True)))
    )
    assert cloud.engine.priorities(snapshot, "DELETE") == [
        ("DefaultSnapshotStrategy", 1),
        ("StorageSystemSnapshotStrategy", 3),
        ("CephSnapshotStrategy", 0),
        ("ScaleIOSnapshotStrategy", 3),
        ("StorPoolSnapshotStrategy", 0),
    ]
    chosen = cloud.engine.strategy_for(snapshot.id, "DELETE")
    assert chosen is not None and chosen.name == "StorageSystemSnapshotStrategy"  # the first of two HIGHEST
    with pytest.raises(InvalidValue) as caught:
        cloud.engine.strategy_for(snapshot, "TAKES")
    assert (
        str(caught.value) == "operation must be one of TAKE, BACKUP, DELETE, REVERT, COPY (got 'TAKES' that is a str)"
    )
