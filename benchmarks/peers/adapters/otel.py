"""OpenTelemetry logs: ``logger.emit(event_name=event_type, attributes=data)``, OTLP/HTTP.

An OTel event is a log record with an ``event_name`` (the Events API was folded into the
Logs API); its payload goes in the attributes, which for logs may be nested maps, so
``data`` keeps its structure (the marker is a top-level attribute). The stdlib-``logging``
route (``LoggingHandler``) is not used: the SDK's handler is deprecated in this version
and flattens ``extra=`` into attributes the same way, only slower.

Pipeline: ``LoggerProvider`` -> ``BatchLogRecordProcessor`` -> ``OTLPLogExporter``
(``opentelemetry-exporter-otlp-proto-http``). Wire: ``POST <endpoint_base>/v1/logs``,
``Content-Type: application/x-protobuf``, body an ``ExportLogsServiceRequest``;
compression ``none`` by default, ``gzip`` or ``deflate`` on request. Any 2xx/3xx is
success (the body is not read); 429/502/503/504 and connection errors are retried with
backoff within the export timeout (10 s), anything else drops the batch.

Client side: ``emit`` builds the record (attributes are copied and validated) and appends
it to a ``deque`` of ``max_queue_size`` (2,048): when full the *oldest* record is dropped
(one WARNING, de-duplicated). One worker thread exports ``max_export_batch_size`` (512)
records per request, every ``schedule_delay`` (1 s) or as soon as 512 are queued.
Nothing else is sent (no tracer or meter provider is set up). OTEL_* environment
variables would change these defaults; the benchmark runs without them.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
from opentelemetry.exporter.otlp.proto.http.version import __version__ as EXPORTER_VERSION
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.version import __version__ as SDK_VERSION

SERVICE_NAME = "peers-bench"
#: ``max_queue_size`` for the nodrop modes: 10x the largest burst the benchmark emits.
NODROP_QUEUE = 1_000_000
DEFAULT_QUEUE = 2048  # BatchLogRecordProcessor's default, for the notes
DEFAULT_BATCH = 512


class OtelAdapter:
    name = "otel"
    version = f"opentelemetry-sdk {SDK_VERSION}, exporter-otlp-proto-http {EXPORTER_VERSION}"

    def __init__(self, endpoint_base: str, mode: str) -> None:
        nodrop = mode in ("nodrop", "nodrop_compressed")
        compression = Compression.Gzip if mode == "nodrop_compressed" else None
        exporter = OTLPLogExporter(
            endpoint=f"{endpoint_base.rstrip('/')}/v1/logs", compression=compression
        )
        queue = NODROP_QUEUE if nodrop else DEFAULT_QUEUE
        processor = BatchLogRecordProcessor(exporter, max_queue_size=queue if nodrop else None)
        self.provider = LoggerProvider(resource=Resource.create({"service.name": SERVICE_NAME}))
        self.provider.add_log_record_processor(processor)
        self.logger = self.provider.get_logger("peers-bench")
        self.timed_out = False
        self.notes = (
            f"Logs API emit(event_name, attributes=data) -> BatchLogRecordProcessor queue"
            f" {queue:,} (drops oldest when full), batches of {DEFAULT_BATCH} / 1 s,"
            f" OTLP/HTTP protobuf /v1/logs, {'gzip' if compression else 'no compression (default)'}"
        )

    def emit(self, event_type: str, data: dict[str, Any]) -> None:
        self.logger.emit(event_name=event_type, attributes=data)

    def finish(self, timeout: float) -> None:
        """``force_flush()`` (exports everything queued), then ``shutdown()``."""
        deadline = time.monotonic() + timeout
        flushed = _within(deadline, lambda: self.provider.force_flush(int(timeout * 1000)))
        shut = _within(deadline, self.provider.shutdown)
        self.timed_out = not (flushed and shut)


def _within(deadline: float, fn: Callable[[], object]) -> bool:
    """Run ``fn`` on a daemon thread; False if it is still running at ``deadline``."""
    thread = threading.Thread(target=fn, name="peers-finish", daemon=True)
    thread.start()
    thread.join(max(0.0, deadline - time.monotonic()))
    return not thread.is_alive()


def make(endpoint_base: str, mode: str, marker_field: str) -> OtelAdapter:
    """``marker_field`` is a top-level log attribute, like every key of ``data``."""
    if mode not in ("defaults", "nodrop", "nodrop_compressed"):
        raise ValueError(f"unknown mode {mode!r}")
    return OtelAdapter(endpoint_base, mode)
