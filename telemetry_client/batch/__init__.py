"""Batch stage: the emit-side buffer, the writer and sealer threads that cut, compress and
seal batches into a :class:`BatchSink`, and what close() does with what is left in memory."""

from telemetry_client.batch.batcher import Batcher
from telemetry_client.batch.shutdown import CloseOutcome
from telemetry_client.batch.sink import BatchSink
from telemetry_client.batch.state import FlushMarker

__all__ = ["BatchSink", "Batcher", "CloseOutcome", "FlushMarker"]
