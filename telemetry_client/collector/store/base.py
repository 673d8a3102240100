"""What every collector storage backend speaks: the :class:`Store` seam and its value types.

The app reaches storage only through :class:`Store` (docs/collector-store.md): the SQLite
backend (default, in the data dir) and the PostgreSQL backend (replicas sharing one
database) implement it. Every method blocks; the app calls them on worker threads.

:class:`EventStore` is the narrower seam of the 0.1 file store (JSONL partitions and a
journal), kept to import a 0.1 data dir and as the benchmark's baseline.
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
    "Attachment",
    "AttachmentInfo",
    "AttachmentMeta",
    "BadCursor",
    "EventPage",
    "EventQuery",
    "EventStore",
    "Ingest",
    "QueryResult",
    "ReadScope",
    "RetentionResult",
    "SessionPage",
    "SessionQuery",
    "StorageError",
    "Store",
    "StoreUnavailable",
    "TimelinePage",
]


class StorageError(TelemetryError):
    """Storage cannot be used at all (startup): a data dir held by another collector, a
    corrupt 0.1 journal, a database schema newer than this code, an unusable URL."""


class StoreUnavailable(TelemetryError):
    """A transient failure (database down, slow, locked): the request gets 503 with
    ``Retry-After`` and the client retries; nothing was stored (the transaction rolled back)."""


class BadCursor(ValueError):
    """A ``cursor`` this store did not issue (the request gets 400)."""


@dataclass(frozen=True, slots=True)
class Ingest:
    """Who ingested a batch: the token's name and team, stamped on every stored event."""

    token: str
    team: str | None = None


@dataclass(frozen=True, slots=True)
class ReadScope:
    """What a reader may see: ``team`` None = every event; else events ingested by that team."""

    team: str | None = None


@dataclass(frozen=True, slots=True)
class AppendResult:
    """What :meth:`EventStore.append` did: events stored, or a duplicate (nothing stored)."""

    accepted: int
    duplicate: bool
    bytes: int = 0


@dataclass(frozen=True, slots=True)
class EventQuery:
    """Filters of ``GET /api/v1/events``: ``since_us <= ts < until_us`` (epoch microseconds).

    Results come in the order the store committed them (stable: a cursor never skips or
    repeats an event while batches arrive). ``cursor`` (from :attr:`EventPage.next_cursor`)
    continues after a page; without it ``offset`` rows are skipped (0.1 clients).
    """

    user_id: str | None = None
    session_id: str | None = None
    type: str | None = None
    since_us: int | None = None
    until_us: int | None = None
    limit: int = 1000
    offset: int = 0
    cursor: str | None = None


@dataclass(frozen=True, slots=True)
class EventPage:
    """One page of events: each a stored envelope plus ``"ingest": {"token", "team"}``.

    ``total`` counts every match of the filters (ignoring cursor, offset and limit);
    ``next_cursor`` is None after the last page. ``last_cursor`` (internal, the viewer's
    live mode) is the position after the last event returned, or the query's cursor when
    none was: a poll from it later gets exactly the events committed since.
    """

    events: list[dict[str, Any]]
    total: int
    next_cursor: str | None
    last_cursor: str | None = None


@dataclass(frozen=True, slots=True)
class TimelinePage:
    """One page of a session's events in stored order: ``ts``, then ``seq``, then commit
    position (total and stable, so keyset paging never skips or repeats an event).

    ``next_key`` (opaque, for ``after``) is None after the last page. ``live_cursor`` (only
    on the first page, ``after`` None) is an events-query cursor taken before the page was
    read: polling :meth:`Store.events` from it returns every event committed since, so a
    viewer that places those by ``(ts, seq)`` misses none. ``total`` counts the session's
    events in scope.
    """

    events: list[dict[str, Any]]
    total: int
    next_key: str | None
    live_cursor: str | None = None


