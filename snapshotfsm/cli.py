"""The ``snapshotfsm`` command: each verb parses its options, calls one library function and renders the result.

Only this module imports ``click`` and ``rich``, and only this module turns project errors into "Error: ..." with
exit code 1.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from snapshotfsm.definitions import load_directory
from snapshotfsm.errors import SnapshotFSMError

console = Console(highlight=False, soft_wrap=True)


@click.group()
@click.version_option(package_name="snapshotfsm")
def main() -> None:
    """An explicit state-machine model of CloudStack's volume-snapshot orchestration."""


@main.command()
@click.argument("path", required=False, type=click.Path(path_type=Path))
def check(path: Path | None) -> None:
    """Validate every definition in PATH (default: the project's states/) and report findings.

    Prints, per machine, its counts of states, events and transitions, then static findings as warnings:
    unreachable states, states with no exit that are not tagged terminal, declared events with no transition.
    Exit code 0 with only warnings, 1 on an error.

    Example: snapshotfsm check states/
    """
    try:
        definitions = load_directory(path)
    except SnapshotFSMError as exc:
        raise click.ClickException(str(exc)) from exc
    table = Table(title=f"definitions in {definitions.directory}")
    for column in ("machine", "kind", "states", "events", "transitions", "findings"):
        table.add_column(column, justify="left" if column in ("machine", "kind") else "right")
    findings = []
    for name, d in definitions.items():
        found = d.findings()
        findings.extend(found)
        table.add_row(name, d.kind, str(len(d.states)), str(len(d.events)), str(len(d.transitions)), str(len(found)))
    console.print(table)
    for f in findings:
        console.print(f"warning: {f.machine}: {f.message}")
    console.print(f"{len(definitions)} machines valid, {len(findings)} warnings")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
