"""Exploration scenarios as data: a small cloud and a short program of API calls and clock moves.

A scenario is one TOML file of ``scenarios/`` (the format is in ``docs/explore.md``). Its cloud is not written out
piece by piece: it is chosen along a few *dimensions* (the pool's shape, how the volume is attached, encryption,
backup to secondary, copies at creation, how many management servers), each scenario saying which values it is
explored over. An :class:`Instance` is a scenario with one value of each dimension. The default set is pairwise
(:func:`choose`); ``full`` takes every instance.

Besides the dimensions, a scenario's ``[cloud]`` table changes what every instance's cloud is built with:
``image_store = false`` builds the volume's zone without an image store (a zone whose secondary storage is not
there yet: spec §5.4 step 3's "Could not find any secondary storage"). A ``createSnapshot`` step may pass
``async_backup``, ``quiescevm`` (true: refused by the strategy, spec §5.5), ``location_type`` (``PRIMARY`` or
``SECONDARY``, for a managed pool, spec §5.1, §5.7) and ``zone_copy`` (true: also copy to the second zone's image
store, so that with ``copies = pool-copy`` a take copies to a zone and then to a pool, spec §5.4 step 13). Some
pool shapes (:data:`OPT_IN_POOLS`) are explored only by a scenario that names them in ``dimensions.pool``.
"""

from __future__ import annotations

import fnmatch
import functools
import itertools
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs

from snapshotfsm.config import KEYS
from snapshotfsm.errors import ScenarioError, did_you_mean


@attrs.frozen
class PoolKind:
    """A pool's shape: its provider and type, the hypervisor of its cluster, the volume's format."""

    provider: str
    pool_type: str
    hypervisor: str
    format: str
    managed: bool = False
    zone_wide: bool = False


POOLS: dict[str, PoolKind] = {
    "nfs-xenserver": PoolKind("DefaultPrimary", "NetworkFilesystem", "XenServer", "VHD"),
    "nfs-kvm": PoolKind("DefaultPrimary", "NetworkFilesystem", "KVM", "QCOW2"),
    "nfs-vmware": PoolKind("DefaultPrimary", "NetworkFilesystem", "VMware", "OVA"),
    "rbd": PoolKind("DefaultPrimary", "RBD", "KVM", "RAW"),
    "clvm": PoolKind("DefaultPrimary", "CLVM", "KVM", "RAW"),
    "storpool": PoolKind("StorPool", "StorPool", "KVM", "RAW"),
    "powerflex": PoolKind("PowerFlex", "PowerFlex", "KVM", "RAW", managed=True),
    "solidfire": PoolKind("SolidFire", "Iscsi", "KVM", "QCOW2", managed=True, zone_wide=True),
    "ontap": PoolKind("NetApp ONTAP", "Iscsi", "KVM", "QCOW2", managed=True, zone_wide=True),
    "solidfire-xenserver": PoolKind("SolidFire", "Iscsi", "XenServer", "VHD", managed=True, zone_wide=True),
}
"""Every pool shape the model has, by the name a scenario gives it."""

OPT_IN_POOLS = ("solidfire-xenserver",)
"""Pool shapes a scenario gets only by naming them in ``dimensions.pool``, so that the default pairwise set does not
grow with them: SolidFire under XenServer (VHD), the one shape where a ``SECONDARY`` snapshot of managed storage is
archived (spec §5.7)."""

DIMENSIONS: dict[str, tuple[str, ...]] = {
    "pool": tuple(POOLS),
    "vm": ("running", "stopped", "detached"),
    "encryption": ("plain", "encrypted"),
    "backup": ("sync", "async", "no-backup"),
    "copies": ("no-copies", "zone-copy", "pool-copy"),
    "servers": ("one-server", "two-servers"),
}
"""The dimensions of a scenario's cloud, with their values in order. ``vm``: the volume is attached to a running or a
stopped VM, or detached. ``backup``: backed up to secondary synchronously, asynchronously (``asyncbackup``), or not
at all (``snapshot.backup.to.secondary`` off). ``copies``: each ``createSnapshot`` copies to the second zone's image
store (``zoneids``) or to a StorPool pool of the second zone (``storageids``). ``servers``: one management server or
two sharing the database."""

EXPLORER_CONFIG: dict[str, object] = {"storage.cleanup.delay": 600, "storage.cleanup.interval": 600}
"""Configuration every scenario starts from (its ``[config]`` overrides it): the storage GC first runs after ten
minutes rather than a day, so that quiescence's cycle of the background tasks is short."""

