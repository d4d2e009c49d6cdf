"""A scenario instance brought to life: its cloud built on a fresh engine (and a peer), its program run step by step.

The explorer drives a :class:`World` through its program and decides what a crash leads to: the server starts again
at the next step (``restart``), or a peer takes its jobs over (``node_left``, CloudStack's ``onManagementNodeLeft``)
and the crashed server stays down until quiescence starts it again.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

from snapshotfsm.engine import Engine
from snapshotfsm.errors import ApiError, NotFound, ServerDown
from snapshotfsm.explore.points import ExplorePlan
from snapshotfsm.explore.scenarios import EXPLORER_CONFIG, Instance, Step
from snapshotfsm.faults import FaultPlan
from snapshotfsm.invariants import Run, Violation, When, check
from snapshotfsm.orchestration.quiesce import QuiesceReport
from snapshotfsm.record import RunRecord
from snapshotfsm.store.records import AsyncJob, StoragePool, Volume, Zone

GIB = 1 << 30
OnCrash = Literal["restart", "node_left"]
UNLIMITED = {"snapshot": -1, "primary_storage": -1, "secondary_storage": -1}
MAX_RESTARTS = 16
"""A server whose every start crashes again is left down after this many (each crash rule fires once, so a plan
of fewer rules never reaches it)."""


class World:
    """One instance's cloud on ``:memory:``: servers ``ms1`` (and ``ms2``), a zone or two, the volume ``data``.

    Each zone has an image store, but the first when the scenario's ``[cloud]`` says ``image_store = false``.

    ``faults`` is shared by the servers; ``timeline`` keeps the run's moments (:attr:`RunRecord.timeline`) from the
    first step on. ``arm`` is called once the cloud is built, before the first step (the explorer's plan counts
    fault points from there).
    """

    def __init__(
        self,
        instance: Instance,
        *,
        profile: str = "cloudstack",
        seed: int = 0,
        faults: FaultPlan | None = None,
        on_crash: OnCrash = "restart",
        timeline: bool = False,
        arm: Callable[[], None] | None = None,
    ) -> None:
        self.instance = instance
        self.on_crash = on_crash
        self.engine = Engine.open(":memory:", profile=profile, seed=seed, faults=faults)
        if isinstance(faults, ExplorePlan):
            faults.scheduler = self.engine.scheduler
        self.servers: dict[int, Engine] = {1: self.engine}
        if instance.servers > 1:
            self.servers[2] = self.engine.peer(2, seed=seed)
        self.jobs: list[int | None] = []
        """The job of each ``createSnapshot`` of the program, in order (None: the call was refused or lost)."""
        self.outcomes: list[str] = []
        """What each step did, in words: the API's answer, or what stopped it."""
        self.taken_over: set[int] = set()
        self.volume: Volume
        self.zones: list[Zone] = []
        self.copy_pool: StoragePool | None = None
        self._build()
        if arm is not None:
            arm()
        if timeline:
            self.record.timeline = []

    @property
    def record(self) -> RunRecord:
        """The world's notebook, shared by its servers."""
        return self.engine.record

    def _build(self) -> None:
        engine, instance = self.engine, self.instance
        scenario = instance.scenario
        config = {**EXPLORER_CONFIG, **scenario.config}
        if instance.values["backup"] == "no-backup":
            config["snapshot.backup.to.secondary"] = False
        for name, value in config.items():
            engine.set_config(name, value)
        for server in self.servers.values():
            server.restart()  # non-dynamic keys are read when a server starts
        account = engine.add_account("alice", limits={**UNLIMITED, **scenario.limits})
        shape = instance.pool
        for n in (1, 2) if scenario.second_zone else (1,):
            zone = engine.add_zone(f"zone{n}")
            if n > 1 or scenario.cloud.get("image_store", True):
                engine.add_image_store(zone, f"secondary{n}")
            self.zones.append(zone)
        zone = self.zones[0]
        cluster = engine.add_cluster(zone, "cluster1", hypervisor=shape.hypervisor)
        host = engine.add_host(cluster, "host1")
        pool = engine.add_pool(
            zone,
            "primary1",
            pool_type=shape.pool_type,
            provider=shape.provider,
            managed=shape.managed,
            cluster=None if shape.zone_wide else cluster,
            hypervisor="Any" if shape.zone_wide else None,
        )
        if instance.values["copies"] == "pool-copy":
            far = engine.add_cluster(self.zones[1], "cluster2", hypervisor=shape.hypervisor)
            engine.add_host(far, "host2")
            self.copy_pool = engine.add_pool(
                self.zones[1], "primary2", pool_type=shape.pool_type, provider=shape.provider, cluster=far
            )
        attach = instance.values["vm"]
        vm = None
        if attach != "detached":
            running = attach == "running"
            vm = engine.add_vm(
                account,
                zone,
                "vm1",
                hypervisor=shape.hypervisor,
                state="Running" if running else "Stopped",
                host=host if running else None,
            )
        self.volume = engine.add_volume(
            account,
            pool,
            "data",
            size=10 * GIB,
            vm=vm,
            format=shape.format,
            encrypted=instance.values["encryption"] == "encrypted",
        )

    # --- the program ------------------------------------------------------------------------------------------------

    def server(self, ms: int) -> Engine:
        """The server a step addresses; when it is down and a peer took its jobs over, that peer."""
        engine = self.servers.get(ms, self.engine)
        if engine.down:
            live = [s for s in self.servers.values() if not s.down]
            if live:
                return live[0]
        return engine

    def run_step(self, index: int) -> str:
        """Do step ``index`` of the program; what it did, in words. A crash during it is recovered from after it."""
        step = self.instance.scenario.steps[index]
        scheduler = self.engine.scheduler
        scheduler.where, scheduler.where_count = step.kind, 0  # names the step's own interleaving points
        try:
            outcome = self._do(step)
        except ServerDown as down:
            outcome = f"server down: {down}"
        self.recover()
        self.outcomes.append(outcome)
        return outcome

    def _do(self, step: Step) -> str:
        if step.kind in ("run", "advance"):
            until = self.engine.clock.now_ms + step.seconds * 1000 if step.kind == "advance" else None
            ran = self.engine.run(until_ms=until)
            return f"ran {ran} tasks"
        if step.kind == "background":
            for server in self.servers.values():
                if not server.down:
                    server.start_background_tasks()
            return "background tasks started"
        if step.kind == "restart":
            server = self.servers[step.ms]
            if not server.down:
                server.crash()
            server.restart()
            return f"ms{step.ms} started again"
        engine = self.server(step.ms)
        if step.kind == "poll":
            return f"polled: {len(engine.poll_snapshot_schedules())} jobs"
        ms = f"ms{engine.ms_id}"
        self.engine.rt.note("api", "api", ms, str(step))
        try:
            text = self._call(engine, step)
        except ApiError as exc:
            text = f"refused: {exc}"
        self.engine.rt.note("api_answer", ms, "api", text)
        return text

    def _call(self, engine: Engine, step: Step) -> str:
        if step.kind == "createSnapshot":
            self.jobs.append(None)
            copies = self.instance.values["copies"]
            async_backup = step.async_backup
            job = engine.create_snapshot(
                self.volume.id,
                name=step.name,
                async_backup=self.instance.values["backup"] == "async" if async_backup is None else async_backup,
                quiescevm=step.quiescevm,
                location_type=step.location_type,
                zone_ids=[self.zones[1].id] if copies == "zone-copy" or step.zone_copy else [],
                storage_ids=[self.copy_pool.id] if self.copy_pool is not None else [],
            )
            self.jobs[-1] = job.id
            return f"job {job.id}"
        if step.kind == "createSnapshotPolicy":
            policy = engine.create_snapshot_policy(
                self.volume.id, interval=step.interval, schedule=step.schedule, max_snaps=step.keep
            )
            return f"policy {policy.id}"
        snapshot_id = self.snapshot_id(step.snapshot)
        if snapshot_id is None:
            return f"skipped: createSnapshot #{step.snapshot} made no snapshot"
        if step.kind == "deleteSnapshot":
            zone = self.zones[step.zone - 1].id if step.zone else None
            return f"job {engine.delete_snapshot(snapshot_id, zone_id=zone).id}"
        job = engine.copy_snapshot(snapshot_id, dest_zone_ids=[self.zones[1].id])
        return f"job {job.id}"

    def snapshot_id(self, n: int) -> int | None:
        """The snapshot of the program's ``n``-th ``createSnapshot`` (from 1), if it made one."""
        job_id = self.jobs[n - 1] if n <= len(self.jobs) else None
        if job_id is None:
            return None
        try:
            return self.engine.store.get(AsyncJob, job_id).instance_id
        except NotFound:
            return None

    def recover(self) -> None:
        """What follows a crash: each server down starts again, or (``node_left``) a live peer takes its jobs over."""
        for ms, server in sorted(self.servers.items()):
            if not server.down:
                continue
            peers = [s for s in self.servers.values() if s is not server and not s.down]
            if self.on_crash == "node_left" and peers and ms not in self.taken_over:
                self.taken_over.add(ms)
                peers[0].on_management_node_left(ms)
                continue
            if self.on_crash == "node_left" and peers:
                continue
            for _ in range(MAX_RESTARTS):
                try:
                    server.restart()
                except ServerDown:
                    continue
                break

    # --- the end ------------------------------------------------------------------------------------------------------

    def quiesce(self) -> QuiesceReport:
        """Run the world until nothing more will happen, through a restart of every server."""
        return self.engine.quiesce()

    def judge(self) -> list[Violation]:
        """Every invariant due after quiescence and a restart, evaluated now."""
        return check(Run(self.engine.store, self.record), at=When.RESTARTED)
