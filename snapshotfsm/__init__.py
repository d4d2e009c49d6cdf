"""snapshotfsm: an explicit state-machine model of Apache CloudStack's volume-snapshot orchestration."""

import logging

logging.getLogger(__name__).addHandler(logging.NullHandler())

# ruff: noqa: E402 - the logger is set up before the modules that log are imported

from snapshotfsm.definitions import Definition, Definitions, load_directory, load_file, project_definitions
from snapshotfsm.engine import Engine
from snapshotfsm.errors import (
    ConcurrencyError,
    DefinitionError,
    IllegalTransition,
    InvalidValue,
    NotFound,
    ServerDown,
    SnapshotFSMError,
    StoreError,
)
from snapshotfsm.machines import StateMachine, build_machines

__all__ = [
    "ConcurrencyError",
    "Definition",
    "DefinitionError",
    "Definitions",
    "Engine",
    "IllegalTransition",
    "InvalidValue",
    "NotFound",
    "ServerDown",
    "SnapshotFSMError",
    "StateMachine",
    "StoreError",
    "build_machines",
    "load_directory",
    "load_file",
    "project_definitions",
]
