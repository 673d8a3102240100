"""What the OTLP destination needs from the settings (docs/otlp.md).

``TELEMETRY_OTLP_ENDPOINT`` is a base URL, as ``OTEL_EXPORTER_OTLP_ENDPOINT``: the signal
paths ``/v1/traces`` and ``/v1/logs`` are appended. ``TELEMETRY_OTLP_HEADERS`` is
``key=value,key2=value2`` with URL-encoded values, as ``OTEL_EXPORTER_OTLP_HEADERS``; the
headers usually carry credentials, so they are kept out of ``repr`` and never logged.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import unquote

from telemetry_client.settings import TelemetrySettings

__all__ = ["DESTINATION_NAME", "OtlpConfig", "parse_headers"]

DESTINATION_NAME = "otlp"


def parse_headers(text: str | None) -> dict[str, str]:
    """``key=value,key2=value2`` (URL-encoded) -> a dict; empty items are skipped."""
    out: dict[str, str] = {}
    for item in (text or "").split(","):
        key, sep, value = item.partition("=")
        if sep and key.strip():
            out[unquote(key.strip())] = unquote(value.strip())
    return out


@dataclass(frozen=True, slots=True)
class OtlpConfig:
    """Base URL, headers (secret), timeout of the OTLP/HTTP destination."""

    endpoint: str  # base URL, e.g. http://127.0.0.1:4318
    headers: dict[str, str] = field(default_factory=dict, repr=False)
    timeout: float = 10.0
    fsync: bool = True  # fsync the rejection counters

    @property
    def traces_url(self) -> str:
        return self.endpoint.rstrip("/") + "/v1/traces"

    @property
    def logs_url(self) -> str:
        return self.endpoint.rstrip("/") + "/v1/logs"

    @classmethod
    def from_settings(cls, settings: TelemetrySettings) -> OtlpConfig | None:
        """The OTLP part of ``settings``; ``None`` without ``TELEMETRY_OTLP_ENDPOINT``."""
        if not settings.otlp_endpoint:
            return None
        secret = settings.otlp_headers
        return cls(
            endpoint=settings.otlp_endpoint,
            headers=parse_headers(secret.get_secret_value() if secret else None),
            timeout=settings.otlp_timeout,
            fsync=settings.fsync == "batch",
        )
