"""Facts about the host stamped on events: an anonymised machine id and the app version.

Both are read once, on the writer thread (they touch the disk), never on the caller's loop.
"""

from __future__ import annotations

import hashlib
import platform
import uuid
from pathlib import Path

__all__ = ["detect_app_version", "machine_id"]

_MACHINE_ID_FILES = ("/etc/machine-id", "/var/lib/dbus/machine-id")


def machine_id() -> str:
    """A stable id for this machine that does not reveal the raw machine-id or MAC.

    sha256 over ``/etc/machine-id`` (systemd) when readable, else over host name and MAC,
    truncated to 16 hex digits; salted so it cannot be joined with other tools' hashes.
    """
    raw = ""
    for path in _MACHINE_ID_FILES:
        try:
            raw = Path(path).read_text().strip()
        except OSError:
            continue
        if raw:
            break
    if not raw:
        raw = f"{platform.node()}:{uuid.getnode():012x}"
    return hashlib.sha256(f"telemetry-client:{raw}".encode()).hexdigest()[:16]


def detect_app_version(start: Path | None = None) -> str | None:
    """The git commit SHA of the working directory's repository, when discoverable.

    Reads ``.git/HEAD`` (and the ref it points at, loose or packed) without running git.
    """
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        git = folder / ".git"
        if git.is_file():  # worktree / submodule: "gitdir: <path>"
            try:
                text = git.read_text().strip()
            except OSError:
                return None
            if not text.startswith("gitdir:"):
                return None
            git = (folder / text.split(":", 1)[1].strip()).resolve()
        if git.is_dir():
            return _read_head(git)
    return None


def _read_head(git: Path) -> str | None:
    try:
        head = (git / "HEAD").read_text().strip()
    except OSError:
        return None
    if not head.startswith("ref:"):
        return head[:40] or None
    ref = head.split(":", 1)[1].strip()
    for base in (git, _common_dir(git)):
        try:
            return (base / ref).read_text().strip()[:40] or None
        except OSError:
            pass
        try:
            for line in (base / "packed-refs").read_text().splitlines():
                if line.endswith(" " + ref):
                    return line.split(" ", 1)[0][:40]
        except OSError:
            pass
    return None


def _common_dir(git: Path) -> Path:
    try:
        return (git / (git / "commondir").read_text().strip()).resolve()
    except OSError:
        return git
