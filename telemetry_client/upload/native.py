"""The native collector as a :class:`~.destination.Destination` (docs/protocol.md, upload.md).

``send`` = the batch's attachments first (:mod:`.attachments`), then ``POST`` the batch
body as stored (zstd; gzip re-encodes) with its id as ``Idempotency-Key``. A 413 splits the
batch in halves with ids derived from the parent (recursively, stable across retries and
processes); a single event still too large goes as its envelope with a size marker. Every
answer may carry ``X-Telemetry-Disable``, reported to the :class:`~.control.KillSwitch`.
"""

from __future__ import annotations

import contextlib
import gzip
from dataclasses import dataclass, fields

import orjson
import zstandard

from telemetry_client._internal import ids as _ids
from telemetry_client._internal.log import RateLimitedLogger
from telemetry_client._internal.urls import display_url
from telemetry_client.upload._sender import Sender, SendResult
from telemetry_client.upload.attachments import Attachments, BlobSource
from telemetry_client.upload.config import UploadConfig
from telemetry_client.upload.control import KillSwitch
from telemetry_client.upload.destination import ClaimedBatch, OutgoingBatch
from telemetry_client.upload.policy import Action, classify, endpoint_problem

__all__ = ["NativeCollector"]

_DEGRADED_EXCERPT = 1024


@dataclass(slots=True)
class _Counters:
    split_batches: int = 0
    degraded_events: int = 0


class NativeCollector:
    """The reference collector's protocol (v1): events and attachments endpoints."""

    name = "collector"
    uploads_attachments = True

    def __init__(
        self,
        config: UploadConfig,
        *,
        blobs: BlobSource,
        kill_switch: KillSwitch,
        log: RateLimitedLogger,
        sender: Sender | None = None,
    ) -> None:
        self._config = config
        self._kill_switch = kill_switch
        self._log = log
        self.sender = sender or Sender(
            endpoint=config.endpoint,
            attachments_endpoint=config.attachments_endpoint,
            token=config.token,
            timeout=config.timeout,
        )
        self._encoding = config.compression
        self._cctx = zstandard.ZstdCompressor(level=3, write_checksum=True)
        self._counters = _Counters()
        self.attachments = Attachments(
            sender=self.sender,
            blobs=blobs,
            encoding=self._encoding,
            observe=self._observe,
            log=log,
        )

    def send(self, batch: OutgoingBatch) -> SendResult:
        blocked = self.attachments.deliver(batch.attachments, batch.timeout)
        if blocked is not None:
            return blocked
        result = self._post(self._wire_body(batch.claim), batch.batch_id, batch)
        if classify(result) is Action.SPLIT:
            self._counters.split_batches += 1
            result = self._send_split(batch.claim.lines(), batch.batch_id, batch)
        return result

    def explain(self, result: SendResult) -> str:
        """Status, URL (no credentials) and the setting to check, for 401/403/404/405."""
        url = result.url or display_url(self._config.endpoint)
        if result.status in (401, 403):
            return f"{result.describe()} at {url}: check TELEMETRY_TOKEN and TELEMETRY_ENDPOINT"
        attachments = self._config.attachments_endpoint_set and url == display_url(
            self._config.attachments_endpoint
        )
        variable = "TELEMETRY_ATTACHMENTS_ENDPOINT" if attachments else "TELEMETRY_ENDPOINT"
        return endpoint_problem(result.status or 0, url, variable)

    def describe(self) -> dict[str, int]:
        counters = {f.name: getattr(self._counters, f.name) for f in fields(self._counters)}
        return counters | self.attachments.counters.as_dict()

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.sender.close()

    # -- 413: split ----------------------------------------------------------------------------

    def _send_split(self, lines: list[bytes], parent_id: str, batch: OutgoingBatch) -> SendResult:
        """Send ``lines`` as two halves with ids derived from ``parent_id`` (recursively).

        The split point and the ids depend only on the parent, so a retry after a crash
        resends identical halves under identical keys (the collector stores them once).
        Returns the first answer that is not an acknowledgement, else the last one.
        """
        if len(lines) == 1:
            return self._send_degraded(lines[0], parent_id, batch)
        ts = _ids.uuid7_time_ns(parent_id)
        mid = len(lines) // 2
        result = SendResult(None, "empty")
        for i, part in enumerate((lines[:mid], lines[mid:])):
            bid = _ids.derived_batch_id(ts, f"{parent_id}/{i}")
            result = self._post(self._compress(b"\n".join(part) + b"\n"), bid, batch)
            if classify(result) is Action.SPLIT:
                result = self._send_split(part, bid, batch)
            if classify(result) is not Action.ACK:
                return result
        return result

    def _send_degraded(self, line: bytes, parent_id: str, batch: OutgoingBatch) -> SendResult:
        """One event the collector finds too large: send its envelope with a size marker.

        A 413 even for the marker comes back as is: the uploader dead-letters the batch.
        """
        try:
            event = orjson.loads(line)
            if not isinstance(event, dict):
                raise TypeError
            data = orjson.dumps(event.get("data"))
        except (TypeError, ValueError):
            event, data = {}, line
        event["data"] = {
            "$degraded": {
                "reason": "too_large",
                "bytes": len(line),
                "excerpt": data[:_DEGRADED_EXCERPT].decode("utf-8", "replace"),
            }
        }
        bid = _ids.derived_batch_id(_ids.uuid7_time_ns(parent_id), f"{parent_id}/degraded")
        result = self._post(self._compress(orjson.dumps(event) + b"\n"), bid, batch)
        if classify(result) is Action.ACK:
            self._counters.degraded_events += 1
            self._log.warning(
                "degraded",
                "telemetry upload: an event of %d bytes was too large for the"
                " collector; sent with its content replaced by a size marker",
                len(line),
            )
        return result

    # -- helpers -------------------------------------------------------------------------------

    def _post(self, body: bytes, batch_id: str, batch: OutgoingBatch) -> SendResult:
        result = self.sender.send_batch(
            body, batch_id=batch_id, encoding=self._encoding, timeout=batch.timeout()
        )
        self._observe(result)
        return result

    def _observe(self, result: SendResult) -> None:
        self._kill_switch.observe(result.disable)

    def _wire_body(self, claim: ClaimedBatch) -> bytes:
        if self._encoding == "zstd":
            return claim.body  # the spool file is the wire body: no re-encoding
        return gzip.compress(claim.raw, compresslevel=6, mtime=0)

    def _compress(self, raw: bytes) -> bytes:
        if self._encoding == "zstd":
            return self._cctx.compress(raw)
        return gzip.compress(raw, compresslevel=6, mtime=0)
