"""Attachments before their batch: the native collector's rule (docs/protocol.md, "Upload").

A batch is posted only after the collector has every blob it references: each one is
asked for with ``HEAD`` (skipped when this process saw it accepted recently), and posted
from the spool as stored when missing. An answer that says "not now" (retry, auth, wrong
URL) blocks the batch; a blob refused for good, or already evicted from the spool, does
not (the event keeps its reference: size and hash).
"""

from __future__ import annotations

import gzip
from collections.abc import Callable, Iterable
from dataclasses import dataclass, fields
from typing import Protocol

import zstandard

from telemetry_client._internal.log import RateLimitedLogger
from telemetry_client.spool.blobs import AttachmentRef
from telemetry_client.upload._sender import Sender, SendResult
from telemetry_client.upload.policy import Action, classify

__all__ = ["AttachmentCounters", "Attachments", "BlobSource"]

_ACCEPTED_CACHE = 4096  # attachment hashes known to be on the collector
# Answers that stop a batch before it is sent: its attachments could not be delivered now.
_BLOCKING = (Action.RETRY, Action.AUTH_PAUSE, Action.ENDPOINT_PAUSE)


class BlobSource(Protocol):
    """Where stored blobs are read from (the spool)."""

    def read_blob(self, sha256: str) -> bytes | None: ...


@dataclass(slots=True)
class AttachmentCounters:
    attachments_sent: int = 0
    attachments_skipped: int = 0  # the collector already had them
    attachments_missing: int = 0  # referenced but no longer in the spool (evicted)
    attachments_rejected: int = 0

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


class Attachments:
    """Delivers the blobs a batch references to the collector's attachments endpoint."""

    def __init__(
        self,
        *,
        sender: Sender,
        blobs: BlobSource,
        encoding: str,
        observe: Callable[[SendResult], None],
        log: RateLimitedLogger,
    ) -> None:
        self._sender = sender
        self._blobs = blobs
        self._encoding = encoding
        self._observe = observe  # every answer may carry the kill switch
        self._log = log
        self._accepted: dict[str, None] = {}  # LRU-ish set of hashes
        self.counters = AttachmentCounters()

    def deliver(
        self, refs: Iterable[AttachmentRef], timeout: Callable[[], float]
    ) -> SendResult | None:
        """Upload every blob in ``refs``; a result that blocks the batch, else ``None``."""
        c = self.counters
        for ref in refs:
            if ref.sha256 in self._accepted:
                continue
            head = self._sender.has_attachment(ref.sha256, timeout=timeout())
            self._observe(head)
            if head.ok:
                c.attachments_skipped += 1
                self._remember(ref.sha256)
                continue
            if head.status not in (404, 405) and classify(head) in _BLOCKING:
                return head
            blob = self._blobs.read_blob(ref.sha256)
            if blob is None:
                c.attachments_missing += 1
                self._log.warning(
                    "attachment_missing",
                    "telemetry upload: attachment %s was evicted before upload; the event"
                    " keeps its reference (size and hash)",
                    ref.sha256[:16],
                )
                continue
            body = blob if self._encoding == "zstd" else gzip.compress(_unzstd(blob), mtime=0)
            result = self._sender.send_attachment(
                body,
                sha256=ref.sha256,
                content_type=ref.content_type,
                encoding=self._encoding,
                timeout=timeout(),
            )
            self._observe(result)
            action = classify(result)
            if action is Action.ACK:
                c.attachments_sent += 1
                self._remember(ref.sha256)
            elif action in _BLOCKING:
                return result
            else:  # refused for good (too large, hash mismatch): the event keeps its reference
                c.attachments_rejected += 1
                self._log.warning(
                    "attachment_rejected",
                    "telemetry upload: the collector refused attachment %s (%s)",
                    ref.sha256[:16],
                    result.describe(),
                )
        return None

    def _remember(self, sha: str) -> None:
        if len(self._accepted) >= _ACCEPTED_CACHE:
            self._accepted.pop(next(iter(self._accepted)))
        self._accepted[sha] = None


def _unzstd(blob: bytes) -> bytes:
    return zstandard.ZstdDecompressor().decompress(blob, max_output_size=1 << 31)
