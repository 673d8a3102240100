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

Attachments (fields moved out into blobs, see ``encode/encoder.py``) are written by the writer
thread only: a hand-off that meets a record needing one puts it back at the head of the
buffer, wakes the writer and ends its slice (later hand-offs skip it until the writer
took it). While the writer stores a large attachment it holds the batch lock, so a
hand-off in that moment waits for it, as it waits for any large event being encoded.

Disk failures (full, read-only, permissions) are counted and logged once per cooldown;
the failed batch is retried, and past ``MAX_FAILED_BATCHES`` the oldest is dropped
(counted as lost, reason ``disk_error``).

Shutdown (:meth:`Batcher.close`): getting what is in memory onto the disk comes first and
is not held to the per-batch limits, which exist for the wire, not for the disk. The
sealer stops after its current write; the writer thread (or the closing thread when there
is none) merges everything still in memory (failed and queued batches, the current batch,
the buffer) into as few batches as it can, each up to ``SHUTDOWN_BATCH_BYTES`` of JSONL
(less on a small spool, so one always fits the cap), with one fsync each; the closing
thread waits for it until the deadline, so a hung disk does not hang ``close()``. A
collector that finds such a batch too large answers 413 and the uploader splits it.
Whatever is still in memory at the deadline, or whose write failed, is counted as lost
persistently (reason ``shutdown``, in the spool's loss ledger, which ``status`` shows and
the uploader reports), never silently forgotten. A background thread that outlives the
deadline (stuck in a disk write) counts what it still holds when it ends.
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

from telemetry_client._internal.log import RateLimitedLogger
from telemetry_client.encode.encoder import Encoder, Record
from telemetry_client.spool import Spool

__all__ = ["Batcher", "CloseOutcome", "FlushMarker"]

HANDOFF_CHUNK = 64
WRITER_CHUNK = 32  # ~1 ms of encoding: bounds how long an emitter can wait on the lock
HANDOFF_WAIT_S = 0.003  # longest wait of an emitter for the sealer to catch up
MAX_QUEUED_BATCHES = 6  # cut batches waiting for the writer before an emitter writes one itself
WRITER_ASSIST_AT = 4  # cut batches waiting before the writer thread helps the sealer
MAX_FAILED_BATCHES = 4
RETRY_FAILED_AFTER_S = 1.0
ZSTD_LEVEL = 3
SHUTDOWN_BATCH_BYTES = 8 * 1024 * 1024  # JSONL per batch sealed by close(); memory bound too
SHUTDOWN_CHUNK = 256  # records encoded per hold of the batch lock while closing
LOSS_AT_SHUTDOWN = "shutdown"  # the loss ledger's reason for what close() could not write


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
    merged: list[int] = field(default_factory=list)  # numbers of cuts merged into this one


