"""What every benchmark prints and stores about the machine it ran on."""

from __future__ import annotations

import contextlib
import datetime as dt
import importlib.metadata
import os
import platform
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def machine_info(packages: Sequence[str]) -> dict[str, Any]:
    """CPU, cores, Python, the versions of ``packages``, the temp dir's filesystem, load."""
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count() or 0
    versions = {}
    for pkg in packages:
        try:
            versions[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            versions[pkg] = "not installed"
    return {
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "usable_cores": usable,
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "platform": platform.platform(),
        "packages": versions,
        "tmp_fs": fs_type(Path(tempfile.gettempdir())),
        "loadavg_start": loadavg(),
    }


def loadavg() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def fs_type(path: Path) -> str:
    """The filesystem type (and mount point) holding ``path``, from /proc/mounts."""
    best, fstype = "", "unknown"
    target = str(path.resolve()) + "/"
    with contextlib.suppress(OSError), open("/proc/mounts") as f:
        for line in f:
            parts = line.split()
            if len(parts) < 3 or len(parts[1]) <= len(best):
                continue
            if target.startswith(parts[1].rstrip("/") + "/"):
                best, fstype = parts[1], parts[2]
    return f"{fstype} ({best or '?'})"
