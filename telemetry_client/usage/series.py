"""The store's content: per provider:model, recent calls and minute buckets, and its bounds.

Calls and buckets older than :data:`RETENTION_S` (24 h, the largest window) are pruned at
every merge; past :data:`MAX_CALLS` per-call entries the oldest are coalesced into minute
buckets (down to :data:`COALESCE_TO`, so it does not happen at every merge), which keeps
every total exact; a series holds at most :data:`MAX_MINUTES` buckets (24 h of them);
past :data:`MAX_SERIES` provider:model pairs the least recently used ones are folded into
:data:`OTHER`. The file stays well under 1 MB.
"""

from __future__ import annotations

import dataclasses
import math
import operator
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from telemetry_client.usage.store import UsageRecord

__all__ = [
    "COALESCE_TO",
    "MAX_CALLS",
    "MAX_MINUTES",
    "MAX_SERIES",
    "OTHER",
    "RETENTION_S",
    "SUMS",
    "Series",
    "SeriesMap",
    "add_records",
    "cap_series",
    "coalesce",
    "prune",
    "ts_of",
]

RETENTION_S = 86_400.0  # the largest window: nothing older can ever be shown
MAX_CALLS = 10_000  # per-call entries, all series together
COALESCE_TO = 7_500  # coalesce down to this many, so it happens once per ~2500 calls
MAX_MINUTES = 1_440  # buckets per series: 24 h of minutes
MAX_SERIES = 256  # provider:model pairs; the least recently used are folded into OTHER
OTHER = ("(other)", "(other)")
#: Sums of a minute bucket: requests, errors, up, down, in, out, total, cache read, cache
#: write, reasoning.
SUMS = 10


@dataclass(slots=True)
class Series:
    """One provider:model: recent calls (``[ts, up, down, in, out, total, error, cache_read,
    cache_write, reasoning]``, oldest first) and minute buckets (``minute_start ->
    [requests, errors, up, down, in, out, total, cache_read, cache_write, reasoning]``)."""

    calls: list[list[Any]] = dataclasses.field(default_factory=list)
    minutes: dict[int, list[int]] = dataclasses.field(default_factory=dict)

    def last_ts(self) -> float:
        last = self.calls[-1][0] if self.calls else -math.inf
        return max(last, max(self.minutes, default=-math.inf))

    def absorb(self, other: Series) -> None:
        self.calls.extend(other.calls)
        self.calls.sort(key=ts_of)
        for minute, sums in other.minutes.items():
            self._add_bucket(minute, sums)

    def coalesce(self, upto_ts: float) -> int:
        """Move calls with ``ts <= upto_ts`` into their minute buckets; returns how many."""
        n = 0
        for call in self.calls:
            if call[0] > upto_ts:
                break
            ts, up, down, inp, out, total, err, *parts = call
            self._add_bucket(int(ts // 60) * 60, [1, err, up, down, inp, out, total, *parts])
            n += 1
        del self.calls[:n]
        return n

    def _add_bucket(self, minute: int, sums: list[int]) -> None:
        bucket = self.minutes.get(minute)
        if bucket is None:
            self.minutes[minute] = list(sums)
        else:
            for i, v in enumerate(sums):
                bucket[i] += v


ts_of = operator.itemgetter(0)  # the sort key of call entries (a C call, no Python frame)


SeriesMap = dict[tuple[str, str], Series]


def add_records(series: SeriesMap, records: Iterable[UsageRecord]) -> int:
    """Append the records' call entries (in ``ts`` order per series); returns how many."""
    n = 0
    touched: set[tuple[str, str]] = set()
    for r in records:
        key = (r.provider, r.model)
        s = series.get(key)
        if s is None:
            s = series[key] = Series()
        calls = s.calls
        entry = [
            round(r.ts, 3),
            r.bytes_up,
            r.bytes_down,
            r.input_tokens,
            r.output_tokens,
            r.total_tokens,
            1 if r.error else 0,
            r.cache_read_tokens,
            r.cache_write_tokens,
            r.reasoning_tokens,
        ]
        if calls and entry[0] < calls[-1][0]:
            touched.add(key)  # out of order (another process merged newer calls first)
        calls.append(entry)
        n += 1
    for key in touched:
        series[key].calls.sort(key=ts_of)
    return n


def prune(series: SeriesMap, now: float) -> int:
    """Drop calls and buckets older than the retention; returns how many were dropped."""
    cutoff = now - RETENTION_S
    dropped = 0
    for key in list(series):
        s = series[key]
        i = 0
        while i < len(s.calls) and s.calls[i][0] < cutoff:
            i += 1
        if i:
            del s.calls[:i]
            dropped += i
        old = [m for m in s.minutes if m < cutoff]
        for m in old:
            del s.minutes[m]
        dropped += len(old)
        if len(s.minutes) > MAX_MINUTES:  # only with timestamps from the future
            for m in sorted(s.minutes)[: len(s.minutes) - MAX_MINUTES]:
                del s.minutes[m]
                dropped += 1
        if not s.calls and not s.minutes:
            del series[key]
    return dropped


def coalesce(series: SeriesMap) -> int:
    """Past MAX_CALLS entries, turn the oldest into minute buckets (totals stay exact)."""
    total = sum(len(s.calls) for s in series.values())
    if total <= MAX_CALLS:
        return 0
    stamps = sorted(c[0] for s in series.values() for c in s.calls)
    upto = stamps[total - COALESCE_TO - 1]  # the newest ts to coalesce (ties go too)
    return sum(s.coalesce(upto) for s in series.values())


def cap_series(series: SeriesMap) -> None:
    """Past MAX_SERIES pairs, fold the least recently used ones into ``OTHER``."""
    if len(series) <= MAX_SERIES:
        return
    other = series.pop(OTHER, Series())
    ranked = sorted(series, key=lambda k: series[k].last_ts(), reverse=True)
    for key in ranked[MAX_SERIES - 1 :]:
        other.absorb(series.pop(key))
    series[OTHER] = other
