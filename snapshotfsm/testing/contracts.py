"""Contract suites: what every driver and every strategy must do for the workflows to hold.

Mix a suite into a test class of your own, as TaskFlow's backends mix in ``PersistenceTestMixin``; pytest (or
unittest) runs its ``test_*`` methods::

    from snapshotfsm.testing import DriverContract, PoolShape, StrategyContract

    class TestMyDriver(DriverContract):
        driver = MyArrayDriver                      # installed beside the built-ins for these tests
        strategies = (MyArrayStrategy,)             # what your driver needs to be taken and deleted, if anything

    class TestMyStrategy(StrategyContract):
        strategy = MyArrayStrategy
        drivers = (MyArrayDriver,)
        shapes = (PoolShape.of(MyArrayDriver),)     # the pools it is meant for; the built-in ones are tried too

The built-in drivers and strategies pass both suites (``tests/test_contracts.py``).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import ClassVar

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from snapshotfsm.drivers.base import ASYNC, FAULT_KINDS, FaultKind
from snapshotfsm.drivers.primary import PrimaryDriver
from snapshotfsm.drivers.registry import DriverSet, installed_drivers
from snapshotfsm.faults import FaultPlan
from snapshotfsm.names import JobState, SnapshotState, Take, TakeState, VolumeState
from snapshotfsm.store.records import AsyncJob, OpLock, ResourceCount, Snapshot, StorageObject, Volume, Workflow
from snapshotfsm.strategies.base import Operation, Priority, SnapshotStrategy
from snapshotfsm.strategies.factory import installed_strategies
from snapshotfsm.testing.cloud import BUILTIN_SHAPES, PoolShape, QuickCloud

SURVIVABLE: tuple[FaultKind, ...] = ("error", "exception", "null_answer")
"""Fault kinds a take answers with the rollback of ``take_snapshot.toml`` (AbortTake, Unwind, Fail)."""


def _with(
    installed: tuple[type[PrimaryDriver], ...], extra: tuple[type[PrimaryDriver], ...]
) -> list[type[PrimaryDriver]]:
    return [*installed, *(d for d in extra if d not in installed)]


def _take_workflow(cloud: QuickCloud, job: AsyncJob) -> Workflow:
    flow = cloud.engine.store.first(Workflow, "job_id = ? AND machine = 'take_snapshot'", (job.id,))
    if flow is None:
        raise AssertionError(f"job {job.id} has no take_snapshot workflow")
    return flow


def _live_objects(cloud: QuickCloud, snapshot_id: int) -> list[StorageObject]:
    return cloud.engine.store.find(StorageObject, "snapshot_id = ? AND deleted_ms IS NULL", (snapshot_id,))


class DriverContract:
    """What a primary-storage driver must do. Set ``driver``; ``shape`` and ``strategies`` when the defaults do not fit.

    ``shape`` (default: the driver's first provider and pool type, KVM, QCOW2) is the pool the tests build;
    ``strategies`` are installed beside the built-in ones, for a driver that needs its own.
    """

    driver: ClassVar[type[PrimaryDriver]]
    shape: ClassVar[PoolShape | None] = None
    strategies: ClassVar[tuple[type[SnapshotStrategy], ...]] = ()

    def contract_shape(self) -> PoolShape:
        """The pool the tests use."""
        return self.shape if self.shape is not None else PoolShape.of(self.driver)

    def contract_cloud(self, faults: FaultPlan | None = None) -> QuickCloud:
        """A cloud with the built-in drivers and strategies, and the driver and strategies under test."""
        drivers = _with(installed_drivers(), (self.driver,))
        strategies = [*installed_strategies(), *(s for s in self.strategies if s not in installed_strategies())]
        return QuickCloud(faults=faults, drivers=drivers, strategies=strategies)

    def test_it_declares_what_it_serves(self) -> None:
        """A kind, providers, pool types, and the three operations every workflow calls, answered later."""
        driver = self.driver
        assert isinstance(driver.kind, str)
        assert driver.kind, f"{driver.__qualname__} has an empty kind"
        assert driver.providers, f"{driver.__qualname__} declares no provider"
        assert driver.pool_types, f"{driver.__qualname__} declares no pool type"
        for op in ("takeSnapshot", "copyAsync", "deleteAsync"):
            assert driver.operations.get(op) == ASYNC, f"{driver.__qualname__}.operations lacks {op!r} as async"
        DriverSet(_with(installed_drivers(), (driver,)))  # no provider claimed twice

    def test_a_take_is_answered_once_and_puts_the_snapshot_on_storage(self) -> None:
        """The take SUCCEEDS with one answer, and the snapshot is an object on simulated storage."""
        cloud = self.contract_cloud()
        job = cloud.take(cloud.volume(self.contract_shape()))
        assert cloud.engine.job_status(job.id) == JobState.SUCCEEDED, job.job_result
        answers = [r for r in cloud.engine.history(job=job.id) if r.event == Take.PrimaryAnswered]
        assert len(answers) == 1, f"the take was answered {len(answers)} times"
        snapshot = cloud.engine.snapshot_of(job)
        assert _live_objects(cloud, snapshot.id), "the snapshot is on no simulated storage"

    def test_a_delete_drops_what_the_take_put(self) -> None:
        """Deleting the snapshot SUCCEEDS and no object of it is left on storage."""
        cloud = self.contract_cloud()
        snapshot = cloud.engine.snapshot_of(cloud.take(cloud.volume(self.contract_shape())))
        job = cloud.delete(snapshot.id)
        assert cloud.engine.job_status(job.id) == JobState.SUCCEEDED, job.job_result
        left = [(o.store_kind, o.path) for o in _live_objects(cloud, snapshot.id)]
        assert not left, f"left on storage after the delete: {left}"

    def test_a_failed_take_answer_rolls_the_take_back(self) -> None:
        """An error answer, a throw at the call or a null answer: the job FAILS, the volume is Ready, counts back."""
        for kind in SURVIVABLE:
            cloud = self.contract_cloud(FaultPlan().fail(f"{self.driver.kind}.takeSnapshot", kind=kind))
            volume = cloud.volume(self.contract_shape())
            job = cloud.take(volume)
            assert cloud.faults.fired, f"{kind}: the driver never called takeSnapshot through Driver.call"
            assert cloud.engine.job_status(job.id) == JobState.FAILED, f"{kind}: {job.job_result}"
            assert _take_workflow(cloud, job).state == TakeState.Failed, kind
            assert cloud.engine.get(Volume, volume.id).state == VolumeState.Ready, kind
            counts = {
                r.type: r.count for r in cloud.engine.store.find(ResourceCount, "account_id = ?", (cloud.account.id,))
            }
            assert counts == {"snapshot": 0, "primary_storage": 0, "secondary_storage": 0}, f"{kind}: {counts}"

    def test_no_answer_leaves_the_take_waiting(self) -> None:
        """A take the driver never answers waits for it: the job IN_PROGRESS, the volume Snapshotting."""
        assert "no_answer" in FAULT_KINDS
        cloud = self.contract_cloud(FaultPlan().fail(f"{self.driver.kind}.takeSnapshot", kind="no_answer"))
        volume = cloud.volume(self.contract_shape())
        job = cloud.take(volume)
        assert cloud.engine.job_status(job.id) == JobState.IN_PROGRESS
        assert _take_workflow(cloud, job).state == TakeState.AwaitingPrimary
        assert cloud.engine.get(Volume, volume.id).state == VolumeState.Snapshotting

    def test_a_failed_delete_answer_fails_the_delete(self) -> None:
        """An error answer to ``deleteAsync`` (where the delete calls it) FAILS the delete job; nothing hangs."""
        cloud = self.contract_cloud(FaultPlan().fail(f"{self.driver.kind}.deleteAsync", times=99))
        snapshot = cloud.engine.snapshot_of(cloud.take(cloud.volume(self.contract_shape())))
        job = cloud.delete(snapshot.id)
        status = cloud.engine.job_status(job.id)
        if cloud.faults.fired:
            assert status == JobState.FAILED, job.job_result
        else:
            assert status == JobState.SUCCEEDED, job.job_result


class StrategyContract:
    """What a snapshot strategy must do. Set ``strategy``; ``drivers`` and ``shapes`` for a plugin's own pools.

    The tests build a cloud with the built-in pools (``BUILTIN_SHAPES``) and ``shapes``, with ``strategy`` installed
    after the built-in strategies (if it is not one of them) and ``drivers`` beside the built-in drivers.
    """

    strategy: ClassVar[type[SnapshotStrategy]]
    drivers: ClassVar[tuple[type[PrimaryDriver], ...]] = ()
    shapes: ClassVar[tuple[PoolShape, ...]] = ()

    def contract_cloud(self) -> QuickCloud:
        """A cloud with the built-in strategies and ``strategy``, the built-in drivers and ``drivers``."""
        strategies = [
            *installed_strategies(),
            *((self.strategy,) if self.strategy not in installed_strategies() else ()),
        ]
        return QuickCloud(strategies=strategies, drivers=_with(installed_drivers(), self.drivers))

    def _snapshots(self, cloud: QuickCloud) -> Iterator[Snapshot]:
        """A snapshot of each pool: backed up, then one only allocated (create phase), then one deleted."""
        for shape in (*BUILTIN_SHAPES, *self.shapes):
            volume = cloud.volume(shape)
            yield cloud.engine.snapshot_of(cloud.take(volume))
            yield cloud.engine.snapshot_of(cloud.engine.create_snapshot(volume.id))
            cloud.engine.run()

    def test_can_handle_answers_every_operation_without_writing(self) -> None:
        """For any snapshot, operation and zone, ``can_handle`` returns a Priority, raises nothing, writes nothing."""
        cloud = self.contract_cloud()
        snapshots = list(self._snapshots(cloud))
        name = self.strategy.name

        @settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
        @given(
            snapshot=st.sampled_from(snapshots),
            op=st.sampled_from(list(Operation)),
            zone=st.sampled_from([None, cloud.zone.id, 999]),
        )
        def answers(snapshot: Snapshot, op: Operation, zone: int | None) -> None:
            before = cloud.engine.store.conn.total_changes
            answers = dict(cloud.engine.priorities(snapshot.id, op, zone))
            assert isinstance(answers[name], Priority), f"can_handle returned {answers[name]!r}"
            assert cloud.engine.store.conn.total_changes == before, f"can_handle({op}) wrote to the database"

        answers()

    def test_what_it_takes_ends_backed_up_with_the_volume_ready_and_no_lock(self) -> None:
        """Each take the factory gives it SUCCEEDS; the volume is Ready again and its lock released."""
        cloud = self.contract_cloud()
        for shape in (*BUILTIN_SHAPES, *self.shapes):
            volume = cloud.volume(shape)
            job = cloud.take(volume)
            flow = _take_workflow(cloud, job)
            if f'"strategy": "{self.strategy.name}"' not in flow.context:
                continue
            assert cloud.engine.job_status(job.id) == JobState.SUCCEEDED, (shape, job.job_result)
            assert cloud.engine.snapshot_of(job).status == SnapshotState.BackedUp, shape
            assert cloud.engine.get(Volume, volume.id).state == VolumeState.Ready, shape
            assert cloud.engine.store.count(OpLock) == 0, (shape, cloud.engine.store.find(OpLock))

    def test_what_it_deletes_is_gone_and_no_lock_is_left(self) -> None:
        """Each delete the factory gives it SUCCEEDS: the snapshot is Destroyed or removed; no lock is left."""
        cloud = self.contract_cloud()
        for shape in (*BUILTIN_SHAPES, *self.shapes):
            snapshot = cloud.engine.snapshot_of(cloud.take(cloud.volume(shape)))
            if type(cloud.engine.strategy_for(snapshot, Operation.DELETE)) is not self.strategy:
                continue
            job = cloud.delete(snapshot.id)
            assert cloud.engine.job_status(job.id) == JobState.SUCCEEDED, (shape, job.job_result)
            after = cloud.engine.get(Snapshot, snapshot.id)
            assert after.status == SnapshotState.Destroyed or after.removed is not None, (shape, after.status)
            assert cloud.engine.store.count(OpLock) == 0, (shape, cloud.engine.store.find(OpLock))
