"""The facade users hold (DESIGN.md layer 7): open a database, build a cloud, call the API, run the clock.

The engine holds no SQL and no tables; it wires one management server's services together and delegates to the
store (records, durable transitions), the inventory builder and the workflow runner. Everything runs on a simulated
clock, single-threaded and deterministic: the same inputs and seed give the same database.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import TypeVar

import attrs

from snapshotfsm.clock import SimClock
from snapshotfsm.config import Config
from snapshotfsm.definitions import Definitions, project_definitions
from snapshotfsm.drivers.base import DriverEnv
from snapshotfsm.drivers.primary import PrimaryDriver
from snapshotfsm.drivers.registry import Drivers, DriverSet, installed_drivers
from snapshotfsm.errors import InvalidValue, MsCrash, NotFound, ServerDown
from snapshotfsm.faults import FaultPlan, engine_catalogue
from snapshotfsm.orchestration import (
    accounting,
    api,
    copy_api,
    delete,
    gc,
    policies,
    recount,
    restart,
    storpool_recovery,
)
from snapshotfsm.orchestration.api_errors import check_length
from snapshotfsm.orchestration.contexts import CONTEXTS, SnapshotRequest
from snapshotfsm.orchestration.inventory import Inventory
from snapshotfsm.orchestration.quiesce import QuiesceReport, quiesce_world
from snapshotfsm.orchestration.runner import Runner
from snapshotfsm.orchestration.runtime import Runtime
from snapshotfsm.orchestration.workflows import engine_machines
from snapshotfsm.profiles import Profile, get_profile
from snapshotfsm.record import RunRecord
from snapshotfsm.scheduler import Scheduler
from snapshotfsm.store import story as stories
from snapshotfsm.store.records import (
    SYSTEM_ACCOUNT_ID,
    Account,
    AsyncJob,
    R,
    Snapshot,
    SnapshotPolicy,
    TransitionLog,
    Volume,
)
from snapshotfsm.store.store import Store
from snapshotfsm.store.story import Cause, StoryRow
from snapshotfsm.strategies.base import Operation, Priority, SnapshotStrategy, StrategyEnv
from snapshotfsm.strategies.factory import StrategyFactory, installed_strategies


class Engine(Inventory):
    """One management server's view of a snapshotfsm database.

    Example:
        >>> from snapshotfsm import Engine
        >>> engine = Engine.open(":memory:")
        >>> zone = engine.add_zone("zone1")
        >>> engine.add_image_store(zone, "nfs-secondary") and None
        >>> cluster = engine.add_cluster(zone, "c1", hypervisor="XenServer")
        >>> host = engine.add_host(cluster, "h1")
        >>> pool = engine.add_pool(zone, "nfs-primary", cluster=cluster)
        >>> alice = engine.add_account("alice")
        >>> vm = engine.add_vm(alice, zone, "web", hypervisor="XenServer", host=host)
        >>> volume = engine.add_volume(alice, pool, "data", size=10 << 30, vm=vm, format="VHD")
        >>> job = engine.create_snapshot(volume.id)
        >>> engine.run() > 0
        True
        >>> engine.job_status(job.id), engine.snapshot_of(job).status
        ('SUCCEEDED', 'BackedUp')
    """

    def __init__(
        self,
        store: Store,
        *,
        faults: FaultPlan | None = None,
        seed: int = 0,
        scheduler: Scheduler | None = None,
        strategies: Iterable[SnapshotStrategy | type[SnapshotStrategy]] | None = None,
        drivers: Iterable[type[PrimaryDriver]] | None = None,
        record: RunRecord | None = None,
    ) -> None:
        installed, factory, self.faults = _plugins(store.definitions, strategies, drivers, faults)
        self.record = record or RunRecord()
        self.store = store
        # The store checks every move against the machines the runner fires: the same objects, built once.
        store.machines = engine_machines(store.definitions)
        self.clock = store.clock
        self.ms_id = store.ms_id
        self.scheduler = scheduler or Scheduler(self.clock)
        self.config = Config(store)
        self.rt: Runtime
        env = DriverEnv(
            store=store,
            scheduler=self.scheduler,
            faults=self.faults,
            ms_id=self.ms_id,
            incarnation=lambda: self.rt.incarnation,
            record=self.record,
            future_wait_ms=self._future_wait_ms,
        )
        self.rt = Runtime(
            store=store,
            clock=self.clock,
            scheduler=self.scheduler,
            config=self.config,
            drivers=(served := Drivers(env, installed)),
            factory=factory,
            strategy_env=StrategyEnv(store=store, drivers=served, config=self.config, ms_id=self.ms_id),
            faults=self.faults,
            profile=store.profile,
            ms_id=self.ms_id,
            rng=random.Random(seed * 1_000_003 + self.ms_id),  # noqa: S311 - ids, not secrets
            record=self.record,
        )
        self.rt.strategy_env.give_back_primary = self._give_back_primary
        self.runner = Runner(self.rt, store.machines, CONTEXTS)
        self.ensure_system_account()
        policies.configure(self.rt)
        restart.mark_server(self.rt, self.ms_id, "Up")
        self.scheduler.members[self.ms_id] = self
        self.crashes: list[str] = []

    @classmethod
    def open(
        cls,
        path: str | Path = ":memory:",
        *,
        ms_id: int = 1,
        profile: str | Profile = "cloudstack",
        clock: SimClock | None = None,
        definitions: Definitions | None = None,
        faults: FaultPlan | None = None,
        seed: int = 0,
        strategies: Iterable[SnapshotStrategy | type[SnapshotStrategy]] | None = None,
        drivers: Iterable[type[PrimaryDriver]] | None = None,
    ) -> Engine:
        """Open or create the database at ``path`` as management server ``ms_id``.

        ``strategies`` and ``drivers`` replace the installed ones (the ``snapshotfsm.strategies`` and
        ``snapshotfsm.drivers`` entry points) for this engine: strategies in the factory's order, driver classes
        by provider. ``faults`` is checked against what these drivers and ``definitions`` offer.

        Raises:
            StoreError: not a snapshotfsm database, or another schema version; the file is left as it was.
            InvalidValue: an unknown profile name, a strategy or driver that is not one, two drivers of one
                provider, or a fault rule no driver or definition offers. Nothing is opened or written.
        """
        definitions = (definitions or project_definitions()).for_profile(get_profile(profile).name)
        strategies = list(strategies) if strategies is not None else None
        drivers = list(drivers) if drivers is not None else None
        _plugins(definitions, strategies, drivers, faults)
        machines = engine_machines(definitions)
        store = Store.open(path, ms_id=ms_id, profile=profile, clock=clock, definitions=definitions, machines=machines)
        return cls(store, faults=faults, seed=seed, strategies=strategies, drivers=drivers)

    def close(self) -> None:
        """Close the database."""
        self.store.close()

    # --- records and history -----------------------------------------------------------------------------------

    def add(self, record: R) -> R:
        """Insert a record as it is and return it with its id (the inventory helpers below fill in more)."""
        return self.store.insert(record)

    def get(self, cls: type[R], entity_id: int) -> R:
        """Load one record by id.

        Raises:
            NotFound: no such row.
        """
        return self.store.get(cls, entity_id)

    def transit(self, entity: R, event: str, *, job_id: int | None = None) -> R:
        """Move an entity by one event of its machine, durably; returns the record as written.

        Raises:
            IllegalTransition: the event is not allowed in the entity's state.
            ConcurrencyError: another server moved the row first.
        """
        return self.store.transit(entity, event, job_id=job_id)

    def history(
        self,
        *,
        snapshot: int | None = None,
        volume: int | None = None,
        job: int | None = None,
        machine: str | None = None,
        entity_id: int | None = None,
    ) -> list[TransitionLog]:
        """The transition log of a snapshot, a volume, a job, any one entity, or (no argument) the whole run."""
        if snapshot is not None:
            machine, entity_id = "snapshot", snapshot
        elif volume is not None:
            machine, entity_id = "volume", volume
        return self.store.history(machine=machine, entity_id=entity_id, job_id=job)

    def failures(
        self, *, snapshot: int | None = None, job: int | None = None, workflow: int | None = None
    ) -> list[Cause]:
        """Why steps failed: of a snapshot's workflows and jobs, of one job, of one workflow, or of the whole run.

        Each :class:`~snapshotfsm.store.story.Cause` holds the ``failure`` row (CloudStack's exception class, its
        message, the step and the error transition it led to), the ``seq`` of that transition in :meth:`history`,
        and the API error code when its job answered with it. A job that FAILED with 530 says little (spec §5.2
        wraps most causes); this is where the real cause is.

        Example:
            >>> [str(c) for c in engine.failures(snapshot=5)]  # doctest: +SKIP
            ['CloudRuntimeException: backup copy failed (API error 530); step backup.answered']
        """
        return stories.failures(self.store, snapshot=snapshot, job=job, workflow=workflow)

    def story(self, snapshot: int) -> list[StoryRow]:
        """A snapshot's whole history in time order: its moves, its store refs', its jobs' and its usage events.

        Raises:
            NotFound: no snapshot with that id.
        """
        return stories.snapshot_story(self.store, snapshot)

    # --- inventory: add_zone, add_account, add_pool, add_vm, add_volume, ... (see Inventory) ---------------------

    def set_config(self, name: str, value: object, *, scope: str = "Global", scope_id: int = 0) -> None:
        """Set a config key of spec §7.1 at a scope (Global, or the key's own: Zone, Cluster, StoragePool).

        Keys CloudStack reads only when a management server starts (``dynamic = False`` in
        ``snapshotfsm.config.KEYS``, e.g. ``snapshot.backup.to.secondary``, ``backup.retry``) take effect at this
        server's next :meth:`restart`, or in an engine opened afterwards, as in CloudStack.

        Raises:
            InvalidValue: an unknown key, a scope the key does not have, or a value of the wrong type.
        """
        self.config.set(name, value, scope=scope, scope_id=scope_id)

    # --- the API ---------------------------------------------------------------------------------------------------

    def create_snapshot(
        self,
        volume_id: int,
        *,
        caller: int | Account | None = None,
        policy_id: int = 0,
        name: str | None = None,
        location_type: str | None = None,
        async_backup: bool = False,
        quiescevm: bool = False,
        zone_ids: Iterable[int] = (),
        storage_ids: Iterable[int] = (),
        use_storage_replication: bool = False,
        tags: Mapping[str, str] | None = None,
    ) -> AsyncJob:
        """``createSnapshot``: the create phase now, the rest as an async job on the simulated clock (spec §4.2).

        ``caller`` is the calling account (default: the volume's owner). Returns the async job; :meth:`run`
        advances the clock until it is done.

        Raises:
            ApiError: the create phase refused or failed (spec §5.1, §21.4.3): CloudStack's error code and text;
                a ``name`` over 255 characters is refused (431) before anything runs.
                What it committed stays: a refusal leaves ``allocSnapshot``'s ERROR event (and a recurring
                snapshot's limit alert), a failure after the insert the Allocated row and the increments done.
            InvalidValue: an argument of the wrong type.
            ServerDown: the server is down, or a crash rule fired during the call: the writes committed before the
                crash stay (the create phase has no transaction, spec §21.2).
        """
        request = _check_params(
            volume_id=volume_id,
            policy_id=policy_id,
            name=name,
            location_type=location_type,
            async_backup=async_backup,
            quiescevm=quiescevm,
            zone_ids=zone_ids,
            storage_ids=storage_ids,
            use_storage_replication=use_storage_replication,
            tags=tags,
        )
        caller_id = self._caller_id(caller, volume_id)
        with self._serving():
            return api.submit_create(self.runner, request, caller_id=caller_id, user_id=caller_id)

    def delete_snapshot(
        self, snapshot_id: int, *, zone_id: int | None = None, caller: int | Account | None = None
    ) -> AsyncJob:
        """``deleteSnapshot``: an async job running the delete path of spec §9.4 (default caller: the owner).

        Raises:
            ApiError: the caller may not operate on the snapshot (531, checked before any job is created).
            InvalidValue: an argument of the wrong type.
            ServerDown: the server is down, or a crash rule fired during the call (nothing of it is written).
        """
        for name, value in (("id", snapshot_id), ("zoneid", zone_id)):
            if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
                raise InvalidValue(f"deleteSnapshot {name}", value, "an integer id")
        caller_id = self._snapshot_caller_id(caller, snapshot_id)
        with self._serving():
            return delete.submit_api_job(self.runner, snapshot_id, zone_id, caller_id)

    def copy_snapshot(
        self,
        snapshot_id: int,
        *,
        dest_zone_ids: Iterable[int],
        source_zone_id: int | None = None,
        storage_ids: Iterable[int] = (),
        use_storage_replication: bool = False,
        caller: int | Account | None = None,
    ) -> AsyncJob:
        """``copySnapshot``: an async job copying a snapshot to other zones and pools (spec §7.4, §8).

        Every check runs in the job (default caller: the owner); :meth:`run` advances the clock until it is done.
        See :mod:`snapshotfsm.orchestration.copy_api`.

        Raises:
            InvalidValue: an argument of the wrong type.
            ServerDown: the server is down, or a crash rule fired during the call (nothing of it is written).
        """
        request = copy_api.check_params(
            snapshot_id, dest_zone_ids, source_zone_id, storage_ids, use_storage_replication
        )
        caller_id = self._snapshot_caller_id(caller, snapshot_id)
        with self._serving():
            return copy_api.submit_api_job(self.runner, request, caller_id=caller_id)

    def update_resource_count(
        self, account: int | Account, *, resource: str | None = None
    ) -> dict[str, tuple[int | None, int]]:
        """``updateResourceCount`` for one account: recount each type from the live objects and write it (spec §19.2).

        ``resource`` is one of ``snapshot``, ``primary_storage``, ``secondary_storage`` (default: all three). Returns
        the types written, each with its count before (None: the account had no row of it, one is inserted) and
        after. Each type is its own write, as upstream; the model counts snapshots only (see
        :mod:`snapshotfsm.orchestration.recount`: volumes and templates are never charged in the model).

        Raises:
            NotFound: no live account with that id.
            InvalidValue: ``account`` is neither an id nor an Account, or ``resource`` is not one of the three.
                Nothing is written.
            ServerDown: the server is down, or a crash rule fired between two writes (the earlier ones stay).
        """
        account_id = _account_arg("updateResourceCount", account)
        with self._serving():
            return recount.update_resource_count(self.rt, account_id, resource=resource)

    def recount(self, account: int | Account, *, resource: str | None = None) -> dict[str, int]:
        """What :meth:`update_resource_count` would write, per type, without writing it (spec §19.2).

        Raises:
            NotFound: no live account with that id.
            InvalidValue: ``account`` is neither an id nor an Account, or ``resource`` is not a counted type.
        """
        return recount.recount(self.store, _account_arg("recount", account), resource=resource)

    def _account_id(self, caller: int | Account) -> int:
        if isinstance(caller, Account):
            return caller.id
        if self.store.first(Account, "id = ?", (caller,)) is None:
            raise NotFound("account", caller)
        return caller

    def _snapshot_caller_id(self, caller: int | Account | None, snapshot_id: int) -> int:
        """The caller, by default the snapshot's owner (the system for an unknown snapshot, which the job refuses)."""
        if caller is None:
            found = self.store.first(Snapshot, "id = ?", (snapshot_id,))
            return found.account_id if found is not None else SYSTEM_ACCOUNT_ID
        return self._account_id(caller)

    def _caller_id(self, caller: int | Account | None, volume_id: int) -> int:
        if caller is None:
            volume = self.store.first(Volume, "id = ?", (volume_id,))
            if volume is None:
                raise NotFound("volumes", volume_id)
            return volume.account_id
        return self._account_id(caller)

    def create_snapshot_policy(
        self,
        volume_id: int,
        *,
        interval: str,
        schedule: str,
        max_snaps: int,
        timezone: str = "UTC",
        caller: int | Account | None = None,
        display: bool = True,
        zone_ids: Iterable[int] = (),
        storage_ids: Iterable[int] = (),
        use_storage_replication: bool = False,
    ) -> SnapshotPolicy:
        """``createSnapshotPolicy`` (spec §9.1): one policy per volume and interval; the schedule row is set.

        ``interval`` is HOURLY, DAILY, WEEKLY or MONTHLY; ``schedule`` is ``MM``, ``MM:HH``, ``MM:HH:D`` (D = 1
        Sunday .. 7 Saturday) or ``MM:HH:DD``.

        Raises:
            ApiError: a refusal with CloudStack's code; nothing is written.
            ServerDown: the server is down, or a crash rule fired during the call (nothing of it is written).
        """
        caller_id = self._caller_id(caller, volume_id)
        with self._serving():
            return policies.create_policy(
                self.rt,
                caller_id=caller_id,
                volume_id=volume_id,
                interval=interval,
                schedule=schedule,
                timezone=timezone,
                max_snaps=max_snaps,
                display=display,
                zone_ids=list(zone_ids),
                storage_ids=list(storage_ids),
                use_storage_replication=use_storage_replication,
            )

    def poll_snapshot_schedules(self) -> list[AsyncJob]:
        """One run of the snapshot scheduler's poll now (spec §9.2); returns the jobs it submitted."""
        with self._serving():
            return policies.poll(self.runner)

    def start_background_tasks(self) -> None:
        """Start what a management server runs in the background: the snapshot scheduler and the storage GC.

        The scheduler polls every ``snapshot.poll.interval`` s (§9.2), the GC every ``storage.cleanup.interval`` s
        (§10.5), StorPool's recovery check every ``storpool.snapshot.recovery.from.remote.check`` s (§8; 0: off).
        These periodic tasks run when :meth:`run` is given ``until_ms``.
        """
        with self._serving():
            policies.start_poller(self.runner)
            gc.start_collector(self.runner)
            storpool_recovery.start_check(self.rt)  # StorPoolAbandonObjectsCollector's recovery check (spec §8)

    def collect_garbage(self) -> None:
        """Run the storage GC's snapshot work once now (spec §10.5)."""
        with self._serving():
            gc.run_once(self.runner)

    def check_storpool_recovery(self) -> storpool_recovery.RecoveryReport:
        """Run StorPool's recovery check once now: unexport copied snapshots, clear their details (spec §8)."""
        with self._serving():
            return storpool_recovery.run_once(self.rt)

    def crash(self, ms_id: int | None = None) -> int:
        """Crash this management server: what it held only in memory is lost (spec §10); returns the tasks lost.

        Raises:
            InvalidValue: ``ms_id`` is another server's (crash that server's engine instead).
        """
        self._own(ms_id)
        return restart.crash(self.runner)

    def restart(self, ms_id: int | None = None) -> dict[str, int]:
        """Start this server again: the start-up cleanup of spec §10, in order; returns what each step touched.

        Raises:
            ServerDown: a crash rule fired during the cleanup (``restart.<phase>``, or a step's write): the server is
                down again, with what the cleanup committed before the crash.
        """
        self._own(ms_id)
        try:
            return restart.restart(self.runner)
        except MsCrash as crash:
            self._crashed(crash)
            raise ServerDown(crash.ms_id, crash.where) from None

    def quiesce(self) -> QuiesceReport:
        """Run the world until nothing more will happen, through a crash and restart of every server (spec §10).

        The world is this server and its peers (:meth:`peer`). The clock runs until nothing is pending; every server
        crashes and starts again (the start-up cleanup of §10); the clock runs to idle; every server starts its
        background tasks (§9.2 poll, §10.5 GC, §8 StorPool recovery check) and the clock runs one full cycle of
        them, bounded by simulated time since they reschedule themselves for ever; then to idle again, starting
        again any server a crash rule took down meanwhile. See :mod:`snapshotfsm.orchestration.quiesce`.

        Returns:
            What ran, and every run still waiting for an answer that will never come, with the calls never
            answered: a report whose ``settled`` is False when something waits for good.
        """
        servers = [m for _, m in sorted(self.scheduler.members.items()) if isinstance(m, Engine)]
        return quiesce_world(servers, self.run)

    def on_management_node_left(self, ms_id: int) -> dict[str, int]:
        """A peer left: clean up its left-over jobs as ``onManagementNodeLeft`` does (spec §10.1)."""
        if ms_id == self.ms_id:
            raise InvalidValue("ms_id", ms_id, "another management server's id (this is the live one)")
        return restart.node_left(self.rt, ms_id)

    def peer(self, ms_id: int, *, seed: int = 0) -> Engine:
        """A second management server on the same database, clock, scheduler and storage.

        Raises:
            InvalidValue: ``ms_id`` is this server's.
        """
        if ms_id == self.ms_id:
            raise InvalidValue("ms_id", ms_id, f"an id other than {self.ms_id}")
        store = Store(
            self.store.db,
            path=self.store.path,
            ms_id=ms_id,
            clock=self.clock,
            profile=self.store.profile,
            definitions=self.store.definitions,
            machines=self.store.machines,
        )
        return Engine(
            store,
            faults=self.faults,
            seed=seed,
            scheduler=self.scheduler,
            strategies=self.rt.factory.strategies,
            drivers=self.rt.drivers.installed.drivers,
            record=self.record,
        )

    @property
    def down(self) -> bool:
        """Whether this server crashed and has not been restarted."""
        return self.rt.down

    def _give_back_primary(self, account_id: int, amount: int) -> None:
        """``StrategyEnv.give_back_primary``: ``primary_storage`` decremented for the account's own object."""
        accounting.change_count(self.rt, account_id, accounting.PRIMARY_STORAGE, -amount, owner_id=account_id)

    def _future_wait_ms(self) -> int | None:
        """How long a driver call's future waits: for ever upstream; ``async.call.wait`` s when hardened."""
        if not self.store.profile.future_wait_is_bounded:
            return None
        return self.config.number("async.call.wait") * 1000

    def _require_up(self) -> None:
        if self.rt.down:
            raise ServerDown(self.ms_id)

    @contextlib.contextmanager
    def _serving(self) -> Iterator[None]:
        """A call into this server: refused while it is down; a crash rule firing inside takes it down.

        A transaction open when the crash fires is rolled back, what the call committed before stays; the caller's
        request dies with the server.
        """
        self._require_up()
        try:
            yield
        except MsCrash as crash:
            self._crashed(crash)
            raise ServerDown(crash.ms_id, crash.where) from None

    def _crashed(self, crash: MsCrash) -> None:
        self.crashes.append(crash.where)
        server = self.scheduler.members[crash.ms_id]
        if isinstance(server, Engine):
            server.rt.note("crash", f"ms{crash.ms_id}", f"ms{crash.ms_id}", f"crashes at {crash.where}")
        server.crash()

    def _own(self, ms_id: int | None) -> None:
        if ms_id is not None and ms_id != self.ms_id:
            raise InvalidValue(
                "ms_id", ms_id, f"this engine's management server id {self.ms_id} (use that server's engine)"
            )

    def run(self, *, until_ms: int | None = None, max_tasks: int | None = None) -> int:
        """Advance the simulated clock, running what is due, until nothing is pending (or ``until_ms``).

        A crash rule of the fault plan takes its server down where it fires; the rest of the world (peers, storage)
        goes on. ``crashes`` lists where each crash happened.

        Raises:
            InvalidValue: ``until_ms`` or ``max_tasks`` is not an integer (``until_ms`` a time in simulated ms since
                the start, e.g. ``engine.clock.now_ms + 60_000``); nothing runs.
        """
        for name, value in (("until_ms", until_ms), ("max_tasks", max_tasks)):
            if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
                raise InvalidValue(
                    f"run {name}", value, "an integer number of milliseconds" if name == "until_ms" else "an integer"
                )
        ran = 0
        while True:
            try:
                return ran + self.scheduler.run(until_ms=until_ms, max_tasks=max_tasks)
            except MsCrash as crash:
                ran += 1
                self._crashed(crash)

    @property
    def strategies(self) -> tuple[SnapshotStrategy, ...]:
        """The strategies this engine chooses from, in the factory's order (ties go to the earlier one)."""
        return tuple(self.rt.factory.strategies)

    def priorities(
        self, snapshot: Snapshot | int, op: Operation | str, zone_id: int | None = None
    ) -> list[tuple[str, Priority]]:
        """Every strategy's ``canHandle`` for ``op`` on the snapshot (spec §6.2), in the factory's order.

        Raises:
            NotFound: no such snapshot.
            InvalidValue: ``op`` is not an operation (TAKE, BACKUP, DELETE, REVERT, COPY).
        """
        return self.rt.factory.priorities(self.rt.strategy_env, self._snapshot(snapshot), _operation(op), zone_id)

    def strategy_for(
        self, snapshot: Snapshot | int, op: Operation | str, zone_id: int | None = None
    ) -> SnapshotStrategy | None:
        """The strategy the factory chooses for ``op`` on the snapshot (spec §6.1), or None.

        Raises:
            NotFound: no such snapshot.
            InvalidValue: ``op`` is not an operation.
        """
        return self.rt.factory.best(self.rt.strategy_env, self._snapshot(snapshot), _operation(op), zone_id)

    def _snapshot(self, snapshot: Snapshot | int) -> Snapshot:
        return self.store.get(Snapshot, snapshot if isinstance(snapshot, int) else snapshot.id)

    def job_status(self, job_id: int) -> str:
        """The job's status name (IN_PROGRESS, SUCCEEDED, FAILED, CANCELLED)."""
        return self.store.state_of(self.store.get(AsyncJob, job_id))

    def snapshot_of(self, job: AsyncJob | int) -> Snapshot:
        """The snapshot a createSnapshot, deleteSnapshot or copySnapshot job is about (its ``instance_id``).

        Raises:
            NotFound: no such job, or its snapshot row is gone.
            InvalidValue: the job is not about a snapshot (a VM work job).
        """
        row = self.store.get(AsyncJob, job if isinstance(job, int) else job.id)
        if row.instance_type != "Snapshot" or row.instance_id is None:
            raise InvalidValue(
                "job",
                row.id,
                "a job about a snapshot",
                message=f"job {row.id} ({row.job_cmd.rsplit('.', 1)[-1]}) is not about a snapshot",
            )
        return self.store.get(Snapshot, row.instance_id)


def _account_arg(call: str, account: object) -> int:
    """The id of an account argument (an id or an Account record); its existence is checked by the call."""
    if isinstance(account, Account):
        return account.id
    if isinstance(account, int) and not isinstance(account, bool):
        return account
    raise InvalidValue(f"{call} account", account, "an account id (int) or an Account")


def _operation(op: Operation | str) -> Operation:
    try:
        return Operation(op)
    except ValueError:
        raise InvalidValue("operation", op, "one of " + ", ".join(Operation)) from None


def _plugins(
    definitions: Definitions,
    strategies: Iterable[SnapshotStrategy | type[SnapshotStrategy]] | None,
    drivers: Iterable[type[PrimaryDriver]] | None,
    faults: FaultPlan | None,
) -> tuple[DriverSet, StrategyFactory, FaultPlan]:
    """The drivers, strategies and fault plan of one engine: the installed ones unless given, all checked."""
    installed = DriverSet(drivers if drivers is not None else installed_drivers())
    factory = StrategyFactory(strategies if strategies is not None else installed_strategies())
    plan = faults if faults is not None else FaultPlan()
    plan.check(engine_catalogue(definitions, installed.drivers))
    return installed, factory, plan


Checked = TypeVar("Checked")


def _arg(name: str, value: Checked, types: type | tuple[type, ...], expected: str) -> Checked:
    """``value`` if it is of ``types`` (a bool is not an int here), else the tool's own bad-input error."""
    if not isinstance(value, types) or (isinstance(value, bool) and types is int):
        raise InvalidValue(f"createSnapshot {name}", value, expected)
    return value


def _ids(name: str, values: object) -> tuple[int, ...]:
    if isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
        raise InvalidValue(f"createSnapshot {name}", values, "a list of integer ids")
    found = list(values)
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in found):
        raise InvalidValue(f"createSnapshot {name}", found, "a list of integer ids")
    return tuple(found)


def _check_params(
    *,
    volume_id: int,
    policy_id: int,
    name: str | None,
    location_type: str | None,
    async_backup: bool,
    quiescevm: bool,
    zone_ids: Iterable[int],
    storage_ids: Iterable[int],
    use_storage_replication: bool,
    tags: Mapping[str, str] | None,
) -> SnapshotRequest:
    """Python-level argument checks (the tool's own bad input), before anything runs; the job's request."""
    request = SnapshotRequest(
        volume_id=_arg("volume_id", volume_id, int, "an integer volume id"),
        policy_id=_arg("policy_id", policy_id, int, "an integer policy id (0 for a manual snapshot)"),
        name=_arg("name", name, (str, type(None)), "a string or None"),
        location_type=_arg("location_type", location_type, (str, type(None)), "'primary', 'secondary' or None"),
        async_backup=_arg("async_backup", async_backup, bool, "a bool"),
        quiescevm=_arg("quiescevm", quiescevm, bool, "a bool"),
        use_storage_replication=_arg("use_storage_replication", use_storage_replication, bool, "a bool"),
        zone_ids=_ids("zone_ids", zone_ids),
        storage_ids=_ids("storage_ids", storage_ids),
    )
    check_length("snapshotName", request.name)  # ParamProcessWorker, before the command runs: nothing is written
    if tags is not None and not (
        isinstance(tags, Mapping) and all(isinstance(k, str) and isinstance(v, str) for k, v in tags.items())
    ):
        raise InvalidValue("createSnapshot tags", tags, "a mapping of strings to strings")
    return attrs.evolve(request, tags=tuple(tags.items()) if tags is not None else ())
