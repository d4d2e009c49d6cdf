"""The engine-level property test, for the project's suite and for a plugin author's: random use of a small cloud.

:class:`EngineMachine` is a Hypothesis ``RuleBasedStateMachine``: random API calls (create with copies, copy,
delete, policies, polls, chains), injected driver faults, planned crashes, clock advances, crashes and restarts.
After every step the definitions are the oracle: every logged transition is legal, no entity is in a state outside
its machine, and every row agrees with the last transition logged for it. A plugin author runs it over their own
driver and strategy by naming them and the pools they serve::

    from snapshotfsm.testing import EngineMachine, PoolShape

    class ExampleArrayMachine(EngineMachine):
        drivers = (ExampleArrayDriver,)  # added to the installed ones
        strategies = (ExampleArrayStrategy,)
        shapes = (PoolShape.of(ExampleArrayDriver),)  # a pool of each, with an attached volume, joins the cloud

    TestExampleArray = ExampleArrayMachine.TestCase
"""

from __future__ import annotations

from typing import ClassVar

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from snapshotfsm.drivers.base import FAULT_KINDS
from snapshotfsm.drivers.primary import PrimaryDriver
from snapshotfsm.drivers.registry import installed_drivers
from snapshotfsm.engine import Engine
from snapshotfsm.errors import ApiError
from snapshotfsm.faults import FaultPlan
from snapshotfsm.names import RefState, SnapshotState
from snapshotfsm.store.records import (
    AsyncJob,
    Snapshot,
    SnapshotStoreRef,
    TransitionLog,
    VmWorkJob,
    Volume,
    Workflow,
)
from snapshotfsm.strategies.base import SnapshotStrategy
from snapshotfsm.strategies.factory import installed_strategies
from snapshotfsm.testing.cloud import PoolShape

GIB = 1 << 30
OPS = (
    "takeSnapshot",
    "copyAsync",
    "deleteAsync",
    "createAsync",
    "storpool.snapshotExport",
    "storpool.snapshotFromRemote",
    "storpool.snapshotReconcile",
    "storpool.snapshotUnexport",
)
COPIES = ("none", "zone", "pool")
"""What ``createSnapshot`` also asks for: nothing, a copy to zone2's image store, a copy to zone2's StorPool pool."""
CRASH_POINTS = (
    "take_snapshot.Execute",
    "take_snapshot.RequestPrimary",
    "take_snapshot.PrimaryAnswered",
    "take_snapshot.BackupAnswered",
    "take_snapshot.PostProcess",
    "backup_task.Run",
    "backup_task.CopyAnswered",
    "delete_snapshot.DriverAnswered",
    "copy_snapshot.CopyToZone",
    "copy_snapshot.CopyToPool",
    "copy_snapshot_job.Start",
)


