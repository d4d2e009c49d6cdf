"""``snapshotfsm.definitions``: loading, every load error (exact message and data), lookups and findings.

Each test starts from a small valid definition (``door`` / ``door_workflow`` in conftest.py), changes one thing,
writes it to ``tmp_path`` and loads it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from snapshotfsm import definitions as definitions_module
from snapshotfsm.definitions import (
    Definition,
    Finding,
    load_directory,
    load_file,
    project_definitions,
    unresolved_calls,
)
from snapshotfsm.errors import DefinitionError

Writer = Callable[..., Path]

# Every (source, event, dest, calls, on_error) of the workflow machines as states/ had them before rows could
# list several sources (one row per pair); the rewrite with lists must give exactly these.
_PAIRS_BEFORE_SOURCE_LISTS = {
    "take_snapshot": {
        ("Requested", "Allocate", "Allocated", "api.allocate", "Reject"),
        ("Requested", "Reject", "Rejected", "api.reject", None),
        ("Allocated", "Submit", "Submitted", "jobs.submit", None),
        ("Submitted", "Execute", "Validated", "api.validate", "Fail"),
        ("Submitted", "Fail", "Failed", "jobs.fail", None),
        ("Validated", "Enqueue", "Queued", "dispatch.enqueue", None),
        ("Validated", "RunDirect", "Preparing", "dispatch.run_direct", None),
        ("Queued", "Dispatch", "Orchestrating", "dispatch.start_work", None),
        ("Orchestrating", "Orchestrate", "Preparing", "take.orchestrate", "FailWork"),
        ("Orchestrating", "FailWork", "WorkFailed", "dispatch.fail_work", None),
        ("Preparing", "Prepare", "Prepared", "take.prepare", "Abandon"),
        ("Preparing", "Abandon", "NotTaken", "take.abandon", None),
        ("NotTaken", "FailWork", "WorkFailed", "dispatch.fail_work", None),
        ("NotTaken", "Fail", "Failed", "jobs.fail", None),
        ("Prepared", "ChooseStrategy", "StrategyChosen", "take.choose_strategy", "Unwind"),
        ("Prepared", "Unwind", "Unwound", "take.unwind", None),
        ("StrategyChosen", "BeginTake", "TakeBegun", "primary.begin", "Unwind"),
        ("StrategyChosen", "Unwind", "Unwound", "take.unwind", None),
        ("TakeBegun", "RequestPrimary", "AwaitingPrimary", "primary.request", "AbortTake"),
        ("TakeBegun", "AbortTake", "TakeAborted", "primary.abort", None),
        ("AwaitingPrimary", "PrimaryAnswered", "OnPrimary", "primary.answered", "AbortTake"),
        ("AwaitingPrimary", "AbortTake", "TakeAborted", "primary.abort", None),
        ("TakeAborted", "Unwind", "Unwound", "take.unwind", None),
        ("OnPrimary", "BackUp", "BackupChosen", "backup.choose", "Unwind"),
        ("BackupChosen", "Copy", "AwaitingBackup", "backup.request", "Unwind"),
        ("BackupChosen", "MarkBackedUp", "BackedUp", "backup.mark_as_backed_up", "Unwind"),
        ("BackupChosen", "Unwind", "Unwound", "take.unwind", None),
        ("OnPrimary", "BackUpLater", "BackupScheduled", "backup.schedule", None),
        ("OnPrimary", "BackUpDirectly", "BackedUp", "backup.post_directly", "Unwind"),
        ("OnPrimary", "SkipBackup", "BackedUp", "backup.skip", "Unwind"),
        ("OnPrimary", "Unwind", "Unwound", "take.unwind", None),
        ("AwaitingBackup", "BackupAnswered", "BackedUp", "backup.answered", "Unwind"),
        ("AwaitingBackup", "Unwind", "Unwound", "take.unwind", None),
        ("BackedUp", "PostProcess", "Retaining", "take.post_create", None),
        ("BackupScheduled", "PostProcess", "Retaining", "take.post_create", None),
        ("Retaining", "Retained", "PostProcessed", "take.post_process", None),
        ("PostProcessed", "CopyToZones", "CopyingToZones", "take.copy_to_zones", None),
        ("PostProcessed", "CopyToPools", "CopyingToPools", "take.copy_to_pools", None),
        ("CopyingToZones", "ZonesCopied", "Copied", "take.copies_done", None),
        ("Copied", "CopyToPools", "CopyingToPools", "take.copy_to_pools", None),
        ("CopyingToPools", "PoolsCopied", "Copied", "take.copies_done", None),
        ("PostProcessed", "CompleteWork", "WorkDone", "dispatch.complete_work", None),
        ("Copied", "CompleteWork", "WorkDone", "dispatch.complete_work", None),
        ("PostProcessed", "Complete", "Succeeded", "jobs.succeed", "Fail"),
        ("Copied", "Complete", "Succeeded", "jobs.succeed", "Fail"),
        ("WorkDone", "Complete", "Succeeded", "jobs.succeed", "Fail"),
        ("PostProcessed", "Fail", "Failed", "jobs.fail", None),
        ("Copied", "Fail", "Failed", "jobs.fail", None),
        ("WorkDone", "Fail", "Failed", "jobs.fail", None),
        ("Unwound", "FailWork", "WorkFailed", "dispatch.fail_work", None),
        ("Unwound", "Fail", "Failed", "jobs.fail", None),
        ("WorkFailed", "Fail", "Failed", "jobs.fail", None),
    },
    "backup_task": {
        ("Scheduled", "Run", "Running", "backup_task.run", "Fail"),
        ("Scheduled", "Fail", "RetryScheduled", "backup_task.decrease_attempts", None),
        ("Running", "Backup", "AwaitingCopy", "backup_task.backup", "Fail"),
        ("Running", "MarkBackedUp", "BackedUp", "backup_task.mark_backed_up", "Fail"),
        ("Running", "CopyOnPools", "CopyingOnPools", "backup_task.copy_on_pools", "Fail"),
        ("Running", "Finish", "Done", "backup_task.finish", None),
        ("Running", "Fail", "RetryScheduled", "backup_task.decrease_attempts", None),
        ("AwaitingCopy", "CopyAnswered", "BackedUp", "backup_task.answered", "Fail"),
        ("AwaitingCopy", "Fail", "RetryScheduled", "backup_task.decrease_attempts", None),
        ("BackedUp", "CopyToZones", "CopyingToZones", "backup_task.copy_to_zones", None),
        ("BackedUp", "Finish", "Done", "backup_task.finish", None),
        ("CopyingToZones", "ZoneCopiesDone", "Done", "backup_task.copies_done", "Fail"),
        ("CopyingToZones", "Fail", "RetryScheduled", "backup_task.decrease_attempts", None),
        ("CopyingOnPools", "PoolCopiesDone", "Done", "backup_task.copies_done", "Fail"),
        ("CopyingOnPools", "Fail", "RetryScheduled", "backup_task.decrease_attempts", None),
        ("RetryScheduled", "Retry", "Running", "backup_task.run", "Fail"),
        ("RetryScheduled", "Fail", "RetryScheduled", "backup_task.decrease_attempts", None),
        ("RetryScheduled", "CleanUp", "CleanedUp", "backup_task.cleanup", None),
        # hardened only (async_pool_copy_backs_up_first), added since
        ("BackedUp", "CopyOnPools", "CopyingOnPools", "backup_task.copy_on_pools", None),
        ("CopyingToZones", "CopyOnPools", "CopyingOnPools", "backup_task.pools_after_zones", "Fail"),
    },
    "copy_snapshot": {
        ("Selecting", "CopyToZone", "AwaitingZoneCopy", "copies.start_zone_copy", "ZoneFailed"),
        ("Selecting", "ZoneFailed", "Selecting", "copies.zone_failed", None),
        ("AwaitingZoneCopy", "ZoneAnswered", "Selecting", "copies.zone_answered", "ZoneFailed"),
        ("AwaitingZoneCopy", "ZoneFailed", "Selecting", "copies.zone_failed", None),
        ("Selecting", "CopyToPool", "Selecting", "copies.copy_to_pool", "PoolFailed"),
        ("Selecting", "PoolFailed", "Selecting", "copies.pool_failed", None),
        ("Selecting", "Finish", "Finished", "copies.finish", None),
    },
    "copy_snapshot_job": {
        ("Requested", "Start", "Copying", "copy_api.start", "Fail"),
        ("Requested", "Fail", "Failed", "copy_api.fail", None),
        ("Copying", "Copied", "Succeeded", "copy_api.succeed", "Fail"),
        ("Copying", "Fail", "Failed", "copy_api.fail", None),
    },
    "delete_snapshot": {
        ("Requested", "Start", "Deleting", "delete.start", "Fail"),
        ("Requested", "Fail", "Failed", "delete.fail", None),
        ("Deleting", "DriverAnswered", "Deleting", "delete.answered", "Fail"),
        ("Deleting", "Finish", "Deleted", "delete.finish", None),
        ("Deleting", "GiveUp", "NotDeleted", "delete.give_up", None),
        ("Deleting", "Fail", "Failed", "delete.fail", None),
    },
    "retention": {
        ("Evaluating", "DeleteOldest", "Deleting", "retention.delete_oldest", "Fail"),
        ("Evaluating", "Finish", "Done", "retention.finish", None),
        ("Evaluating", "Fail", "Failed", "retention.fail", None),
        ("Deleting", "Deleted", "Evaluating", "retention.deleted", "Fail"),
        ("Deleting", "Fail", "Failed", "retention.fail", None),
    },
}


def _refusal(path: Path) -> DefinitionError:
    with pytest.raises(DefinitionError) as caught:
        load_file(path)
    return caught.value


def _assert_error(exc: DefinitionError, path: Path, message: str, *, machine: str | None, key: str) -> None:
    """``message`` is what follows "<path>: " in ``str(exc)``."""
    assert str(exc) == f"{path}: {message}"
    assert (exc.path, exc.machine, exc.key) == (str(path), machine, key)


class TestLoadFile:
    """``load_file``: a valid file loads in file order; a malformed one fails naming file, machine and key."""

    def test_a_valid_definition_loads_in_file_order(self, door: dict[str, Any], write_definition: Writer) -> None:
        """States, events and transitions keep file order; transitions are numbered from 1."""
        path = write_definition(door)
        d = load_file(path)
        assert (d.path, d.name, d.kind, d.initial, d.title) == (str(path), "door", "entity", "Closed", "Door")
        assert d.state_names == ("Closed", "Open", "Gone")
        assert d.event_names == ("Open", "Close", "Remove")
        assert [(t.number, t.source, t.event, t.dest) for t in d.transitions] == [
            (1, "Closed", "Open", "Open"),
            (2, "Open", "Close", "Closed"),
            (3, "Closed", "Remove", "Gone"),
        ]
        assert d.state_def("Gone").terminal
        assert not d.state_def("Open").transitional

    def test_toml_syntax_error(self, write_definition: Writer) -> None:
        """A file that is not TOML: the parser's own words, with line and column."""
        path = write_definition('[machine]\nname "door"\n')
        _assert_error(
            _refusal(path),
            path,
            "TOML: syntax error: Expected '=' after a key in a key/value pair (at line 2, column 6)",
            machine=None,
            key="TOML",
        )

    def test_unreadable_file(self, tmp_path: Path) -> None:
        """A path that cannot be read is refused with the system's reason."""
        path = tmp_path / "door.toml"
        _assert_error(_refusal(path), path, "file: cannot be read: No such file or directory", machine=None, key="file")

    def test_unknown_top_level_field(self, door: dict[str, Any], write_definition: Writer) -> None:
        """A misspelt top-level table is refused with the nearest known one."""
        door["state"] = door.pop("states")
        path = write_definition(door)
        _assert_error(
            _refusal(path),
            path,
            "machine 'door', state: unknown field (did you mean 'states'?)",
            machine="door",
            key="state",
        )

    def test_unknown_machine_field(self, door: dict[str, Any], write_definition: Writer) -> None:
        """A misspelt key of [machine] is refused with the nearest known one."""
        door["machine"]["initail"] = door["machine"].pop("initial")
        path = write_definition(door)
        _assert_error(
            _refusal(path),
            path,
            "machine 'door', machine.initail: unknown field (did you mean 'initial'?)",
            machine="door",
            key="machine.initail",
        )

    def test_unknown_state_field(self, door: dict[str, Any], write_definition: Writer) -> None:
        """A misspelt key of a state is refused, naming the state by position."""
        door["states"][2]["tag"] = door["states"][2].pop("tags")
        path = write_definition(door)
        _assert_error(
            _refusal(path),
            path,
            "machine 'door', state 3: tag: unknown field (did you mean 'tags'?)",
            machine="door",
            key="state 3: tag",
        )

    def test_unknown_event_field(self, door: dict[str, Any], write_definition: Writer) -> None:
        """A misspelt key of an event is refused, naming the event by position."""
        door["events"][1]["failed"] = True
        path = write_definition(door)
        _assert_error(
            _refusal(path),
            path,
            "machine 'door', event 2: failed: unknown field (did you mean 'failure'?)",
            machine="door",
            key="event 2: failed",
        )

    def test_unknown_transition_field(self, door: dict[str, Any], write_definition: Writer) -> None:
        """A misspelt key of a transition is refused, naming the transition by number."""
        door["transitions"][2]["never_fire"] = True
        path = write_definition(door)
        _assert_error(
            _refusal(path),
            path,
            "machine 'door', transition 3: never_fire: unknown field (did you mean 'never_fired'?)",
            machine="door",
            key="transition 3: never_fire",
        )

    def test_missing_machine_table(self, door: dict[str, Any], write_definition: Writer) -> None:
        """A file without [machine] cannot name its machine."""
        del door["machine"]
        path = write_definition(door)
        _assert_error(_refusal(path), path, "machine: the [machine] table is missing", machine=None, key="machine")

    def test_missing_machine_name(self, door: dict[str, Any], write_definition: Writer) -> None:
        """``machine.name`` is required."""
        del door["machine"]["name"]
        path = write_definition(door)
        _assert_error(_refusal(path), path, "machine.name: is missing", machine=None, key="machine.name")

    def test_machine_name_must_match_the_file_name(self, door: dict[str, Any], write_definition: Writer) -> None:
        """``doors`` declared in door.toml is refused, so that a machine is found by its file name."""
        door["machine"]["name"] = "doors"
        path = write_definition(door)
        _assert_error(
            _refusal(path),
            path,
            "machine 'doors', machine.name: must match the file name 'door' so that a machine is easy to find",
            machine="doors",
            key="machine.name",
        )

    def test_unknown_kind(self, door: dict[str, Any], write_definition: Writer) -> None:
        """``machine.kind`` is entity or workflow."""
        door["machine"]["kind"] = "flow"
        path = write_definition(door)
        _assert_error(
            _refusal(path),
            path,
            "machine 'door', machine.kind: must be one of entity, workflow (got 'flow')",
            machine="door",
            key="machine.kind",
        )

    def test_missing_initial(self, door: dict[str, Any], write_definition: Writer) -> None:
        """``machine.initial`` is required."""
        del door["machine"]["initial"]
        path = write_definition(door)
        _assert_error(
            _refusal(path), path, "machine 'door', machine.initial: is missing", machine="door", key="machine.initial"
        )

    def test_unknown_initial(self, door: dict[str, Any], write_definition: Writer) -> None:
        """``machine.initial`` must be a declared state; the nearest one is suggested."""
        door["machine"]["initial"] = "closed"
        path = write_definition(door)
        _assert_error(
            _refusal(path),
            path,
            "machine 'door', machine.initial: 'closed' is not a state (did you mean 'Closed'?)",
            machine="door",
            key="machine.initial",
        )

    def test_no_states(self, door: dict[str, Any], write_definition: Writer) -> None:
        """A machine needs at least one state."""
        door["states"] = []
        path = write_definition(door)
        _assert_error(
            _refusal(path),
            path,
            "machine 'door', states: a machine needs at least one [[states]] entry",
            machine="door",
            key="states",
        )

    def test_states_must_be_an_array_of_tables(self, door: dict[str, Any], write_definition: Writer) -> None:
        """``states = "Closed"`` is not ``[[states]]``."""
        door["states"] = "Closed"
        path = write_definition(door)
        _assert_error(
            _refusal(path),
            path,
            "machine 'door', states: must be an array of tables ([[states]])",
            machine="door",
            key="states",
        )

    def test_empty_state_name(self, door: dict[str, Any], write_definition: Writer) -> None:
        """A state's name is a non-empty string."""
        door["states"][0]["name"] = ""
        path = write_definition(door)
        _assert_error(
            _refusal(path),
            path,
            "machine 'door', state 1: name: must be a non-empty string (got '')",
            machine="door",
            key="state 1: name",
        )

    def test_duplicate_state(self, door: dict[str, Any], write_definition: Writer) -> None:
        """A state name is declared once."""
        door["states"].append({"name": "Open"})
        path = write_definition(door)
        _assert_error(
            _refusal(path),
            path,
            "machine 'door', state 4: name: 'Open' is declared twice",
            machine="door",
            key="state 4: name",
        )

    def test_duplicate_event(self, door: dict[str, Any], write_definition: Writer) -> None:
        """An event name is declared once."""
        door["events"][1]["name"] = "Open"
        path = write_definition(door)
        _assert_error(
            _refusal(path),
            path,
            "machine 'door', event 2: name: 'Open' is declared twice",
            machine="door",
            key="event 2: name",
        )

    def test_event_failure_flag_must_be_a_boolean(self, door: dict[str, Any], write_definition: Writer) -> None:
        """``failure`` is true or false."""
        door["events"][0]["failure"] = "yes"
        path = write_definition(door)
        _assert_error(
            _refusal(path),
            path,
            "machine 'door', event 'Open': failure: must be true or false (got 'yes')",
            machine="door",
            key="event 'Open': failure",
        )

    def test_unknown_tag(self, door: dict[str, Any], write_definition: Writer) -> None:
        """Tags come from a fixed list, which the message shows, with the nearest tag."""
        door["states"][2]["tags"] = ["terminl"]
        path = write_definition(door)
        _assert_error(
            _refusal(path),
            path,
            "machine 'door', state 'Gone': tags: unknown tag 'terminl' (known: error, terminal, transitional, "
            "waiting) (did you mean 'terminal'?)",
            machine="door",
            key="state 'Gone': tags",
        )

    def test_tags_must_be_a_list(self, door: dict[str, Any], write_definition: Writer) -> None:
        """``tags = "terminal"`` is not a list."""
        door["states"][2]["tags"] = "terminal"
        path = write_definition(door)
        _assert_error(
            _refusal(path),
            path,
            "machine 'door', state 'Gone': tags: must be a list of strings (got 'terminal')",
            machine="door",
            key="state 'Gone': tags",
        )

    def test_ordinals_load_when_every_state_has_one(self, door: dict[str, Any], write_definition: Writer) -> None:
        """Ordinals given for every state are kept (async_job stores them, spec §4.1)."""
        for i, state in enumerate(door["states"]):
            state["ordinal"] = i
        d = load_file(write_definition(door))
        assert [s.ordinal for s in d.states] == [0, 1, 2]

    @pytest.mark.parametrize(("value", "shown"), [(-1, "-1"), (True, "True"), ("0", "'0'"), (1.5, "1.5")])
    def test_bad_ordinal(self, door: dict[str, Any], write_definition: Writer, value: object, shown: str) -> None:
        """An ordinal is a non-negative integer (a boolean is not one)."""
        door["states"][0]["ordinal"] = value
        path = write_definition(door)
        _assert_error(
            _refusal(path),
            path,
            f"machine 'door', state 'Closed': ordinal: must be a non-negative integer (got {shown})",
            machine="door",
            key="state 'Closed': ordinal",
        )

    def test_duplicate_ordinal(self, door: dict[str, Any], write_definition: Writer) -> None:
        """Two states cannot store the same integer."""
        for state in door["states"]:
            state["ordinal"] = 0
        path = write_definition(door)
        _assert_error(
            _refusal(path),
            path,
            "machine 'door', state 'Open': ordinal: 0 is already used",
            machine="door",
            key="state 'Open': ordinal",
        )

    def test_partial_ordinals(self, door: dict[str, Any], write_definition: Writer) -> None:
        """Ordinals are given for every state or none; the first state without one is named."""
        door["states"][0]["ordinal"] = 0
        door["states"][2]["ordinal"] = 2
        path = write_definition(door)
        _assert_error(
            _refusal(path),
            path,
            "machine 'door', state 'Open': ordinal: is missing; give every state an ordinal or none",
            machine="door",
            key="state 'Open': ordinal",
        )

    def test_unknown_source_state(self, door: dict[str, Any], write_definition: Writer) -> None:
        """A transition's source is a declared state; the nearest one is suggested."""
        door["transitions"][1]["source"] = "Opn"
        path = write_definition(door)
        _assert_error(
            _refusal(path),
            path,
            "machine 'door', transition 2: source: 'Opn' is not a state (did you mean 'Open'?)",
            machine="door",
            key="transition 2: source",
        )

    def test_unknown_dest_state(self, door: dict[str, Any], write_definition: Writer) -> None:
        """A transition's dest is a declared state; the nearest one is suggested."""
        door["transitions"][0]["dest"] = "Opened"
        path = write_definition(door)
        _assert_error(
            _refusal(path),
            path,
            "machine 'door', transition 1: dest: 'Opened' is not a state (did you mean 'Open'?)",
            machine="door",
            key="transition 1: dest",
        )

    def test_unknown_state_with_nothing_close(self, door: dict[str, Any], write_definition: Writer) -> None:
        """When no state is close, no suggestion is made."""
        door["transitions"][0]["dest"] = "Nowhere"
        path = write_definition(door)
        _assert_error(
            _refusal(path),
            path,
            "machine 'door', transition 1: dest: 'Nowhere' is not a state",
            machine="door",
            key="transition 1: dest",
        )

    def test_missing_transition_field(self, door: dict[str, Any], write_definition: Writer) -> None:
        """source, event and dest are required."""
        del door["transitions"][0]["source"]
        path = write_definition(door)
        _assert_error(
            _refusal(path),
            path,
            "machine 'door', transition 1: source: is missing",
            machine="door",
            key="transition 1: source",
        )

    def test_event_not_declared(self, door: dict[str, Any], write_definition: Writer) -> None:
        """A transition's event must be declared in [[events]]."""
        door["transitions"][0]["event"] = "Opn"
        path = write_definition(door)
        _assert_error(
            _refusal(path),
            path,
            "machine 'door', transition 1: event: 'Opn' is not a declared event (did you mean 'Open'?)",
            machine="door",
            key="transition 1: event",
        )

    def test_duplicate_source_event_pair(self, door: dict[str, Any], write_definition: Writer) -> None:
        """A (source, event) pair has one destination; the earlier row is named."""
        door["transitions"].append({"source": "Closed", "event": "Open", "dest": "Gone"})
        path = write_definition(door)
        _assert_error(
            _refusal(path),
            path,
            "machine 'door', transition 4: event: (Closed, Open) is already transition 1; a pair has one destination",
            machine="door",
            key="transition 4: event",
        )

    def test_transition_flag_must_be_a_boolean(self, door: dict[str, Any], write_definition: Writer) -> None:
        """``usage`` is true or false."""
        door["transitions"][0]["usage"] = "yes"
        path = write_definition(door)
        _assert_error(
            _refusal(path),
            path,
            "machine 'door', transition 1: usage: must be true or false (got 'yes')",
            machine="door",
            key="transition 1: usage",
        )

    @pytest.mark.parametrize("key", ["calls", "on_error"])
    def test_steps_only_in_workflow_machines(self, door: dict[str, Any], write_definition: Writer, key: str) -> None:
        """An entity machine is CloudStack's table and runs no steps."""
        door["transitions"][0][key] = "door.open" if key == "calls" else "Close"
        path = write_definition(door)
        _assert_error(
            _refusal(path),
            path,
            f"machine 'door', transition 1: {key}: only workflow machines run step callbacks (set machine.kind)",
            machine="door",
            key=f"transition 1: {key}",
        )

    def test_workflow_loads_its_steps_and_error_transitions(
        self, door_workflow: dict[str, Any], write_definition: Writer
    ) -> None:
        """``calls`` and ``on_error`` are kept; the error transition of a row is found from them."""
        d = load_file(write_definition(door_workflow))
        first = d.transitions[0]
        assert (first.calls, first.on_error) == ("door.open", "Jam")
        assert d.error_transition(first) == d.transitions[1]
        assert d.error_transition(d.transitions[2]) is None
        assert d.error_events == frozenset({"Jam"})
        assert [d.is_error_transition(t) for t in d.transitions] == [False, True, False]

    def test_on_error_without_calls(self, door_workflow: dict[str, Any], write_definition: Writer) -> None:
        """``on_error`` handles the failure of a step, so it needs one."""
        del door_workflow["transitions"][0]["calls"]
        path = write_definition(door_workflow)
        _assert_error(
            _refusal(path),
            path,
            "machine 'door', transition 1: on_error: needs a step (calls) whose failure it handles",
            machine="door",
            key="transition 1: on_error",
        )

    def test_on_error_event_not_declared(self, door_workflow: dict[str, Any], write_definition: Writer) -> None:
        """``on_error`` names a declared event; the nearest one is suggested."""
        door_workflow["transitions"][0]["on_error"] = "Jamm"
        path = write_definition(door_workflow)
        _assert_error(
            _refusal(path),
            path,
            "machine 'door', transition 1: on_error: 'Jamm' is not a declared event (did you mean 'Jam'?)",
            machine="door",
            key="transition 1: on_error",
        )

    def test_on_error_transition_must_exist(self, door_workflow: dict[str, Any], write_definition: Writer) -> None:
        """``(source, on_error)`` must itself be a row: the error transition taken when the step fails."""
        door_workflow["transitions"][0]["on_error"] = "Close"
        path = write_definition(door_workflow)
        _assert_error(
            _refusal(path),
            path,
            "machine 'door', transition 1: on_error: no transition (Closed, Close) exists to take when step "
            "'door.open' fails",
            machine="door",
            key="transition 1: on_error",
        )

    def test_terminal_state_with_an_exit(self, door: dict[str, Any], write_definition: Writer) -> None:
        """Nothing leaves a terminal state for another state; the offending row is named."""
        door["transitions"].append({"source": "Gone", "event": "Open", "dest": "Open"})
        path = write_definition(door)
        _assert_error(
            _refusal(path),
            path,
            "machine 'door', state 'Gone': tags: is tagged terminal but transition 4 leaves it for 'Open'",
            machine="door",
            key="state 'Gone': tags",
        )

    def test_terminal_state_may_loop_on_itself(self, door: dict[str, Any], write_definition: Writer) -> None:
        """Self-loops on a terminal state are allowed (CloudStack has them, e.g. Expunged in spec §2.3)."""
        door["transitions"].append({"source": "Gone", "event": "Remove", "dest": "Gone"})
        assert load_file(write_definition(door)).exits("Gone")[0].dest == "Gone"


