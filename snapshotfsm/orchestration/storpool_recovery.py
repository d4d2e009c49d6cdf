"""StorPool's recovery check: unexport snapshots copied to another cluster (spec §8).

``StorPoolAbandonObjectsCollector.StorPoolSnapshotRecoveryCheck``, a single-thread executor scheduled at a fixed rate
of ``storpool.snapshot.recovery.from.remote.check`` seconds (first run after one period; 0 or less: never). Each run:

1. every StorPool pool (none: nothing to do); every ``SP_RECOVERED_SNAPSHOT`` detail (none: nothing to do);
2. one pool per zone, the **last** one listed in each zone;
3. for each such pool, its cluster's ``SnapshotsList``: the names of the snapshots that are not
   ``recoveringFromRemote``. For each detail ``~<name>;<location>`` whose name is in that list, ``snapshotUnexport``
   on the cluster that owns the snapshot; a success queues the detail's removal, an error keeps it for the next run.
   Any exception (a failed listing, an unexport that throws) ends that zone's pass, only logged;
4. the queued details are deleted, after every zone.

Since every zone's list is checked, the source cluster's own (never recovering) snapshot matches too: a copy is
unexported on the first run after its export, whether or not the remote cluster finished recovering it, unless the
source pool is not the pool checked for its zone.

The task lives in the management server's memory (scheduler owner = ``ms_id``): a crash drops it, and
:meth:`~snapshotfsm.engine.Engine.start_background_tasks` starts it again.
"""

from __future__ import annotations

import logging

import attrs

from snapshotfsm.drivers.base import Answer
from snapshotfsm.drivers.storpool import SP_DEV_PATH, StorPoolDriver, sp_name
from snapshotfsm.errors import CloudException, CloudRuntimeException
from snapshotfsm.orchestration.runtime import Runtime
from snapshotfsm.store.records import SnapshotDetail, StoragePool
from snapshotfsm.strategies.storpool import SP_RECOVERED_SNAPSHOT

log = logging.getLogger(__name__)

PERIOD_KEY = "storpool.snapshot.recovery.from.remote.check"
TASK_LABEL = "StorPoolSnapshotRecoveryCheck"
SP_PROVIDER_NAME = "StorPool"


@attrs.frozen
class RecoveryReport:
    """What one run of the check did: zones checked, snapshots unexported, details removed, zones that failed."""

    zones: tuple[int, ...] = ()
    unexported: tuple[str, ...] = ()
    removed_details: int = 0
    failed_zones: tuple[int, ...] = ()


def start_check(rt: Runtime) -> bool:
    """Schedule the check every ``storpool.snapshot.recovery.from.remote.check`` s; False when that is 0 or less.

    ``scheduleAtFixedRate(task, period, period)``: the first run is one period after the start. The period is read
    once, when the collector starts.
    """
    period_s = rt.config.number(PERIOD_KEY)
    if period_s <= 0:
        return False
    period_ms = period_s * 1000
    incarnation = rt.incarnation

    def tick() -> None:
        if rt.incarnation != incarnation:
            return
        rt.crash_point(f"tick.{TASK_LABEL}")
        run_once(rt)
        rt.scheduler.call_later(period_ms, tick, label=TASK_LABEL, owner=rt.ms_id, periodic=True)

    rt.scheduler.call_later(period_ms, tick, label=TASK_LABEL, owner=rt.ms_id, periodic=True)
    return True


def run_once(rt: Runtime) -> RecoveryReport:
    """One run of ``StorPoolSnapshotRecoveryCheck.runInContext``."""
    store = rt.store
    pools = store.find(StoragePool, "storage_provider_name = ? AND removed IS NULL", (SP_PROVIDER_NAME,))
    if not pools:
        return RecoveryReport()
    details = store.find(SnapshotDetail, "name = ?", (SP_RECOVERED_SNAPSHOT,))
    if not details:
        return RecoveryReport()
    one_pool_per_zone: dict[int, StoragePool] = {}
    for pool in pools:
        one_pool_per_zone[pool.data_center_id] = pool  # the last pool listed in a zone wins
    queued: list[int] = []
    unexported: list[str] = []
    failed: list[int] = []
    for zone_id, pool in one_pool_per_zone.items():
        log.debug("Checking StorPool recovered snapshots for zone [%s]", zone_id)
        try:
            _collect(rt, pool, details, queued, unexported)
        except CloudException as exc:
            log.warning("Could not collect StorPool recovered snapshots %s", exc.message)
            failed.append(zone_id)
    removed = 0
    for detail_id in dict.fromkeys(queued):
        detail = store.first(SnapshotDetail, "id = ?", (detail_id,))
        if detail is not None:
            store.delete(detail, by="StorPoolSnapshotRecoveryCheck")
            removed += 1
    return RecoveryReport(tuple(one_pool_per_zone), tuple(unexported), removed, tuple(failed))


def _collect(
    rt: Runtime, pool: StoragePool, details: list[SnapshotDetail], queued: list[int], unexported: list[str]
) -> None:
    """``collectRecoveredSnapshotAfterExport`` for one zone's pool.

    Raises:
        CloudRuntimeException: the cluster's snapshot list could not be read, or an unexport threw.
    """
    driver = _storpool(rt, pool)
    listed = snapshots_not_recovering(driver)
    if not listed:
        return
    for detail in details:
        parts = detail.value.split(";")
        if len(parts) != 2:  # noqa: PLR2004 - "~<name>;<location>"
            continue
        name, location = parts
        if name not in listed:
            continue
        answer = _owner(rt, name, driver).snapshot_unexport(name, location)
        if answer.result:
            log.debug("Unexport of snapshot %s was successful", name)
            queued.append(detail.id)
            unexported.append(name)
        else:
            log.info("Could not recover StorPool snapshot %s", answer.details)


def snapshots_not_recovering(driver: StorPoolDriver) -> list[str]:
    """``SnapshotsList`` of the pool's cluster: the names of snapshots whose ``recoveringFromRemote`` is false.

    Raises:
        CloudRuntimeException: the listing failed (a fault on ``storpool.snapshotsList``).
    """
    names: list[str] = []

    def effect() -> Answer:
        recovering = set(driver.recovering())
        names.extend(n for n in (sp_name(o.path) for o in driver.objects()) if n not in recovering)
        return Answer(result=True)

    answer = driver.call_sync("snapshotsList", effect)
    if not answer.result:
        raise CloudRuntimeException(answer.details)
    return names


def _owner(rt: Runtime, name: str, fallback: StorPoolDriver) -> StorPoolDriver:
    """``findClusterIdByGlobalId(getSnapshotClusterId(name))``: the cluster where the snapshot is exported from.

    The model's clusters are the StorPool pools: the one whose copy of the snapshot is exported, else ``fallback``.
    """
    path = SP_DEV_PATH + name.removeprefix("~")
    for pool in rt.store.find(StoragePool, "storage_provider_name = ? AND removed IS NULL", (SP_PROVIDER_NAME,)):
        driver = _storpool(rt, pool)
        found = driver.find(path)
        if found is not None and found.exported_to is not None:
            return driver
    return fallback


def _storpool(rt: Runtime, pool: StoragePool) -> StorPoolDriver:
    driver = rt.drivers.primary(pool)
    if not isinstance(driver, StorPoolDriver):
        raise CloudRuntimeException(f"storage pool {pool.id} ({pool.name}) is not served by the StorPool driver")
    return driver
