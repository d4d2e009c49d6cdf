"""Hypothesis strategies and a stateful conformance test for machines built from snapshotfsm definitions.

For plugin authors as much as for this project: point :func:`machine_conformance` at a
:class:`~snapshotfsm.machines.StateMachine` and Hypothesis fires random events at an entity, legal and illegal ones,
from every state of the definition (unreachable ones too), checking each answer against the definition itself:

- a legal event reaches exactly the row's destination;
- an illegal event (not allowed in the state, or not an event of the machine at all) raises
  :class:`~snapshotfsm.errors.IllegalTransition` carrying the machine, entity id, state, event and the events the
  definition allows there, and the entity keeps its state;
- no entity ever reaches a state the definition does not declare, and no model stays attached to the
  ``transitions.Machine`` after a transition.

A failure shrinks to a short program (``state = SnapshotConformance()``, one line per rule) that replays it.

Example, in a plugin's own test suite, for its own definition::

    # tests/test_my_machine.py
    from hypothesis import settings

    from snapshotfsm import StateMachine, load_file
    from snapshotfsm.testing import machine_conformance, stub_steps

    definition = load_file("states/my_copy.toml")  # a workflow machine: its steps become no-ops
    TestMyCopy = machine_conformance(StateMachine(definition, stub_steps(definition))).TestCase
    TestMyCopy.settings = settings(max_examples=50, stateful_step_count=30)

``pytest tests/test_my_machine.py`` then runs it like any other test. When it fails, Hypothesis's explain phase
can take many seconds on a state machine; ``settings(phases=(Phase.generate, Phase.shrink))`` skips it.

This module needs Hypothesis (the ``dev`` extra); ``import snapshotfsm`` does not import it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import attrs
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from snapshotfsm.errors import IllegalTransition

if TYPE_CHECKING:
    from transitions import EventData

    from snapshotfsm.definitions import Definition
    from snapshotfsm.machines import StateMachine, Step

__all__ = [
    "Entity",
    "StepCall",
    "declared_events",
    "events",
    "machine_conformance",
    "states",
    "stub_steps",
    "undeclared_event_names",
    "undeclared_events",
    "unknown_state_names",
]


@attrs.define
class Entity:
    """A plain record holding an entity's state, as the conformance test keeps it between events."""

    id: int
    state: str


@attrs.frozen
class StepCall:
    """One call of a stub step: the step's name, the event that ran it, and the entity's state at that moment."""

    step: str
    event: str
    state: str
    kwargs: dict[str, Any] = attrs.field(factory=dict)


def states(definition: Definition) -> st.SearchStrategy[str]:
    """Every state of ``definition``, in declaration order (shrinks towards the first)."""
    return st.sampled_from(definition.state_names)


def declared_events(definition: Definition) -> st.SearchStrategy[str]:
    """Every declared event of ``definition``, used by a transition or not."""
    return st.sampled_from(definition.event_names)


def undeclared_event_names(definition: Definition) -> tuple[str, ...]:
    """A few names that are *not* events of ``definition``: typos, a state's name, a ``to_<state>`` back door.

    Each is one a caller could plausibly send by mistake, so the refusal and its "did you mean" are exercised.
    """
    first = definition.event_names[0] if definition.events else "Event"
    candidates = (
        "NoSuchEvent",
        first[:-1],  # a typo: the nearest declared name is suggested
        first.lower(),
        definition.initial,  # a state's name used as an event
        f"to_{definition.initial}",  # transitions' auto-transition, which snapshotfsm machines never have
        "",
    )
    declared = set(definition.event_names)
    return tuple(dict.fromkeys(c for c in candidates if c not in declared))


def undeclared_events(definition: Definition) -> st.SearchStrategy[str]:
    """The names of :func:`undeclared_event_names`."""
    return st.sampled_from(undeclared_event_names(definition))


def events(definition: Definition) -> st.SearchStrategy[str]:
    """Declared events mostly, and now and then a name that is not an event of ``definition``."""
    return st.one_of(declared_events(definition), undeclared_events(definition))


def unknown_state_names(definition: Definition) -> tuple[str, ...]:
    """A few names that are *not* states of ``definition``, for the "unknown state" refusal."""
    candidates = ("NoSuchState", definition.initial.lower(), f"{definition.initial}_", "")
    known = set(definition.state_names)
    return tuple(dict.fromkeys(c for c in candidates if c not in known))


def stub_steps(definition: Definition, calls: list[StepCall] | None = None) -> dict[str, Step]:
    """A no-op step for every ``calls`` name of ``definition``, so that a workflow machine can be built and fired.

    Args:
        definition: the machine whose ``calls`` names need a step.
        calls: when given, each step appends a :class:`StepCall` to it (the state is the one *before* the move).

    Returns:
        A registry to pass as ``StateMachine(definition, steps)``.
    """

    def make(name: str) -> Step:
        def step(event_data: EventData) -> None:
            if calls is not None:
                state = str(getattr(event_data.model, "state", ""))
                calls.append(StepCall(name, event_data.event.name, state, dict(event_data.kwargs)))

        step.__name__ = step.__qualname__ = f"stub_{name.replace('.', '_')}"
        return step

    return {name: make(name) for name in dict.fromkeys(t.calls for t in definition.transitions if t.calls)}


