"""Everything a step reaches, for one management server: store, clock, scheduler, config, drivers, strategies."""

from __future__ import annotations

import random
import uuid

import attrs

from snapshotfsm.clock import SimClock
from snapshotfsm.config import Config
from snapshotfsm.drivers.registry import Drivers
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

    def new_uuid(self) -> str:
        """A UUID from the engine's seeded generator: the same seed gives the same database."""
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))
