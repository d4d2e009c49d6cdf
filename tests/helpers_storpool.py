"""Two-zone clouds for the copy tests: StorPool clusters in zones A and B, and a XenServer cloud with three zones.

:class:`StorPoolCloud` builds zone A (KVM cluster, StorPool pool ``sp-a``, image store) and zone B (the same, ``sp-b``),
with ``sp.cluster.location`` set per pool (``loc-a``, ``loc-b``) as StorPool's cross-zone copy needs; alice owns a
volume on ``sp-a``. Readers return what a user would look at after a copy: refs by pool, zone rows, details, what each
StorPool cluster holds and whether it is exported.
"""

from __future__ import annotations

from cloud import SIZE, new_engine

from snapshotfsm.drivers.storpool import SP_DEV_PATH, StorPoolDriver
from snapshotfsm.engine import Engine
from snapshotfsm.faults import FaultPlan
from snapshotfsm.store.records import (
    ActionEvent,
    AsyncJob,
    Cluster,
    Failure,
    ResourceCount,
    Snapshot,
    SnapshotDetail,
    SnapshotStoreRef,
    SnapshotZoneRef,
    StorageObject,
    StoragePool,
    UsageEvent,
    Volume,
    Zone,
)

MINUTE_MS = 60_000
CHECK_MS = 300_000
"""``storpool.snapshot.recovery.from.remote.check``'s default period, 300 s."""


class StorPoolCloud:
    """Zones A and B, each with a KVM cluster and host, a StorPool pool and an image store; alice, bob and root."""

    def __init__(
        self,
        faults: FaultPlan | None = None,
        *,
        locations: tuple[str | None, str | None] = ("loc-a", "loc-b"),
        config: dict[str, object] | None = None,
    ) -> None:
        self.faults = faults if faults is not None else FaultPlan()
        e = self.engine = new_engine(self.faults)
        if config:
            for name, value in config.items():
                e.set_config(name, value)
            e.restart()
        self.zone_a = e.add_zone("zone-a")
        self.zone_b = e.add_zone("zone-b")
        self.image_a = e.add_image_store(self.zone_a, "secondary-a")
        self.image_b = e.add_image_store(self.zone_b, "secondary-b")
        self.alice = e.add_account("alice")
        self.bob = e.add_account("bob")
        self.root = e.add_account("root", admin=True)
        self.pool_a = self.add_pool(self.zone_a, "sp-a", locations[0])
        self.pool_b = self.add_pool(self.zone_b, "sp-b", locations[1])
        self.host_a = e.add_host(e.get(Cluster, self.pool_a.cluster_id or 0), "host-a")
        vm = e.add_vm(self.alice, self.zone_a, "web", hypervisor="KVM", host=self.host_a)
        self.volume: Volume = e.add_volume(self.alice, self.pool_a, "data", size=SIZE, vm=vm, format="RAW")

    def add_pool(self, zone: Zone, name: str, location: str | None) -> StoragePool:
        """A StorPool pool in its own KVM cluster of ``zone``, with ``sp.cluster.location`` when given."""
        e = self.engine
        cluster = e.add_cluster(zone, f"{name}-cluster", hypervisor="KVM")
        pool = e.add_pool(zone, name, pool_type="StorPool", provider="StorPool", cluster=cluster)
        if location is not None:
            e.set_config("sp.cluster.location", location, scope="StoragePool", scope_id=pool.id)
        return pool

    def add_zone(self, name: str, *, image_store: bool = True, location: str | None = None) -> tuple[Zone, StoragePool]:
        """Another zone with a StorPool pool (``sp-<name>``) and, unless told otherwise, an image store."""
        zone = self.engine.add_zone(name)
        if image_store:
            self.engine.add_image_store(zone, f"secondary-{name}")
        return zone, self.add_pool(zone, f"sp-{name}", location or f"loc-{name}")

    def take(self, **kwargs: object) -> int:
        """``createSnapshot`` of alice's volume, run until idle; the snapshot id (the job must have SUCCEEDED)."""
        job = self.engine.create_snapshot(self.volume.id, **kwargs)  # type: ignore[arg-type]
        self.engine.run()
        assert self.engine.job_status(job.id) == "SUCCEEDED", self.engine.get(AsyncJob, job.id).job_result
        return job.instance_id or 0

    def driver(self, pool: StoragePool) -> StorPoolDriver:
        """The StorPool driver of ``pool``."""
        driver = self.engine.rt.drivers.primary(pool)
        assert isinstance(driver, StorPoolDriver)
        return driver


