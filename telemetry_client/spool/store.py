"""The spool: crash-safe, size-capped, multi-process store of sealed event batches.

On-disk layout (every directory 0700, every file 0600, whatever the umask)::

    <spool_dir>/
      .lock                                  global flock: seal/evict/purge decisions
      tmp/<batch>.<events>.tmp               a batch being written (flock'ed by its writer)
      batches/<YYYY-MM-DD>/<batch>.<events>.<bytes>.jsonl.zst
                                             sealed batches, visible to readers
      quarantine/<batch>.<events>.<bytes>.jsonl.zst   unreadable batches, kept for humans
      dead/<batch>.<events>.<bytes>.jsonl.zst         dead letters (rejected by the collector)
      attachments/<sha256>.<raw>.<stored>.zst         attachment blobs (content-addressed)
      tmp/<sha256>.<pid>.<rand>.blob.tmp     a blob being written (flock'ed by its writer)
      quarantine/<sha256>.<raw>.<stored>.zst          unreadable blobs, kept for humans
      state/dropped.json                     persistent loss counters (events/bytes by reason)
      state/control.json, last_upload.json   kill switch, last upload outcome (upload/)
      usage/stats.json, stats.lock           cross-process LLM usage (telemetry_client.usage)

``<batch>`` is a UUIDv7 in 32 hex digits: names sort by creation time, and the UTC day
directory is the day of that time, so retention removes whole old days cheaply. A batch
file is exactly one zstd frame (with content checksum) of newline-terminated JSON
events: the wire body of the upload, sent as-is. Event count and file size live in the
name, so status, eviction and the cap need a directory listing, never a decompression.

A blob is one zstd frame (with content checksum) of an attachment's raw bytes, named by
the sha256 of those bytes, their size and the file's size: the wire body of
``POST /attachments``, sent as-is. The same content is stored once; storing it again only
refreshes the file's mtime, so a blob's mtime is the last time an event referenced it.

Invariants (verified by :meth:`Spool.check`):

1. *Visibility*: a file under ``batches/`` is complete. It is written under ``tmp/``,
   fsync'ed (``fsync="batch"``), renamed into place, and the directory fsync'ed. A crash
   at any instant leaves either no batch or a whole one; never a partial one.
2. *Cap*: the sum of the sizes of the files under the spool never exceeds ``max_bytes``
   plus the batches and blobs being written at that moment (one batch per writing
   process). Before a rename makes a batch or blob visible, the writer holds ``.lock``,
   lists the spool, and evicts the oldest data until the new file fits. Evictions are
   counted, persistently, in ``state/dropped.json`` (what ``status`` shows and the
   uploader reports).
3. *Claims*: a reader claims a batch by taking a non-blocking ``flock`` on it, then checks
   the name still points at the same inode. Ack = unlink while holding the lock. So one
   batch is handed to exactly one reader at a time across threads and processes, and the
   kernel releases the claim of a reader that dies (SIGKILL included).
4. *Leftovers*: a ``tmp/`` file is flock'ed by its writer while it lives. On open (and
   periodically) unlocked leftovers of dead writers are recovered when they are a whole,
   checksum-valid frame with the announced event count, else removed and counted as lost.
5. *Quarantine*: a batch that cannot be read (bad size, bad frame, bad checksum, bytes
   after the frame, wrong line count) is moved to ``quarantine/``; it still counts toward
   the cap and is evicted like any other old data, never deleted silently. Same for a blob
   whose size, frame or hash is wrong when it is read for upload.
6. *Blobs*: a file under ``attachments/`` is complete (written under ``tmp/``, fsync'ed,
   renamed under ``.lock``, directory fsync'ed) and its content hashes to its name. Blobs
   count toward the cap like batches; eviction removes the oldest data first, batches by
   id time and blobs by mtime (a blob eviction is counted as ``attachment_cap`` bytes,
   zero events). A blob is written, or its mtime refreshed (under ``.lock``), when an
   event referencing it is encoded, before that event's batch is sealed; batch ids are
   minted at seal time. So a batch referencing a blob whose mtime is ``m`` has an id time
   between that event's encoding (at or before ``m``) and ``grace`` later (``grace``: how
   long an event may wait in memory), i.e. at most ``m + grace``. Hence
   :meth:`Spool.gc_blobs`: a blob with ``m < min(oldest batch on disk, now) - grace`` is
   referenced by no batch on disk (pending, dead, quarantined or being written) and by no
   event still in memory, and is removed. ("Older than the oldest batch" alone would not
   do: the batches referencing a blob are the ones *newer* than it.)

Writes to ``state/dropped.json`` make room for their own growth (evicting like a seal);
day directories are created and removed under ``.lock`` (a purge never removes the day a
concurrent seal is publishing into).

Failures (disk full, read-only directory, permissions) raise ``OSError`` to the caller,
which counts and logs them; the spool itself never leaves a half-done state behind.
"""

from __future__ import annotations

import builtins
import contextlib
import dataclasses
import datetime as dt
import hashlib
import os
import re
import threading
import time
from collections.abc import Callable, Container, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import orjson
import zstandard

from telemetry_client._internal import fs as _fs
from telemetry_client._internal import ids as _ids
from telemetry_client._internal.log import logger as _logger
from telemetry_client.events import ENVELOPE_FIELDS
from telemetry_client.spool.blobs import (
    AttachmentRef,
    BlobName,
    BlobRef,
    attachment_refs,
    decompress_frame,
    is_sha256,
)