class TestSourceLists:
    """A workflow row's ``source`` may list several states: one transition per source, each checked like a row."""

    def test_a_list_expands_into_one_transition_per_source(
        self, door_workflow: dict[str, Any], write_definition: Writer
    ) -> None:
        """In list order, at the row's place, sharing its number, event, dest, steps, spec and note."""
        door_workflow["transitions"][1].update(source=["Closed", "Open"], spec="§1", note="jams either way")
        d = load_file(write_definition(door_workflow))
        assert [(t.number, t.source, t.event, t.dest, t.calls, t.on_error) for t in d.transitions] == [
            (1, "Closed", "Open", "Open", "door.open", "Jam"),
            (2, "Closed", "Jam", "Jammed", "door.jam", None),
            (2, "Open", "Jam", "Jammed", "door.jam", None),
            (3, "Open", "Close", "Closed", "door.close", None),
        ]
        assert {(t.spec, t.note) for t in d.transitions if t.number == 2} == {("§1", "jams either way")}
        assert (len(d.transitions), d.row_count) == (4, 3)
        assert d.allowed("Open") == ("Jam", "Close")

    def test_each_source_of_a_list_can_be_an_error_transition(
        self, door_workflow: dict[str, Any], write_definition: Writer
    ) -> None:
        """``on_error`` finds ``(source, on_error)`` among the expanded pairs."""
        door_workflow["transitions"][1]["source"] = ["Closed", "Open"]
        door_workflow["transitions"][2]["on_error"] = "Jam"
        d = load_file(write_definition(door_workflow))
        close = d.transition("Open", "Close")
        assert close is not None
        assert d.error_transition(close) == d.transition("Open", "Jam")

    def test_unknown_state_in_a_list(self, door_workflow: dict[str, Any], write_definition: Writer) -> None:
        """The element is named by its place in the list, with the nearest state."""
        door_workflow["transitions"][1]["source"] = ["Closed", "Opn"]
        path = write_definition(door_workflow)
        _assert_error(
            _refusal(path),
            path,
            "machine 'door', transition 2: source: 'Opn' (element 2) is not a state (did you mean 'Open'?)",
            machine="door",
            key="transition 2: source",
        )

    def test_empty_list(self, door_workflow: dict[str, Any], write_definition: Writer) -> None:
        """A list names at least one state."""
        door_workflow["transitions"][1]["source"] = []
        path = write_definition(door_workflow)
        _assert_error(
            _refusal(path),
            path,
            "machine 'door', transition 2: source: must be a state name or a non-empty list of them (got [])",
            machine="door",
            key="transition 2: source",
        )

    @pytest.mark.parametrize(("element", "shown"), [(3, "3"), ("", "''"), (True, "True")])
    def test_an_element_that_is_not_a_name(
        self, door_workflow: dict[str, Any], write_definition: Writer, element: object, shown: str
    ) -> None:
        """Every element is a non-empty string; the first that is not is named with its value."""
        door_workflow["transitions"][1]["source"] = ["Closed", element]
        path = write_definition(door_workflow)
        _assert_error(
            _refusal(path),
            path,
            f"machine 'door', transition 2: source: element 2 must be a non-empty string (got {shown})",
            machine="door",
            key="transition 2: source",
        )

    def test_a_source_that_is_neither_a_name_nor_a_list(
        self, door_workflow: dict[str, Any], write_definition: Writer
    ) -> None:
        """A workflow's message says that a list is allowed too."""
        door_workflow["transitions"][1]["source"] = 5
        path = write_definition(door_workflow)
        _assert_error(
            _refusal(path),
            path,
            "machine 'door', transition 2: source: must be a state name or a non-empty list of them (got 5)",
            machine="door",
            key="transition 2: source",
        )

    def test_a_state_listed_twice(self, door_workflow: dict[str, Any], write_definition: Writer) -> None:
        """A list names each source once; both places are given."""
        door_workflow["transitions"][1]["source"] = ["Closed", "Open", "Closed"]
        path = write_definition(door_workflow)
        _assert_error(
            _refusal(path),
            path,
            "machine 'door', transition 2: source: 'Closed' (element 3) is already element 1; list a source once",
            machine="door",
            key="transition 2: source",
        )

    def test_a_listed_pair_already_in_an_earlier_row(
        self, door_workflow: dict[str, Any], write_definition: Writer
    ) -> None:
        """A pair has one row even when a list writes it; both row numbers are named."""
        door_workflow["transitions"].append(
            {"source": ["Closed", "Open"], "event": "Close", "dest": "Closed", "calls": "door.close"}
        )
        path = write_definition(door_workflow)
        _assert_error(
            _refusal(path),
            path,
            "machine 'door', transition 4: event: (Open, Close) is already transition 3; a pair has one destination",
            machine="door",
            key="transition 4: event",
        )

    def test_a_pair_already_written_by_an_earlier_list(
        self, door_workflow: dict[str, Any], write_definition: Writer
    ) -> None:
        """The other way round: a single-source row repeats a pair of an earlier list row."""
        door_workflow["transitions"][1]["source"] = ["Closed", "Open"]
        door_workflow["transitions"].append({"source": "Open", "event": "Jam", "dest": "Closed", "calls": "door.jam"})
        path = write_definition(door_workflow)
        _assert_error(
            _refusal(path),
            path,
            "machine 'door', transition 4: event: (Open, Jam) is already transition 2; a pair has one destination",
            machine="door",
            key="transition 4: event",
        )

    def test_on_error_is_checked_for_every_source(
        self, door_workflow: dict[str, Any], write_definition: Writer
    ) -> None:
        """The error transition must exist from each source of the list; the one missing is named."""
        door_workflow["transitions"][0]["source"] = ["Closed", "Open"]
        path = write_definition(door_workflow)
        _assert_error(
            _refusal(path),
            path,
            "machine 'door', transition 1: on_error: no transition (Open, Jam) exists to take when step 'door.open' "
            "fails",
            machine="door",
            key="transition 1: on_error",
        )

    def test_a_terminal_state_in_a_list(self, door_workflow: dict[str, Any], write_definition: Writer) -> None:
        """A list cannot make a terminal state a source of a move to another state."""
        door_workflow["transitions"][2]["source"] = ["Open", "Jammed"]
        path = write_definition(door_workflow)
        _assert_error(
            _refusal(path),
            path,
            "machine 'door', state 'Jammed': tags: is tagged terminal but transition 3 leaves it for 'Closed'",
            machine="door",
            key="state 'Jammed': tags",
        )

    def test_entity_machines_keep_one_row_per_source(self, door: dict[str, Any], write_definition: Writer) -> None:
        """An entity machine is CloudStack's table verbatim, with the spec's row numbers: no lists."""
        door["transitions"][0]["source"] = ["Closed"]
        path = write_definition(door)
        _assert_error(
            _refusal(path),
            path,
            "machine 'door', transition 1: source: a list of sources is for workflow machines; an entity machine is "
            "CloudStack's table verbatim, one row per registration as the spec numbers them: write one row per source",
            machine="door",
            key="transition 1: source",
        )

    @pytest.mark.parametrize("machine", sorted(_PAIRS_BEFORE_SOURCE_LISTS))
    def test_the_project_workflows_kept_every_pair(self, machine: str) -> None:
        """Writing shared rows once with a list of sources lost no pair and added none."""
        d = project_definitions()[machine]
        pairs = [(t.source, t.event, t.dest, t.calls, t.on_error) for t in d.transitions]
        assert len(pairs) == len(set(pairs))
        assert set(pairs) == _PAIRS_BEFORE_SOURCE_LISTS[machine]

    def test_take_snapshot_writes_its_52_transitions_in_33_rows(self) -> None:
        """The counts ``snapshotfsm check`` prints for the biggest workflow."""
        d = project_definitions()["take_snapshot"]
        assert (len(d.transitions), d.row_count) == (52, 33)


