"""The fault catalogue, and fault plans checked against it; crash points at a step's durable writes and in restart."""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

import pytest
from click.testing import CliRunner
from cloud import Cloud

from snapshotfsm import Engine
from snapshotfsm.cli import main
from snapshotfsm.definitions import project_definitions
from snapshotfsm.drivers.base import ASYNC, Callback
from snapshotfsm.drivers.primary import DefaultPrimaryDriver
from snapshotfsm.drivers.registry import installed_drivers
from snapshotfsm.errors import DriverContractError, InvalidValue, ServerDown
from snapshotfsm.faults import (
    BACKGROUND_TASKS,
    RESTART_PHASES,
    FaultPlan,
    catalogue,
    default_catalogue,
    engine_catalogue,
)
from snapshotfsm.store.records import Snapshot, SnapshotStoreRef, Workflow


class TestTheCatalogue:
    """``snapshotfsm.faults.catalogue``: every driver operation and every crash point."""

    def test_it_lists_every_driver_operation_with_its_names_and_kinds(self) -> None:
        """Each op answers to its driver's name, its pool types and its bare name, and takes all four kinds."""
        ops = {(op.driver, op.op): op for op in default_catalogue().ops}
        take = ops[("default", "takeSnapshot")]
        assert take.call == ASYNC
        assert "default.takeSnapshot" in take.names and "RBD.takeSnapshot" in take.names
        assert take.kinds == ("error", "exception", "no_answer", "null_answer")
        assert ops[("storpool", "snapshotExport")].call == "sync"
        assert ops[("image", "createAsync")].names[0] == "image.createAsync"
        assert "NetworkFilesystem.removeBitmap" in ops[("default", "removeBitmap")].names  # spec §16.6
        assert (ops[("default", "removeBitmap")].call, ops[("image", "convertSnapshot")].call) == ("sync", "sync")
        assert ("storpool", "removeBitmap") not in ops  # only the default driver's hosts are sent it

    def test_it_has_a_point_for_every_event_step_and_restart_phase(self) -> None:
        """Events of every workflow, a write point per step, each phase of the restart cleanup."""
        found = default_catalogue()
        names = {p.name: p for p in found.crash_points}
        assert names["take_snapshot.PrimaryAnswered"].transitions == ("AwaitingPrimary --PrimaryAnswered--> OnPrimary",)
        assert names["primary.request"].kind == "write"
        assert names["primary.request"].rule_name == "primary.request#<n>"
        assert [p.name for p in found.crash_points if p.kind == "restart"] == [f"restart.{p}" for p in RESTART_PHASES]
        assert [p.name for p in found.crash_points if p.kind == "tick"] == [f"tick.{t}" for t in BACKGROUND_TASKS]
        assert found.counts()["take_snapshot"] == {"event": 33, "write": 32}

    def test_an_engine_checks_against_one_catalogue_per_definitions_and_drivers(self) -> None:
        """``engine_catalogue`` is ``catalogue`` of the same definitions and drivers, built once and shared."""
        definitions, drivers = project_definitions(), installed_drivers()
        shared = engine_catalogue(definitions, drivers)
        assert shared == catalogue(definitions, drivers)
        assert engine_catalogue(definitions, list(drivers)) is shared
        assert engine_catalogue(definitions, drivers[:1]) == catalogue(definitions, drivers[:1]) != shared

    def test_the_cli_prints_it(self) -> None:
        """``snapshotfsm faults`` prints both tables and the catalogue's size."""
        result = CliRunner().invoke(main, ["faults"])
        assert result.exit_code == 0, result.output
        assert "snapshotExport" in result.output
        assert "primary.request#<n>" in result.output
        assert "26 driver operations, 140 crash points" in result.output


