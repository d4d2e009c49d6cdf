"""One ``transitions.Machine`` per definition, built once and shared by every entity of that kind.

Entities stay plain records at rest. While a transition runs, a one-slot cursor holding the entity's current state is
the machine's model: no ``add_model`` (quadratic, and it binds dozens of methods per model), no ``to_<state>`` back
doors (``auto_transitions=False``). The legality check is transitions' own: the event's table of source states
(what ``Event._is_valid_source`` consults); an illegal event raises :class:`~snapshotfsm.errors.IllegalTransition`
before any callback runs, so nothing changes.

A workflow machine is built with its step callbacks: each transition runs the step its definition ``calls`` as its
``before`` callback, so that a step that raises leaves the state where it was. The machine is built once per engine
and shared by the store (legality of every durable move) and the runner (which fires the workflow's events through it
and persists the destination the trigger computed).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from transitions import EventData, Machine, MachineError, Transition

from snapshotfsm.errors import DefinitionError, IllegalTransition, did_you_mean

if TYPE_CHECKING:
    from snapshotfsm.definitions import Definition, Definitions, TransitionDef

Step = Callable[[EventData], None]
"""A workflow step callback: transitions calls it with the ``EventData`` before the state changes."""


class RowTransition(Transition):
    """A ``transitions.Transition`` that knows the definition row it was built from (``event_data.transition.row``).

    A step callback reads its row from here: the step name, the error transition taken when it raises.
    """

    def __init__(self, source: str, dest: str, *args: Any, row: TransitionDef | None = None, **kwargs: Any) -> None:
        super().__init__(source, dest, *args, **kwargs)
        self.row = row


class _Machine(Machine):
    transition_cls = RowTransition


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
        """Build the machine; a workflow's ``calls`` become ``before`` callbacks taken from ``steps``.

        Every ``calls`` name must be in ``steps``; :meth:`structure` builds a workflow without them (legality only).

        Raises:
            DefinitionError: a ``calls`` name that ``steps`` does not have, with the nearest one.
        """
        self.definition = definition
        self.name = definition.name
        transitions: list[dict[str, Any]] = []
        for row in definition.transitions:
            spec: dict[str, Any] = {"trigger": row.event, "source": row.source, "dest": row.dest, "row": row}
            if row.calls is not None and with_steps:
                spec["before"] = [self._resolve(row, steps or {})]
            transitions.append(spec)
        self.machine = _Machine(
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

    def _resolve(self, row: TransitionDef, steps: Mapping[str, Step]) -> Step:
        name = row.calls or ""
        if name not in steps:
            raise DefinitionError(
                self.definition.path,
                self.name,
                f"transition {row.number}: calls",
                f"{name!r} is not a step" + did_you_mean(name, steps),
            )
        return steps[name]

    def allowed(self, state: str) -> tuple[str, ...]:
        """Events allowed in ``state``, in table order (for error messages and test oracles)."""
        return self.definition.allowed(state)

    def refusal(self, entity_id: object, state: str, event: str) -> IllegalTransition:
        """The error for ``event`` refused in ``state``, saying why: undeclared event, unknown state, or not allowed."""
        if event not in self._declared:
            return IllegalTransition(
                self.name,
                entity_id,
                state,
                event,
                self.allowed(state),
                reason="undeclared-event",
                hint=did_you_mean(event, self.definition.event_names),
            )
        if state not in self._states:
            return IllegalTransition(
                self.name, entity_id, state, event, (), reason="unknown-state", hint=did_you_mean(state, self._states)
            )
        return IllegalTransition(self.name, entity_id, state, event, self.allowed(state))

    def check(self, entity_id: object, state: str, event: str) -> str:
        """Return the destination of ``event`` from ``state`` without running anything.

        The lookup is transitions' own table of the event, the one :meth:`fire`'s trigger consults.

        Raises:
            IllegalTransition: the event is undeclared, the state unknown, or the pair not in the table.
        """
        # Declared events that no row uses (snapshot's BackedupToSecondary) have no transitions.Event: they are
        # refused as not allowed, not as unknown.
        found = self._events.get(event)
        rows = found.transitions.get(state) if found is not None else None
        if not rows:
            raise self.refusal(entity_id, state, event)
        return str(rows[0].dest)

    def fire(self, entity_id: object, state: str, event: str, **kwargs: Any) -> str:
        """Trigger ``event`` on an entity in ``state`` and return the state the trigger reached.

        Keyword arguments reach the callbacks through ``EventData.kwargs``. The trigger's own check is the legality
        check. A step callback that raises propagates its exception unchanged and the state is not changed
        (callbacks run before the change).

        Raises:
            IllegalTransition: as :meth:`check`, before any callback runs.
        """
        found = self._events.get(event)
        if found is None:
            raise self.refusal(entity_id, state, event)
        cursor = _Cursor(state)
        try:
            found.trigger(cursor, **kwargs)
        except MachineError as exc:
            if type(exc) is not MachineError:  # an IllegalTransition a step raised: not this trigger's refusal
                raise
            raise self.refusal(entity_id, state, event) from None
        except ValueError:
            if state in self._states:  # a step's own ValueError
                raise
            raise self.refusal(entity_id, state, event) from None
        return cursor.state


def build_machines(
    definitions: Definitions, steps: Mapping[str, Step] | None = None, *, kind: str | None = None
) -> dict[str, StateMachine]:
    """Build one machine per definition (of ``kind`` when given); workflow ``calls`` resolve against ``steps``.

    Raises:
        DefinitionError: a ``calls`` name that is not in ``steps``, with the nearest one.
    """
    return {
        name: StateMachine(d, steps if d.kind == "workflow" else None)
        for name, d in definitions.items()
        if kind is None or d.kind == kind
    }
