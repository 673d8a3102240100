"""What the batch stage needs from the spool: :class:`BatchSink`, a Protocol of a few members.

The batcher seals compressed batches, opens the store on its writer thread (never on the
caller's), records what it could not write, and sizes its shutdown batches by the cap.
:class:`telemetry_client.spool.Spool` satisfies it; a test may pass anything that does.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from telemetry_client.spool import SealResult

__all__ = ["BatchSink"]


class BatchSink(Protocol):
    """Where sealed batches go. Failures raise ``OSError``; the batcher counts and retries."""

    @property
    def root(self) -> Path:
        """Where the batches live (named in log lines only)."""
        ...

    @property
    def max_bytes(self) -> int:
        """The store's cap: a batch sealed at shutdown is at most a quarter of it."""
        ...

    def open(self) -> None:
        """Create the store and recover what dead writers left; called before the first seal."""
        ...

    def seal(self, body: bytes, n_events: int) -> SealResult:
        """Make one zstd-compressed, newline-terminated JSONL batch durable and visible."""
        ...

    def record_loss(
        self, reason: str, events: int, nbytes: int, first_ns: int, last_ns: int
    ) -> None:
        """Persist a loss of events that never reached the store (reported later)."""
        ...

    def forget_inherited_fds(self) -> None:
        """In a forked child: drop (never use) the parent's open files."""
        ...