@dataclass(frozen=True, slots=True)
class SessionQuery:
    """Filters of ``GET /api/v1/sessions``; sessions whose span overlaps [since, until)."""

    user_id: str | None = None
    app: str | None = None
    since_us: int | None = None
    until_us: int | None = None
    limit: int = 100
    cursor: str | None = None


@dataclass(frozen=True, slots=True)
class SessionPage:
    """Sessions, most recent ``last_ts`` first, each a dict with the keys of the contract:
    ``session_id, user_id, app, first_ts, last_ts, events, errors, llm_calls,
    input_tokens, output_tokens`` (timestamps as RFC 3339 UTC strings)."""

    sessions: list[dict[str, Any]]
    next_cursor: str | None


@dataclass(frozen=True, slots=True)
class AttachmentMeta:
    """A stored attachment's size (raw bytes) and the content type it was uploaded with."""

    size: int
    content_type: str


@dataclass(frozen=True, slots=True)
class Attachment:
    """A stored attachment with its bytes."""

    size: int
    content_type: str
    data: bytes


@dataclass(frozen=True, slots=True)
class RetentionResult:
    """What one retention pass deleted."""

    events: int
    attachments: int
    sessions: int
    batches: int


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


class Store(Protocol):
    """The collector's storage (SQLite or PostgreSQL): events, sessions, attachments.

    ``append`` stores a batch all or nothing and exactly once per ``key`` (the batch's
    ``Idempotency-Key``, unique in the same transaction as its events, database-wide: two
    replicas appending the same key at once store it once; ``key`` None is never
    deduplicated), updates the session aggregates in that transaction, and returns only
    once it is durable. Transient failures raise :class:`StoreUnavailable`; a bad cursor
    raises :class:`BadCursor`. Every method blocks and is safe to call from many threads.
    """

    def has_key(self, key: str) -> bool: ...

    def append(
        self, events: Sequence[DecodedEvent], key: str | None, ingest: Ingest
    ) -> AppendResult: ...

    def events(self, q: EventQuery, scope: ReadScope) -> EventPage: ...

    def sessions(self, q: SessionQuery, scope: ReadScope) -> SessionPage: ...

    def session_timeline(
        self, session_id: str, *, after: str | None, limit: int, scope: ReadScope
    ) -> TimelinePage:
        """One session's events by keyset over ``(ts_us, seq, commit position)``, in the
        same team scope as :meth:`events`; ``after`` is a previous page's ``next_key``."""
        ...

    def put_attachment(self, sha256: str, content_type: str, data: bytes) -> bool:
        """Store a blob under its (verified) sha256; False when it was already stored."""
        ...

    def attachment_meta(self, sha256: str) -> AttachmentMeta | None: ...

    def attachment(self, sha256: str, scope: ReadScope) -> Attachment | None:
        """The blob, if stored and (for a team scope) referenced by an event of that team."""
        ...

    def retain(self, cutoff_us: int, *, chunk: int = 5000) -> RetentionResult:
        """Delete events with ``ts`` before ``cutoff_us``, then sessions that ended before it,
        batch keys received before it and attachments no event references that were
        received before it; in transactions of at most ``chunk`` rows (ingest never stalls)."""
        ...

    def ping(self) -> None:
        """Raise :class:`StoreUnavailable` unless the database answers now (health)."""
        ...

    def check(self) -> list[str]:
        """Every broken invariant, as readable lines (empty when all hold; tests call it)."""
        ...

    def close(self) -> None: ...


class EventStore(Protocol):
    """The 0.1 file store's event seam (``Storage.events``): durable, deduplicated.

    ``append`` stores a batch all or nothing, exactly once per ``Idempotency-Key``, and
    returns only once it is durable; ``has_key`` must not block (the app calls it on the
    event loop) and may only answer True for a committed key.
    """

    def has_key(self, key: str) -> bool: ...

    def append(self, events: Sequence[DecodedEvent], key: str | None) -> AppendResult: ...

    def query(self, q: EventQuery) -> QueryResult: ...

    def check(self) -> list[str]: ...

    def close(self) -> None: ...
