"""The batch queue: sealed batches, handed to one reader at a time across processes.

A batch is written under ``tmp/`` (flock'ed by its writer), fsync'ed, and renamed into
``batches/<day>/`` under ``.lock`` after the cap made room, so a reader never sees part of
one. A reader claims a batch with a non-blocking ``flock`` and a same-inode check; ack
unlinks it while still holding that lock, so the kernel frees the claim of a reader that
dies. Refused batches go to ``dead/``, unreadable ones to ``quarantine/``. The reasons and
the crash cases: ``docs/spool.md``.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable, Container, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import zstandard

from telemetry_client._internal import fs as _fs
from telemetry_client._internal import ids as _ids
from telemetry_client._internal.log import logger as _logger
from telemetry_client.spool.blobs import decompress_frame
from telemetry_client.spool.cap import Cap
from telemetry_client.spool.layout import (
    TMP_RE,
    BatchName,
    SpoolDir,
    day_of,
    read_fd,
    same_file,
)
from telemetry_client.spool.ledger import DropLedger
from telemetry_client.spool.settled import SettledMarks

__all__ = ["BatchQueue", "Claim", "PendingStats", "SealResult"]

_MAX_DECOMPRESSED = 1 << 30  # refuse to inflate a (corrupt) frame beyond 1 GiB
_END_NS = 1 << 63  # later than any batch id's time


@dataclass(frozen=True, slots=True)
class SealResult:
    """What sealing did: the name (``None`` if the batch alone exceeded the cap), evictions."""

    name: BatchName | None
    evicted_events: int = 0
    evicted_bytes: int = 0


@dataclass(frozen=True, slots=True)
class PendingStats:
    """Sealed batches waiting for upload."""

    batches: int
    events: int
    bytes: int
    oldest_age_s: float | None


@dataclass(slots=True)
class Claim:
    """A batch handed to exactly one reader until ack, release, dead_letter or quarantine."""

    name: BatchName
    path: Path
    body: bytes  # the compressed batch: the wire body
    _raw: bytes | None  # decompressed JSONL (None: a trusted claim, inflated on first use)
    _fd: int  # the claim's flock'ed file; -1 once given back
    _inflate: Callable[[bytes], bytes] | None = None  # for a trusted claim
    # Destinations that already settled this batch -> the status they answered (on disk:
    # spool/settled.py); grows with BatchQueue.settle, cleared when the batch leaves.
    settled: dict[str, int] = field(default_factory=dict)

    @property
    def held(self) -> bool:
        """True until the claim is acked, released, dead-lettered or quarantined."""
        return self._fd >= 0

    @property
    def raw(self) -> bytes:
        """The decompressed JSONL (for a trusted claim, decompressed now)."""
        if self._raw is None:
            assert self._inflate is not None, "an untrusted claim carries its JSONL"
            self._raw = self._inflate(self.body)
        return self._raw

    @property
    def batch_id(self) -> str:
        return self.name.batch_id

    @property
    def n_events(self) -> int:
        return self.name.n_events

    def lines(self) -> list[bytes]:
        return self.raw.splitlines()

    def events(self) -> list[dict[str, Any]]:
        return [orjson.loads(line) for line in self.raw.splitlines()]


class BatchQueue:
    """Seal, claim, ack, release, dead-letter and quarantine batches of one spool."""

    def __init__(self, d: SpoolDir, cap: Cap, ledger: DropLedger) -> None:
        self._dir = d
        self._cap = cap
        self._ledger = ledger
        # One batch in tmp/ at a time per instance (invariant 2), even when the writer thread
        # and an emitting thread doing a backpressure hand-off seal concurrently.
        self._seal_lock = threading.Lock()
        self._local = threading.local()  # zstd contexts are not thread-safe: one per thread
        self.marks = SettledMarks(d.state / "settled")

    def after_fork(self) -> None:
        """In a forked child: the seal lock may have been held by a parent thread."""
        self._seal_lock = threading.Lock()

    # -- writing ----------------------------------------------------------------------

    def seal(self, body: bytes, n_events: int, *, batch_id: str | None = None) -> SealResult:
        """Make a compressed batch visible to readers, evicting old data to fit the cap.

        A batch that alone exceeds the cap is not written and is counted as dropped.
        Raises ``OSError`` on disk failure, leaving nothing behind.
        """
        bid = batch_id or _ids.batch_id()
        name = BatchName(bid, n_events, len(body))
        if len(body) > self._cap.max_bytes:
            with self._dir.global_lock():
                self._ledger.record([("cap", name)])
            return SealResult(None, n_events, len(body))
        with self._seal_lock:
            evicted = self._write_and_publish(body, name)
        return SealResult(name, evicted[0], evicted[1])

    def _write_and_publish(self, body: bytes, name: BatchName) -> tuple[int, int]:
        d = self._dir
        tmp = d.tmp / f"{name.batch_id}.{name.n_events}.tmp"
        fd = _fs.open_new(tmp)
        d.open_fds.add(fd)
        try:
            _fs.lock(fd)  # held before any byte is written: marks the file alive for recover()
            _fs.write_all(fd, body)
            if d.fsync:
                os.fsync(fd)
            evicted = self.publish(tmp, name)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        finally:
            d.open_fds.discard(fd)
            _fs.close_unlocked(fd)
        return evicted

    def publish(self, tmp: Path, name: BatchName) -> tuple[int, int]:
        """Rename a whole batch from ``tmp/`` into its day, after making room; evictions."""
        d = self._dir
        day_dir = d.batches / name.day
        with d.global_lock():
            # Under the lock: a purge removes empty day directories under it too, so the
            # directory cannot vanish between its creation and the rename.
            new_day = not day_dir.exists()
            if new_day:
                _fs.ensure_dir(day_dir)
            evicted = self._cap.make_room(name.n_bytes)
            os.rename(tmp, day_dir / name.filename)
        if d.fsync:
            if new_day:
                _fs.fsync_dir(d.batches)
            _fs.fsync_dir(day_dir)
        return evicted

    # -- counting ---------------------------------------------------------------------

    def pending_before(self, cutoff_ns: int) -> PendingStats:
        """Pending batches sealed at or before ``cutoff_ns`` (what a flush waits for)."""
        cutoff_day = day_of(cutoff_ns)
        items: list[BatchName] = []
        for day in self._dir.days():
            if day > cutoff_day:
                break
            items.extend(
                n
                for _, n in self._dir.batches_in(self._dir.batches / day)
                if n.created_ns <= cutoff_ns
            )
        if not items:
            return PendingStats(0, 0, 0, None)
        oldest = min(n.created_ns for n in items)
        return PendingStats(
            batches=len(items),
            events=sum(n.n_events for n in items),
            bytes=sum(n.n_bytes for n in items),
            oldest_age_s=max(0.0, (time.time_ns() - oldest) / 1e9),
        )

    def pending(self) -> PendingStats:
        """Sealed batches not yet acknowledged (claimed ones included)."""
        return self.pending_before(_END_NS)

    def dead_letters(self) -> list[BatchName]:
        """Batches the collector refused for good (listed by ``status``)."""
        return sorted((n for _, n in self._dir.batches_in(self._dir.dead)), key=_by_id)

    def quarantined(self) -> list[BatchName]:
        """Batches that could not be read."""
        return sorted((n for _, n in self._dir.batches_in(self._dir.quarantine)), key=_by_id)

    def oldest_ns(self) -> int | None:
        """Id time of the oldest batch anywhere on disk (pending, dead, quarantined, in tmp/)."""
        d = self._dir
        times = [n.created_ns for n in self.dead_letters()[:1] + self.quarantined()[:1]]
        for day in d.days():
            names = d.batches_in(d.batches / day)
            if names:  # days sort in time order: the first non-empty one holds the oldest
                times.append(min(n.created_ns for _, n in names))
                break
        with contextlib.suppress(FileNotFoundError):
            for fn in os.listdir(d.tmp):
                m = TMP_RE.match(fn)
                if m is not None:
                    times.append(_ids.uuid7_time_ns(m.group(1)))
        return min(times, default=None)

    # -- reading ----------------------------------------------------------------------

    def claim(
        self,
        *,
        trusted: Container[str] = (),
        wanted: Callable[[dict[str, int]], bool] | None = None,
    ) -> Claim | None:
        """Hand the oldest unclaimed readable batch to this caller, or ``None``.

        ``wanted(settled)`` (destination -> status of those that already settled a batch)
        says whether a batch is worth claiming now; batches it declines are skipped (e.g.
        only a paused destination still needs them).

        Unreadable batches met on the way are quarantined, never returned, never fatal.
        Batches whose ids are in ``trusted`` (sealed moments ago by this very process) skip
        the decompress-and-count check: only their size is verified, and their JSONL is
        inflated only if the caller asks for ``raw``. The uploader sends them as they are.
        """
        marks = self.marks.read()
        for day in self._dir.days():
            folder = self._dir.batches / day
            try:
                names = sorted(os.listdir(folder))  # ids sort by creation time
            except FileNotFoundError:
                continue
            for entry in names:
                name = BatchName.parse(entry)
                if name is None:
                    continue
                settled = marks.get(name.batch_id, {})
                if wanted is not None and not wanted(settled):
                    continue
                claim = self._try_claim(folder / entry, name, name.batch_id in trusted)
                if claim is not None:
                    claim.settled = dict(settled)
                    return claim
        return None

    def settle(self, claim: Claim, destination: str, status: int) -> None:
        """``destination`` settled the claimed batch; kept on disk until the batch leaves."""
        if claim.settled.get(destination) == status:
            return
        self.marks.mark(claim.batch_id, destination, status)
        claim.settled[destination] = status

    def pending_by_destination(self, destinations: list[str]) -> dict[str, PendingStats]:
        """What each of ``destinations`` has not settled yet, among the pending batches."""
        marks = self.marks.read()
        names = [
            n for day in self._dir.days() for _, n in self._dir.batches_in(self._dir.batches / day)
        ]
        out: dict[str, PendingStats] = {}
        for dest in destinations:
            left = [n for n in names if dest not in marks.get(n.batch_id, {})]
            oldest = min((n.created_ns for n in left), default=None)
            out[dest] = PendingStats(
                batches=len(left),
                events=sum(n.n_events for n in left),
                bytes=sum(n.n_bytes for n in left),
                oldest_age_s=None if oldest is None else max(0.0, (time.time_ns() - oldest) / 1e9),
            )
        return out

    def gc_settled(self) -> int:
        """Drop settlement markers of batches no longer pending (evicted, purged)."""
        ids = [
            n.batch_id
            for day in self._dir.days()
            for _, n in self._dir.batches_in(self._dir.batches / day)
        ]
        return self.marks.gc(ids)

    def _try_claim(self, path: Path, name: BatchName, trusted: bool) -> Claim | None:
        d = self._dir
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        d.open_fds.add(fd)
        keep = False
        try:
            if not _fs.try_lock(fd) or not same_file(fd, path):
                return None
            body = read_fd(fd)
            if trusted and len(body) == name.n_bytes:
                keep = True
                return Claim(name, path, body, None, fd, self._inflate)
            problem, raw = self.validate(name, body)
            if problem is not None:
                d.move(path, d.quarantine / name.filename)
                _logger.warning("telemetry spool: quarantined batch %s: %s", name.batch_id, problem)
                return None
            keep = True
            return Claim(name, path, body, raw, fd)
        finally:
            if not keep:
                d.open_fds.discard(fd)
                _fs.close_unlocked(fd)

    def _inflate(self, body: bytes) -> bytes:
        problem, raw = decompress_frame(self._decompressor(), body, _MAX_DECOMPRESSED)
        if problem is not None:
            raise OSError(f"batch cannot be decompressed: {problem}")
        return raw

    def validate(self, name: BatchName, body: bytes) -> tuple[str | None, bytes]:
        """``(None, JSONL)`` for a sound batch: size, one checksummed frame, line count."""
        if len(body) != name.n_bytes:
            return f"size {len(body)} != {name.n_bytes} in its name", b""
        problem, raw = decompress_frame(self._decompressor(), body, _MAX_DECOMPRESSED)
        if problem is not None:
            return problem, b""
        lines = raw.count(b"\n")
        if lines != name.n_events or (raw and not raw.endswith(b"\n")):
            return f"{lines} lines, name says {name.n_events}", b""
        return None, raw

    def _decompressor(self) -> zstandard.ZstdDecompressor:
        dctx: zstandard.ZstdDecompressor | None = getattr(self._local, "dctx", None)
        if dctx is None:
            dctx = self._local.dctx = zstandard.ZstdDecompressor()
        return dctx

    def ack(self, claim: Claim) -> None:
        """The batch was delivered: remove it (we still hold its lock)."""
        try:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(claim.path)
        finally:
            self._close_claim(claim)
        self._forget_marks(claim)

    def release(self, claim: Claim) -> None:
        """Give the batch back unchanged (e.g. upload failed; retried later)."""
        self._close_claim(claim)

    def dead_letter(self, claim: Claim) -> None:
        """Move a refused batch to ``dead/``: kept and counted, never retried."""
        try:
            self._dir.move(claim.path, self._dir.dead / claim.name.filename)
        finally:
            self._close_claim(claim)
        self._forget_marks(claim)

    def _forget_marks(self, claim: Claim) -> None:
        if claim.settled:
            with contextlib.suppress(OSError):
                self.marks.clear(claim.batch_id, claim.settled)

    def quarantine(self, claim: Claim) -> None:
        """Move an unreadable claimed batch aside."""
        try:
            self._dir.move(claim.path, self._dir.quarantine / claim.name.filename)
        finally:
            self._close_claim(claim)

    def _close_claim(self, claim: Claim) -> None:
        if claim._fd in self._dir.open_fds:
            self._dir.open_fds.discard(claim._fd)
            _fs.close_unlocked(claim._fd)
        claim._fd = -1

    def iter_batches_newest_first(self) -> Iterator[tuple[BatchName, bytes]]:
        """Decompressed JSONL of sealed batches, newest first (read-only, no claim)."""
        d = self._dir
        for day in reversed(d.days()):
            entries = sorted(d.batches_in(d.batches / day), key=lambda it: it[0], reverse=True)
            for path, name in entries:
                try:
                    body = path.read_bytes()
                except FileNotFoundError:
                    continue
                problem, raw = self.validate(name, body)
                if problem is None:
                    yield name, raw


def _by_id(name: BatchName) -> str:
    return name.batch_id