SECOND = 2
"""The second zone, the second management server."""

RESOURCES = ("snapshot", "primary_storage", "secondary_storage")
"""The resources a scenario's ``[limits]`` may cap (bytes for storage, a count for snapshots)."""

CALLS = ("createSnapshot", "deleteSnapshot", "copySnapshot", "createSnapshotPolicy")
"""The API calls a step may make."""

_STEP_KEYS: dict[str, frozenset[str]] = {
    "createSnapshot": frozenset({"call", "ms", "async_backup", "name", "quiescevm", "location_type", "zone_copy"}),
    "deleteSnapshot": frozenset({"call", "ms", "snapshot", "zone"}),
    "copySnapshot": frozenset({"call", "ms", "snapshot", "to_zone"}),
    "createSnapshotPolicy": frozenset({"call", "ms", "interval", "schedule", "keep"}),
    "run": frozenset({"run"}),
    "advance": frozenset({"advance"}),
    "poll": frozenset({"poll", "ms"}),
    "background": frozenset({"background"}),
    "restart": frozenset({"restart"}),
}
_TOP_KEYS = frozenset({"description", "contending", "dimensions", "config", "limits", "cloud", "step"})
CLOUD_KEYS: dict[str, type] = {"image_store": bool}
"""The keys of a scenario's ``[cloud]`` table, with their types."""


@attrs.frozen
class Step:
    """One step of a program: an API call (``call``), or a move of the clock or the servers.

    ``kind`` is the call's name, or ``run`` (run the clock until nothing is pending), ``advance`` (run it ``seconds``
    further), ``poll`` (one poll of the snapshot scheduler now), ``background`` (every server starts its background
    tasks) or ``restart`` (server ``ms`` starts again, its start-up cleanup included, spec §10). ``snapshot`` counts
    the program's ``createSnapshot`` calls from 1; ``zone`` is 1 or 2.
    """

    kind: str
    ms: int = 1
    snapshot: int = 0
    zone: int | None = None
    async_backup: bool | None = None
    name: str | None = None
    quiescevm: bool = False
    location_type: str | None = None
    zone_copy: bool = False
    interval: str = "HOURLY"
    schedule: str = "0"
    keep: int = 2
    seconds: int = 0

    def __str__(self) -> str:
        on = f" on ms{self.ms}" if self.ms != 1 else ""
        if self.kind == "createSnapshot":
            quiesce = " quiescevm" if self.quiescevm else ""
            location = f" locationtype {self.location_type}" if self.location_type else ""
            zone = " to zone 2 too" if self.zone_copy else ""
            return f"createSnapshot{quiesce}{location}{zone}{on}"
        if self.kind == "deleteSnapshot":
            zone = f" in zone {self.zone}" if self.zone else ""
            return f"deleteSnapshot snapshot #{self.snapshot}{zone}{on}"
        if self.kind == "copySnapshot":
            return f"copySnapshot snapshot #{self.snapshot} to zone {self.zone}{on}"
        if self.kind == "createSnapshotPolicy":
            return f"createSnapshotPolicy {self.interval} keep {self.keep}{on}"
        if self.kind == "advance":
            return f"advance {self.seconds} s"
        return {
            "run": "run until idle",
            "poll": f"scheduler poll{on}",
            "background": "start background tasks",
            "restart": f"ms{self.ms} starts again",
        }[self.kind]


@attrs.frozen
class Scenario:
    """A program, the values of each dimension it is explored over, and its configuration."""

    name: str
    path: str
    description: str
    dimensions: Mapping[str, tuple[str, ...]]
    config: Mapping[str, object]
    limits: Mapping[str, int]
    steps: tuple[Step, ...]
    cloud: Mapping[str, object] = attrs.field(factory=dict)
    """The ``[cloud]`` table: how every instance's cloud departs from the default one (:data:`CLOUD_KEYS`)."""
    contending: bool = False
    """Its program makes tasks contend for rows (``contending = true``): the explorer tries schedules on it."""

    @property
    def second_zone(self) -> bool:
        """Whether its cloud needs a second zone (a step names zone 2, or copies at creation go there)."""
        return any(s.zone == SECOND or s.zone_copy for s in self.steps) or self.dimensions["copies"] != ("no-copies",)

    def instances(self) -> list[Instance]:
        """Every instance: the product of its dimensions' values, less the combinations no cloud can have."""
        return [Instance(self, dict(zip(DIMENSIONS, values, strict=True))) for values in self._product()]

    def _product(self) -> Iterable[tuple[str, ...]]:
        for values in itertools.product(*(self.dimensions[d] for d in DIMENSIONS)):
            if not _excluded(dict(zip(DIMENSIONS, values, strict=True))):
                yield values


