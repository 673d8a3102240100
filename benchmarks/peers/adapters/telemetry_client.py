"""telemetry-client with its default settings: a temp spool, zstd on the wire, a token.

Every mode is the same configuration: the client never drops (past
``buffer_max_events`` buffered events, ``emit()`` encodes a chunk on the caller instead)
and zstd is its default upload compression. ``finish`` is ``client.close(timeout)``: a
bounded flush that returns once the collector acknowledged every batch.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from telemetry_client import TelemetryClient, TelemetrySettings, __version__

TOKEN = "peers-bench-token"  # noqa: S105 - the sink checks nothing
READY_TIMEOUT_S = 10.0


class TelemetryClientAdapter:
    name = "telemetry_client"
    version = __version__
    prefix = "tc-peers-"

    def __init__(self, endpoint_base: str) -> None:
        self.root = Path(tempfile.mkdtemp(prefix=self.prefix))
        settings = TelemetrySettings(
            spool_dir=self.root / "spool",
            # Experiments only (the published runs use the defaults): settings by JSON.
            **{
                **self.destination(endpoint_base),
                **json.loads(os.environ.get("TC_BENCH_SETTINGS", "{}")),
            },
        )
        self.client = TelemetryClient(settings)
        if not self.client.enabled:
            raise SystemExit("telemetry is disabled (TELEMETRY_ENABLED / DO_NOT_TRACK): unset it")
        self.notes = self.describe(settings)
        self.client.start()
        ready = self.root / "spool" / "batches"
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not ready.is_dir() and time.monotonic() < deadline:
            time.sleep(0.01)  # the writer thread opens the spool

    def destination(self, endpoint_base: str) -> dict[str, Any]:
        """The settings that say where batches go."""
        return {"endpoint": f"{endpoint_base}/api/v1/events", "token": TOKEN}

    def describe(self, s: TelemetrySettings) -> str:
        return (
            f"defaults: spool in a temp dir (fsync={s.fsync}), {s.upload_compression} on the"
            f" wire, redaction {'on' if s.redact else 'off'}, batches of"
            f" {s.batch_max_events} events / {s.batch_max_bytes // 1024} KiB, linger"
            f" {s.linger_ms} ms, buffer {s.buffer_max_events:,} events (past it emit() encodes"
            " on the caller: never drops)"
        )

    def emit(self, event_type: str, data: dict[str, Any]) -> None:
        self.client.emit(event_type, data)

    def finish(self, timeout: float) -> None:
        try:
            self.client.close(timeout)
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


def make(endpoint_base: str, mode: str, marker_field: str) -> TelemetryClientAdapter:
    """One configuration for every mode: defaults never drop and compress with zstd."""
    return TelemetryClientAdapter(endpoint_base)
