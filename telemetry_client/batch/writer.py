"""The writer: encode buffered records into the current batch, and cut it.

Runs on its own thread (``telemetry-spool-writer``). A batch is cut when it holds
``batch_max_events`` events or ``batch_max_bytes`` bytes of JSONL, or when its oldest event
has waited ``linger`` in memory; cut batches go to the sealer's queue. An emitting thread
whose buffer is full runs one bounded slice of the same loop (a hand-off) without
attachment work: a record that needs a blob stays at the buffer's head for this thread.
The encode loop is the hot path: no per-event indirection (docs/batching.md).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable

from telemetry_client._internal.log import RateLimitedLogger
from telemetry_client.batch.sealer import QUEUE_MAX, WRITER_ASSIST_AT, Sealer
from telemetry_client.batch.state import FlushMarker, InFlight, Stopping
from telemetry_client.encode import Encoder, Record

__all__ = ["WRITER_CHUNK", "Writer"]

WRITER_CHUNK = 32  # ~1 ms of encoding: bounds how long an emitter can wait on the lock
HANDOFF_LOCK_WAIT_S = 0.001  # longest wait of an emitter for the writer's lock
HANDOFF_BUDGET_S = 0.0015  # an emitter's encoding stops after this long (checked every 16)
YIELD_S = 0.002  # the writer's pause after an emitter's hand-off
STALL_WAIT_S = 0.05  # the writer's wait for the sealer while QUEUE_MAX batches are queued


class Writer:
    """The current batch and the encoder (both guarded by :attr:`lock`), and the loop."""

    def __init__(
        self,
        *,
        buffer: deque[Record | FlushMarker],
        wake: threading.Event,
        sealer: Sealer,
        inflight: InFlight,
        stopping: Stopping,
        encoder_factory: Callable[[], Encoder],
        batch_max_events: int,
        batch_max_bytes: int,
        linger_s: float,
        buffer_max: int,
        log: RateLimitedLogger,
    ) -> None:
        self.buffer = buffer
        self.wake = wake
        self.lock = threading.Lock()  # the current batch + the encoder
        self.lines: list[bytes] = []  # the current batch
        self._nbytes = 0
        self._first_ns = 0
        self._last_ns = 0
        self._first_mono = 0.0
        self._deferred: Record | None = None  # left at the buffer's head for the writer
        self.handoff_at = 0.0  # monotonic time of the last hand-off (set by the batcher)
        self._encoder: Encoder | None = None
        self._encoder_factory = encoder_factory
        self._att_seen = 0  # the encoder's attachment count at the last cut
        self._sealer = sealer
        self._sealq = sealer.queue
        self._seal_wake = sealer.wake
        self._inflight = inflight
        self._stopping = stopping
        self._max_events = batch_max_events
        self._max_bytes = batch_max_bytes
        self._linger_s = linger_s
        self._buffer_max = buffer_max
        self._log = log

    @property
    def encoder(self) -> Encoder | None:
        """The encoder, once the first record was encoded (its counters feed ``stats()``)."""
        return self._encoder

    def inherit_encoder(self, other: Writer) -> None:
        """Keep ``other``'s encoder (and its counters): after a fork, for the child."""
        self._encoder, self._att_seen = other._encoder, other._att_seen

    def run(self) -> None:
        """The writer thread's loop: encode and cut batches until ``close()`` begins."""
        stopping = self._stopping
        while not stopping.closing:
            try:
                if not self._sealer.opened:
                    self._sealer.open_sink()  # on this thread: no disk I/O on the caller
                self.wake.wait(self._next_timeout())
                self.wake.clear()
                while not stopping.closing and self.step(final=False, write=False):
                    pass
            except Exception as exc:  # pragma: no cover - the loop must never die
                self._log.error("writer-loop", "telemetry writer: unexpected error: %r", exc)
                time.sleep(0.1)

    def _next_timeout(self) -> float:
        if self._stopping.closing:
            return 0.0
        if self.lines:
            return max(0.0, self._first_mono + self._linger_s - time.monotonic())
        return 1.0

    def step(self, *, final: bool, write: bool) -> bool:
        """One step of draining; True while there may be more to do right now.

        ``write=False`` on the writer thread (the sealer thread writes); ``True`` when no
        thread runs and the caller does it all. ``final`` cuts without waiting for linger.
        """
        progressed = False
        # The sealer is behind and emitters are not pressing: compress one batch here too
        # (with the buffer half full, encoding comes first, or emitters would hand off).
        if (
            not write
            and len(self._sealq) > WRITER_ASSIST_AT
            and len(self.buffer) < self._buffer_max // 2
            and self._sealer.precompress_newest()
        ):
            return True
        if not write and len(self._sealq) > QUEUE_MAX:
            # The sealer is far behind (or stuck): stop turning records into lines, so the
            # bound holds; emitters wait meanwhile (Batcher.handoff).
            self._sealer.wait_for_progress(STALL_WAIT_S)
            return not self._stopping.closing and bool(self.buffer)
        if not write and self.buffer and time.monotonic() - self.handoff_at < YIELD_S:
            # An emitter is encoding hand-offs: a second encoder would only take the GIL
            # from it (and make its emit() wait); the writer's turn comes when it stops.
            # Nor does it compress meanwhile: on a busy machine a third running thread
            # takes the CPU from the emitter (measured: emit() p99 1.2-1.5 ms vs 16-22 us).
            time.sleep(YIELD_S)
            return True
        if self.buffer:
            self.encode_chunk(WRITER_CHUNK)
            # Hand the GIL to an emitting thread between chunks: without this an emitter waits
            # up to the interpreter's 5 ms switch interval while we encode.
            time.sleep(0)
            progressed = True
        elif self.lines and (final or time.monotonic() - self._first_mono >= self._linger_s):
            with self.lock:
                self.cut_locked()
            progressed = True
        if write:
            progressed = self._sealer.step(final=final) or progressed
        return progressed

    def encode_chunk(self, limit: int, *, handoff: bool = False) -> None:
        """Encode up to ``limit`` records; ``handoff``: on an emitting thread (no attachments).

        A hand-off waits at most ``HANDOFF_LOCK_WAIT_S`` for the lock: if the writer holds
        it longer, the writer is doing the same work and the wait alone paced the caller.
        """
        lock = self.lock
        if not lock.acquire(timeout=HANDOFF_LOCK_WAIT_S if handoff else -1):
            return
        try:
            self._encode_chunk_locked(limit, handoff)
        finally:
            lock.release()

    def _encode_chunk_locked(self, limit: int, handoff: bool) -> None:
        if self._encoder is None:
            self._encoder = self._encoder_factory()
        buf = self.buffer
        if handoff:
            if buf and buf[0] is self._deferred:
                return  # the writer will take it (and does the attachment work)
            encode: Callable[[Record], bytes | None] = self._encoder.encode_inline_only
        else:
            self._deferred = None  # the head record, if deferred, is ours now
            encode = self._encoder.encode
        lines = self.lines
        # A hand-off stops at its time budget too: on a busy machine 128 records can take
        # several times their usual ~1.3 ms, and that one emit() would pay for all of it.
        deadline = time.perf_counter() + HANDOFF_BUDGET_S if handoff else float("inf")
        for i in range(limit):
            if i & 15 == 15 and time.perf_counter() > deadline:
                break
            try:
                rec = buf.popleft()
            except IndexError:
                break
            if type(rec) is FlushMarker:
                self.cut_locked()
                self._inflight.attach_marker(rec)
                lines = self.lines  # the cut owns the old list: later records go to a new one
                continue
            line = encode(rec)  # type: ignore[arg-type]
            if line is None:  # needs attachment work: the writer's job
                buf.appendleft(rec)
                self._deferred = rec  # type: ignore[assignment]
                self.wake.set()
                break
            if not lines:
                self._first_mono = time.monotonic()
                self._first_ns = rec[2]  # type: ignore[index]
            self._last_ns = rec[2]  # type: ignore[index]
            lines.append(line)
            self._nbytes += len(line) + 1
            if len(lines) >= self._max_events or self._nbytes >= self._max_bytes:
                self.cut_locked()
                lines = self.lines

    def cut_locked(self) -> None:
        """Move the current batch to the seal queue. Caller holds :attr:`lock`."""
        lines = self.lines
        if not lines:
            return
        cut = self._inflight.new_cut(lines, self._first_ns, self._last_ns, len(lines))
        cut.has_attachments = self.attachments_moved_locked()
        self.lines = []
        self._nbytes = 0
        self._sealq.append(cut)
        self._seal_wake.set()

    # -- for close(): the batch lock is held by the caller -------------------------------

    def encoder_locked(self) -> Encoder:
        """The encoder, built on first use (the factory touches the disk)."""
        if self._encoder is None:
            self._encoder = self._encoder_factory()
        return self._encoder

    def attachments_moved_locked(self) -> bool:
        """True if the encoder stored an attachment since the last call (or cannot tell)."""
        enc = self._encoder
        if enc is None:
            return True
        moved = enc.attachments
        changed = moved != self._att_seen
        self._att_seen = moved
        return changed

    def take_locked(self) -> tuple[list[bytes], int, int, int]:
        """Empty the current batch: (lines, JSONL bytes, first ns, last ns)."""
        taken = (self.lines, self._nbytes, self._first_ns, self._last_ns)
        self.lines = []
        self._nbytes = 0
        return taken

    def claim_deferred_locked(self) -> None:
        """A record left at the buffer's head for the writer is the caller's now."""
        self._deferred = None
