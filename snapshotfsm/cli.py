"""The ``snapshotfsm`` command: each verb parses its options, calls one library function and renders the result.

Only this module imports ``click`` and ``rich``, and only this module turns project errors into "Error: ..." with
exit code 1. Output fits the terminal: tables are as wide as the terminal allows, and where a table would have to cut
a state name or an explanation the command prints a narrower layout instead (rich wraps it).
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
import click
from rich.console import Console, Group, RenderableType
from rich.markup import escape
from rich.measure import Measurement
from rich.padding import Padding
from rich.table import Table
from rich.text import Text

from snapshotfsm.definitions import Definition, Definitions, Finding, load_directory, load_path, unresolved_calls
from snapshotfsm.errors import NotFound, SnapshotFSMError, UnknownMachine
from snapshotfsm.store import story as stories
from snapshotfsm.store.store import Store

if TYPE_CHECKING:
    from rich.progress import TaskID

    from snapshotfsm.demo import Outcome
    from snapshotfsm.store.story import StoryRow

PIPED_WIDTH = 200
"""The width output gets when it goes to a pipe or a file and ``COLUMNS`` does not say otherwise."""
WHY_WIDTH = 40
"""The least width the wide history gives its "why it failed" column; narrower terminals get the narrow layout."""
NOTE_WIDTH = 40
"""The least width the demo's table gives its "what happened" column; below that it prints one block per scenario."""


def _console() -> Console:
    """A console as wide as the terminal (``COLUMNS`` when set, e.g. ``COLUMNS=80 snapshotfsm demo``).

    Made per command, not at import, so that the width is read when the command runs. Piped output has no
    terminal to measure: it gets :data:`PIPED_WIDTH`, so that a log file keeps the wide tables.
    """
    columns = os.environ.get("COLUMNS", "")
    if columns.isdigit() and int(columns) > 0:
        width: int | None = int(columns)
    else:
        width = None if sys.stdout.isatty() else PIPED_WIDTH
    return Console(highlight=False, soft_wrap=True, width=width)


@click.group()
@click.version_option(package_name="snapshotfsm")
def main() -> None:
    """An explicit state-machine model of CloudStack's volume-snapshot orchestration."""


@main.command()
@click.argument("path", required=False, type=click.Path(path_type=Path))
def check(path: Path | None) -> None:
    """Validate the definitions in PATH (a directory of *.toml or one .toml file; default: states/).

    Every workflow step named in a `calls` must be a registered step. Prints, per machine, its counts of states,
    events and transitions (one per source and event; "rows" says how many [[transitions]] rows write them), then
    static findings as warnings: unreachable states, states with no exit that are not tagged terminal, declared
    events with no transition. Exit code 0 with only warnings, 1 on an error.

    Example: snapshotfsm check states/
    """
    try:
        definitions = load_path(path)
    except SnapshotFSMError as exc:
        raise click.ClickException(str(exc)) from exc
    if any(t.calls for d in definitions.values() for t in d.transitions):
        known = _known_steps()
        unresolved = [error for d in definitions.values() for error in unresolved_calls(d, known)]
        if unresolved:
            # One "Error: ..." line per unknown step, the way a load error is shown.
            raise click.ClickException("\nError: ".join(str(error) for error in unresolved))
    out = _console()
    table = Table(title=f"definitions in {definitions.directory}")
    for column in ("machine", "kind", "states", "events", "transitions", "rows", "profile-only", "findings"):
        table.add_column(column, justify="left" if column in ("machine", "kind", "profile-only") else "right")
    findings = []
    for name, d in definitions.items():
        found = d.findings()
        findings.extend(found)
        counts = (len(d.states), len(d.events), len(d.transitions), d.row_count)
        table.add_row(name, d.kind, *(str(n) for n in counts), _profile_only(d), str(len(found)))
    out.print(table)
    for d in definitions.values():
        for t in d.transitions:
            if t.profiles:
                out.print(
                    f"profile-only: {d.name} #{t.number} {t.source} --{t.event}--> {t.dest} under "
                    f"{', '.join(t.profiles)}" + (f" ({t.spec})" if t.spec else ""),
                    soft_wrap=True,
                )
    for f in findings:
        out.print(f"warning: {f.machine}: {f.message}")
    for note in _check_notes(definitions, findings):
        out.print(note, soft_wrap=False)
    out.print(f"{len(definitions)} machines valid, {len(findings)} warnings")


