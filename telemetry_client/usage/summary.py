"""Summaries of the usage store over a sliding window: totals, per provider:model, RPM.

A call counts when its ``ts`` is in the window, a minute bucket when its minute starts in
it; windows go from :data:`MIN_WINDOW_S` (1 minute) to :data:`MAX_WINDOW_S` (24 hours,
the store's retention).
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import Any

from telemetry_client._internal.units import parse_duration_s
from telemetry_client.usage.series import RETENTION_S, SUMS
from telemetry_client.usage.store import UsageSnapshot

__all__ = [
    "MAX_WINDOW_S",
    "MIN_WINDOW_S",
    "ModelUsage",
    "UsageSummary",
    "UsageTotals",
    "format_window",
    "parse_window",
    "summarize",
]

MIN_WINDOW_S = 60.0
MAX_WINDOW_S = RETENTION_S


@dataclass(frozen=True, slots=True)
class UsageTotals:
    """Sums over a window; ``rpm`` is requests per minute averaged over the whole window.

    ``cache_read_tokens`` and ``cache_write_tokens`` are part of ``input_tokens``,
    ``reasoning_tokens`` part of ``output_tokens``.
    """

    requests: int = 0
    errors: int = 0
    bytes_up: int = 0
    bytes_down: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    total_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0
    rpm: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


@dataclass(frozen=True, slots=True)
class ModelUsage:
    """The totals of one provider:model."""

    provider: str
    model: str
    totals: UsageTotals

    @property
    def label(self) -> str:
        return f"{self.provider}:{self.model or '?'}"


@dataclass(frozen=True, slots=True)
class UsageSummary:
    """What ``telemetry-client stats`` shows: the window, the totals and each provider:model."""

    window_s: float
    now: float
    total: UsageTotals
    models: tuple[ModelUsage, ...]  # most requests first
    store: str = ""
    problem: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "window_s": self.window_s,
            "window": format_window(self.window_s),
            "now": round(self.now, 3),
            "since": round(self.now - self.window_s, 3),
            "total": self.total.to_dict(),
            "models": [
                {"provider": m.provider, "model": m.model, "key": m.label, **m.totals.to_dict()}
                for m in self.models
            ],
            "store": self.store,
            "problem": self.problem,
        }


def _totals(sums: list[int], window_s: float) -> UsageTotals:
    requests, errors, up, down, inp, out, total, cache_read, cache_write, reasoning = sums
    return UsageTotals(
        requests,
        errors,
        up,
        down,
        inp,
        out,
        total,
        cache_read,
        cache_write,
        reasoning,
        round(requests * 60.0 / window_s, 4),
    )


def summarize(
    snapshot: UsageSnapshot, window_s: float, *, now: float | None = None, store: str = ""
) -> UsageSummary:
    """Sum the calls with ``ts >= now - window_s`` and the buckets whose minute starts then."""
    now = time.time() if now is None else now
    cutoff = now - window_s
    grand = [0] * SUMS
    models: list[ModelUsage] = []
    for (provider, model), s in snapshot.series.items():
        sums = [0] * SUMS
        for ts, up, down, inp, out, total, err, cache_read, cache_write, reasoning in s.calls:
            if ts >= cutoff:
                sums[0] += 1
                sums[1] += err
                sums[2] += up
                sums[3] += down
                sums[4] += inp
                sums[5] += out
                sums[6] += total
                sums[7] += cache_read
                sums[8] += cache_write
                sums[9] += reasoning
        for minute, bucket in s.minutes.items():
            if minute >= cutoff:
                for i, v in enumerate(bucket):
                    sums[i] += v
        if sums[0]:
            models.append(ModelUsage(provider, model, _totals(sums, window_s)))
            for i, v in enumerate(sums):
                grand[i] += v
    models.sort(key=lambda m: (-m.totals.requests, m.label))
    return UsageSummary(
        window_s, now, _totals(grand, window_s), tuple(models), store, snapshot.problem
    )


def parse_window(text: str) -> float:
    """Seconds from ``15m``, ``90s``, ``6h`` (a bare number is minutes), 1 minute to 24 hours."""
    hint = "expected a duration from 1m to 24h such as 15m, 90s or 6h"
    try:
        seconds = parse_duration_s(text, "m")
    except ValueError:
        raise ValueError(f"{hint}, got {text!r}") from None
    if not MIN_WINDOW_S <= seconds <= MAX_WINDOW_S:
        raise ValueError(f"{hint}, got {text!r}")
    return seconds


def format_window(seconds: float) -> str:
    """``3600`` -> ``1h``, ``900`` -> ``15m``, ``90`` -> ``90s``."""
    s = round(seconds)
    if s % 3600 == 0:
        return f"{s // 3600}h"
    if s % 60 == 0:
        return f"{s // 60}m"
    return f"{s}s"
