"""What snapshotfsm offers its users' test suites.

Hypothesis strategies and a conformance test for machines, contract suites for driver and strategy plugins, the
engine-level property test (:class:`EngineMachine`, a ``RuleBasedStateMachine`` to run over one's own driver and
strategy), and a small cloud to run them on (:class:`QuickCloud`: a first snapshot in five lines). Needs Hypothesis
(the ``testing`` extra: ``pip install snapshotfsm[testing]``);
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
from snapshotfsm.testing.stateful import EngineMachine

__all__ = [
    "BUILTIN_SHAPES",
    "DriverContract",
    "EngineMachine",
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
