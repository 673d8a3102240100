"""What every collector storage backend speaks: the event-store seam and its value types.

The app stores and queries events only through :class:`EventStore` (``storage.events``);
the file backend (:mod:`.file_events`) is the one wired now, and database backends go
beside it. Attachments stay content-addressed files (:mod:`.attachments`) whatever the
event backend.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from telemetry_client.collector._decode import DecodedEvent
from telemetry_client.errors import TelemetryError

__all__ = [
    "AppendResult",
    "AttachmentInfo",
    "EventQuery",
    "EventStore",
    "QueryResult",
    "StorageError",
]


class StorageError(TelemetryError):
    """The data directory cannot be used: held by another collector, or its journal is corrupt."""


@dataclass(frozen=True, slots=True)
class AppendResult:
    """What :meth:`EventStore.append` did: events stored, or a duplicate (nothing stored)."""

    accepted: int
    duplicate: bool
    bytes: int = 0


@dataclass(frozen=True, slots=True)
class EventQuery:
    """Filters of ``GET /api/v1/events``; ``since_us`` is epoch microseconds (ts >= since)."""

    user_id: str | None = None
    session_id: str | None = None
    type: str | None = None
    since_us: int | None = None
    limit: int = 1000
    offset: int = 0


@dataclass(frozen=True, slots=True)
class QueryResult:
    """One page of matching events (oldest first) and how many match in all."""

    events: list[dict[str, Any]]
    total: int


@dataclass(frozen=True, slots=True)
class AttachmentInfo:
    """A stored attachment: where its bytes are, their size and original content type."""

    path: Path
    size: int
    content_type: str


class EventStore(Protocol):
    """Durable, deduplicated event storage (the seam the app uses).

    ``append`` stores a batch all or nothing, exactly once per ``Idempotency-Key``, and
    returns only once it is durable; ``has_key`` must not block (the app calls it on the
    event loop) and may only answer True for a committed key.
    """

    def has_key(self, key: str) -> bool: ...

    def append(self, events: Sequence[DecodedEvent], key: str | None) -> AppendResult: ...

    def query(self, q: EventQuery) -> QueryResult: ...

    def check(self) -> list[str]: ...

    def close(self) -> None: ...
