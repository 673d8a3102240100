"""Loss reports: unreported losses in the spool's ledger become ``telemetry_dropped`` events.

Events evicted from a full spool (or lost otherwise: disk errors, shutdown) are reported
to the collector in a later batch (docs/protocol.md, "Upload").
:meth:`LossReports.seal_pending` seals one event per loss reason into the spool like any
batch; the uploader decides *when* (its step, rate-limited; ``telemetry-client flush``
before draining). Producing events is the batch stage's job, so the upload stage needs no
encoder (docs/upload.md).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Protocol

import zstandard

from telemetry_client._internal import ids as _ids
from telemetry_client.encode.encoder import Encoder, format_ts
from telemetry_client.events import TelemetryDropped

__all__ = ["LossLedger", "LossReports"]


class LossLedger(Protocol):
    """The spool's side: the unreported part of its loss ledger, and where reports go."""

    def peek_unreported(self) -> dict[str, dict[str, Any]]: ...

    def forget_reported(self, reported: dict[str, dict[str, Any]]) -> None: ...

    def seal(self, body: bytes, n_events: int, *, batch_id: str | None = None) -> Any: ...


class LossReports:
    """Seals ``telemetry_dropped`` events for losses not yet reported (one per reason)."""

    def __init__(self, ledger: LossLedger, encoder_factory: Callable[[], Encoder]) -> None:
        self._ledger = ledger
        self._encoder_factory = encoder_factory
        self._encoder: Encoder | None = None  # built on first use, on the caller's thread
        self._cctx = zstandard.ZstdCompressor(level=3, write_checksum=True)

    def seal_pending(self) -> int:
        """Seal one event per loss reason not yet reported; returns how many (0: none).

        The report is sealed before the ledger's unreported part is cleared, so a loss is
        reported at least once: a crash in between reports it again (like any event). It
        is stamped now, not at the loss: the report must be the *newest* data on disk, or
        the cap or retention that caused the loss would evict the report first. Raises
        ``OSError`` when the disk refuses (the losses stay unreported, for a later try).
        """
        unreported = self._ledger.peek_unreported()
        if not unreported:
            return 0
        if self._encoder is None:
            self._encoder = self._encoder_factory()
        encoder = self._encoder
        lines = []
        for reason in sorted(unreported):
            u = unreported[reason]
            event = TelemetryDropped(
                events=int(u.get("events", 0)),
                bytes=int(u.get("bytes", 0)),
                reason=reason,
                first_ts=format_ts(int(u.get("first_ns", 0))),
                last_ts=format_ts(int(u.get("last_ns", 0))),
            )
            lines.append(encoder.encode((event, None, time.time_ns(), 0, None, None)))
        raw = b"\n".join(lines) + b"\n"
        self._ledger.seal(self._cctx.compress(raw), len(lines), batch_id=_ids.batch_id())
        self._ledger.forget_reported(unreported)
        return len(lines)