class TestUnresolvedCalls:
    """``unresolved_calls``: every ``calls`` of a workflow against the step names the caller knows."""

    def test_every_step_known(self, door_workflow: dict[str, Any], write_definition: Writer) -> None:
        """Nothing to report when every step is known."""
        d = load_file(write_definition(door_workflow))
        assert unresolved_calls(d, {"door.open", "door.jam", "door.close"}) == []

    def test_a_misspelt_step(self, door_workflow: dict[str, Any], write_definition: Writer) -> None:
        """The row, the step and the nearest known step are named, one error per row in file order."""
        door_workflow["transitions"][0]["calls"] = "door.opn"
        door_workflow["transitions"][2]["calls"] = "slam"
        path = write_definition(door_workflow)
        errors = unresolved_calls(load_file(path), frozenset({"door.open", "door.jam", "door.close"}))
        assert len(errors) == 2
        _assert_error(
            errors[0],
            path,
            "machine 'door', transition 1: calls: 'door.opn' is not a step (did you mean 'door.open'?)",
            machine="door",
            key="transition 1: calls",
        )
        _assert_error(
            errors[1],
            path,
            "machine 'door', transition 3: calls: 'slam' is not a step",
            machine="door",
            key="transition 3: calls",
        )

    def test_a_list_row_is_reported_once(self, door_workflow: dict[str, Any], write_definition: Writer) -> None:
        """A row with several sources is one mistake, however many pairs it writes."""
        door_workflow["transitions"][1].update(source=["Closed", "Open"], calls="door.jamm")
        path = write_definition(door_workflow)
        errors = unresolved_calls(load_file(path), ["door.open", "door.jam", "door.close"])
        assert [str(e) for e in errors] == [
            f"{path}: machine 'door', transition 2: calls: 'door.jamm' is not a step (did you mean 'door.jam'?)"
        ]

    def test_entity_machines_call_nothing(self, door: dict[str, Any], write_definition: Writer) -> None:
        """No steps, nothing unresolved, whatever is known."""
        assert unresolved_calls(load_file(write_definition(door)), ()) == []


