"""Import a 0.1 collector data dir (``journal.jsonl``, ``events/``, ``attachments/``) into a Store.

Each journal record is one batch the 0.1 collector acknowledged; it names the batch's
``Idempotency-Key`` and the byte ranges (``[file, offset, length]``) it wrote. The
importer reads those ranges back, re-validates every line (``validate_envelope``) and
appends the batch under its original key, so a client retrying an old batch against the
new collector is still answered ``duplicate``. A batch sent without a key gets
``import-0.1:<sha256 of its journal record>``: records are immutable and unique (they name
distinct byte ranges and a commit time), so the key is the same on every run. Each batch
is its own transaction: a second run, or a run after a crash halfway, finds the stored
keys and stores nothing twice. Attachments are copied first (a blob is verified against
its name; its content type comes from the ``.json`` sidecar), so an imported event never
points at a blob that is not there yet.

The 0.1 dir is only read: no lock is taken and nothing is created, cut or rewritten (the
0.1 store's own recovery would truncate uncommitted bytes; we simply never read past
the committed ranges). A 0.1 collector may even be running on it: committed ranges never
change, a torn last journal line is an uncommitted batch and is left for the next run.
A batch whose bytes are missing or do not validate is skipped, logged and counted
(:attr:`ImportResult.skipped`); its key is not stored, so a later run can still import it.
Events are stored as canonical JSON (as the collector stores what it receives), which
for lines written by 0.1 are the very same bytes.
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import logging
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from telemetry_client.collector._decode import DecodedEvent, validate_envelope
from telemetry_client.collector._errors import Rejected
from telemetry_client.collector.store.base import Ingest, StorageError, Store
from telemetry_client.collector.store.journal import _parse_record

__all__ = ["IMPORT_INGEST", "PROGRESS_EVERY", "ImportResult", "derived_key", "import_data_dir"]

_log = logging.getLogger("telemetry_client.collector")

#: Who ingested an imported batch (the 0.1 collector did not record tokens).
IMPORT_INGEST = Ingest("imported-0.1", None)
#: The progress callback is called each time this many more events are done.
PROGRESS_EVERY = 10_000
_KEY_PREFIX = "import-0.1:"
_PARTITION_RE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}/(?!\.)[^/\\\x00]{1,200}\.jsonl")
_SHA256_RE = re.compile(r"[0-9a-f]{64}")
_DEFAULT_CONTENT_TYPE = "application/octet-stream"
_MAX_OPEN_FILES = 64
_O_READ = os.O_RDONLY | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOFOLLOW", 0)


@dataclass(frozen=True, slots=True)
class ImportResult:
    """What one import run did.

    ``batches``/``events``: stored by this run; ``duplicates``: batches already in the
    store (an earlier run); ``attachments``: blobs stored by this run; ``skipped``:
    batches (and blobs) that could not be read back intact (each logged; nothing stored).
    """

    batches: int = 0
    events: int = 0
    duplicates: int = 0
    attachments: int = 0
    skipped: int = 0

    def __str__(self) -> str:
        return (
            f"{self.batches} batches ({self.events} events) imported,"
            f" {self.duplicates} already imported, {self.attachments} attachments copied,"
            f" {self.skipped} skipped"
        )


class _Damaged(Exception):
    """A batch (or blob) that cannot be imported as it is on disk; the message says why."""


Progress = Callable[[int, int], None]


def derived_key(record_line: bytes) -> str:
    """The key of a batch the 0.1 collector stored without one (its journal record's hash)."""
    return _KEY_PREFIX + hashlib.sha256(record_line.rstrip(b"\n")).hexdigest()


def import_data_dir(src: Path, store: Store, *, progress: Progress | None = None) -> ImportResult:
    """Copy the 0.1 data dir ``src`` into ``store`` (see the module doc); idempotent.

    ``progress(done, total)`` (events) is called every :data:`PROGRESS_EVERY` events and
    once at the end. Raises :class:`StorageError` when ``src`` is not a 0.1 data dir, its
    journal is corrupt (garbage between records) or a file cannot be read at all; store
    errors (:class:`StoreUnavailable`) propagate: what was stored stays, a rerun resumes.
    """
    src = Path(src)
    records = read_journal(src / "journal.jsonl")
    attachments, bad_blobs = _import_attachments(src / "attachments", store)
    total = sum(_count(record) for _, record in records)
    counts = {"batches": 0, "events": 0, "duplicates": 0, "skipped": bad_blobs}
    done = reported = 0
    with _Partitions(src / "events") as partitions:
        for line, record in records:
            n = _count(record)
            key = record["key"] if record["key"] is not None else derived_key(line)
            if not record["parts"]:
                pass  # 0.1 never stored an empty batch; nothing to import
            elif store.has_key(key):
                counts["duplicates"] += 1
            else:
                try:
                    events = partitions.batch(record)
                except _Damaged as exc:
                    _log.warning("import: skipped the batch of journal record %s: %s", key, exc)
                    counts["skipped"] += 1
                else:
                    result = store.append(events, key, IMPORT_INGEST)
                    if result.duplicate:  # stored meanwhile (another importer)
                        counts["duplicates"] += 1
                    else:
                        counts["batches"] += 1
                        counts["events"] += result.accepted
            done += n
            if progress is not None and done // PROGRESS_EVERY > reported // PROGRESS_EVERY:
                progress(done, total)
                reported = done
    if progress is not None and reported != done:
        progress(done, total)
    return ImportResult(attachments=attachments, **counts)


def read_journal(path: Path) -> list[tuple[bytes, dict[str, Any]]]:
    """The committed records of a 0.1 journal (line, record), oldest first, read-only.

    A torn last line is a batch being (or that failed being) committed: ignored. A bad
    line *between* records raises :class:`StorageError`, as the 0.1 collector does.
    """
    try:
        fd = os.open(path, _O_READ)
    except FileNotFoundError:
        raise StorageError(
            f"{path.parent} is not a 0.1 collector data dir: it has no {path.name}"
        ) from None
    except OSError as exc:
        raise StorageError(f"cannot read {path}: {exc}") from exc
    with os.fdopen(fd, "rb") as f:
        data = f.read()
    records: list[tuple[bytes, dict[str, Any]]] = []
    bad_line: int | None = None
    for lineno, line in enumerate(data.splitlines(keepends=True), 1):
        record = _parse_record(line)
        if record is None:
            bad_line = bad_line or lineno
            continue
        if bad_line is not None:
            raise StorageError(
                f"{path}: line {bad_line} is not a commit record; refusing to guess which"
                " batches were stored (the 0.1 collector refuses this journal too)"
            )
        records.append((line, record))
    if bad_line is not None:
        _log.warning("import: %s ends with an uncommitted record; not imported", path)
    return records


def _count(record: dict[str, Any]) -> int:
    n = record.get("events")
    return n if isinstance(n, int) and not isinstance(n, bool) and n >= 0 else 0


class _Partitions:
    """Reads committed byte ranges of ``events/<day>/<name>.jsonl`` (a few files kept open)."""

    def __init__(self, root: Path) -> None:
        self._root = root
        self._fds: collections.OrderedDict[str, int] = collections.OrderedDict()

    def __enter__(self) -> _Partitions:
        return self

    def __exit__(self, *exc: object) -> None:
        for fd in self._fds.values():
            with contextlib.suppress(OSError):
                os.close(fd)
        self._fds.clear()

    def _fd(self, rel: str) -> int:
        fd = self._fds.get(rel)
        if fd is not None:
            self._fds.move_to_end(rel)
            return fd
        path = self._root / rel
        try:
            fd = os.open(path, _O_READ)
        except (FileNotFoundError, NotADirectoryError):
            raise _Damaged(f"events/{rel} is missing") from None
        except OSError as exc:
            raise StorageError(f"cannot read {path}: {exc}") from exc
        self._fds[rel] = fd
        if len(self._fds) > _MAX_OPEN_FILES:
            _, oldest = self._fds.popitem(last=False)
            os.close(oldest)
        return fd

    def read(self, rel: str, offset: int, length: int) -> bytes:
        if not _PARTITION_RE.fullmatch(rel):
            raise _Damaged(f"{rel!r} is not an events/<day>/<user>.jsonl partition")
        fd = self._fd(rel)
        chunks: list[bytes] = []
        got = 0
        while got < length:
            try:
                chunk = os.pread(fd, length - got, offset + got)
            except OSError as exc:
                raise StorageError(f"cannot read {self._root / rel}: {exc}") from exc
            if not chunk:
                raise _Damaged(
                    f"events/{rel} holds {got} of the batch's {length} bytes at offset {offset}"
                )
            chunks.append(chunk)
            got += len(chunk)
        return b"".join(chunks)

    def batch(self, record: dict[str, Any]) -> list[DecodedEvent]:
        """The batch's events, re-validated, in the order the record lists its ranges."""
        events: list[DecodedEvent] = []
        for rel, offset, length in record["parts"]:
            data = self.read(rel, offset, length)
            if not data.endswith(b"\n"):
                raise _Damaged(f"events/{rel} at offset {offset}: the range ends mid-line")
            events.extend(_decode_lines(rel, offset, data))
        expected = record.get("events")
        if isinstance(expected, int) and expected != len(events):
            raise _Damaged(f"the journal says {expected} events, the files hold {len(events)}")
        return events


def _decode_lines(rel: str, offset: int, data: bytes) -> Iterator[DecodedEvent]:
    pos = offset
    for line in data.splitlines():
        where = f"events/{rel} at offset {pos}"
        pos += len(line) + 1
        try:
            obj = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            raise _Damaged(f"{where}: not JSON ({exc})") from None
        try:
            yield validate_envelope(obj, where)
        except Rejected as exc:
            raise _Damaged(exc.message) from None


def _import_attachments(root: Path, store: Store) -> tuple[int, int]:
    """Copy every verified blob under ``root`` not yet stored: (stored, skipped)."""
    stored = skipped = 0
    for path in _blob_paths(root):
        sha = path.name
        if store.attachment_meta(sha) is not None:
            continue
        try:
            data = _read_blob(path)
        except _Damaged as exc:
            _log.warning("import: skipped attachment %s: %s", sha, exc)
            skipped += 1
            continue
        if store.put_attachment(sha, _content_type(path), data):
            stored += 1
    return stored, skipped


def _blob_paths(root: Path) -> Iterator[Path]:
    try:
        shards = sorted(p for p in root.iterdir() if p.is_dir() and not p.is_symlink())
    except FileNotFoundError:
        return
    except OSError as exc:
        raise StorageError(f"cannot read {root}: {exc}") from exc
    for shard in shards:
        for path in sorted(shard.iterdir()):
            if _SHA256_RE.fullmatch(path.name) and path.name.startswith(shard.name):
                yield path


def _read_blob(path: Path) -> bytes:
    try:
        fd = os.open(path, _O_READ)
    except OSError as exc:
        raise _Damaged(f"cannot open {path}: {exc}") from None
    with os.fdopen(fd, "rb") as f:
        data = f.read()
    if hashlib.sha256(data).hexdigest() != path.name:
        raise _Damaged(f"{path}: content does not match its sha256 name")
    return data


def _content_type(blob: Path) -> str:
    """The content type in the blob's ``.json`` sidecar (as the 0.1 collector served it)."""
    with contextlib.suppress(OSError, orjson.JSONDecodeError, AttributeError):
        meta = orjson.loads(blob.with_name(f"{blob.name}.json").read_bytes())
        value = meta.get("content_type")
        if isinstance(value, str) and value:
            return value
    return _DEFAULT_CONTENT_TYPE
