"""The built-in drivers and strategies keep the contracts ``snapshotfsm.testing`` offers plugin authors."""

from __future__ import annotations

from snapshotfsm.drivers.managed import ManagedDriver, OntapDriver
from snapshotfsm.drivers.powerflex import PowerFlexDriver
from snapshotfsm.drivers.primary import DefaultPrimaryDriver
from snapshotfsm.drivers.storpool import StorPoolDriver
from snapshotfsm.strategies.array import CephSnapshotStrategy, ScaleIOSnapshotStrategy
from snapshotfsm.strategies.default import DefaultSnapshotStrategy
from snapshotfsm.strategies.storage_system import StorageSystemSnapshotStrategy
from snapshotfsm.strategies.storpool import StorPoolSnapshotStrategy
from snapshotfsm.testing import DriverContract, PoolShape, StrategyContract


class TestDefaultDriverOnXenServer(DriverContract):
    driver = DefaultPrimaryDriver
    shape = PoolShape(hypervisor="XenServer", format="VHD")


class TestDefaultDriverOnKvmNfs(DriverContract):
    driver = DefaultPrimaryDriver
    shape = PoolShape()


class TestDefaultDriverOnRbd(DriverContract):
    driver = DefaultPrimaryDriver
    shape = PoolShape(pool_type="RBD", format="RAW")


class TestPowerFlexDriver(DriverContract):
    driver = PowerFlexDriver
    shape = PoolShape.of(PowerFlexDriver, format="RAW", managed=True)


class TestStorPoolDriver(DriverContract):
    driver = StorPoolDriver
    shape = PoolShape.of(StorPoolDriver, format="RAW")


class TestSolidFireDriver(DriverContract):
    driver = ManagedDriver
    shape = PoolShape.of(ManagedDriver, managed=True, zone_wide=True)


class TestOntapDriver(DriverContract):
    driver = OntapDriver
    shape = PoolShape.of(OntapDriver, managed=True, zone_wide=True)


class TestDefaultStrategy(StrategyContract):
    strategy = DefaultSnapshotStrategy


class TestStorageSystemStrategy(StrategyContract):
    strategy = StorageSystemSnapshotStrategy


class TestCephStrategy(StrategyContract):
    strategy = CephSnapshotStrategy


class TestScaleIOStrategy(StrategyContract):
    strategy = ScaleIOSnapshotStrategy


class TestStorPoolStrategy(StrategyContract):
    strategy = StorPoolSnapshotStrategy
