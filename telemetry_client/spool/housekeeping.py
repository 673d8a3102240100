"""Housekeeping: recover what dead writers left, apply retention, purge on request.

``tmp/`` leftovers whose writer is gone (their ``flock`` is free) are published when they
are a whole, checksum-valid batch, else removed and counted as ``torn``. Retention removes
whole old days cheaply (the day directory is the day of the batch id); every removal of
events is counted in the drop ledger. Blobs follow the batches that could reference them.
Eviction under the cap is :mod:`telemetry_client.spool.cap`. Details: ``docs/spool.md``.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable
from pathlib import Path

from telemetry_client._internal import fs as _fs
from telemetry_client.changes.journal import ChangeJournal, changes_dir
from telemetry_client.spool.blob_store import BLOB_GRACE_S, BlobStore
from telemetry_client.spool.cap import Cap
from telemetry_client.spool.layout import (
    BLOB_TMP_RE,
    TMP_RE,
    BatchName,
    SpoolDir,
    being_created,
    day_of,
    read_fd,
    remove_unclaimed,
    same_file,
)
from telemetry_client.spool.ledger import DropLedger
from telemetry_client.spool.queue import BatchQueue

__all__ = ["Housekeeping"]

_ALL = 1 << 63  # a horizon newer than every mtime
_Pred = Callable[[BatchName], bool]


class Housekeeping:
    """Recovery at open, retention, and user-requested purges for one spool."""

    def __init__(
        self,
        d: SpoolDir,
        *,
        queue: BatchQueue,
        blobs: BlobStore,
        ledger: DropLedger,
        cap: Cap,
        retention_s: float,
    ) -> None:
        self._dir = d
        self._queue = queue
        self._blobs = blobs
        self._ledger = ledger
        self._cap = cap
        self.retention_s = retention_s

    def recover(self) -> int:
        """Recover or remove ``tmp/`` leftovers of dead writers; returns how many were handled."""
        d = self._dir
        handled = 0
        try:
            names = os.listdir(d.tmp)
        except FileNotFoundError:
            return 0
        for n in names:
            m = TMP_RE.match(n)
            path = d.tmp / n
            blob = m is None and BLOB_TMP_RE.fullmatch(n) is not None
            if m is None and not blob:
                continue
            try:
                fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                continue
            try:
                if not _fs.try_lock(fd) or not same_file(fd, path):
                    continue  # its writer is alive
                if being_created(fd):
                    continue  # its writer may not have locked it yet
                if m is None:
                    # A blob whose writer died before publishing it: the event that was to
                    # reference it died in that writer's memory too. Nothing to count.
                    os.unlink(path)
                    handled += 1
                    continue
                body = read_fd(fd)
                name = BatchName(m.group(1), int(m.group(2)), len(body))
                problem, _ = self._queue.validate(name, body)
                if problem is None and name.n_bytes <= self._cap.max_bytes:
                    self._queue.publish(path, name)
                else:
                    os.unlink(path)
                    with d.global_lock():
                        self._ledger.record([("torn", name)])
                handled += 1
            finally:
                _fs.close_unlocked(fd)
        return handled

    def purge_expired(self, now_ns: int | None = None) -> int:
        """Remove data older than the retention period; returns events removed."""
        now = time.time_ns() if now_ns is None else now_ns
        cutoff = now - int(self.retention_s * 1e9)
        cutoff_day = day_of(cutoff)
        removed = self._purge(
            lambda n: n.created_ns < cutoff, "retention", day_filter=cutoff_day, include_dead=True
        )
        with self._dir.global_lock():
            # Blobs referenced last before the cutoff are referenced by no batch still kept.
            self._blobs.gc_locked(now, BLOB_GRACE_S)
            self._blobs.remove_older([self._dir.quarantine], cutoff)
        self._prune_changes(cutoff / 1e9)
        return removed

    def _prune_changes(self, cutoff_s: float | None) -> None:
        """The changes panel's journal follows retention and purges (docs/changes.md)."""
        with contextlib.suppress(OSError):  # a review aid: never fails housekeeping
            ChangeJournal(changes_dir(self._dir.root), max_bytes=0).prune(cutoff_s)

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
        d = self._dir
        now = time.time_ns()
        if everything:
            removed = self._purge(lambda n: True, "purged", include_dead=True)
            with d.global_lock():
                oldest = self._queue.oldest_ns()
                horizon = _ALL if oldest is None else oldest - int(BLOB_GRACE_S * 1e9)
                self._blobs.remove_older([d.attachments, d.quarantine], horizon)
            self._prune_changes(None)
            return removed
        if dead_letter:
            removed = self._purge_folders([d.dead], lambda n: True, "purged")
        elif older_than_days is not None:
            cutoff = now - int(older_than_days * 86400e9)
            removed = self._purge(lambda n: n.created_ns < cutoff, "purged", include_dead=True)
            with d.global_lock():
                self._blobs.remove_older([d.quarantine], cutoff)
            self._prune_changes(cutoff / 1e9)
        else:
            return 0
        with d.global_lock():
            self._blobs.gc_locked(now, BLOB_GRACE_S)
        return removed

    def _purge(
        self,
        pred: _Pred,
        reason: str,
        *,
        day_filter: str | None = None,
        include_dead: bool = False,
    ) -> int:
        d = self._dir
        folders = [d.batches / day for day in d.days() if day_filter is None or day <= day_filter]
        folders.append(d.quarantine)
        if include_dead:
            folders.append(d.dead)
        removed = self._purge_folders(folders, pred, reason)
        with d.global_lock():  # a seal creates day directories under it (see BatchQueue.publish)
            for day in d.days():
                if day_filter is not None and day > day_filter:
                    continue
                with contextlib.suppress(OSError):
                    os.rmdir(d.batches / day)  # only succeeds when empty
        return removed

    def _purge_folders(self, folders: list[Path], pred: _Pred, reason: str) -> int:
        drops: list[tuple[str, BatchName]] = []
        for folder in folders:
            for path, name in self._dir.batches_in(folder):
                if pred(name) and remove_unclaimed(path):
                    drops.append((reason, name))
        if drops:
            with self._dir.global_lock():
                self._ledger.record(drops)
        return sum(n.n_events for _, n in drops)
