"""A database written row by row, for the invariants' tests: what a run could leave, good or bad, with no run.

:class:`Rows` opens an in-memory store with one zone, a pool, an image store, an account and a volume, and writes
snapshots, refs, objects, jobs, log rows, failures and usage events exactly as given: nothing checks that a run
could reach them, so a test states the bad database it means.
"""

from __future__ import annotations

import json

from snapshotfsm.invariants import Run, Violation
from snapshotfsm.invariants.base import Invariant
from snapshotfsm.names import JobState
from snapshotfsm.orchestration.copy_api import COPY_SNAPSHOT_CMD
from snapshotfsm.orchestration.delete import DELETE_SNAPSHOT_CMD
from snapshotfsm.orchestration.jobs import CREATE_SNAPSHOT_CMD
from snapshotfsm.store.records import (
    Account,
    AsyncJob,
    Failure,
    ImageStore,
    Snapshot,
    SnapshotStoreRef,
    StorageObject,
    StoragePool,
    TransitionLog,
    UsageEvent,
    Volume,
    Zone,
)
from snapshotfsm.store.store import Store

CMD = {"create": CREATE_SNAPSHOT_CMD, "delete": DELETE_SNAPSHOT_CMD, "copy": COPY_SNAPSHOT_CMD}


class Rows:
    """An in-memory store and the inventory the rows hang on: ``pool`` and ``image`` in ``zone``, ``pool2`` and
    ``image2`` in ``zone2``."""

    def __init__(self) -> None:
        self.store = Store.open(":memory:")
        self.zone = self.store.insert(Zone(name="zone1"))
        self.zone2 = self.store.insert(Zone(name="zone2"))
        self.pool = self.store.insert(
            StoragePool(name="pool", data_center_id=self.zone.id, pool_type="NetworkFilesystem")
        )
        self.pool2 = self.store.insert(
            StoragePool(name="pool2", data_center_id=self.zone2.id, pool_type="NetworkFilesystem")
        )
        self.image = self.store.insert(ImageStore(name="image", data_center_id=self.zone.id))
        self.image2 = self.store.insert(ImageStore(name="image2", data_center_id=self.zone2.id))
        self.account = self.store.insert(Account(account_name="alice"))
        self.volume = self.store.insert(
            Volume(name="data", account_id=self.account.id, data_center_id=self.zone.id, pool_id=self.pool.id, size=8)
        )

    def snapshot(self, status: str = "BackedUp", *, removed: bool = False) -> int:
        """A snapshot row of the volume, in ``status``."""
        row = self.store.insert(
            Snapshot(
                data_center_id=self.zone.id,
                account_id=self.account.id,
                volume_id=self.volume.id,
                name=f"snap{self.store.count(Snapshot) + 1}",
                status=status,
                removed="2026-01-01 00:00:00" if removed else None,
            )
        )
        return row.id

    def ref(
        self,
        snapshot_id: int,
        role: str,
        state: str,
        path: str | None,
        *,
        store_id: int | None = None,
        checkpoint: str | None = None,
    ) -> int:
        """A ref of the snapshot on the pool (``Primary``) or the image store (``Image``), naming ``path``."""
        default = self.pool.id if role == "Primary" else self.image.id
        row = self.store.insert(
            SnapshotStoreRef(
                store_id=store_id or default,
                store_role=role,
                snapshot_id=snapshot_id,
                volume_id=self.volume.id,
                state=state,
                install_path=path,
                kvm_checkpoint_path=checkpoint,
                physical_size=4,
            )
        )
        return row.id

    def obj(
        self,
        store_kind: str,
        path: str,
        snapshot_id: int | None,
        *,
        kind: str = "snapshot",
        parent: str | None = None,
        deleted: bool = False,
        store_id: int | None = None,
    ) -> int:
        """An object on the pool (``primary``) or the image store (``image``); ``deleted`` marks it gone."""
        default = self.pool.id if store_kind == "primary" else self.image.id
        row = self.store.insert(
            StorageObject(
                store_kind=store_kind,
                store_id=store_id or default,
                path=path,
                kind=kind,
                snapshot_id=snapshot_id,
                volume_id=self.volume.id,
                parent_path=parent,
                deleted_ms=5 if deleted else None,
            )
        )
        return row.id

    def job(
        self,
        cmd: str,
        status: str,
        snapshot_id: int | None,
        *,
        code: int = 0,
        info: object = None,
        result: str | None = None,
    ) -> int:
        """A finished (or running) API job of ``cmd`` (create, delete, copy) about the snapshot."""
        row = self.store.insert(
            AsyncJob(
                account_id=self.account.id,
                job_cmd=CMD[cmd],
                job_cmd_info=info if isinstance(info, str) else json.dumps(info or {"id": snapshot_id}),
                job_status=JobState.ordinal(status),
                job_result_code=code,
                job_result=result,
                instance_type="Snapshot",
                instance_id=snapshot_id,
            )
        )
        return row.id

    def log(
        self,
        machine: str,
        entity_id: int,
        source: str,
        event: str,
        dest: str,
        *,
        job_id: int | None,
        kind: str = "event",
        overwrote: str | None = None,
    ) -> None:
        """A ``transition_log`` row, as if a step had moved the entity for ``job_id``."""
        self.store.insert(
            TransitionLog(
                machine=machine,
                entity_id=entity_id,
                source=source,
                event=event,
                dest=dest,
                kind=kind,
                job_id=job_id,
                ms_id=1,
                at_ms=0,
                overwrote=overwrote,
            )
        )

    def failure(self, job_id: int, exc_type: str, *, step: str = "take.prepare") -> None:
        """A ``failure`` row of a step that raised ``exc_type`` for the job."""
        self.store.insert(
            Failure(
                workflow_id=1,
                job_id=job_id,
                machine="take_snapshot",
                state="Requested",
                event="Prepare",
                step=step,
                error_event="Fail",
                exc_type=exc_type,
                message="boom",
                at_ms=0,
            )
        )

    def usage(self, event_type: str, snapshot_id: int, *, zone_id: int | None = None) -> None:
        """A usage event of the snapshot (zone 1 unless given)."""
        self.store.insert(
            UsageEvent(
                type=event_type, account_id=self.account.id, zone_id=zone_id or self.zone.id, resource_id=snapshot_id
            )
        )

    def check(self, invariant: Invariant) -> list[Violation]:
        """What ``invariant`` finds in these rows."""
        return invariant(Run(store=self.store))

    def details(self, invariant: Invariant) -> list[str]:
        """The ``subject: detail`` of each breach ``invariant`` finds."""
        return [f"{v.subject}: {v.detail}" for v in self.check(invariant)]
