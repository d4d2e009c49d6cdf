"""CloudStack's configuration keys for snapshots, with their defaults and scopes (spec §7.1).

A value is looked up at the most specific scope the key has (a StoragePool-scoped key at the pool, a Cluster-scoped
key at the cluster, ...), falling back to the global value and then to the default. Keys that CloudStack reads only
once, when the management server configures itself (``dynamic = False``), are read from a snapshot taken when the
engine (re)starts, so that changing them takes effect only after a restart, as in CloudStack.
"""

from __future__ import annotations

from collections.abc import Mapping

import attrs

from snapshotfsm.errors import InvalidValue, did_you_mean
from snapshotfsm.store.records import Configuration
from snapshotfsm.store.store import Store

SCOPES = ("Global", "Zone", "Cluster", "StoragePool")


@attrs.frozen
class Key:
    """One config key: its name, type, default, scope and whether CloudStack re-reads it at run time."""

    name: str
    type: type
    default: object
    scope: str = "Global"
    dynamic: bool = True
    spec: str = "§7.1"
    role: str = ""


KEYS: dict[str, Key] = {
    k.name: k
    for k in (
        Key(
            "snapshot.backup.to.secondary",
            bool,
            default=True,
            dynamic=False,
            role="master switch for backing up to secondary; forced off in Edge zones",
        ),
        Key("backup.retry", int, default=3, dynamic=False, role="async backup retries"),
        Key("backup.retry.interval", int, default=300, dynamic=False, role="seconds between async backup retries"),
        Key("backup.snapshot.wait", int, default=21600, role="timeout (s) of the backup copy command"),
        Key(
            "async.call.wait",
            int,
            default=3600,
            spec="§5.6",
            role="hardened only (future_wait_is_bounded): seconds a driver call's future waits before it fails",
        ),
        Key("snapshot.delta.max", int, default=16, role="max deltas between full backups (XenServer; KVM chain end)"),
        Key(
            "kvm.incremental.snapshot",
            bool,
            default=False,
            scope="Cluster",
            role="KVM incremental (checkpoint) snapshots",
        ),
        Key(
            "kvm.snapshot.enabled",
            bool,
            default=True,
            role="allow snapshots of volumes of KVM VMs not Stopped/Destroyed",
        ),
        Key("kvm.vmstoragesnapshot.enabled", bool, default=True, role="VM storage snapshots (not the volume path)"),
        Key("snapshot.max.hourly", int, default=8, dynamic=False, spec="§7.1, §9.3", role="retained HOURLY snapshots"),
        Key("snapshot.max.daily", int, default=8, dynamic=False, spec="§7.1, §9.3", role="retained DAILY snapshots"),
        Key("snapshot.max.weekly", int, default=8, dynamic=False, spec="§7.1, §9.3", role="retained WEEKLY snapshots"),
        Key(
            "snapshot.max.monthly", int, default=8, dynamic=False, spec="§7.1, §9.3", role="retained MONTHLY snapshots"
        ),
        Key(
            "usage.snapshot.virtualsize.select",
            bool,
            default=False,
            role="usage uses virtual rather than physical size",
        ),
        Key("snapshot.show.chain.size", bool, default=False, role="response only"),
        Key(
            "use.storage.replication",
            bool,
            default=False,
            scope="StoragePool",
            role="copy snapshots to primary storage in other zones (StorPool only)",
        ),
        Key("snapshot.poll.interval", int, default=300, spec="§7.1, §9.2", role="scheduler poll period (s)"),
        Key("vm.job.check.interval", int, default=3000, spec="§7.1, §4.3", role="outcome polling (ms)"),
        Key(
            "vm.job.lock.timeout",
            int,
            default=1800,
            spec="§7.1, §4.3",
            role="lock taken when submitting a VM work job (s)",
        ),
        Key(
            "concurrent.snapshots.threshold.perhost",
            int,
            default=0,
            spec="§7.1, §4.2",
            role="per-host snapshot queue size; 0 = unlimited (CloudStack's null); unused on the API path",
        ),
        Key("max.account.snapshots", int, default=20, role="default snapshot limit of an account"),
        Key("max.project.snapshots", int, default=20, role="default snapshot limit of a project"),
        Key("max.account.primary.storage", int, default=200, role="default primary storage limit of an account (GiB)"),
        Key(
            "max.account.secondary.storage",
            int,
            default=400,
            role="default secondary storage limit of an account (GiB)",
        ),
        Key("max.domain.snapshots", int, default=40, role="default snapshot limit of a domain"),
        Key("storage.cleanup.enabled", bool, default=True, dynamic=False, spec="§7.1, §10.5", role="storage GC"),
        Key(
            "storage.cleanup.interval",
            int,
            default=86400,
            dynamic=False,
            spec="§7.1, §10.5",
            role="storage GC period (s)",
        ),
        Key(
            "storage.cleanup.delay", int, default=86400, dynamic=False, spec="§7.1, §10.5", role="first storage GC (s)"
        ),
        Key(
            "publish.resource.state.events",
            bool,
            default=True,
            spec="§1.2",
            role="whether the snapshot FSM listener publishes",
        ),
        Key("lock.timeout", int, default=300, spec="§5.5", role="seconds acquireInLockTable waits"),
        Key("sp.cluster.location", str, default="", scope="StoragePool", spec="§8", role="StorPool cluster location"),
        Key(
            "sp.bypass.secondary.storage",
            bool,
            default=False,
            spec="§8",
            role="registered, no longer used by the encryption check",
        ),
        Key(
            "storpool.snapshot.recovery.from.remote.check",
            int,
            default=300,
            spec="§8",
            role="StorPool recovery check period (s); 0 disables it",
        ),
    )
}


