"""A small cloud for the lifecycle tests (async backup, delete, policies, restart, GC), and readers for them.

:class:`Cloud` builds one zone with an image store, accounts ``alice``, ``bob`` and root admin ``root``, and the
cluster, host and pool of each shape a test asks for; ``cloud.take(volume)`` calls ``createSnapshot`` and runs the
simulated clock until idle. The readers below read back a snapshot's whole life: a job's answer as a user reads it,
the snapshot row by id, its refs, what storage still holds, usage events and counters.
"""

from __future__ import annotations

import json

import attrs

from snapshotfsm.drivers.base import FaultPlan
from snapshotfsm.engine import Engine
from snapshotfsm.profiles import Profile
from snapshotfsm.store.records import (
    Account,
    AsyncJob,
    Cluster,
    Host,
    ResourceCount,
    Snapshot,
    SnapshotDetail,
    SnapshotStoreRef,
    StorageObject,
    StoragePool,
    TransitionLog,
    UsageEvent,
    VmInstance,
    VmWorkJob,
    Volume,
    Workflow,
    Zone,
)

GIB = 1 << 30
SIZE = 10 * GIB
"""The volume size; the simulated drivers fill half of it, so a snapshot's physical size is PHYSICAL."""
PHYSICAL = SIZE // 2


@attrs.frozen
class Shape:
    """Where a volume lives: its VM's hypervisor, its pool (type, provider, managed, zone-wide) and its format."""

    hypervisor: str
    pool_type: str
    provider: str = "DefaultPrimary"
    managed: bool = False
    format: str = "QCOW2"
    zone_wide: bool = False


SHAPES: dict[str, Shape] = {
    "xen-nfs": Shape("XenServer", "NetworkFilesystem", format="VHD"),
    "kvm-nfs": Shape("KVM", "NetworkFilesystem"),
    "storpool": Shape("KVM", "StorPool", provider="StorPool", format="RAW"),
    "solidfire": Shape("KVM", "Iscsi", provider="SolidFire", managed=True, zone_wide=True),
}


class Cloud:
    """One zone with an image store and three accounts; a cluster, host and pool per shape, made on first use."""

    def __init__(
        self,
        *,
        faults: FaultPlan | None = None,
        profile: str | Profile = "cloudstack",
        config: dict[str, object] | None = None,
    ) -> None:
        self.faults = faults if faults is not None else FaultPlan()
        e = self.engine = Engine.open(":memory:", faults=self.faults, profile=profile)
        if config:
            for name, value in config.items():
                e.set_config(name, value)
            e.restart()  # non-dynamic keys are read when a server starts
        self.zone: Zone = e.add_zone("zone1")
        e.add_image_store(self.zone, "secondary1")
        self.alice = e.add_account("alice")
        self.bob = e.add_account("bob")
        self.root = e.add_account("root", admin=True)
        self.clusters: dict[str, Cluster] = {}
        self.hosts: dict[str, Host] = {}
        self.pools: dict[str, StoragePool] = {}
        self._names = 0

    def _name(self, prefix: str) -> str:
        self._names += 1
        return f"{prefix}{self._names}"

    def host(self, hypervisor: str) -> Host:
        """The one Up host of ``hypervisor``'s cluster."""
        if hypervisor not in self.clusters:
            cluster = self.engine.add_cluster(self.zone, f"{hypervisor.lower()}-cluster", hypervisor=hypervisor)
            self.clusters[hypervisor] = cluster
            self.hosts[hypervisor] = self.engine.add_host(cluster, f"{hypervisor.lower()}-host")
        return self.hosts[hypervisor]

    def pool(self, shape: str) -> StoragePool:
        """The pool of ``shape``: in its hypervisor's cluster, or zone-wide with hypervisor Any."""
        if shape not in self.pools:
            s = SHAPES[shape]
            self.host(s.hypervisor)
            self.pools[shape] = self.engine.add_pool(
                self.zone,
                shape,
                pool_type=s.pool_type,
                provider=s.provider,
                managed=s.managed,
                cluster=None if s.zone_wide else self.clusters[s.hypervisor],
                hypervisor="Any" if s.zone_wide else None,
            )
        return self.pools[shape]

    def vm(self, shape: str, *, account: Account | None = None) -> VmInstance:
        """A Running VM of ``account`` (default alice) on the host of ``shape``'s hypervisor."""
        hypervisor = SHAPES[shape].hypervisor
        return self.engine.add_vm(
            account or self.alice, self.zone, self._name("vm"), hypervisor=hypervisor, host=self.host(hypervisor)
        )

    def volume(self, shape: str, *, vm: bool | VmInstance = True, account: Account | None = None) -> Volume:
        """A volume of ``account`` (default alice) on ``shape``'s pool: on ``vm``, on a new VM (True), or detached."""
        s = SHAPES[shape]
        owner = account or self.alice
        instance = self.vm(shape, account=owner) if vm is True else (vm or None)
        return self.engine.add_volume(
            owner, self.pool(shape), self._name("vol"), size=SIZE, vm=instance, format=s.format
        )

    def create(self, volume: Volume, **kwargs: object) -> Taken:
        """``createSnapshot`` of ``volume`` (the create phase only)."""
        job = self.engine.create_snapshot(volume.id or 0, **kwargs)  # type: ignore[arg-type]
        return Taken(self.engine, job.id or 0)

    def take(self, volume: Volume, **kwargs: object) -> Taken:
        """``createSnapshot`` of ``volume``, then run the clock until nothing is pending."""
        taken = self.create(volume, **kwargs)
        self.engine.run()
        return taken

    def counts(self, account: Account | None = None) -> dict[str, int]:
        """The ``resource_count`` rows of ``account`` (default alice) by type."""
        return counts(self.engine, (account or self.alice).id or 0)


