"""telemetry-client exporting OTLP: the spool, then OTLP/HTTP protobuf (docs/otlp.md).

The same client as ``adapters/telemetry_client.py`` (defaults: a temp spool, never drops)
with ``TELEMETRY_OTLP_ENDPOINT`` instead of the native endpoint: each batch is mapped to
OTLP (``tool_call`` events become ``execute_tool`` spans on ``/v1/traces``, the rest log
records on ``/v1/logs``, ``data`` as the body), gzip. Compared with the ``otel`` adapter
(opentelemetry-sdk's ``BatchLogRecordProcessor`` + ``OTLPLogExporter``) in the same run.
"""

from __future__ import annotations

from typing import Any

from telemetry_client import TelemetrySettings

from .telemetry_client import TelemetryClientAdapter


class OtlpAdapter(TelemetryClientAdapter):
    name = "otlp"
    prefix = "tc-peers-otlp-"

    def destination(self, endpoint_base: str) -> dict[str, Any]:
        return {"otlp_endpoint": endpoint_base.rstrip("/")}

    def describe(self, s: TelemetrySettings) -> str:
        return (
            f"defaults, OTLP only: spool in a temp dir (fsync={s.fsync}), batches of"
            f" {s.batch_max_events} events, mapped to OTLP spans/log records, protobuf + gzip"
            " to /v1/traces and /v1/logs (never drops)"
        )


def make(endpoint_base: str, mode: str, marker_field: str) -> OtlpAdapter:
    """One configuration for every mode: the spool never drops."""
    return OtlpAdapter(endpoint_base)
