"""The hand-off from ``emit()`` to the spool: a bounded buffer in front of two threads.

Data path::

    emit() -> put(): buffer (deque)  --writer thread-->  encode, cut    (writer.py)
           --seal queue-->  sealer thread: zstd + BatchSink.seal        (sealer.py)
    close(): what is left in memory goes to disk in large batches,
             or is recorded as lost (reason "shutdown")                  (shutdown.py)

``put()`` appends to a deque: no lock, no I/O. Backpressure: at ``buffer_max`` records the
emitting thread encodes one slice itself; with more than ``PACE_AT_QUEUED`` batches waiting
for the sealer it waits instead (up to ``HANDOFF_WAIT_S``, until the compressors took a
slice's worth), and that wait pays for the next calls. One call in ~128 pays 1-3 ms; no
``emit()`` ever compresses or writes a batch. Past ``OVERFLOW_FACTOR`` x ``buffer_max``
every call waits; only when no batch was written for ``STUCK_S`` (a hung disk) are new
records dropped and counted (reason ``disk_stalled``), so memory stays bounded. Why two
threads, the bound and measured figures: docs/batching.md.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from telemetry_client._internal.log import RateLimitedLogger
from telemetry_client.batch.sealer import Sealer
from telemetry_client.batch.shutdown import CloseOutcome, Shutdown
from telemetry_client.batch.sink import BatchSink
from telemetry_client.batch.state import FlushMarker, InFlight, Stopping
from telemetry_client.batch.writer import Writer
from telemetry_client.encode import Encoder, Record

__all__ = ["Batcher"]

HANDOFF_CHUNK = 128  # records an emitting thread encodes when the buffer is full
HANDOFF_WAIT_S = 0.003  # longest wait of an emitter for the compressors to catch up
MIN_CREDIT = 8  # calls a wait that saw no progress pays for (a stuck disk: ~3k calls/s)
PACE_AT_QUEUED = 3  # cut batches waiting for the sealer before an emitter waits
OVERFLOW_FACTOR = 2  # buffered records past buffer_max x this: every emit waits
STUCK_S = 1.0  # ... and past it, with no batch written for this long, new records are dropped


class Batcher:
    """Owns the buffer and the writer and sealer threads of one client in one process."""

    def __init__(
        self,
        *,
        spool: BatchSink,
        encoder_factory: Callable[[], Encoder],
        batch_max_events: int,
        batch_max_bytes: int,
        linger_s: float,
        buffer_max: int,
        log: RateLimitedLogger,
        on_sealed: Callable[[str, bool], None] | None = None,
    ) -> None:
        self._spool = spool
        self._on_sealed = on_sealed  # (batch id, has attachment refs): the uploader's hint
        self._encoder_factory = encoder_factory
        self._max_events = batch_max_events
        self._max_bytes = batch_max_bytes
        self._linger_s = linger_s
        self.buffer_max = buffer_max
        self._log = log
        self.buffer: deque[Record | FlushMarker] = deque()
        self._credit = 0  # calls past buffer_max that a hand-off wait already paid for
        self._init_sync()

    def _init_sync(self) -> None:
        """(Re)create everything that must not be shared with a forked parent."""
        self.wake = threading.Event()  # the writer's: set by put() on an empty buffer
        self._inflight = InFlight()
        self._stopping = Stopping()
        self._sealer = Sealer(
            sink=self._spool,
            inflight=self._inflight,
            stopping=self._stopping,
            log=self._log,
            on_sealed=self._on_sealed,
        )
        self._writer = Writer(
            buffer=self.buffer,
            wake=self.wake,
            sealer=self._sealer,
            inflight=self._inflight,
            stopping=self._stopping,
            encoder_factory=self._encoder_factory,
            batch_max_events=self._max_events,
            batch_max_bytes=self._max_bytes,
            linger_s=self._linger_s,
            buffer_max=self.buffer_max,
            log=self._log,
        )
        self._shutdown = Shutdown(
            buffer=self.buffer,
            writer=self._writer,
            sealer=self._sealer,
            inflight=self._inflight,
            stopping=self._stopping,
            sink=self._spool,
            batch_max_bytes=self._max_bytes,
            log=self._log,
        )
        self._sealer.on_failure_after_close = self._shutdown.count_leftovers_lost
        self._thread: threading.Thread | None = None

    # -- lifecycle ------------------------------------------------------------------

    def start(self) -> None:
        """Start the writer and sealer threads (the writer opens the spool: no disk I/O here)."""
        if self._thread is not None or self._stopping.closing:
            return
        writer = threading.Thread(
            target=self._writer_main, name="telemetry-spool-writer", daemon=True
        )
        sealer = threading.Thread(
            target=self._sealer_main, name="telemetry-spool-sealer", daemon=True
        )
        self._thread = writer
        self._sealer.thread = sealer
        self._sealer.writer_thread = writer
        writer.start()
        sealer.start()

    def _writer_main(self) -> None:
        self._writer.run()  # until close() begins; then the drain runs on this thread
        self._shutdown.drain_at_close()

    def _sealer_main(self) -> None:
        self._sealer.run()
        self._shutdown.thread_ended()

    def close(self, timeout: float) -> CloseOutcome:
        """Stop the threads and put everything still in memory on disk, in large batches.

        Bounded by ``timeout``; what is not on disk by then, or whose write fails, is
        counted as lost in the spool's loss ledger (reason ``shutdown``). Idempotent.
        """
        stopping = self._stopping
        if stopping.closing:
            return CloseOutcome(0, 0, 0, drained=True)
        stopping.deadline = deadline = time.monotonic() + max(0.0, timeout)
        stopping.closing = True
        self.wake.set()
        self._sealer.wake.set()
        writer = self._thread
        try:
            if writer is not None and writer.is_alive():
                # The writer thread drains (see _writer_main): a disk that hangs holds it, not us.
                writer.join(max(0.0, deadline - time.monotonic()))
            else:
                self._shutdown.drain_at_close()  # no writer thread (never started, or forked)
            sealer = self._sealer.thread
            if sealer is not None and sealer.is_alive():
                # It may be writing a batch it took before we began: that write lands (or
                # fails and is counted) before we say what is on disk.
                sealer.join(max(0.0, deadline - time.monotonic()))
        finally:
            stopping.closed = True  # from here on, a thread that ends counts what it holds
            lost = self._shutdown.count_leftovers_lost()
        written, batches = self._shutdown.written
        drained = lost == 0 and self.pending_events() == 0  # pending: a write still in flight
        return CloseOutcome(written, batches, lost, drained=drained)

    def after_fork_in_child(self) -> None:
        """Forget the parent's in-flight work and locks; the child starts its own thread lazily."""
        self.buffer = deque()
        parent = self._writer
        self._init_sync()
        self._writer.inherit_encoder(parent)  # its counters carry on, as the encoder does
        self._spool.forget_inherited_fds()

    def before_fork(self) -> None:
        self._writer.lock.acquire()
        self._inflight.lock.acquire()

    def after_fork_in_parent(self) -> None:
        self._inflight.lock.release()
        self._writer.lock.release()

    # -- called on the emitting thread ------------------------------------------------

    def put(self, record: Record) -> None:
        """Append one record (the emit path: a deque append, no lock, no I/O).

        The writer is woken by the first record of an empty buffer (it sleeps otherwise
        until its linger time); a full buffer makes the caller do a slice of the work.
        """
        buf = self.buffer
        buf.append(record)
        n = len(buf)
        if n == 1:
            self.wake.set()
        elif n >= self.buffer_max:
            if self._credit > 0 and n < OVERFLOW_FACTOR * self.buffer_max:
                self._credit -= 1  # paid for by the last wait (approximate across threads)
            else:
                self.handoff(record, n)

    def handoff(self, record: Record | None = None, buffered: int = 0) -> None:
        """Buffer full: one bounded slice of the writer's work, or a short wait, on the caller.

        The slice is encoding ``HANDOFF_CHUNK`` records (~1 ms), after which the next calls
        are free until the buffer is full again. When the sealer is behind, encoding more
        would only queue more lines: the caller waits instead, up to ``HANDOFF_WAIT_S``,
        until the compressors took ``HANDOFF_CHUNK`` more lines, and the lines they took
        pay for as many of the next calls. So one call in ~128 pays 1-3 ms and a burst runs
        at the disk's pace; no call pays for a whole batch write.
        """
        with self._inflight.lock:
            self._inflight.counters.handoffs += 1
        sealer = self._sealer
        if len(sealer.queue) > PACE_AT_QUEUED:
            # Waiting is this call's share: encoding more would only queue more lines.
            sealer.wake.set()
            start = sealer.compressed
            deadline = time.monotonic() + HANDOFF_WAIT_S
            while sealer.compressed - start < HANDOFF_CHUNK:
                left = deadline - time.monotonic()
                if left <= 0 or not sealer.wait_for_progress(left):
                    break
            taken = sealer.compressed - start
            self._credit = max(MIN_CREDIT, min(taken, 2 * HANDOFF_CHUNK))
            if buffered >= OVERFLOW_FACTOR * self.buffer_max:
                # Far past the bound: a slow disk makes every call wait (no credit); only
                # a sealer that wrote nothing for STUCK_S (a hung disk) makes it drop.
                self._credit = 0
                if record is not None and time.monotonic() - sealer.last_write > STUCK_S:
                    self._overflow(record)
        else:
            self._writer.handoff_at = time.monotonic()
            self._writer.encode_chunk(HANDOFF_CHUNK, handoff=True)
        self.wake.set()

    def _overflow(self, record: Record) -> None:
        """The sealer made no room for seconds: drop ``record`` (just appended) and count it.

        Counted in ``stats()["dropped"]`` at once and in the spool's loss ledger by the
        sealer (reason ``disk_stalled``) once it writes again. Another thread may have
        appended after it; then nothing is dropped this time.
        """
        buf = self.buffer
        if not buf or buf[-1] is not record:
            return
        buf.pop()
        self._sealer.count_stalled(record[2])
        self._log.warning(
            "spool-stalled",
            "telemetry spool %s: writes stalled and %d events buffered; dropping new events",
            self._spool.root,
            len(buf),
        )

    def flush(self, timeout: float) -> bool:
        """Everything appended so far is on disk (or given up as lost); False on timeout."""
        marker = FlushMarker()
        self.buffer.append(marker)
        self.wake.set()
        if self._thread is None or not self._thread.is_alive():
            # No writer (not started, or stopping): do the work here.
            deadline = time.monotonic() + timeout
            while not marker.done.is_set() and time.monotonic() < deadline:
                if not self._writer.step(final=True, write=True):
                    break
        return marker.done.wait(timeout)

    def pending_events(self) -> int:
        """Records not yet on disk: buffered, in the current batch, or cut but unwritten."""
        cut = self._inflight.unwritten_events()  # queued, being written, or failed
        buffered = sum(1 for r in list(self.buffer) if not isinstance(r, FlushMarker))
        return buffered + len(self._writer.lines) + cut

    def describe(self) -> dict[str, Any]:
        """Counters for ``stats()``."""
        with self._inflight.lock:
            c = self._inflight.counters
            out: dict[str, Any] = {
                "spooled": c.spooled_events,
                "spooled_batches": c.spooled_batches,
                "spooled_bytes": c.spooled_bytes,
                "evicted": c.evicted_events,
                "dropped": c.dropped_events + c.evicted_events,
                "write_errors": c.write_errors,
                "backpressure_handoffs": c.handoffs,
            }
        enc = self._writer.encoder
        out["coerced"] = dict(enc.coerced) if enc else {}
        out["redacted"] = enc.redacted if enc else 0
        out["encode_errors"] = enc.failed if enc else 0
        out["attachments"] = enc.attachments if enc else 0
        out["attachments_truncated"] = enc.attachments_truncated if enc else 0
        out["attachment_errors"] = enc.attachment_errors if enc else 0
        return out