def _profile_only(definition: Definition) -> str:
    """How many transitions exist only under some profiles, per profile: ``hardened: 2``, or ``-``."""
    counts: dict[str, int] = {}
    for t in definition.transitions:
        for p in t.profiles:
            counts[p] = counts.get(p, 0) + 1
    return ", ".join(f"{p}: {n}" for p, n in counts.items()) or "-"


def _check_notes(definitions: Definitions, findings: list[Finding]) -> list[str]:
    """What the warnings mean: which are CloudStack's own, and what a ``(#11)`` reference points at."""
    notes = []
    upstream = sorted({f.machine for f in findings if _is_upstream_table(definitions, f.machine)})
    if upstream:
        count = sum(f.machine in upstream for f in findings)
        notes.append(
            f"note: the {count} warnings on {', '.join(upstream)} are expected: these entity machines are "
            "CloudStack's own state tables, copied verbatim (spec §1.2, §2.3, §3), and CloudStack declares states "
            "and events that its transitions never reach or use. A warning on a workflow machine, or on a machine "
            "of your own, is worth a look."
        )
    if any("(#" in f.message for f in findings):
        notes.append(
            "note: '(#11)' names a row of that machine's [[transitions]], numbered from 1 in file order "
            "(CloudStack's registration order, as the spec's tables number them): snapshot's #11 is spec §1.2 "
            "row 11, BackedUp -CopyingRequested-> Copying, which CloudStack never fires."
        )
    return notes


def _is_upstream_table(definitions: Definitions, machine: str) -> bool:
    """An entity machine that names the CloudStack source it copies (``source``): upstream's table, not ours."""
    definition = definitions[machine]
    return definition.kind == "entity" and bool(definition.source)


def _known_steps() -> frozenset[str]:
    """The step names a workflow's ``calls`` may use: every step the orchestration modules declare."""
    from snapshotfsm.orchestration.workflows import step_names  # noqa: PLC0415 - only check needs the steps

    return step_names()


def _clock(at_ms: int) -> str:
    seconds, ms = divmod(at_ms, 1000)
    minutes, seconds = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours:02d}:{minutes:02d}:{seconds:02d}.{ms:03d}"


@main.command()
@click.option("--db", "db_path", required=True, type=click.Path(dir_okay=False, path_type=Path), help="Database file.")
@click.option("--snapshot", "snapshot_id", type=int, help="This snapshot's story: its jobs, refs, volume, usage.")
@click.option("--only-snapshot", is_flag=True, help="With --snapshot: only the snapshot machine's own rows.")
@click.option("--volume", "volume_id", type=int, help="Only this volume's transitions.")
@click.option("--job", "job_id", type=int, help="Only the transitions written for this job.")
@click.option("--machine", help="Only this machine's transitions (with --entity: one entity's).")
@click.option("--entity", "entity_id", type=int, help="The entity id, with --machine.")
def history(
    db_path: Path,
    snapshot_id: int | None,
    only_snapshot: bool,
    volume_id: int | None,
    job_id: int | None,
    machine: str | None,
    entity_id: int | None,
) -> None:
    """Print what happened, in order, and why: a snapshot's story, a volume's, a job's, or the whole run's.

    Each row: simulated time, sequence number, job, the entity, the move and how it was made (an event;
    create/remove/delete of the row; a direct write: CloudStack's code bypassing its machine). A row that a failed
    step led to says why: CloudStack's exception, its message and the API error code its job answered with.
    --snapshot shows everything that acted on the snapshot (its jobs, VM work job, store refs, volume, usage
    events); --only-snapshot keeps the snapshot machine's own rows. The database is opened read-only.

    Example: snapshotfsm history --db snapshotfsm-demo.db --snapshot 5
    """
    chosen = [o for o in (snapshot_id, volume_id, job_id, machine) if o is not None]
    if len(chosen) > 1:
        raise click.ClickException("give at most one of --snapshot, --volume, --job, --machine")
    if entity_id is not None and machine is None:
        raise click.ClickException("--entity needs --machine, the machine the id belongs to (e.g. --machine volume)")
    if only_snapshot and snapshot_id is None:
        raise click.ClickException("--only-snapshot needs --snapshot ID")
    try:
        store = Store.open_read_only(db_path)
    except SnapshotFSMError as exc:
        raise click.ClickException(str(exc)) from exc
    try:
        _check_history_ids(store, {"snapshot": snapshot_id, "volume": volume_id, "job": job_id}, machine, entity_id)
        if snapshot_id is not None and not only_snapshot:
            rows = stories.snapshot_story(store, snapshot_id)
            what = f"story of snapshot {snapshot_id}"
        else:
            if snapshot_id is not None:
                machine, entity_id = "snapshot", snapshot_id
            elif volume_id is not None:
                machine, entity_id = "volume", volume_id
            rows = stories.history(store, machine=machine, entity_id=entity_id, job_id=job_id)
            what = "transition log"
    except SnapshotFSMError as exc:
        raise click.ClickException(str(exc)) from exc
    finally:
        store.close()
    out = _console()
    title = f"{what} of {db_path}" + (f" ({len(rows)} rows)" if rows else "")
    out.print(_history_table(out, rows, title), soft_wrap=False)
    if not rows:
        out.print("no transitions match")


