"""The seam between the uploader and where batches go (docs/upload.md, "Destinations").

A :class:`Destination` takes one claimed batch and answers with one :class:`SendResult`,
which the uploader classifies by the retry matrix (:mod:`.policy`). A 2xx is that
destination's acknowledgement; the batch leaves the spool once *every* destination
acknowledged it, and a destination that acknowledged it is not sent it again while others
retry (:class:`Acks` in memory, and the spool's settlement markers on disk: docs/otlp.md).
Two are wired: the native collector and OTLP (:mod:`.otlp`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from telemetry_client.spool.blobs import AttachmentRef
from telemetry_client.upload._sender import SendResult

__all__ = ["Acks", "ClaimedBatch", "Destination", "OutgoingBatch", "TrustedBatches"]

_TRUSTED_MAX = 4096
_ACKS_MAX = 4096


class ClaimedBatch(Protocol):
    """What a destination may read of a claimed batch (``spool.Claim`` has it all)."""

    body: bytes  # the stored zstd frame of newline-terminated JSON events

    @property
    def batch_id(self) -> str: ...

    @property
    def n_events(self) -> int: ...

    @property
    def raw(self) -> bytes: ...  # the JSONL, decompressed (on first use for a trusted claim)

    def lines(self) -> list[bytes]: ...


@dataclass(frozen=True, slots=True)
class OutgoingBatch:
    """One batch on its way to one destination."""

    claim: ClaimedBatch
    # References found in the batch, for destinations with ``uploads_attachments`` (else
    # empty: the scan is skipped when no destination needs it, or the writer said none).
    attachments: tuple[AttachmentRef, ...]
    timeout: Callable[[], float]  # seconds the next request may take (shrinks at shutdown)

    @property
    def batch_id(self) -> str:
        return self.claim.batch_id

    def events(self) -> list[dict[str, Any]]:
        """The decoded event envelopes (for destinations that convert events)."""
        return [orjson.loads(line) for line in self.claim.lines()]


class Destination(Protocol):
    """Somewhere batches are delivered; one instance per configured endpoint.

    ``send`` never raises for I/O: every failure is a :class:`SendResult` (``status=None``
    for no answer). Its result is classified by :func:`.policy.classify`; a final 413 means
    the destination could not take the batch even split, and dead-letters it. Sending the
    same batch id twice must be harmless (the native collector deduplicates on it).
    ``explain`` gives one line for an answer that pauses uploads until a person acts
    (401/403/404/405): the status, the URL without credentials, the setting to check.
    """

    @property
    def name(self) -> str: ...  # unique among the uploader's destinations: keys its acks

    @property
    def uploads_attachments(self) -> bool: ...  # needs the attachments a batch references

    def send(self, batch: OutgoingBatch) -> SendResult: ...

    def explain(self, result: SendResult) -> str: ...

    def describe(self) -> dict[str, int]: ...  # counters merged into ``stats()``

    def close(self) -> None: ...


class TrustedBatches:
    """Batches this process sealed without attachment references, a hint from the writer.

    They are claimed without the decompress-and-count check (the bytes were written moments
    ago by us) and need no attachment scan. Bounded; safe without a lock (dict operations).
    """

    def __init__(self, limit: int = _TRUSTED_MAX) -> None:
        self._ids: dict[str, None] = {}
        self._limit = limit

    def note(self, batch_id: str, has_attachments: bool) -> None:
        """The batcher sealed ``batch_id`` (its ``on_sealed`` callback)."""
        if has_attachments:
            return
        ids = self._ids
        if len(ids) >= self._limit:
            with contextlib.suppress(StopIteration, KeyError, RuntimeError):
                del ids[next(iter(ids))]
        ids[batch_id] = None

    def __contains__(self, batch_id: object) -> bool:
        return batch_id in self._ids

    def take(self, batch_id: str) -> bool:
        """Whether ``batch_id`` was trusted; forgets it (a claim is delivered once)."""
        try:
            del self._ids[batch_id]
        except KeyError:
            return False
        return True


class Acks:
    """Which destinations settled which batch, and with what answer, in memory.

    A destination settles a batch by acknowledging it (2xx) or refusing it for good. An
    entry lives while a batch is settled by some destinations but not all, so a retry skips
    the settled ones; it is forgotten when the batch leaves the spool. Bounded: a forgotten
    entry costs a resend (at-least-once holds). A cache: the spool persists settlements
    (``spool/settled.py``) so that another process or a restart skips them too.
    """

    def __init__(self, limit: int = _ACKS_MAX) -> None:
        self._by_batch: dict[str, dict[str, SendResult]] = {}
        self._limit = limit

    def settled(self, batch_id: str) -> dict[str, SendResult]:
        """Destination name -> the answer that settled ``batch_id`` (a copy)."""
        return dict(self._by_batch.get(batch_id, {}))

    def record(self, batch_id: str, destination: str, result: SendResult) -> None:
        entry = self._by_batch.get(batch_id)
        if entry is None:
            if len(self._by_batch) >= self._limit:
                del self._by_batch[next(iter(self._by_batch))]
            entry = self._by_batch[batch_id] = {}
        entry[destination] = result

    def forget(self, batch_id: str) -> None:
        self._by_batch.pop(batch_id, None)

    def __len__(self) -> int:
        return len(self._by_batch)
