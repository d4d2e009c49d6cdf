"""A counterexample as a storage engineer sees it: log lines, a Mermaid sequence diagram, the rows a violation names.

Each test runs a default scenario under a fault, renders it, and closes the world's database before asserting: these
tests are about what is shown, not about the model's behaviour (the faulted runs break invariants on purpose, and a
closed world is not judged at the test's end).
"""

from __future__ import annotations

import re
from collections.abc import Callable

import attrs
import pytest

from snapshotfsm.explore import render
from snapshotfsm.explore.scenarios import default_scenarios, pairwise
from snapshotfsm.explore.world import OnCrash, World
from snapshotfsm.faults import FaultPlan
from snapshotfsm.invariants import Violation

SCENARIOS = {s.name: s for s in default_scenarios()}


@attrs.frozen
class Shown:
    """Everything a counterexample shows, taken before the world's database is closed."""

    log: list[str]
    log_rows: list[tuple[int, str, int, str, str, str]]
    diagram: str
    violations: list[Violation]
    rows: dict[Violation, list[tuple[str, dict[str, object]]]]
    by_subject: dict[str, list[tuple[str, dict[str, object]]]]


def show(
    scenario: str,
    plan: FaultPlan,
    *,
    instance: int = 0,
    on_crash: OnCrash = "restart",
    subjects: tuple[str, ...] = (),
    steps: int | None = None,
) -> Shown:
    """Run ``scenario``'s ``instance`` under ``plan`` to quiescence, render it, close it; ``subjects`` looked up too.

    ``steps``: run only that many steps of the program, and stop there (no quiescence).
    """
    sc = SCENARIOS[scenario]
    world = World(pairwise(sc.instances())[instance], faults=plan, timeline=True, on_crash=on_crash)
    try:
        for step in range(len(sc.steps) if steps is None else steps):
            world.run_step(step)
        if steps is None:
            world.quiesce()
        violations = world.judge()
        store = world.engine.store
        return Shown(
            log=render.log_lines(store),
            log_rows=list(
                store.conn.execute("SELECT id, machine, entity_id, source, event, dest FROM transition_log ORDER BY id")
            ),
            diagram=render.sequence_diagram(store, world.record.timeline, title=f"{scenario}: a counterexample"),
            violations=violations,
            rows={v: render.offending_rows(store, v) for v in violations},
            by_subject={s: render.offending_rows(store, Violation("any", s, "")) for s in subjects},
        )
    finally:
        world.engine.close()


def crash_after_take() -> FaultPlan:
    """A crash once the primary snapshot is answered (a new plan each time: a crash rule fires once)."""
    return FaultPlan().crash("take_snapshot.PrimaryAnswered")


@pytest.fixture(scope="module")
def crashed() -> Shown:
    """take-delete on NFS/XenServer, its server crashing once the primary snapshot is answered."""
    return show("take-delete", crash_after_take())


def body(diagram: str) -> list[str]:
    """The diagram's statements, after its front matter and ``sequenceDiagram`` line, unindented."""
    lines = diagram.splitlines()
    return [line.strip() for line in lines[lines.index("sequenceDiagram") + 1 :]]


def position(lines: list[str], line: str) -> int:
    assert line in lines, f"{line!r} not in the diagram"
    return lines.index(line)


# --- the sequence diagram ---------------------------------------------------------------------------------------------


