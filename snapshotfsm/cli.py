"""The ``snapshotfsm`` command: each verb parses its options, calls one library function and renders the result.

Only this module imports ``click`` and ``rich``, and only this module turns project errors into "Error: ..." with
exit code 1.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from snapshotfsm.definitions import load_directory, unresolved_calls
from snapshotfsm.errors import SnapshotFSMError
from snapshotfsm.store.store import Store

console = Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 160)


@click.group()
@click.version_option(package_name="snapshotfsm")
def main() -> None:
    """An explicit state-machine model of CloudStack's volume-snapshot orchestration."""


@main.command()
@click.argument("path", required=False, type=click.Path(path_type=Path))
def check(path: Path | None) -> None:
    """Validate every definition in PATH (default: the project's states/) and report findings.

    Every workflow step named in a `calls` must be a registered step. Prints, per machine, its counts of states,
    events and transitions (one per source and event; "rows" says how many [[transitions]] rows write them), then
    static findings as warnings: unreachable states, states with no exit that are not tagged terminal, declared
    events with no transition. Exit code 0 with only warnings, 1 on an error.

    Example: snapshotfsm check states/
    """
    try:
        definitions = load_directory(path)
    except SnapshotFSMError as exc:
        raise click.ClickException(str(exc)) from exc
    if any(t.calls for d in definitions.values() for t in d.transitions):
        known = _known_steps()
        unresolved = [error for d in definitions.values() for error in unresolved_calls(d, known)]
        if unresolved:
            # One "Error: ..." line per unknown step, the way a load error is shown.
            raise click.ClickException("\nError: ".join(str(error) for error in unresolved))
    table = Table(title=f"definitions in {definitions.directory}")
    for column in ("machine", "kind", "states", "events", "transitions", "rows", "findings"):
        table.add_column(column, justify="left" if column in ("machine", "kind") else "right")
    findings = []
    for name, d in definitions.items():
        found = d.findings()
        findings.extend(found)
        counts = (len(d.states), len(d.events), len(d.transitions), d.row_count, len(found))
        table.add_row(name, d.kind, *(str(n) for n in counts))
    console.print(table)
    for f in findings:
        console.print(f"warning: {f.machine}: {f.message}")
    console.print(f"{len(definitions)} machines valid, {len(findings)} warnings")


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
@click.option("--snapshot", "snapshot_id", type=int, help="Only this snapshot's transitions.")
@click.option("--volume", "volume_id", type=int, help="Only this volume's transitions.")
@click.option("--job", "job_id", type=int, help="Only the transitions written for this job.")
@click.option("--machine", help="Only this machine's transitions (with --entity).")
@click.option("--entity", "entity_id", type=int, help="The entity id for --machine.")
def history(
    db_path: Path,
    snapshot_id: int | None,
    volume_id: int | None,
    job_id: int | None,
    machine: str | None,
    entity_id: int | None,
) -> None:
    """Print the transition log of a snapshot, a volume, a job, or the whole run, in order.

    Each row: sequence number, simulated time, management server, job, machine and entity, the move, and how it
    was made (event; create/remove/delete of the row; direct: a CloudStack write that bypasses its machine).

    Example: snapshotfsm history --db snapshotfsm-demo.db --snapshot 2
    """
    if not db_path.exists():
        raise click.ClickException(f"{db_path}: no such database file")
    chosen = [o for o in (snapshot_id, volume_id, job_id, machine) if o is not None]
    if len(chosen) > 1:
        raise click.ClickException("give at most one of --snapshot, --volume, --job, --machine")
    try:
        store = Store.open(db_path)
    except SnapshotFSMError as exc:
        raise click.ClickException(str(exc)) from exc
    try:
        if snapshot_id is not None:
            rows = store.history(machine="snapshot", entity_id=snapshot_id)
        elif volume_id is not None:
            rows = store.history(machine="volume", entity_id=volume_id)
        else:
            rows = store.history(job_id=job_id, machine=machine, entity_id=entity_id)
    finally:
        store.close()
    table = Table(title=f"transition log of {db_path}" + (f" ({len(rows)} rows)" if rows else ""))
    for column in ("seq", "time", "ms", "job", "machine", "id", "from", "event", "to", "kind"):
        table.add_column(column, justify="right" if column in ("seq", "ms", "job", "id") else "left")
    for r in rows:
        event = r.event if r.overwrote is None else f"{r.event} (overwrote {r.overwrote})"
        table.add_row(
            str(r.seq),
            _clock(r.at_ms),
            str(r.ms_id),
            str(r.job_id or ""),
            r.machine,
            str(r.entity_id),
            r.source or "-",
            event,
            r.dest or "-",
            r.kind,
        )
    console.print(table)
    if not rows:
        console.print("no transitions match")