_ID_TABLES = {"snapshot": "snapshots", "volume": "volumes", "job": "async_job"}


def _check_history_ids(store: Store, ids: dict[str, int | None], machine: str | None, entity_id: int | None) -> None:
    """An id or a machine the database does not have is a mistake to point out, not an empty table.

    Raises:
        NotFound: no such row; the message says which ids there are.
        UnknownMachine: no such machine, with the nearest name and the list.
    """
    for label, value in ids.items():
        table = _ID_TABLES[label]
        if value is None or store.conn.execute(f"SELECT 1 FROM {table} WHERE id = ?", (value,)).fetchone():
            continue
        low, high = store.conn.execute(f"SELECT MIN(id), MAX(id) FROM {table}").fetchone()
        there = f"its {label} ids run from {low} to {high}" if low is not None else f"it has no {label} at all"
        raise NotFound(label, value, where=f"in {store.path}; {there}")
    if machine is None:
        return
    logged = {m for (m,) in store.conn.execute("SELECT DISTINCT machine FROM transition_log")}
    known = sorted(set(store.definitions) | logged)
    if machine not in known:
        raise UnknownMachine(machine, known, listed=True)
    if entity_id is not None:
        found = store.conn.execute(
            "SELECT 1 FROM transition_log WHERE machine = ? AND entity_id = ? LIMIT 1", (machine, entity_id)
        ).fetchone()
        if found is None:
            raise NotFound(machine, entity_id, where=f"in the transition log of {store.path}")


def _event(row: StoryRow) -> str:
    log = row.log
    assert log is not None
    return log.event if log.overwrote is None else f"{log.event} (overwrote {log.overwrote})"


def _move(row: StoryRow) -> tuple[str, str]:
    """The row's move as a user reads it (``from → to``) and how it was made (its event, or what wrote it)."""
    if row.usage is not None:
        return f"usage event {row.usage.type}", f"zone {row.usage.zone_id}"
    log = row.log
    assert log is not None
    if log.kind == "create":
        return f"created → {log.dest}", ""
    if log.kind in ("remove", "delete"):
        return f"{log.source} → {log.kind}d", f"by {_event(row)}"
    if log.kind == "direct":
        return f"{log.source} → {log.dest}", f"direct write by {_event(row)}"
    return f"{log.source} → {log.dest}", _event(row)


def _history_table(out: Console, rows: list[StoryRow], title: str) -> Table:
    """The wide table (a column per field) when it fits the terminal with nothing cut, else the narrow one."""
    wide = _wide_history(rows, title, with_why=False)
    needed = Measurement.get(out, out.options, wide).maximum
    if any(r.causes for r in rows):
        needed += WHY_WIDTH + 3
    if needed <= out.width:
        return _wide_history(rows, title, with_why=True)
    return _narrow_history(rows, title)


