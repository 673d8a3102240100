"""Per-client counters of the agent features: coercions and telemetry failures.

The run recorder and the file-change helpers never raise for telemetry reasons: a value
they had to coerce, or a step that failed (its event skipped), is counted here
(``client.tracking_stats()``) and logged at most once per cooldown.
"""

from __future__ import annotations

import threading
import weakref
from collections import Counter
from typing import TYPE_CHECKING, Any

from telemetry_client._internal.log import RateLimitedLogger

if TYPE_CHECKING:
    from telemetry_client.client import TelemetryClient

__all__ = ["Tracking", "tracking"]


class Tracking:
    """Per-client counters of the run recorder and file tracking (thread-safe)."""

    def __init__(self, log: RateLimitedLogger) -> None:
        self._lock = threading.Lock()
        self._log = log
        self.coerced: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()

    def coerce(self, kind: str, msg: str, *args: object) -> None:
        """Count a coercion of ``kind`` and log ``msg`` (at most once per cooldown)."""
        with self._lock:
            self.coerced[kind] += 1
        self._log.warning(f"tracking-coerce-{kind}", msg, *args)

    def failed(self, where: str, exc: BaseException) -> None:
        """Count a telemetry failure in ``where``; the event concerned is skipped."""
        with self._lock:
            self.errors[where] += 1
        self._log.warning(
            f"tracking-error-{where}",
            "telemetry: %s failed (%s: %s); event skipped",
            where,
            type(exc).__name__,
            exc,
        )

    def snapshot(self) -> dict[str, Any]:
        """``{"coerced": {kind: n}, "tracking_errors": n, "tracking_errors_by_call": {...}}``."""
        with self._lock:
            return {
                "coerced": dict(self.coerced),
                "tracking_errors": sum(self.errors.values()),
                "tracking_errors_by_call": dict(self.errors),
            }


_trackers: weakref.WeakKeyDictionary[TelemetryClient, Tracking] = weakref.WeakKeyDictionary()
_trackers_lock = threading.Lock()


def tracking(client: TelemetryClient) -> Tracking:
    """The :class:`Tracking` counters of ``client`` (created on first use)."""
    found = _trackers.get(client)
    if found is not None:
        return found
    with _trackers_lock:
        found = _trackers.get(client)
        if found is None:
            log = client._log if client.enabled else RateLimitedLogger()
            found = _trackers[client] = Tracking(log)
        return found
