"""Several createSnapshot calls at once: the per-VM work queue (spec §4.3) and the ongoing-snapshot check (§5.1).

Jobs interleave at their waits on the simulated clock: the driver takes a snapshot in 2 s and the backup copy takes
30 s, so a XenServer snapshot with a sync backup holds its VM's queue slot from 0 to 32 s.
"""

from __future__ import annotations

import pytest
from cloud import PHYSICAL, SIZE, Cloud, Taken

from snapshotfsm.store.records import TransitionLog

OTHER_SNAPSHOTS = (
    "There is other active snapshot tasks on the instance to which the volume is attached, please try again later"
)
TAKE_MS = 32_000
"""One snapshot with a sync backup: 2 s on primary, then a 30 s copy."""


def times(cloud: Cloud, taken: Taken) -> dict[str, int]:
    """When the take's milestones were logged: slot handed out, volume Snapshotting, backed up, job done.

    The volume's first Snapshotting is taken: use it for snapshots of different volumes only.
    """
    rows = cloud.engine.store.find(TransitionLog)
    snap, volume = taken.snapshot, taken.snapshot.volume_id
    work = taken.work_job

    def at(machine: str, entity: int | None, dest: str) -> int:
        return next(r.at_ms for r in rows if r.machine == machine and r.entity_id == entity and r.dest == dest)

    return {
        "slot": at("vm_work_job", work.id if work else None, "Running"),
        "snapshotting": at("volume", volume, "Snapshotting"),
        "backed up": at("snapshot", snap.id, "BackedUp"),
        "done": at("async_job", taken.job_id, "SUCCEEDED"),
    }


