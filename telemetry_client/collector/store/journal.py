"""The commit journal of the file event store: one fsync'ed line per stored batch.

A record ``{"key", "parts": [[file, offset, length], ...], "events", "at"}`` is appended
only after the batch's bytes are fsync'ed, and the request is answered 2xx only after
the record is: the record *is* the commit. Replaying the journal at open gives the
committed keys (dedupe survives restarts) and every file's committed size. A torn last
line (a crash mid-append) is cut; garbage between records refuses to open, because
guessing would roll back good data. Not thread-safe: its owner serialises calls.
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path
from typing import Any

import orjson

from telemetry_client.collector.store import _io
from telemetry_client.collector.store.base import StorageError

__all__ = ["Journal"]

_log = logging.getLogger("telemetry_client.collector")


class Journal:
    """``journal.jsonl``: open it, :meth:`replay` it once, then :meth:`commit` records."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.existed = path.exists()  # False: a new data dir (or a journal lost by hand)
        self.size = 0  # committed bytes; anything past it is a failed append's debris
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | _io.O_CLOEXEC | _io.O_NOFOLLOW, 0o600)

    def replay(self) -> list[dict[str, Any]]:
        """The committed records, oldest first; cuts a torn last line, refuses garbage."""
        data = _io.read_prefix(self.path, os.fstat(self._fd).st_size)
        good_end = 0
        records: list[dict[str, Any]] = []
        bad_line: int | None = None
        for lineno, line in enumerate(data.splitlines(keepends=True), 1):
            record = _parse_record(line)
            if record is None:
                bad_line = bad_line or lineno
                continue
            if bad_line is not None:  # garbage *between* good records: not a torn tail
                raise StorageError(
                    f"{self.path}: line {bad_line} is not a commit record;"
                    " refusing to guess which batches were stored"
                )
            records.append(record)
            good_end += len(line)
        if good_end < len(data):
            _log.warning("journal: dropped a torn last record (%d bytes)", len(data) - good_end)
            os.ftruncate(self._fd, good_end)
            os.fsync(self._fd)
        self.size = good_end
        return records

    def commit(self, record: dict[str, Any]) -> None:
        """Append ``record`` durably (written at the committed size, then fsync'ed)."""
        line = orjson.dumps(record) + b"\n"
        _io.pwrite_all(self._fd, line, self.size)
        os.fsync(self._fd)
        self.size += len(line)

    def rollback(self) -> None:
        """Best effort: cut a failed append's bytes off the end."""
        with contextlib.suppress(OSError):
            os.ftruncate(self._fd, self.size)

    def check(self) -> list[str]:
        """The file's size must be the committed size."""
        if self.path.stat().st_size != self.size:
            return ["journal.jsonl: size differs from the committed size"]
        return []

    def close(self) -> None:
        """Close the file (idempotent)."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


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
