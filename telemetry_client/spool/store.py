"""The spool: a crash-safe, size-capped store of sealed event batches shared by processes.

:class:`Spool` owns one directory, its global lock and the parts that do the work, and
keeps the one API the client, the CLI and the tests call:

- ``queue``  (:class:`BatchQueue`): seal, claim, ack, release, dead_letter, quarantine;
- ``blobs``  (:class:`BlobStore`): attachment blobs, put, read, gc;
- ``ledger`` (:class:`DropLedger`): what was lost, by reason, and what is unreported;
- housekeeping: recovery at open, retention, purges (``housekeeping.py``) and eviction
  under the cap (``cap.py``); ``check()`` verifies the invariants (``check.py``).

A stage that needs one job takes that part (or a Protocol of it), not the whole spool.
Failures (disk full, read-only directory, permissions) raise ``OSError`` to the caller,
which counts and logs them; the spool never leaves a half-done state behind. The layout,
the six invariants, the fsync and locking rules: ``docs/spool.md``.
"""

from __future__ import annotations

from collections.abc import Callable, Container, Iterator
from pathlib import Path
from typing import Any

from telemetry_client.spool.blob_store import BLOB_GRACE_S, BlobStore
from telemetry_client.spool.blobs import BlobRef
from telemetry_client.spool.cap import Cap
from telemetry_client.spool.check import check as _check
from telemetry_client.spool.check import disk_usage as _disk_usage
from telemetry_client.spool.housekeeping import Housekeeping
from telemetry_client.spool.layout import BatchName, SpoolDir
from telemetry_client.spool.ledger import DropCounts, DropLedger
from telemetry_client.spool.queue import BatchQueue, Claim, PendingStats, SealResult

__all__ = ["Spool"]