@main.command()
@click.option("--db", "db_path", default="snapshotfsm-demo.db", show_default=True, help="Database file (recreated).")
@click.option("--seed", default=0, show_default=True, help="Seed for the uuids; the same seed gives the same database.")
def demo(db_path: str, seed: int) -> None:
    """Build a small cloud and take snapshots on every pool type, attached and detached, with faults.

    It shows an injected backup failure, a refusal, a management-server crash with restart cleanup, an async
    backup, a zone copy and a policy whose retention deletes an old snapshot; then prints where to look next.

    Example: snapshotfsm demo --db /tmp/demo.db
    """
    from snapshotfsm.demo import run_demo  # noqa: PLC0415 - the demo builds a whole cloud; load it only here

    try:
        engine, outcomes = run_demo(db_path, seed=seed)
    except SnapshotFSMError as exc:
        raise click.ClickException(str(exc)) from exc
    table = Table(title=f"snapshotfsm demo on {db_path}")
    for column in ("scenario", "pool", "snapshot", "state", "job", "strategy"):
        table.add_column(column, no_wrap=True)
    table.add_column("what happened", overflow="fold")
    for o in outcomes:
        table.add_row(o.scenario, o.pool, str(o.snapshot_id or "-"), o.snapshot_state, o.job, o.strategy, o.note)
    console.print(table)
    total = len(engine.history())
    engine.close()
    console.print(f"{total} transitions logged at simulated time {_clock(engine.clock.now_ms)}.")
    console.print(f"History of one snapshot:   snapshotfsm history --db {db_path} --snapshot 2")
    console.print(f"History of the whole run:  snapshotfsm history --db {db_path}")
    console.print("State diagrams:            diagrams/ (regenerate with: snapshotfsm diagrams)")


@main.command()
@click.option("--out", "out_dir", type=click.Path(path_type=Path), help="Directory to write into [default: diagrams/].")
@click.option(
    "--format", "formats", default="dot,mmd,svg", show_default=True, help="Comma-separated: dot, mmd, svg, png."
)
@click.option("--states", "states_dir", type=click.Path(path_type=Path), help="Definitions [default: states/].")
def diagrams(out_dir: Path | None, formats: str, states_dir: Path | None) -> None:
    """Write a state diagram of every machine: DOT and Mermaid always, SVG and PNG when graphviz's dot is installed.

    Error transitions are red and dashed, terminal states have a double border, transitional states are yellow and
    dashed, waiting states blue; each diagram carries a legend. Output is deterministic.

    Example: snapshotfsm diagrams --out /tmp/d --format dot,svg
    """
    from snapshotfsm import diagrams as drawing  # noqa: PLC0415 - graphviz is only needed here

    try:
        chosen = drawing.parse_formats(formats)
        definitions = load_directory(states_dir)
        target = out_dir if out_dir is not None else drawing.default_out_dir(definitions)
        written = drawing.write(definitions, target, chosen)
    except SnapshotFSMError as exc:
        raise click.ClickException(str(exc)) from exc
    console.print(f"wrote {len(written.files)} files for {len(definitions)} machines to {target}")
    if written.skipped:
        console.print(f"note: no {'/'.join(written.skipped).upper()} written: {drawing.INSTALL_HINT}")


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
    if only != "points":
        table = Table(title=escape("driver operations: a rule names one DRIVER.OP, POOL_TYPE.OP or OP[@N][:KIND]"))
        for column in ("driver", "providers", "pool types", "operation", "call", "fault kinds"):
            table.add_column(column)
        for op in found.ops:
            providers = ", ".join(op.providers) or "-"
            pool_types = ", ".join(op.pool_types) or "-"
            table.add_row(op.driver, providers, pool_types, op.op, op.call, ", ".join(op.kinds))
        console.print(table)
    if only != "ops":
        table = Table(title="crash points (FaultPlan.crash(POINT))")
        for column in ("point", "kind", "machine", "where"):
            table.add_column(column)
        for point in found.crash_points:
            where = "; ".join(point.transitions) or (
                "before this phase of the restart" if point.kind == "restart" else "before each tick of this task"
            )
            table.add_row(point.rule_name, point.kind, point.machine, where)
        console.print(table)
    counts = found.counts()
    summary = ", ".join(
        f"{machine}: " + " ".join(f"{n} {kind}" for kind, n in sorted(kinds.items()))
        for machine, kinds in counts.items()
    )
    console.print(f"{len(found.ops)} driver operations, {len(found.crash_points)} crash points ({summary})")
