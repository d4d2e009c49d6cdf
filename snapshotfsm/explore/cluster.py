"""The explorer's jobs on a Dask cluster (``explore --dask ADDRESS``), through ``distributed``'s own executor.

The explorer maps plain functions over picklable jobs (:func:`~snapshotfsm.explore.explorer.discover`,
``run_batch``, ``shrink``) and keeps the results in the jobs' order, so a cluster only has to be a
``concurrent.futures.Executor``: :class:`DaskPool` is ``Client.get_executor()`` that also closes its client. Nothing
here schedules, retries or moves data: Dask does (a job lost with its worker runs again elsewhere, with the same
result, since every run is deterministic from its job).

A job carries names, not scenarios: an instance's name, a profile, a seed, the scenario directory's path. Each worker
loads the scenarios from that path (the project's ``scenarios/`` when none is given) with its own installed
snapshotfsm, so the report is the local one only if every worker has the same code, definitions, plugins and
scenario files. :func:`connect` checks that on every worker before a job is sent, and refuses the cluster otherwise.

``distributed`` is an optional extra (``snapshotfsm[dask]``): it is imported when a cluster is asked for, never at
import time.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import importlib.metadata
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, ParamSpec, TypeVar, cast

from snapshotfsm.definitions import default_states_dir
from snapshotfsm.errors import ClusterError, MissingExtra
from snapshotfsm.explore.scenarios import default_scenarios_dir, instances_named

if TYPE_CHECKING:
    from distributed import Client

P = ParamSpec("P")
T = TypeVar("T")
CONNECT_TIMEOUT = 5.0
"""Seconds to reach the scheduler, and then to see a first worker: a cluster on a network answers in milliseconds,
and a mistyped address should fail while the user still waits for it."""
PLUGIN_GROUPS = ("snapshotfsm.drivers", "snapshotfsm.strategies")


class DaskPool(concurrent.futures.Executor):
    """A Dask client's executor that closes the client when it shuts down, and knows how many threads it has.

    Jobs are submitted impure (``pure=False``): two equal jobs are two runs, as in a process pool, and no job is
    hashed to name its key.
    """

    def __init__(self, client: Client, workers: int) -> None:
        self._client = client
        self._executor: concurrent.futures.Executor = client.get_executor(pure=False)  # type: ignore[no-untyped-call]
        self.workers = workers
        """The cluster's threads (over all its workers) when the exploration connected: what ``stats`` reports."""

    def submit(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> concurrent.futures.Future[T]:
        """``fn(*args, **kwargs)`` on a worker; its future is a ``concurrent.futures`` one, as a local pool's."""
        return self._executor.submit(fn, *args, **kwargs)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Wait for (or cancel) what was submitted, then disconnect: the cluster itself stays up for the next user."""
        try:
            self._executor.shutdown(wait=wait and not cancel_futures)
        finally:
            self._client.close()  # type: ignore[no-untyped-call]


def connect(address: str, scenario_dir: str | None, full: bool) -> DaskPool:
    """The cluster whose scheduler is at ``address``, once it has a worker and every worker explores as this machine.

    Raises:
        MissingExtra: ``distributed`` is not installed.
        ClusterError: the address is malformed or unreachable within :data:`CONNECT_TIMEOUT`, no worker joins within
            it, or a worker cannot load the scenarios or has other code, definitions, plugins or scenario files.
    """
    try:
        from distributed import Client  # noqa: PLC0415 - an optional extra
        from distributed.comm.addressing import get_address_host_port, parse_address  # noqa: PLC0415
    except ImportError as exc:
        raise MissingExtra("--dask", "distributed", "dask") from exc
    try:
        # Checked before a Client exists: one that fails on its address lingers, and delays the exit by seconds.
        if parse_address(address)[0] != "inproc":  # a scheduler in this process (a LocalCluster without processes)
            get_address_host_port(address)
    except ValueError as exc:  # distributed's own word on it: no port, an unknown scheme, ...
        raise ClusterError(address, f"not a scheduler address ({exc}); e.g. tcp://host:8786") from None
    try:
        client = Client(address, timeout=CONNECT_TIMEOUT, set_as_default=False)  # type: ignore[no-untyped-call]
    except OSError:
        raise ClusterError(
            address, f"no scheduler answered within {CONNECT_TIMEOUT:g} s (is `dask scheduler` running there?)"
        ) from None
    try:
        try:
            client.wait_for_workers(1, timeout=CONNECT_TIMEOUT)
        except TimeoutError:
            raise ClusterError(
                address, f"no worker joined within {CONNECT_TIMEOUT:g} s (start some: dask worker {address})"
            ) from None
        _check_workers(client, address, scenario_dir, full)
        threads = cast("dict[str, int]", client.nthreads())  # type: ignore[no-untyped-call]
        return DaskPool(client, sum(threads.values()))
    except BaseException:
        client.close()  # type: ignore[no-untyped-call]
        raise


def _check_workers(client: Client, address: str, scenario_dir: str | None, full: bool) -> None:
    """Refuse a cluster whose workers would not give this machine's report, naming a worker and what differs."""
    here = _view(scenario_dir, full)
    seen = cast("dict[str, object]", client.run(_view, scenario_dir, full, on_error="return"))
    for worker, there in sorted(seen.items()):
        if isinstance(there, BaseException):
            # A job that cannot even be unpickled there (snapshotfsm missing or older) comes back as a bare Exception.
            why = str(there) if type(there) is Exception else f"{type(there).__name__}: {there}"
            raise ClusterError(
                address,
                f"worker {worker} cannot explore: {why} (install snapshotfsm there, and give --scenarios-dir a "
                "directory every worker reads)",
            )
        assert isinstance(there, dict)
        differs = [part for part in here if there.get(part) != here[part]]
        if differs:
            raise ClusterError(
                address,
                f"worker {worker} has other {', '.join(differs)} than this machine: install the same snapshotfsm and "
                "plugins on every worker, give --scenarios-dir a directory with the same files everywhere, and "
                "restart the workers after a change",
            )


def _view(scenario_dir: str | None, full: bool) -> dict[str, str]:
    """What decides a run's outcome besides its job, as digests: the code, definitions, plugins and scenarios.

    Run on each worker (and here) before an exploration. It drops the worker's cached scenarios first: a worker
    lives across explorations, and files edited since the last one would otherwise be explored as they were.
    Layouts do not matter (a source checkout and a wheel give the same digests); only contents do.

    Raises:
        ScenarioError: the scenarios do not load.
        FileNotFoundError: there is no scenario directory.
    """
    instances_named.cache_clear()
    instances_named(scenario_dir, full)
    package = Path(__file__).resolve().parent.parent
    scenarios = Path(scenario_dir) if scenario_dir is not None else default_scenarios_dir()
    plugins = sorted(
        f"{group}:{point.name}={point.value}"
        for group in PLUGIN_GROUPS
        for point in importlib.metadata.entry_points(group=group)
    )
    return {
        "code": _digest(package, package.rglob("*.py")),
        "definitions": _digest(default_states_dir(), default_states_dir().glob("*.toml")),
        "plugins": hashlib.sha256("\n".join(plugins).encode()).hexdigest(),
        "scenarios": _digest(scenarios, scenarios.glob("*.toml")),
    }


def _digest(root: Path, files: Iterable[Path]) -> str:
    """Names (relative to ``root``) and contents of ``files``, hashed in name order."""
    out = hashlib.sha256()
    for path in sorted(files):
        out.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return out.hexdigest()
