"""snapshotfsm: an explicit state-machine model of Apache CloudStack's volume-snapshot orchestration."""

import logging

logging.getLogger(__name__).addHandler(logging.NullHandler())

# ruff: noqa: E402 - the logger is set up before the modules that log are imported

from snapshotfsm.definitions import Definition, Definitions, load_directory, load_file, project_definitions
from snapshotfsm.engine import Engine
from snapshotfsm.errors import (
    ApiError,
    CloudException,
    ConcurrencyError,
    DefinitionError,
    DriverContractError,
    IllegalTransition,
    InvalidValue,
    NotFound,
    ServerDown,
    SnapshotFSMError,
    StoreError,
    UnknownMachine,
)
from snapshotfsm.faults import FaultPlan
from snapshotfsm.machines import StateMachine, build_machines

__all__ = [
    "ApiError",
    "CloudException",
    "ConcurrencyError",
    "Definition",
    "DefinitionError",
    "Definitions",
    "DriverContractError",
    "Engine",
    "FaultPlan",
    "IllegalTransition",
    "InvalidValue",
    "NotFound",
    "ServerDown",
    "SnapshotFSMError",
    "StateMachine",
    "StoreError",
    "UnknownMachine",
    "build_machines",
    "load_directory",
    "load_file",
    "project_definitions",
]