class TestSequenceDiagram:
    def test_participants_in_order_only_those_that_appear(self, crashed: Shown) -> None:
        declared = [line for line in body(crashed.diagram) if line.startswith("participant ")]
        assert declared == [
            "participant API",
            "participant MS1",
            "participant default as default driver",
            "participant DB",
        ]

    def test_front_matter_carries_the_title(self, crashed: Shown) -> None:
        assert crashed.diagram.splitlines()[:4] == [
            "---",
            'title: "take-delete: a counterexample"',
            "---",
            "sequenceDiagram",
        ]

    def test_the_crash_stands_out_after_the_answer_it_lost(self, crashed: Shown) -> None:
        lines = body(crashed.diagram)
        call = position(lines, "MS1->>default: takeSnapshot")
        answer = position(lines, "default-->>MS1: takeSnapshot: ok")
        crash = position(lines, "Note over MS1: 💥 CRASH at take_snapshot.PrimaryAnswered")
        assert call < answer < crash
        assert lines[crash - 1 : crash + 2] == [f"rect {render.CRASH_COLOUR}", lines[crash], "end"]
        restart = position(lines, "Note over MS1: ↻ starts again: start-up cleanup (§10)")
        cleanup = position(lines, "MS1->>DB: snapshot 1 Creating → Error (OperationFailed)")
        assert crash < restart < cleanup

    def test_api_calls_and_answers_go_between_api_and_the_server(self, crashed: Shown) -> None:
        lines = body(crashed.diagram)
        assert position(lines, "API->>MS1: createSnapshot") < position(lines, "MS1-->>API: job 1")
        assert "API->>MS1: deleteSnapshot snapshot #35;1" in lines  # '#' would start an entity code

    def test_entity_transitions_are_messages_to_the_database(self, crashed: Shown) -> None:
        lines = body(crashed.diagram)
        assert "MS1->>DB: snapshot 1 Allocated → Creating (CreateRequested)" in lines
        assert "MS1->>DB: snapshot 1 created Allocated" in lines
        assert "MS1->>DB: snapshot 1 Error removed (DefaultSnapshotStrategy.deleteSnapshot)" in lines
        assert "MS1->>DB: snapshot_store_ref 1 Allocated deleted (SnapshotObject.deleteIfNotReady)" in lines

    def test_a_workflows_consecutive_transitions_are_one_note(self, crashed: Shown) -> None:
        lines = body(crashed.diagram)
        assert (
            "Note over MS1: take_snapshot 1: Validated → Queued → Orchestrating → Preparing → Prepared → StrategyChosen"
            in (lines)
        )
        assert "Note over MS1: take_snapshot 1: created Requested" in lines
        assert not any(line.startswith("MS1->>DB: take_snapshot") for line in lines)

    def test_moments_fall_between_the_log_rows_around_them(self, crashed: Shown) -> None:
        """The take asks for the snapshot (a moment), then logs that it awaits it, then hears the answer."""
        lines = body(crashed.diagram)
        call = position(lines, "MS1->>default: takeSnapshot")
        awaiting = position(lines, "Note over MS1: take_snapshot 1: TakeBegun → AwaitingPrimary")
        asked = position(lines, "MS1->>DB: snapshot_store_ref 1 Allocated → Creating (CreateOnlyRequested)")
        assert asked < call < awaiting < position(lines, "default-->>MS1: takeSnapshot: ok")

    def test_the_clock_is_marked_when_it_moves(self, crashed: Shown) -> None:
        clocks = [line for line in body(crashed.diagram) if "⏱" in line]
        assert clocks == [
            "Note over API,DB: ⏱ 0.000s",
            "Note over API,DB: ⏱ 2.000s",
            "Note over API,DB: ⏱ 602.000s",
        ]

    def test_every_transition_is_drawn(self, crashed: Shown) -> None:
        text = crashed.diagram
        for _, machine, entity, *_ in crashed.log_rows:
            assert f"{machine} {entity}" in text

    def test_an_answer_that_never_comes_is_a_crossed_arrow(self) -> None:
        shown = show("chain", FaultPlan().fail("takeSnapshot", kind="no_answer"))
        assert "default--xMS1: takeSnapshot: never answers (injected)" in body(shown.diagram)

    def test_an_answer_lost_to_a_crash_is_a_crossed_arrow(self) -> None:
        shown = show("two-takes", FaultPlan().crash("backup_task.CopyAnswered"), instance=1)
        lost = [line for line in body(shown.diagram) if "--x" in line]
        assert lost
        assert all(re.fullmatch(r"\w+--xMS1: \w+ answer lost: ms1 crashed since the call", line) for line in lost)

    def test_a_peer_taking_over_is_a_note_over_both_servers(self) -> None:
        shown = show("chain", crash_after_take(), instance=5, on_crash="node_left")
        lines = body(shown.diagram)
        assert "Note over MS1,MS2: ms1 left: ms2 runs onManagementNodeLeft: takes over its left-over jobs" in lines
        assert "participant MS2" in lines

    def test_a_driver_is_labelled_by_its_storage(self) -> None:
        shown = show("chain", crash_after_take(), instance=9)
        assert "participant storpool as StorPool driver" in body(shown.diagram)

    def test_idle_workflows_in_a_row_are_one_note(self) -> None:
        """A policy's hours pass with storage GC passes that find nothing: one line for a stretch of them."""
        lines = body(show("policy", FaultPlan()).diagram)
        idle = [
            re.fullmatch(
                r"Note over MS1: (\d+) workflows that wrote nothing else \(\1 storage_gc\), [\d.]+s to [\d.]+s", line
            )
            for line in lines
        ]
        summarized = sum(int(found[1]) for found in idle if found)
        drawn = [line for line in lines if re.fullmatch(r"Note over MS1: storage_gc \d+: created .*", line)]
        assert summarized > render.MAX_QUIET
        assert len(drawn) <= render.MAX_QUIET


