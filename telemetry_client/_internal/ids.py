"""Time-ordered identifiers (UUIDv7, RFC 9562) for events and batches.

Event ids are made on the spool writer thread from the emit timestamp, so they sort by
emit time (to 1/4096 ms: the 12-bit ``rand_a`` field carries the sub-millisecond
fraction, RFC 9562 method 3) and carry 62 random bits for uniqueness across processes.
The private RNG is reseeded in a forked child so parent and child never repeat ids.
"""

from __future__ import annotations

import hashlib
import os
import random
import time

__all__ = ["batch_id", "derived_batch_id", "event_id", "uuid7_time_ns"]

_rng = random.Random()
_VARIANT = 0b10 << 62


def _reseed() -> None:
    _rng.seed(os.urandom(16))


os.register_at_fork(after_in_child=_reseed)


def _uuid7_int(ts_ns: int, rand62: int) -> int:
    ms, rem_ns = divmod(ts_ns, 1_000_000)
    sub_ms = (rem_ns * 4096) // 1_000_000  # 12-bit fraction of the millisecond
    return (ms & 0xFFFF_FFFF_FFFF) << 80 | 0x7 << 76 | sub_ms << 64 | _VARIANT | rand62


EVENT_ID_FORMAT = "%08x-%04x-%04x-%04x-%012x"  # the five fields of event_id_fields


def event_id_fields(ts_ns: int) -> tuple[int, int, int, int, int]:
    """The five dash-separated fields of a UUIDv7 for ``ts_ns``, for ``EVENT_ID_FORMAT``
    (the envelope formats them straight into its line: hot path, once per event)."""
    ms, rem_ns = divmod(ts_ns, 1_000_000)
    rand = _rng.getrandbits(62)
    return (
        (ms >> 16) & 0xFFFF_FFFF,
        ms & 0xFFFF,
        0x7000 | (rem_ns * 4096) // 1_000_000,
        0x8000 | rand >> 48,
        rand & 0xFFFF_FFFF_FFFF,
    )


def event_id(ts_ns: int) -> str:
    """A UUIDv7 string for an event emitted at ``ts_ns`` (nanoseconds since the epoch)."""
    return EVENT_ID_FORMAT % event_id_fields(ts_ns)


def batch_id(ts_ns: int | None = None) -> str:
    """A UUIDv7 as 32 hex digits (no dashes): sorts by creation time, safe in file names.

    Uses ``os.urandom`` so ids stay unique even across a fork that skipped our reseed.
    """
    ts = time.time_ns() if ts_ns is None else ts_ns
    rand = int.from_bytes(os.urandom(8), "big") & ((1 << 62) - 1)
    return f"{_uuid7_int(ts, rand):032x}"


def derived_batch_id(ts_ns: int, seed: str) -> str:
    """A UUIDv7-shaped batch id fixed by ``(ts_ns, seed)``: the same inputs, the same id.

    Used where a retry or a repeated step must reuse the id (halves of a split batch,
    loss reports), so the collector's idempotency check recognises it.
    """
    digest = int.from_bytes(hashlib.sha256(seed.encode()).digest()[:8], "big")
    return f"{_uuid7_int(ts_ns, digest & ((1 << 62) - 1)):032x}"


def uuid7_time_ns(value: str) -> int:
    """The creation time (ns, millisecond precision) encoded in a UUIDv7 (dashed or not)."""
    h = value.replace("-", "")
    return int(h[:12], 16) * 1_000_000
