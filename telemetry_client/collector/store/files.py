"""The collector's durable store: append-only event JSONL, content-addressed attachments.

On-disk layout (directories 0700, files 0600)::

    <data_dir>/
      .lock                                   flock: one collector process per data dir
      journal.jsonl                           one line per accepted batch (commit record)
      events/<YYYY-MM-DD>/<user>.jsonl        events, by UTC day of ``ts`` and by user id
      attachments/<sha[:2]>/<sha256>          raw attachment bytes
      attachments/<sha[:2]>/<sha256>.json     {"content_type": ..., "size": ...}
      tmp/                                    attachment uploads in progress

``<user>`` is :func:`partition_name` of the user id: the id itself when it is a safe
lowercase file name, else a readable prefix plus ``~`` and 16 hex of its sha256, so no id
can escape the directory or share a file with another id.

A batch is stored all-or-nothing, exactly once per ``Idempotency-Key``:

1. Under one lock, each touched partition file gets the batch's lines written at its
   committed size (anything past it is the debris of a failed batch: cut first), then
   ``fsync``; new files and day directories get their directory ``fsync``'ed.
2. A commit record ``{"key", "parts": [[file, offset, length], ...], "events", "at"}`` is
   appended to ``journal.jsonl`` and ``fsync``'ed. Only then does the request get 2xx.

On open, the journal is replayed: it gives the committed keys (dedupe survives restarts)
and the committed size of every file; bytes past it (a batch that crashed between steps
1 and 2, never acknowledged) are truncated away, so the client's retry stores it once. A
torn last journal line is dropped; garbage between records, or events without any journal
(deleted by hand), make opening fail instead of rolling back good data. Readers only read
up to committed sizes, so a query never sees half a batch. :meth:`Storage.check` verifies
all of this (tests call it).

Growth: the journal gains ~150 bytes per batch and is replayed at startup (keys stay in
memory); ``GET /api/v1/events`` scans the matching partitions. Both are fine for a
reference collector (tests, demos, small teams), not for a fleet's long-term archive.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import logging
import os
import re
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import orjson

from telemetry_client._internal import fs as _fs
from telemetry_client.collector._decode import DecodedEvent
from telemetry_client.collector._time import parse_rfc3339
from telemetry_client.errors import TelemetryError
from telemetry_client.events import ENVELOPE_FIELDS

__all__ = [
    "AppendResult",
    "AttachmentInfo",
    "AttachmentStore",
    "EventQuery",
    "EventStore",
    "QueryResult",
    "Storage",
    "StorageError",
    "partition_name",
]

_log = logging.getLogger("telemetry_client.collector")

_SAFE_NAME_RE = re.compile(r"[a-z0-9_-][a-z0-9._-]{0,63}")
_UNSAFE_RUN_RE = re.compile(r"[^a-z0-9_-]+")  # dots too: no "..", no hidden names
_DAY_RE = re.compile(r"\d{4}-\d{2}-\d{2}")
_SHA256_RE = re.compile(r"[0-9a-f]{64}")
_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


class StorageError(TelemetryError):
    """The data directory cannot be used: held by another collector, or its journal is corrupt."""


def partition_name(user_id: str) -> str:
    """The file name stem for ``user_id``'s events: safe, and distinct for distinct ids.

    Ids that are already safe (lowercase ``[a-z0-9._-]``, not starting with a dot, no
    ``..``, at most 64 characters) are used as-is. Any other id (path separators, ``..``,
    hidden names, NUL, unicode, upper case, which case-insensitive file systems would fold
    together, very long ids) becomes ``<readable prefix>~<16 hex of sha256(id)>``. Unchanged names
    never contain ``~``, so the two kinds never meet, and two changed ids would need a
    64-bit hash collision to meet.
    """
    if _SAFE_NAME_RE.fullmatch(user_id) and ".." not in user_id:
        return user_id
    readable = _UNSAFE_RUN_RE.sub("_", user_id.lower())[:40]
    digest = hashlib.sha256(user_id.encode("utf-8", "surrogatepass")).hexdigest()[:16]
    return f"{readable}~{digest}"


@dataclass(frozen=True, slots=True)
class AppendResult:
    """What :meth:`EventStore.append` did: events stored, or a duplicate (nothing stored)."""

    accepted: int
    duplicate: bool
    bytes: int = 0


@dataclass(frozen=True, slots=True)
class EventQuery:
    """Filters of ``GET /api/v1/events``; ``since_us`` is epoch microseconds (ts >= since)."""

    user_id: str | None = None
    session_id: str | None = None
    type: str | None = None
    since_us: int | None = None
    limit: int = 1000
    offset: int = 0


@dataclass(frozen=True, slots=True)
class QueryResult:
    """One page of matching events (oldest first) and how many match in all."""

    events: list[dict[str, Any]]
    total: int


@dataclass(frozen=True, slots=True)
class AttachmentInfo:
    """A stored attachment: where its bytes are, their size and original content type."""

    path: Path
    size: int
    content_type: str


def _pwrite_all(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, offset)
        view = view[n:]
        offset += n


def _read_prefix(path: Path, size: int) -> bytes:
    with path.open("rb") as f:
        return f.read(size)


class EventStore:
    """Append-only, partitioned event storage with a commit journal (see the module doc)."""

    def __init__(self, data_dir: Path) -> None:
        self._root = data_dir / "events"
        self._journal_path = data_dir / "journal.jsonl"
        self._lock = threading.Lock()
        self._sizes: dict[str, int] = {}  # "YYYY-MM-DD/<name>.jsonl" -> committed bytes
        self._keys: set[str] = set()
        self._journal_size = 0
        _fs.ensure_dir(self._root)
        journal_existed = self._journal_path.exists()
        self._journal_fd = os.open(
            self._journal_path, os.O_WRONLY | os.O_CREAT | _O_CLOEXEC | _O_NOFOLLOW, 0o600
        )
        try:
            self._recover(journal_existed)
        except BaseException:
            os.close(self._journal_fd)
            raise

    # -- recovery ---------------------------------------------------------------------

    def _recover(self, journal_existed: bool) -> None:
        data = _read_prefix(self._journal_path, os.fstat(self._journal_fd).st_size)
        good_end = 0
        records: list[dict[str, Any]] = []
        bad_line: int | None = None
        for lineno, line in enumerate(data.splitlines(keepends=True), 1):
            record = self._parse_record(line)
            if record is None:
                bad_line = bad_line or lineno
                continue
            if bad_line is not None:  # garbage *between* good records: not a torn tail
                raise StorageError(
                    f"{self._journal_path}: line {bad_line} is not a commit record;"
                    " refusing to guess which batches were stored"
                )
            records.append(record)
            good_end += len(line)
        if good_end < len(data):
            _log.warning("journal: dropped a torn last record (%d bytes)", len(data) - good_end)
            os.ftruncate(self._journal_fd, good_end)
            os.fsync(self._journal_fd)
        self._journal_size = good_end
        for record in records:
            if record["key"] is not None:
                self._keys.add(record["key"])
            for rel, offset, length in record["parts"]:
                self._sizes[rel] = max(self._sizes.get(rel, 0), offset + length)
        self._cut_uncommitted(journal_existed)

    @staticmethod
    def _parse_record(line: bytes) -> dict[str, Any] | None:
        if not line.endswith(b"\n"):
            return None
        try:
            record = orjson.loads(line)
        except orjson.JSONDecodeError:
            return None
        if not isinstance(record, dict) or not isinstance(record.get("parts"), list):
            return None
        key = record.get("key")
        if key is not None and not isinstance(key, str):
            return None
        for part in record["parts"]:
            if not (
                isinstance(part, list)
                and len(part) == 3
                and isinstance(part[0], str)
                and all(isinstance(n, int) and n >= 0 for n in part[1:])
            ):
                return None
        return record

    def _cut_uncommitted(self, journal_existed: bool) -> None:
        """Truncate every partition file to its committed size (rolls back unacked batches)."""
        files = list(self._files())
        if files and not journal_existed:
            # A lost or deleted journal, not a crash (the journal is created before the first
            # batch): rolling back would delete every stored event. Refuse instead.
            raise StorageError(
                f"{self._journal_path} is missing but {self._root} holds events;"
                " restore the journal or move the events away"
            )
        on_disk: set[str] = set()
        for rel, path in files:
            on_disk.add(rel)
            actual = path.stat().st_size
            committed = self._sizes.get(rel)
            if committed is None:
                _log.warning("rolled back %s: no committed batch wrote it", rel)
                path.unlink()
            elif actual > committed:
                _log.warning("rolled back %d unacknowledged bytes of %s", actual - committed, rel)
                with path.open("r+b") as f:
                    f.truncate(committed)
                    os.fsync(f.fileno())
            elif actual < committed:
                _log.error("%s is shorter than committed (%d < %d)", rel, actual, committed)
                self._sizes[rel] = actual
        for rel in set(self._sizes) - on_disk:
            _log.error("%s is committed in the journal but missing on disk", rel)
            del self._sizes[rel]

    def _files(self) -> Iterator[tuple[str, Path]]:
        if not self._root.is_dir():
            return
        for day_dir in sorted(self._root.iterdir()):
            if not day_dir.is_dir():
                continue
            for path in sorted(day_dir.iterdir()):
                if path.name.endswith(".jsonl") and path.is_file():
                    yield f"{day_dir.name}/{path.name}", path

    # -- writes -----------------------------------------------------------------------

    def has_key(self, key: str) -> bool:
        """True when a batch with this ``Idempotency-Key`` was committed (ever, on this dir).

        Lock-free on purpose: the app calls it on the event loop, which must not wait for a
        batch being fsync'ed under the lock. One ``in`` on a set is atomic in CPython, and a
        key is added only after its commit, so True is always final; the authoritative
        check-and-store happens under the lock in :meth:`append`.
        """
        return key in self._keys

    def append(self, events: Sequence[DecodedEvent], key: str | None) -> AppendResult:
        """Store ``events`` durably, all or nothing; a committed ``key`` stores nothing.

        Returns after the data and the commit record are fsync'ed. Raises ``OSError``
        (disk full, permissions) after undoing whatever it wrote.
        """
        groups: dict[str, list[bytes]] = {}
        for event in events:
            rel = f"{event.day}/{partition_name(event.user_id)}.jsonl"
            groups.setdefault(rel, []).append(event.line)
        with self._lock:
            if key is not None and key in self._keys:
                return AppendResult(0, duplicate=True)
            touched: list[str] = []
            parts: list[tuple[str, int, int]] = []
            try:
                for rel, lines in groups.items():
                    data = b"".join(lines)
                    offset = self._sizes.get(rel, 0)
                    touched.append(rel)
                    self._write_at(rel, offset, data)
                    parts.append((rel, offset, len(data)))
                record = {
                    "key": key,
                    "parts": parts,
                    "events": len(events),
                    "at": dt.datetime.now(dt.timezone.utc).isoformat(),
                }
                line = orjson.dumps(record) + b"\n"
                _pwrite_all(self._journal_fd, line, self._journal_size)
                os.fsync(self._journal_fd)
            except BaseException:
                self._undo(touched)
                raise
            self._journal_size += len(line)
            for rel, offset, length in parts:
                self._sizes[rel] = offset + length
            if key is not None:
                self._keys.add(key)
        return AppendResult(len(events), duplicate=False, bytes=sum(p[2] for p in parts))

    def _write_at(self, rel: str, offset: int, data: bytes) -> None:
        day, name = rel.split("/")
        day_dir = self._root / day
        if not day_dir.is_dir():
            _fs.ensure_dir(day_dir)
            _fs.fsync_dir(self._root)
        path = day_dir / name
        try:
            fd = os.open(
                path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _O_CLOEXEC | _O_NOFOLLOW, 0o600
            )
            created = True
        except FileExistsError:
            fd = os.open(path, os.O_WRONLY | _O_CLOEXEC | _O_NOFOLLOW)
            created = False
        try:
            if os.fstat(fd).st_size != offset:  # debris of a batch that failed midway
                os.ftruncate(fd, offset)
            _pwrite_all(fd, data, offset)
            os.fsync(fd)
        finally:
            os.close(fd)
        if created:
            _fs.fsync_dir(day_dir)

    def _undo(self, touched: list[str]) -> None:
        """Best effort: cut the files of a failed batch back to their committed sizes."""
        for rel in touched:
            path = self._root / rel
            with contextlib.suppress(OSError):
                committed = self._sizes.get(rel)
                if committed is None:
                    path.unlink()
                else:
                    os.truncate(path, committed)
        with contextlib.suppress(OSError):
            os.ftruncate(self._journal_fd, self._journal_size)

    # -- reads ------------------------------------------------------------------------

    def query(self, q: EventQuery) -> QueryResult:
        """Matching committed events, oldest ``ts`` first (ties: by id), paged."""
        with self._lock:
            sizes = dict(self._sizes)
        wanted_name = None if q.user_id is None else f"{partition_name(q.user_id)}.jsonl"
        since_day = None
        if q.since_us is not None:
            since = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
            since += dt.timedelta(microseconds=q.since_us)
            since_day = f"{since.year:04d}-{since.month:02d}-{since.day:02d}"
        # Stored lines are orjson output (no whitespace), so an event with session_id "s"
        # contains the bytes '"session_id":"s"': a cheap test that skips most non-matching
        # lines unparsed. It can only over-match (the same pair nested in data); the parsed
        # comparison below decides.
        needles = [
            b'"%s":%s' % (name.encode(), orjson.dumps(value))
            for name, value in (("session_id", q.session_id), ("type", q.type))
            if value is not None
        ]
        matches: list[tuple[int, str, int, bytes]] = []
        for rel, size in sizes.items():
            day, name = rel.split("/")
            if (wanted_name is not None and name != wanted_name) or (
                since_day is not None and day < since_day
            ):
                continue
            for line in _read_prefix(self._root / rel, size).splitlines():
                if needles and not all(needle in line for needle in needles):
                    continue
                event = orjson.loads(line)
                if (
                    (q.user_id is not None and event["user_id"] != q.user_id)
                    or (q.session_id is not None and event["session_id"] != q.session_id)
                    or (q.type is not None and event["type"] != q.type)
                ):
                    continue
                instant = parse_rfc3339(event["ts"])
                epoch_us = instant.epoch_us if instant is not None else 0
                if q.since_us is not None and epoch_us < q.since_us:
                    continue
                matches.append((epoch_us, event["id"], len(matches), line))
        matches.sort()
        page = matches[q.offset : q.offset + q.limit]
        return QueryResult([orjson.loads(m[3]) for m in page], len(matches))

    def check(self) -> list[str]:
        """Problems with the on-disk invariants (empty when all hold)."""
        problems: list[str] = []
        with self._lock:
            sizes = dict(self._sizes)
            journal_size = self._journal_size
        if self._journal_path.stat().st_size != journal_size:
            problems.append("journal.jsonl: size differs from the committed size")
        seen: set[str] = set()
        for rel, path in self._files():
            seen.add(rel)
            if path.stat().st_size != sizes.get(rel):
                problems.append(f"{rel}: size {path.stat().st_size} != committed {sizes.get(rel)}")
                continue
            day, name = rel.split("/")
            for n, line in enumerate(path.read_bytes().splitlines(), 1):
                try:
                    event = orjson.loads(line)
                except orjson.JSONDecodeError:
                    problems.append(f"{rel}:{n}: not JSON")
                    continue
                if not isinstance(event, dict) or any(f not in event for f in ENVELOPE_FIELDS):
                    problems.append(f"{rel}:{n}: not an envelope")
                    continue
                instant = parse_rfc3339(event["ts"])
                if instant is None or instant.day != day:
                    problems.append(f"{rel}:{n}: ts {event['ts']!r} is not on {day}")
                if f"{partition_name(event['user_id'])}.jsonl" != name:
                    problems.append(f"{rel}:{n}: user_id does not belong in {name}")
        problems.extend(f"{rel}: committed but missing" for rel in set(sizes) - seen)
        return problems

    def close(self) -> None:
        with self._lock:
            if self._journal_fd >= 0:
                os.close(self._journal_fd)
                self._journal_fd = -1


class _Staging:
    """An attachment upload being written to ``tmp/``: hashed and sized as it is written."""

    def __init__(self, store: AttachmentStore, path: Path) -> None:
        self._store = store
        self.path = path
        self._fd = _fs.open_new(path)
        self._hash = hashlib.sha256()
        self.size = 0
        self.committed = False

    def write(self, chunk: bytes) -> None:
        _fs.write_all(self._fd, chunk)
        self._hash.update(chunk)
        self.size += len(chunk)

    def hexdigest(self) -> str:
        return self._hash.hexdigest()

    def commit(self, sha256: str, content_type: str) -> bool:
        """Store the bytes as ``sha256`` (the caller verified it); False if already stored."""
        os.fsync(self._fd)
        os.close(self._fd)
        self._fd = -1
        stored = self._store._publish(self.path, sha256, content_type, self.size)
        self.committed = True
        return stored

    def discard(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        if not self.committed:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()

    def __enter__(self) -> _Staging:
        return self

    def __exit__(
        self, typ: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.discard()


class AttachmentStore:
    """Content-addressed blobs: stored once, verified by the caller before :meth:`_publish`."""

    def __init__(self, data_dir: Path) -> None:
        self._root = data_dir / "attachments"
        self._tmp = data_dir / "tmp"
        self._lock = threading.Lock()
        _fs.ensure_dir(self._root)
        _fs.ensure_dir(self._tmp)
        for leftover in self._tmp.iterdir():  # uploads cut short by a crash: never acked
            with contextlib.suppress(OSError):
                leftover.unlink()

    def _blob_path(self, sha256: str) -> Path:
        assert _SHA256_RE.fullmatch(sha256), "callers validate the hash"
        return self._root / sha256[:2] / sha256

    def info(self, sha256: str) -> AttachmentInfo | None:
        """The stored attachment ``sha256`` (lowercase hex), or None."""
        path = self._blob_path(sha256)
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            return None
        content_type = "application/octet-stream"
        with contextlib.suppress(OSError, orjson.JSONDecodeError, AttributeError):
            meta = orjson.loads(path.with_name(f"{sha256}.json").read_bytes())
            content_type = str(meta.get("content_type") or content_type)
        return AttachmentInfo(path, size, content_type)

    def stage(self) -> _Staging:
        """A new upload in ``tmp/``; ``with`` it so an abandoned upload leaves nothing."""
        return _Staging(self, self._tmp / f"{os.urandom(12).hex()}.part")

    def _publish(self, tmp: Path, sha256: str, content_type: str, size: int) -> bool:
        path = self._blob_path(sha256)
        with self._lock:
            if path.exists():
                tmp.unlink()
                return False
            shard = path.parent
            if not shard.is_dir():
                _fs.ensure_dir(shard)
                _fs.fsync_dir(self._root)
            meta = orjson.dumps({"content_type": content_type, "size": size})
            _fs.atomic_write(path.with_name(f"{sha256}.json"), meta, fsync=True)
            os.replace(tmp, path)  # the blob's presence is the commit
            _fs.fsync_dir(shard)
        return True

    def check(self) -> list[str]:
        """Problems with stored blobs (name != sha256 of content) and leftovers in ``tmp/``."""
        problems = [f"tmp/{p.name}: leftover upload" for p in self._tmp.iterdir()]
        for shard in sorted(self._root.iterdir()):
            for path in sorted(shard.iterdir()):
                if path.name.endswith(".json"):
                    continue
                if hashlib.sha256(path.read_bytes()).hexdigest() != path.name:
                    problems.append(f"attachments/{shard.name}/{path.name}: content mismatch")
        return problems


class Storage:
    """The collector's data directory: events, attachments, and the lock that makes it ours."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        _fs.ensure_dir(data_dir)
        self._lock_fd = os.open(data_dir / ".lock", os.O_RDWR | os.O_CREAT | _O_CLOEXEC, 0o600)
        try:
            if not _fs.try_lock(self._lock_fd):
                raise StorageError(f"data dir {data_dir} is in use by another collector process")
            self.events = EventStore(data_dir)
            self.attachments = AttachmentStore(data_dir)
        except BaseException:
            _fs.close_unlocked(self._lock_fd)
            raise
        self._closed = False

    @classmethod
    def open(cls, data_dir: Path) -> Storage:
        """Open (creating, recovering) ``data_dir``; :class:`StorageError` if it is in use."""
        return cls(Path(data_dir))

    def check(self) -> list[str]:
        """Every broken on-disk invariant, as readable lines (empty when all hold)."""
        return self.events.check() + self.attachments.check()

    def close(self) -> None:
        """Release the data dir (idempotent)."""
        if self._closed:
            return
        self._closed = True
        self.events.close()
        _fs.close_unlocked(self._lock_fd)
