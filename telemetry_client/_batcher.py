"""The hand-off from ``emit()`` to the spool: bounded buffer, writer thread, batch cutting.

Data path::

    emit()  --append-->  buffer (deque, bounded)  --writer thread-->  encode (JSONL)
            --cut by events/bytes/linger-->  seal queue  --zstd + spool.seal-->  disk

``emit()`` only appends a tuple to a deque (a few hundred nanoseconds). The writer thread
pops records in chunks, encodes them into the current batch, and cuts the batch when it
holds ``batch_max_events`` events or ``batch_max_bytes`` bytes, or when its oldest event
has waited ``linger`` in memory. A second, sealer thread compresses cut batches and writes
them (both release the GIL, so they overlap with encoding), outside the batch lock.

Backpressure: when the buffer holds ``buffer_max`` records, the emitting thread does a
bounded slice of the writer's work itself (encodes one chunk of ``HANDOFF_CHUNK`` records).
When more than ``MAX_QUEUED_BATCHES`` cut batches wait for the sealer, it also waits up to
``HANDOFF_WAIT_S`` for the sealer to publish one (a compress + write takes 10-30 ms, too
long for one emit); only past twice that many does it write a batch itself (that call then
takes as long as one batch write: the price of the hard memory bound). Nothing is dropped,
and memory stays bounded by ``buffer_max`` records plus ``2 * MAX_QUEUED_BATCHES`` cut
batches plus ``MAX_FAILED_BATCHES`` batches waiting for a failed disk to come back.

Attachments (fields moved out into blobs, see ``_encode.py``) are written by the writer
thread only: a hand-off that meets a record needing one puts it back at the head of the
buffer, wakes the writer and ends its slice (later hand-offs skip it until the writer
took it). While the writer stores a large attachment it holds the batch lock, so a
hand-off in that moment waits for it, as it waits for any large event being encoded.

Disk failures (full, read-only, permissions) are counted and logged once per cooldown;
the failed batch is retried, and past ``MAX_FAILED_BATCHES`` the oldest is dropped
(counted as lost, reason ``disk_error``).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import zstandard

from ._encode import Encoder, Record
from ._log import RateLimitedLogger
from .spool import Spool

__all__ = ["Batcher", "FlushMarker"]

HANDOFF_CHUNK = 64
WRITER_CHUNK = 32  # ~1 ms of encoding: bounds how long an emitter can wait on the lock
HANDOFF_WAIT_S = 0.003  # longest wait of an emitter for the sealer to catch up
MAX_QUEUED_BATCHES = 6  # cut batches waiting for the writer before an emitter writes one itself
WRITER_ASSIST_AT = 4  # cut batches waiting before the writer thread helps the sealer
MAX_FAILED_BATCHES = 4
RETRY_FAILED_AFTER_S = 1.0
ZSTD_LEVEL = 3


class FlushMarker:
    """Put in the buffer by ``flush()``: done once everything before it is on disk."""

    __slots__ = ("done", "upto")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.upto = -1


@dataclass(slots=True)
class _Cut:
    """A cut batch waiting to be compressed and written."""

    number: int
    lines: list[bytes]  # emptied once ``body`` is set (the memory goes with it)
    first_ns: int
    last_ns: int
    n: int = 0  # events in the batch
    attempts: int = 0
    body: bytes | None = None
    failed_at: float = 0.0
    markers: list[FlushMarker] = field(default_factory=list)
    has_attachments: bool = True  # conservative unless the encoder says otherwise


@dataclass(slots=True)
class BatcherCounters:
    """Counters owned by the batcher (guarded by its state lock)."""

    spooled_events: int = 0
    spooled_batches: int = 0
    spooled_bytes: int = 0
    evicted_events: int = 0
    dropped_events: int = 0
    write_errors: int = 0
    handoffs: int = 0


class Batcher:
    """Owns the buffer and the writer thread of one client in one process."""

    def __init__(
        self,
        *,
        spool: Spool,
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
        self._att_seen = 0
        self._sealer_cctx: zstandard.ZstdCompressor | None = None  # the sealer thread's own
        self._encoder_factory = encoder_factory
        self._encoder: Encoder | None = None
        self._max_events = batch_max_events
        self._max_bytes = batch_max_bytes
        self._linger_s = linger_s
        self.buffer_max = buffer_max
        self._log = log
        self.buffer: deque[Record | FlushMarker] = deque()
        self.counters = BatcherCounters()
        self._init_sync()

    def _init_sync(self) -> None:
        """(Re)create everything that must not be shared with a forked parent."""
        self.wake = threading.Event()
        self._batch_lock = threading.Lock()  # current batch + encoder
        self._state_lock = threading.Lock()  # cut numbers, markers, counters
        self._lines: list[bytes] = []
        self._nbytes = 0
        self._first_ns = 0
        self._last_ns = 0
        self._first_mono = 0.0
        self._cut_no = 0
        self._unwritten: dict[int, int] = {}  # cut number -> events, until written or lost
        self._waiting_markers: list[FlushMarker] = []
        self._deferred: Record | None = None  # left at the buffer's head for the writer
        self._sealq: deque[_Cut] = deque()
        self._failed: deque[_Cut] = deque()
        self._thread: threading.Thread | None = None
        self._sealer: threading.Thread | None = None
        self.seal_wake = threading.Event()
        self._sealed = threading.Condition()  # notified when a batch left the seal queue
        self._writer_done = False
        self._stopping = False
        self._opened = False

    # -- lifecycle ------------------------------------------------------------------

    def start(self) -> None:
        """Start the writer thread (it opens the spool itself: no disk I/O on the caller)."""
        if self._thread is not None:
            return
        self._stopping = False
        self._writer_done = False
        t = threading.Thread(target=self._run, name="telemetry-spool-writer", daemon=True)
        self._thread = t
        # Compression and disk writes release the GIL: a second thread lets them overlap
        # with encoding (which does not), using the machine's second core.
        sealer = threading.Thread(target=self._seal_run, name="telemetry-spool-sealer", daemon=True)
        self._sealer = sealer
        t.start()
        sealer.start()

    def stop(self, timeout: float) -> bool:
        """Drain everything to disk and stop the thread; False if it did not finish in time."""
        t = self._thread
        if t is None:
            return True
        deadline = time.monotonic() + timeout
        self._stopping = True
        self.wake.set()
        t.join(timeout)
        sealer = self._sealer
        if sealer is not None:
            self.seal_wake.set()
            sealer.join(max(0.0, deadline - time.monotonic()))
            return not t.is_alive() and not sealer.is_alive()
        return not t.is_alive()

    def after_fork_in_child(self) -> None:
        """Forget the parent's in-flight work and locks; the child starts its own thread lazily."""
        self.buffer = deque()
        self._sealer_cctx = None  # may have been mid-compression in the parent
        self._init_sync()
        self.counters = BatcherCounters()  # stats() are this process's own
        self._spool.forget_inherited_fds()

    def before_fork(self) -> None:
        self._batch_lock.acquire()
        self._state_lock.acquire()

    def after_fork_in_parent(self) -> None:
        self._state_lock.release()
        self._batch_lock.release()

    # -- called on the emitting thread ------------------------------------------------

    def handoff(self) -> None:
        """Buffer full: do one bounded slice of the writer's work on the caller's thread."""
        with self._state_lock:
            self.counters.handoffs += 1
        self._encode_chunk(HANDOFF_CHUNK, handoff=True)
        if len(self._sealq) > MAX_QUEUED_BATCHES:
            # The sealer is behind: wait (briefly) for it to publish a batch, which slows a
            # burst toward the disk's pace; write one here only far past the bound.
            self.seal_wake.set()
            with self._sealed:
                self._sealed.wait(HANDOFF_WAIT_S)
            if len(self._sealq) > 2 * MAX_QUEUED_BATCHES:
                self._write_one()  # the hard memory bound, paid by the producer
        self.wake.set()

    def flush(self, timeout: float) -> bool:
        """Everything appended so far is on disk (or given up as lost); False on timeout."""
        marker = FlushMarker()
        self.buffer.append(marker)
        self.wake.set()
        if self._thread is None or not self._thread.is_alive():
            # No writer (not started, or stopping): do the work here.
            deadline = time.monotonic() + timeout
            while not marker.done.is_set() and time.monotonic() < deadline:
                if not self._work_once(final=True, write=True):
                    break
        return marker.done.wait(timeout)

    def pending_events(self) -> int:
        """Records not yet on disk: buffered, in the current batch, or cut but unwritten."""
        with self._state_lock:
            cut = sum(self._unwritten.values())  # queued, being written, or failed
        buffered = sum(1 for r in list(self.buffer) if not isinstance(r, FlushMarker))
        return buffered + len(self._lines) + cut

    # -- the writer thread ----------------------------------------------------------------

    def _run(self) -> None:
        while True:
            try:
                if not self._opened:
                    self._open_spool()
                timeout = self._next_timeout()
                self.wake.wait(timeout)
                self.wake.clear()
                final = self._stopping
                while self._work_once(final=final, write=False):
                    pass
                if final and not self.buffer and not self._lines:
                    self._writer_done = True
                    self.seal_wake.set()
                    return
            except Exception as exc:  # pragma: no cover - the loop must never die
                self._log.error("writer-loop", "telemetry writer: unexpected error: %r", exc)
                time.sleep(0.1)

    def _seal_run(self) -> None:
        """The sealer thread: compress and write cut batches, retry failed writes."""
        while True:
            try:
                self.seal_wake.wait(RETRY_FAILED_AFTER_S if self._failed else 1.0)
                self.seal_wake.clear()
                done = self._writer_done
                while self._seal_step(final=done):
                    pass
                if done and not self._sealq:
                    self._give_up_failed()
                    return
            except Exception as exc:  # pragma: no cover - the loop must never die
                self._log.error("sealer-loop", "telemetry sealer: unexpected error: %r", exc)
                time.sleep(0.1)

    def _seal_step(self, *, final: bool) -> bool:
        if self._sealq:
            self._write_one()
            return True
        if self._failed and (
            final or time.monotonic() - self._failed[0].failed_at >= RETRY_FAILED_AFTER_S
        ):
            # One retry per step; a failing disk must not make the loop spin.
            return self._write_cut(self._failed.popleft())
        return False

    def _open_spool(self) -> None:
        try:
            self._spool.open()
            self._opened = True
        except OSError as exc:
            self._log.error(
                "spool-open", "telemetry spool %s cannot be opened: %s", self._spool.root, exc
            )

    def _next_timeout(self) -> float:
        if self._stopping:
            return 0.0
        if self._lines:
            return max(0.0, self._first_mono + self._linger_s - time.monotonic())
        return 1.0

    def _work_once(self, *, final: bool, write: bool = True) -> bool:
        """One step of draining; True while there may be more to do right now.

        ``write=False`` on the writer thread: the sealer thread does the writing.
        """
        progressed = False
        # The sealer is behind and emitters are not pressing: compress one batch here too.
        # zstd releases the GIL, so the two threads compress on two cores, and encoded lines
        # stop piling up in memory. (With the buffer half full, encoding comes first:
        # otherwise emitters would do hand-offs.)
        if (
            not write
            and len(self._sealq) > WRITER_ASSIST_AT
            and len(self.buffer) < self.buffer_max // 2
            and self._precompress_newest()
        ):
            return True
        if self.buffer:
            self._encode_chunk(WRITER_CHUNK)
            # Hand the GIL to an emitting thread between chunks: without this an emitter waits
            # up to the interpreter's 5 ms switch interval while we encode.
            time.sleep(0)
            progressed = True
        elif self._lines and (final or time.monotonic() - self._first_mono >= self._linger_s):
            with self._batch_lock:
                self._cut_locked()
            progressed = True
        if write:
            progressed = self._seal_step(final=final) or progressed
        return progressed

    def _give_up_failed(self) -> None:
        """On stop: batches the disk kept refusing are lost with the process; count them."""
        while self._failed:
            cut = self._failed.popleft()
            with self._state_lock:
                self.counters.dropped_events += cut.n
                self._unwritten.pop(cut.number, None)
                self._release_markers_locked()
            with contextlib.suppress(OSError):
                self._spool.record_loss(
                    "disk_error", cut.n, len(cut.body or b""), cut.first_ns, cut.last_ns
                )

    def _encode_chunk(self, limit: int, *, handoff: bool = False) -> None:
        """Encode up to ``limit`` records; ``handoff``: on an emitting thread (no attachments)."""
        with self._batch_lock:
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
            lines = self._lines
            for _ in range(limit):
                try:
                    rec = buf.popleft()
                except IndexError:
                    break
                if type(rec) is FlushMarker:
                    self._cut_locked()
                    self._attach_marker(rec)
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
                    self._cut_locked()
                    lines = self._lines

    def _cut_locked(self) -> None:
        """Move the current batch to the seal queue. Caller holds the batch lock."""
        if not self._lines:
            return
        with self._state_lock:
            self._cut_no += 1
            cut = _Cut(self._cut_no, self._lines, self._first_ns, self._last_ns, len(self._lines))
            enc = self._encoder
            if enc is not None:
                moved = enc.attachments
                cut.has_attachments = moved != self._att_seen
                self._att_seen = moved
            self._unwritten[cut.number] = cut.n
        self._lines = []
        self._nbytes = 0
        self._sealq.append(cut)
        self.seal_wake.set()

    def _attach_marker(self, marker: FlushMarker) -> None:
        with self._state_lock:
            marker.upto = self._cut_no
            self._waiting_markers.append(marker)
            self._release_markers_locked()

    def _release_markers_locked(self) -> None:
        low = min(self._unwritten, default=self._cut_no + 1)
        still = []
        for m in self._waiting_markers:
            if m.upto < low:
                m.done.set()
            else:
                still.append(m)
        self._waiting_markers = still

    def _write_one(self) -> None:
        try:
            cut = self._sealq.popleft()
        except IndexError:
            return
        self._write_cut(cut)

    def _precompress_newest(self) -> bool:
        """Compress the newest queued batch in place; the sealer publishes it in its turn.

        Batches stay published in cut order (the sealer alone pops the queue), while the
        compression, the expensive part, runs on both threads (zstd releases the GIL).
        """
        queue = self._sealq
        for i in range(len(queue) - 1, WRITER_ASSIST_AT - 1, -1):  # never the sealer's next ones
            try:
                cut = queue[i]  # the sealer pops from the left meanwhile: indices shift, fine
            except IndexError:
                continue
            if cut.body is None:
                self._compress(cut)
                return True
        return False

    def _compress(self, cut: _Cut) -> bytes:
        """``cut``'s zstd frame, compressed once; safe if two threads race on one cut.

        ``body`` is set before ``lines`` is emptied, so a racing thread either sees the body
        or still holds the full lines (and computes the same frame).
        """
        lines = cut.lines
        body = cut.body
        if body is not None:
            return body
        body = self._compressor().compress(b"\n".join([*lines, b""]))  # newline-terminated
        cut.body = body
        cut.lines = []
        return body

    def _compressor(self) -> zstandard.ZstdCompressor:
        """The sealer thread reuses one compressor (~1 µs/event saved); a caller doing a
        hand-off gets a fresh one, so no emitting thread keeps zstd's working memory."""
        if threading.current_thread() is self._sealer:
            if self._sealer_cctx is None:
                self._sealer_cctx = _new_compressor()
            return self._sealer_cctx
        return _new_compressor()

    def _write_cut(self, cut: _Cut) -> bool:
        try:
            return self._write_cut_inner(cut)
        finally:
            with self._sealed:
                self._sealed.notify_all()

    def _write_cut_inner(self, cut: _Cut) -> bool:
        n = cut.n
        if not self._opened:
            self._open_spool()
        try:
            body = self._compress(cut)
            result = self._spool.seal(body, n)
        except OSError as exc:
            self._on_write_error(cut, exc)
            return False
        with self._state_lock:
            c = self.counters
            if result.name is not None:
                c.spooled_events += n
                c.spooled_batches += 1
                c.spooled_bytes += result.name.n_bytes
            else:
                c.dropped_events += n
            c.evicted_events += result.evicted_events
            self._unwritten.pop(cut.number, None)
            self._release_markers_locked()
        if result.name is not None and self._on_sealed is not None:
            self._on_sealed(result.name.batch_id, cut.has_attachments)
        if result.evicted_events:
            self._log.warning(
                "spool-full",
                "telemetry spool full (%d bytes cap): evicted the oldest %d events",
                self._spool.max_bytes,
                result.evicted_events,
            )
        return True

    def _on_write_error(self, cut: _Cut, exc: OSError) -> None:
        cut.attempts += 1
        cut.failed_at = time.monotonic()
        dropped: _Cut | None = None
        with self._state_lock:
            self.counters.write_errors += 1
            self._failed.append(cut)
            if len(self._failed) > MAX_FAILED_BATCHES:
                dropped = self._failed.popleft()
                self.counters.dropped_events += dropped.n
                self._unwritten.pop(dropped.number, None)
                self._release_markers_locked()
        self._log.error(
            "spool-write",
            "telemetry spool %s: cannot write a batch (%s); keeping it in memory and retrying",
            self._spool.root,
            exc.strerror or exc,
        )
        if dropped is not None:
            self._log.error(
                "spool-drop",
                "telemetry spool %s: still failing, dropped %d events",
                self._spool.root,
                dropped.n,
            )
            with contextlib.suppress(OSError):
                self._spool.record_loss(
                    "disk_error",
                    dropped.n,
                    len(dropped.body or b""),
                    dropped.first_ns,
                    dropped.last_ns,
                )

    def describe(self) -> dict[str, Any]:
        """Counters for ``stats()``."""
        with self._state_lock:
            c = self.counters
            out: dict[str, Any] = {
                "spooled": c.spooled_events,
                "spooled_batches": c.spooled_batches,
                "spooled_bytes": c.spooled_bytes,
                "evicted": c.evicted_events,
                "dropped": c.dropped_events + c.evicted_events,
                "write_errors": c.write_errors,
                "backpressure_handoffs": c.handoffs,
            }
        enc = self._encoder
        out["coerced"] = dict(enc.coerced) if enc else {}
        out["redacted"] = enc.redacted if enc else 0
        out["encode_errors"] = enc.failed if enc else 0
        out["attachments"] = enc.attachments if enc else 0
        out["attachments_truncated"] = enc.attachments_truncated if enc else 0
        out["attachment_errors"] = enc.attachment_errors if enc else 0
        return out


def _new_compressor() -> zstandard.ZstdCompressor:
    return zstandard.ZstdCompressor(level=ZSTD_LEVEL, write_checksum=True, write_content_size=True)
