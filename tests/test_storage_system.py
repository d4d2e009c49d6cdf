"""``StorageSystemSnapshotStrategy`` archiving a SECONDARY snapshot (spec §5.7, §5.9, §6.2).

``backupSnapshot`` archives only a SECONDARY snapshot: it needs a host (``getHost``), volume-from-snapshot support
and a compute cluster that supports resigning, then copies the snapshot to the image store. ``postSnapshotCreation``
then deletes it from primary storage (``snapshotSvr.deleteSnapshot``) on the job's thread, outside any transaction,
and only logs a failure. Post-processing then finds no Ready primary ref in the role it looks in, logs "Could not
find snapshot ... on [SECONDARY]" and writes no SNAPSHOT.CREATE.

The cloud: a XenServer cluster and host, a managed SolidFire pool in the cluster, an image store, a VHD volume
attached to a VM on the host.
"""

from __future__ import annotations

import json

import attrs
import pytest
from cloud import SIZE, new_engine

from snapshotfsm.drivers.base import FaultKind
from snapshotfsm.engine import Engine
from snapshotfsm.faults import FaultPlan
from snapshotfsm.store.records import (
    Account,
    AsyncJob,
    Failure,
    Host,
    ResourceCount,
    Snapshot,
    SnapshotStoreRef,
    StorageObject,
    UsageEvent,
    Volume,
    Workflow,
    Zone,
)

CRE = "com.cloud.utils.exception.CloudRuntimeException"
NO_RESIGN = "Cannot archive snapshot: 'computeClusterSupportsResign' was false."
KEPT_COUNTS = {"snapshot": 1, "primary_storage": 0, "secondary_storage": SIZE}
GIVEN_BACK = {"snapshot": 0, "primary_storage": 0, "secondary_storage": 0}


@attrs.define
class Archive:
    """A managed XenServer cloud and the snapshot taken with ``locationtype=secondary``."""

    engine: Engine
    zone: Zone
    alice: Account
    volume: Volume
    job_id: int = 0

    @classmethod
    def build(cls, faults: FaultPlan | None = None, *, resign: bool = True, vm_host: bool = True) -> Archive:
        """The cloud; ``resign`` is the cluster's "supports resigning"; without ``vm_host`` the VM has no host."""
        e = new_engine(faults)
        zone = e.add_zone("zone1")
        e.add_image_store(zone, "secondary1")
        cluster = e.add_cluster(zone, "xen", hypervisor="XenServer", supports_resign=resign)
        host = e.add_host(cluster, "xen-host")
        pool = e.add_pool(zone, "sf", pool_type="Iscsi", provider="SolidFire", managed=True, cluster=cluster)
        alice = e.add_account("alice")
        vm = e.add_vm(alice, zone, "vm", hypervisor="XenServer", host=host if vm_host else None)
        volume = e.add_volume(alice, pool, "data", size=SIZE, vm=vm, format="VHD")
        return cls(e, zone, alice, volume)

    def take(self, **kwargs: object) -> Archive:
        """createSnapshot with locationtype secondary, run until idle."""
        job = self.engine.create_snapshot(self.volume.id, location_type="secondary", **kwargs)  # type: ignore[arg-type]
        self.job_id = job.id
        self.engine.run()
        return self

    @property
    def status(self) -> str:
        return self.engine.job_status(self.job_id)

    @property
    def snapshot(self) -> Snapshot:
        return self.engine.get(Snapshot, self.engine.get(AsyncJob, self.job_id).instance_id or 0)

    def refs(self) -> list[tuple[str, str]]:
        rows = self.engine.store.find(SnapshotStoreRef, "snapshot_id = ?", (self.snapshot.id,))
        return [(r.store_role, r.state) for r in rows]

    def on_storage(self) -> list[tuple[str, bool]]:
        rows = self.engine.store.find(StorageObject, "snapshot_id = ?", (self.snapshot.id,))
        return [(o.store_kind, o.deleted_ms is None) for o in rows]

    def usage(self) -> list[str]:
        return [u.type for u in self.engine.store.find(UsageEvent, "resource_id = ?", (self.snapshot.id,))]

    def counts(self) -> dict[str, int]:
        return {r.type: r.count for r in self.engine.store.find(ResourceCount, "account_id = ?", (self.alice.id,))}

    def take_context(self) -> dict[str, object]:
        row = self.engine.store.first(Workflow, "machine = 'take_snapshot' AND job_id = ?", (self.job_id,))
        assert row is not None
        context: dict[str, object] = json.loads(row.context)
        return context

    def primary_log(self) -> list[tuple[str, str, str, int]]:
        """The primary ref's moves: (source, event, dest, at_ms)."""
        rows = self.engine.history(machine="snapshot_store_ref", entity_id=1)
        return [(r.source, r.event, r.dest, r.at_ms) for r in rows]


