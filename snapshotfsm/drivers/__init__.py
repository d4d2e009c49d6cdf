"""Simulated storage drivers (DESIGN.md layer 4)."""

from snapshotfsm.drivers.base import Answer, DriverEnv, FaultRule
from snapshotfsm.drivers.primary import PrimaryDriver
from snapshotfsm.drivers.registry import Drivers, DriverSet, installed_drivers

__all__ = ["Answer", "DriverEnv", "DriverSet", "Drivers", "FaultRule", "PrimaryDriver", "installed_drivers"]