class TestPlansAreChecked:
    """A misspelt operation or crash point is refused when the rule is added, with the nearest name."""

    def test_a_misspelt_operation(self) -> None:
        with pytest.raises(InvalidValue) as caught:
            FaultPlan().fail("default.takeSnapshott")
        assert str(caught.value) == (
            "no installed driver has operation 'default.takeSnapshott' (did you mean 'default.takeSnapshot'?); "
            "`snapshotfsm faults` lists them"
        )

    def test_an_unknown_operation(self) -> None:
        with pytest.raises(InvalidValue, match=r"^no installed driver has operation 'no\.such\.op'; "):
            FaultPlan().fail("no.such.op")

    def test_a_misspelt_event(self) -> None:
        with pytest.raises(InvalidValue) as caught:
            FaultPlan().crash("take_snapshot.PrimaryAnswerd")
        assert str(caught.value) == (
            "no crash point 'take_snapshot.PrimaryAnswerd' (did you mean 'take_snapshot.PrimaryAnswered'?); "
            "a step's writes are <step>#<n>; `snapshotfsm faults` lists the crash points"
        )

    def test_a_write_of_an_unknown_step_and_a_bad_write_number(self) -> None:
        with pytest.raises(
            InvalidValue, match=r"no step 'primary\.requst' has durable writes .*did you mean 'primary\.request'"
        ):
            FaultPlan().crash("primary.requst#1")
        with pytest.raises(InvalidValue) as caught:
            FaultPlan().crash("primary.request#0")
        expected = "primary.request#<n> with n a write number from 1 (got 'primary.request#0' that is a str)"
        assert str(caught.value) == f"crash point must be {expected}"

    def test_an_engine_checks_the_plan_against_its_own_drivers(self) -> None:
        """A plan valid for the installed drivers but not for the engine's set is refused at open, writing nothing."""
        plan = FaultPlan().fail("storpool.snapshotExport")
        with pytest.raises(InvalidValue, match=r"^no installed driver has operation 'storpool\.snapshotExport'"):
            Engine.open(":memory:", drivers=[DefaultPrimaryDriver], faults=plan)

    def test_a_rule_given_to_the_constructor_is_checked_too(self) -> None:
        from snapshotfsm.drivers.base import FaultRule  # noqa: PLC0415

        with pytest.raises(InvalidValue, match="copyAsyncc"):
            FaultPlan([FaultRule("copyAsyncc")])


class TestCrashPoints:
    """Crashes between the writes of a step, and during the restart cleanup."""

    @pytest.mark.violates("counts-match-recount", "no-transitional-state")
    def test_a_crash_before_a_steps_second_write_keeps_the_first(self) -> None:
        """``primary.request`` inserts the primary ref, then moves the snapshot: a crash before the second write."""
        cloud = Cloud(faults=FaultPlan().crash("primary.request#2"))
        taken = cloud.create(cloud.volume("xen-nfs"))
        cloud.engine.run()
        assert cloud.engine.crashes == ["primary.request#2"]
        snapshot = cloud.engine.get(Snapshot, taken.snapshot.id)
        assert snapshot.status == "Allocated"
        refs = cloud.engine.store.find(SnapshotStoreRef, "snapshot_id = ?", (snapshot.id,))
        assert [(r.store_role, r.state) for r in refs] == [("Primary", "Allocated")]
        flow = cloud.engine.store.first(Workflow, "machine = 'take_snapshot'")
        assert flow is not None and flow.state == "TakeBegun"

    @pytest.mark.violates("counts-match-recount", "no-orphan-object")
    def test_a_crash_in_a_restart_phase_takes_the_server_down_again(self) -> None:
        """The cleanup stops where the crash falls; the server is down, and the next restart runs it whole."""
        cloud = Cloud(faults=FaultPlan().crash("take_snapshot.PrimaryAnswered").crash("restart.redelete_destroying"))
        cloud.create(cloud.volume("xen-nfs"))
        cloud.engine.run()
        assert cloud.engine.down
        with pytest.raises(ServerDown) as caught:
            cloud.engine.restart()
        assert caught.value.where == "restart.redelete_destroying"
        assert cloud.engine.down
        report = cloud.engine.restart()
        assert not cloud.engine.down
        assert report["jobs_failed"] == 0  # the first, interrupted restart had failed the job already

    @pytest.mark.parametrize("task", ["SnapshotPollTask", "StorageGarbageCollector"])
    def test_a_crash_at_a_background_tick(self, task: str) -> None:
        """A tick is a crash point: the server dies before that run of the task, and its next ticks die with it."""
        cloud = Cloud(faults=FaultPlan().crash(f"tick.{task}", nth=2))
        cloud.engine.set_config("storage.cleanup.delay", 300)
        cloud.engine.set_config("storage.cleanup.interval", 300)
        cloud.engine.restart()
        cloud.engine.start_background_tasks()
        cloud.engine.run(until_ms=3_600_000)
        assert cloud.engine.crashes == [f"tick.{task}"]
        assert cloud.engine.down
        assert not any(t.label == task for t in cloud.engine.scheduler.pending())


