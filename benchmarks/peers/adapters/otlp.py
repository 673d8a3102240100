"""telemetry-client exporting OTLP: the spool, then OTLP/HTTP protobuf (docs/otlp.md).

The same client as ``adapters/telemetry_client.py`` (defaults: a temp spool, never drops)
with ``TELEMETRY_OTLP_ENDPOINT`` instead of the native endpoint: each batch is mapped to
OTLP (``tool_call`` events become ``execute_tool`` spans on ``/v1/traces``, the rest log
records on ``/v1/logs``, ``data`` as the body), gzip. Compared with the ``otel`` adapter
(opentelemetry-sdk's ``BatchLogRecordProcessor`` + ``OTLPLogExporter``) in the same run.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from telemetry_client import TelemetryClient, TelemetrySettings, __version__

READY_TIMEOUT_S = 10.0


class OtlpAdapter:
    name = "otlp"
    version = __version__

    def __init__(self, endpoint_base: str) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="tc-peers-otlp-"))
        settings = TelemetrySettings(
            spool_dir=self.root / "spool", otlp_endpoint=endpoint_base.rstrip("/")
        )
        self.client = TelemetryClient(settings)
        if not self.client.enabled:
            raise SystemExit("telemetry is disabled (TELEMETRY_ENABLED / DO_NOT_TRACK): unset it")
        s = settings
        self.notes = (
            f"defaults, OTLP only: spool in a temp dir (fsync={s.fsync}), batches of"
            f" {s.batch_max_events} events, mapped to OTLP spans/log records, protobuf + gzip"
            " to /v1/traces and /v1/logs (never drops)"
        )
        self.client.start()
        ready = self.root / "spool" / "batches"
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not ready.is_dir() and time.monotonic() < deadline:
            time.sleep(0.01)  # the writer thread opens the spool

    def emit(self, event_type: str, data: dict[str, Any]) -> None:
        self.client.emit(event_type, data)

    def finish(self, timeout: float) -> None:
        try:
            self.client.close(timeout)
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


def make(endpoint_base: str, mode: str, marker_field: str) -> OtlpAdapter:
    """One configuration for every mode: the spool never drops."""
    return OtlpAdapter(endpoint_base)