def _excluded(values: Mapping[str, str]) -> str | None:
    """Why a combination of values is not a cloud CloudStack can have, or None."""
    if values["copies"] == "pool-copy" and values["pool"] != "storpool":
        return "copies to a primary pool of another zone are StorPool's (spec §8)"
    if values["copies"] == "zone-copy" and values["backup"] == "no-backup":
        return "copies to another zone go through secondary storage"
    return None


@attrs.frozen
class Instance:
    """A scenario with one value of each dimension: one cloud and its program."""

    scenario: Scenario
    values: Mapping[str, str]

    @property
    def name(self) -> str:
        """``take:rbd/running/plain/sync/no-copies/one-server``: the scenario, then each value in dimension order."""
        return f"{self.scenario.name}:{'/'.join(self.values[d] for d in DIMENSIONS)}"

    @property
    def pool(self) -> PoolKind:
        """The shape of the volume's pool."""
        return POOLS[self.values["pool"]]

    @property
    def servers(self) -> int:
        """How many management servers share the database."""
        return SECOND if self.values["servers"] == "two-servers" else 1


def choose(scenarios: Iterable[Scenario], *, full: bool = False) -> list[Instance]:
    """The instances to explore: every one (``full``), or a small set that still covers every pair of values.

    The default set is pairwise: every two values of two dimensions that some instance has together appear together
    in one instance of the set, and every scenario appears with every value it allows of each dimension but the pool
    (a scenario is explored on each pool shape only through the pairs). It is a few dozen instances where the
    product has about two thousand.
    """
    every = [i for s in scenarios for i in s.instances()]
    return every if full else pairwise(every)


def _pairs(instance: Instance) -> set[tuple[str, str, str, str]]:
    items = [(d, instance.values[d]) for d in DIMENSIONS]
    pairs = {(a, va, b, vb) for (a, va), (b, vb) in itertools.combinations(items, 2)}
    pairs.update(("scenario", instance.scenario.name, d, v) for d, v in items if d != "pool")
    return pairs


def pairwise(instances: Sequence[Instance]) -> list[Instance]:
    """A subset of ``instances`` that has every pair :func:`choose` asks for that some instance has.

    Greedy, in the order given: each round takes the instance that covers the most pairs not yet covered (the
    earliest on a tie), until every pair is covered. Deterministic.
    """
    covers = [_pairs(i) for i in instances]
    missing: set[tuple[str, str, str, str]] = set().union(*covers)
    chosen: list[int] = []
    while missing:
        best = max(range(len(instances)), key=lambda i: (len(covers[i] & missing), -i))
        chosen.append(best)
        missing -= covers[best]
    return [instances[i] for i in sorted(chosen)]


def default_scenarios_dir() -> Path:
    """``scenarios/`` of a source checkout, else the copy a wheel carries inside the package."""
    here = Path(__file__).resolve().parent.parent
    for candidate in (here.parent / "scenarios", here / "scenarios"):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"no scenarios/ directory next to {here}")


@functools.cache
def default_scenarios() -> tuple[Scenario, ...]:
    """The project's scenarios, loaded once per process."""
    return tuple(load_scenarios(default_scenarios_dir()))


def load_scenarios(directory: Path | str) -> list[Scenario]:
    """Every ``*.toml`` of ``directory``, in file-name order.

    Raises:
        ScenarioError: the directory holds none, or a file is malformed (naming the file and the key).
    """
    root = Path(directory)
    if not root.is_dir():
        raise ScenarioError(str(root), "directory", "does not exist or is not a directory")
    found = [load_scenario(path) for path in sorted(root.glob("*.toml"))]
    if not found:
        raise ScenarioError(str(root), "directory", "holds no *.toml scenarios")
    return found