class TestDriverContractAtRuntime:
    """What a driver must not do shows at once, not as a silent corruption."""

    @pytest.mark.violates("counts-match-recount")
    def test_an_operation_the_driver_does_not_declare(self) -> None:
        class Sloppy(DefaultPrimaryDriver):
            operations: ClassVar[Mapping[str, str]] = {"copyAsync": ASYNC, "deleteAsync": ASYNC}

        engine = Engine.open(":memory:", drivers=[Sloppy])
        zone = engine.add_zone("z")
        cluster = engine.add_cluster(zone, "c", hypervisor="XenServer")
        host = engine.add_host(cluster, "h")
        engine.add_image_store(zone, "s")
        pool = engine.add_pool(zone, "p", cluster=cluster)
        owner = engine.add_account("a")
        volume = engine.add_volume(
            owner,
            pool,
            "v",
            size=1 << 30,
            vm=engine.add_vm(owner, zone, "vm", hypervisor="XenServer", host=host),
            format="VHD",
        )
        engine.create_snapshot(volume.id)
        with pytest.raises(
            DriverContractError, match=r"calls async operation 'takeSnapshot', which its operations do not declare"
        ):
            engine.run()

    def test_a_blocking_call_needs_an_async_declaration(self) -> None:
        """A caller may block on an asynchronous operation (spec §21.3); not on one the driver does not declare."""

        class Sloppy(DefaultPrimaryDriver):
            operations: ClassVar[Mapping[str, str]] = {"takeSnapshot": ASYNC, "copyAsync": ASYNC}

        engine = Engine.open(":memory:", drivers=[Sloppy])
        zone = engine.add_zone("z")
        cluster = engine.add_cluster(zone, "c", hypervisor="XenServer")
        pool = engine.add_pool(zone, "p", cluster=cluster)
        driver = engine.rt.drivers.primary(pool)
        with pytest.raises(
            DriverContractError, match=r"calls blocking operation 'deleteAsync', which its operations do not declare"
        ):
            driver.delete_snapshot_blocking("nowhere")

    def test_an_operation_answered_twice(self) -> None:
        class Stutter(DefaultPrimaryDriver):
            def take_snapshot(self, snapshot, volume, callback: Callback, *, to_image=None, parent_path=None) -> None:  # type: ignore[no-untyped-def]
                def twice(answer):  # type: ignore[no-untyped-def]
                    callback(answer)
                    callback(answer)

                super().take_snapshot(snapshot, volume, twice, to_image=to_image, parent_path=parent_path)

        engine = Engine.open(":memory:", drivers=[Stutter])
        zone = engine.add_zone("z")
        cluster = engine.add_cluster(zone, "c", hypervisor="XenServer")
        host = engine.add_host(cluster, "h")
        engine.add_image_store(zone, "s")
        pool = engine.add_pool(zone, "p", cluster=cluster)
        owner = engine.add_account("a")
        vm = engine.add_vm(owner, zone, "vm", hypervisor="XenServer", host=host)
        volume = engine.add_volume(owner, pool, "v", size=1 << 30, vm=vm, format="VHD")
        engine.create_snapshot(volume.id)
        with pytest.raises(
            DriverContractError, match="a driver answered twice to the call that PrimaryAnswered resumes"
        ):
            engine.run()