class TestSameVm:
    """Work jobs of one VM run one at a time (queue size limit 1)."""

    def test_the_second_work_job_waits_in_the_queue(self) -> None:
        """While the first snapshot holds the slot, the second's work job stays Queued and its snapshot Allocated."""
        cloud = Cloud()
        vm = cloud.vm("XenServer")
        first = cloud.create(cloud.volume("xen-nfs", vm=vm))
        second = cloud.create(cloud.volume("xen-nfs", vm=vm))
        cloud.engine.run(until_ms=TAKE_MS - 1)
        assert first.work_state == ("IN_PROGRESS", "Running")
        assert second.work_state == ("IN_PROGRESS", "Queued")
        assert (first.snapshot.status, second.snapshot.status) == ("BackingUp", "Allocated")
        assert second.volume.state == "Ready"
        assert second.log("volume", "snapshot_store_ref") == [
            ("volume", 1, "Ready", "SnapshotRequested", "Snapshotting"),  # the first's volume only
            ("snapshot_store_ref", 1, "", "create", "Allocated"),
            ("snapshot_store_ref", 1, "Allocated", "CreateOnlyRequested", "Creating"),
            ("snapshot_store_ref", 1, "Creating", "OperationSucceeded", "Ready"),
            ("volume", 1, "Snapshotting", "OperationSucceeded", "Ready"),
            ("snapshot_store_ref", 2, "", "create", "Allocated"),
            ("snapshot_store_ref", 2, "Allocated", "CreateOnlyRequested", "Creating"),
        ]

    def test_the_slot_passes_when_the_first_completes(self) -> None:
        """The second work job is dispatched when the first completes, and runs a full take after it."""
        cloud = Cloud()
        vm = cloud.vm("XenServer")
        first = cloud.create(cloud.volume("xen-nfs", vm=vm))
        second = cloud.create(cloud.volume("xen-nfs", vm=vm))
        cloud.engine.run()
        assert (first.status, second.status) == ("SUCCEEDED", "SUCCEEDED")
        assert times(cloud, first) == {"slot": 0, "snapshotting": 0, "backed up": TAKE_MS, "done": TAKE_MS}
        assert times(cloud, second) == {
            "slot": TAKE_MS,
            "snapshotting": TAKE_MS,
            "backed up": 2 * TAKE_MS,
            "done": 2 * TAKE_MS,
        }
        assert first.log("vm_work_job", "async_job") == [
            ("async_job", 1, "", "create", "IN_PROGRESS"),  # first API job
            ("async_job", 2, "", "create", "IN_PROGRESS"),  # second API job
            ("async_job", 3, "", "create", "IN_PROGRESS"),  # first work job
            ("vm_work_job", 3, "", "create", "Queued"),
            ("vm_work_job", 3, "Queued", "Dispatch", "Running"),
            ("async_job", 4, "", "create", "IN_PROGRESS"),  # second work job
            ("vm_work_job", 4, "", "create", "Queued"),
            ("vm_work_job", 3, "Running", "Complete", "Done"),
            ("async_job", 3, "IN_PROGRESS", "CompleteSucceeded", "SUCCEEDED"),
            ("vm_work_job", 4, "Queued", "Dispatch", "Running"),  # the slot passes on at once
            ("async_job", 1, "IN_PROGRESS", "CompleteSucceeded", "SUCCEEDED"),
            ("vm_work_job", 4, "Running", "Complete", "Done"),
            ("async_job", 4, "IN_PROGRESS", "CompleteSucceeded", "SUCCEEDED"),
            ("async_job", 2, "IN_PROGRESS", "CompleteSucceeded", "SUCCEEDED"),
        ]
        assert cloud.counts() == {"snapshot": 2, "primary_storage": 0, "secondary_storage": 2 * PHYSICAL}

    def test_the_slot_passes_to_a_work_job_another_server_queued(self) -> None:
        """A work job queued through a second server runs when the first server's work job frees the slot.

        The queue lives in the database (``sync_queue``, spec §4.3): the server that frees the slot checks the
        queue (``releaseSyncSource`` → ``checkQueue``) and every server's heartbeat dequeues from any queue
        (``dequeueFromAny``), so a queued work job never waits for the server that submitted it.
        """
        cloud = Cloud()
        peer = cloud.engine.peer(2)
        vm = cloud.vm("XenServer")
        first = cloud.create(cloud.volume("xen-nfs", vm=vm))
        mark = cloud.engine.store.count(TransitionLog)
        second = Taken(peer, peer.create_snapshot(cloud.volume("xen-nfs", vm=vm).id).id, mark)
        cloud.engine.run()
        assert (first.status, second.status) == ("SUCCEEDED", "SUCCEEDED")
        assert (first.snapshot.status, second.snapshot.status) == ("BackedUp", "BackedUp")
        assert times(cloud, second) == {
            "slot": TAKE_MS,
            "snapshotting": TAKE_MS,
            "backed up": 2 * TAKE_MS,
            "done": 2 * TAKE_MS,
        }
        assert second.job.job_init_msid == 2
        assert cloud.counts() == {"snapshot": 2, "primary_storage": 0, "secondary_storage": 2 * PHYSICAL}

    @pytest.mark.violates("answer-matches-state", "counts-match-recount")
    def test_a_failed_work_job_frees_the_slot(self) -> None:
        """A work job that fails (an encrypted volume on a running VM) hands the slot on to the next one."""
        cloud = Cloud()
        vm = cloud.vm("XenServer")
        refused = cloud.create(cloud.volume("xen-nfs", vm=vm, encrypted=True))
        accepted = cloud.create(cloud.volume("xen-nfs", vm=vm))
        cloud.engine.run()
        assert (refused.error[0], accepted.status) == (432, "SUCCEEDED")
        assert times(cloud, accepted)["slot"] == 0
        assert refused.work_state == ("FAILED", "Failed")

    def test_a_stopped_vm_is_queued_too(self) -> None:
        """The VM's power state does not matter: a Stopped VM's volumes go through its queue (spec §4.3)."""
        cloud = Cloud()
        vm = cloud.vm("XenServer", state="Stopped")
        first = cloud.create(cloud.volume("xen-nfs", vm=vm))
        second = cloud.create(cloud.volume("xen-nfs", vm=vm))
        cloud.engine.run()
        assert times(cloud, second)["slot"] == times(cloud, first)["done"] == TAKE_MS


