"""Every workflow step, gathered by name from the modules that declare them, and the machines they run in.

Each orchestration module lists its steps in a module-level ``STEPS`` table, as Hypothesis gathers the rules of a
``RuleBasedStateMachine`` from its class: nothing registers itself on import. This module collects the tables of
:data:`STEP_MODULES`, checks that each step is written for the context its workflow carries, and builds the machines
an engine runs: one ``transitions`` machine per definition, each workflow transition calling its step.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Mapping
from types import ModuleType
from typing import Any

from snapshotfsm.definitions import Definitions
from snapshotfsm.errors import DefinitionError
from snapshotfsm.machines import StateMachine, build_machines
from snapshotfsm.orchestration import (
    api,
    backup,
    backup_task,
    copies,
    copy_api,
    delete,
    dispatch,
    gc,
    jobs,
    primary,
    retention,
    take,
)
from snapshotfsm.orchestration.contexts import CONTEXTS
from snapshotfsm.orchestration.contract import Resumes, StepEntry, Turn
from snapshotfsm.orchestration.runner import bind_steps

STEP_MODULES: tuple[ModuleType, ...] = (
    api,
    jobs,
    dispatch,
    take,
    primary,
    backup,
    backup_task,
    copies,
    copy_api,
    delete,
    retention,
    gc,
)
"""The modules whose ``STEPS`` tables make up the project's steps."""


def gather(modules: tuple[ModuleType, ...] = STEP_MODULES) -> dict[str, StepEntry]:
    """The steps of ``modules`` by name.

    Raises:
        ValueError: two modules declare the same step name.
    """
    steps: dict[str, StepEntry] = {}
    for module in modules:
        table: Mapping[str, StepEntry] = module.STEPS
        for name, entry in table.items():
            if name in steps:
                raise ValueError(f"step {name!r} is declared twice ({module.__name__} and another module)")
            steps[name] = entry
    return steps


STEPS: Mapping[str, StepEntry] = gather()
"""Every step of the project, by the name definitions use in ``calls``."""


def step_names() -> frozenset[str]:
    """The names a definition's ``calls`` may use (``snapshotfsm check`` resolves them)."""
    return frozenset(STEPS)


def check_contexts(definitions: Definitions, steps: Mapping[str, StepEntry] = STEPS) -> None:
    """Every step a workflow transition calls is written for that workflow's context (its ``Turn[...]``).

    Raises:
        DefinitionError: a workflow without a context class, or a step whose turn expects another context.
    """
    for definition in definitions.values():
        if definition.kind != "workflow":
            continue
        expected = CONTEXTS.get(definition.name)
        if expected is None:
            raise DefinitionError(definition.path, definition.name, "machine.name", "no workflow context is declared")
        for row in definition.transitions:
            entry = steps.get(row.calls or "")
            if entry is None:
                continue
            found = _context_of(entry.step if isinstance(entry, Resumes) else entry)
            if found is not None and found is not expected:
                raise DefinitionError(
                    definition.path,
                    definition.name,
                    f"transition {row.number}: calls",
                    f"step {row.calls!r} takes a Turn[{found.__name__}], but {definition.name} runs with "
                    f"{expected.__name__}",
                )


def _context_of(step: Any) -> type | None:
    """The context class of a step's ``Turn[...]`` annotation, if it has one."""
    hints = typing.get_type_hints(step)
    parameter = next(iter(inspect.signature(step).parameters))
    hint = hints.get(parameter)
    if typing.get_origin(hint) is Turn:
        (found,) = typing.get_args(hint)
        return found if isinstance(found, type) else None
    return None


_MACHINES: dict[int, tuple[Definitions, dict[str, StateMachine]]] = {}


def engine_machines(definitions: Definitions) -> Mapping[str, StateMachine]:
    """The machines an engine runs, built once per set of definitions and shared by every engine on them.

    They hold no entity: a trigger's model is a cursor that lives for one transition, and a step's callback finds
    its run in the trigger's arguments. Building them checks every ``calls`` name and every step's context.

    Raises:
        DefinitionError: a ``calls`` name that is no step, a step written for another context, or a generator step
            whose waiting state has no transition that resumes it.
    """
    cached = _MACHINES.get(id(definitions))
    if cached is not None and cached[0] is definitions:
        return cached[1]
    check_contexts(definitions)
    machines = build_machines(definitions, bind_steps(STEPS, definitions))
    _MACHINES[id(definitions)] = (definitions, machines)
    return machines