class TestDeleteFromPrimary:
    """``postSnapshotCreation`` of a SECONDARY snapshot deletes it from primary storage after the backup."""

    @pytest.mark.violates("counts-match-recount", "usage-matches-objects")
    def test_the_primary_ref_is_destroyed_and_create_usage_is_skipped(self) -> None:
        """Backed up, deleted from the array; post-processing fails to find a Ready ref and only logs it."""
        cloud = Archive.build().take()
        snapshot = cloud.snapshot
        assert cloud.status == "SUCCEEDED"
        assert (snapshot.status, snapshot.location_type, snapshot.removed) == ("BackedUp", "SECONDARY", None)
        assert cloud.refs() == [("Primary", "Destroyed"), ("Image", "Ready")]
        assert cloud.on_storage() == [("primary", False), ("image", True)]
        assert cloud.usage() == ["SNAPSHOT.ON_PRIMARY"]
        assert cloud.counts() == KEPT_COUNTS
        failed = str(cloud.take_context()["post_process_failed"])
        assert failed.startswith(f"{CRE}: Could not find snapshot Snapshot {{")
        assert failed.endswith("} on [SECONDARY]")

    @pytest.mark.violates("counts-match-recount", "usage-matches-objects")
    def test_the_delete_blocks_the_job_thread_rather_than_waiting_on_the_clock(self) -> None:
        """The driver's delete is waited for on the caller's thread: both moves of the ref at the same instant."""
        cloud = Archive.build().take()
        assert [row[:3] for row in cloud.primary_log()[-2:]] == [
            ("Ready", "DestroyRequested", "Destroying"),
            ("Destroying", "OperationSucceeded", "Destroyed"),
        ]
        assert cloud.primary_log()[-2][3] == cloud.primary_log()[-1][3]

    @pytest.mark.violates("counts-match-recount", "usage-matches-objects")
    @pytest.mark.parametrize("kind", ["error", "exception", "null_answer"])
    def test_a_failed_delete_is_only_logged(self, kind: FaultKind) -> None:
        """The ref stays Destroying (for the storage GC), the file stays, the job succeeds."""
        cloud = Archive.build(FaultPlan().fail("managed.deleteAsync", kind=kind)).take()
        assert cloud.status == "SUCCEEDED"
        assert cloud.snapshot.status == "BackedUp"
        assert cloud.refs() == [("Primary", "Destroying"), ("Image", "Ready")]
        assert cloud.on_storage() == [("primary", True), ("image", True)]
        assert cloud.usage() == ["SNAPSHOT.ON_PRIMARY"]
        assert cloud.engine.store.find(Failure) == []

    @pytest.mark.violates("answer-matches-state", "counts-match-recount", "usage-matches-objects")
    def test_a_delete_that_never_answers_blocks_the_job_for_good(self) -> None:
        """No answer: the job's thread waits for good; nothing is left pending, the job stays IN_PROGRESS."""
        cloud = Archive.build(FaultPlan().fail("managed.deleteAsync", kind="no_answer")).take()
        assert cloud.status == "IN_PROGRESS"
        assert cloud.engine.scheduler.pending() == []
        assert cloud.snapshot.status == "BackedUp"
        assert cloud.refs() == [("Primary", "Destroying"), ("Image", "Ready")]
        assert cloud.usage() == ["SNAPSHOT.ON_PRIMARY"]
        workflow = cloud.engine.store.first(Workflow, "machine = 'take_snapshot'")
        assert workflow is not None
        assert workflow.state == "BackedUp"

    @pytest.mark.violates("counts-match-recount", "no-negative-count", "usage-matches-objects")
    def test_the_async_backup_task_deletes_too(self) -> None:
        """With asyncbackup the task's postSnapshotCreation deletes it; the job's post-processing came first."""
        cloud = Archive.build().take(async_backup=True)
        assert cloud.status == "SUCCEEDED"
        assert cloud.refs() == [("Primary", "Destroyed"), ("Image", "Ready")]
        assert cloud.usage() == ["SNAPSHOT.ON_PRIMARY", "SNAPSHOT.CREATE"]


class TestResignCheck:
    """``backupSnapshot`` of a SECONDARY snapshot needs a compute cluster that supports resigning."""

    @pytest.mark.violates("answer-matches-state", "counts-match-recount")
    def test_no_resign_fails_the_take_before_the_backup(self) -> None:
        """The outer catch gives the counts back; the snapshot stays CreatedOnPrimary on the array; 530."""
        cloud = Archive.build(resign=False).take()
        assert cloud.status == "FAILED"
        assert cloud.engine.get(AsyncJob, cloud.job_id).job_result_code == 530
        assert cloud.snapshot.status == "CreatedOnPrimary"
        assert cloud.refs() == [("Primary", "Ready")]
        assert cloud.counts() == GIVEN_BACK
        failures = [(f.step, f.message) for f in cloud.engine.store.find(Failure)]
        assert failures == [("backup.choose", NO_RESIGN)]

    @pytest.mark.violates("counts-match-recount", "usage-matches-objects")
    def test_another_xenserver_cluster_that_resigns_is_enough(self) -> None:
        """getHost looks first for any XenServer cluster of the zone that supports resigning and has a host."""
        cloud = Archive.build(resign=False)
        other = cloud.engine.add_cluster(cloud.zone, "xen-2", hypervisor="XenServer", supports_resign=True)
        cloud.engine.add_host(other, "xen-host-2")
        assert cloud.take().status == "SUCCEEDED"
        assert cloud.refs() == [("Primary", "Destroyed"), ("Image", "Ready")]

    @pytest.mark.violates("answer-matches-state", "counts-match-recount")
    def test_a_resigning_cluster_without_a_host_does_not_count(self) -> None:
        """A cluster with no host is passed over: the VM's host's cluster decides."""
        cloud = Archive.build(resign=False)
        cloud.engine.add_cluster(cloud.zone, "xen-2", hypervisor="XenServer", supports_resign=True)
        assert cloud.take().status == "FAILED"

    @pytest.mark.violates("answer-matches-state", "counts-match-recount")
    def test_no_host_at_all(self) -> None:
        """No host in a XenServer cluster of the zone and none for the VM: "Unable to locate an applicable host"."""
        cloud = Archive.build(vm_host=False)
        for host in cloud.engine.store.find(Host):
            cloud.engine.store.remove(host, by="test")
        cloud.take()
        assert cloud.status == "FAILED"
        failures = [(f.step, f.message) for f in cloud.engine.store.find(Failure)]
        assert failures == [("backup.choose", "Unable to locate an applicable host")]