def _wide_history(rows: list[StoryRow], title: str, *, with_why: bool) -> Table:
    table = Table(title=title)
    for column in ("seq", "time", "ms", "job", "machine", "id", "from", "event", "to", "kind"):
        table.add_column(column, justify="right" if column in ("seq", "ms", "job", "id") else "left", no_wrap=True)
    why = with_why and any(r.causes for r in rows)
    if why:
        table.add_column("why it failed", ratio=1, min_width=WHY_WIDTH)
    for r in rows:
        if r.usage is not None:
            u = r.usage
            cells = ["", _clock(r.at_ms), "", "", "usage_event", str(u.id), "-", u.type, "-", "usage"]
        else:
            log = r.log
            assert log is not None
            source, dest = log.source or "-", log.dest or "-"
            job = str(log.job_id or "")
            cells = [str(log.seq), _clock(r.at_ms), str(log.ms_id), job, log.machine, str(log.entity_id)]
            cells += [source, _event(r), dest, log.kind]
        if why:
            cells.append("\n".join(str(c) for c in r.causes))
        table.add_row(*cells, style="red" if r.causes else None)
    return table


def _narrow_history(rows: list[StoryRow], title: str) -> Table:
    """Four columns for a narrow terminal: when, job, which entity, and the move with its event and why under it."""
    table = Table(title=title, show_edge=False, pad_edge=False, expand=True)
    table.add_column("time / seq", no_wrap=True)
    table.add_column("job", justify="right", no_wrap=True)
    table.add_column("entity")
    table.add_column("move / event / why it failed", ratio=1)
    servers = {r.log.ms_id for r in rows if r.log is not None}
    for r in rows:
        when, job, entity = _clock(r.at_ms), "", ""
        if r.usage is not None:
            entity = f"usage_event {r.usage.id}"
        elif r.log is not None:
            when += f"\n#{r.log.seq}" + (f" ms {r.log.ms_id}" if len(servers) > 1 else "")
            job, entity = str(r.log.job_id or ""), f"{r.log.machine} {r.log.entity_id}"
        move, how = _move(r)
        text = Text(move)
        if how:
            text.append("\n" + how, style="dim")
        for cause in r.causes:
            text.append(f"\n✗ {cause}", style="red")
        table.add_row(when, job, entity, text)
    return table


@main.command()
@click.option("--db", "db_path", default="snapshotfsm-demo.db", show_default=True, help="Database file (recreated).")
@click.option("--seed", default=0, show_default=True, help="Seed for the uuids; the same seed gives the same database.")
def demo(db_path: str, seed: int) -> None:
    """Build a small cloud and take snapshots on every pool type, attached and detached, with faults.

    It shows an injected backup failure, a refusal, a management-server crash with restart cleanup, an async
    backup, a zone copy and a policy whose retention deletes an old snapshot; then prints where to look next. While
    a demo runs on a database, a second one on it is refused (a lock file beside it, DB.lock).

    Example: snapshotfsm demo --db /tmp/demo.db
    """
    from snapshotfsm.demo import demo_lock, run_demo  # noqa: PLC0415 - the demo builds a whole cloud; load it only here

    try:
        with demo_lock(db_path):
            engine, outcomes = run_demo(db_path, seed=seed)
            total, now = len(engine.history()), engine.clock.now_ms
            engine.close()
    except SnapshotFSMError as exc:
        raise click.ClickException(str(exc)) from exc
    out = _console()
    out.print(_demo_outcomes(out, outcomes, f"snapshotfsm demo on {db_path}"), soft_wrap=False)
    failed = next((o for o in outcomes if o.snapshot_id and "failed step" in o.note), None)
    out.print(f"{total} transitions logged at simulated time {_clock(now)}. Where to look next:")
    hints = Table.grid(padding=(0, 1))
    hints.add_column(no_wrap=True)
    hints.add_column()
    hints.add_row("  a snapshot's story:", f"snapshotfsm history --db {db_path} --snapshot 2")
    if failed is not None:
        hints.add_row("  why one failed:", f"snapshotfsm history --db {db_path} --snapshot {failed.snapshot_id}")
    hints.add_row("  the whole run:", f"snapshotfsm history --db {db_path}")
    hints.add_row("  state diagrams:", f"snapshotfsm diagrams (writes {Path('diagrams').absolute()})")
    out.print(hints, soft_wrap=False)


