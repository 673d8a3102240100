"""Batch stage: the emit-side buffer, the writer and sealer threads that cut, compress and
seal batches into the spool, and what close() does with what is left in memory."""

from telemetry_client.batch.batcher import Batcher, CloseOutcome, FlushMarker

__all__ = ["Batcher", "CloseOutcome", "FlushMarker"]
