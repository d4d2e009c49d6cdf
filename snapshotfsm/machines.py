"""One ``transitions.Machine`` per definition, built once and shared by every entity of that kind.

Entities stay plain records at rest. While a transition runs, a one-slot cursor holding the entity's current state is
the machine's model: no ``add_model`` (quadratic, and it binds dozens of methods per model), no ``to_<state>`` back
doors (``auto_transitions=False``). The legality check is transitions' own table of the event (what
``Event._is_valid_source`` consults); an illegal event raises :class:`~snapshotfsm.errors.IllegalTransition` before
any callback runs, so nothing changes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from transitions import EventData, Machine

from snapshotfsm.errors import DefinitionError, IllegalTransition, did_you_mean

if TYPE_CHECKING:
    from snapshotfsm.definitions import Definition, Definitions

Step = Callable[[EventData], None]
"""A workflow step callback: transitions calls it with the ``EventData`` before the state changes."""


class _Cursor:
    """The model of one transition: the entity's state, for the length of one trigger."""

    __slots__ = ("state",)

    def __init__(self, state: str) -> None:
        self.state = state


class StateMachine:
    """A definition turned into a ``transitions.Machine``; ``fire`` moves one entity's state by one event."""

    def __init__(
        self, definition: Definition, steps: Mapping[str, Step] | None = None, *, with_steps: bool = True
    ) -> None:
        self.definition = definition
        self.name = definition.name
        transitions: list[dict[str, Any]] = []
        for row in definition.transitions:
            spec: dict[str, Any] = {"trigger": row.event, "source": row.source, "dest": row.dest}
            if row.calls is not None and with_steps:
                spec["before"] = [self._resolve(row.calls, row.number, steps)]
            transitions.append(spec)
        self.machine = Machine(
            model=None,
            states=list(definition.state_names),
            transitions=transitions,
            initial=definition.initial,
            auto_transitions=False,
            send_event=True,
            name=definition.name,
        )
        self._events = self.machine.events
        self._states = frozenset(definition.state_names)
        self._declared = frozenset(definition.event_names)

    @classmethod
    def structure(cls, definition: Definition) -> StateMachine:
        """The machine without its step callbacks: for legality checks of rows the store writes."""
        return cls(definition, with_steps=False)

    def _resolve(self, name: str, number: int, steps: Mapping[str, Step] | None) -> Step:
        if steps is None or name not in steps:
            known = steps or {}
            raise DefinitionError(
                self.definition.path,
                self.name,
                f"transition {number}: calls",
                f"{name!r} is not a registered step" + did_you_mean(name, known),
            )
        return steps[name]

    def allowed(self, state: str) -> tuple[str, ...]:
        """Events allowed in ``state``, in table order (for error messages and test oracles)."""
        return self.definition.allowed(state)

    def check(self, entity_id: object, state: str, event: str) -> str:
        """Return the destination of ``event`` from ``state`` without running anything.

        Raises:
            IllegalTransition: the event is undeclared, the state unknown, or the pair not in the table.
        """
        # Declared events that no row uses (snapshot's BackedupToSecondary) have no transitions.Event: they are
        # refused as not allowed, not as unknown, so the declared list is the reference here.
        if event not in self._declared:
            raise IllegalTransition(
                self.name,
                entity_id,
                state,
                event,
                self.allowed(state),
                reason="undeclared-event",
                hint=did_you_mean(event, self.definition.event_names),
            )
        if state not in self._states:
            raise IllegalTransition(
                self.name, entity_id, state, event, (), reason="unknown-state", hint=did_you_mean(state, self._states)
            )
        found = self._events.get(event)
        rows = found.transitions.get(state) if found is not None else None
        if not rows:
            raise IllegalTransition(self.name, entity_id, state, event, self.allowed(state))
        return str(rows[0].dest)

    def fire(self, entity_id: object, state: str, event: str, **kwargs: Any) -> str:
        """Run ``event`` on an entity in ``state`` and return the state it reaches.

        Keyword arguments reach the callbacks through ``EventData.kwargs``. A step callback that raises propagates
        its exception unchanged and the state is not changed (callbacks run before the change).

        Raises:
            IllegalTransition: as :meth:`check`.
        """
        self.check(entity_id, state, event)
        cursor = _Cursor(state)
        self._events[event].trigger(cursor, **kwargs)
        return cursor.state


def build_machines(
    definitions: Definitions, steps: Mapping[str, Step] | None = None, *, kind: str | None = None
) -> dict[str, StateMachine]:
    """Build one machine per definition (of ``kind`` when given); workflow ``calls`` resolve against ``steps``.

    Raises:
        DefinitionError: a ``calls`` name that is not in ``steps``, with the nearest registered name.
    """
    return {
        name: StateMachine(d, steps if d.kind == "workflow" else None)
        for name, d in definitions.items()
        if kind is None or d.kind == kind
    }
