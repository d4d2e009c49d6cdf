"""The entity definitions of ``states/`` against CloudStack's tables as the spec gives them (``spec_tables.py``).

Counts, the state and event lists in enum order, every transition row in registration order with its spec citation,
and the per-state and per-row flags the spec records: volume's transitional flag (§2.1) and USAGE flag (§2.3),
snapshot's never-fired row #11 (§1.2 notes), async_job's stored ordinals (§4.1).
"""

from __future__ import annotations

import re
from typing import NamedTuple

import pytest
import spec_tables as spec

from snapshotfsm.definitions import Definition, project_definitions


class Row(NamedTuple):
    number: int
    source: str
    event: str
    dest: str
    usage: bool = False


def names(text: str) -> tuple[str, ...]:
    """An enum list as the spec writes it: "`A, B,\\nC`" or "A, B, C." (backticks and final period dropped)."""
    body = text.strip().strip("`").removesuffix(".").strip("`")
    return tuple(name.strip() for name in body.split(","))


def markdown_rows(text: str) -> list[Row]:
    """The rows of a "| # | from | event | to |" table (spec §1.2, §3)."""
    found = re.findall(r"^\| (\d+) \| (\w+) \| (\w+) \| (\w+) \|$", text, flags=re.MULTILINE)
    return [Row(int(n), source, event, dest) for n, source, event, dest in found]


def volume_rows(text: str) -> list[Row]:
    """The rows of spec §2.3: "12 Resizing-OperationSucceeded→Ready (U); ..." (bold markers ignored)."""
    rows = []
    for item in text.replace("**", "").split(";"):
        match = re.fullmatch(r"(\d+) (\w+)-(\w+)→(\w+)( \(U\))?\.?", item.strip())
        assert match, f"cannot read {item.strip()!r} as a row of spec §2.3"
        n, source, event, dest, usage = match.groups()
        rows.append(Row(int(n), source, event, dest, usage is not None))
    return rows


def volume_states(text: str) -> list[tuple[str, bool]]:
    """Spec §2.1: "Allocated(F), Creating(T), ..." as (name, transitional)."""
    return [(name, flag == "T") for name, flag in re.findall(r"(\w+)\(([TF])\)", text)]


def ordinals(text: str) -> list[tuple[str, int]]:
    """Spec §4.1: "IN_PROGRESS=0, SUCCEEDED=1, ..." as (name, ordinal)."""
    return [(name, int(n)) for name, n in re.findall(r"(\w+)=(\d+)", text)]


SNAPSHOT_ROWS = markdown_rows(spec.SNAPSHOT_TRANSITIONS)
VOLUME_ROWS = volume_rows(spec.VOLUME_TRANSITIONS)
STORE_REF_ROWS = markdown_rows(spec.SNAPSHOT_STORE_REF_TRANSITIONS)

TABLES = {  # machine: (the spec section each row cites as "§x #n", the rows)
    "snapshot": ("§1.2", SNAPSHOT_ROWS),
    "volume": ("§2.3", VOLUME_ROWS),
    "snapshot_store_ref": ("§3", STORE_REF_ROWS),
}
ALL_ROWS = [(machine, row) for machine, (_, rows) in TABLES.items() for row in rows]


def _definition(name: str) -> Definition:
    return project_definitions()[name]


class TestTranscription:
    """The tables in spec_tables.py read as the spec says they should: a check on the transcription itself."""

    @pytest.mark.parametrize(
        ("machine", "count"), [("snapshot", 18), ("volume", 67), ("snapshot_store_ref", 26)], ids=str
    )
    def test_rows_are_numbered_one_to_n(self, machine: str, count: int) -> None:
        """The spec announces 18, 67 and 26 entries, numbered from 1 in registration order."""
        assert [row.number for row in TABLES[machine][1]] == list(range(1, count + 1))

    def test_list_lengths_match_the_spec(self) -> None:
        """10 snapshot states and 8 events (§1.1), 22 and 24 for volumes (§2.1-2.2), 12 and 16 for store refs (§3)."""
        assert (len(names(spec.SNAPSHOT_STATES)), len(names(spec.SNAPSHOT_EVENTS))) == (10, 8)
        assert (len(volume_states(spec.VOLUME_STATES)), len(names(spec.VOLUME_EVENTS))) == (22, 24)
        assert (len(names(spec.SNAPSHOT_STORE_REF_STATES)), len(names(spec.SNAPSHOT_STORE_REF_EVENTS))) == (12, 16)


