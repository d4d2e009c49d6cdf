"""The demo: a small cloud with every pool type, and snapshots taken the ways CloudStack takes them.

It runs on the embedded SQLite database and returns one :class:`Outcome` per scenario, for the CLI to print. Every
scenario is an ordinary use of the :class:`~snapshotfsm.engine.Engine` API, so the database it leaves behind can be
explored with ``snapshotfsm history``.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
from collections.abc import Iterator
from pathlib import Path

import attrs

from snapshotfsm.engine import Engine
from snapshotfsm.errors import StoreError
from snapshotfsm.faults import FaultPlan
from snapshotfsm.names import JobState, RefState, SnapshotState
from snapshotfsm.store.records import (
    AsyncJob,
    Failure,
    Snapshot,
    SnapshotStoreRef,
    SnapshotZoneRef,
    Volume,
    Workflow,
    Zone,
)
from snapshotfsm.store.store import _inspect

GIB = 1 << 30
HOUR_MS = 3_600_000


@attrs.frozen
class Outcome:
    """What one scenario did: the snapshot and job it produced and what a user would look at."""

    scenario: str
    pool: str
    snapshot_id: int | None
    snapshot_state: str
    job: str
    strategy: str
    note: str


_HELD: set[str] = set()
"""Databases whose demo lock this process holds: :func:`run_demo` inside :func:`demo_lock` takes it again freely."""


@contextlib.contextmanager
def demo_lock(path: str) -> Iterator[None]:
    """Hold ``<path>.lock`` while a demo rebuilds ``path``: a second demo on the same file is refused.

    The demo starts by deleting the database it finds. Two demos on one path at once would each delete the other's
    file under it and both report success with one run's work lost; with the lock the second stops before touching
    anything. The lock is ``flock`` on a file beside the database, released when the holder exits, however it
    exits (a crashed demo leaves no stale lock). The lock file itself stays: deleting it would let a third demo lock
    a new file while the second still holds the old one.

    Raises:
        StoreError: another demo holds the lock; nothing was changed.
    """
    if path == ":memory:" or str(Path(path).absolute()) in _HELD:
        yield
        return
    key = str(Path(path).absolute())
    lock_path = Path(f"{path}.lock")
    try:
        handle = lock_path.open("a")
    except OSError as exc:
        raise StoreError(path, f"cannot create the demo's lock file {lock_path} ({exc.strerror})") from exc
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise StoreError(
                path,
                f"another snapshotfsm demo is running on this database (it holds {lock_path}); nothing was changed",
            ) from None
        _HELD.add(key)
        try:
            yield
        finally:
            _HELD.discard(key)
            fcntl.flock(handle, fcntl.LOCK_UN)


def _fresh(path: str) -> None:
    """Start from an empty database, refusing to delete a file that is not a snapshotfsm database."""
    if path == ":memory:":
        return
    p = Path(path)
    if p.exists() and p.stat().st_size > 0:
        _inspect(p)
        for suffix in ("", "-wal", "-shm"):
            Path(path + suffix).unlink(missing_ok=True)


def run_demo(path: str = "snapshotfsm-demo.db", *, seed: int = 0) -> tuple[Engine, list[Outcome]]:
    """Build the demo cloud at ``path`` (recreated) and run every scenario; the engine is left open.

    The database is rebuilt under :func:`demo_lock`; hold that lock around this call to keep it while the engine
    is read afterwards (the command line does).

    Raises:
        StoreError: ``path`` exists and is not a snapshotfsm database (it is left alone), or another demo is
            running on it.
    """
    with demo_lock(path):
        return _run_demo(path, seed)


def _run_demo(path: str, seed: int) -> tuple[Engine, list[Outcome]]:
    _fresh(path)
    faults = FaultPlan().fail("RBD.copyAsync", nth=1, kind="error", message="backup copy failed (demo fault)")
    faults.crash("take_snapshot.PrimaryAnswered", nth=1, ms_id=1)
    engine = Engine.open(path, faults=faults, seed=seed)
    cloud = _Cloud(engine)
    outcomes: list[Outcome] = []

    def take(label: str, volume: Volume, note: str, **kwargs: object) -> AsyncJob:
        job = engine.create_snapshot(volume.id, **kwargs)  # type: ignore[arg-type]
        engine.run()
        outcomes.append(_outcome(engine, label, volume, job, note))
        return job

    # The crash rule fires on the first take to reach PrimaryAnswered: the server dies with the snapshot Creating.
    crashed = take("crash, then restart", cloud.xen_volume, "ms 1 dies waiting for the driver; restart cleans up (§10)")
    engine.restart()
    engine.run()
    outcomes[-1] = _outcome(
        engine,
        "crash, then restart",
        cloud.xen_volume,
        crashed,
        "ms 1 died waiting for the driver; restart failed the job, the snapshot went to Error",
    )
    take("attached, XenServer NFS, sync backup", cloud.xen_volume, "§13.1: CreatedOnPrimary → BackingUp → BackedUp")
    take("attached, KVM NFS", cloud.kvm_volume, "§13.2: written straight to secondary")
    take(
        "detached, KVM NFS",
        cloud.detached_volume,
        "no VM: no work job (§4.3); no cluster id, so post-processing throws (quirk)",
    )
    take("attached, Ceph RBD", cloud.rbd_volume, "injected copyAsync error: cleanupOnSnapshotBackupFailure (§5.8)")
    take("attached, PowerFlex", cloud.powerflex_volume, "STORAGE_SYSTEM_SNAPSHOT: StorageSystem strategy")
    take("attached, StorPool", cloud.storpool_volume, "Default strategy, StorPool driver (§8)")
    take("attached, managed SolidFire", cloud.managed_volume, "location PRIMARY, markAsBackedUp (§5.7)")
    take("encrypted on a running VM", cloud.encrypted_volume, "refused: 432 (§5.3)")
    take("async backup", cloud.xen_volume, "the job completes, the backup task runs later (§7.2)", async_backup=True)
    take("zone copy", cloud.xen_volume, "copied to zone2's image store (§7.4)", zone_ids=[cloud.zone2.id])

    outcomes.extend(_xenserver_chain(engine, cloud.chain_volume))

    engine.create_snapshot_policy(cloud.kvm_volume.id, interval="HOURLY", schedule="0", max_snaps=2)
    engine.start_background_tasks()
    engine.run(until_ms=engine.clock.now_ms + 3 * HOUR_MS + 60_000)
    engine.run()
    recurring = engine.store.find(Snapshot, "volume_id = ? AND type_description = 'HOURLY'", (cloud.kvm_volume.id,))
    kept = [s for s in recurring if s.status != SnapshotState.Destroyed]
    outcomes.append(
        Outcome(
            "hourly policy, max_snaps=2",
            _pool_name(engine, cloud.kvm_volume),
            recurring[0].id if recurring else None,
            recurring[0].status if recurring else "-",
            f"{len(recurring)} scheduled",
            "Default",
            f"retention kept {len(kept)}; the oldest was deleted through the delete path (§9.3)",
        )
    )
    return engine, outcomes


def _xenserver_chain(engine: Engine, volume: Volume) -> list[Outcome]:
    """Three XenServer snapshots (a full copy, then two deltas on it), then the delete of the middle one (§16)."""
    outcomes = []
    for label in ("XenServer chain: 1st", "XenServer chain: 2nd", "XenServer chain: 3rd"):
        job = engine.create_snapshot(volume.id)
        engine.run()
        outcome = _outcome(engine, label, volume, job, "")
        outcomes.append(attrs.evolve(outcome, note=_on_secondary(engine, outcome.snapshot_id)))
    middle = outcomes[1].snapshot_id
    assert middle is not None  # the take above succeeded; the demo's own cloud
    job = engine.delete_snapshot(middle)
    engine.run()
    hidden = engine.store.first(SnapshotStoreRef, "snapshot_id = ? AND store_role = 'Image'", (middle,))
    kept = hidden is not None and hidden.state == RefState.Hidden
    outcomes.append(
        Outcome(
            "XenServer chain: delete the 2nd",
            _pool_name(engine, volume),
            middle,
            engine.get(Snapshot, middle).status,
            engine.job_status(job.id),
            "Default",
            "its image ref is Hidden and its file kept: the 3rd delta needs it (§16.3)"
            if kept
            else "its file was deleted",
        )
    )
    return outcomes


def _on_secondary(engine: Engine, snapshot_id: int | None) -> str:
    """How a snapshot sits on the image store: a full copy, or a delta on its parent, and its size (§16.2)."""
    ref = engine.store.first(SnapshotStoreRef, "snapshot_id = ? AND store_role = 'Image'", (snapshot_id,))
    if ref is None:
        return "not on secondary storage"
    size = f"{ref.physical_size / GIB:.2f} GiB"
    if ref.parent_snapshot_id:
        return f"a delta on snapshot {ref.parent_snapshot_id}: {size} on secondary (§16.2)"
    return f"a full copy: {size} on secondary, a new chain (§16.2)"


def _pool_name(engine: Engine, volume: Volume) -> str:
    from snapshotfsm.store.records import StoragePool  # noqa: PLC0415

    if volume.pool_id is None:
        return "-"
    pool = engine.get(StoragePool, volume.pool_id)
    return f"{pool.name} ({pool.pool_type})"


def _outcome(engine: Engine, label: str, volume: Volume, job: AsyncJob, note: str) -> Outcome:
    job = engine.get(AsyncJob, job.id)
    snapshot = engine.store.first(Snapshot, "id = ?", (job.instance_id,))
    status = engine.job_status(job.id)
    if status == JobState.FAILED:
        status += f" {job.job_result_code}" if job.job_result_code else ""
    flow = engine.store.first(Workflow, "job_id = ? AND machine = 'take_snapshot'", (job.id,))
    strategy = "-"
    if flow is not None:
        strategy = json.loads(flow.context).get("strategy", "-").replace("SnapshotStrategy", "")
    state = "-"
    if snapshot is not None:
        state = snapshot.status + (" (removed)" if snapshot.removed else "")
        refs = engine.store.find(SnapshotStoreRef, "snapshot_id = ?", (snapshot.id,))
        zones = engine.store.count(SnapshotZoneRef, "snapshot_id = ?", (snapshot.id,))
        failures = engine.store.count(Failure, "job_id = ?", (job.id,))
        detail = f"{len(refs)} refs, {zones} zones" + (f", {failures} failed steps" if failures else "")
        note = f"{note} [{detail}]"
    return Outcome(label, _pool_name(engine, volume), snapshot.id if snapshot else None, state, status, strategy, note)


@attrs.define
class _Cloud:
    """Two Core zones; KVM and XenServer clusters; a pool of every type; an account with VMs and volumes."""

    engine: Engine
    zone2: Zone = attrs.field(init=False)
    xen_volume: Volume = attrs.field(init=False)
    kvm_volume: Volume = attrs.field(init=False)
    detached_volume: Volume = attrs.field(init=False)
    rbd_volume: Volume = attrs.field(init=False)
    powerflex_volume: Volume = attrs.field(init=False)
    storpool_volume: Volume = attrs.field(init=False)
    managed_volume: Volume = attrs.field(init=False)
    encrypted_volume: Volume = attrs.field(init=False)
    chain_volume: Volume = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        e = self.engine
        zone1 = e.add_zone("zone1")
        zone2 = self.zone2 = e.add_zone("zone2")
        e.add_image_store(zone1, "secondary1")
        e.add_image_store(zone2, "secondary2")
        kvm = e.add_cluster(zone1, "kvm-cluster", hypervisor="KVM")
        xen = e.add_cluster(zone1, "xen-cluster", hypervisor="XenServer", supports_resign=True)
        kvm_host = e.add_host(kvm, "kvm-host1")
        xen_host = e.add_host(xen, "xen-host1")
        alice = e.add_account("alice")
        nfs_kvm = e.add_pool(zone1, "nfs-kvm", cluster=kvm)
        nfs_xen = e.add_pool(zone1, "nfs-xen", cluster=xen)
        rbd = e.add_pool(zone1, "ceph", pool_type="RBD", cluster=kvm)
        powerflex = e.add_pool(zone1, "powerflex", pool_type="PowerFlex", provider="PowerFlex", cluster=kvm)
        storpool = e.add_pool(zone1, "storpool", pool_type="StorPool", provider="StorPool", cluster=kvm)
        managed = e.add_pool(
            zone1, "solidfire", pool_type="IscsiLUN", provider="SolidFire", managed=True, hypervisor="Any"
        )
        web = e.add_vm(alice, zone1, "web", hypervisor="KVM", host=kvm_host)
        db = e.add_vm(alice, zone1, "db", hypervisor="XenServer", host=xen_host)
        self.xen_volume = e.add_volume(alice, nfs_xen, "db-data", size=20 * GIB, vm=db, format="VHD")
        self.kvm_volume = e.add_volume(alice, nfs_kvm, "web-data", size=10 * GIB, vm=web)
        self.detached_volume = e.add_volume(alice, nfs_kvm, "spare", size=5 * GIB)
        self.rbd_volume = e.add_volume(alice, rbd, "web-ceph", size=8 * GIB, vm=web, format="RAW")
        self.powerflex_volume = e.add_volume(alice, powerflex, "web-pflex", size=8 * GIB, vm=web, format="RAW")
        self.storpool_volume = e.add_volume(alice, storpool, "web-sp", size=8 * GIB, vm=web, format="RAW")
        self.managed_volume = e.add_volume(alice, managed, "web-sf", size=8 * GIB, vm=web, format="QCOW2")
        self.encrypted_volume = e.add_volume(alice, nfs_kvm, "web-secret", size=4 * GIB, vm=web, encrypted=True)
        self.chain_volume = e.add_volume(alice, nfs_xen, "db-logs", size=16 * GIB, vm=db, format="VHD")