@attrs.define
class Taken:
    """One createSnapshot call, read back."""

    engine: Engine
    job_id: int

    @property
    def job(self) -> AsyncJob:
        """The API job."""
        return self.engine.get(AsyncJob, self.job_id)

    @property
    def status(self) -> str:
        """The API job's status name."""
        return self.engine.job_status(self.job_id)

    @property
    def snapshot(self) -> Snapshot:
        """The snapshot row (removed or not)."""
        return self.engine.get(Snapshot, self.job.instance_id or 0)

    @property
    def volume(self) -> Volume:
        """The snapshot's volume."""
        return self.engine.get(Volume, self.snapshot.volume_id)

    @property
    def work_state(self) -> tuple[str, str] | None:
        """The work job's status and its ``vm_work_job`` state, if the call went through the VM's queue."""
        work = self.engine.store.first(AsyncJob, "related = ?", (str(self.job_id),))
        if work is None:
            return None
        return self.engine.job_status(work.id or 0), self.engine.get(VmWorkJob, work.id or 0).state

    def ref(self, role: str) -> SnapshotStoreRef:
        """The snapshot's one ref of ``role``."""
        rows = self.engine.store.find(SnapshotStoreRef, "snapshot_id = ? AND store_role = ?", (self.snapshot.id, role))
        assert len(rows) == 1, f"expected one {role} ref, found {rows}"
        return rows[0]

    def objects(self, store_kind: str) -> list[StorageObject]:
        """Objects of this snapshot present on ``primary`` or ``image`` storage."""
        return self.engine.store.find(
            StorageObject, "snapshot_id = ? AND store_kind = ? AND deleted_ms IS NULL", (self.snapshot.id, store_kind)
        )

    def usage(self) -> list[tuple[str, int | None, int | None]]:
        """The snapshot's usage events: (type, size, virtual_size)."""
        rows = self.engine.store.find(UsageEvent, "resource_id = ? AND resource_type = 'Snapshot'", (self.snapshot.id,))
        return [(u.type, u.size, u.virtual_size) for u in rows]


CANCELLED = "job cancelled because of management server restart or shutdown"
"""``job_result`` of a job that ``cleanupLeftOverJobs`` failed (spec §10.1)."""


