"""``snapshotfsm.machines``: one ``transitions.Machine`` per definition, and ``fire``'s answers checked against it."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import pytest
from hypothesis import Phase, settings
from hypothesis.stateful import run_state_machine_as_test
from transitions import EventData, MachineError

from snapshotfsm.definitions import Definition, TransitionDef, load_file, project_definitions
from snapshotfsm.errors import DefinitionError, IllegalTransition, SnapshotFSMError
from snapshotfsm.machines import StateMachine, Step, build_machines
from snapshotfsm.testing import (
    StepCall,
    machine_conformance,
    stub_steps,
    undeclared_event_names,
    unknown_state_names,
)

PROJECT = project_definitions()
# Hypothesis's explain phase takes ~20 s on a failing state machine; the shrunk program is enough here.
_NO_EXPLAIN = (Phase.generate, Phase.shrink)
ENTITY_MACHINES = ("async_job", "snapshot", "snapshot_store_ref", "vm_work_job", "volume")


def _all_stub_steps() -> dict[str, Step]:
    steps: dict[str, Step] = {}
    for d in PROJECT.values():
        steps.update(stub_steps(d))
    return steps


def _machine(definition: Definition) -> StateMachine:
    return StateMachine(definition, stub_steps(definition) if definition.kind == "workflow" else None)


@pytest.fixture(scope="module")
def all_machines() -> dict[str, StateMachine]:
    return build_machines(PROJECT, _all_stub_steps())


@pytest.fixture(scope="module")
def snapshot() -> StateMachine:
    return StateMachine(PROJECT["snapshot"])


class TestConformance:
    """Hypothesis fires random events, legal and illegal, at every project machine (``snapshotfsm.testing``)."""

    @pytest.mark.parametrize("name", sorted(PROJECT))
    def test_machine_conforms_to_its_definition(self, name: str) -> None:
        """Random events from any state reach the declared destination or are refused with full data."""
        machine = _machine(PROJECT[name])
        run_state_machine_as_test(
            machine_conformance(machine), settings=settings(max_examples=15, stateful_step_count=25)
        )

    @pytest.mark.parametrize("name", sorted(PROJECT))
    def test_every_state_and_event_pair_agrees_with_the_table(self, name: str) -> None:
        """Exhaustively: ``check`` gives the row's destination for each listed pair and refuses every other pair."""
        definition = PROJECT[name]
        machine = _machine(definition)
        for state in definition.state_names:
            for event in definition.event_names:
                row = definition.transition(state, event)
                if row is None:
                    with pytest.raises(IllegalTransition) as caught:
                        machine.check(1, state, event)
                    assert caught.value.reason == "not-allowed"
                    assert caught.value.allowed == definition.allowed(state)
                else:
                    assert machine.check(1, state, event) == row.dest

    def test_conformance_class_is_named_after_the_machine(self) -> None:
        """A counterexample reads ``state = SnapshotStoreRefConformance()``."""
        cls = machine_conformance(StateMachine(PROJECT["snapshot_store_ref"]))
        assert cls.__name__ == "SnapshotStoreRefConformance"

    def test_conformance_catches_a_machine_that_disagrees_with_its_definition(self) -> None:
        """The oracle is the definition: a machine with one row more than its definition fails the test."""
        definition = PROJECT["async_job"]
        extra = TransitionDef(4, "SUCCEEDED", "CompleteFailed", "FAILED")
        widened = StateMachine(attrs.evolve(definition, transitions=(*definition.transitions, extra)))
        widened.definition = definition
        with pytest.raises(AssertionError, match=r"'SUCCEEDED' --'CompleteFailed'--> 'FAILED' was accepted"):
            run_state_machine_as_test(
                machine_conformance(widened),
                settings=settings(max_examples=200, database=None, derandomize=True, phases=_NO_EXPLAIN),
            )


