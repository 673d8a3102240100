"""The file event store: events as JSONL partitioned by UTC day and user, with a journal.

``events/<YYYY-MM-DD>/<user>.jsonl`` holds the events of one user on one day of ``ts``.
A batch is stored all-or-nothing, exactly once per ``Idempotency-Key``: under one lock,
each touched file gets the batch's lines at its committed size (debris past it is cut
first) and is fsync'ed (new files and days: their directory too); then the commit record
goes to the :class:`~.journal.Journal`. At open, files are cut back to their committed
sizes, which rolls back a batch that crashed before its commit (never acknowledged, so
the client's retry stores it once). Readers read committed prefixes only, so a query
never sees half a batch. Fine for a reference collector, not for a fleet's archive: the
journal's keys stay in memory and a query scans the matching partitions.
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
from pathlib import Path

import orjson

from telemetry_client._internal import fs as _fs
from telemetry_client.collector._decode import DecodedEvent
from telemetry_client.collector._time import parse_rfc3339
from telemetry_client.collector.store import _io
from telemetry_client.collector.store.base import (
    AppendResult,
    EventQuery,
    QueryResult,
    StorageError,
)
from telemetry_client.collector.store.journal import Journal
from telemetry_client.events import ENVELOPE_FIELDS

__all__ = ["FileEventStore", "partition_name"]

_log = logging.getLogger("telemetry_client.collector")

_SAFE_NAME_RE = re.compile(r"[a-z0-9_-][a-z0-9._-]{0,63}")
_UNSAFE_RUN_RE = re.compile(r"[^a-z0-9_-]+")  # dots too: no "..", no hidden names


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


class FileEventStore:
    """Append-only, partitioned event storage with a commit journal (see the module doc)."""

    def __init__(self, data_dir: Path) -> None:
        self._root = data_dir / "events"
        self._lock = threading.Lock()
        self._sizes: dict[str, int] = {}  # "YYYY-MM-DD/<name>.jsonl" -> committed bytes
        self._keys: set[str] = set()
        _fs.ensure_dir(self._root)
        self._journal = Journal(data_dir / "journal.jsonl")
        try:
            self._recover()
        except BaseException:
            self._journal.close()
            raise

    # -- recovery ---------------------------------------------------------------------

    def _recover(self) -> None:
        for record in self._journal.replay():
            if record["key"] is not None:
                self._keys.add(record["key"])
            for rel, offset, length in record["parts"]:
                self._sizes[rel] = max(self._sizes.get(rel, 0), offset + length)
        self._cut_uncommitted()

    def _cut_uncommitted(self) -> None:
        """Truncate every partition file to its committed size (rolls back unacked batches)."""
        files = list(self._files())
        if files and not self._journal.existed:
            # A lost or deleted journal, not a crash (the journal is created before the first
            # batch): rolling back would delete every stored event. Refuse instead.
            raise StorageError(
                f"{self._journal.path} is missing but {self._root} holds events;"
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
                self._journal.commit(
                    {
                        "key": key,
                        "parts": parts,
                        "events": len(events),
                        "at": dt.datetime.now(dt.timezone.utc).isoformat(),
                    }
                )
            except BaseException:
                self._undo(touched)
                raise
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
        flags = os.O_WRONLY | _io.O_CLOEXEC | _io.O_NOFOLLOW
        try:
            fd = os.open(path, flags | os.O_CREAT | os.O_EXCL, 0o600)
            created = True
        except FileExistsError:
            fd = os.open(path, flags)
            created = False
        try:
            if os.fstat(fd).st_size != offset:  # debris of a batch that failed midway
                os.ftruncate(fd, offset)
            _io.pwrite_all(fd, data, offset)
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
        self._journal.rollback()

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
            for line in _io.read_prefix(self._root / rel, size).splitlines():
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
        with self._lock:
            sizes = dict(self._sizes)
            problems = self._journal.check()
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
        """Close the journal (idempotent)."""
        with self._lock:
            self._journal.close()
