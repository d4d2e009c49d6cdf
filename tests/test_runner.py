"""The step contract: steps gathered by name, typed contexts, generator steps and their resumption, the one runner."""

from __future__ import annotations

import json
import types

import pytest
from cloud import Cloud
from lifecycle_cloud import second_zone

from snapshotfsm import Engine
from snapshotfsm.definitions import project_definitions
from snapshotfsm.errors import DefinitionError, InvalidValue, StepOrderError
from snapshotfsm.names import Take
from snapshotfsm.orchestration import delete, workflows
from snapshotfsm.orchestration.contexts import DeleteContext, Machine, SnapshotRequest, TakeContext
from snapshotfsm.orchestration.runner import bind_steps
from snapshotfsm.store.records import TransitionLog, Workflow


def test_every_calls_name_of_the_project_is_a_step_and_every_step_is_called() -> None:
    """The modules' tables and the definitions agree both ways: no missing step, no step nobody calls."""
    called = {t.calls for d in project_definitions().values() for t in d.transitions if t.calls}
    assert called == set(workflows.STEPS)


def test_a_step_name_declared_by_two_modules_is_refused() -> None:
    """Two tables with one name: the gathering fails and names the step."""
    first = types.SimpleNamespace(__name__="first", STEPS={"x.step": lambda t: None})
    second = types.SimpleNamespace(__name__="second", STEPS={"x.step": lambda t: None})
    with pytest.raises(ValueError, match=r"step 'x\.step' is declared twice \(second and another module\)"):
        workflows.gather((first, second))  # type: ignore[arg-type]


def test_a_step_written_for_another_workflow_context_is_refused() -> None:
    """A take transition calling a delete step: the machines are not built, and the message says which."""
    definitions = project_definitions()
    steps = {**workflows.STEPS, "api.allocate": delete.finish}
    with pytest.raises(DefinitionError) as caught:
        workflows.check_contexts(definitions, steps)
    path = definitions["take_snapshot"].path
    assert str(caught.value) == (
        f"{path}: machine 'take_snapshot', transition 1: calls: step 'api.allocate' takes a Turn[DeleteContext], "
        "but take_snapshot runs with TakeContext"
    )


def test_a_generator_step_nobody_resumes_is_refused() -> None:
    """``delete.start`` waits in Deleting: without a ``Resumes`` transition there it could never go on."""
    definitions = project_definitions()
    steps = {**workflows.STEPS, "delete.answered": delete.finish}
    with pytest.raises(DefinitionError) as caught:
        bind_steps(steps, definitions)
    assert str(caught.value) == (
        f"{definitions['delete_snapshot'].path}: machine 'delete_snapshot', transition 1: calls: 'delete.start' "
        "waits in 'Deleting', but no transition from there resumes it"
    )


def test_a_context_field_read_before_its_step_names_that_step() -> None:
    """The take is not prepared yet: reading it says which step sets it, instead of an AttributeError on None."""
    ctx = TakeContext(request=SnapshotRequest(volume_id=1), caller_id=2, user_id=2)
    with pytest.raises(StepOrderError, match=r"^take_snapshot: 'take' is read before step take.prepare sets it$"):
        _ = ctx.take
    with pytest.raises(StepOrderError, match=r"^TakeContext: 'error' is read before step a step that fails sets it$"):
        ctx.failure()


def test_a_run_started_with_the_wrong_context_is_refused_and_writes_nothing() -> None:
    """The runner starts a machine only with the context its steps are written for."""
    engine = Engine.open(":memory:")
    before = engine.store.count(Workflow)
    with pytest.raises(InvalidValue) as caught:
        engine.runner.start(Machine.TAKE, DeleteContext(caller_id=1))
    assert str(caught.value) == "workflow take_snapshot runs with a TakeContext, not a DeleteContext"
    assert engine.store.count(Workflow) == before


def test_store_and_runner_share_the_engine_machines() -> None:
    """One ``transitions`` machine per definition: the store's legality checks and the runner's triggers agree."""
    engine = Engine.open(":memory:")
    peer = engine.peer(2)
    assert all(engine.runner.machines[name] is engine.store.machines[name] for name in engine.runner.machines)
    assert all(peer.store.machines[name] is engine.store.machines[name] for name in engine.store.machines)


@pytest.mark.violates("counts-match-recount")
def test_a_parent_moves_before_the_workflow_it_spawns_runs() -> None:
    """A spawned copy runs once the take's own move to CopyingToZones is persisted, not inside its step."""
    cloud = Cloud()
    zone2 = second_zone(cloud, "zone2")
    taken = cloud.take(cloud.volume("xen-nfs"), zone_ids=[zone2.id])
    rows = cloud.engine.store.find(TransitionLog, "machine IN ('take_snapshot', 'copy_snapshot')")
    order = [(r.machine, r.event) for r in rows if r.event in ("CopyToZones", "create") or r.machine == "copy_snapshot"]
    parent = order.index(("take_snapshot", "CopyToZones"))
    child = order.index(("copy_snapshot", "create"))
    assert parent < child
    flow = cloud.engine.store.first(Workflow, "machine = 'take_snapshot' AND job_id = ?", (taken.job_id,))
    assert flow is not None
    assert json.loads(flow.context)["strategy"] == "DefaultSnapshotStrategy"
    assert flow.state == "Succeeded"
    assert Take.ZonesCopied in [r.event for r in rows if r.machine == "take_snapshot"]


def test_snapshot_of_a_job_and_of_a_job_about_no_snapshot() -> None:
    """``Engine.snapshot_of`` gives a snapshot job's snapshot; a VM work job is about no snapshot."""
    cloud = Cloud()
    taken = cloud.take(cloud.volume("xen-nfs"))
    assert cloud.engine.snapshot_of(taken.job_id).id == taken.snapshot.id
    assert cloud.engine.snapshot_of(taken.job).status == "BackedUp"
    work = taken.work_job
    assert work is not None
    with pytest.raises(InvalidValue) as caught:
        cloud.engine.snapshot_of(work)
    assert str(caught.value) == f"job {work.id} (VmWorkTakeVolumeSnapshot) is not about a snapshot"