def answer(engine: Engine, job_id: int) -> tuple[str, int, str | None]:
    """A job's status, result code and the text a user reads: the error text, or the raw result otherwise.

    ``job_result`` is ``<response class>/<name>/<json>``; an ``ExceptionResponse`` shows its ``errortext``, a
    cancelled job its plain text.
    """
    job = engine.get(AsyncJob, job_id)
    text = job.job_result
    if text is not None and text.split("/", 1)[0].endswith(".ExceptionResponse"):
        text = json.loads(text.split("/", 2)[2])["errortext"]
    return engine.job_status(job_id), job.job_result_code, text


def delete(cloud: Cloud, snapshot_id: int, **kwargs: object) -> tuple[str, int, str | None]:
    """``deleteSnapshot`` through the API, run until idle; the job's :func:`answer`."""
    job = cloud.engine.delete_snapshot(snapshot_id, **kwargs)  # type: ignore[arg-type]
    cloud.engine.run()
    return answer(cloud.engine, job.id or 0)


def snapshot(engine: Engine, snapshot_id: int) -> tuple[str, bool]:
    """A snapshot row's status and whether it is soft-removed."""
    row = engine.get(Snapshot, snapshot_id)
    return row.status, row.removed is not None


def refs(engine: Engine, snapshot_id: int) -> list[tuple[str, str]]:
    """The snapshot's store refs still in the table: (role, state), by id."""
    rows = engine.store.find(SnapshotStoreRef, "snapshot_id = ?", (snapshot_id,))
    return [(r.store_role, r.state) for r in rows]


def details(engine: Engine, snapshot_id: int) -> dict[str, str]:
    """The snapshot's ``snapshot_details`` by name."""
    return {d.name: d.value for d in engine.store.find(SnapshotDetail, "snapshot_id = ?", (snapshot_id,))}


def stored(engine: Engine, snapshot_id: int) -> list[tuple[str, bool]]:
    """What storage holds or held for the snapshot (``sim_object``): (store kind, still present), by id."""
    rows = engine.store.find(StorageObject, "snapshot_id = ?", (snapshot_id,))
    return [(o.store_kind, o.deleted_ms is None) for o in rows]


def usage(engine: Engine, snapshot_id: int) -> list[tuple[str, int, int | None]]:
    """The snapshot's usage events: (type, zone, size)."""
    rows = engine.store.find(UsageEvent, "resource_id = ? AND resource_type = 'Snapshot'", (snapshot_id,))
    return [(u.type, u.zone_id, u.size) for u in rows]


def counts(engine: Engine, account_id: int) -> dict[str, int]:
    """An account's ``resource_count`` rows by type."""
    rows = engine.store.find(ResourceCount, "account_id = ?", (account_id,))
    return {r.type: r.count for r in rows}


def jobs(engine: Engine) -> list[tuple[str, str, int]]:
    """Every async job: (command's class name, status, result code), by id."""
    return [
        (j.job_cmd.rsplit(".", 1)[-1], engine.job_status(j.id or 0), j.job_result_code)
        for j in engine.store.find(AsyncJob)
    ]


def work_jobs(engine: Engine) -> list[tuple[int, str]]:
    """The ``vm_work_job`` rows left: (id, state)."""
    return [(w.id or 0, w.state) for w in engine.store.find(VmWorkJob)]


def snapshot_log(engine: Engine, snapshot_id: int, *, since: int = 0) -> list[tuple[str, str, str, str]]:
    """The snapshot row's transitions after log row ``since``: (kind, source, event, dest)."""
    rows = engine.store.find(TransitionLog, "machine = 'snapshot' AND entity_id = ? AND id > ?", (snapshot_id, since))
    return [(r.kind, r.source, r.event, r.dest) for r in rows]


def workflows(engine: Engine, machine: str) -> list[Workflow]:
    """The rows of one workflow machine, by id."""
    return engine.store.find(Workflow, "machine = ?", (machine,))


def second_zone(cloud: Cloud, name: str = "zone2") -> Zone:
    """Another Core zone with its own image store."""
    zone = cloud.engine.add_zone(name)
    cloud.engine.add_image_store(zone, f"{name}-secondary")
    return zone
