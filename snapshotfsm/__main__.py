"""``python -m snapshotfsm``: the same as the ``snapshotfsm`` command."""

from snapshotfsm.cli import main

main()
