"""Which destination already settled which pending batch, kept on disk (docs/upload.md).

With several destinations a batch leaves the spool only when every one of them settled it
(acknowledged, or refused for good). Until then each settlement is an empty marker file
``state/settled/<batch id>.<destination>.<status>``, written by the claim holder right
after the answer: a later claim (this process after a restart, another process, ``flush``)
skips the destinations that already have the batch, and ``status`` counts what is pending
per destination. Markers are empty (they cost nothing against the cap) and disappear with
their batch (ack, dead letter); markers of batches that were evicted or purged are
collected by :meth:`SettledMarks.gc`. Losing one costs a resend, which at-least-once allows.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterable
from pathlib import Path

from telemetry_client._internal import fs as _fs

__all__ = ["SettledMarks"]

_MARK_RE = re.compile(r"^([0-9a-f]{32})\.([a-z0-9_-]{1,64})\.(\d{3})$")


class SettledMarks:
    """The marker files of one spool (``state/settled/``)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def read(self) -> dict[str, dict[str, int]]:
        """Batch id -> {destination: the HTTP status that settled it} (one listing)."""
        try:
            names = os.listdir(self.folder)
        except FileNotFoundError:
            return {}
        out: dict[str, dict[str, int]] = {}
        for fn in names:
            m = _MARK_RE.match(fn)
            if m is not None:
                out.setdefault(m.group(1), {})[m.group(2)] = int(m.group(3))
        return out

    def mark(self, batch_id: str, destination: str, status: int) -> None:
        """``destination`` settled ``batch_id`` with ``status`` (idempotent)."""
        if not _MARK_RE.match(f"{batch_id}.{destination}.{status:03d}"):
            raise ValueError(f"cannot mark destination {destination!r}")
        if not self.folder.is_dir():
            _fs.ensure_dir(self.folder)
        path = self.folder / f"{batch_id}.{destination}.{status:03d}"
        try:
            fd = _fs.open_new(path)
        except FileExistsError:
            return
        os.close(fd)

    def clear(self, batch_id: str, settled: dict[str, int]) -> None:
        """Remove the markers of a batch that left the spool."""
        for destination, status in settled.items():
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.folder / f"{batch_id}.{destination}.{status:03d}")

    def gc(self, pending_ids: Iterable[str]) -> int:
        """Remove markers whose batch is no longer pending (evicted, purged); how many."""
        keep = set(pending_ids)
        removed = 0
        for batch_id, settled in self.read().items():
            if batch_id not in keep:
                self.clear(batch_id, settled)
                removed += len(settled)
        return removed
