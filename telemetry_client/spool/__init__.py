"""On-disk spool of sealed, compressed event batches (layout and invariants: docs/spool.md).

:class:`Spool` is the facade; its parts (``spool.queue``, ``spool.blobs``, ``spool.ledger``)
are exported for stages that need one job only.
"""

from telemetry_client.spool.blob_store import BlobStore
from telemetry_client.spool.layout import BatchName
from telemetry_client.spool.ledger import DropCounts, DropLedger
from telemetry_client.spool.queue import BatchQueue, Claim, PendingStats, SealResult
from telemetry_client.spool.store import Spool

__all__ = [
    "BatchName",
    "BatchQueue",
    "BlobStore",
    "Claim",
    "DropCounts",
    "DropLedger",
    "PendingStats",
    "SealResult",
    "Spool",
]