class TestLoadDirectory:
    """``load_directory``: every *.toml of a directory, by name; a bad file or directory is named."""

    def test_loads_every_file_in_name_order(
        self, door: dict[str, Any], write_definition: Writer, tmp_path: Path
    ) -> None:
        """Machines are keyed by name and iterate in file-name order."""
        door["machine"]["name"] = "b_door"
        write_definition(door, "b_door.toml")
        door["machine"]["name"] = "a_door"
        write_definition(door, "a_door.toml")
        (tmp_path / "README.md").write_text("not a definition\n")
        loaded = load_directory(tmp_path)
        assert loaded.directory == str(tmp_path)
        assert list(loaded) == ["a_door", "b_door"]
        assert len(loaded) == 2
        assert loaded["a_door"].path == str(tmp_path / "a_door.toml")

    def test_unknown_machine_name_suggests_the_nearest(self, door: dict[str, Any], write_definition: Writer) -> None:
        """Looking up a missing machine raises a KeyError with a did-you-mean, printed without extra quotes."""
        loaded = load_directory(write_definition(door).parent)
        with pytest.raises(KeyError) as caught:
            loaded["dor"]
        assert str(caught.value) == "no machine named 'dor' (did you mean 'door'?)"
        assert "dor" not in loaded

    def test_a_broken_file_is_named(self, door: dict[str, Any], write_definition: Writer, tmp_path: Path) -> None:
        """The first bad file fails the whole directory, naming that file."""
        write_definition(door)
        door["machine"]["name"] = "gate"
        door["transitions"][0]["dest"] = "Opn"
        path = write_definition(door, "gate.toml")
        with pytest.raises(DefinitionError) as caught:
            load_directory(tmp_path)
        _assert_error(
            caught.value,
            path,
            "machine 'gate', transition 1: dest: 'Opn' is not a state (did you mean 'Open'?)",
            machine="gate",
            key="transition 1: dest",
        )

    def test_empty_directory(self, tmp_path: Path) -> None:
        """A directory with no *.toml is refused."""
        with pytest.raises(DefinitionError) as caught:
            load_directory(tmp_path)
        _assert_error(caught.value, tmp_path, "directory: holds no *.toml definitions", machine=None, key="directory")

    def test_missing_directory(self, tmp_path: Path) -> None:
        """A path that is not a directory is refused."""
        missing = tmp_path / "states"
        with pytest.raises(DefinitionError) as caught:
            load_directory(missing)
        _assert_error(
            caught.value, missing, "directory: does not exist or is not a directory", machine=None, key="directory"
        )

    def test_a_second_file_cannot_claim_a_machine_name(
        self, door: dict[str, Any], write_definition: Writer, tmp_path: Path
    ) -> None:
        """Two files declaring one machine: the name-equals-file-name rule refuses the second."""
        write_definition(door)
        path = write_definition(door, "gate.toml")
        with pytest.raises(DefinitionError) as caught:
            load_directory(tmp_path)
        _assert_error(
            caught.value,
            path,
            "machine 'door', machine.name: must match the file name 'gate' so that a machine is easy to find",
            machine="door",
            key="machine.name",
        )

    def test_duplicate_machine_name_across_files(
        self, door: dict[str, Any], write_definition: Writer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The backstop behind that rule: a name loaded twice names both files."""
        first = write_definition(door)
        second = write_definition(door, "gate.toml")
        real = load_file(first)
        monkeypatch.setattr(definitions_module, "load_file", lambda path: real)
        with pytest.raises(DefinitionError) as caught:
            load_directory(tmp_path)
        _assert_error(
            caught.value,
            second,
            f"machine 'door', machine.name: is also defined in {first}",
            machine="door",
            key="machine.name",
        )

    def test_project_definitions_are_loaded_once(self) -> None:
        """``project_definitions()`` is cached: every caller shares one load of states/."""
        assert project_definitions() is project_definitions()
        assert "snapshot" in project_definitions()


class TestDefinitionLookups:
    """``Definition.state`` / ``event`` and friends: the way code names a state or an event."""

    @pytest.fixture
    def loaded(self, door: dict[str, Any], write_definition: Writer) -> tuple[Path, Definition]:
        path = write_definition(door)
        return path, load_file(path)

    @pytest.mark.parametrize(("lookup", "name"), [("state", "Open"), ("event", "Close")])
    def test_a_known_name_comes_back_unchanged(self, loaded: tuple[Path, Definition], lookup: str, name: str) -> None:
        """A declared state or event is returned as it is."""
        assert getattr(loaded[1], lookup)(name) == name

    @pytest.mark.parametrize(
        ("lookup", "typo", "text"),
        [
            ("state", "Opn", "is not a state (did you mean 'Open'?)"),
            ("event", "Remov", "is not a declared event (did you mean 'Remove'?)"),
        ],
    )
    def test_a_misspelt_name_gets_a_did_you_mean(
        self, loaded: tuple[Path, Definition], lookup: str, typo: str, text: str
    ) -> None:
        """A misspelt state or event fails with the file, the machine and the nearest declared name."""
        path, d = loaded
        with pytest.raises(DefinitionError) as caught:
            getattr(d, lookup)(typo)
        key = f"{lookup} '{typo}'"
        _assert_error(caught.value, path, f"machine 'door', {key}: {text}", machine="door", key=key)

    def test_state_def_of_an_unknown_state(self, loaded: tuple[Path, Definition]) -> None:
        """``state_def`` refuses an unknown name the same way."""
        with pytest.raises(DefinitionError, match=r"state 'Gon': is not a state \(did you mean 'Gone'\?\)$"):
            loaded[1].state_def("Gon")

    def test_table_lookups(self, loaded: tuple[Path, Definition]) -> None:
        """``transition``, ``exits`` and ``allowed`` read the table in file order."""
        d = loaded[1]
        assert d.transition("Closed", "Remove") == d.transitions[2]
        assert d.transition("Open", "Remove") is None
        assert [t.number for t in d.exits("Closed")] == [1, 3]
        assert d.allowed("Closed") == ("Open", "Remove")
        assert d.allowed("Gone") == ()
        assert d.allowed("NoSuchState") == ()


class TestFindings:
    """``Definition.findings`` and ``reachable``: legal but odd corners of a definition."""

    @pytest.fixture
    def lab(self, write_definition: Writer) -> Definition:
        """Start→Middle→Done; Attic only through a never-fired row; Island and Loop cut off; one unused event."""
        doc = {
            "machine": {"name": "lab", "initial": "Start"},
            "states": [
                {"name": "Start"},
                {"name": "Middle"},
                {"name": "Done", "tags": ["terminal"]},
                {"name": "Attic"},
                {"name": "Island"},
                {"name": "Loop"},
            ],
            "events": [{"name": n} for n in ("Go", "Finish", "Secret", "Leave", "Spin", "Unused")],
            "transitions": [
                {"source": "Start", "event": "Go", "dest": "Middle"},
                {"source": "Middle", "event": "Finish", "dest": "Done"},
                {"source": "Start", "event": "Secret", "dest": "Attic", "never_fired": True},
                {"source": "Attic", "event": "Leave", "dest": "Done"},
                {"source": "Loop", "event": "Spin", "dest": "Loop"},
                {"source": "Middle", "event": "Spin", "dest": "Middle"},
            ],
        }
        return load_file(write_definition(doc, "lab.toml"))

    def test_reachable(self, lab: Definition) -> None:
        """Reachability from initial, with and without the never-fired rows."""
        assert lab.reachable() == {"Start", "Middle", "Done", "Attic"}
        assert lab.reachable(in_practice=True) == {"Start", "Middle", "Done"}

    def test_findings_in_order(self, lab: Definition) -> None:
        """Unreachable, reachable only through never-fired rows, dead ends, unused events, each in file order."""
        assert lab.findings() == [
            Finding("lab", "unreachable", "Island", "state 'Island' cannot be reached from 'Start'"),
            Finding("lab", "unreachable", "Loop", "state 'Loop' cannot be reached from 'Start'"),
            Finding(
                "lab",
                "unreachable",
                "Attic",
                "state 'Attic' can be reached only through transitions that are never fired (#3)",
            ),
            Finding(
                "lab", "dead-end", "Island", "state 'Island' has no exit to another state and is not tagged terminal"
            ),
            Finding("lab", "dead-end", "Loop", "state 'Loop' has no exit to another state and is not tagged terminal"),
            Finding("lab", "unused-event", "Unused", "event 'Unused' is declared but no transition uses it"),
        ]

    def test_a_never_fired_list_row_is_cited_once(
        self, door_workflow: dict[str, Any], write_definition: Writer
    ) -> None:
        """Two pairs of one row reaching the same state: the row's number appears once."""
        door_workflow["transitions"][1].update(source=["Closed", "Open"], never_fired=True)
        finding = load_file(write_definition(door_workflow)).findings()[0]
        assert finding.message == "state 'Jammed' can be reached only through transitions that are never fired (#2)"

    def test_a_clean_definition_has_no_findings(self, door: dict[str, Any], write_definition: Writer) -> None:
        """Every state reachable, every non-terminal state with an exit, every event used: nothing to report."""
        assert load_file(write_definition(door)).findings() == []
