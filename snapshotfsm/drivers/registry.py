"""Which simulated driver serves a pool, chosen as CloudStack chooses: by the pool's storage provider.

Drivers come from the ``snapshotfsm.drivers`` entry-point group (the built-ins register there too). Each driver
class declares its providers and the pool types it serves; a pool whose provider no installed driver is, or whose
type its provider's driver does not serve, is refused with what is installed.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping

from snapshotfsm.drivers.base import DriverEnv
from snapshotfsm.drivers.image import ImageStoreDriver
from snapshotfsm.drivers.primary import PrimaryDriver
from snapshotfsm.errors import InvalidValue, did_you_mean
from snapshotfsm.plugins import load_group
from snapshotfsm.store.records import ImageStore, StoragePool

ENTRY_POINT_GROUP = "snapshotfsm.drivers"
BUILTIN_ORDER = ("default", "powerflex", "storpool", "solidfire", "ontap")
"""The built-in drivers' entry-point names, in the order they are listed."""


@functools.cache
def installed_drivers() -> tuple[type[PrimaryDriver], ...]:
    """Every primary-storage driver registered under ``snapshotfsm.drivers``: the built-ins, then the others by name.

    Raises:
        InvalidValue: an entry point that does not load a PrimaryDriver subclass.
    """
    return load_group(ENTRY_POINT_GROUP, PrimaryDriver, BUILTIN_ORDER)


class DriverSet:
    """The drivers one engine runs with, by provider name.

    Raises:
        InvalidValue: a class that is not a PrimaryDriver, one that declares no provider or pool type, or two
            drivers that claim one provider.
    """

    def __init__(self, drivers: Iterable[type[PrimaryDriver]]) -> None:
        self.drivers = tuple(drivers)
        by_provider: dict[str, type[PrimaryDriver]] = {}
        for cls in self.drivers:
            if not (isinstance(cls, type) and issubclass(cls, PrimaryDriver)):
                raise InvalidValue("driver", cls, "a PrimaryDriver subclass")
            if not getattr(cls, "providers", ()) or not getattr(cls, "pool_types", ()):
                raise InvalidValue(
                    "driver",
                    cls,
                    "a driver that declares its providers and pool types",
                    message=f"driver {cls.__qualname__} declares no providers or no pool_types",
                )
            for provider in cls.providers:
                if provider in by_provider:
                    raise InvalidValue(
                        "driver",
                        cls,
                        "one driver per provider",
                        message=f"drivers {by_provider[provider].__qualname__} and {cls.__qualname__} both claim "
                        f"provider {provider!r}",
                    )
                by_provider[provider] = cls
        self.by_provider: Mapping[str, type[PrimaryDriver]] = by_provider

    @property
    def pool_types(self) -> frozenset[str]:
        """Every pool type some installed driver serves."""
        return frozenset(t for cls in self.drivers for t in cls.pool_types)

    def for_pool(self, provider: str, pool_type: str) -> type[PrimaryDriver]:
        """The driver of a pool of ``provider`` and ``pool_type``.

        Raises:
            InvalidValue: no installed driver is that provider, or its driver does not serve that pool type.
        """
        cls = self.by_provider.get(provider)
        if cls is None:
            installed = ", ".join(self.by_provider)
            raise InvalidValue(
                "storage provider",
                provider,
                f"one of {installed}",
                message=f"no installed driver is storage provider {provider!r}"
                f"{did_you_mean(provider, self.by_provider)} (installed: {installed})",
            )
        if pool_type not in cls.pool_types:
            raise InvalidValue(
                "pool type",
                pool_type,
                f"one of {', '.join(sorted(cls.pool_types))}",
                message=f"provider {provider!r} ({cls.__qualname__}) does not serve pool type {pool_type!r}"
                f"{did_you_mean(pool_type, cls.pool_types)} (it serves: {', '.join(sorted(cls.pool_types))})",
            )
        return cls


class Drivers:
    """One driver object per pool and image store, made on first use."""

    def __init__(self, env: DriverEnv, installed: DriverSet) -> None:
        self.env = env
        self.installed = installed
        self._primary: dict[int, PrimaryDriver] = {}
        self._image: dict[int, ImageStoreDriver] = {}

    def primary(self, pool: StoragePool) -> PrimaryDriver:
        """The driver of ``pool``: the one of its storage provider.

        Raises:
            InvalidValue: no installed driver serves the pool's provider and type.
        """
        found = self._primary.get(pool.id)
        if found is None:
            cls = self.installed.for_pool(pool.storage_provider_name, pool.pool_type)
            found = self._primary[pool.id] = cls(self.env, pool)
        return found

    def image(self, image: ImageStore) -> ImageStoreDriver:
        """The driver of an image store."""
        found = self._image.get(image.id)
        if found is None:
            found = self._image[image.id] = ImageStoreDriver(self.env, image)
        return found
