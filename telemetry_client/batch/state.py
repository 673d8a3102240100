"""What the batch stage's threads share: cut batches in flight, flush markers, counters.

A batch is *cut* by the writer (or a hand-off, or close()) and is *in flight* until it is on
disk or counted as lost. :class:`InFlight` numbers the cuts, remembers how many events each
holds, and completes a :class:`FlushMarker` once every cut made before it has left memory.
Its lock also guards the counters; it is never held across I/O.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

__all__ = ["BatcherCounters", "Cut", "FlushMarker", "InFlight", "Stopping"]


class FlushMarker:
    """Put in the buffer by ``flush()``: done once everything before it is on disk."""

    __slots__ = ("done", "upto")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.upto = -1  # the last cut made before the marker was taken from the buffer


@dataclass(slots=True)
class Cut:
    """A cut batch waiting to be compressed and written."""

    number: int
    lines: list[bytes]  # emptied once ``body`` is set (the memory goes with it)
    first_ns: int
    last_ns: int
    n: int = 0  # events in the batch
    body: bytes | None = None  # the zstd frame, once compressed
    failed_at: float = 0.0  # monotonic time of the last failed write
    has_attachments: bool = True  # conservative unless the encoder says otherwise
    merged: list[int] = field(default_factory=list)  # numbers of cuts merged into this one


@dataclass(slots=True)
class BatcherCounters:
    """Counters owned by the batcher (guarded by :attr:`InFlight.lock`)."""

    spooled_events: int = 0
    spooled_batches: int = 0
    spooled_bytes: int = 0
    evicted_events: int = 0
    dropped_events: int = 0
    write_errors: int = 0
    handoffs: int = 0


class Stopping:
    """The shutdown flags every thread reads (written by ``close()`` only)."""

    __slots__ = ("closed", "closing", "deadline")

    def __init__(self) -> None:
        self.closing = False  # close() began: the threads stop after their current step
        self.closed = False  # close() ended: a thread still holding events counts them lost
        self.deadline = 0.0  # monotonic: when close() stops waiting


class InFlight:
    """Cut batches not on disk yet, and the flush markers waiting for them."""

    def __init__(self) -> None:
        self.lock = threading.Lock()  # cut numbers, markers, counters
        self.counters = BatcherCounters()
        self._cut_no = 0
        self._unwritten: dict[int, int] = {}  # cut number -> events, until written or lost
        self._waiting: list[FlushMarker] = []

    def new_cut(self, lines: list[bytes], first_ns: int, last_ns: int, n: int) -> Cut:
        """Number a batch just cut and count its ``n`` events as unwritten."""
        with self.lock:
            self._cut_no += 1
            cut = Cut(self._cut_no, lines, first_ns, last_ns, n)
            self._unwritten[cut.number] = n
        return cut

    def set_events(self, cut: Cut, n: int) -> None:
        """``cut`` (being filled at shutdown) now holds ``n`` events of its own."""
        with self.lock:
            self._unwritten[cut.number] = n

    def attach_marker(self, marker: FlushMarker) -> None:
        """``marker`` is done once every cut made so far has left memory."""
        with self.lock:
            marker.upto = self._cut_no
            self._waiting.append(marker)
            self.release_markers_locked()

    def forget(self, cut: Cut) -> None:
        """``cut`` left memory without being counted (an empty shutdown batch)."""
        with self.lock:
            self.forget_locked(cut)
            self.release_markers_locked()

    def forget_locked(self, cut: Cut) -> None:
        """``cut`` (and the cuts merged into it) left memory. Caller holds the lock."""
        self._unwritten.pop(cut.number, None)
        for number in cut.merged:
            self._unwritten.pop(number, None)

    def release_markers_locked(self) -> None:
        """Complete the markers no unwritten cut holds back. Caller holds the lock."""
        low = min(self._unwritten, default=self._cut_no + 1)
        still = []
        for m in self._waiting:
            if m.upto < low:
                m.done.set()
            else:
                still.append(m)
        self._waiting = still

    def unwritten_events(self) -> int:
        """Events in cuts that are queued, being written, or failed."""
        with self.lock:
            return sum(self._unwritten.values())
