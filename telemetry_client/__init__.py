"""telemetry-client: crash-safe, offline-first, full-content telemetry for LLM-agent backends.

Data path: ``TelemetryClient.emit()`` -> in-memory buffer -> writer thread (encode, redact,
zstd) -> ``spool`` on disk -> uploader -> collector.
"""

from telemetry_client import events
from telemetry_client._version import __version__
from telemetry_client.client import FlushResult, TelemetryClient
from telemetry_client.context import session_context
from telemetry_client.errors import ClientClosedError, ConfigError, TelemetryError
from telemetry_client.settings import TelemetrySettings
from telemetry_client.spool import Spool

__all__ = [
    "ClientClosedError",
    "ConfigError",
    "FlushResult",
    "Spool",
    "TelemetryClient",
    "TelemetryError",
    "TelemetrySettings",
    "__version__",
    "events",
    "session_context",
]