__all__ = [
    "AttachmentRef",
    "BatchName",
    "BlobName",
    "BlobRef",
    "Claim",
    "DropCounts",
    "PendingStats",
    "SealResult",
    "Spool",
    "attachment_refs",
]

_BATCH_RE = re.compile(r"^([0-9a-f]{32})\.(\d+)\.(\d+)\.jsonl\.zst$")
_TMP_RE = re.compile(r"^([0-9a-f]{32})\.(\d+)\.tmp$")
_BLOB_TMP_RE = re.compile(r"[0-9a-f]{64}\.\d+\.[0-9a-f]+\.blob\.tmp")
_DAY_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_N = TypeVar("_N")
_MAX_DECOMPRESSED = 1 << 30  # refuse to inflate a (corrupt) frame beyond 1 GiB
# A tmp file exists, empty and unlocked, between its creation and its writer's flock (which
# can take milliseconds when the writer waits for the GIL): recover() and check() leave such
# a file alone this long, so they never tear (or publish twice) a live writer's batch.
_TMP_BIRTH_GRACE_S = 60.0
# How long an encoded event may wait in memory before its batch is sealed, as far as blob
# garbage collection is concerned (linger is <= 1 s; this also covers a slow disk).
BLOB_GRACE_S = 3600.0
_BLOB_ZSTD_LEVEL = 3
_BLOB_CACHE_MAX = 4096
_ALL = 1 << 63  # a horizon newer than every mtime


@dataclass(frozen=True, slots=True)
class BatchName:
    """What a batch file name says about it."""

    batch_id: str
    n_events: int
    n_bytes: int

    @classmethod
    def parse(cls, name: str) -> BatchName | None:
        m = _BATCH_RE.match(name)
        if m is None:
            return None
        return cls(m.group(1), int(m.group(2)), int(m.group(3)))

    @property
    def filename(self) -> str:
        return f"{self.batch_id}.{self.n_events}.{self.n_bytes}.jsonl.zst"

    @property
    def created_ns(self) -> int:
        return _ids.uuid7_time_ns(self.batch_id)

    @property
    def day(self) -> str:
        return _day_of(self.created_ns)


def _day_of(ts_ns: int) -> str:
    return dt.datetime.fromtimestamp(ts_ns / 1e9, dt.timezone.utc).strftime("%Y-%m-%d")


@dataclass(slots=True)
class DropCounts:
    """Events and bytes lost, by reason; ``unreported`` is what the collector hasn't heard of."""

    events: int = 0
    bytes: int = 0
    by_reason: dict[str, dict[str, int]] = dataclasses.field(default_factory=dict)
    unreported: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)

    def add(self, reason: str, events: int, nbytes: int, first_ns: int, last_ns: int) -> None:
        self.events += events
        self.bytes += nbytes
        r = self.by_reason.setdefault(reason, {"events": 0, "bytes": 0})
        r["events"] += events
        r["bytes"] += nbytes
        u = self.unreported.setdefault(
            reason, {"events": 0, "bytes": 0, "first_ns": first_ns, "last_ns": last_ns}
        )
        u["events"] += events
        u["bytes"] += nbytes
        u["first_ns"] = min(u["first_ns"], first_ns)
        u["last_ns"] = max(u["last_ns"], last_ns)

    def to_json(self) -> builtins.bytes:
        return orjson.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, raw: builtins.bytes) -> DropCounts:
        obj = orjson.loads(raw)
        return cls(
            events=int(obj["events"]),
            bytes=int(obj["bytes"]),
            by_reason=dict(obj.get("by_reason", {})),
            unreported=dict(obj.get("unreported", {})),
        )


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
    """A batch handed to exactly one reader until :meth:`Spool.ack` or :meth:`Spool.release`."""

    name: BatchName
    path: Path
    body: bytes  # the compressed batch: the wire body
    _raw: bytes | None  # decompressed JSONL (None: a trusted claim, inflated on first use)
    _fd: int
    _inflate: Any = None  # Callable[[bytes], bytes] for a trusted claim

    @property
    def raw(self) -> bytes:
        """The decompressed JSONL (for a trusted claim, decompressed now)."""
        if self._raw is None:
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


