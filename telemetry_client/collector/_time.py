"""RFC 3339 timestamps: the event ``ts`` (partitioning, ordering) and the ``since`` filter.

Written by hand rather than with ``datetime.fromisoformat`` because Python 3.10's version
refuses the ``Z`` suffix every client sends, and accepts forms RFC 3339 does not.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import NamedTuple

__all__ = ["Instant", "parse_rfc3339"]

_RFC3339_RE = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?"
    r"(?:([Zz])|([+-])(\d{2}):(\d{2}))"
)
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
_MICROSECOND = dt.timedelta(microseconds=1)


class Instant(NamedTuple):
    """A parsed timestamp: microseconds since the epoch (UTC) and its UTC day."""

    epoch_us: int
    day: str  # YYYY-MM-DD


def parse_rfc3339(text: str) -> Instant | None:
    """Parse ``2026-11-21T10:00:00.123456Z`` (any offset, 0-9 fraction digits); None if invalid.

    Digits past microseconds are truncated. Leap seconds (``:60``) are not representable
    and count as invalid.
    """
    m = _RFC3339_RE.fullmatch(text)
    if m is None:
        return None
    year, month, day, hour, minute, second = (int(m.group(i)) for i in range(1, 7))
    micro = int((m.group(7) or "0").ljust(6, "0")[:6])
    if m.group(8):
        offset = dt.timedelta(0)
    else:
        offset = dt.timedelta(hours=int(m.group(10)), minutes=int(m.group(11)))
        if m.group(9) == "-":
            offset = -offset
    try:
        local = dt.datetime(
            year, month, day, hour, minute, second, micro, tzinfo=dt.timezone(offset)
        )
        utc = local.astimezone(dt.timezone.utc)
    except (ValueError, OverflowError):  # month 13, offset 24:00, year 0 after the offset...
        return None
    # Not strftime("%Y"): glibc does not zero-pad years before 1000.
    return Instant((utc - _EPOCH) // _MICROSECOND, f"{utc.year:04d}-{utc.month:02d}-{utc.day:02d}")
