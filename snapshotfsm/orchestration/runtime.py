"""Everything a step reaches, for one management server: store, clock, scheduler, config, drivers, strategies."""

from __future__ import annotations

import random
import uuid

import attrs

from snapshotfsm.clock import SimClock
from snapshotfsm.config import Config
from snapshotfsm.drivers.registry import Drivers
from snapshotfsm.errors import MsCrash
from snapshotfsm.faults import FaultPlan
from snapshotfsm.profiles import Profile
from snapshotfsm.record import RunRecord
from snapshotfsm.scheduler import Scheduler
from snapshotfsm.store.store import Store
from snapshotfsm.strategies.base import StrategyEnv
from snapshotfsm.strategies.factory import StrategyFactory


@attrs.define(eq=False)
class Runtime:
    """One management server's services; ``incarnation`` changes at every restart."""

    store: Store
    clock: SimClock
    scheduler: Scheduler
    config: Config
    drivers: Drivers
    factory: StrategyFactory
    strategy_env: StrategyEnv
    faults: FaultPlan
    profile: Profile
    ms_id: int
    rng: random.Random
    record: RunRecord = attrs.field(factory=RunRecord)
    """The world's notebook (:mod:`snapshotfsm.record`), shared by its servers, kept across crashes."""
    incarnation: int = 1
    down: bool = False
    """The server crashed and has not restarted: it takes no calls."""
    scheduler_timestamp_ms: int | None = None
    """``SnapshotSchedulerImpl._currentTimestamp``: set at configure and at each poll (spec §9.2)."""

    def crash_point(self, where: str) -> None:
        """A point of the fault catalogue outside a step (a restart phase, a background tick): crash here if told.

        Raises:
            MsCrash: a crash rule fires at ``where``.
        """
        self.scheduler.where, self.scheduler.where_count = where, 0
        if self.faults.should_crash(self.ms_id, where, self.clock.now_ms):
            raise MsCrash(self.ms_id, where)

    def note(self, kind: str, source: str, target: str, text: str) -> None:
        """A moment of the run's timeline (when one is kept), placed after the log rows written so far."""
        if self.record.timeline is not None:
            self.record.note(kind, source, target, text, at_ms=self.clock.now_ms, after_log=self.store.log_position())

    def new_uuid(self) -> str:
        """A UUID from the engine's seeded generator: the same seed gives the same database."""
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))