class EngineMachine(RuleBasedStateMachine):
    """A small cloud under random use; the definitions are the oracle.

    The cloud: two zones with image stores, XenServer and KVM clusters, NFS pools of each, StorPool pools in both
    zones, a managed SolidFire pool, and six volumes (attached and detached); then, for each of :attr:`shapes`, a
    pool of that shape in zone1 with an attached volume. Subclass and set the class attributes to add a plugin.
    """

    drivers: ClassVar[tuple[type[PrimaryDriver], ...]] = ()
    """Driver classes added to the installed ones (a plugin's, not yet installed as an entry point)."""
    strategies: ClassVar[tuple[type[SnapshotStrategy], ...]] = ()
    """Strategy classes added after the installed ones, in the factory's order."""
    shapes: ClassVar[tuple[PoolShape, ...]] = ()
    """Pools to add, one attached volume each: the plugin's own pools."""

    @initialize(seed=st.integers(0, 3))
    def build(self, seed: int) -> None:
        """The cloud, built anew for each example; ``seed`` varies the uuids."""
        self.faults = FaultPlan()
        drivers = (
            [*installed_drivers(), *(d for d in self.drivers if d not in installed_drivers())] if self.drivers else None
        )
        strategies = (
            [*installed_strategies(), *(s for s in self.strategies if s not in installed_strategies())]
            if self.strategies
            else None
        )
        e = self.engine = Engine.open(":memory:", faults=self.faults, seed=seed, drivers=drivers, strategies=strategies)
        self.definitions = e.store.definitions
        self.bindings = e.store.bindings
        zone = e.add_zone("zone1")
        self.zone2 = e.add_zone("zone2")
        e.add_image_store(zone, "sec1")
        e.add_image_store(self.zone2, "sec2")
        xen = e.add_cluster(zone, "xen", hypervisor="XenServer")
        kvm = e.add_cluster(zone, "kvm", hypervisor="KVM")
        xen_host = e.add_host(xen, "xh")
        kvm_host = e.add_host(kvm, "kh")
        alice = e.add_account("alice", limits={"snapshot": 12})
        nfs_xen = e.add_pool(zone, "nfs-xen", cluster=xen)
        nfs_kvm = e.add_pool(zone, "nfs-kvm", cluster=kvm)
        storpool = e.add_pool(zone, "sp", pool_type="StorPool", provider="StorPool", cluster=kvm)
        kvm2 = e.add_cluster(self.zone2, "kvm2", hypervisor="KVM")
        self.storpool2 = e.add_pool(self.zone2, "sp2", pool_type="StorPool", provider="StorPool", cluster=kvm2)
        for pool, location in ((storpool, "loc-1"), (self.storpool2, "loc-2")):
            e.set_config("sp.cluster.location", location, scope="StoragePool", scope_id=pool.id)
        self.zones = [zone, self.zone2]
        managed = e.add_pool(zone, "sf", pool_type="IscsiLUN", provider="SolidFire", managed=True, hypervisor="Any")
        db = e.add_vm(alice, zone, "db", hypervisor="XenServer", host=xen_host)
        web = e.add_vm(alice, zone, "web", hypervisor="KVM", host=kvm_host)
        self.volumes: list[Volume] = [
            e.add_volume(alice, nfs_xen, "db1", size=10 * GIB, vm=db, format="VHD"),
            e.add_volume(alice, nfs_xen, "db2", size=10 * GIB, vm=db, format="VHD"),
            e.add_volume(alice, nfs_kvm, "web1", size=5 * GIB, vm=web),
            e.add_volume(alice, nfs_kvm, "spare", size=5 * GIB),
            e.add_volume(alice, storpool, "web-sp", size=5 * GIB, vm=web, format="RAW"),
            e.add_volume(alice, managed, "web-sf", size=5 * GIB, vm=web),
        ]
        hosts = {"XenServer": (xen, xen_host), "KVM": (kvm, kvm_host)}
        for n, shape in enumerate(self.shapes, start=1):
            if shape.hypervisor not in hosts:
                cluster = e.add_cluster(zone, f"{shape.hypervisor.lower()}-plugin", hypervisor=shape.hypervisor)
                hosts[shape.hypervisor] = (cluster, e.add_host(cluster, f"{shape.hypervisor.lower()}-plugin-host"))
            cluster, host = hosts[shape.hypervisor]
            pool = e.add_pool(
                zone,
                f"plugin-pool{n}",
                pool_type=shape.pool_type,
                provider=shape.provider,
                managed=shape.managed,
                cluster=None if shape.zone_wide else cluster,
                hypervisor="Any" if shape.zone_wide else None,
            )
            vm = e.add_vm(alice, zone, f"plugin-vm{n}", hypervisor=shape.hypervisor, host=host)
            self.volumes.append(e.add_volume(alice, pool, f"plugin-vol{n}", size=5 * GIB, vm=vm, format=shape.format))
        self.refusals = 0

    # --- rules -----------------------------------------------------------------------------------------------------

    @precondition(lambda self: not self.engine.down)
    @rule(data=st.data(), async_backup=st.booleans(), copy=st.sampled_from(COPIES))
    def create_snapshot(self, data: st.DataObject, async_backup: bool, copy: str) -> None:
        """The API may refuse; any other exception is a bug."""
        volume = data.draw(st.sampled_from(self.volumes))
        zone_ids = [self.zone2.id] if copy == "zone" else []
        storage_ids = [self.storpool2.id] if copy == "pool" else []
        try:
            self.engine.create_snapshot(
                volume.id, async_backup=async_backup, zone_ids=zone_ids, storage_ids=storage_ids
            )
        except ApiError:
            self.refusals += 1

    @precondition(lambda self: not self.engine.down)
    @rule(data=st.data(), to_pool=st.booleans())
    def copy_any_snapshot(self, data: st.DataObject, to_pool: bool) -> None:
        """``copySnapshot`` of any row, to either zone or to zone2's StorPool pool: the job mostly fails."""
        self._copy(data, self.engine.store.find(Snapshot), to_pool)

    @precondition(lambda self: not self.engine.down and self._backed_up())
    @rule(data=st.data(), to_pool=st.booleans())
    def copy_backed_up_snapshot(self, data: st.DataObject, to_pool: bool) -> None:
        """``copySnapshot`` of a BackedUp snapshot, which the API accepts, then run the job."""
        self._copy(data, self._backed_up(), to_pool)
        self.engine.run()

    def _backed_up(self) -> list[Snapshot]:
        return self.engine.store.find(Snapshot, "status = ? AND removed IS NULL", (SnapshotState.BackedUp,))

    def _copy(self, data: st.DataObject, snapshots: list[Snapshot], to_pool: bool) -> None:
        if snapshots:
            snapshot = data.draw(st.sampled_from(snapshots))
            zone = data.draw(st.sampled_from(self.zones))
            storage_ids = [self.storpool2.id] if to_pool else []
            self.engine.copy_snapshot(snapshot.id, dest_zone_ids=[zone.id], storage_ids=storage_ids)

    @precondition(lambda self: not self.engine.down)
    @rule()
    def check_storpool_recovery(self) -> None:
        """One run of StorPool's recovery check."""
        self.engine.check_storpool_recovery()

    @precondition(lambda self: not self.engine.down)
    @rule(data=st.data())
    def delete_snapshot(self, data: st.DataObject) -> None:
        """Delete any snapshot row, whatever its state (the job may fail, never the engine)."""
        snapshots = self.engine.store.find(Snapshot)
        if snapshots:
            snapshot = data.draw(st.sampled_from(snapshots))
            self.engine.delete_snapshot(snapshot.id)

    @precondition(lambda self: not self.engine.down)
    @rule(index=st.integers(0, 1), changed=st.booleans())
    def grow_a_chain(self, index: int, changed: bool) -> None:
        """A XenServer snapshot taken to its end: a delta on the one before, or an empty delta (§16.2)."""
        volume = self.volumes[index]
        self.engine.set_volume_churn(volume, volume.size // 8 if changed else 0)
        try:
            self.engine.create_snapshot(volume.id)
        except ApiError:
            self.refusals += 1
        self.engine.run()

    @precondition(lambda self: not self.engine.down and self._parents())
    @rule(data=st.data())
    def delete_a_parent(self, data: st.DataObject) -> None:
        """Delete a snapshot that a live delta still needs: its ref is hidden, or the delete fails (§16.3)."""
        self.engine.delete_snapshot(data.draw(st.sampled_from(self._parents())))
        self.engine.run()

    def _parents(self) -> list[int]:
        """Snapshots whose image ref is the parent of another live image ref."""
        rows = self.engine.store.conn.execute(
            "SELECT DISTINCT p.snapshot_id FROM snapshot_store_ref c JOIN snapshot_store_ref p "
            "ON c.parent_snapshot_id = p.snapshot_id AND c.store_id = p.store_id AND p.store_role = 'Image' "
            "WHERE c.store_role = 'Image' AND c.state NOT IN (?, ?) AND p.state = ? "
            "ORDER BY p.snapshot_id",
            (RefState.Destroying, RefState.Destroyed, RefState.Ready),
        ).fetchall()
        return [row[0] for row in rows]

    @precondition(lambda self: not self.engine.down)
    @rule(index=st.integers(0, 3), max_snaps=st.integers(1, 3))
    def create_policy(self, index: int, max_snaps: int) -> None:
        """An hourly policy; the scheduler picks it up when polled."""
        try:
            self.engine.create_snapshot_policy(
                self.volumes[index].id, interval="HOURLY", schedule="0", max_snaps=max_snaps
            )
        except ApiError:
            self.refusals += 1

    @precondition(lambda self: not self.engine.down)
    @rule()
    def poll(self) -> None:
        """One scheduler poll."""
        self.engine.poll_snapshot_schedules()

    @rule(op=st.sampled_from(OPS), nth=st.integers(1, 3), kind=st.sampled_from(FAULT_KINDS))
    def inject_fault(self, op: str, nth: int, kind: str) -> None:
        """A driver operation fails on one of its next calls."""
        self.faults.fail(op, nth=nth, kind=kind)  # type: ignore[arg-type]

    @rule(at=st.sampled_from(CRASH_POINTS))
    def plan_crash(self, at: str) -> None:
        """The server will die the next time a job reaches ``at``."""
        self.faults.crash(at)

    @rule(ms=st.sampled_from([0, 1_000, 30_000, 300_000, 3_600_000]))
    def advance(self, ms: int) -> None:
        """Let simulated time pass, running what is due."""
        self.engine.run(until_ms=self.engine.clock.now_ms + ms)

    @rule()
    def run_until_idle(self) -> None:
        """Run until nothing but periodic work is pending."""
        self.engine.run()

    @precondition(lambda self: not self.engine.down)
    @rule()
    def crash_and_restart(self) -> None:
        """The server dies and starts again with its cleanup."""
        self.engine.crash()
        self.engine.restart()

    @precondition(lambda self: self.engine.down)
    @rule()
    def restart(self) -> None:
        """A server a crash rule took down starts again."""
        self.engine.restart()

    @precondition(lambda self: not self.engine.down)
    @rule()
    def collect_garbage(self) -> None:
        """One storage GC pass."""
        self.engine.collect_garbage()

    # --- invariants ------------------------------------------------------------------------------------------------

    @invariant()
    def every_logged_transition_is_legal(self) -> None:
        """Events follow the table; every other kind of row lands in (or leaves) a state of the machine."""
        for row in self.engine.store.find(TransitionLog):
            definition = self.definitions[row.machine]
            if row.kind == "event":
                found = definition.transition(row.source, row.event)
                assert found is not None, f"illegal {row}"
                assert found.dest == row.dest, f"wrong destination {row}"
            elif row.kind in ("create", "direct"):
                assert row.dest in definition.state_names, f"unknown state {row}"
            else:
                assert row.source in definition.state_names, f"unknown state {row}"

    @invariant()
    def no_entity_is_outside_its_machine(self) -> None:
        """Every row of every bound table holds a state of its machine, and agrees with its last log row."""
        store = self.engine.store
        last: dict[tuple[str, int], TransitionLog] = {}
        for row in store.find(TransitionLog):
            last[(row.machine, row.entity_id)] = row
        for cls in (Snapshot, Volume, SnapshotStoreRef, AsyncJob, VmWorkJob, Workflow):
            for record in store.find(cls):
                binding = store.binding(record)
                state = binding.state_of(getattr(record, binding.column))
                assert state in self.definitions[binding.machine].state_names, f"{record} is outside its machine"
                logged = last.get((binding.machine, record.id))
                assert logged is not None, f"{record} has no log row"
                assert logged.dest == state, f"{record} disagrees with its last log row {logged}"


EngineMachine.TestCase.settings = settings(
    max_examples=25,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
