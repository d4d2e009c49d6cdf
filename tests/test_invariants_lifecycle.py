"""The run's record of asynchronous calls, and the lifecycle invariants (``snapshotfsm.invariants.lifecycle``).

Each invariant fails on a hand-made bad database (rows written directly, around the store) and holds on a good one.
"""

from __future__ import annotations

from cloud import Cloud

from snapshotfsm.engine import Engine
from snapshotfsm.faults import FaultPlan
from snapshotfsm.record import Call, Delivery


def _answer_due(engine: Engine, label: str) -> None:
    """Run the clock up to (not including) the task labelled ``label``."""
    while engine.scheduler.pending()[0].label != label:
        engine.run(max_tasks=1)


class TestCallbackRecord:
    """``Driver.call`` names every asynchronous call in the run's record and notes each delivery."""

    def test_each_call_is_named_and_its_answer_noted_once(self) -> None:
        """A take on XenServer makes two calls (take, copy); each answer reaches its callback once."""
        cloud = Cloud()
        cloud.take(cloud.volume("xen-nfs"))
        record = cloud.engine.record
        assert record.issued == [
            Call("default.takeSnapshot#1", 1, 0),
            Call("default.copyAsync#2", 1, 2000),
        ]
        assert record.deliveries == [
            Delivery("default.takeSnapshot#1", 2000),
            Delivery("default.copyAsync#2", 32000),
        ]
        assert record.never_answered == {}

    def test_a_no_answer_fault_is_noted_as_never_answered(self) -> None:
        """The call is named; nothing is delivered; the record says why."""
        cloud = Cloud(faults=FaultPlan().fail("default.takeSnapshot", kind="no_answer"))
        cloud.take(cloud.volume("xen-nfs"))
        record = cloud.engine.record
        assert [c.call for c in record.issued] == ["default.takeSnapshot#1"]
        assert record.deliveries == []
        assert record.never_answered == {
            "default.takeSnapshot#1": "injected no_answer fault on default.takeSnapshot: the storage never answers"
        }

    def test_a_call_that_throws_at_once_is_not_an_asynchronous_call(self) -> None:
        """The caller gets the exception: no callback is owed, nothing is noted."""
        cloud = Cloud(faults=FaultPlan().fail("default.takeSnapshot", kind="exception"))
        taken = cloud.take(cloud.volume("xen-nfs"))
        assert taken.status == "FAILED"
        assert cloud.engine.record.issued == []
        assert cloud.engine.record.deliveries == []

    def test_an_answer_to_a_crashed_server_is_dropped(self) -> None:
        """The server crashed after the call: its answer comes back to a new incarnation and is dropped."""
        cloud = Cloud()
        engine = cloud.engine
        cloud.create(cloud.volume("xen-nfs"))
        _answer_due(engine, "default.takeSnapshot")
        engine.crash()
        engine.run()
        assert engine.record.deliveries == [Delivery("default.takeSnapshot#1", 2000, dropped=True)]

    def test_a_crash_that_drops_the_answer_on_its_way_notes_it_dropped(self) -> None:
        """The storage answered, but the server crashed before the answer ran: the crash notes it dropped."""
        cloud = Cloud()
        engine = cloud.engine
        cloud.create(cloud.volume("xen-nfs"))
        _answer_due(engine, "answer default.takeSnapshot")
        engine.crash()
        assert engine.record.deliveries == [Delivery("default.takeSnapshot#1", 2000, dropped=True)]
        engine.run()
        assert len(engine.record.deliveries) == 1

    def test_a_peer_call_names_the_peer(self) -> None:
        """Peers share the record; each call names the server its answer goes to."""
        cloud = Cloud()
        volume = cloud.volume("xen-nfs")
        peer = cloud.engine.peer(2)
        peer.create_snapshot(volume.id)
        peer.run()
        assert [(c.call, c.ms_id) for c in cloud.engine.record.issued] == [
            ("default.takeSnapshot#1", 2),
            ("default.copyAsync#2", 2),
        ]
