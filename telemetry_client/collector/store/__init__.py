"""Collector storage: where accepted batches and attachments are kept.

The app sees events through the :class:`EventStore` Protocol (``Storage.events``): a
backend stores a batch all or nothing, once per ``Idempotency-Key``, durably before the
2xx. The file backend (``file_events``, ``journal``) is the one wired now; database backends
go beside it. Attachments are content-addressed files (``attachments``) for every backend.
"""

from telemetry_client.collector.store.base import (
    AppendResult,
    AttachmentInfo,
    EventQuery,
    EventStore,
    QueryResult,
    StorageError,
)
from telemetry_client.collector.store.files import Storage

__all__ = [
    "AppendResult",
    "AttachmentInfo",
    "EventQuery",
    "EventStore",
    "QueryResult",
    "Storage",
    "StorageError",
]
