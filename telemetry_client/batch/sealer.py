"""The sealer: compress cut batches and seal them into the sink, in cut order; retry failures.

Runs on its own thread (``telemetry-spool-sealer``) so that compression and disk writes,
which release the GIL, overlap with encoding on the writer thread (docs/batching.md).
A write the disk refuses (full, read-only, permissions) is counted, logged once per
cooldown and kept in memory for a retry every ``RETRY_FAILED_AFTER_S``; past
``MAX_FAILED_BATCHES`` failed batches the oldest is dropped and recorded as lost
(reason ``disk_error``).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import deque
from collections.abc import Callable

import zstandard

from telemetry_client._internal.log import RateLimitedLogger
from telemetry_client.batch.sink import BatchSink
from telemetry_client.batch.state import Cut, InFlight, Stopping

__all__ = [
    "LOSS_ON_STALL",
    "MAX_FAILED_BATCHES",
    "QUEUE_MAX",
    "RETRY_FAILED_AFTER_S",
    "WRITER_ASSIST_AT",
    "Sealer",
]

MAX_FAILED_BATCHES = 4  # failed batches kept in memory for a retry
RETRY_FAILED_AFTER_S = 1.0
WRITER_ASSIST_AT = 2  # queued batches the writer leaves to the sealer when it helps compress
STREAM_LINES = 64  # lines joined per slice fed to the compressor
QUEUE_MAX = 4  # cut batches waiting for the sealer past which nobody encodes more
ZSTD_LEVEL = 3
LOSS_ON_DISK_ERROR = "disk_error"
LOSS_ON_STALL = "disk_stalled"  # dropped by an emitter while the sealer made no room


class Sealer:
    """The seal queue and the thread that empties it into a :class:`BatchSink`."""

    def __init__(
        self,
        *,
        sink: BatchSink,
        inflight: InFlight,
        stopping: Stopping,
        log: RateLimitedLogger,
        on_sealed: Callable[[str, bool], None] | None,
    ) -> None:
        self._sink = sink
        self._inflight = inflight
        self._stopping = stopping
        self._log = log
        self._on_sealed = on_sealed  # (batch id, has attachment refs): the uploader's hint
        self.queue: deque[Cut] = deque()  # cut, waiting to be written (oldest first)
        self.failed: deque[Cut] = deque()  # refused by the disk, waiting for a retry
        self.wake = threading.Event()
        self.thread: threading.Thread | None = None
        self.opened = False
        self.on_failure_after_close: Callable[[], object] | None = None
        self._sealed = threading.Condition()  # notified on compression progress and writes
        self.compressed = 0  # lines compressed so far, by any thread (emitters pace on it)
        self.last_write = time.monotonic()  # when a write last started or ended
        self._cctx: zstandard.ZstdCompressor | None = None  # the sealer thread's own
        self._writer_cctx: zstandard.ZstdCompressor | None = None  # the writer thread's own
        self.writer_thread: threading.Thread | None = None
        self._stalled = [0, 0, 0]  # dropped while stalled, not in the ledger yet: n, first, last

    def run(self) -> None:
        """The sealer thread's loop, until ``close()`` begins."""
        while not self._stopping.closing:
            try:
                self.wake.wait(RETRY_FAILED_AFTER_S if self.failed else 1.0)
                self.wake.clear()
                while not self._stopping.closing and self.step(final=False):
                    pass
            except Exception as exc:  # pragma: no cover - the loop must never die
                self._log.error("sealer-loop", "telemetry sealer: unexpected error: %r", exc)
                time.sleep(0.1)

    def step(self, *, final: bool) -> bool:
        """Write the oldest queued batch, else retry one failed write when due; True if done."""
        if self.queue:
            self.write_one()
            if self._stalled[0]:
                self.record_stalled()
            return True
        if self.failed and (
            final or time.monotonic() - self.failed[0].failed_at >= RETRY_FAILED_AFTER_S
        ):
            # One retry per step; a failing disk must not make the loop spin.
            return self.write_cut(self.failed.popleft())
        return False

    def write_one(self) -> None:
        """Write the oldest queued batch (the sealer thread, or flush() when no thread runs)."""
        try:
            cut = self.queue.popleft()
        except IndexError:
            return
        self.write_cut(cut)

    def count_stalled(self, ts_ns: int) -> None:
        """An emitter dropped one event (ts ``ts_ns``) because this thread made no room."""
        with self._inflight.lock:
            self._inflight.counters.dropped_events += 1
            stalled = self._stalled
            if not stalled[0]:
                stalled[1] = ts_ns
            stalled[0] += 1
            stalled[2] = max(stalled[2], ts_ns)

    def record_stalled(self) -> None:
        """Put the drops counted by :meth:`count_stalled` in the spool's loss ledger."""
        with self._inflight.lock:
            n, first, last = self._stalled
            self._stalled = [0, 0, 0]
        if n:
            with contextlib.suppress(OSError):  # the disk failing again: stats() has them
                self._sink.record_loss(LOSS_ON_STALL, n, 0, first, last)

    def _progressed(self, lines: int) -> None:
        with self._sealed:
            self.compressed += lines
            self._sealed.notify_all()

    def wait_for_progress(self, timeout: float) -> bool:
        """Block until lines were compressed or a batch left the queue (True), or until
        ``timeout`` (False)."""
        with self._sealed:
            return self._sealed.wait(timeout)

    def open_sink(self) -> None:
        """Open the sink, logging (rate-limited) when it cannot be; retried before each write."""
        try:
            self._sink.open()
            self.opened = True
        except OSError as exc:
            self._log.error(
                "spool-open", "telemetry spool %s cannot be opened: %s", self._sink.root, exc
            )

    def precompress_newest(self) -> bool:
        """Compress the newest queued batch in place; the sealer publishes it in its turn.

        Batches stay published in cut order (the sealer alone pops the queue), while the
        compression, the expensive part, runs on both threads (zstd releases the GIL).
        """
        queue = self.queue
        for i in range(len(queue) - 1, WRITER_ASSIST_AT - 1, -1):  # never the sealer's next ones
            try:
                cut = queue[i]  # the sealer pops from the left meanwhile: indices shift, fine
            except IndexError:
                continue
            if cut.body is None:
                self.compress(cut)
                return True
        return False

    def compress(self, cut: Cut) -> bytes:
        """``cut``'s zstd frame, compressed once; safe if two threads race on one cut.

        ``body`` is set before ``lines`` is emptied, so a racing thread either sees the body
        or still holds the full lines (and computes the same frame).
        """
        lines = cut.lines
        body = cut.body
        if body is not None:
            return body
        # Streamed in slices: one frame (checksum, content size) without a joined copy of
        # the whole batch, which would double its memory while it compresses.
        cobj = self._compressor().compressobj(size=sum(map(len, lines)) + len(lines))
        parts = []
        for i in range(0, len(lines), STREAM_LINES):
            part = lines[i : i + STREAM_LINES]
            parts.append(cobj.compress(b"\n".join([*part, b""])))  # newline-terminated
            self._progressed(len(part))
        parts.append(cobj.flush())
        body = b"".join(parts)
        cut.body = body
        cut.lines = []
        return body

    def _compressor(self) -> zstandard.ZstdCompressor:
        """The sealer and writer threads each reuse one compressor (~1 µs/event saved, and
        no working memory allocated per batch); any other thread (close() without threads)
        gets a fresh one, so no application thread keeps zstd's working memory."""
        current = threading.current_thread()
        if current is self.thread:
            if self._cctx is None:
                self._cctx = _new_compressor()
            return self._cctx
        if current is self.writer_thread:
            if self._writer_cctx is None:
                self._writer_cctx = _new_compressor()
            return self._writer_cctx
        return _new_compressor()

    def write_cut(self, cut: Cut) -> bool:
        """Write ``cut``; False when the disk refused it (kept for a retry)."""
        self.last_write = time.monotonic()  # started: a burst after a quiet hour is not stuck
        try:
            try:
                self.seal_cut(cut)  # False: over the cap alone, dropped and counted
            except OSError as exc:
                self._on_write_error(cut, exc)
                return False
            return True
        finally:
            self.last_write = time.monotonic()
            with self._sealed:
                self._sealed.notify_all()

    def seal_cut(self, cut: Cut) -> bool:
        """Compress and seal ``cut``, then count it; True when it is on disk.

        Raises ``OSError`` (nothing counted) when the disk refuses it.
        """
        n = cut.n
        if not self.opened:
            self.open_sink()
        body = self.compress(cut)
        result = self._sink.seal(body, n)
        inflight = self._inflight
        with inflight.lock:
            c = inflight.counters
            if result.name is not None:
                c.spooled_events += n
                c.spooled_batches += 1
                c.spooled_bytes += result.name.n_bytes
            else:
                c.dropped_events += n
            c.evicted_events += result.evicted_events
            inflight.forget_locked(cut)
            inflight.release_markers_locked()
        if result.name is not None and self._on_sealed is not None:
            self._on_sealed(result.name.batch_id, cut.has_attachments)
        if result.evicted_events:
            self._log.warning(
                "spool-full",
                "telemetry spool full (%d bytes cap): evicted the oldest %d events",
                self._sink.max_bytes,
                result.evicted_events,
            )
        return result.name is not None

    def _on_write_error(self, cut: Cut, exc: OSError) -> None:
        cut.failed_at = time.monotonic()
        dropped: Cut | None = None
        inflight = self._inflight
        with inflight.lock:
            inflight.counters.write_errors += 1
            self.failed.append(cut)
            if len(self.failed) > MAX_FAILED_BATCHES:
                dropped = self.failed.popleft()
                inflight.counters.dropped_events += dropped.n
                inflight.forget_locked(dropped)
                inflight.release_markers_locked()
        root = self._sink.root
        self._log.error(
            "spool-write",
            "telemetry spool %s: cannot write a batch (%s); keeping it in memory and retrying",
            root,
            exc.strerror or exc,
        )
        if dropped is not None:
            self._log.error(
                "spool-drop",
                "telemetry spool %s: still failing, dropped %d events",
                root,
                dropped.n,
            )
            with contextlib.suppress(OSError):
                self._sink.record_loss(
                    LOSS_ON_DISK_ERROR,
                    dropped.n,
                    len(dropped.body or b""),
                    dropped.first_ns,
                    dropped.last_ns,
                )
        hook = self.on_failure_after_close
        if self._stopping.closed and hook is not None:
            hook()  # nobody is left to retry it: counted as lost now


def _new_compressor() -> zstandard.ZstdCompressor:
    """The batch frame's compressor: zstd level 3, with checksum and content size."""
    return zstandard.ZstdCompressor(level=ZSTD_LEVEL, write_checksum=True, write_content_size=True)