def _demo_outcomes(out: Console, outcomes: list[Outcome], title: str) -> RenderableType:
    """A table when it fits with room for the explanations, else one block per scenario that wraps at the width."""
    columns = ("scenario", "pool", "snapshot", "state", "job", "strategy")
    table = Table(title=title)
    for column in columns:
        table.add_column(column, no_wrap=True)
    for o in outcomes:
        table.add_row(o.scenario, o.pool, str(o.snapshot_id or "-"), o.snapshot_state, o.job, o.strategy)
    if Measurement.get(out, out.options, table).maximum + NOTE_WIDTH + 3 <= out.width:
        table = Table(title=title)
        for column in columns:
            table.add_column(column, no_wrap=True)
        table.add_column("what happened", ratio=1, min_width=NOTE_WIDTH)
        for o in outcomes:
            table.add_row(o.scenario, o.pool, str(o.snapshot_id or "-"), o.snapshot_state, o.job, o.strategy, o.note)
        return table
    blocks: list[RenderableType] = [Text(title, style="bold italic", justify="center"), Text()]
    for o in outcomes:
        blocks.append(Text.assemble((o.scenario, "bold"), f" · snapshot {o.snapshot_id or '-'} · {o.snapshot_state}"))
        blocks.append(
            Padding(
                Text(f"job {o.job} · {o.strategy} strategy · pool {o.pool}", style="dim"), (0, 0, 0, 2), expand=False
            )
        )
        blocks.append(Padding(Text(o.note), (0, 0, 0, 2), expand=False))
        blocks.append(Text())
    return Group(*blocks)


@main.command()
@click.option(
    "--out", "out_dir", type=click.Path(path_type=Path), help="Directory to write into [default: ./diagrams]."
)
@click.option(
    "--format", "formats", default="dot,mmd,svg", show_default=True, help="Comma-separated: dot, mmd, svg, png."
)
@click.option("--states", "states_dir", type=click.Path(path_type=Path), help="Definitions [default: states/].")
def diagrams(out_dir: Path | None, formats: str, states_dir: Path | None) -> None:
    """Write a state diagram of every machine: DOT and Mermaid always, SVG and PNG when graphviz's dot is installed.

    Error transitions are red and dashed, terminal states have a double border, transitional states are yellow and
    dashed, waiting states blue, states no transition reaches grey and dotted; each diagram carries a legend.
    Output is deterministic. Without --out it writes into diagrams/ of the current directory.

    Example: snapshotfsm diagrams --out /tmp/d --format dot,svg
    """
    from snapshotfsm import diagrams as drawing  # noqa: PLC0415 - graphviz is only needed here

    target = out_dir.absolute() if out_dir is not None else drawing.default_out_dir()
    try:
        chosen = drawing.parse_formats(formats)
        definitions = load_path(states_dir) if states_dir is not None else load_directory()
        written = drawing.write(definitions, target, chosen)
    except SnapshotFSMError as exc:
        raise click.ClickException(str(exc)) from exc
    out = _console()
    out.print(f"wrote {len(written.files)} files for {len(definitions)} machines to {target}")
    if written.skipped:
        out.print(f"note: no {'/'.join(written.skipped).upper()} written: {drawing.INSTALL_HINT}")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())


@main.command()
@click.option("--points", "only", flag_value="points", help="Only the crash points.")
@click.option("--ops", "only", flag_value="ops", help="Only the driver operations.")
def faults(only: str | None) -> None:
    """List every fault point the installed drivers and the definitions offer: the fault catalogue.

    Driver operations, with the names a fault rule may give them (by driver, by pool type, bare) and the fault
    kinds they accept; crash points: a workflow event (before its step), a step's n-th durable write
    (STEP#N, before it commits), each phase of the restart cleanup and each tick of a background task. A FaultPlan
    refuses a rule that is not here.

    Example: snapshotfsm faults --points
    """
    from snapshotfsm.faults import default_catalogue  # noqa: PLC0415 - loads the installed drivers' entry points

    try:
        found = default_catalogue()
    except SnapshotFSMError as exc:
        raise click.ClickException(str(exc)) from exc
    out = _console()
    if only != "points":
        table = Table(title=escape("driver operations: a rule names one DRIVER.OP, POOL_TYPE.OP or OP[@N][:KIND]"))
        for column in ("driver", "providers", "pool types", "operation", "call", "fault kinds"):
            table.add_column(column)
        for op in found.ops:
            providers = ", ".join(op.providers) or "-"
            pool_types = ", ".join(op.pool_types) or "-"
            table.add_row(op.driver, providers, pool_types, op.op, op.call, ", ".join(op.kinds))
        out.print(table)
    if only != "ops":
        table = Table(title="crash points (FaultPlan.crash(POINT))")
        for column in ("point", "kind", "machine", "profiles", "where"):
            table.add_column(column)
        for point in found.crash_points:
            where = "; ".join(point.transitions) or (
                "before this phase of the restart" if point.kind == "restart" else "before each tick of this task"
            )
            profiles = ", ".join(point.profiles) or "all"
            table.add_row(point.rule_name, point.kind, point.machine, profiles, escape(where))
        out.print(table)
    counts = found.counts()
    summary = ", ".join(
        f"{machine}: " + " ".join(f"{n} {kind}" for kind, n in sorted(kinds.items()))
        for machine, kinds in counts.items()
    )
    out.print(f"{len(found.ops)} driver operations, {len(found.crash_points)} crash points ({summary})")