class TestCounts:
    """States, events and transitions per entity machine."""

    @pytest.mark.parametrize(
        ("machine", "counts"),
        [
            ("snapshot", (10, 8, 18)),  # §1.1-1.2
            ("volume", (22, 24, 67)),  # §2.1-2.3
            ("snapshot_store_ref", (12, 16, 26)),  # §3
        ],
        ids=str,
    )
    def test_counts(self, machine: str, counts: tuple[int, int, int]) -> None:
        """The definition has the spec's number of states, events and transitions."""
        d = _definition(machine)
        assert (len(d.states), len(d.events), len(d.transitions)) == counts

    def test_async_job_has_four_states(self) -> None:
        """JobInfo.Status has four constants (§4.1)."""
        assert len(_definition("async_job").states) == 4


class TestStatesAndEvents:
    """State and event lists in the enums' order."""

    @pytest.mark.parametrize(
        ("machine", "states", "events"),
        [
            ("snapshot", spec.SNAPSHOT_STATES, spec.SNAPSHOT_EVENTS),
            ("snapshot_store_ref", spec.SNAPSHOT_STORE_REF_STATES, spec.SNAPSHOT_STORE_REF_EVENTS),
        ],
        ids=["snapshot", "snapshot_store_ref"],
    )
    def test_state_and_event_order(self, machine: str, states: str, events: str) -> None:
        """Snapshot.State/Event (§1.1) and ObjectInDataStoreStateMachine's enums (§3), in order."""
        d = _definition(machine)
        assert d.state_names == names(states)
        assert d.event_names == names(events)

    def test_volume_states_in_order_with_their_transitional_flag(self) -> None:
        """Volume.State (§2.1) in order; ``transitional`` is tagged exactly where CloudStack's flag is true."""
        d = _definition("volume")
        assert [(s.name, s.transitional) for s in d.states] == volume_states(spec.VOLUME_STATES)

    def test_volume_events_in_order(self) -> None:
        """Volume.Event (§2.2) in order."""
        assert _definition("volume").event_names == names(spec.VOLUME_EVENTS)

    def test_async_job_states_and_ordinals(self) -> None:
        """JobInfo.Status in order with the ordinal job_status stores: IN_PROGRESS=0 ... CANCELLED=3 (§4.1)."""
        d = _definition("async_job")
        assert [(s.name, s.ordinal) for s in d.states] == ordinals(spec.ASYNC_JOB_STATUS)
        assert [(s.name, s.ordinal) for s in d.states] == [
            ("IN_PROGRESS", 0),
            ("SUCCEEDED", 1),
            ("FAILED", 2),
            ("CANCELLED", 3),
        ]

    def test_async_job_done_states_are_terminal(self) -> None:
        """IN_PROGRESS is "not done"; SUCCEEDED, FAILED and CANCELLED are "all three done" (§4.1)."""
        d = _definition("async_job")
        assert [s.name for s in d.states if not s.terminal] == list(spec.ASYNC_JOB_NOT_DONE)
        assert d.initial == "IN_PROGRESS"


class TestTransitions:
    """Every row in registration order, with its citation and flags."""

    @pytest.mark.parametrize(("machine", "row"), ALL_ROWS, ids=[f"{machine}#{row.number}" for machine, row in ALL_ROWS])
    def test_row(self, machine: str, row: Row) -> None:
        """Row n of the spec's table is transition n of the definition, citing it as "§x #n"."""
        section, _ = TABLES[machine]
        t = _definition(machine).transitions[row.number - 1]
        assert (t.number, t.source, t.event, t.dest) == (row.number, row.source, row.event, row.dest)
        assert t.spec == f"{section} #{row.number}"

    @pytest.mark.parametrize("machine", list(TABLES))
    def test_whole_table_in_order(self, machine: str) -> None:
        """No row more, none less, none moved."""
        rows = [(t.source, t.event, t.dest) for t in _definition(machine).transitions]
        assert rows == [(r.source, r.event, r.dest) for r in TABLES[machine][1]]

    def test_volume_usage_flags(self) -> None:
        """The USAGE impact flag is on rows 12, 18, 34, 38 and 39 of §2.3 and on no other row."""
        flagged = [t.number for t in _definition("volume").transitions if t.usage]
        assert flagged == [r.number for r in VOLUME_ROWS if r.usage]
        assert flagged == [12, 18, 34, 38, 39]

    @pytest.mark.parametrize("machine", ["snapshot", "snapshot_store_ref", "async_job"])
    def test_no_usage_flag_outside_volume(self, machine: str) -> None:
        """Only Volume.State's table carries the USAGE flag."""
        assert [t.number for t in _definition(machine).transitions if t.usage] == []

    def test_snapshot_row_11_is_the_only_one_never_fired(self) -> None:
        """No code fires the snapshot-level CopyingRequested (§1.2 notes): row #11 alone is marked."""
        assert [t.number for t in _definition("snapshot").transitions if t.never_fired] == [11]