class TestStateMachine:
    """Building: once per definition, with no model, no auto-transitions and every ``calls`` resolved."""

    @pytest.mark.parametrize("name", sorted(PROJECT))
    def test_machine_has_no_model_and_no_auto_transitions(
        self, name: str, all_machines: dict[str, StateMachine]
    ) -> None:
        """``model=None`` and ``auto_transitions=False``: no ``to_<state>`` event on any machine."""
        inner = all_machines[name].machine
        assert inner.models == []
        assert inner.auto_transitions is False
        assert inner.send_event is True
        assert [e for e in inner.events if e.startswith("to_")] == []
        assert set(inner.events) <= set(PROJECT[name].event_names)
        assert list(inner.states) == list(PROJECT[name].state_names)

    def test_the_machine_is_built_once_and_left_alone(self, snapshot: StateMachine) -> None:
        """Firing never rebuilds, extends or attaches a model to the ``transitions.Machine``."""
        inner, events, states = snapshot.machine, dict(snapshot.machine.events), dict(snapshot.machine.states)
        assert snapshot.fire(1, "Allocated", "CreateRequested") == "Creating"
        assert snapshot.fire(2, "BackingUp", "BackupToSecondary") == "BackingUp"
        assert snapshot.machine is inner
        assert snapshot.machine.events == events
        assert snapshot.machine.states == states
        assert snapshot.machine.models == []

    def test_build_machines_of_one_kind(self) -> None:
        """``kind="entity"`` builds the five entity machines and needs no steps."""
        assert sorted(build_machines(PROJECT, kind="entity")) == list(ENTITY_MACHINES)

    def test_a_calls_name_missing_from_the_registry_names_the_transition_and_nearest_step(
        self, door_workflow: dict[str, Any], write_definition: Callable[..., Path]
    ) -> None:
        """An unregistered ``calls`` fails the build with the file, machine, transition and nearest step."""
        path = write_definition(door_workflow)
        steps = stub_steps(load_file(path))
        steps["door.opening"] = steps.pop("door.open")
        with pytest.raises(DefinitionError) as caught:
            StateMachine(load_file(path), steps)
        assert str(caught.value) == (
            f"{path}: machine 'door', transition 1: calls: 'door.open' is not a step (did you mean 'door.opening'?)"
        )
        assert (caught.value.path, caught.value.machine, caught.value.key) == (
            str(path),
            "door",
            "transition 1: calls",
        )

    def test_a_workflow_without_a_registry_fails_at_its_first_step(
        self, door_workflow: dict[str, Any], write_definition: Callable[..., Path]
    ) -> None:
        """No registry at all: the first ``calls`` is reported, with no suggestion."""
        path = write_definition(door_workflow)
        with pytest.raises(DefinitionError) as caught:
            StateMachine(load_file(path))
        assert str(caught.value) == f"{path}: machine 'door', transition 1: calls: 'door.open' is not a step"

    def test_structure_builds_a_workflow_without_its_steps(
        self, door_workflow: dict[str, Any], write_definition: Callable[..., Path]
    ) -> None:
        """``StateMachine.structure`` checks legality only, so it needs no registry."""
        machine = StateMachine.structure(load_file(write_definition(door_workflow)))
        assert machine.fire(1, "Closed", "Open") == "Open"