@main.command()
@click.option(
    "--profile", "profiles", multiple=True, help="Profile to explore (repeat for several).  [default: cloudstack]"
)
@click.option(
    "--scenario", "scenarios", multiple=True, help="Scenario or instance name, shell patterns allowed (repeat)."
)
@click.option("--faults", "kinds", help="Fault kinds, comma-separated; none: schedules only.  [default: every kind]")
@click.option(
    "--preemptions",
    default=2,
    show_default=True,
    help="Schedules of contending scenarios with at most this many preemptions (0: none).",
)
@click.option("--workers", default=1, show_default=True, help="Local processes to run on.")
@click.option(
    "--dask",
    metavar="ADDRESS",
    help="Run on the Dask cluster whose scheduler is at ADDRESS (tcp://host:8786); needs snapshotfsm[dask].",
)
@click.option("--seed", default=0, show_default=True, help="Seed of the engines and of a budget's sample.")
@click.option("--budget", type=int, help="At most this many faulted runs (a seeded sample).")
@click.option("--full", is_flag=True, help="Every instance of the scenarios, not the pairwise set.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path), help="Write the report here.")
@click.option("--list-faults", is_flag=True, help="Only list the fault points and the faults each would get.")
@click.option("--replay", "case", help="Replay one case as a report prints it; show its log and sequence diagram.")
@click.option("--mermaid", type=click.Path(dir_okay=False, path_type=Path), help="With --replay: write the diagram.")
@click.option("--scenarios-dir", type=click.Path(path_type=Path), help="Scenario files [default: scenarios/].")
def explore(
    profiles: tuple[str, ...],
    scenarios: tuple[str, ...],
    kinds: str | None,
    preemptions: int,
    workers: int,
    dask: str | None,
    seed: int,
    budget: int | None,
    full: bool,
    json_path: Path | None,
    list_faults: bool,
    case: str | None,
    mermaid: Path | None,
    scenarios_dir: Path | None,
) -> None:
    """Try every fault at every point of the scenarios, judge each run by the invariants, shrink what breaks.

    Each scenario instance runs clean once to find its fault points (driver calls, crash points, restart phases,
    background ticks); each fault kind a point accepts is then injected in a run of its own, which is quiesced and
    judged. On contending scenarios, schedules are explored too: at the interleaving points (every read and write
    of the store), another ready task runs first, with at most --preemptions preemptions per run. Violations are
    grouped by invariant, fault point and kind; the shortest run of each group is shrunk to
    the fewest program steps that still show it, and printed as a command that replays it. The same seed gives
    the same report whatever --workers, or on a Dask cluster (--dask).

    Example: snapshotfsm explore --scenario take --workers 2 --json report.json
    """
    from snapshotfsm.explore import explorer, points  # noqa: PLC0415 - a heavy import, one command
    from snapshotfsm.explore import report as reports  # noqa: PLC0415

    out = _console()
    if case is not None:
        _replay(out, case, scenarios_dir, mermaid)
        return
    try:
        chosen = tuple(k.strip() for k in kinds.split(",") if k.strip()) if kinds is not None else points.KINDS
        chosen = () if chosen == ("none",) else chosen
        options = explorer.Options(
            profiles=profiles or ("cloudstack",),
            scenarios=scenarios,
            kinds=chosen,
            workers=workers,
            seed=seed,
            budget=budget,
            full=full,
            scenario_dir=_scenario_dir(scenarios_dir, dask=dask is not None),
            dask=dask,
            preemptions=preemptions,
        )
        options.check()
        if list_faults:
            _list_faults(out, options)
            return
        if json_path is not None:
            _writable(json_path)
        with _progress(out) as tell:
            found = explorer.explore(options, progress=tell)
    except SnapshotFSMError as exc:
        raise click.ClickException(str(exc)) from exc
    document = reports.report(found)
    if json_path is not None:
        try:
            json_path.write_text(reports.dumps(document), encoding="utf-8")
        except OSError as exc:
            raise click.ClickException(f"cannot write the report to {json_path}: {exc.strerror or exc}") from exc
    _explore_summary(out, document)
    if json_path is not None:
        out.print(f"report: {json_path.resolve()}")


def _scenario_dir(path: Path | None, *, dask: bool) -> str | None:
    """The path as given; absolute for a Dask cluster, whose workers do not share this shell's directory."""
    if path is None:
        return None
    return str(path.resolve() if dask else path)


def _writable(path: Path) -> None:
    """Refuse an output path that cannot be written before the work is spent (a directory, or below no directory)."""
    parent = path.resolve().parent
    if path.is_dir():
        raise click.ClickException(f"cannot write {path}: it is a directory")
    if not parent.is_dir() or not os.access(parent, os.W_OK):
        raise click.ClickException(f"cannot write {path}: {parent} is not a writable directory")


@contextlib.contextmanager
def _progress(out: Console) -> Iterator[Callable[[str, int, int], None]]:
    """A progress bar per phase (discover, explore, shrink), on the terminal only."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn  # noqa: PLC0415

    bar = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=out,
        transient=True,
        disable=not out.is_terminal,
    )
    tasks: dict[str, TaskID] = {}

    def tell(phase: str, done: int, total: int) -> None:
        if phase not in tasks:
            tasks[phase] = bar.add_task(phase, total=total)
        bar.update(tasks[phase], completed=done)

    with bar:
        yield tell


def _list_faults(out: Console, options: Any) -> None:
    from snapshotfsm.explore import explorer, points  # noqa: PLC0415

    instances = explorer.instances_for(options)
    table = Table(title="fault points of each instance's clean run, and the faults tried at them")
    table.add_column("instance", overflow="fold")
    table.add_column("profile")
    table.add_column("points", justify="right")
    for kind in options.kinds:
        table.add_column(kind.replace("_", " "), justify="right")
    totals = dict.fromkeys(options.kinds, 0)
    for profile in options.profiles:
        for instance in instances:
            found = explorer.discover(
                explorer.Discovery(instance.name, profile, options.seed, options.scenario_dir, options.full)
            )
            faults = points.faults_at(found.points, options.kinds, servers=instance.servers)
            counts = {k: sum(f.kind.partition(":")[0] == k for f in faults) for k in options.kinds}
            for kind, n in counts.items():
                totals[kind] += n
            table.add_row(instance.name, profile, str(len(found.points)), *(str(counts[k]) for k in options.kinds))
    out.print(table)
    out.print(f"{sum(totals.values())} faults at the points of {len(instances)} instances")


def _replay(out: Console, case: str, scenarios_dir: Path | None, mermaid: Path | None) -> None:
    from snapshotfsm.explore import explorer, runs  # noqa: PLC0415

    try:
        options = explorer.Options(scenario_dir=str(scenarios_dir) if scenarios_dir is not None else None)
        every = explorer.instances_for(attrs.evolve(options, full=True))
        ran = runs.replay(case, instances=every)
    except SnapshotFSMError as exc:
        raise click.ClickException(str(exc)) from exc
    try:
        _show_replay(out, ran, case, mermaid)
    finally:
        ran.world.engine.close()


def _show_replay(out: Console, ran: Any, case: str, mermaid: Path | None) -> None:
    from snapshotfsm.explore import render  # noqa: PLC0415

    store = ran.world.engine.store
    out.print(f"[bold]{escape(case)}[/bold]")
    for n, outcome in enumerate(ran.world.outcomes, 1):
        out.print(f"  step {n}: {escape(outcome)}")
    out.print("[bold]transition log[/bold]")
    for line in render.log_lines(store):
        out.print(escape(line), overflow="fold", soft_wrap=False)
    diagram = render.sequence_diagram(store, ran.world.record.timeline, title=case)
    if mermaid is not None:
        _writable(mermaid)
        try:
            mermaid.write_text(diagram + "\n", encoding="utf-8")
        except OSError as exc:
            raise click.ClickException(f"cannot write the diagram to {mermaid}: {exc.strerror or exc}") from exc
        out.print(f"sequence diagram: {mermaid.resolve()}")
    else:
        out.print("[bold]sequence diagram (Mermaid)[/bold]")
        out.print(escape(diagram), soft_wrap=True, crop=False)
    violations = ran.outcome.violations
    out.print(f"[bold]{len(violations)} violations[/bold]" if violations else "[bold]no violation[/bold]")
    for violation in violations:
        out.print(f"  {escape(str(violation))}", overflow="fold", soft_wrap=False)
        for line in render.rows_text(render.offending_rows(store, violation)):
            out.print(f"    {escape(line)}", overflow="fold", soft_wrap=False)


_MATRIX_CAPTION = "group: an invariant at one fault point; runs: the runs that broke it"


def _shortest(say: Any, out: Console, document: dict[str, Any], invariant: str, profile: str, *, named: bool) -> None:
    """The shortest counterexample of ``invariant`` under ``profile``, as a command that replays it."""
    found = [
        f
        for f in document["findings"]
        if f["invariant"] == invariant and f["profile"] == profile and f.get("minimal", {}).get("length", -1) >= 0
    ]
    if not found:
        return
    best = min(found, key=lambda f: (f["minimal"]["length"], f["minimal"]["steps"], f["point"]))
    kind = best["minimal"]["kind"]
    where = "no fault" if kind == "none" else f"{kind} at {best['point']}"
    under = f" under {escape(profile)}" if named else ""
    say(
        f"[bold]{escape(invariant)}[/bold]{under} ({len(found)} groups); shortest: {escape(where)}, "
        f"{best['minimal']['length']} transitions in {best['minimal']['steps']} steps"
    )
    for violation in best.get("violations", [])[:2]:
        say(f"  {escape(violation['subject'])}: {escape(violation['detail'])}")
    out.print(f"  {escape(best['minimal']['replay'])}", soft_wrap=True, crop=False)


def _explore_summary(out: Console, document: dict[str, Any]) -> None:
    """The report in a terminal: invariant by profile, the shortest counterexample of each, coverage, numbers."""

    def say(text: str) -> None:
        out.print(text, overflow="fold", soft_wrap=False)

    profiles = document["options"]["profiles"]
    head = ", ".join(f"{p}: {r['clean']} clean + {r['faulted']} faulted runs" for p, r in document["runs"].items())
    say(f"[bold]{len(document['instances'])} instances[/bold] · {escape(head)}")
    table = Table(title="groups / runs breaking each invariant", caption=_MATRIX_CAPTION)
    table.add_column("invariant", overflow="fold")
    for profile in profiles:
        table.add_column(f"{profile}\ngroups / runs", justify="right")
    groups = document.get("groups", {})
    for invariant, row in document["matrix"].items():
        cells = (f"{groups.get(invariant, {}).get(p, 0)} / {row.get(p, 0)}" for p in profiles)
        table.add_row(invariant, *cells)
    sums = document.get("totals", {})
    total = (f"{sums.get(p, {}).get('groups', 0)} / {sums.get(p, {}).get('runs', 0)}" for p in profiles)
    table.add_row("[bold]all[/bold]", *total)
    out.print(table)
    for invariant in document["matrix"]:
        for profile in profiles:
            _shortest(say, out, document, invariant, profile, named=len(profiles) > 1)
    for profile, cov in document["coverage"].items():
        flow = cov["workflow"]
        say(
            f"coverage ({escape(profile)}): {flow['exercised']}/{flow['transitions']} workflow transitions "
            f"({100 * flow['share']:.1f} %; {100 * flow['reachable_share']:.1f} % of the "
            f"{flow['transitions'] - flow['unreachable']} a run can reach), {flow['unexplained']} missing unexplained"
        )
    stats = document["stats"]
    say(
        f"{stats['seconds']:.1f} s on {int(stats['workers'])} worker(s): {int(stats['executed'])} runs executed, "
        f"{int(stats['pruned'])} cut short by a known state, {int(stats['shrink_runs'])} to shrink; "
        f"{stats['runs_per_second']:.0f} runs/s"
    )
