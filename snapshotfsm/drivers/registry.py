"""Which simulated driver serves a pool, chosen as CloudStack chooses by provider and pool type."""

from __future__ import annotations

from snapshotfsm.drivers.base import DriverEnv
from snapshotfsm.drivers.image import ImageStoreDriver
from snapshotfsm.drivers.managed import ONTAP_PLUGIN_NAME, ManagedDriver, OntapDriver
from snapshotfsm.drivers.powerflex import PowerFlexDriver
from snapshotfsm.drivers.primary import DefaultPrimaryDriver, PrimaryDriver
from snapshotfsm.drivers.storpool import StorPoolDriver
from snapshotfsm.store.records import ImageStore, StoragePool

PROVIDERS: dict[str, type[PrimaryDriver]] = {
    "DefaultPrimary": DefaultPrimaryDriver,
    "PowerFlex": PowerFlexDriver,
    "ScaleIO": PowerFlexDriver,
    "StorPool": StorPoolDriver,
    "SolidFire": ManagedDriver,
    ONTAP_PLUGIN_NAME: OntapDriver,
}


class Drivers:
    """One driver object per pool and image store, made on first use."""

    def __init__(self, env: DriverEnv) -> None:
        self.env = env
        self._primary: dict[int, PrimaryDriver] = {}
        self._image: dict[int, ImageStoreDriver] = {}

    def primary(self, pool: StoragePool) -> PrimaryDriver:
        """The driver of ``pool``: by its provider, else by pool type (StorPool, PowerFlex), else the default."""
        found = self._primary.get(pool.id)
        if found is None:
            cls = PROVIDERS.get(pool.storage_provider_name) or PROVIDERS.get(pool.pool_type) or DefaultPrimaryDriver
            found = self._primary[pool.id] = cls(self.env, pool)
        return found

    def image(self, image: ImageStore) -> ImageStoreDriver:
        """The driver of an image store."""
        found = self._image.get(image.id)
        if found is None:
            found = self._image[image.id] = ImageStoreDriver(self.env, image)
        return found