def primary_refs(engine: Engine, snapshot_id: int) -> list[tuple[int, str, str | None]]:
    """The snapshot's primary refs: (pool id, state, install path), by id."""
    rows = engine.store.find(SnapshotStoreRef, "snapshot_id = ? AND store_role = 'Primary'", (snapshot_id,))
    return [(r.store_id, r.state, r.install_path) for r in rows]


def image_refs(engine: Engine, snapshot_id: int) -> list[tuple[int, str]]:
    """The snapshot's image refs: (image store id, state), by id."""
    rows = engine.store.find(SnapshotStoreRef, "snapshot_id = ? AND store_role = 'Image'", (snapshot_id,))
    return [(r.store_id, r.state) for r in rows]


def zone_rows(engine: Engine, snapshot_id: int) -> list[int]:
    """The zones of the snapshot's live ``snapshot_zone_ref`` rows."""
    rows = engine.store.find(SnapshotZoneRef, "snapshot_id = ? AND removed IS NULL", (snapshot_id,))
    return [r.zone_id for r in rows]


def recovered(engine: Engine) -> list[tuple[int, str]]:
    """Every ``SP_RECOVERED_SNAPSHOT`` detail: (snapshot id, value)."""
    rows = engine.store.find(SnapshotDetail, "name = 'SP_RECOVERED_SNAPSHOT'")
    return [(d.snapshot_id, d.value) for d in rows]


def sp_objects(engine: Engine, snapshot: Snapshot) -> list[tuple[int, str, str | None]]:
    """What the StorPool clusters hold under the snapshot's name: (pool id, kind, exported to), by pool."""
    ref = engine.store.first(SnapshotStoreRef, "snapshot_id = ? AND store_role = 'Primary'", (snapshot.id,))
    assert ref is not None and (ref.install_path or "").startswith(SP_DEV_PATH)
    rows = engine.store.find(
        StorageObject,
        "store_kind = 'primary' AND path = ? AND deleted_ms IS NULL",
        (ref.install_path,),
        order_by="store_id",
    )
    return [(o.store_id, o.kind, o.exported_to) for o in rows]


def count(engine: Engine, account_id: int, resource: str) -> int:
    """One ``resource_count`` value."""
    row = engine.store.first(ResourceCount, "account_id = ? AND type = ?", (account_id, resource))
    return 0 if row is None else row.count


def copy_usage(engine: Engine, snapshot_id: int) -> list[tuple[int, int, int | None]]:
    """The snapshot's SNAPSHOT.COPY usage events: (account, zone, size)."""
    rows = engine.store.find(UsageEvent, "type = 'SNAPSHOT.COPY' AND resource_id = ?", (snapshot_id,))
    return [(u.account_id, u.zone_id, u.size) for u in rows]


def copy_events(engine: Engine) -> list[tuple[str, str, int, int, str]]:
    """SNAPSHOT.COPY action events: (state, level, user, account, description)."""
    rows = engine.store.find(ActionEvent, "type = 'SNAPSHOT.COPY'")
    return [(e.state, e.level, e.user_id, e.account_id, e.description) for e in rows]


def copy_failures(engine: Engine) -> list[tuple[str, str, str]]:
    """Failed steps of the copy workflows: (step, exception class, message)."""
    rows = engine.store.find(Failure, "machine = 'copy_snapshot'")
    return [(f.step, f.exc_type.rsplit(".", 1)[-1], f.message) for f in rows]
