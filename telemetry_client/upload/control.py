"""Upload state shared through the spool: the remote kill switch and the last outcome.

:class:`KillSwitch` is this process's view of the switch: the native destination reports
``X-Telemetry-Disable`` to it, the uploader refreshes it every step, and ``emit()`` reads
its ``until`` (one attribute read on the hot path, no disk).

Files (0600, atomically replaced, counted toward the spool cap like everything else):

- ``state/control.json``: ``{"disabled_until": <unix s>, "set_at": <unix s>}``. Written when
  a response carries ``X-Telemetry-Disable``; every process on the spool reads it (the
  uploader re-reads it when its mtime changes), so restarts and siblings honour the pause.
- ``state/last_upload.json``: the last upload outcome, for ``telemetry-client status``.
  Written on a change of outcome, and at most once a second otherwise.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from telemetry_client._internal import fs as _fs
from telemetry_client._internal.log import RateLimitedLogger
from telemetry_client.upload.policy import parse_disable

__all__ = ["Control", "KillSwitch", "LastUpload"]


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        obj = orjson.loads(path.read_bytes())
    except (OSError, ValueError):
        return None
    return obj if isinstance(obj, dict) else None


class Control:
    """The persisted kill switch of one spool (cheap to poll: a stat when nothing changed)."""

    def __init__(self, spool_root: Path, *, fsync: bool = True) -> None:
        self.path = Path(spool_root) / "state" / "control.json"
        self._fsync = fsync
        self._seen: tuple[int, int, int] | None = None
        self._until = 0.0

    def disabled_until(self) -> float:
        """Unix time the kill switch ends (0.0 when off); re-reads the file if it changed."""
        try:
            st = os.stat(self.path)
        except OSError:
            self._seen, self._until = None, 0.0
            return 0.0
        # The inode too: every write is a new file (atomic replace), and two writes within
        # one mtime tick can have the same size ("disabled_until": 1060.0 -> 1070.0).
        key = (st.st_ino, st.st_mtime_ns, st.st_size)
        if key != self._seen:
            obj = _read_json(self.path) or {}
            until = obj.get("disabled_until", 0.0)
            self._until = float(until) if isinstance(until, (int, float)) else 0.0
            self._seen = key
        return self._until

    def disable(self, seconds: float, now: float | None = None) -> float:
        """Turn the kill switch on for ``seconds`` (0 turns it off); returns the end time."""
        t = time.time() if now is None else now
        until = t + seconds if seconds > 0 else 0.0
        _fs.ensure_dir(self.path.parent)
        payload = orjson.dumps({"disabled_until": until, "set_at": t})
        _fs.atomic_write(self.path, payload, fsync=self._fsync)
        self._seen = None
        self._until = until
        return until


class KillSwitch:
    """The kill switch as this process sees it; ``until`` is its end (unix s, 0.0 when off).

    Read from disk at construction, not at the first upload step: a restarted process must
    not collect between its start and that step.
    """

    __slots__ = ("_clock", "_log", "control", "until")

    def __init__(
        self,
        control: Control,
        *,
        log: RateLimitedLogger,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.control = control
        self._log = log
        self._clock = clock
        self.until = 0.0
        self.refresh(clock())

    def refresh(self, now: float) -> float:
        """Re-read the switch (any process may set or lift it); returns its end time."""
        until = self.control.disabled_until()
        self.until = until if until > now else 0.0
        return until

    def observe(self, header: str | None) -> None:
        """Act on an ``X-Telemetry-Disable`` answer header (absent or malformed: nothing)."""
        seconds = parse_disable(header)
        if seconds is None:
            return
        try:
            until = self.control.disable(seconds, now=self._clock())
        except OSError as exc:
            self._log.warning("kill_switch_io", "telemetry: cannot persist kill switch: %s", exc)
            until = self._clock() + seconds if seconds > 0 else 0.0
        self.until = until
        if seconds > 0:
            self._log.warning(
                "kill_switch",
                "telemetry disabled by the collector for %.0f s (X-Telemetry-Disable);"
                " spooled data is kept",
                seconds,
            )


class LastUpload:
    """Records the latest upload outcome for ``status`` (rate-limited disk writes)."""

    def __init__(self, spool_root: Path, *, fsync: bool = False) -> None:
        self.path = Path(spool_root) / "state" / "last_upload.json"
        self._fsync = fsync
        self._lock = threading.Lock()
        self._last_written = 0.0
        self._last_outcome: str | None = None

    def record(self, outcome: str, detail: str, *, batches: int = 0, events: int = 0) -> None:
        now = time.time()
        with self._lock:
            if outcome == self._last_outcome and now - self._last_written < 1.0:
                return
            self._last_outcome, self._last_written = outcome, now
        payload = orjson.dumps(
            {"at": now, "outcome": outcome, "detail": detail, "batches": batches, "events": events}
        )
        with contextlib.suppress(OSError):  # status information only: never worth an error
            _fs.atomic_write(self.path, payload, fsync=self._fsync)

    def read(self) -> dict[str, Any] | None:
        return _read_json(self.path)