class Spool:
    """One spool directory, shared safely by every thread and process that opens it.

    ``root``, ``max_bytes``, ``retention_s`` and ``fsync`` are fixed at construction.
    """

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
        self._dir = SpoolDir(self.root, fsync=fsync)
        self._cap = Cap(self._dir, max_bytes)
        self.ledger = DropLedger(self._dir, self._cap)
        self.queue = BatchQueue(self._dir, self._cap, self.ledger)
        self.blobs = BlobStore(self._dir, self._cap, self.queue.oldest_ns)
        self._house = Housekeeping(
            self._dir,
            queue=self.queue,
            blobs=self.blobs,
            ledger=self.ledger,
            cap=self._cap,
            retention_s=self.retention_s,
        )

    # -- lifecycle ----------------------------------------------------------------------

    def open(self) -> None:
        """Create the layout (0700) and recover what dead processes left behind."""
        self._dir.create()
        self.recover()
        self.purge_expired()

    def forget_inherited_fds(self) -> None:
        """In a forked child: close (never use) the parent's open spool files."""
        self._dir.forget_inherited_fds()
        self.queue.after_fork()

    # -- batch queue --------------------------------------------------------------------

    def seal(self, body: bytes, n_events: int, *, batch_id: str | None = None) -> SealResult:
        """Make a compressed batch visible to readers (:meth:`BatchQueue.seal`)."""
        return self.queue.seal(body, n_events, batch_id=batch_id)

    def claim(
        self,
        *,
        trusted: Container[str] = (),
        wanted: Callable[[dict[str, int]], bool] | None = None,
    ) -> Claim | None:
        """The oldest unclaimed readable batch, or ``None`` (:meth:`BatchQueue.claim`)."""
        return self.queue.claim(trusted=trusted, wanted=wanted)

    def settle(self, claim: Claim, destination: str, status: int) -> None:
        """One destination settled the claimed batch (kept on disk: ``spool/settled.py``)."""
        self.queue.settle(claim, destination, status)

    def pending_by_destination(self, destinations: list[str]) -> dict[str, PendingStats]:
        """Pending batches each destination has not settled yet (``status``)."""
        return self.queue.pending_by_destination(destinations)

    def gc_settled(self) -> int:
        """Drop settlement markers of batches that were evicted or purged."""
        return self.queue.gc_settled()

    def ack(self, claim: Claim) -> None:
        """The batch was delivered: remove it."""
        self.queue.ack(claim)

    def release(self, claim: Claim) -> None:
        """Give the batch back unchanged (e.g. upload failed; retried later)."""
        self.queue.release(claim)

    def dead_letter(self, claim: Claim) -> None:
        """Move a refused batch to ``dead/``: kept and counted, never retried."""
        self.queue.dead_letter(claim)

    def quarantine(self, claim: Claim) -> None:
        """Move an unreadable claimed batch aside."""
        self.queue.quarantine(claim)

    def pending(self) -> PendingStats:
        """Sealed batches not yet acknowledged (claimed ones included)."""
        return self.queue.pending()

    def pending_before(self, cutoff_ns: int) -> PendingStats:
        """Pending batches sealed at or before ``cutoff_ns`` (what a flush waits for)."""
        return self.queue.pending_before(cutoff_ns)

    def dead_letters(self) -> list[BatchName]:
        """Batches the collector refused for good (listed by ``status``)."""
        return self.queue.dead_letters()

    def quarantined(self) -> list[BatchName]:
        """Batches that could not be read."""
        return self.queue.quarantined()

    def iter_batches_newest_first(self) -> Iterator[tuple[BatchName, bytes]]:
        """Decompressed JSONL of sealed batches, newest first (read-only, no claim)."""
        return self.queue.iter_batches_newest_first()

    # -- blobs --------------------------------------------------------------------------

    def put_blob(self, raw: bytes, content_type: str) -> BlobRef:
        """Store an attachment once, content-addressed (:meth:`BlobStore.put`)."""
        return self.blobs.put(raw, content_type)

    def read_blob(self, sha256: str) -> bytes | None:
        """The stored blob (the wire body of ``POST /attachments``) or None."""
        return self.blobs.read(sha256)

    def gc_blobs(self, grace_s: float = BLOB_GRACE_S, *, now_ns: int | None = None) -> int:
        """Remove blobs nothing can reference any more (:meth:`BlobStore.gc`)."""
        return self.blobs.gc(grace_s, now_ns=now_ns)

    def blob_usage(self) -> tuple[int, int]:
        """Stored attachment blobs: (count, bytes on disk). Quarantined ones not included."""
        return self.blobs.usage()

    # -- drop ledger --------------------------------------------------------------------

    def record_loss(
        self, reason: str, events: int, nbytes: int, first_ns: int, last_ns: int
    ) -> None:
        """Persist a loss that happened outside the spool (e.g. a batch that was never written)."""
        self.ledger.record_loss(reason, events, nbytes, first_ns, last_ns)

    def dropped(self) -> DropCounts:
        """The persistent loss counters."""
        return self.ledger.dropped()

    def peek_unreported(self) -> dict[str, dict[str, Any]]:
        """What the collector has not been told about yet (left in place until reported)."""
        return self.ledger.peek_unreported()

    def forget_reported(self, reported: dict[str, dict[str, Any]]) -> None:
        """Subtract a report now sealed in a batch (:meth:`DropLedger.forget_reported`)."""
        self.ledger.forget_reported(reported)

    # -- housekeeping -------------------------------------------------------------------

    def recover(self) -> int:
        """Recover or remove ``tmp/`` leftovers of dead writers; returns how many were handled."""
        return self._house.recover()

    def purge_expired(self, now_ns: int | None = None) -> int:
        """Remove data older than the retention period; returns events removed."""
        return self._house.purge_expired(now_ns)

    def purge(
        self,
        *,
        older_than_days: float | None = None,
        dead_letter: bool = False,
        everything: bool = False,
    ) -> int:
        """User-requested deletion (CLI ``purge``), counted as ``purged``; returns events."""
        return self._house.purge(
            older_than_days=older_than_days, dead_letter=dead_letter, everything=everything
        )

    def usage(self) -> int:
        """Bytes used by the spool as the cap counts them."""
        return self._cap.usage()

    def disk_usage(self) -> int:
        """Actual sum of file sizes under the spool (what tests compare with the cap)."""
        return _disk_usage(self.root)

    def check(self, *, deep: bool = True, slack_bytes: int = 0) -> list[str]:
        """Verify the on-disk invariants; returns the problems found (empty = healthy).

        ``slack_bytes`` is the allowance over the cap for batches being written right now.
        """
        return _check(
            self._dir,
            queue=self.queue,
            blobs=self.blobs,
            cap=self._cap,
            deep=deep,
            slack_bytes=slack_bytes,
        )
