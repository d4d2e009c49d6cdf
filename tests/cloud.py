"""A small cloud for tests, and readers for what a test asserts after a run.

:data:`SHAPES` names the ways a volume can be hosted (hypervisor, pool type, provider, format); :class:`Cloud` builds
one zone with an image store, three accounts (``alice``, ``bob``, root admin ``root``) and, on first use, the
cluster, host and pool of each shape a test asks for. ``cloud.take(volume)`` calls ``createSnapshot``, runs the
simulated clock until idle and returns a :class:`Taken`, which reads back what a user would look at: the snapshot,
its store refs, the jobs, the entity machines' transition log, usage events and failures.
"""

from __future__ import annotations

import functools
import json
from typing import Any

import attrs
import pytest
import sqlite_utils

from snapshotfsm.clock import SimClock
from snapshotfsm.definitions import project_definitions
from snapshotfsm.engine import Engine
from snapshotfsm.errors import ApiError
from snapshotfsm.faults import FaultPlan
from snapshotfsm.profiles import Profile, get_profile
from snapshotfsm.store.records import (
    DEFAULT_CHURN_FRACTION,
    Account,
    ActionEvent,
    Alert,
    AsyncJob,
    Cluster,
    Failure,
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
from snapshotfsm.store.schema import create_schema
from snapshotfsm.store.store import Store

GIB = 1 << 30
SIZE = 10 * GIB
"""The default volume size; the simulated drivers fill half of it, so a snapshot's physical size is SIZE // 2."""
PHYSICAL = SIZE // 2
DELTA = SIZE // DEFAULT_CHURN_FRACTION
"""A XenServer delta on secondary storage: what changed of the volume since its parent (the default churn)."""


@attrs.frozen
class Shape:
    """Where a volume lives: its VM's hypervisor, its pool (type, provider, managed, scope) and its format."""

    hypervisor: str
    pool_type: str
    provider: str = "DefaultPrimary"
    managed: bool = False
    format: str = "QCOW2"
    zone_wide: bool = False
    """A zone-wide pool with hypervisor ``Any`` (managed storage), instead of a pool of the hypervisor's cluster."""


SHAPES: dict[str, Shape] = {
    "xen-nfs": Shape("XenServer", "NetworkFilesystem", format="VHD"),
    "kvm-nfs": Shape("KVM", "NetworkFilesystem"),
    "kvm-smp": Shape("KVM", "SharedMountPoint"),
    "kvm-rbd": Shape("KVM", "RBD", format="RAW"),
    "kvm-clvm": Shape("KVM", "CLVM", format="RAW"),
    "vmware-nfs": Shape("VMware", "NetworkFilesystem", format="OVA"),
    "ovm-nfs": Shape("Ovm", "NetworkFilesystem", format="RAW"),
    "storpool": Shape("KVM", "StorPool", provider="StorPool", format="RAW"),
    "powerflex": Shape("KVM", "PowerFlex", provider="PowerFlex", managed=True, format="RAW"),
    "solidfire": Shape("KVM", "Iscsi", provider="SolidFire", managed=True, zone_wide=True),
    "solidfire-cluster": Shape("KVM", "Iscsi", provider="SolidFire", managed=True),
    "ontap": Shape("KVM", "Iscsi", provider="NetApp ONTAP", managed=True, zone_wide=True),
}
"""Pool types, providers and the managed flag are what CloudStack's lifecycles set: PowerFlex, SolidFire (Iscsi) and
ONTAP pools are managed, StorPool, RBD and the file-based pools are not."""
ENTITY_MACHINES = ("volume", "snapshot", "snapshot_store_ref", "async_job", "vm_work_job")
MODEL_TABLES = (Workflow.table, Failure.table)
"""The model's own records of its runs: workflow rows and their failures."""


@functools.cache
def _empty_schema() -> sqlite_utils.Database:
    db = sqlite_utils.Database(memory=True)
    create_schema(db)
    return db


def new_engine(faults: FaultPlan | None = None, profile: str | Profile = "cloudstack") -> Engine:
    """``Engine.open(":memory:", faults=..., profile=...)``, with the empty schema copied, not created (twice faster).

    ``test_take_happy.test_the_cloud_engine_is_a_fresh_engine`` checks that both give the same database.
    """
    db = sqlite_utils.Database(memory=True)
    _empty_schema().conn.backup(db.conn)
    store = Store(
        db,
        path=":memory:",
        ms_id=1,
        clock=SimClock(),
        profile=get_profile(profile),
        definitions=project_definitions(),
    )
    return Engine(store, faults=faults)


class Cloud:
    """One zone, an image store, accounts; clusters, hosts and pools made on first use, one per shape.

    ``config`` is set before anything runs, as if the management server had started with it.
    """

    def __init__(
        self,
        *,
        faults: FaultPlan | None = None,
        profile: str | Profile = "cloudstack",
        zone_type: str = "Core",
        image_store: bool = True,
        config: dict[str, object] | None = None,
    ) -> None:
        self.faults = faults if faults is not None else FaultPlan()
        e = self.engine = new_engine(self.faults, profile)
        if config:
            # Non-dynamic keys (snapshot.backup.to.secondary) are read when a server starts: set, then restart.
            for name, value in config.items():
                e.set_config(name, value)
            e.restart()
        self.zone: Zone = e.add_zone("zone1", type=zone_type)
        if image_store:
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

    def cluster(self, hypervisor: str) -> Cluster:
        """The cluster of ``hypervisor``, with one Up host."""
        if hypervisor not in self.clusters:
            cluster = self.engine.add_cluster(self.zone, f"{hypervisor.lower()}-cluster", hypervisor=hypervisor)
            self.clusters[hypervisor] = cluster
            self.hosts[hypervisor] = self.engine.add_host(cluster, f"{hypervisor.lower()}-host")
        return self.clusters[hypervisor]

    def host(self, hypervisor: str) -> Host:
        """The host of ``hypervisor``'s cluster."""
        self.cluster(hypervisor)
        return self.hosts[hypervisor]

    def pool(self, shape: str) -> StoragePool:
        """The pool of ``shape``: in its hypervisor's cluster, or zone-wide with hypervisor Any."""
        if shape not in self.pools:
            s = SHAPES[shape]
            cluster = self.cluster(s.hypervisor)
            self.pools[shape] = self.engine.add_pool(
                self.zone,
                shape,
                pool_type=s.pool_type,
                provider=s.provider,
                managed=s.managed,
                cluster=None if s.zone_wide else cluster,
                hypervisor="Any" if s.zone_wide else None,
            )
        return self.pools[shape]

    def vm(
        self, hypervisor: str = "KVM", *, state: str = "Running", account: Account | None = None, **kwargs: object
    ) -> VmInstance:
        """A VM of ``account`` (default alice) on the host of ``hypervisor``."""
        return self.engine.add_vm(
            account or self.alice,
            self.zone,
            self._name("vm"),
            hypervisor=hypervisor,
            state=state,
            host=self.host(hypervisor),
            **kwargs,  # type: ignore[arg-type]
        )

    def volume(
        self,
        shape: str,
        *,
        vm: VmInstance | bool = True,
        size: int = SIZE,
        account: Account | None = None,
        vm_state: str = "Running",
        **kwargs: object,
    ) -> Volume:
        """A volume on ``shape``'s pool: attached to ``vm``, to a new VM (True) or detached (False)."""
        s = SHAPES[shape]
        owner = account or self.alice
        if vm is True:
            vm = self.vm(s.hypervisor, state=vm_state, account=owner)
        return self.engine.add_volume(
            owner,
            self.pool(shape),
            self._name("vol"),
            size=size,
            vm=vm or None,
            format=str(kwargs.pop("format", s.format)),
            **kwargs,  # type: ignore[arg-type]
        )

    def create(self, volume: Volume, **kwargs: object) -> Taken:
        """``createSnapshot`` of ``volume`` (the create phase only); the log from here on belongs to the result."""
        mark = self.engine.store.count(TransitionLog)
        job = self.engine.create_snapshot(volume.id, **kwargs)  # type: ignore[arg-type]
        return Taken(self.engine, job.id, mark)

    def take(self, volume: Volume, **kwargs: object) -> Taken:
        """``createSnapshot`` of ``volume``, then run the clock until nothing is pending."""
        taken = self.create(volume, **kwargs)
        self.engine.run()
        return taken

    def counts(self, account: Account | None = None) -> dict[str, int]:
        """The account's ``resource_count`` rows (default alice): snapshot, primary_storage, secondary_storage."""
        rows = self.engine.store.find(ResourceCount, "account_id = ?", ((account or self.alice).id,))
        return {r.type: r.count for r in rows}

    def dump(self) -> str:
        """The whole database as SQL, to show that a call wrote nothing."""
        return "\n".join(self.engine.store.conn.iterdump())

    def cloudstack_rows(self) -> dict[str, list[tuple[object, ...]]]:
        """Every row of CloudStack's tables, by table: the database less the model's records of its own runs.

        Those are the ``workflow`` and ``failure`` tables and the workflow machines' rows of ``transition_log``; a
        refused createSnapshot keeps its take workflow (``Rejected``) and its failure there. ``sqlite_sequence``
        (the AUTOINCREMENT counters) moves with those rows too, so it is left out.
        """
        conn = self.engine.store.conn
        workflows = sorted(name for name, d in project_definitions().items() if d.kind == "workflow")
        marks = ", ".join("?" * len(workflows))
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
        rows: dict[str, list[tuple[object, ...]]] = {}
        for table in tables:
            if table in MODEL_TABLES or table == "sqlite_sequence":
                continue
            if table == TransitionLog.table:
                query = f'SELECT * FROM "{table}" WHERE machine NOT IN ({marks}) ORDER BY id'
                rows[table] = conn.execute(query, workflows).fetchall()
            else:
                rows[table] = conn.execute(f'SELECT * FROM "{table}" ORDER BY id').fetchall()
        return rows

    def refused(self, volume_id: int, *, intercepted: bool = True, **kwargs: object) -> ApiError:
        """Call createSnapshot expecting a create-phase refusal; assert what it leaves (spec §5.1, §21.2).

        CloudStack's rows are unchanged but for ``allocSnapshot``'s ERROR Created event, the calling user's and
        account's, naming no snapshot (``intercepted``: the refusal came from inside ``allocSnapshot``, not from an
        argument of the call); the take workflow is ``Rejected`` with one failure, the exception the API reports.
        An alert, if any, is for the caller to check.
        """
        mark = self.engine.store.count(ActionEvent)
        before = self.cloudstack_rows()
        with pytest.raises(ApiError) as info:
            self.engine.create_snapshot(volume_id, **kwargs)  # type: ignore[arg-type]
        error = info.value
        after = self.cloudstack_rows()
        for table in (ActionEvent.table, Alert.table):
            del before[table], after[table]
        assert after == before, "a refused createSnapshot wrote CloudStack rows"
        caller = kwargs.get("caller")
        caller_id = caller.id if isinstance(caller, Account) else self.engine.get(Volume, volume_id).account_id
        text = "Error while creating entity for allocating snapshot"
        expected = [("Created", "ERROR", caller_id, caller_id, None, text)] if intercepted else []
        assert action_events(self.engine, "SNAPSHOT.CREATE", after=mark) == expected
        run = self.engine.store.find(Workflow, "machine = 'take_snapshot'")[-1]
        failures = self.engine.store.find(Failure, "workflow_id = ?", (run.id,))
        exc = error.exception
        assert (run.state, [(f.step, f.exc_type, f.message) for f in failures]) == (
            "Rejected",
            [("api.allocate", exc.java_name, exc.message)],
        )
        return error


def action_events(
    engine: Engine, event_type: str, *, after: int = 0
) -> list[tuple[str, str, int, int, int | None, str]]:
    """Action events of ``event_type`` with an id above ``after``: (state, level, user, account, resource, text)."""
    rows = engine.store.find(ActionEvent, "type = ? AND id > ?", (event_type, after))
    return [(e.state, e.level, e.user_id, e.account_id, e.resource_id, e.description) for e in rows]


@attrs.define
class Taken:
    """One createSnapshot call and what it left in the database."""

    engine: Engine
    job_id: int
    log_from: int

    @property
    def job(self) -> AsyncJob:
        """The API job."""
        return self.engine.get(AsyncJob, self.job_id)

    @property
    def status(self) -> str:
        """The API job's status name."""
        return self.engine.job_status(self.job_id)

    @property
    def result(self) -> tuple[str, int, str | None]:
        """The API job's status, ``job_result_code`` and ``job_result``."""
        job = self.job
        return self.status, job.job_result_code, job.job_result

    @property
    def error(self) -> tuple[int, str]:
        """The failed API job's ``errorcode`` and ``errortext`` (its ``job_result`` is an ExceptionResponse)."""
        body = self._result_body("org.apache.cloudstack.api.response.ExceptionResponse/null/")
        assert body["errorcode"] == self.job.job_result_code
        return body["errorcode"], body["errortext"]

    @property
    def response(self) -> dict[str, object]:
        """The succeeded API job's SnapshotResponse."""
        return self._result_body("org.apache.cloudstack.api.response.SnapshotResponse/snapshot/")

    def _result_body(self, prefix: str) -> dict[str, Any]:
        result = self.job.job_result or ""
        assert result.startswith(prefix), f"job {self.job_id} result is {result!r}, expected {prefix}..."
        body: dict[str, Any] = json.loads(result.removeprefix(prefix))
        return body

    @property
    def snapshot(self) -> Snapshot:
        """The snapshot row (removed or not)."""
        return self.engine.get(Snapshot, self.job.instance_id or 0)

    @property
    def volume(self) -> Volume:
        """The snapshot's volume."""
        return self.engine.get(Volume, self.snapshot.volume_id)

    @property
    def work_job(self) -> AsyncJob | None:
        """The VmWorkTakeVolumeSnapshot work job, if the call went through the VM's queue."""
        return self.engine.store.first(AsyncJob, "related = ?", (str(self.job_id),))

    @property
    def work_state(self) -> tuple[str, str] | None:
        """The work job's status and its ``vm_work_job`` state."""
        work = self.work_job
        if work is None:
            return None
        return self.engine.job_status(work.id), self.engine.get(VmWorkJob, work.id).state

    @property
    def work_result(self) -> str | None:
        """The work job's ``job_result``: the marshalled exception (``<class>:<message>``) or snapshot id."""
        work = self.work_job
        return None if work is None else work.job_result

    def refs(self) -> list[tuple[str, str, str | None]]:
        """The snapshot's store refs still in the table: (role, state, install_path)."""
        rows = self.engine.store.find(SnapshotStoreRef, "snapshot_id = ?", (self.snapshot.id,))
        return [(r.store_role, r.state, r.install_path) for r in rows]

    def ref(self, role: str) -> SnapshotStoreRef:
        """The snapshot's one ref of ``role`` (Primary or Image)."""
        rows = self.engine.store.find(SnapshotStoreRef, "snapshot_id = ? AND store_role = ?", (self.snapshot.id, role))
        assert len(rows) == 1, f"expected one {role} ref, found {rows}"
        return rows[0]

    def details(self) -> dict[str, str]:
        """The snapshot's ``snapshot_details``, by name."""
        rows = self.engine.store.find(SnapshotDetail, "snapshot_id = ?", (self.snapshot.id,))
        return {d.name: d.value for d in rows}

    def usage(self) -> list[tuple[str, int | None, int | None]]:
        """The snapshot's usage events: (type, size, virtual_size).

        A snapshot's usage events are told apart by their type (``SNAPSHOT.*``): upstream leaves ``resource_type``
        NULL on them (spec §5.10).
        """
        rows = self.engine.store.find(UsageEvent, "resource_id = ? AND type LIKE 'SNAPSHOT.%'", (self.snapshot.id,))
        return [(u.type, u.size, u.virtual_size) for u in rows]

    def failures(self) -> list[tuple[str, str, str]]:
        """Failed steps of the take workflow: (step, exception class, message)."""
        rows = self.engine.store.find(Failure, "job_id = ?", (self.job_id,))
        return [(f.step, f.exc_type.rsplit(".", 1)[-1], f.message) for f in rows]

    def objects(self, store_kind: str) -> list[StorageObject]:
        """Objects of this snapshot present on ``primary`` or ``image`` storage."""
        return self.engine.store.find(
            StorageObject,
            "snapshot_id = ? AND store_kind = ? AND deleted_ms IS NULL",
            (self.snapshot.id, store_kind),
        )

    def rows(self) -> list[TransitionLog]:
        """Every transition logged since the call, the workflow machines' included."""
        return self.engine.store.find(TransitionLog, "id > ?", (self.log_from,))

    def log(self, *machines: str) -> list[tuple[str, int, str, str, str]]:
        """The entity machines' transitions since the call: (machine, entity id, source, event, dest).

        Only ``machines`` when given. Creations have event ``create`` (source ""), soft deletes the CloudStack
        method that removes the row (kind ``remove``), row deletes the method (dest ""), and CloudStack's direct
        state writes the method that does them (kind ``direct``); :meth:`kinds` tells them apart.
        """
        wanted = machines or ENTITY_MACHINES
        return [(r.machine, r.entity_id, r.source, r.event, r.dest) for r in self.rows() if r.machine in wanted]

    def kinds(self, machine: str) -> list[tuple[str, str, str]]:
        """One machine's transitions since the call: (kind, event, dest)."""
        return [(r.kind, r.event, r.dest) for r in self.rows() if r.machine == machine]
