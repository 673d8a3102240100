"""The exception tree: one root, shallow, so callers can catch ``TelemetryError``.

Expected runtime failures (disk full, endpoint down, bad payloads) are *not* raised:
they are counted and logged. Only programming and configuration mistakes raise.
"""

from __future__ import annotations

__all__ = ["ClientClosedError", "ConfigError", "TelemetryError"]


class TelemetryError(Exception):
    """Root of every exception this package raises on purpose."""


class ConfigError(TelemetryError, ValueError):
    """Invalid configuration. The message names the environment variable and the bad value,
    and ends with how to switch telemetry off (a disabled client never raises this)."""

    def __init__(self, message: str, *, variable: str | None = None) -> None:
        super().__init__(message)
        self.variable = variable


class ClientClosedError(TelemetryError, RuntimeError):
    """The client was used after ``aclose()``/``close()``; create a new one instead."""