class TestFire:
    """``StateMachine.fire`` and ``check``: one event, one entity, the exact refusal messages."""

    def test_a_legal_event_returns_the_destination(self, snapshot: StateMachine) -> None:
        """Row #3 of spec §1.2: Creating --OperationNotPerformed--> BackedUp."""
        assert snapshot.fire(42, "Creating", "OperationNotPerformed") == "BackedUp"
        assert snapshot.check(42, "Creating", "OperationNotPerformed") == "BackedUp"

    def test_illegal_transition_is_a_machine_error_with_a_plain_str(self, snapshot: StateMachine) -> None:
        """Callers catching ``transitions.MachineError`` catch it too, and its str is the message, not its repr."""
        with pytest.raises(MachineError) as caught:
            snapshot.fire(42, "BackingUp", "DestroyRequested")
        exc = caught.value
        assert isinstance(exc, IllegalTransition)
        assert isinstance(exc, SnapshotFSMError)
        message = (
            "snapshot 42 is BackingUp; event 'DestroyRequested' is not allowed there "
            "(allowed: OperationSucceeded, OperationFailed, OperationNotPerformed, BackupToSecondary)"
        )
        assert str(exc) == message
        assert exc.value == message
        assert exc.message == message

    def test_not_allowed(self, snapshot: StateMachine) -> None:
        """An event of the machine that the state does not allow: all the data, and the allowed events."""
        with pytest.raises(IllegalTransition) as caught:
            snapshot.fire(42, "BackedUp", "CreateRequested")
        exc = caught.value
        assert str(exc) == (
            "snapshot 42 is BackedUp; event 'CreateRequested' is not allowed there "
            "(allowed: DestroyRequested, CopyingRequested, BackupToSecondary)"
        )
        assert (exc.machine, exc.entity_id, exc.state, exc.event, exc.reason) == (
            "snapshot",
            42,
            "BackedUp",
            "CreateRequested",
            "not-allowed",
        )
        assert exc.allowed == ("DestroyRequested", "CopyingRequested", "BackupToSecondary")

    def test_not_allowed_anywhere_says_none(self, snapshot: StateMachine) -> None:
        """A state with no exit (Hidden, spec §1.2 notes) lists no allowed event."""
        with pytest.raises(IllegalTransition) as caught:
            snapshot.fire(42, "Hidden", "DestroyRequested")
        assert (
            str(caught.value) == "snapshot 42 is Hidden; event 'DestroyRequested' is not allowed there (allowed: none)"
        )
        assert caught.value.allowed == ()

    def test_a_declared_event_that_no_row_uses_is_not_allowed_rather_than_unknown(self, snapshot: StateMachine) -> None:
        """BackedupToSecondary is declared (spec §1.1) though never used: it is refused as not allowed."""
        with pytest.raises(IllegalTransition) as caught:
            snapshot.fire(42, "BackedUp", "BackedupToSecondary")
        assert caught.value.reason == "not-allowed"
        assert str(caught.value) == (
            "snapshot 42 is BackedUp; event 'BackedupToSecondary' is not allowed there "
            "(allowed: DestroyRequested, CopyingRequested, BackupToSecondary)"
        )

    def test_undeclared_event_with_did_you_mean(self, snapshot: StateMachine) -> None:
        """A name that is no event of the machine: the nearest declared event is suggested."""
        with pytest.raises(IllegalTransition) as caught:
            snapshot.fire(42, "BackedUp", "DestroyRequest")
        exc = caught.value
        assert (
            str(exc)
            == "snapshot 42: 'DestroyRequest' is not an event of machine 'snapshot' (did you mean 'DestroyRequested'?)"
        )
        assert (exc.reason, exc.state, exc.event) == ("undeclared-event", "BackedUp", "DestroyRequest")
        assert exc.allowed == ("DestroyRequested", "CopyingRequested", "BackupToSecondary")

    def test_auto_transition_names_are_not_events(self, snapshot: StateMachine) -> None:
        """``to_Destroyed`` is no back door: it is refused like any undeclared name."""
        with pytest.raises(IllegalTransition) as caught:
            snapshot.fire(42, "BackedUp", "to_Destroyed")
        assert str(caught.value) == (
            "snapshot 42: 'to_Destroyed' is not an event of machine 'snapshot' (did you mean 'DestroyRequested'?)"
        )

    def test_unknown_state_with_did_you_mean(self, snapshot: StateMachine) -> None:
        """An entity whose state the machine does not have: the nearest state is suggested."""
        with pytest.raises(IllegalTransition) as caught:
            snapshot.fire(42, "BackedUP", "DestroyRequested")
        exc = caught.value
        assert (
            str(exc)
            == "snapshot 42 is in 'BackedUP', which is not a state of machine 'snapshot' (did you mean 'BackedUp'?)"
        )
        assert (exc.reason, exc.state, exc.event, exc.allowed) == ("unknown-state", "BackedUP", "DestroyRequested", ())

    def test_check_refuses_exactly_as_fire_does(self, snapshot: StateMachine) -> None:
        """``check`` is ``fire`` without running anything: the same refusal."""
        with pytest.raises(IllegalTransition) as by_check:
            snapshot.check(42, "Error", "OperationSucceeded")
        with pytest.raises(IllegalTransition) as by_fire:
            snapshot.fire(42, "Error", "OperationSucceeded")
        assert str(by_check.value) == str(by_fire.value)


