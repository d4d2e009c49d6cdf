"""Which strategy would revert a snapshot (spec §14.4): the factory's REVERT answer, asked through ``strategy_for``.

Revert itself is not modelled; its ``canHandle`` rules are, and they decide ``SnapshotObject.isRevertable``. The
default strategy wants a Ready ref in the volume's own zone; StorageSystem looks at the snapshot's Ready primary ref
before the volume's pool.
"""

from __future__ import annotations

import pytest
from cloud import Cloud
from lifecycle_cloud import answer, delete, refs, second_zone

from snapshotfsm.faults import FaultPlan
from snapshotfsm.store.records import Volume


def _reverts(cloud: Cloud, snapshot_id: int) -> str | None:
    strategy = cloud.engine.strategy_for(snapshot_id, "REVERT")
    return None if strategy is None else strategy.name


@pytest.mark.violates("usage-matches-objects")
def test_a_qcow2_snapshot_on_the_zones_image_store_is_the_default_strategys():
    cloud = Cloud()
    sid = cloud.take(cloud.volume("kvm-nfs")).snapshot.id
    assert refs(cloud.engine, sid) == [("Image", "Ready")]
    assert _reverts(cloud, sid) == "DefaultSnapshotStrategy"


@pytest.mark.violates("counts-match-recount", "usage-matches-objects")
def test_a_copy_only_in_another_zone_cannot_be_reverted_to():
    """Copied to zone2, then deleted from the volume's zone: its one Ready ref is elsewhere, so no strategy."""
    cloud = Cloud()
    zone2 = second_zone(cloud)
    sid = cloud.take(cloud.volume("kvm-nfs")).snapshot.id
    copy = cloud.engine.copy_snapshot(sid, dest_zone_ids=[zone2.id])
    cloud.engine.run()
    assert answer(cloud.engine, copy.id)[0] == "SUCCEEDED"
    assert delete(cloud, sid, zone_id=cloud.zone.id)[0] == "SUCCEEDED"
    assert refs(cloud.engine, sid) == [("Image", "Destroyed"), ("Image", "Ready")]
    assert _reverts(cloud, sid) is None


@pytest.mark.violates("usage-matches-objects")
def test_a_removed_volume_is_not_found():
    """``volumeDao.findById`` skips a removed volume: nothing to revert, whatever the refs."""
    cloud = Cloud()
    volume = cloud.volume("kvm-nfs")
    sid = cloud.take(volume).snapshot.id
    cloud.engine.store.remove(cloud.engine.store.get(Volume, volume.id), by="test")
    assert _reverts(cloud, sid) is None


@pytest.mark.violates("usage-matches-objects")
def test_a_raw_volume_on_clvm_reverts_from_the_image_store():
    """Not QCOW2, but on a CLVM pool with a Ready image ref in its zone: the default strategy's."""
    cloud = Cloud()
    sid = cloud.take(cloud.volume("kvm-clvm")).snapshot.id
    assert refs(cloud.engine, sid) == [("Image", "Ready")]
    assert _reverts(cloud, sid) == "DefaultSnapshotStrategy"


def test_vhd_on_unmanaged_storage_has_no_strategy():
    """The "VHD on NFS" refusal of §14.4: Default wants QCOW2, StorageSystem a managed pool."""
    cloud = Cloud()
    sid = cloud.take(cloud.volume("xen-nfs")).snapshot.id
    assert _reverts(cloud, sid) is None


@pytest.mark.violates("answer-matches-state", "counts-match-recount", "usage-matches-objects")
def test_a_backend_snapshot_needs_its_primary_ref_ready():
    """``takeSnapshot`` true: StorageSystem asks the pool of the Ready primary ref; with none it declines at once."""
    cloud = Cloud(faults=FaultPlan().fail("managed.deleteAsync"))
    sid = cloud.take(cloud.volume("solidfire")).snapshot.id
    assert _reverts(cloud, sid) == "StorageSystemSnapshotStrategy"
    assert delete(cloud, sid)[:2] == ("FAILED", 530)
    assert refs(cloud.engine, sid) == [("Primary", "Destroying")]
    assert _reverts(cloud, sid) is None