@dataclass(frozen=True, slots=True)
class CloseOutcome:
    """What :meth:`Batcher.close` did with the events it still held in memory."""

    written_events: int  # sealed on disk by the close itself
    written_batches: int
    lost_events: int  # could not be written: counted in the loss ledger (reason "shutdown")
    drained: bool  # nothing lost, nothing left in memory (no write still in flight)


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
        self._closing = False  # close() began: the threads stop after their current step
        self._close_deadline = 0.0
        self._close_result: tuple[int, int] | None = None  # close(): (events, batches) written
        self._closed = False  # close() ended: a thread still holding events counts them lost
        self._opened = False

    # -- lifecycle ------------------------------------------------------------------

    def start(self) -> None:
        """Start the writer thread (it opens the spool itself: no disk I/O on the caller)."""
        if self._thread is not None or self._closing:
            return
        t = threading.Thread(target=self._run, name="telemetry-spool-writer", daemon=True)
        self._thread = t
        # Compression and disk writes release the GIL: a second thread lets them overlap
        # with encoding (which does not), using the machine's second core.
        sealer = threading.Thread(target=self._seal_run, name="telemetry-spool-sealer", daemon=True)
        self._sealer = sealer
        t.start()
        sealer.start()

    def close(self, timeout: float) -> CloseOutcome:
        """Stop the threads and put everything still in memory on disk, in large batches.

        Bounded by ``timeout``; what is not on disk by then, or whose write fails, is
        counted as lost in the spool's loss ledger (reason ``shutdown``). Idempotent.
        """
        deadline = time.monotonic() + max(0.0, timeout)
        if self._closing:
            return CloseOutcome(0, 0, 0, drained=True)
        self._close_deadline = deadline
        self._closing = True
        self.wake.set()
        self.seal_wake.set()
        writer = self._thread
        try:
            if writer is not None and writer.is_alive():
                # The writer thread drains (see _run): a disk that hangs holds it, not us.
                writer.join(max(0.0, deadline - time.monotonic()))
            else:
                self._drain_at_close()  # no writer thread (never started, or a forked child)
            sealer = self._sealer
            if sealer is not None and sealer.is_alive():
                # It may be writing a batch it took before we began: that write lands (or
                # fails and is counted) before we say what is on disk.
                sealer.join(max(0.0, deadline - time.monotonic()))
        finally:
            self._closed = True  # from here on, a thread that ends counts what it holds
            lost = self._count_leftovers_lost()
        written, batches = self._close_result or (0, 0)
        drained = lost == 0 and self.pending_events() == 0  # pending: a write still in flight
        return CloseOutcome(written, batches, lost, drained=drained)

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
            self.handoff()

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

    # -- shutdown (on the closing thread) -------------------------------------------------

    def _shutdown_batch_bytes(self) -> int:
        """JSONL per batch sealed by close(): large, yet at most a quarter of the spool cap
        (so one batch never exceeds the cap alone) and never below the configured size."""
        return max(self._max_bytes, min(SHUTDOWN_BATCH_BYTES, self._spool.max_bytes // 4))

    def _drain_at_close(self) -> None:
        """Drain for close() (on the writer thread, or on the closing one when there is none)."""
        try:
            self._close_result = self._drain(self._close_deadline)
        except Exception as exc:  # pragma: no cover - defensive: what is left gets counted
            self._log.error("close-drain", "telemetry writer: unexpected error at close: %r", exc)
        self._thread_ended()

    def _drain(self, deadline: float) -> tuple[int, int]:
        """Seal everything in memory in as few batches as possible, until ``deadline``.

        Returns (events written, batches written). A batch the disk refuses is not retried
        (the disk is failing and time is short): it is set aside, with what the deadline
        leaves in memory, for the loss count.
        """
        limit = self._shutdown_batch_bytes()
        refused: list[_Cut] = []
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
                    if self._seal_cut(cut):
                        written += cut.n
                        batches += 1
                except OSError as exc:
                    refused.append(cut)
                    with self._state_lock:
                        self.counters.write_errors += 1
                    self._log.error(
                        "spool-write-close",
                        "telemetry spool %s: cannot write a batch at shutdown (%s)",
                        self._spool.root,
                        exc.strerror or exc,
                    )
            return written, batches
        finally:
            self._failed.extend(refused)  # counted as lost by _count_leftovers_lost()

    def _gather(self, limit: int, deadline: float) -> _Cut | None:
        """The next batch to seal at close, or None when nothing is left in memory.

        Takes, in order, the cut batches not written yet (failed ones, then queued ones),
        the current batch, then the buffer (encoded here, with attachments), until the
        batch holds ``limit`` bytes of JSONL or ``deadline`` passes. The cuts merged into it
        stay counted as unwritten (flush markers wait for them) until it is written or lost.
        """
        with self._state_lock:
            self._cut_no += 1
            big = _Cut(self._cut_no, [], 0, 0, has_attachments=False)
            self._unwritten[big.number] = 0
        lines = big.lines
        nbytes = 0
        span = _Span()
        while nbytes < limit:
            try:
                cut = self._failed.popleft()
            except IndexError:
                try:
                    cut = self._sealq.popleft()
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
            with self._batch_lock:
                if self._encoder is None:
                    self._encoder = self._encoder_factory()
                enc = self._encoder
                if self._lines:  # the current batch: encoded before anything in the buffer
                    lines.extend(self._lines)
                    nbytes += self._nbytes
                    own += len(self._lines)
                    span.add(self._first_ns, self._last_ns)
                    self._lines = []
                    self._nbytes = 0
                self._deferred = None  # a record left for the writer: ours now
                buf = self.buffer
                for _ in range(SHUTDOWN_CHUNK):
                    try:
                        rec = buf.popleft()
                    except IndexError:
                        empty = True
                        break
                    if type(rec) is FlushMarker:
                        self._attach_marker(rec)  # done once ``big`` is written or lost
                        continue
                    line = enc.encode(rec)  # type: ignore[arg-type]
                    lines.append(line)
                    nbytes += len(line) + 1
                    own += 1
                    span.add(rec[2], rec[2])  # type: ignore[index]
                    if nbytes >= limit:
                        break
                if enc.attachments != self._att_seen:
                    big.has_attachments = True
                    self._att_seen = enc.attachments
            with self._state_lock:
                self._unwritten[big.number] = own
        big.n += own
        big.first_ns, big.last_ns = span.first, span.last
        if big.n == 0:
            with self._state_lock:
                self._forget_locked(big)
                self._release_markers_locked()
            return None
        return big

    def _count_leftovers_lost(self) -> int:
        """After close: count what is still in memory as lost, persistently; returns events.

        Every piece is taken out of its container before it is counted, so a thread
        ending concurrently (which calls this too) never counts an event twice.
        """
        cuts: list[_Cut] = []
        for queue in (self._failed, self._sealq):
            while True:
                try:
                    cuts.append(queue.popleft())
                except IndexError:
                    break
        n = nbytes = 0
        span = _Span()
        # Bounded: a thread stuck in a disk write while holding the lock counts its batch
        # itself when it ends (_thread_ended).
        if self._batch_lock.acquire(timeout=0.1):
            try:
                if self._lines:
                    n += len(self._lines)
                    nbytes += self._nbytes
                    span.add(self._first_ns, self._last_ns)
                    self._lines = []
                    self._nbytes = 0
            finally:
                self._batch_lock.release()
        markers: list[FlushMarker] = []
        while True:
            try:
                rec = self.buffer.popleft()
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
        with self._state_lock:
            self.counters.dropped_events += n
            for cut in cuts:
                self._forget_locked(cut)
            self._release_markers_locked()
        for marker in markers:
            marker.done.set()
        if n:
            self._record_shutdown_loss(n, nbytes, span)
        return n

    def _record_shutdown_loss(self, n: int, nbytes: int, span: _Span) -> None:
        try:
            self._spool.record_loss(LOSS_AT_SHUTDOWN, n, nbytes, span.first, span.last)
        except OSError as exc:
            self._log.error(
                "shutdown-loss",
                "telemetry: %d events could not be written to %s at shutdown, and the loss"
                " could not be recorded there either (%s)",
                n,
                self._spool.root,
                exc.strerror or exc,
            )
            return
        self._log.error(
            "shutdown-loss",
            "telemetry: %d events could not be written to %s at shutdown; counted as dropped"
            " (reason %r, shown by `telemetry-client status` and reported to the collector)",
            n,
            self._spool.root,
            LOSS_AT_SHUTDOWN,
        )

    # -- the writer thread ----------------------------------------------------------------

    def _run(self) -> None:
        """The writer thread: encode and cut batches until ``close()`` takes over."""
        while not self._closing:
            try:
                if not self._opened:
                    self._open_spool()
                timeout = self._next_timeout()
                self.wake.wait(timeout)
                self.wake.clear()
                while not self._closing and self._work_once(final=False, write=False):
                    pass
            except Exception as exc:  # pragma: no cover - the loop must never die
                self._log.error("writer-loop", "telemetry writer: unexpected error: %r", exc)
                time.sleep(0.1)
        self._drain_at_close()

    def _seal_run(self) -> None:
        """The sealer thread: compress and write cut batches, retry failed writes."""
        while not self._closing:
            try:
                self.seal_wake.wait(RETRY_FAILED_AFTER_S if self._failed else 1.0)
                self.seal_wake.clear()
                while not self._closing and self._seal_step(final=False):
                    pass
            except Exception as exc:  # pragma: no cover - the loop must never die
                self._log.error("sealer-loop", "telemetry sealer: unexpected error: %r", exc)
                time.sleep(0.1)
        self._thread_ended()

    def _thread_ended(self) -> None:
        """A thread that outlived ``close()`` (stuck past its deadline) counts what it left."""
        if self._closed:
            self._count_leftovers_lost()

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
        if self._closing:
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
        try:
            self._seal_cut(cut)
        except OSError as exc:
            self._on_write_error(cut, exc)
            return False
        return True

    def _seal_cut(self, cut: _Cut) -> bool:
        """Compress and seal ``cut``, then count it; True when it is on disk.

        Raises ``OSError`` (nothing counted) when the disk refuses it.
        """
        n = cut.n
        if not self._opened:
            self._open_spool()
        body = self._compress(cut)
        result = self._spool.seal(body, n)
        with self._state_lock:
            c = self.counters
            if result.name is not None:
                c.spooled_events += n
                c.spooled_batches += 1
                c.spooled_bytes += result.name.n_bytes
            else:
                c.dropped_events += n
            c.evicted_events += result.evicted_events
            self._forget_locked(cut)
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
        return result.name is not None

    def _forget_locked(self, cut: _Cut) -> None:
        """``cut`` (and the cuts merged into it) left memory. Caller holds the state lock."""
        self._unwritten.pop(cut.number, None)
        for number in cut.merged:
            self._unwritten.pop(number, None)

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
                self._forget_locked(dropped)
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
        if self._closed:  # a write that failed after close(): nobody is left to retry it
            self._count_leftovers_lost()

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


def _lines_of(cut: _Cut) -> list[bytes]:
    """The JSONL lines of a cut batch, inflating it if it was compressed already.

    ``lines`` is read before ``body``: a thread compressing the cut concurrently sets
    ``body`` before it empties ``lines`` (see ``Batcher._compress``).
    """
    lines = cut.lines
    body = cut.body
    if body is None:
        return lines
    raw = zstandard.ZstdDecompressor().decompress(body)
    return raw.split(b"\n")[:-1]  # newline-terminated