def test_different_vms_overlap() -> None:
    """Snapshots of two VMs' volumes run side by side: both start at once and end at the same simulated time."""
    cloud = Cloud()
    first = cloud.create(cloud.volume("xen-nfs"))
    second = cloud.create(cloud.volume("xen-nfs"))
    cloud.engine.run()
    expected = {"slot": 0, "snapshotting": 0, "backed up": TAKE_MS, "done": TAKE_MS}
    assert (times(cloud, first), times(cloud, second)) == (expected, expected)
    assert cloud.engine.clock.now_ms == TAKE_MS


class TestOngoingSnapshot:
    """``supportedByHypervisor``: KVM and VMware refuse a snapshot while another of the VM is ongoing; XenServer not."""

    def test_kvm_refuses_while_the_first_backs_up(self) -> None:
        """While a Ceph snapshot of the VM is BackingUp (its volume Ready again), a second one is refused; once the
        first is BackedUp the VM takes snapshots again."""
        cloud = Cloud()
        vm = cloud.vm("KVM")
        first = cloud.create(cloud.volume("kvm-rbd", vm=vm))
        other = cloud.volume("kvm-rbd", vm=vm)
        cloud.engine.run(until_ms=10_000)
        assert first.snapshot.status == "BackingUp"
        error = cloud.refused(other.id)
        assert (error.code, error.text) == (431, OTHER_SNAPSHOTS)
        cloud.engine.run()
        assert first.status == "SUCCEEDED"
        assert cloud.take(other).status == "SUCCEEDED"

    def test_xenserver_queues_a_second_snapshot(self) -> None:
        """XenServer is not checked: the second is accepted while the first backs up, and waits for the slot."""
        cloud = Cloud()
        vm = cloud.vm("XenServer")
        first = cloud.create(cloud.volume("xen-nfs", vm=vm))
        cloud.engine.run(until_ms=10_000)
        assert first.snapshot.status == "BackingUp"
        second = cloud.create(cloud.volume("xen-nfs", vm=vm))
        cloud.engine.run(until_ms=10_000)  # the dispatcher picks the API job up: its work job is queued
        assert second.work_state == ("IN_PROGRESS", "Queued")
        cloud.engine.run()
        assert (first.status, second.status) == ("SUCCEEDED", "SUCCEEDED")
        assert times(cloud, second)["slot"] == TAKE_MS

    def test_kvm_checks_only_at_create_time(self) -> None:
        """Two creates of one KVM volume before the clock moves both pass (the first is still Allocated); the
        queue then runs them one after the other."""
        cloud = Cloud()
        volume = cloud.volume("kvm-rbd")
        first, second = cloud.create(volume), cloud.create(volume)
        cloud.engine.run()
        assert (first.status, second.status) == ("SUCCEEDED", "SUCCEEDED")
        assert times(cloud, second)["slot"] == times(cloud, first)["done"] == TAKE_MS
        assert times(cloud, second)["backed up"] == 2 * TAKE_MS


@pytest.mark.violates("answer-matches-state", "counts-match-recount")
def test_two_snapshots_of_one_detached_volume() -> None:
    """No queue for a detached volume: the second job finds the volume Snapshotting and fails in the execute phase,
    keeping its Allocated snapshot and its counters (spec §5.2)."""
    cloud = Cloud()
    volume = cloud.volume("xen-nfs", vm=False)
    first, second = cloud.create(volume), cloud.create(volume)
    cloud.engine.run()
    assert first.status == "SUCCEEDED"
    assert second.error == (
        530,
        f"Failed to create Snapshot due to an internal error creating Snapshot for volume {volume.uuid}",
    )
    assert second.snapshot.status == "Allocated"
    assert [f[0] for f in second.failures()] == ["api.validate"]
    assert cloud.counts() == {"snapshot": 2, "primary_storage": 0, "secondary_storage": PHYSICAL + SIZE}
