"""Imports every module that registers step callbacks, so that the runner finds them all."""

from snapshotfsm.orchestration import (
    api,
    backup,
    backup_task,
    copies,
    copy_api,  # copySnapshot API job (copy_snapshot_job machine)
    delete,
    dispatch,
    gc,
    jobs,
    primary,
    retention,
    take,
)

__all__ = [
    "api",
    "backup",
    "backup_task",
    "copies",
    "copy_api",
    "delete",
    "dispatch",
    "gc",
    "jobs",
    "primary",
    "retention",
    "take",
]