STATEMENT = re.compile(
    r"participant (?P<declared>\w+)( as .+)?"
    r"|(?P<source>\w+)(->>|-->>|--x|-x)(?P<target>\w+): (?P<message>.+)"
    r"|Note over (?P<over>\w+)(,(?P<over2>\w+))?: (?P<note>.+)"
    r"|rect rgb\(\d+, \d+, \d+\)"
    r"|end"
)
"""Every statement the diagrams may hold: what a Mermaid ``sequenceDiagram`` parses, in the subset we write."""

FAULTED = [
    pytest.param("take-delete", crash_after_take, 0, "restart", id="take-delete-crash"),
    pytest.param("chain", lambda: FaultPlan().fail("takeSnapshot", kind="no_answer"), 0, "restart", id="chain-silence"),
    pytest.param(
        "chain", lambda: FaultPlan().fail("takeSnapshot", kind="exception"), 0, "restart", id="chain-exception"
    ),
    pytest.param(
        "two-takes", lambda: FaultPlan().crash("backup_task.CopyAnswered"), 1, "restart", id="two-takes-dropped"
    ),
    pytest.param("chain", crash_after_take, 5, "node_left", id="chain-node-left"),
    pytest.param("copy", lambda: FaultPlan().crash("copy_snapshot.ZoneAnswered"), 0, "restart", id="copy-crash"),
    pytest.param("policy", FaultPlan, 0, "restart", id="policy"),
]


@pytest.mark.parametrize(("scenario", "plan", "instance", "on_crash"), FAULTED)
def test_every_statement_parses_and_names_declared_participants(
    scenario: str, plan: Callable[[], FaultPlan], instance: int, on_crash: OnCrash
) -> None:
    """No mermaid-cli here (no network): the structure is checked against the grammar of the statements we write."""
    lines = body(show(scenario, plan(), instance=instance, on_crash=on_crash).diagram)
    declared: list[str] = []
    depth = 0
    for line in lines:
        found = STATEMENT.fullmatch(line)
        assert found, f"not a sequenceDiagram statement: {line!r}"
        if found["declared"]:
            assert not any(not s.startswith("participant") for s in lines[: lines.index(line)])
            declared.append(found["declared"])
        used = [found[n] for n in ("source", "target", "over", "over2") if found[n]]
        assert set(used) <= set(declared), f"{line!r} names an undeclared participant"
        text = found["message"] or found["note"] or ""
        assert not re.search(r"[;#<>]", re.sub(r"#(\d+|lt|gt);", "", text)), f"unescaped syntax in {line!r}"
        depth += line.startswith("rect ") - (line == "end")
        assert depth in (0, 1)
    assert depth == 0
    assert len(declared) == len(set(declared))


# --- the log as text --------------------------------------------------------------------------------------------------


class TestLogLines:
    def test_one_line_per_transition_in_order(self, crashed: Shown) -> None:
        assert len(crashed.log) == len(crashed.log_rows)
        for line, (row_id, machine, entity, source, event, dest) in zip(crashed.log, crashed.log_rows, strict=True):
            assert line.split()[0] == str(row_id)
            assert f"ms1 {machine} {entity}: {source or '(new)'} --{event}--> {dest or '(gone)'}" in line

    def test_a_line_shows_time_server_transition_and_job(self, crashed: Shown) -> None:
        assert crashed.log[0] == " 1   0.000s ms1 volume 1: (new) --create--> Ready"
        assert crashed.log[18] == "19   0.000s ms1 snapshot 1: Allocated --CreateRequested--> Creating  job 1"
        assert crashed.log[-3] == (
            "38 602.000s ms1 snapshot 1: Error --StorageManagerImpl.removeSnapshotsInErrorStatus (expunge)--> (gone)"
        )

    def test_soft_removals_and_direct_writes_are_marked(self, crashed: Shown) -> None:
        """The restart expunged work job 2, so the re-delete's job is 3: ids are never given twice."""
        assert crashed.log[32].endswith(
            "snapshot 1: Error --DefaultSnapshotStrategy.deleteSnapshot--> Error  job 3 [remove]"
        )
        shown = show("chain", crash_after_take())
        direct = [line for line in shown.log if line.endswith("[direct]")]
        assert direct
        assert all(re.search(r" ms\d \w+ \d+: \w+ --\S+--> \w+", line) for line in direct)

    def test_lines_fit_a_terminal(self, crashed: Shown) -> None:
        """Ordinary transitions fit 100 columns; only CloudStack's long method names may run over."""
        assert all(len(line) <= 100 for line in crashed.log if "Impl." not in line)


# --- the rows a violation names ---------------------------------------------------------------------------------------


