"""snapshotfsm: an explicit state-machine model of Apache CloudStack's volume-snapshot orchestration."""

from snapshotfsm.definitions import Definition, Definitions, load_directory, load_file, project_definitions
from snapshotfsm.errors import (
    ConcurrencyError,
    DefinitionError,
    IllegalTransition,
    InvalidValue,
    NotFound,
    SnapshotFSMError,
    StoreError,
)
from snapshotfsm.machines import StateMachine, build_machines

__all__ = [
    "ConcurrencyError",
    "Definition",
    "DefinitionError",
    "Definitions",
    "IllegalTransition",
    "InvalidValue",
    "NotFound",
    "SnapshotFSMError",
    "StateMachine",
    "StoreError",
    "build_machines",
    "load_directory",
    "load_file",
    "project_definitions",
]
