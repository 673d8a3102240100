"""A logger that says the same thing at most once per cooldown.

Background loops meet the same failure thousands of times a second (disk full, endpoint
down); the host app's logs must not drown. Each message key is logged once, then muted
for ``cooldown_s``; the next line says how many repeats were suppressed.
"""

from __future__ import annotations

import logging
import threading
import time

__all__ = ["RateLimitedLogger", "logger"]

logger = logging.getLogger("telemetry_client")


class RateLimitedLogger:
    """Rate-limits by key; thread-safe; cheap when muted (a dict lookup and a clock read)."""

    def __init__(self, cooldown_s: float = 60.0, log: logging.Logger = logger) -> None:
        self._cooldown = cooldown_s
        self._log = log
        self._lock = threading.Lock()
        self._last: dict[str, float] = {}
        self._muted: dict[str, int] = {}

    def warning(self, key: str, msg: str, *args: object) -> None:
        """Log ``msg % args`` at WARNING unless ``key`` was logged within the cooldown."""
        self._emit(logging.WARNING, key, msg, args)

    def error(self, key: str, msg: str, *args: object) -> None:
        """Log ``msg % args`` at ERROR unless ``key`` was logged within the cooldown."""
        self._emit(logging.ERROR, key, msg, args)

    def _emit(self, level: int, key: str, msg: str, args: tuple[object, ...]) -> None:
        now = time.monotonic()
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last < self._cooldown:
                self._muted[key] = self._muted.get(key, 0) + 1
                return
            self._last[key] = now
            muted = self._muted.pop(key, 0)
        if muted:
            msg = f"{msg} ({muted} similar messages suppressed)"
        self._log.log(level, msg, *args)
