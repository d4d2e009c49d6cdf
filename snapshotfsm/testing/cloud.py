"""A small cloud to test against: one zone with an image store, an account without limits, pools made on demand.

For the contract suites, and for a first snapshot in five lines::

    from snapshotfsm.testing import QuickCloud

    cloud = QuickCloud()
    volume = cloud.volume()  # XenServer on NFS, attached to a running VM; any PoolShape for another
    job = cloud.take(volume)
    cloud.engine.job_status(job.id), cloud.engine.snapshot_of(job).status  # ('SUCCEEDED', 'BackedUp')
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import attrs

from snapshotfsm.drivers.primary import PrimaryDriver
from snapshotfsm.engine import Engine
from snapshotfsm.faults import FaultPlan
from snapshotfsm.store.records import Account, AsyncJob, Cluster, Host, StoragePool, Volume
from snapshotfsm.strategies.base import SnapshotStrategy

UNLIMITED = {"snapshot": -1, "primary_storage": -1, "secondary_storage": -1}
GIB = 1 << 30


@attrs.frozen
class PoolShape:
    """Where a volume lives: its pool's provider and type, the hypervisor, the volume's format.

    ``zone_wide`` makes a zone-wide pool with hypervisor ``Any`` (managed storage) instead of a pool of the
    hypervisor's cluster.
    """

    provider: str = "DefaultPrimary"
    pool_type: str = "NetworkFilesystem"
    hypervisor: str = "KVM"
    format: str = "QCOW2"
    managed: bool = False
    zone_wide: bool = False

    @classmethod
    def of(
        cls,
        driver: type[PrimaryDriver],
        *,
        hypervisor: str = "KVM",
        format: str = "QCOW2",
        managed: bool = False,
        zone_wide: bool = False,
    ) -> PoolShape:
        """A pool of ``driver``'s first provider and (alphabetically) first pool type."""
        return cls(driver.providers[0], min(driver.pool_types), hypervisor, format, managed, zone_wide)


BUILTIN_SHAPES: tuple[PoolShape, ...] = (
    PoolShape(hypervisor="XenServer", format="VHD"),
    PoolShape(),
    PoolShape(pool_type="RBD", format="RAW"),
    PoolShape(pool_type="CLVM", format="RAW"),
    PoolShape("StorPool", "StorPool", format="RAW"),
    PoolShape("PowerFlex", "PowerFlex", format="RAW", managed=True),
    PoolShape("SolidFire", "Iscsi", managed=True, zone_wide=True),
    PoolShape("NetApp ONTAP", "Iscsi", managed=True, zone_wide=True),
)
"""One pool of each kind the built-in drivers serve, as CloudStack's lifecycles set them up."""


DEFAULT_SHAPE = PoolShape(hypervisor="XenServer", format="VHD")
"""XenServer on NFS, what :meth:`QuickCloud.volume` makes by default: the take of spec §13.1, on primary then backed up,
which breaks no invariant (a KVM take writes an ON_PRIMARY usage event for a snapshot never on primary, upstream's)."""


class QuickCloud:
    """An engine on ``:memory:`` with one zone, an image store and an account (``tester``) that has no limits.

    ``strategies``, ``drivers`` and ``faults`` go to :meth:`Engine.open`; ``config`` is set as if the server had
    started with it.
    """

    def __init__(
        self,
        *,
        faults: FaultPlan | None = None,
        strategies: Iterable[SnapshotStrategy | type[SnapshotStrategy]] | None = None,
        drivers: Iterable[type[PrimaryDriver]] | None = None,
        config: Mapping[str, object] | None = None,
    ) -> None:
        self.faults = faults if faults is not None else FaultPlan()
        engine = self.engine = Engine.open(":memory:", faults=self.faults, strategies=strategies, drivers=drivers)
        if config:
            for name, value in config.items():
                engine.set_config(name, value)
            engine.restart()
        self.zone = engine.add_zone("zone1")
        engine.add_image_store(self.zone, "secondary1")
        self.account: Account = engine.add_account("tester", limits=UNLIMITED)
        self._clusters: dict[str, tuple[Cluster, Host]] = {}
        self._pools: dict[PoolShape, StoragePool] = {}
        self._names = 0

    def _name(self, prefix: str) -> str:
        self._names += 1
        return f"{prefix}{self._names}"

    def host(self, hypervisor: str) -> Host:
        """The one Up host of ``hypervisor``'s cluster (made on first use)."""
        if hypervisor not in self._clusters:
            cluster = self.engine.add_cluster(self.zone, f"{hypervisor.lower()}-cluster", hypervisor=hypervisor)
            self._clusters[hypervisor] = (cluster, self.engine.add_host(cluster, f"{hypervisor.lower()}-host"))
        return self._clusters[hypervisor][1]

    def pool(self, shape: PoolShape) -> StoragePool:
        """The pool of ``shape`` (made on first use)."""
        if shape not in self._pools:
            self.host(shape.hypervisor)
            cluster = self._clusters[shape.hypervisor][0]
            self._pools[shape] = self.engine.add_pool(
                self.zone,
                self._name("pool"),
                pool_type=shape.pool_type,
                provider=shape.provider,
                managed=shape.managed,
                cluster=None if shape.zone_wide else cluster,
                hypervisor="Any" if shape.zone_wide else None,
            )
        return self._pools[shape]

    def volume(self, shape: PoolShape = DEFAULT_SHAPE, *, attached: bool = True, size: int = GIB) -> Volume:
        """A volume on ``shape``'s pool (default XenServer on NFS), attached to a new Running VM if ``attached``."""
        vm = None
        if attached:
            host = self.host(shape.hypervisor)
            vm = self.engine.add_vm(self.account, self.zone, self._name("vm"), hypervisor=shape.hypervisor, host=host)
        return self.engine.add_volume(
            self.account, self.pool(shape), self._name("vol"), size=size, vm=vm, format=shape.format
        )

    def take(self, volume: Volume, *, async_backup: bool = False) -> AsyncJob:
        """``createSnapshot`` of ``volume``, run to idle."""
        job = self.engine.create_snapshot(volume.id, async_backup=async_backup)
        self.engine.run()
        return self.engine.get(AsyncJob, job.id)

    def delete(self, snapshot_id: int) -> AsyncJob:
        """``deleteSnapshot``, run to idle."""
        job = self.engine.delete_snapshot(snapshot_id)
        self.engine.run()
        return self.engine.get(AsyncJob, job.id)
