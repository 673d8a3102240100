"""OTLP/HTTP protobuf as a :class:`~telemetry_client.upload.Destination` (docs/otlp.md).

``send`` maps the batch (:mod:`.mapping`), then ``POST`` s ``<base>/v1/traces`` and
``<base>/v1/logs`` (gzip, ``application/x-protobuf``, the configured headers). The OTLP/HTTP
rules decide each answer: 2xx accepts (``partial_success`` rejections are counted, see
:mod:`.rejections`); 429, 502, 503, 504 and network errors are retried with backoff,
honouring ``Retry-After``; 401/403 pause uploads to this destination and 404/405 name the
variable to fix (a bad header or path must not lose data); any other answer refuses the
batch for good (dead letter once the other destinations settled it).

A batch's two requests are settled separately in this process: after a failure on logs, a
retry does not resend the traces. OTLP has no idempotency key, but the span ids derive from
event ids, so a resend after a crash repeats identical spans.
"""

from __future__ import annotations

import contextlib
import gzip
from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceResponse
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from telemetry_client._internal.log import RateLimitedLogger
from telemetry_client._internal.urls import display_url
from telemetry_client.upload._sender import Sender, SendResult
from telemetry_client.upload.destination import OutgoingBatch
from telemetry_client.upload.otlp.config import DESTINATION_NAME, OtlpConfig
from telemetry_client.upload.otlp.mapping import map_events
from telemetry_client.upload.otlp.rejections import Rejections
from telemetry_client.upload.policy import endpoint_problem

__all__ = ["RETRYABLE", "OtlpDestination"]

#: Answers the OTLP/HTTP specification retries (with network errors).
RETRYABLE = frozenset({429, 502, 503, 504})
_KEEP = frozenset({401, 403, 404, 405})  # a setting to fix: pause, never drop
_HEADERS = {"Content-Type": "application/x-protobuf", "Content-Encoding": "gzip"}
_DONE_MAX = 1024


@dataclass(slots=True)
class _Counters:
    otlp_spans: int = 0
    otlp_log_records: int = 0
    otlp_rejected: int = 0  # partial_success rejections (spans + log records)


class OtlpDestination:
    """An OTLP/HTTP receiver: OpenTelemetry Collector, Langfuse, Phoenix, Grafana..."""

    name = DESTINATION_NAME
    uploads_attachments = False  # attachments are referenced, not sent

    def __init__(
        self,
        config: OtlpConfig,
        *,
        spool_root: Path,
        log: RateLimitedLogger,
        sender: Sender | None = None,
    ) -> None:
        self._config = config
        self._log = log
        self.sender = sender or Sender(
            endpoint=config.traces_url,
            attachments_endpoint=None,
            token=None,
            timeout=config.timeout,
            headers=config.headers,
        )
        self.rejections = Rejections(spool_root, fsync=config.fsync)
        self._counters = _Counters()
        self._done: dict[str, None] = {}  # "<batch id>/traces" accepted by this process

    def send(self, batch: OutgoingBatch) -> SendResult:
        mapped = map_events(batch.events())
        result = SendResult(200)
        if mapped.traces is not None:
            result = self._export(
                batch,
                "traces",
                self._config.traces_url,
                mapped.traces.SerializeToString,
                ExportTraceServiceResponse,
                mapped.spans,
            )
            if not result.ok:
                return result
        if mapped.logs is not None:
            result = self._export(
                batch,
                "logs",
                self._config.logs_url,
                mapped.logs.SerializeToString,
                ExportLogsServiceResponse,
                mapped.log_records,
            )
        if result.ok:
            self._done.pop(f"{batch.batch_id}/traces", None)
        return result

    def explain(self, result: SendResult) -> str:
        """Status, URL (no credentials) and the setting to check, for 401/403/404/405."""
        url = result.url or display_url(self._config.endpoint)
        if result.status in (401, 403):
            return (
                f"{result.describe()} at {url}: check TELEMETRY_OTLP_HEADERS and"
                " TELEMETRY_OTLP_ENDPOINT"
            )
        return endpoint_problem(result.status or 0, url, "TELEMETRY_OTLP_ENDPOINT")

    def describe(self) -> dict[str, int]:
        return {f.name: getattr(self._counters, f.name) for f in fields(self._counters)}

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.sender.close()

    # -- one request ---------------------------------------------------------------------

    def _export(
        self,
        batch: OutgoingBatch,
        signal: str,
        url: str,
        serialize: Callable[[], bytes],
        response_type: Any,
        items: int,
    ) -> SendResult:
        key = f"{batch.batch_id}/{signal}"
        if key in self._done:
            return SendResult(200, url=display_url(url))
        body = gzip.compress(serialize(), compresslevel=1, mtime=0)  # level 1: 3x cheaper
        timeout = min(self._config.timeout, batch.timeout())  # shrinks toward a shutdown
        result, answer = self.sender.post(url, body, dict(_HEADERS), timeout=timeout)
        status = result.status
        if status is None or status in RETRYABLE or status in _KEEP:
            return result
        if not result.ok:
            return replace(result, final=True)  # OTLP: any other answer is not retried
        if signal == "traces":
            self._counters.otlp_spans += items
            if len(self._done) >= _DONE_MAX:
                self._done.pop(next(iter(self._done)))
            self._done[key] = None
        else:
            self._counters.otlp_log_records += items
        self._partial_success(signal, answer, response_type)
        return result

    def _partial_success(self, signal: str, answer: bytes, response_type: Any) -> None:
        if not answer:
            return
        try:
            partial = response_type.FromString(answer).partial_success
        except Exception:  # a receiver answering 2xx with another body: accepted, nothing to count
            return
        rejected = int(
            getattr(partial, f"rejected_{'spans' if signal == 'traces' else 'log_records'}")
        )
        message = str(partial.error_message)
        if not rejected and not message:
            return
        self._counters.otlp_rejected += rejected
        if signal == "traces":
            self.rejections.add(spans=rejected, message=message)
        else:
            self.rejections.add(log_records=rejected, message=message)
        self._log.warning(
            "otlp_partial",
            "telemetry OTLP export: the receiver rejected %d %s (%s)",
            rejected,
            "spans" if signal == "traces" else "log records",
            message or "no message",
        )
