"""The size cap: what the spool uses on disk, and eviction of the oldest data to make room.

Every file under the spool counts (batches, dead letters, quarantine, blobs, ``state/`` and
``usage/``). Before a batch or blob becomes visible its writer, holding ``.lock``, calls
:meth:`Cap.make_room`: the oldest data goes first (batches by id time, blobs by mtime),
claimed batches are skipped, and every eviction is counted in the drop ledger, whose own
growth is made room for too. Why this order is safe for blobs: ``docs/spool.md``.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from telemetry_client.spool.blobs import BlobName
from telemetry_client.spool.layout import (
    BatchName,
    SpoolDir,
    batch_bytes_in,
    blob_bytes_in,
    remove_unclaimed,
)
from telemetry_client.spool.ledger import DropCounts, load_counts, save_counts

__all__ = ["Cap"]

_Listing = tuple[list[tuple[Path, BatchName]], list[tuple[Path, BlobName]], int]


class Cap:
    """Keeps the spool within ``max_bytes`` (fixed at construction)."""

    def __init__(self, d: SpoolDir, max_bytes: int) -> None:
        self._dir = d
        self.max_bytes = max_bytes

    def listing(self) -> _Listing:
        """Every data file: batches (batches, quarantine, dead) oldest first, blobs
        (attachments, quarantine), and the total bytes used (with state/)."""
        d = self._dir
        items: list[tuple[Path, BatchName]] = []
        for folder in (d.quarantine, d.dead):
            items.extend(d.batches_in(folder))
        for day in d.days():
            items.extend(d.batches_in(d.batches / day))
        blobs = d.blobs_in(d.attachments) + d.blobs_in(d.quarantine)
        other = self._small_files()
        items.sort(key=lambda it: it[1].batch_id)
        used = other + sum(n.n_bytes for _, n in items) + sum(b.stored_size for _, b in blobs)
        return items, blobs, used

    def _small_files(self) -> int:
        """Small files outside the data folders count too: loss counters and upload state
        (state/), the cross-process LLM usage store (usage/, see telemetry_client.usage) and
        the change journal (changes/, see telemetry_client.changes)."""
        d = self._dir
        other = 0
        for small in (d.state, d.root / "usage", d.root / "changes"):
            with contextlib.suppress(OSError):  # absent, or not a directory: nothing to count
                for entry in os.scandir(small):
                    with contextlib.suppress(OSError):
                        other += entry.stat(follow_symlinks=False).st_size
        return other

    def usage(self) -> int:
        """Bytes used by the spool as the cap counts them (:meth:`listing`'s total, from the
        file names alone: what every seal pays when no eviction is needed)."""
        d = self._dir
        used = self._small_files()
        for folder in (d.quarantine, d.dead):
            used += batch_bytes_in(folder)
        for day in d.days():
            used += batch_bytes_in(d.batches / day)
        return used + blob_bytes_in(d.attachments) + blob_bytes_in(d.quarantine)

    def make_room(self, incoming: int, counts: DropCounts | None = None) -> tuple[int, int]:
        """Evict oldest data until ``incoming`` more bytes fit; returns (events, bytes) evicted.

        ``counts``: loss counters with additions not yet on disk, written here (with the
        evictions) after room was made for their own growth. Caller holds the global lock.
        """
        d = self._dir
        used = self.usage()
        try:
            state_size = d.dropped_path.stat().st_size
        except FileNotFoundError:
            state_size = 0
        # Recording losses grows state/dropped.json, which the cap counts too.
        growth = 0 if counts is None else max(0, len(counts.to_json()) - state_size)
        if used + growth + incoming <= self.max_bytes:
            if counts is not None:
                save_counts(d, counts)
            return 0, 0
        items, blobs, used = self.listing()  # eviction: the oldest first, by name
        dirty = counts is not None
        counts = load_counts(d.dropped_path) if counts is None else counts
        events = nbytes = 0
        for age_ns, path, name in _eviction_order(items, blobs):
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
            elif remove_unclaimed(path):
                used -= name.n_bytes
                events += name.n_events
                nbytes += name.n_bytes
                counts.add("cap", name.n_events, name.n_bytes, age_ns, age_ns)
            else:
                continue
            dirty = True
            growth = max(0, len(counts.to_json()) - state_size)
        if dirty:
            save_counts(d, counts)
        return events, nbytes


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