class TestOffendingRows:
    def test_every_violation_of_a_crashed_take_names_its_rows(self, crashed: Shown) -> None:
        assert {v.invariant for v in crashed.violations} == {"counts-match-recount", "no-orphan-object"}
        for violation, rows in crashed.rows.items():
            assert rows, f"no rows for {violation}"

    def test_an_account_resource_is_its_resource_count_row(self, crashed: Shown) -> None:
        counts = [v for v in crashed.violations if v.subject == "account 2 snapshot"]
        assert len(counts) == 1
        assert render.rows_text(crashed.rows[counts[0]]) == [
            "resource_count: id=4, type=snapshot, account_id=2, domain_id=1, count=1"
        ]

    def test_a_store_path_is_its_storage_object(self, crashed: Shown) -> None:
        orphan = next(v for v in crashed.violations if v.invariant == "no-orphan-object")
        [(table, row)] = crashed.rows[orphan]
        assert table == "sim_object"
        assert orphan.subject == f"primary store {row['store_id']}: {row['path']}"
        assert (row["snapshot_id"], row["deleted_ms"]) == (1, None)

    def test_a_snapshot_a_ref_and_a_job_name_their_rows(self) -> None:
        shown = show("chain", FaultPlan().fail("takeSnapshot", kind="exception"))
        kinds = {"snapshot", "snapshot_store_ref", "job", "account"}
        judged = [v for v in shown.violations if v.subject.split()[0] in kinds]
        assert {v.subject.split()[0] for v in judged} == kinds
        for violation in judged:
            assert shown.rows[violation], f"no rows for {violation}"
        snapshot = next(v for v in judged if v.subject == "snapshot 1")
        tables = [table for table, _ in shown.rows[snapshot]]
        assert tables[0] == "snapshots"
        assert set(tables[1:]) == {"snapshot_store_ref"}
        assert all(row["snapshot_id"] == 1 for _, row in shown.rows[snapshot][1:])
        job = next(v for v in judged if v.subject.startswith("job 1 "))
        assert [(t, r["id"]) for t, r in shown.rows[job]] == [("async_job", 1)]  # its work job was expunged

    def test_a_job_brings_its_vm_work_jobs(self) -> None:
        """A take whose storage never answers, before quiescence: its work job still runs, with its job row."""
        plan = FaultPlan().fail("takeSnapshot", kind="no_answer")
        shown = show("take-delete", plan, steps=2, subjects=("job 1 (createSnapshot)",))
        rows = shown.by_subject["job 1 (createSnapshot)"]
        assert [(t, r["id"]) for t, r in rows] == [("async_job", 1), ("vm_work_job", 2), ("async_job", 2)]
        assert rows[2][1]["related"] == "1"

    def test_a_job_whose_snapshot_is_gone_still_has_its_job_row(self) -> None:
        shown = show("two-takes", FaultPlan().crash("backup_task.CopyAnswered"), instance=1)
        job = next(v for v in shown.violations if v.subject == "job 1 (createSnapshot)")
        assert render.rows_text(shown.rows[job])[0].startswith("async_job: id=1, ")

    def test_a_volume_a_job_a_workflow_and_a_lock_by_their_subjects(self) -> None:
        shown = show(
            "take-delete", crash_after_take(), subjects=("volume 1", "async_job 1", "take_snapshot 1", "op_lock x")
        )
        assert [t for t, _ in shown.by_subject["volume 1"]] == ["volumes"]
        assert [(t, r["id"]) for t, r in shown.by_subject["async_job 1"]] == [("async_job", 1)]
        [(table, row)] = shown.by_subject["take_snapshot 1"]
        assert (table, row["machine"], row["state"]) == ("workflow", "take_snapshot", "AwaitingPrimary")
        assert shown.by_subject["op_lock x"] == []  # released: nothing left to show

    @pytest.mark.parametrize(
        "subject",
        [
            "",
            "call default.takeSnapshot#12",
            "snapshot 999",
            "snapshot one",
            "account 2",
            "account 2 no_such_resource",
            "no_such_machine 3",
            "image store x: path",
            "job x (createSnapshot)",
            "usage_event",
            "com.cloud.utils.exception.CloudRuntimeException",
            "'; DROP TABLE snapshots; --",
        ],
    )
    def test_a_subject_not_understood_gives_nothing(self, subject: str) -> None:
        shown = show("take-delete", FaultPlan(), subjects=(subject,))
        assert shown.by_subject[subject] == []


def test_rows_text_leaves_out_null_columns() -> None:
    rows: list[tuple[str, dict[str, object]]] = [("op_lock", {"id": 1, "key": "snapshots3", "ms_id": 1, "owner": None})]
    assert render.rows_text(rows) == ["op_lock: id=1, key=snapshots3, ms_id=1"]