class Spool:
    """One spool directory, shared safely by every thread and process that opens it."""

    def __init__(
        self,
        root: Path,
        *,
        max_bytes: int,
        retention_days: float = 7.0,
        fsync: bool = True,
    ) -> None:
        self.root = Path(root)
        self.max_bytes = max_bytes
        self.retention_s = retention_days * 86400.0
        self.fsync = fsync
        self._batches = self.root / "batches"
        self._tmp = self.root / "tmp"
        self._quarantine = self.root / "quarantine"
        self._dead = self.root / "dead"
        self._state = self.root / "state"
        self._blobs = self.root / "attachments"
        self._blob_names: dict[str, str] = {}  # sha256 -> file name, a hint checked on use
        self._lock_path = self.root / ".lock"
        self._dropped_path = self._state / "dropped.json"
        self._open_fds: set[int] = set()  # closed in a forked child (never written through)
        # One batch in tmp/ at a time per instance (invariant 2), even when the writer thread
        # and an emitting thread doing a backpressure hand-off seal concurrently.
        self._seal_lock = threading.Lock()
        self._local = threading.local()  # zstd contexts are not thread-safe: one per thread

    # -- lifecycle ------------------------------------------------------------------

    def open(self) -> None:
        """Create the layout (0700) and recover what dead processes left behind."""
        for d in (
            self.root,
            self._batches,
            self._tmp,
            self._quarantine,
            self._dead,
            self._state,
            self._blobs,
        ):
            _fs.ensure_dir(d)
        self.recover()
        self.purge_expired()

    def forget_inherited_fds(self) -> None:
        """In a forked child: close (never use) the parent's open spool files."""
        for fd in list(self._open_fds):
            with contextlib.suppress(OSError):
                os.close(fd)
        self._open_fds.clear()
        self._seal_lock = threading.Lock()  # may have been held by a parent thread at fork

    # -- writing --------------------------------------------------------------------

    def seal(self, body: bytes, n_events: int, *, batch_id: str | None = None) -> SealResult:
        """Make a compressed batch visible to readers, evicting old data to fit the cap.

        A batch that alone exceeds the cap is not written and is counted as dropped.
        Raises ``OSError`` on disk failure, leaving nothing behind.
        """
        bid = batch_id or _ids.batch_id()
        name = BatchName(bid, n_events, len(body))
        if len(body) > self.max_bytes:
            with self._global_lock():
                self._record_drops([("cap", name)])
            return SealResult(None, n_events, len(body))
        with self._seal_lock:
            evicted = self._write_and_publish(body, name)
        return SealResult(name, evicted[0], evicted[1])

    def _write_and_publish(self, body: bytes, name: BatchName) -> tuple[int, int]:
        tmp = self._tmp / f"{name.batch_id}.{name.n_events}.tmp"
        fd = _fs.open_new(tmp)
        self._open_fds.add(fd)
        try:
            _fs.lock(fd)  # held before any byte is written: marks the file alive for recover()
            _fs.write_all(fd, body)
            if self.fsync:
                os.fsync(fd)
            evicted = self._publish(tmp, name)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        finally:
            self._open_fds.discard(fd)
            _fs.close_unlocked(fd)
        return evicted

    def _publish(self, tmp: Path, name: BatchName) -> tuple[int, int]:
        day_dir = self._batches / name.day
        with self._global_lock():
            # Under the lock: a purge removes empty day directories under it too, so the
            # directory cannot vanish between its creation and the rename.
            new_day = not day_dir.exists()
            if new_day:
                _fs.ensure_dir(day_dir)
            evicted = self._make_room(name.n_bytes)
            os.rename(tmp, day_dir / name.filename)
        if self.fsync:
            if new_day:
                _fs.fsync_dir(self._batches)
            _fs.fsync_dir(day_dir)
        return evicted

    # -- accounting -----------------------------------------------------------------

    def _listing(self) -> tuple[list[tuple[Path, BatchName]], list[tuple[Path, BlobName]], int]:
        """Every data file: batches (batches, quarantine, dead) oldest first, blobs
        (attachments, quarantine), and the total bytes used (with state/)."""
        items: list[tuple[Path, BatchName]] = []
        other = 0
        for folder in (self._quarantine, self._dead):
            items.extend(self._list_flat(folder))
        for day in self._days():
            items.extend(self._list_flat(self._batches / day))
        blobs = self._list_blobs(self._blobs) + self._list_blobs(self._quarantine)
        # Small files outside the data folders count too: loss counters and upload state
        # (state/), and the cross-process LLM usage store (usage/, see telemetry_client.usage).
        for small in (self._state, self.root / "usage"):
            with contextlib.suppress(OSError):  # absent, or not a directory: nothing to count
                for entry in os.scandir(small):
                    with contextlib.suppress(OSError):
                        other += entry.stat(follow_symlinks=False).st_size
        items.sort(key=lambda it: it[1].batch_id)
        used = other + sum(n.n_bytes for _, n in items) + sum(b.stored_size for _, b in blobs)
        return items, blobs, used

    def _days(self) -> list[str]:
        try:
            return sorted(d for d in os.listdir(self._batches) if _DAY_RE.match(d))
        except FileNotFoundError:
            return []

    @staticmethod
    def _list_flat(folder: Path) -> list[tuple[Path, BatchName]]:
        return _list_parsed(folder, BatchName.parse)

    @staticmethod
    def _list_blobs(folder: Path) -> list[tuple[Path, BlobName]]:
        return _list_parsed(folder, BlobName.parse)

    def usage(self) -> int:
        """Bytes used by the spool as the cap counts them."""
        return self._listing()[2]

    def _make_room(self, incoming: int, counts: DropCounts | None = None) -> tuple[int, int]:
        """Evict oldest data until ``incoming`` more bytes fit; returns (events, bytes) evicted.

        ``counts``: loss counters with additions not yet on disk, written here (with the
        evictions) after room was made for their own growth. Caller holds the global lock.
        """
        items, blobs, used = self._listing()
        try:
            state_size = self._dropped_path.stat().st_size
        except FileNotFoundError:
            state_size = 0
        # Recording losses grows state/dropped.json, which the cap counts too.
        growth = 0 if counts is None else max(0, len(counts.to_json()) - state_size)
        if used + growth + incoming <= self.max_bytes:
            if counts is not None:
                _fs.atomic_write(self._dropped_path, counts.to_json(), fsync=self.fsync)
            return 0, 0
        dirty = counts is not None
        counts = self._read_drops() if counts is None else counts
        events = nbytes = 0
        for age_ns, path, name in self._eviction_order(items, blobs):
            if used + growth + incoming <= self.max_bytes:
                break
            if isinstance(name, BlobName):
                try:
                    os.unlink(path)  # a reader holding it open still reads it whole
                except FileNotFoundError:
                    continue
                used -= name.stored_size
                nbytes += name.stored_size
                counts.add("attachment_cap", 0, name.stored_size, age_ns, age_ns)
            elif self._remove_unclaimed(path):
                used -= name.n_bytes
                events += name.n_events
                nbytes += name.n_bytes
                counts.add("cap", name.n_events, name.n_bytes, age_ns, age_ns)
            else:
                continue
            dirty = True
            growth = max(0, len(counts.to_json()) - state_size)
        if dirty:
            _fs.atomic_write(self._dropped_path, counts.to_json(), fsync=self.fsync)
        return events, nbytes

    @staticmethod
    def _eviction_order(
        items: list[tuple[Path, BatchName]], blobs: list[tuple[Path, BlobName]]
    ) -> list[tuple[int, Path, BatchName | BlobName]]:
        """Batches (by id time) and blobs (by mtime) merged, oldest first."""
        order: list[tuple[int, Path, BatchName | BlobName]] = [
            (name.created_ns, path, name) for path, name in items
        ]
        for path, blob in blobs:
            try:
                order.append((os.stat(path).st_mtime_ns, path, blob))
            except FileNotFoundError:
                continue
        order.sort(key=lambda it: it[0])
        return order

    def _remove_unclaimed(self, path: Path) -> bool:
        """Unlink ``path`` unless a reader holds it; True when removed by us."""
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return False
        try:
            if not _fs.try_lock(fd) or not self._same_file(fd, path):
                return False
            os.unlink(path)
            return True
        except FileNotFoundError:
            return False
        finally:
            _fs.close_unlocked(fd)

    @staticmethod
    def _same_file(fd: int, path: Path) -> bool:
        try:
            st = os.stat(path, follow_symlinks=False)
        except FileNotFoundError:
            return False
        fst = os.fstat(fd)
        return fst.st_nlink > 0 and (st.st_ino, st.st_dev) == (fst.st_ino, fst.st_dev)

    def _record_drops(self, drops: list[tuple[str, BatchName]]) -> None:
        """Add to the persistent loss counters (making room for them). Caller holds the lock."""
        counts = self._read_drops()
        for reason, name in drops:
            ts = name.created_ns
            counts.add(reason, name.n_events, name.n_bytes, ts, ts)
        self._make_room(0, counts)

    def record_loss(
        self, reason: str, events: int, nbytes: int, first_ns: int, last_ns: int
    ) -> None:
        """Persist a loss that happened outside the spool (e.g. a batch that was never written)."""
        with self._global_lock():
            counts = self._read_drops()
            counts.add(reason, events, nbytes, first_ns, last_ns)
            self._make_room(0, counts)

    def _read_drops(self) -> DropCounts:
        try:
            return DropCounts.from_json(self._dropped_path.read_bytes())
        except FileNotFoundError:
            return DropCounts()
        except (ValueError, KeyError, TypeError):
            return DropCounts()  # unreadable counters start over; check() reports it

    def dropped(self) -> DropCounts:
        """The persistent loss counters."""
        return self._read_drops()

    def take_unreported_drops(self) -> dict[str, dict[str, Any]]:
        """Atomically read and clear what the collector has not been told about yet."""
        with self._global_lock():
            counts = self._read_drops()
            taken, counts.unreported = counts.unreported, {}
            if taken:
                _fs.atomic_write(self._dropped_path, counts.to_json(), fsync=self.fsync)
        return taken

    def peek_unreported(self) -> dict[str, dict[str, Any]]:
        """What the collector has not been told about yet (left in place until reported)."""
        return self._read_drops().unreported

    def forget_reported(self, reported: dict[str, dict[str, Any]]) -> None:
        """Subtract a report that is now sealed in a batch from the unreported counters.

        Losses recorded between :meth:`peek_unreported` and this call stay unreported.
        """
        with self._global_lock():
            counts = self._read_drops()
            for reason, done in reported.items():
                left = counts.unreported.get(reason)
                if left is None:
                    continue
                left["events"] -= done.get("events", 0)
                left["bytes"] -= done.get("bytes", 0)
                if left["events"] <= 0:
                    del counts.unreported[reason]
                elif done.get("last_ns", 0) >= left["first_ns"]:
                    left["first_ns"] = max(left["first_ns"], done.get("last_ns", 0))
            _fs.atomic_write(self._dropped_path, counts.to_json(), fsync=self.fsync)

    def pending_before(self, cutoff_ns: int) -> PendingStats:
        """Pending batches sealed at or before ``cutoff_ns`` (what a flush waits for)."""
        cutoff_day = _day_of(cutoff_ns)
        items: list[BatchName] = []
        for day in self._days():
            if day > cutoff_day:
                break
            items.extend(
                n for _, n in self._list_flat(self._batches / day) if n.created_ns <= cutoff_ns
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
        items: list[BatchName] = []
        for day in self._days():
            items.extend(n for _, n in self._list_flat(self._batches / day))
        if not items:
            return PendingStats(0, 0, 0, None)
        oldest = min(n.created_ns for n in items)
        return PendingStats(
            batches=len(items),
            events=sum(n.n_events for n in items),
            bytes=sum(n.n_bytes for n in items),
            oldest_age_s=max(0.0, (time.time_ns() - oldest) / 1e9),
        )

    def dead_letters(self) -> list[BatchName]:
        """Batches the collector refused for good (listed by ``status``)."""
        return sorted((n for _, n in self._list_flat(self._dead)), key=lambda n: n.batch_id)

    def quarantined(self) -> list[BatchName]:
        """Batches that could not be read."""
        return sorted((n for _, n in self._list_flat(self._quarantine)), key=lambda n: n.batch_id)

    # -- reading --------------------------------------------------------------------

    def claim(self, *, trusted: Container[str] = ()) -> Claim | None:
        """Hand the oldest unclaimed readable batch to this caller, or ``None``.

        Unreadable batches met on the way are quarantined, never returned, never fatal.
        Batches whose ids are in ``trusted`` (sealed moments ago by this very process) skip
        the decompress-and-count check: only their size is verified, and their JSONL is
        inflated only if the caller asks for ``raw``. The uploader sends them as they are.
        """
        for day in self._days():
            folder = self._batches / day
            try:
                names = sorted(os.listdir(folder))  # ids sort by creation time
            except FileNotFoundError:
                continue
            for entry in names:
                name = BatchName.parse(entry)
                if name is None:
                    continue
                claim = self._try_claim(folder / entry, name, name.batch_id in trusted)
                if claim is not None:
                    return claim
        return None

    def _try_claim(self, path: Path, name: BatchName, trusted: bool = False) -> Claim | None:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        self._open_fds.add(fd)
        keep = False
        try:
            if not _fs.try_lock(fd) or not self._same_file(fd, path):
                return None
            body = _read_fd(fd)
            if trusted and len(body) == name.n_bytes:
                keep = True
                return Claim(name, path, body, None, fd, self._inflate)
            problem, raw = self._validate(name, body)
            if problem is not None:
                self._move_locked(path, self._quarantine / name.filename)
                _logger.warning("telemetry spool: quarantined batch %s: %s", name.batch_id, problem)
                return None
            keep = True
            return Claim(name, path, body, raw, fd)
        finally:
            if not keep:
                self._open_fds.discard(fd)
                _fs.close_unlocked(fd)

    def _inflate(self, body: bytes) -> bytes:
        problem, raw = decompress_frame(self._decompressor(), body, _MAX_DECOMPRESSED)
        if problem is not None:
            raise OSError(f"batch cannot be decompressed: {problem}")
        return raw

    def _validate(self, name: BatchName, body: bytes) -> tuple[str | None, bytes]:
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

    def release(self, claim: Claim) -> None:
        """Give the batch back unchanged (e.g. upload failed; retried later)."""
        self._close_claim(claim)

    def dead_letter(self, claim: Claim) -> None:
        """Move a refused batch to ``dead/``: kept and counted, never retried."""
        try:
            self._move_locked(claim.path, self._dead / claim.name.filename)
        finally:
            self._close_claim(claim)

    def quarantine(self, claim: Claim) -> None:
        """Move an unreadable claimed batch aside."""
        try:
            self._move_locked(claim.path, self._quarantine / claim.name.filename)
        finally:
            self._close_claim(claim)

    def _close_claim(self, claim: Claim) -> None:
        if claim._fd in self._open_fds:
            self._open_fds.discard(claim._fd)
            _fs.close_unlocked(claim._fd)
        claim._fd = -1

    def _move_locked(self, src: Path, dst: Path) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.rename(src, dst)
            if self.fsync:
                _fs.fsync_dir(dst.parent)

    def iter_batches_newest_first(self) -> Iterator[tuple[BatchName, bytes]]:
        """Decompressed JSONL of sealed batches, newest first (read-only, no claim)."""
        for day in reversed(self._days()):
            entries = sorted(
                self._list_flat(self._batches / day), key=lambda it: it[0], reverse=True
            )
            for path, name in entries:
                try:
                    body = path.read_bytes()
                except FileNotFoundError:
                    continue
                problem, raw = self._validate(name, body)
                if problem is None:
                    yield name, raw

    # -- attachments ----------------------------------------------------------------

    def put_blob(self, raw: bytes, content_type: str) -> BlobRef:
        """Store ``raw`` once, content-addressed and compressed, for an event to reference.

        Content already stored only has its mtime refreshed (invariant 6: the encoder calls
        this before the referencing event's batch is sealed). Makes room under the cap like
        a seal. Returns ``stored=False`` when the compressed blob alone exceeds the cap
        (nothing written, nothing evicted). Raises ``OSError`` on disk failure, leaving
        nothing behind. ``content_type`` is not stored: references carry it.
        """
        sha = hashlib.sha256(raw).hexdigest()
        ref = BlobRef(sha, len(raw), content_type)
        with self._global_lock():
            if self._touch_blob_locked(sha):
                return ref
        body = self._compressor().compress(raw)
        name = BlobName(sha, len(raw), len(body))
        if name.stored_size > self.max_bytes:
            return dataclasses.replace(ref, stored=False)
        for d in (self._tmp, self._blobs):  # cheap, and the encoder may run before open()
            _fs.ensure_dir(d)
        tmp = self._tmp / f"{sha}.{os.getpid()}.{os.urandom(4).hex()}.blob.tmp"
        fd = _fs.open_new(tmp)
        self._open_fds.add(fd)
        try:
            _fs.lock(fd)  # marks the file alive for recover() and check()
            _fs.write_all(fd, body)
            if self.fsync:
                os.fsync(fd)
            with self._global_lock():
                if self._touch_blob_locked(sha):  # another writer stored it meanwhile
                    os.unlink(tmp)
                    return ref
                self._make_room(name.stored_size)
                os.rename(tmp, self._blobs / name.filename)
                self._remember_blob(sha, name.filename)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        finally:
            self._open_fds.discard(fd)
            _fs.close_unlocked(fd)
        if self.fsync:
            _fs.fsync_dir(self._blobs)
        return ref

    def read_blob(self, sha256: str) -> bytes | None:
        """The stored blob (one zstd frame: the wire body of ``POST /attachments``) or None.

        None when no such blob is stored (never written, evicted, collected). A blob whose
        size, frame or hash is wrong is moved to ``quarantine/`` (logged) and None returned.
        """
        if not is_sha256(sha256):
            return None
        for use_hint in (True, False):
            path = self._find_blob(sha256, use_hint=use_hint)
            if path is None:
                return None
            try:
                body = path.read_bytes()
            except FileNotFoundError:
                self._blob_names.pop(sha256, None)
                continue
            name = BlobName.parse(path.name)
            problem = "unparsable name" if name is None else self._validate_blob(name, body)
            if problem is None:
                return body
            self._blob_names.pop(sha256, None)
            self._move_locked(path, self._quarantine / path.name)
            _logger.warning("telemetry spool: quarantined attachment %s: %s", sha256, problem)
            return None
        return None

    def gc_blobs(self, grace_s: float = BLOB_GRACE_S, *, now_ns: int | None = None) -> int:
        """Remove blobs no batch on disk and no event in memory can reference; returns how many.

        A blob goes when its mtime is older than ``min(oldest batch, now) - grace_s``
        (invariant 6). ``grace_s`` bounds how long an event waits in memory between the
        encoder storing its blobs and its batch being sealed; it must stay well above that
        (``grace_s=0`` would collect the blobs of pending batches, which are sealed just
        after their blobs). Tests move ``now_ns`` instead.
        """
        now = time.time_ns() if now_ns is None else now_ns
        with self._global_lock():
            return self._gc_locked(now, grace_s)

    def blob_usage(self) -> tuple[int, int]:
        """Stored attachment blobs: (count, bytes on disk). Quarantined ones not included."""
        blobs = self._list_blobs(self._blobs)
        return len(blobs), sum(b.stored_size for _, b in blobs)

    def _gc_locked(self, now_ns: int, grace_s: float) -> int:
        oldest = self._oldest_batch_ns()
        horizon = min(now_ns, now_ns if oldest is None else oldest) - int(grace_s * 1e9)
        return self._remove_blobs([self._blobs], horizon)

    def _oldest_batch_ns(self) -> int | None:
        """Id time of the oldest batch anywhere on disk (pending, dead, quarantined, in tmp/)."""
        times = [n.created_ns for n in self.dead_letters()[:1] + self.quarantined()[:1]]
        for day in self._days():
            names = self._list_flat(self._batches / day)
            if names:  # days sort in time order: the first non-empty one holds the oldest
                times.append(min(n.created_ns for _, n in names))
                break
        with contextlib.suppress(FileNotFoundError):
            for fn in os.listdir(self._tmp):
                m = _TMP_RE.match(fn)
                if m is not None:
                    times.append(_ids.uuid7_time_ns(m.group(1)))
        return min(times, default=None)

    def _remove_blobs(self, folders: list[Path], horizon_ns: int) -> int:
        """Unlink blobs whose mtime is older than ``horizon_ns``. Caller holds the global lock."""
        removed = 0
        for folder in folders:
            for path, blob in self._list_blobs(folder):
                try:
                    if os.stat(path).st_mtime_ns >= horizon_ns:
                        continue
                    os.unlink(path)
                except FileNotFoundError:
                    continue
                if folder == self._blobs:
                    self._blob_names.pop(blob.sha256, None)
                removed += 1
        return removed

    def _touch_blob_locked(self, sha: str) -> bool:
        """Refresh the mtime of the stored blob ``sha``; False when none is stored.

        Under the global lock, so a concurrent :meth:`gc_blobs` either sees the new mtime
        or has removed the blob before (and then it is written again).
        """
        for use_hint in (True, False):
            path = self._find_blob(sha, use_hint=use_hint)
            if path is None:
                return False
            try:
                os.utime(path)
                return True
            except FileNotFoundError:
                self._blob_names.pop(sha, None)
        return False

    def _find_blob(self, sha: str, *, use_hint: bool) -> Path | None:
        """Path of blob ``sha`` (from the name hint, which may be stale, or a listing)."""
        if use_hint:
            hint = self._blob_names.get(sha)
            if hint is not None:
                return self._blobs / hint
        prefix = sha + "."
        try:
            names = os.listdir(self._blobs)
        except FileNotFoundError:
            return None
        for fn in names:
            if fn.startswith(prefix) and BlobName.parse(fn) is not None:
                self._remember_blob(sha, fn)
                return self._blobs / fn
        self._blob_names.pop(sha, None)
        return None

    def _remember_blob(self, sha: str, filename: str) -> None:
        if len(self._blob_names) >= _BLOB_CACHE_MAX:
            self._blob_names.clear()
        self._blob_names[sha] = filename

    def _validate_blob(self, name: BlobName, body: bytes) -> str | None:
        if len(body) != name.stored_size:
            return f"size {len(body)} != {name.stored_size} in its name"
        problem, raw = decompress_frame(self._decompressor(), body, name.raw_size)
        if problem is not None:
            return problem
        if len(raw) != name.raw_size:
            return f"{len(raw)} bytes of content, name says {name.raw_size}"
        if hashlib.sha256(raw).hexdigest() != name.sha256:
            return "content does not match the sha256 in its name"
        return None

    def _compressor(self) -> zstandard.ZstdCompressor:
        cctx: zstandard.ZstdCompressor | None = getattr(self._local, "cctx", None)
        if cctx is None:
            cctx = self._local.cctx = zstandard.ZstdCompressor(
                level=_BLOB_ZSTD_LEVEL, write_checksum=True, write_content_size=True
            )
        return cctx

    # -- maintenance ----------------------------------------------------------------

    def recover(self) -> int:
        """Recover or remove ``tmp/`` leftovers of dead writers; returns how many were handled."""
        handled = 0
        try:
            names = os.listdir(self._tmp)
        except FileNotFoundError:
            return 0
        for n in names:
            m = _TMP_RE.match(n)
            path = self._tmp / n
            blob = m is None and _BLOB_TMP_RE.fullmatch(n) is not None
            if m is None and not blob:
                continue
            try:
                fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                continue
            try:
                if not _fs.try_lock(fd) or not self._same_file(fd, path):
                    continue  # its writer is alive
                if _being_created(fd):
                    continue  # its writer may not have locked it yet
                if m is None:
                    # A blob whose writer died before publishing it: the event that was to
                    # reference it died in that writer's memory too. Nothing to count.
                    os.unlink(path)
                    handled += 1
                    continue
                body = _read_fd(fd)
                name = BatchName(m.group(1), int(m.group(2)), len(body))
                problem, _ = self._validate(name, body)
                if problem is None and name.n_bytes <= self.max_bytes:
                    self._publish(path, name)
                else:
                    os.unlink(path)
                    with self._global_lock():
                        self._record_drops([("torn", name)])
                handled += 1
            finally:
                _fs.close_unlocked(fd)
        return handled

    def purge_expired(self, now_ns: int | None = None) -> int:
        """Remove data older than the retention period; returns events removed."""
        now = time.time_ns() if now_ns is None else now_ns
        cutoff = now - int(self.retention_s * 1e9)
        cutoff_day = _day_of(cutoff)
        removed = self._purge(
            lambda n: n.created_ns < cutoff, "retention", day_filter=cutoff_day, include_dead=True
        )
        with self._global_lock():
            # Blobs referenced last before the cutoff are referenced by no batch still kept.
            self._gc_locked(now, BLOB_GRACE_S)
            self._remove_blobs([self._quarantine], cutoff)
        return removed

    def purge(
        self,
        *,
        older_than_days: float | None = None,
        dead_letter: bool = False,
        everything: bool = False,
    ) -> int:
        """User-requested deletion (CLI ``purge``); counted as dropped, reason ``purged``.

        Blobs no remaining batch can reference go too (``everything``: all of them, but
        those a batch spared because it is claimed may reference); they hold no events, so
        they are not counted as dropped.
        """
        now = time.time_ns()
        if everything:
            removed = self._purge(lambda n: True, "purged", include_dead=True)
            with self._global_lock():
                oldest = self._oldest_batch_ns()
                horizon = _ALL if oldest is None else oldest - int(BLOB_GRACE_S * 1e9)
                self._remove_blobs([self._blobs, self._quarantine], horizon)
            return removed
        if dead_letter:
            removed = self._purge_folder([self._dead], lambda n: True, "purged")
        elif older_than_days is not None:
            cutoff = now - int(older_than_days * 86400e9)
            removed = self._purge(lambda n: n.created_ns < cutoff, "purged", include_dead=True)
            with self._global_lock():
                self._remove_blobs([self._quarantine], cutoff)
        else:
            return 0
        with self._global_lock():
            self._gc_locked(now, BLOB_GRACE_S)
        return removed

    def _purge(
        self,
        pred: Any,
        reason: str,
        *,
        day_filter: str | None = None,
        include_dead: bool = False,
    ) -> int:
        folders = [self._batches / d for d in self._days() if day_filter is None or d <= day_filter]
        folders.append(self._quarantine)
        if include_dead:
            folders.append(self._dead)
        removed = self._purge_folder(folders, pred, reason)
        with self._global_lock():  # a seal creates day directories under it (see _publish)
            for d in self._days():
                if day_filter is not None and d > day_filter:
                    continue
                with contextlib.suppress(OSError):
                    os.rmdir(self._batches / d)  # only succeeds when empty
        return removed

    def _purge_folder(self, folders: list[Path], pred: Any, reason: str) -> int:
        drops: list[tuple[str, BatchName]] = []
        for folder in folders:
            for path, name in self._list_flat(folder):
                if pred(name) and self._remove_unclaimed(path):
                    drops.append((reason, name))
        if drops:
            with self._global_lock():
                self._record_drops(drops)
        return sum(n.n_events for _, n in drops)

    @contextlib.contextmanager
    def _global_lock(self) -> Iterator[None]:
        with _fs.flock(self._lock_path) as fd:
            self._open_fds.add(fd)
            try:
                yield
            finally:
                self._open_fds.discard(fd)

    # -- invariants -----------------------------------------------------------------

    def check(self, *, deep: bool = True, slack_bytes: int = 0) -> list[str]:
        """Verify the on-disk invariants; returns the problems found (empty = healthy).

        ``slack_bytes`` is the allowance over the cap for batches being written right now.
        """
        problems: list[str] = []
        for dirpath, _dirs, filenames in os.walk(self.root):
            mode = os.stat(dirpath).st_mode & 0o777
            if mode != _fs.DIR_MODE:
                problems.append(f"directory {dirpath} has mode {mode:o}, expected 700")
            for fn in filenames:
                p = Path(dirpath) / fn
                try:
                    st = os.lstat(p)
                except FileNotFoundError:
                    continue
                if st.st_mode & 0o777 != _fs.FILE_MODE:
                    problems.append(f"file {p} has mode {st.st_mode & 0o777:o}, expected 600")
        for day in self._days():
            folder = self._batches / day
            for fn in os.listdir(folder):
                name = BatchName.parse(fn)
                path = folder / fn
                if name is None:
                    problems.append(f"unexpected file in batches: {path}")
                    continue
                if name.day != day:
                    problems.append(f"batch {fn} is in day {day}, its id says {name.day}")
                try:
                    body = path.read_bytes()
                except FileNotFoundError:
                    continue  # acked or evicted meanwhile
                if deep:
                    problem, raw = self._validate(name, body)
                    if problem is not None:
                        problems.append(f"batch {fn}: {problem}")
                        continue
                    for i, line in enumerate(raw.splitlines()):
                        try:
                            ev = orjson.loads(line)
                        except orjson.JSONDecodeError:
                            problems.append(f"batch {fn} line {i}: not JSON")
                            break
                        missing = [k for k in ENVELOPE_FIELDS if k not in ev]
                        if missing:
                            problems.append(f"batch {fn} line {i}: missing {missing}")
                            break
                elif len(body) != name.n_bytes:
                    problems.append(f"batch {fn}: size {len(body)} != {name.n_bytes}")
        problems.extend(self._check_blobs(deep=deep))
        with contextlib.suppress(FileNotFoundError):
            for fn in os.listdir(self._tmp):
                path = self._tmp / fn
                try:
                    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
                except FileNotFoundError:
                    continue
                try:
                    if _fs.try_lock(fd) and self._same_file(fd, path) and not _being_created(fd):
                        problems.append(f"leftover temporary file of a dead writer: {path}")
                finally:
                    os.close(fd)
        used = self.usage() + self._tmp_bytes()
        if used > self.max_bytes + slack_bytes:
            problems.append(f"spool uses {used} bytes, cap {self.max_bytes} (+{slack_bytes} slack)")
        if self._dropped_path.exists():
            try:
                DropCounts.from_json(self._dropped_path.read_bytes())
            except (ValueError, KeyError, TypeError) as exc:
                problems.append(f"unreadable {self._dropped_path}: {exc}")
        return problems

    def _check_blobs(self, *, deep: bool) -> list[str]:
        problems: list[str] = []
        try:
            names = os.listdir(self._blobs)
        except FileNotFoundError:
            return []  # a spool that never stored a blob (or was never opened)
        for fn in names:
            path = self._blobs / fn
            blob = BlobName.parse(fn)
            if blob is None:
                problems.append(f"unexpected file in attachments: {path}")
                continue
            try:
                body = path.read_bytes() if deep else b""
                size = len(body) if deep else os.lstat(path).st_size
            except FileNotFoundError:
                continue  # collected or evicted meanwhile
            if size != blob.stored_size:
                problems.append(f"blob {fn}: size {size} != {blob.stored_size}")
            elif deep:
                problem = self._validate_blob(blob, body)
                if problem is not None:
                    problems.append(f"blob {fn}: {problem}")
        return problems

    def _tmp_bytes(self) -> int:
        total = 0
        with contextlib.suppress(FileNotFoundError):
            for entry in os.scandir(self._tmp):
                with contextlib.suppress(FileNotFoundError):
                    total += entry.stat(follow_symlinks=False).st_size
        return total

    def disk_usage(self) -> int:
        """Actual sum of file sizes under the spool (what tests compare with the cap)."""
        total = 0
        for dirpath, _dirs, files in os.walk(self.root):
            for fn in files:
                with contextlib.suppress(FileNotFoundError):
                    total += os.lstat(Path(dirpath) / fn).st_size
        return total


def _list_parsed(folder: Path, parse: Callable[[str], _N | None]) -> list[tuple[Path, _N]]:
    """``(path, parsed name)`` for the files of ``folder`` whose names ``parse`` accepts."""
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        return []
    return [(folder / n, parsed) for n in names if (parsed := parse(n)) is not None]


def _being_created(fd: int) -> bool:
    """An empty tmp file young enough that its live writer may still be about to lock it."""
    st = os.fstat(fd)
    return st.st_size == 0 and time.time() - st.st_mtime < _TMP_BIRTH_GRACE_S


def _read_fd(fd: int) -> bytes:
    chunks = []
    while True:
        chunk = os.read(fd, 1 << 20)
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)
