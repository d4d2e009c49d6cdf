"""The machine a benchmark ran on, in one line, for the top of its report (imported by each benchmark script)."""

from __future__ import annotations

import os
import platform
import sqlite3
from pathlib import Path


def machine() -> str:
    """CPUs and their model, the kernel, CPython and SQLite: what the numbers depend on."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (
        f"{os.cpu_count()} vCPU {cpu}, {platform.system()} {platform.release()}, "
        f"CPython {platform.python_version()}, SQLite {sqlite3.sqlite_version}"
    )
