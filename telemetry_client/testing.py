"""Public fakes for testing code that uses telemetry-client (and for our own tests).

- :class:`FakeClock`: a wall clock and a monotonic clock that only move when told to, for
  the uploader's ``clock=``/``monotonic=`` arguments: minutes of backoff take no time.
- :class:`FixedJitter`: a ``random.Random`` whose ``uniform(a, b)`` always lands at the same
  fraction of the range, for the uploader's ``rng=`` argument: jittered waits become exact.
- :class:`RecordingDestination`: an upload destination (``Uploader(destinations=[...])``)
  that records every batch it is sent and answers what it is told (200 by default).
- :class:`InMemoryCollector`: a destination that keeps the events it acknowledged, once per
  batch id, as the reference collector does with ``Idempotency-Key``.
"""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass
from typing import Any

from telemetry_client.spool.blobs import AttachmentRef
from telemetry_client.upload import OutgoingBatch, SendResult

__all__ = ["FakeClock", "FixedJitter", "InMemoryCollector", "RecordingDestination", "Sent"]


class FakeClock:
    """Time that stands still until :meth:`advance` (thread-safe).

    ``time()`` starts at the current wall time in whole seconds (so it agrees with code
    that reads the real clock, and HTTP dates, which have one-second resolution, round-trip
    exactly); ``monotonic()`` starts at ``1000.0``. Both move together.
    """

    def __init__(self, start: float | None = None, *, monotonic_start: float = 1000.0) -> None:
        self._wall = float(int(time.time())) if start is None else float(start)
        self._mono = float(monotonic_start)
        self._lock = threading.Lock()

    def time(self) -> float:
        """Seconds since the epoch (a stand-in for ``time.time``)."""
        with self._lock:
            return self._wall

    def monotonic(self) -> float:
        """A stand-in for ``time.monotonic``."""
        with self._lock:
            return self._mono

    def advance(self, seconds: float) -> None:
        """Move both clocks forward by ``seconds`` (>= 0)."""
        if seconds < 0:
            raise ValueError("a clock does not go backwards")
        with self._lock:
            self._wall += seconds
            self._mono += seconds

    def sleep(self, seconds: float) -> None:
        """A stand-in for ``time.sleep``: advances instead of waiting."""
        self.advance(max(0.0, seconds))


class FixedJitter(random.Random):
    """``uniform(a, b)`` returns ``a + (b - a) * fraction``: 0.0 the shortest, 1.0 the longest."""

    def __init__(self, fraction: float = 1.0) -> None:
        if not 0.0 <= fraction <= 1.0:
            raise ValueError("fraction must be within [0, 1]")
        super().__init__(0)
        self.fraction = fraction

    def uniform(self, a: float, b: float) -> float:
        return a + (b - a) * self.fraction


@dataclass(frozen=True, slots=True)
class Sent:
    """One batch as a :class:`RecordingDestination` received it, and what it answered."""

    batch_id: str
    events: list[dict[str, Any]]
    attachments: tuple[AttachmentRef, ...]
    result: SendResult


class RecordingDestination:
    """A ``telemetry_client.upload.Destination`` that records what it is sent (thread-safe).

    :meth:`answer` scripts its answers: each call to ``send`` takes the next one and the
    last one repeats (an ``int`` is an HTTP status; pass a ``SendResult`` for headers such
    as ``retry_after``, or ``SendResult(None, "ConnectError")`` for no answer at all).
    """

    def __init__(self, name: str = "recording", *, uploads_attachments: bool = False) -> None:
        self.name = name
        self.uploads_attachments = uploads_attachments
        self.sent: list[Sent] = []
        self.closed = False
        self._answers: list[SendResult] = [SendResult(200)]
        self._lock = threading.Lock()

    def answer(self, *answers: int | SendResult) -> None:
        """Answer these in turn from the next ``send`` on, then repeat the last."""
        if not answers:
            raise ValueError("answer() needs at least one answer")
        script = [a if isinstance(a, SendResult) else SendResult(a) for a in answers]
        with self._lock:
            self._answers = script

    @property
    def batch_ids(self) -> list[str]:
        """The id of every batch sent, in order (retries included)."""
        with self._lock:
            return [s.batch_id for s in self.sent]

    def send(self, batch: OutgoingBatch) -> SendResult:
        return self._record(batch).result

    def _record(self, batch: OutgoingBatch) -> Sent:
        events = batch.events()
        with self._lock:
            result = self._answers.pop(0) if len(self._answers) > 1 else self._answers[0]
            sent = Sent(batch.batch_id, events, batch.attachments, result)
            self.sent.append(sent)
        return sent

    def explain(self, result: SendResult) -> str:
        return f"{result.describe()} from {self.name}"

    def describe(self) -> dict[str, int]:
        return {}

    def close(self) -> None:
        self.closed = True


class InMemoryCollector(RecordingDestination):
    """A destination that keeps the events of every batch it acknowledged, once per batch id.

    A batch sent again under an id it already acknowledged is answered the same and stored
    nothing new (counted in ``duplicates``), like the reference collector.
    """

    def __init__(self, name: str = "memory", *, uploads_attachments: bool = False) -> None:
        super().__init__(name, uploads_attachments=uploads_attachments)
        self.events: list[dict[str, Any]] = []
        self.duplicates = 0
        self._stored: set[str] = set()

    def send(self, batch: OutgoingBatch) -> SendResult:
        sent = self._record(batch)
        if sent.result.ok:
            with self._lock:
                if sent.batch_id in self._stored:
                    self.duplicates += 1
                else:
                    self._stored.add(sent.batch_id)
                    self.events.extend(sent.events)
        return sent.result
