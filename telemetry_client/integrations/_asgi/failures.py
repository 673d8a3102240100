"""The middleware's own failures: counted per process and logged at most once a minute.

Nothing the integration does for telemetry may change the app's behaviour, so every step
is guarded and a failure ends here instead of in the app.
"""

from __future__ import annotations

import threading

from telemetry_client._internal.log import RateLimitedLogger

__all__ = ["failed", "telemetry_failures"]

_log = RateLimitedLogger(60.0)
_failures_lock = threading.Lock()
_failures = [0]


def telemetry_failures() -> int:
    """How many telemetry steps the integration skipped because they failed (this process)."""
    return _failures[0]


def failed(where: str, exc: BaseException) -> None:
    """Count and log (rate-limited) a telemetry step that failed and was skipped."""
    with _failures_lock:
        _failures[0] += 1
    _log.warning(
        f"integration-{where}",
        "telemetry: %s failed and was skipped (%s); the app is unaffected",
        where,
        type(exc).__name__,
    )
