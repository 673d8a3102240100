"""The collector's data directory on files: the lock that makes it ours, events, attachments.

On-disk layout (directories 0700, files 0600)::

    <data_dir>/
      .lock                                   flock: one collector process per data dir
      journal.jsonl                           one line per accepted batch (commit record)
      events/<YYYY-MM-DD>/<user>.jsonl        events, by UTC day of ``ts`` and by user id
      attachments/<sha[:2]>/<sha256>          raw attachment bytes
      attachments/<sha[:2]>/<sha256>.json     {"content_type": ..., "size": ...}
      tmp/                                    attachment uploads in progress

Events: :mod:`.file_events` (partitions, all-or-nothing appends, rollback at open) and
:mod:`.journal` (the commit records); attachments: :mod:`.attachments`. Data is fsync'ed
before any 2xx. :meth:`Storage.check` verifies every invariant (tests call it).
"""

from __future__ import annotations

import os
from pathlib import Path

from telemetry_client._internal import fs as _fs
from telemetry_client.collector.store import _io
from telemetry_client.collector.store.attachments import AttachmentStore
from telemetry_client.collector.store.base import (
    AppendResult,
    AttachmentInfo,
    EventQuery,
    EventStore,
    QueryResult,
    StorageError,
)
from telemetry_client.collector.store.file_events import FileEventStore, partition_name

__all__ = [
    "AppendResult",
    "AttachmentInfo",
    "AttachmentStore",
    "EventQuery",
    "EventStore",
    "FileEventStore",
    "QueryResult",
    "Storage",
    "StorageError",
    "partition_name",
]


class Storage:
    """The collector's data directory: events, attachments, and the lock that makes it ours."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        _fs.ensure_dir(data_dir)
        self._lock_fd = os.open(data_dir / ".lock", os.O_RDWR | os.O_CREAT | _io.O_CLOEXEC, 0o600)
        try:
            if not _fs.try_lock(self._lock_fd):
                raise StorageError(f"data dir {data_dir} is in use by another collector process")
            self.events: EventStore = FileEventStore(data_dir)
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
