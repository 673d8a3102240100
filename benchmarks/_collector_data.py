"""Workload for ``benchmarks/collector.py``: client batches to post, and a store fill.

Both wrap ``benchmarks/workload.py`` events (``(type, data)``, ~2.4 KB of JSON each) in
full envelopes (unique id, RFC 3339 ``ts``, session, user, machine, app, seq) the way the
SDK sends them:

* :func:`client_batches`: per client process one user with sessions of varied length,
  cut into batches like the SDK's sealer (at most 1,000 events and 1 MiB of NDJSON),
  zstd level 3 with a checksum, each with its own ``Idempotency-Key``.
* :class:`Filler`: decoded events for ``Store.append`` in-process (filling 1M events over
  HTTP would measure ingest again, slowly): sessions of log-normal length (median ~50,
  mean ~100 events, at most 3,000) from 200 users over 14 days, each session cut into
  batches of at most 400 events (~1 MiB, one SDK batch), batches appended in the order of
  their last event (sessions interleave, as concurrent clients do).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import math
import random
import uuid
from collections.abc import Iterator
from typing import Any

import orjson
import zstandard

from telemetry_client.collector._decode import DecodedEvent, validate_envelope

__all__ = ["Filler", "client_batches", "ts_text"]

EPOCH_US = 1_796_083_200 * 1_000_000  # 2026-12-01T00:00:00Z
MAX_BATCH_EVENTS = 1000
MAX_BATCH_BYTES = 1 << 20
ZSTD_LEVEL = 3
FILL_BATCH_EVENTS = 400
FILL_USERS = 200
FILL_SPAN_US = 14 * 86_400 * 1_000_000
_LOG_MU, _LOG_SIGMA, _MAX_SESSION = math.log(100) - 0.72, 1.2, 3000  # median ~49, mean ~100


def ts_text(us: int) -> str:
    """RFC 3339 UTC with microseconds, as the SDK writes ``ts``."""
    t = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc) + dt.timedelta(microseconds=us)
    return t.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _session_length(rng: random.Random) -> int:
    return max(1, min(_MAX_SESSION, round(rng.lognormvariate(_LOG_MU, _LOG_SIGMA))))


def _uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def _envelope(
    etype: str, data: dict[str, Any], rng: random.Random, session: str, user: str, seq: int, us: int
) -> dict[str, Any]:
    return {
        "id": _uuid(rng),
        "type": etype,
        "ts": ts_text(us),
        "session_id": session,
        "user_id": user,
        "machine_id": hashlib.sha256(user.encode()).hexdigest()[:16],
        "app": "bench-agent",
        "app_version": "0.2.0",
        "seq": seq,
        "data": data,
    }


def client_batches(
    events: list[tuple[str, dict[str, Any]]], clients: int, seed: int
) -> list[list[tuple[str, bytes, int]]]:
    """``events`` split over ``clients`` processes: per client ``[(key, zstd body, n)]``."""
    cctx = zstandard.ZstdCompressor(level=ZSTD_LEVEL, write_checksum=True)
    out: list[list[tuple[str, bytes, int]]] = []
    for c in range(clients):
        rng = random.Random(seed * 1000 + c)
        user = f"user-{c:03d}"
        us = EPOCH_US + c * 1_000_000
        session, left, seq = "", 0, 0
        batches: list[tuple[str, bytes, int]] = []
        lines: list[bytes] = []
        size = 0
        for etype, data in events[c::clients]:
            if left == 0:
                session, left, seq = _uuid(rng), _session_length(rng), 0
            left -= 1
            seq += 1
            us += rng.randint(50_000, 2_000_000)
            line = orjson.dumps(_envelope(etype, data, rng, session, user, seq, us)) + b"\n"
            if lines and (len(lines) >= MAX_BATCH_EVENTS or size + len(line) > MAX_BATCH_BYTES):
                batches.append((_uuid(rng), cctx.compress(b"".join(lines)), len(lines)))
                lines, size = [], 0
            lines.append(line)
            size += len(line)
        if lines:
            batches.append((_uuid(rng), cctx.compress(b"".join(lines)), len(lines)))
        out.append(batches)
    return out


class Filler:
    """Generates new sessions' batches of decoded events; remembers every session's size."""

    def __init__(self, pool: list[tuple[str, dict[str, Any]]], seed: int) -> None:
        self._pool = pool
        self._rng = random.Random(seed)
        self._next = 0
        self.sessions: dict[str, int] = {}

    def batches(self, n: int, *, window: int = 50_000) -> Iterator[tuple[str, list[DecodedEvent]]]:
        """``(key, events)`` batches of new sessions holding ``n`` events in all, generated
        ``window`` events at a time (memory), time-ordered by last event within a window."""
        left = n
        while left > 0:
            take = min(window, left)
            left -= take
            chunks: list[tuple[int, list[DecodedEvent]]] = []
            while take > 0:
                length = min(take, _session_length(self._rng))
                take -= length
                chunks.extend(self._session(length))
            chunks.sort(key=lambda c: c[0])
            for _, events in chunks:
                yield _uuid(self._rng), events

    def _session(self, length: int) -> list[tuple[int, list[DecodedEvent]]]:
        rng = self._rng
        session = _uuid(rng)
        user = f"user-{rng.randrange(FILL_USERS):03d}"
        us = EPOCH_US + rng.randrange(FILL_SPAN_US)
        self.sessions[session] = length
        chunks: list[tuple[int, list[DecodedEvent]]] = []
        current: list[DecodedEvent] = []
        for seq in range(1, length + 1):
            etype, data = self._pool[self._next % len(self._pool)]
            self._next += 1
            us += rng.randint(50_000, 5_000_000)
            envelope = _envelope(etype, data, rng, session, user, seq, us)
            current.append(validate_envelope(envelope, "fill"))
            if len(current) == FILL_BATCH_EVENTS:
                chunks.append((us, current))
                current = []
        if current:
            chunks.append((us, current))
        return chunks
