"""What snapshotfsm offers its users' test suites.

Hypothesis strategies and a conformance test for machines, contract suites for driver and strategy plugins, and a
small cloud to run them on. Needs Hypothesis (the ``testing`` extra: ``pip install snapshotfsm[testing]``);
``import snapshotfsm`` does not import it.
"""

from snapshotfsm.testing.cloud import BUILTIN_SHAPES, PoolShape, QuickCloud
from snapshotfsm.testing.conformance import (
    Entity,
    StepCall,
    declared_events,
    events,
    machine_conformance,
    states,
    stub_steps,
    undeclared_event_names,
    undeclared_events,
    unknown_state_names,
)
from snapshotfsm.testing.contracts import DriverContract, StrategyContract

__all__ = [
    "BUILTIN_SHAPES",
    "DriverContract",
    "Entity",
    "PoolShape",
    "QuickCloud",
    "StepCall",
    "StrategyContract",
    "declared_events",
    "events",
    "machine_conformance",
    "states",
    "stub_steps",
    "undeclared_event_names",
    "undeclared_events",
    "unknown_state_names",
]
