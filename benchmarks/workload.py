"""The cloud and the takes the workflow benchmarks time: one zone, XenServer on NFS, snapshots of fresh volumes.

Shared by ``bench_workflow.py`` (the take against its SQL), ``flat.py`` (the take on top of a large history) and
``policy_day.py`` (a day of hourly policies). Each take is of a 10 GiB VHD volume on XenServer/NFS, attached to a
Running VM (the take goes through the VM's work-job queue, spec §4.3) or detached.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from snapshotfsm import Engine
from snapshotfsm.store import Snapshot
from snapshotfsm.store.records import Account, Host, StoragePool, Zone

MEMORY = ":memory:"
SIZE = 10 << 30
UNLIMITED = {"snapshot": -1, "primary_storage": -1, "secondary_storage": -1}
"""Every account limit off: thousands of snapshots must not be refused (``add_account(limits=...)``, -1 = none)."""


@dataclass(frozen=True)
class Setup:
    """One configuration: the volume attached to a VM or not, the database a file or ``:memory:``."""

    attached: bool
    memory: bool

    @property
    def label(self) -> str:
        return f"{'attached' if self.attached else 'detached'}, {'memory' if self.memory else 'file (WAL)'}"


SETUPS = tuple(Setup(attached=attached, memory=memory) for memory in (False, True) for attached in (True, False))


def discard(path: Path | str) -> None:
    """A database file and its WAL and shared-memory files, gone."""
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


@dataclass
class Cloud:
    """The classic cloud: a zone with an image store, a XenServer cluster with one host and an NFS pool, an account."""

    engine: Engine
    zone: Zone
    host: Host
    pool: StoragePool
    account: Account
    volumes_made: int = 0

    @classmethod
    def open(cls, where: str) -> Cloud:
        engine = Engine.open(where)
        zone = engine.add_zone("zone1")
        engine.add_image_store(zone, "secondary1")
        cluster = engine.add_cluster(zone, "xen-cluster", hypervisor="XenServer")
        host = engine.add_host(cluster, "xen-host")
        pool = engine.add_pool(zone, "nfs-primary", cluster=cluster)
        account = engine.add_account("alice", limits=UNLIMITED)
        return cls(engine, zone, host, pool, account)

    def volumes(self, n: int, *, attached: bool) -> list[int]:
        """``n`` fresh volumes (each in its own VM when attached); their ids."""
        engine, made = self.engine, self.volumes_made
        ids: list[int] = []
        for i in range(made, made + n):
            vm = (
                engine.add_vm(self.account, self.zone, f"vm{i}", hypervisor="XenServer", host=self.host)
                if attached
                else None
            )
            ids.append(engine.add_volume(self.account, self.pool, f"data{i}", size=SIZE, vm=vm, format="VHD").id)
        self.volumes_made = made + n
        return ids

    def checkpoint(self) -> None:
        """A file database's WAL moved into the file, so that a timed part starts with an empty WAL."""
        if self.engine.store.path != MEMORY:
            busy = self.engine.store.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
            assert busy == 0, "the checkpoint did not complete"


def take(engine: Engine, volumes: Sequence[int]) -> list[tuple[int, int]]:
    """The timed part: one snapshot of each volume, one after the other; (job id, snapshot id) of each."""
    taken = []
    for volume_id in volumes:
        job = engine.create_snapshot(volume_id)
        engine.run()
        taken.append((job.id or 0, job.instance_id or 0))
    return taken


def check_taken(engine: Engine, taken: Sequence[tuple[int, int]]) -> None:
    """Every job SUCCEEDED and its snapshot is BackedUp: a refused or failed take would time something else."""
    for job_id, snapshot_id in taken:
        status = engine.job_status(job_id)
        state = engine.get(Snapshot, snapshot_id).status
        if (status, state) != ("SUCCEEDED", "BackedUp"):
            raise RuntimeError(f"job {job_id}: {status}, snapshot {snapshot_id}: {state}")
