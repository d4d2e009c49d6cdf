"""Random API calls, faults, clock advances, crashes and restarts over a small cloud (issues 4 and 5).

The machine is :class:`snapshotfsm.testing.EngineMachine`, which plugin authors run over their own driver and
strategy; here it runs over the built-ins, and once with extra pools of built-in shapes, the way a plugin adds its.
"""

from __future__ import annotations

from hypothesis import HealthCheck, settings

from snapshotfsm.testing import EngineMachine, PoolShape

TestCloud = EngineMachine.TestCase


class PoolsOfOnesOwn(EngineMachine):
    """What a plugin author writes: the pools their driver serves join the cloud (here CLVM and ONTAP)."""

    shapes = (
        PoolShape(pool_type="CLVM", format="RAW"),
        PoolShape("NetApp ONTAP", "Iscsi", managed=True, zone_wide=True),
    )


PoolsOfOnesOwn.TestCase.settings = settings(
    max_examples=10, stateful_step_count=20, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
TestPoolsOfOnesOwn = PoolsOfOnesOwn.TestCase
