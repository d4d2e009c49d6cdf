"""Simulated storage drivers (DESIGN.md layer 4)."""

from snapshotfsm.drivers.base import Answer, DriverEnv, FaultPlan, FaultRule
from snapshotfsm.drivers.registry import Drivers

__all__ = ["Answer", "DriverEnv", "Drivers", "FaultPlan", "FaultRule"]