def _class_name(machine_name: str) -> str:
    return "".join(part[:1].upper() + part[1:] for part in machine_name.replace("-", "_").split("_")) + "Conformance"


def _refused(definition: Definition, action: Callable[[], str], entity_id: int, state: str, event: str) -> None:
    """Run ``action`` (a ``check`` or ``fire``), which must raise the IllegalTransition the definition implies."""
    try:
        dest = action()
    except IllegalTransition as exc:
        refusal = exc
    else:
        raise AssertionError(
            f"{definition.name}: {state!r} --{event!r}--> {dest!r} was accepted, but the definition has no "
            f"such transition (allowed in {state!r}: {', '.join(definition.allowed(state)) or 'none'})"
        )
    if event not in definition.event_names:
        reason = "undeclared-event"
    elif state not in definition.state_names:
        reason = "unknown-state"
    else:
        reason = "not-allowed"
    found = (refusal.machine, refusal.entity_id, refusal.state, refusal.event, refusal.reason)
    expected = (definition.name, entity_id, state, event, reason)
    assert found == expected, f"IllegalTransition carries {found}, expected {expected}"
    assert refusal.allowed == definition.allowed(state), (
        f"IllegalTransition.allowed is {refusal.allowed}, the definition allows {definition.allowed(state)} "
        f"in {state!r}"
    )
    assert str(refusal) == refusal.message, "IllegalTransition prints its message, not a repr"


def machine_conformance(machine: StateMachine) -> type[RuleBasedStateMachine]:
    """A Hypothesis state machine that checks ``machine`` against its own definition.

    Rules: start an entity in any state of the definition (not only ``initial``, so that states unreachable in
    CloudStack's tables are exercised); fire any event, declared or not; fire an event the state allows (so that
    runs travel); fire at an entity whose state the machine does not know. Use its ``TestCase`` with pytest or
    unittest, or pass the class to ``hypothesis.stateful.run_state_machine_as_test``.

    Args:
        machine: the machine under test. Build a workflow machine with :func:`stub_steps` (or
            ``StateMachine.structure``): a step that raises is a failure of this test.

    Returns:
        A ``RuleBasedStateMachine`` subclass named after the machine (``snapshot_store_ref`` gives
        ``SnapshotStoreRefConformance``).
    """
    definition = machine.definition
    state_names = frozenset(definition.state_names)
    strange_states = unknown_state_names(definition)

    class Conformance(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            self.entity = Entity(0, definition.initial)
            self.last_id = 0

        def _new_entity(self, state: str) -> None:
            self.last_id += 1
            self.entity = Entity(self.last_id, state)

        @initialize(state=states(definition))
        def start(self, state: str) -> None:
            """An entity in any state of the definition."""
            self._new_entity(state)

        @rule(state=states(definition))
        def another_entity(self, state: str) -> None:
            """Go on with a fresh entity in any state, so that one run visits several corners."""
            self._new_entity(state)

        @rule(event=events(definition))
        def fire(self, event: str) -> None:
            """Fire any event, declared or not; the definition says what must happen."""
            self._fire(event)

        @precondition(lambda self: bool(definition.allowed(self.entity.state)))
        @rule(data=st.data())
        def fire_allowed(self, data: st.DataObject) -> None:
            """Fire an event the current state allows."""
            self._fire(data.draw(st.sampled_from(definition.allowed(self.entity.state)), label="event"))

        @rule(state=st.sampled_from(strange_states), event=declared_events(definition))
        def fire_from_unknown_state(self, state: str, event: str) -> None:
            """An entity whose stored state the machine does not have is refused, whatever the event."""
            _refused(definition, lambda: machine.fire(-1, state, event), -1, state, event)

        def _fire(self, event: str) -> None:
            entity = self.entity
            before = entity.state
            row = definition.transition(before, event)
            if row is None:
                _refused(definition, lambda: machine.check(entity.id, before, event), entity.id, before, event)
                _refused(definition, lambda: machine.fire(entity.id, before, event), entity.id, before, event)
                assert entity.state == before
                return
            assert machine.check(entity.id, before, event) == row.dest
            entity.state = machine.fire(entity.id, before, event)
            assert entity.state == row.dest, (
                f"{definition.name} transition {row.number} ({before}, {event}) reached {entity.state!r}, "
                f"the definition says {row.dest!r}"
            )

        @invariant()
        def state_is_declared(self) -> None:
            """No entity is ever in a state outside the definition."""
            assert self.entity.state in state_names, f"{self.entity} is in a state {definition.name} does not have"

        @invariant()
        def no_model_left_attached(self) -> None:
            """Entities are attached to the machine only while a transition runs."""
            assert not machine.machine.models, f"models left on {definition.name}'s machine: {machine.machine.models}"

    name = _class_name(definition.name)
    Conformance.__name__ = Conformance.__qualname__ = name
    Conformance.__doc__ = f"Conformance of machine {definition.name!r} ({definition.path}) to its definition."
    return Conformance