def _parse(key: Key, value: object) -> object:
    if key.type is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
    elif key.type is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lstrip("-").isdigit():
            return int(value)
    elif isinstance(value, str):
        return value
    raise InvalidValue(key.name, value, f"a {key.type.__name__}")


class Config:
    """Config values of one management server: set per scope in the ``configuration`` table, read here."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._frozen: dict[tuple[str, str, int], object] = {}
        self.reload()

    def reload(self) -> None:
        """Read the non-dynamic values again: what a management server does when it (re)starts."""
        self._frozen = {}
        for row in self.store.find(Configuration):
            key = KEYS.get(row.name)
            if key is not None and not key.dynamic:
                self._frozen[(row.name, row.scope, row.scope_id)] = _parse(key, row.value)

    @staticmethod
    def key(name: str) -> Key:
        """The key called ``name``.

        Raises:
            InvalidValue: no such key (with the nearest one).
        """
        try:
            return KEYS[name]
        except KeyError:
            raise InvalidValue(
                "config key", name, "a known key", message=f"unknown config key {name!r}{did_you_mean(name, KEYS)}"
            ) from None

    def set(self, name: str, value: object, *, scope: str = "Global", scope_id: int = 0) -> None:
        """Set ``name`` at a scope (the key's own scope, or Global).

        Raises:
            InvalidValue: unknown key, a scope the key does not have, or a value of the wrong type.
        """
        key = self.key(name)
        if scope not in ("Global", key.scope):
            raise InvalidValue(
                f"{name} scope",
                scope,
                f"Global or {key.scope}",
                message=f"{name} is a {key.scope}-scoped key; it cannot be set at {scope} scope",
            )
        parsed = _parse(key, value)
        text = str(parsed).lower() if isinstance(parsed, bool) else str(parsed)
        existing = self.store.first(
            Configuration,
            "name = ? AND scope = ? AND scope_id = ?",
            (name, scope, scope_id if scope != "Global" else 0),
        )
        if existing is None:
            self.store.insert(
                Configuration(name=name, scope=scope, scope_id=scope_id if scope != "Global" else 0, value=text)
            )
        else:
            self.store.update(existing, value=text)

    def get(self, name: str, *, zone: int | None = None, cluster: int | None = None, pool: int | None = None) -> object:
        """The value of ``name`` at the most specific scope given, else global, else the default."""
        key = self.key(name)
        scoped = {"Zone": zone, "Cluster": cluster, "StoragePool": pool}.get(key.scope)
        lookups = ([(key.scope, scoped)] if scoped is not None else []) + [("Global", 0)]
        for scope, scope_id in lookups:
            if not key.dynamic:
                if (name, scope, scope_id) in self._frozen:
                    return self._frozen[(name, scope, scope_id)]
                continue
            row = self.store.first(Configuration, "name = ? AND scope = ? AND scope_id = ?", (name, scope, scope_id))
            if row is not None:
                return _parse(key, row.value)
        return key.default

    def flag(self, name: str, **scope: int | None) -> bool:
        """A boolean key's value."""
        return bool(self.get(name, **scope))

    def number(self, name: str, **scope: int | None) -> int:
        """An integer key's value."""
        value = self.get(name, **scope)
        assert isinstance(value, int)
        return value

    def text(self, name: str, **scope: int | None) -> str:
        """A string key's value."""
        return str(self.get(name, **scope))

    def describe(self) -> Mapping[str, Key]:
        """Every key, for documentation and the CLI."""
        return KEYS