def load_scenario(path: Path | str) -> Scenario:
    """One scenario file; its name is the file's stem.

    Raises:
        ScenarioError: the file cannot be read, is not TOML, or has a key or value the format does not have.
    """
    path = Path(path)
    where = str(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise ScenarioError(where, "file", f"cannot be read ({exc})") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(where, "file", f"is not valid TOML ({exc})") from exc
    return parse_scenario(raw, name=path.stem, path=where)


def parse_scenario(raw: Mapping[str, Any], *, name: str, path: str = "<scenario>") -> Scenario:
    """A scenario from its parsed TOML.

    Raises:
        ScenarioError: a key or value the format does not have, naming it.
    """
    for key in raw:
        if key not in _TOP_KEYS:
            raise ScenarioError(path, key, f"is not a scenario key{did_you_mean(key, _TOP_KEYS)}")
    description = raw.get("description", "")
    if not isinstance(description, str) or not description:
        raise ScenarioError(path, "description", "must be a non-empty string (what the scenario exercises)")
    dimensions = _dimensions(path, raw.get("dimensions", {}))
    config = _config(path, raw.get("config", {}))
    limits = _table(path, "limits", raw.get("limits", {}))
    for key, value in limits.items():
        if key not in RESOURCES:
            raise ScenarioError(path, f"limits.{key}", f"is not a resource{did_you_mean(key, RESOURCES)}")
        if not isinstance(value, int) or isinstance(value, bool):
            raise ScenarioError(path, f"limits.{key}", f"must be an integer (-1: no limit), not {value!r}")
    steps_raw = raw.get("step", [])
    if not isinstance(steps_raw, list) or not steps_raw:
        raise ScenarioError(path, "step", "must be a non-empty array of tables ([[step]])")
    steps = tuple(_step(path, n, s) for n, s in enumerate(steps_raw, 1))
    creates = 0
    for n, step in enumerate(steps, 1):
        creates += step.kind == "createSnapshot"
        if step.snapshot > creates:
            raise ScenarioError(
                path, f"step {n}: snapshot", f"is #{step.snapshot}, but only {creates} createSnapshot come before it"
            )
        if step.ms == SECOND and "one-server" in dimensions["servers"]:
            raise ScenarioError(path, f"step {n}: ms", "is 2, so dimensions.servers must be ['two-servers']")
    cloud = _table(path, "cloud", raw.get("cloud", {}))
    for key, value in cloud.items():
        if key not in CLOUD_KEYS:
            raise ScenarioError(path, f"cloud.{key}", f"is not a cloud key{did_you_mean(key, CLOUD_KEYS)}")
        if not isinstance(value, CLOUD_KEYS[key]):
            raise ScenarioError(path, f"cloud.{key}", f"must be a {CLOUD_KEYS[key].__name__}, not {value!r}")
    checked = {k: v for k, v in limits.items() if isinstance(v, int)}
    scenario = Scenario(name, path, description, dimensions, config, checked, steps, cloud, _contending(path, raw))
    if not any(True for _ in scenario._product()):  # noqa: SLF001 - its own module
        raise ScenarioError(path, "dimensions", "leave no combination of values a cloud can have")
    return scenario


def _contending(path: str, raw: Mapping[str, Any]) -> bool:
    contending = raw.get("contending", False)
    if not isinstance(contending, bool):
        raise ScenarioError(path, "contending", f"must be true or false, not {contending!r}")
    return contending


def _table(path: str, key: str, value: object) -> dict[str, object]:
    if not isinstance(value, dict):
        raise ScenarioError(path, key, f"must be a table, not {value!r}")
    return dict(value)


def _config(path: str, raw: object) -> dict[str, object]:
    """The ``[config]`` table, each key known and its value of the key's type.

    A dotted key written without quotes is a nested table in TOML (``snapshot.poll.interval = 900``): it is read back
    as the dotted name.
    """
    table: dict[str, object] = {}

    def flatten(prefix: str, value: object) -> None:
        if isinstance(value, dict):
            for part, inner in value.items():
                flatten(f"{prefix}.{part}" if prefix else str(part), inner)
        else:
            table[prefix] = value

    flatten("", _table(path, "config", raw))
    for name, value in table.items():
        key = KEYS.get(name)
        if key is None:
            raise ScenarioError(path, f"config.{name}", f"is not a config key{did_you_mean(name, KEYS)}")
        if not isinstance(value, key.type) or (key.type is int and isinstance(value, bool)):
            raise ScenarioError(path, f"config.{name}", f"must be a {key.type.__name__}, not {value!r}")
    return table


def _dimensions(path: str, raw: object) -> dict[str, tuple[str, ...]]:
    table = _table(path, "dimensions", raw)
    out: dict[str, tuple[str, ...]] = {}
    for key in table:
        if key not in DIMENSIONS:
            raise ScenarioError(path, f"dimensions.{key}", f"is not a dimension{did_you_mean(key, DIMENSIONS)}")
    for dimension, allowed in DIMENSIONS.items():
        default = [v for v in allowed if v not in OPT_IN_POOLS]
        values = table.get(dimension, default)
        if not isinstance(values, list) or not values:
            raise ScenarioError(path, f"dimensions.{dimension}", f"must be a non-empty list of {', '.join(allowed)}")
        for value in values:
            if value not in allowed:
                raise ScenarioError(
                    path,
                    f"dimensions.{dimension}",
                    f"{value!r} is not one of {', '.join(allowed)}{did_you_mean(str(value), allowed)}",
                )
        out[dimension] = tuple(v for v in allowed if v in values)
    return out


def _step(path: str, n: int, raw: object) -> Step:
    where = f"step {n}"
    if not isinstance(raw, dict):
        raise ScenarioError(path, where, "must be a table")
    kinds = [k for k in ("call", "run", "advance", "poll", "background", "restart") if k in raw]
    if len(kinds) != 1:
        raise ScenarioError(path, where, "must have exactly one of call, run, advance, poll, background, restart")
    kind = str(raw["call"]) if kinds[0] == "call" else kinds[0]
    if kinds[0] == "call" and kind not in CALLS:
        raise ScenarioError(
            path, f"{where}: call", f"{kind!r} is not one of {', '.join(CALLS)}{did_you_mean(kind, CALLS)}"
        )
    for key in raw:
        if key not in _STEP_KEYS[kind]:
            raise ScenarioError(
                path, f"{where}: {key}", f"is not a key of a {kind} step{did_you_mean(key, _STEP_KEYS[kind])}"
            )
    fields: dict[str, Any] = {"kind": kind}
    for key, types, check in (
        ("ms", int, lambda v: v in (1, 2)),
        ("snapshot", int, lambda v: v >= 1),
        ("zone", int, lambda v: v in (1, 2)),
        ("to_zone", int, lambda v: v == SECOND),
        ("keep", int, lambda v: v >= 1),
        ("advance", int, lambda v: v > 0),
        ("restart", int, lambda v: v in (1, 2)),
        ("async_backup", bool, lambda _: True),
        ("quiescevm", bool, lambda _: True),
        ("zone_copy", bool, lambda _: True),
        ("location_type", str, lambda v: v in ("PRIMARY", "SECONDARY")),
        ("name", str, bool),
        ("interval", str, lambda v: v in ("HOURLY", "DAILY", "WEEKLY", "MONTHLY")),
        ("schedule", str, bool),
    ):
        if key not in raw:
            continue
        value = raw[key]
        if not isinstance(value, types) or (types is int and isinstance(value, bool)) or not check(value):
            raise ScenarioError(path, f"{where}: {key}", f"{value!r} is not a valid {key}")
        fields[{"to_zone": "zone", "advance": "seconds", "restart": "ms"}.get(key, key)] = value
    for key in ("run", "poll", "background"):
        if key in raw and raw[key] is not True:
            raise ScenarioError(path, f"{where}: {key}", "must be true")
    if kind in ("deleteSnapshot", "copySnapshot") and "snapshot" not in raw:
        raise ScenarioError(path, f"{where}: snapshot", f"is required by {kind} (which createSnapshot, from 1)")
    if kind == "copySnapshot" and "to_zone" not in raw:
        raise ScenarioError(path, f"{where}: to_zone", "is required by copySnapshot (2: the second zone)")
    return Step(**fields)


def select(instances: Sequence[Instance], patterns: Sequence[str]) -> list[Instance]:
    """The instances whose name, or whose scenario's name, matches one of ``patterns`` (shell-style); all if none.

    Raises:
        ScenarioError: a pattern matches nothing (with the nearest scenario name).
    """
    if not patterns:
        return list(instances)
    chosen: list[Instance] = []
    for pattern in patterns:
        found = [
            i
            for i in instances
            if fnmatch.fnmatchcase(i.scenario.name, pattern) or fnmatch.fnmatchcase(i.name, pattern)
        ]
        if not found:
            names = sorted({i.scenario.name for i in instances})
            raise ScenarioError("--scenario", pattern, f"matches no scenario or instance{did_you_mean(pattern, names)}")
        chosen.extend(i for i in found if i not in chosen)
    return [i for i in instances if i in chosen]


@functools.cache
def instances_named(scenario_dir: str | None, full: bool) -> dict[str, Instance]:
    """The instances of the scenarios in ``scenario_dir`` (default: the project's), by name; built once per process.

    Raises:
        ScenarioError: a scenario file is malformed.
    """
    directory = Path(scenario_dir) if scenario_dir is not None else default_scenarios_dir()
    return {i.name: i for i in choose(load_scenarios(directory), full=full)}
