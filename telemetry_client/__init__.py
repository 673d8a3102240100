"""telemetry-client: crash-safe, offline-first, full-content telemetry for LLM-agent backends.

Data path: ``TelemetryClient.emit()`` -> in-memory buffer -> writer thread (encode, redact,
zstd) -> ``spool`` on disk -> uploader -> collector.
"""

from . import events
from ._version import __version__
from .client import FlushResult, TelemetryClient
from .context import session_context
from .errors import ClientClosedError, ConfigError, TelemetryError
from .settings import TelemetrySettings
from .spool import Spool

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
