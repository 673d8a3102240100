"""Collector storage: where accepted batches, sessions and attachments are kept.

The app reaches storage through the :class:`Store` Protocol (docs/collector-store.md):
:func:`open_store` turns ``--database-url`` into the SQLite store (default, a file in the
data dir) or the PostgreSQL store (replicas sharing one database). A backend stores a
batch all or nothing, once per ``Idempotency-Key``, durably before the 2xx. The 0.1 file
store (:class:`Storage`, the :class:`EventStore` seam) stays for importing a 0.1 data dir
and as the benchmark's baseline.
"""

from telemetry_client.collector.store.base import (
    AppendResult,
    Attachment,
    AttachmentInfo,
    AttachmentMeta,
    BadCursor,
    EventPage,
    EventQuery,
    EventStore,
    Ingest,
    QueryResult,
    ReadScope,
    RetentionResult,
    SessionPage,
    SessionQuery,
    StorageError,
    Store,
    StoreUnavailable,
    TimelinePage,
)
from telemetry_client.collector.store.files import Storage
from telemetry_client.collector.store.open import open_store
from telemetry_client.collector.store.sqlite import SqliteStore

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
    "SqliteStore",
    "Storage",
    "StorageError",
    "Store",
    "StoreUnavailable",
    "TimelinePage",
    "open_store",
]
