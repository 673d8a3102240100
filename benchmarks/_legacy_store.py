"""The 0.1 JSONL file store behind the 0.2 ``Store`` seam: the collector benchmark's baseline.

Only the ingest path is real: ``has_key`` and ``append`` go to ``files.Storage.events``
(JSONL partitions by day and user, fsync'ed, plus the commit journal), exactly what a 0.1
collector did per batch. The 0.1 store had no sessions, no scoped reads and attachments
on files, so everything else raises ``NotImplementedError``; ``ping`` answers (the
benchmark waits for ``/api/v1/health``), and ``check``/``close`` delegate.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from telemetry_client.collector._decode import DecodedEvent
from telemetry_client.collector.store.base import (
    AppendResult,
    Attachment,
    AttachmentMeta,
    EventPage,
    EventQuery,
    Ingest,
    ReadScope,
    RetentionResult,
    SessionPage,
    SessionQuery,
    TimelinePage,
)
from telemetry_client.collector.store.files import Storage

__all__ = ["LegacyJsonlStore"]


class LegacyJsonlStore:
    """``Store`` for ``create_app(config, store=...)``: the 0.1 JSONL store's ingest path."""

    def __init__(self, data_dir: Path) -> None:
        self._storage = Storage.open(data_dir)
        self._events = self._storage.events

    def has_key(self, key: str) -> bool:
        return self._events.has_key(key)

    def append(
        self, events: Sequence[DecodedEvent], key: str | None, ingest: Ingest
    ) -> AppendResult:
        return self._events.append(events, key)  # 0.1 did not record who ingested

    def events(self, q: EventQuery, scope: ReadScope) -> EventPage:
        raise NotImplementedError("the 0.1 JSONL store is only benchmarked for ingest")

    def sessions(self, q: SessionQuery, scope: ReadScope) -> SessionPage:
        raise NotImplementedError("the 0.1 JSONL store had no sessions")

    def session_timeline(
        self, session_id: str, *, after: str | None, limit: int, scope: ReadScope
    ) -> TimelinePage:
        raise NotImplementedError("the 0.1 JSONL store had no sessions")

    def put_attachment(self, sha256: str, content_type: str, data: bytes) -> bool:
        raise NotImplementedError("attachments are not benchmarked")

    def attachment_meta(self, sha256: str) -> AttachmentMeta | None:
        raise NotImplementedError("attachments are not benchmarked")

    def attachment(self, sha256: str, scope: ReadScope) -> Attachment | None:
        raise NotImplementedError("attachments are not benchmarked")

    def retain(self, cutoff_us: int, *, chunk: int = 5000) -> RetentionResult:
        raise NotImplementedError("the 0.1 JSONL store had no retention")

    def ping(self) -> None:
        return None

    def check(self) -> list[str]:
        return self._storage.check()

    def close(self) -> None:
        self._storage.close()
