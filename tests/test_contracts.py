"""The built-in drivers and strategies keep the contracts ``snapshotfsm.testing`` offers plugin authors."""

from __future__ import annotations

import pytest

from snapshotfsm.drivers.managed import ManagedDriver, OntapDriver
from snapshotfsm.drivers.powerflex import PowerFlexDriver
from snapshotfsm.drivers.primary import DefaultPrimaryDriver
from snapshotfsm.drivers.storpool import StorPoolDriver
from snapshotfsm.strategies.array import CephSnapshotStrategy, ScaleIOSnapshotStrategy
from snapshotfsm.strategies.default import DefaultSnapshotStrategy
from snapshotfsm.strategies.storage_system import StorageSystemSnapshotStrategy
from snapshotfsm.strategies.storpool import StorPoolSnapshotStrategy
from snapshotfsm.testing import DriverContract, PoolShape, StrategyContract

# What the contract suites break at their end, under the cloudstack profile (upstream's behaviour):
FAILED_TAKE = pytest.mark.violates(
    "answer-matches-state",
    "counts-match-recount",
    "no-transitional-state",
    "usage-matches-objects",
    tests=["test_a_failed_take_answer_rolls_the_take_back"],
)
"""A driver that throws at the take leaves the snapshot Creating, still charged, with its ON_PRIMARY (§5.6)."""
NEVER_ANSWERED = pytest.mark.violates("counts-match-recount", tests=["test_no_answer_leaves_the_take_waiting"])
"""A take that is never answered keeps its charge ahead of any object."""
ARRAY_DELETE_FAILED = pytest.mark.violates(
    "answer-matches-state",
    "counts-match-recount",
    "no-transitional-state",
    tests=["test_a_failed_delete_answer_fails_the_delete"],
)
"""An array's failed delete leaves its ref Destroying (no transaction there, §21.2), its count never given back."""
PRIMARY_ONLY_DELETE = pytest.mark.violates("counts-match-recount", tests=["test_a_delete_drops_what_the_take_put"])
"""A delete never gives back primary_storage for a snapshot kept only on primary (§9.4)."""


@FAILED_TAKE
@NEVER_ANSWERED
class TestDefaultDriverOnXenServer(DriverContract):
    driver = DefaultPrimaryDriver
    shape = PoolShape(hypervisor="XenServer", format="VHD")


@FAILED_TAKE
@NEVER_ANSWERED
@pytest.mark.violates("usage-matches-objects", tests=["test_a_delete_drops_what_the_take_put"])
@pytest.mark.violates("usage-matches-objects", tests=["test_a_failed_delete_answer_fails_the_delete"])
@pytest.mark.violates("usage-matches-objects", tests=["test_a_take_is_answered_once_and_puts_the_snapshot_on_storage"])
class TestDefaultDriverOnKvmNfs(DriverContract):
    driver = DefaultPrimaryDriver
    shape = PoolShape()


@FAILED_TAKE
@NEVER_ANSWERED
class TestDefaultDriverOnRbd(DriverContract):
    driver = DefaultPrimaryDriver
    shape = PoolShape(pool_type="RBD", format="RAW")


@FAILED_TAKE
@ARRAY_DELETE_FAILED
@PRIMARY_ONLY_DELETE
@NEVER_ANSWERED
class TestPowerFlexDriver(DriverContract):
    driver = PowerFlexDriver
    shape = PoolShape.of(PowerFlexDriver, format="RAW", managed=True)


@FAILED_TAKE
@NEVER_ANSWERED
class TestStorPoolDriver(DriverContract):
    driver = StorPoolDriver
    shape = PoolShape.of(StorPoolDriver, format="RAW")


@FAILED_TAKE
@ARRAY_DELETE_FAILED
@PRIMARY_ONLY_DELETE
@NEVER_ANSWERED
class TestSolidFireDriver(DriverContract):
    driver = ManagedDriver
    shape = PoolShape.of(ManagedDriver, managed=True, zone_wide=True)


@FAILED_TAKE
@ARRAY_DELETE_FAILED
@PRIMARY_ONLY_DELETE
@NEVER_ANSWERED
class TestOntapDriver(DriverContract):
    driver = OntapDriver
    shape = PoolShape.of(OntapDriver, managed=True, zone_wide=True)


@pytest.mark.violates("usage-matches-objects")
class TestDefaultStrategy(StrategyContract):
    strategy = DefaultSnapshotStrategy


@pytest.mark.violates(
    "counts-match-recount", "usage-matches-objects", tests=["test_what_it_deletes_is_gone_and_no_lock_is_left"]
)
@pytest.mark.violates("usage-matches-objects", tests=["test_can_handle_answers_every_operation_without_writing"])
@pytest.mark.violates(
    "usage-matches-objects", tests=["test_what_it_takes_ends_backed_up_with_the_volume_ready_and_no_lock"]
)
class TestStorageSystemStrategy(StrategyContract):
    strategy = StorageSystemSnapshotStrategy


@pytest.mark.violates("usage-matches-objects")
class TestCephStrategy(StrategyContract):
    strategy = CephSnapshotStrategy


@pytest.mark.violates("usage-matches-objects")
class TestScaleIOStrategy(StrategyContract):
    strategy = ScaleIOSnapshotStrategy


@pytest.mark.violates("usage-matches-objects")
class TestStorPoolStrategy(StrategyContract):
    strategy = StorPoolSnapshotStrategy