class TestSteps:
    """Step callbacks of workflow machines: run before the state changes, exceptions propagate, kwargs arrive."""

    @pytest.fixture
    def door(self, door_workflow: dict[str, Any], write_definition: Callable[..., Path]) -> Definition:
        return load_file(write_definition(door_workflow))

    def test_a_step_runs_before_the_state_changes(self, door: Definition) -> None:
        """The callback sees the source state on the model, then ``fire`` returns the destination."""
        calls: list[StepCall] = []
        machine = StateMachine(door, stub_steps(door, calls))
        assert machine.fire(7, "Closed", "Open") == "Open"
        assert calls == [StepCall("door.open", "Open", "Closed")]

    def test_a_raising_step_propagates_and_no_new_state_is_returned(self, door: Definition) -> None:
        """The step's own exception reaches the caller unchanged; nothing is returned, no model stays attached."""
        boom = RuntimeError("driver said no")
        seen: list[str] = []

        def failing(event_data: EventData) -> None:
            seen.append(str(getattr(event_data.model, "state", "")))
            raise boom

        steps = {**stub_steps(door), "door.open": failing}
        machine = StateMachine(door, steps)
        with pytest.raises(RuntimeError) as caught:
            machine.fire(7, "Closed", "Open")
        assert caught.value is boom
        assert seen == ["Closed"]
        assert machine.machine.models == []
        assert machine.fire(7, "Closed", "Jam") == "Jammed"  # the error transition of door.open (on_error)

    def test_kwargs_reach_the_step_through_event_data(self, door: Definition) -> None:
        """Keyword arguments of ``fire`` arrive as ``EventData.kwargs``."""
        calls: list[StepCall] = []
        machine = StateMachine(door, stub_steps(door, calls))
        machine.fire(7, "Closed", "Open", run="the run", attempt=2)
        assert calls[0].kwargs == {"run": "the run", "attempt": 2}

    def test_a_refused_event_runs_no_step(self, door: Definition) -> None:
        """Legality is checked before any callback: an illegal event leaves the steps uncalled."""
        calls: list[StepCall] = []
        machine = StateMachine(door, stub_steps(door, calls))
        with pytest.raises(IllegalTransition):
            machine.fire(7, "Open", "Open")
        assert calls == []


class TestTestingHelpers:
    """The public helpers of ``snapshotfsm.testing`` that the conformance test is built from."""

    @pytest.mark.parametrize("name", sorted(PROJECT))
    def test_undeclared_names_are_really_undeclared(self, name: str) -> None:
        """The "wrong" event and state names never collide with the definition's own."""
        definition = PROJECT[name]
        assert set(undeclared_event_names(definition)).isdisjoint(definition.event_names)
        assert f"to_{definition.initial}" in undeclared_event_names(definition)
        assert set(unknown_state_names(definition)).isdisjoint(definition.state_names)

    def test_stub_steps_cover_every_calls_name(self) -> None:
        """A workflow machine builds from ``stub_steps`` alone."""
        for definition in PROJECT.values():
            assert set(stub_steps(definition)) == {t.calls for t in definition.transitions if t.calls}

    def test_importing_snapshotfsm_does_not_import_hypothesis(self) -> None:
        """Hypothesis is a dev extra: only ``snapshotfsm.testing`` needs it."""
        code = "import sys, snapshotfsm; sys.exit('hypothesis' in sys.modules)"
        assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
