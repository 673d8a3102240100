"""What ``close()`` does with what is still in memory: seal it in large batches, or count it.

Getting memory onto the disk comes first at shutdown and is not held to the per-batch limits
(they exist for the wire): everything left (failed and queued batches, the current batch,
the buffer) is merged into as few batches as possible, each up to ``SHUTDOWN_BATCH_BYTES``
of JSONL (at most a quarter of the spool cap), one fsync each, until the deadline. What is
still in memory then, or whose write failed, is recorded as lost in the sink (reason
``shutdown``), never silently forgotten. Details and the reasons: docs/batching.md.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass

import zstandard

from telemetry_client._internal.log import RateLimitedLogger
from telemetry_client.batch.sealer import Sealer
from telemetry_client.batch.sink import BatchSink
from telemetry_client.batch.state import Cut, FlushMarker, InFlight, Stopping
from telemetry_client.batch.writer import Writer
from telemetry_client.encode import Record

__all__ = ["LOSS_AT_SHUTDOWN", "SHUTDOWN_BATCH_BYTES", "CloseOutcome", "Shutdown"]

SHUTDOWN_BATCH_BYTES = 8 * 1024 * 1024  # JSONL per batch sealed by close(); memory bound too
SHUTDOWN_CHUNK = 256  # records encoded per hold of the batch lock while closing
LOSS_AT_SHUTDOWN = "shutdown"  # the loss ledger's reason for what close() could not write


@dataclass(frozen=True, slots=True)
class CloseOutcome:
    """What :meth:`Batcher.close` did with the events it still held in memory."""

    written_events: int  # sealed on disk by the close itself
    written_batches: int
    lost_events: int  # could not be written: counted in the loss ledger (reason "shutdown")
    drained: bool  # nothing lost, nothing left in memory (no write still in flight)


class Shutdown:
    """Drains memory to the sink at close, and counts as lost what it cannot write."""

    def __init__(
        self,
        *,
        buffer: deque[Record | FlushMarker],
        writer: Writer,
        sealer: Sealer,
        inflight: InFlight,
        stopping: Stopping,
        sink: BatchSink,
        batch_max_bytes: int,
        log: RateLimitedLogger,
    ) -> None:
        self._buffer = buffer
        self._writer = writer
        self._sealer = sealer
        self._inflight = inflight
        self._stopping = stopping
        self._sink = sink
        self._max_bytes = batch_max_bytes
        self._log = log
        self.written = (0, 0)  # (events, batches) sealed by the drain

    def drain_at_close(self) -> None:
        """Drain for close() (on the writer thread, or on the closing one when there is none)."""
        try:
            self.written = self._drain(self._stopping.deadline)
        except Exception as exc:  # pragma: no cover - defensive: what is left gets counted
            self._log.error("close-drain", "telemetry writer: unexpected error at close: %r", exc)
        self._sealer.record_stalled()  # drops counted while the disk stalled, if any
        self.thread_ended()

    def thread_ended(self) -> None:
        """A thread that outlived ``close()`` (stuck past its deadline) counts what it left."""
        if self._stopping.closed:
            self.count_leftovers_lost()

    def _batch_limit(self) -> int:
        """JSONL per batch sealed by close(): large, yet at most a quarter of the sink's cap
        (so one batch never exceeds the cap alone) and never below the configured size."""
        return max(self._max_bytes, min(SHUTDOWN_BATCH_BYTES, self._sink.max_bytes // 4))

    def _drain(self, deadline: float) -> tuple[int, int]:
        """Seal everything in memory in as few batches as possible, until ``deadline``.

        Returns (events written, batches written). A batch the disk refuses is not retried
        (the disk is failing and time is short): it is set aside, with what the deadline
        leaves in memory, for the loss count.
        """
        limit = self._batch_limit()
        refused: list[Cut] = []
        written = batches = 0
        try:
            while time.monotonic() < deadline:
                cut = self._gather(limit, deadline)
                if cut is None:
                    break
                if time.monotonic() >= deadline:
                    refused.append(cut)
                    break
                try:
                    if self._sealer.seal_cut(cut):
                        written += cut.n
                        batches += 1
                except OSError as exc:
                    refused.append(cut)
                    with self._inflight.lock:
                        self._inflight.counters.write_errors += 1
                    self._log.error(
                        "spool-write-close",
                        "telemetry spool %s: cannot write a batch at shutdown (%s)",
                        self._sink.root,
                        exc.strerror or exc,
                    )
            return written, batches
        finally:
            self._sealer.failed.extend(refused)  # counted as lost by count_leftovers_lost()

    def _gather(self, limit: int, deadline: float) -> Cut | None:
        """The next batch to seal at close, or None when nothing is left in memory.

        Takes, in order, the cut batches not written yet (failed ones, then queued ones),
        the current batch, then the buffer (encoded here, with attachments), until the
        batch holds ``limit`` bytes of JSONL or ``deadline`` passes. The cuts merged into it
        stay counted as unwritten (flush markers wait for them) until it is written or lost.
        """
        inflight, writer, sealer = self._inflight, self._writer, self._sealer
        big = inflight.new_cut([], 0, 0, 0)
        big.has_attachments = False
        lines = big.lines
        nbytes = 0
        span = _Span()
        while nbytes < limit:
            try:
                cut = sealer.failed.popleft()
            except IndexError:
                try:
                    cut = sealer.queue.popleft()
                except IndexError:
                    break
            part = _lines_of(cut)
            lines.extend(part)
            nbytes += sum(map(len, part)) + len(part)
            big.n += cut.n
            big.merged.append(cut.number)
            big.merged.extend(cut.merged)
            big.has_attachments = big.has_attachments or cut.has_attachments
            span.add(cut.first_ns, cut.last_ns)
        own = 0
        empty = False
        while nbytes < limit and not empty and time.monotonic() < deadline:
            with writer.lock:
                enc = writer.encoder_locked()
                current, size, first_ns, last_ns = writer.take_locked()
                if current:  # the current batch: encoded before anything in the buffer
                    lines.extend(current)
                    nbytes += size
                    own += len(current)
                    span.add(first_ns, last_ns)
                writer.claim_deferred_locked()
                buf = self._buffer
                for _ in range(SHUTDOWN_CHUNK):
                    try:
                        rec = buf.popleft()
                    except IndexError:
                        empty = True
                        break
                    if type(rec) is FlushMarker:
                        inflight.attach_marker(rec)  # done once ``big`` is written or lost
                        continue
                    line = enc.encode(rec)  # type: ignore[arg-type]
                    lines.append(line)
                    nbytes += len(line) + 1
                    own += 1
                    span.add(rec[2], rec[2])  # type: ignore[index]
                    if nbytes >= limit:
                        break
                if writer.attachments_moved_locked():
                    big.has_attachments = True
            inflight.set_events(big, own)
        big.n += own
        big.first_ns, big.last_ns = span.first, span.last
        if big.n == 0:
            inflight.forget(big)
            return None
        return big

    def count_leftovers_lost(self) -> int:
        """After close: count what is still in memory as lost, persistently; returns events.

        Every piece is taken out of its container before it is counted, so a thread
        ending concurrently (which calls this too) never counts an event twice.
        """
        cuts: list[Cut] = []
        for queue in (self._sealer.failed, self._sealer.queue):
            while True:
                try:
                    cuts.append(queue.popleft())
                except IndexError:
                    break
        n = nbytes = 0
        span = _Span()
        # Bounded: a thread stuck in a disk write while holding the lock counts its batch
        # itself when it ends (thread_ended).
        writer = self._writer
        if writer.lock.acquire(timeout=0.1):
            try:
                current, size, first_ns, last_ns = writer.take_locked()
                if current:
                    n += len(current)
                    nbytes += size
                    span.add(first_ns, last_ns)
            finally:
                writer.lock.release()
        markers: list[FlushMarker] = []
        while True:
            try:
                rec = self._buffer.popleft()
            except IndexError:
                break
            if type(rec) is FlushMarker:
                markers.append(rec)
                continue
            n += 1  # never encoded: its size is unknown, counted as 0 bytes
            span.add(rec[2], rec[2])  # type: ignore[index]
        for cut in cuts:
            n += cut.n
            nbytes += len(cut.body) if cut.body is not None else sum(map(len, cut.lines))
            span.add(cut.first_ns, cut.last_ns)
        inflight = self._inflight
        with inflight.lock:
            inflight.counters.dropped_events += n
            for cut in cuts:
                inflight.forget_locked(cut)
            inflight.release_markers_locked()
        for marker in markers:
            marker.done.set()
        if n:
            self._record_loss(n, nbytes, span)
        return n

    def _record_loss(self, n: int, nbytes: int, span: _Span) -> None:
        root = self._sink.root
        try:
            self._sink.record_loss(LOSS_AT_SHUTDOWN, n, nbytes, span.first, span.last)
        except OSError as exc:
            self._log.error(
                "shutdown-loss",
                "telemetry: %d events could not be written to %s at shutdown, and the loss"
                " could not be recorded there either (%s)",
                n,
                root,
                exc.strerror or exc,
            )
            return
        self._log.error(
            "shutdown-loss",
            "telemetry: %d events could not be written to %s at shutdown; counted as dropped"
            " (reason %r, shown by `telemetry-client status` and reported to the collector)",
            n,
            root,
            LOSS_AT_SHUTDOWN,
        )


class _Span:
    """The earliest and latest event times (ns) of what is being counted."""

    __slots__ = ("first", "last")

    def __init__(self) -> None:
        self.first = 0
        self.last = 0

    def add(self, first_ns: int, last_ns: int) -> None:
        if not first_ns and not last_ns:
            return
        self.first = first_ns if not self.first else min(self.first, first_ns)
        self.last = max(self.last, last_ns)


def _lines_of(cut: Cut) -> list[bytes]:
    """The JSONL lines of a cut batch, inflating it if it was compressed already.

    ``lines`` is read before ``body``: a thread compressing the cut concurrently sets
    ``body`` before it empties ``lines`` (see ``Sealer.compress``).
    """
    lines = cut.lines
    body = cut.body
    if body is None:
        return lines
    raw = zstandard.ZstdDecompressor().decompress(body)
    return raw.split(b"\n")[:-1]  # newline-terminated
