"""On-disk spool of sealed, compressed event batches (layout and invariants: ``store``)."""

from telemetry_client.spool.store import (
    BatchName,
    Claim,
    DropCounts,
    PendingStats,
    SealResult,
    Spool,
)

__all__ = ["BatchName", "Claim", "DropCounts", "PendingStats", "SealResult", "Spool"]
