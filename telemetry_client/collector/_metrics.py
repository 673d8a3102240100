"""Counters and histograms of one collector process, in the Prometheus text format (0.0.4).

Hand-written (a few counters and one histogram do not justify a dependency). Labels come
from fixed sets (route templates, status codes, rejection reasons, store operations),
never from request data, so the number of series stays small whatever clients send.
"""

from __future__ import annotations

import bisect
import threading
from collections import Counter
from typing import ClassVar

__all__ = ["CONTENT_TYPE", "Metrics"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_PREFIX = "telemetry_collector"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(names: tuple[str, ...], values: tuple[str, ...]) -> str:
    if not names:
        return ""
    inner = ",".join(f'{n}="{_escape(v)}"' for n, v in zip(names, values, strict=True))
    return "{" + inner + "}"


class Metrics:
    """Thread-safe counters; :meth:`render` is what ``GET /metrics`` serves."""

    # name -> (help, label names)
    _FAMILIES: ClassVar[dict[str, tuple[str, tuple[str, ...]]]] = {
        "requests_total": (
            "HTTP requests by method, route and status.",
            ("method", "endpoint", "status"),
        ),
        "events_stored_total": ("Events stored (duplicates excluded).", ()),
        "stored_bytes_total": ("Bytes written to the store, by kind.", ("kind",)),
        "duplicates_total": ("Deliveries answered as duplicates, by kind.", ("kind",)),
        "rejections_total": ("Requests refused, by reason.", ("reason",)),
        "attachments_stored_total": ("Attachments stored (duplicates excluded).", ()),
        "store_errors_total": (
            "Store calls that failed (database unavailable, slow or locked), by operation.",
            ("op",),
        ),
        "ingest_fields_stripped_total": (
            'Events whose client-sent top-level "ingest" field was dropped (the collector'
            " stamps its own).",
            (),
        ),
        "retention_deleted_total": ("Rows deleted by retention, by kind.", ("kind",)),
    }
    # name -> (help, label names); bucket bounds in seconds
    _HISTOGRAMS: ClassVar[dict[str, tuple[str, tuple[str, ...]]]] = {
        "store_seconds": ("Time spent in store calls, by operation.", ("op",)),
    }
    BUCKETS: ClassVar[tuple[float, ...]] = (
        0.0005,
        0.001,
        0.0025,
        0.005,
        0.01,
        0.025,
        0.05,
        0.1,
        0.25,
        0.5,
        1.0,
        2.5,
        5.0,
        10.0,
    )

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[str, Counter[tuple[str, ...]]] = {
            name: Counter() for name in self._FAMILIES
        }
        # name -> labels -> (bucket counts (not cumulative, +Inf last), sum, count)
        self._histograms: dict[str, dict[tuple[str, ...], tuple[list[int], float, int]]] = {
            name: {} for name in self._HISTOGRAMS
        }

    def inc(self, family: str, *labels: str, by: int = 1) -> None:
        """Add ``by`` to the series of ``family`` with these label values (in declared order)."""
        if len(labels) != len(self._FAMILIES[family][1]):
            raise ValueError(f"{family} takes labels {self._FAMILIES[family][1]}")
        with self._lock:
            self._counts[family][labels] += by

    def observe(self, family: str, *labels: str, seconds: float) -> None:
        """Record one duration in the histogram ``family`` (labels in declared order)."""
        if len(labels) != len(self._HISTOGRAMS[family][1]):
            raise ValueError(f"{family} takes labels {self._HISTOGRAMS[family][1]}")
        slot = bisect.bisect_left(self.BUCKETS, seconds)
        with self._lock:
            buckets, total, count = self._histograms[family].get(
                labels, ([0] * (len(self.BUCKETS) + 1), 0.0, 0)
            )
            buckets[slot] += 1
            self._histograms[family][labels] = (buckets, total + seconds, count + 1)

    def observations(self, family: str, *labels: str) -> int:
        """How many durations one histogram series recorded (0 if none)."""
        with self._lock:
            entry = self._histograms[family].get(labels)
        return 0 if entry is None else entry[2]

    def value(self, family: str, *labels: str) -> int:
        """Current value of one series (0 if never incremented)."""
        with self._lock:
            return self._counts[family][labels]

    def render(self) -> str:
        """The Prometheus exposition text of every family (families without data included)."""
        with self._lock:
            snapshot = {name: dict(c) for name, c in self._counts.items()}
            histograms = {
                name: {labels: (list(b), s, n) for labels, (b, s, n) in series.items()}
                for name, series in self._histograms.items()
            }
        out: list[str] = []
        for name, (help_text, label_names) in self._FAMILIES.items():
            full = f"{_PREFIX}_{name}"
            out.append(f"# HELP {full} {help_text}")
            out.append(f"# TYPE {full} counter")
            series = snapshot[name] or ({(): 0} if not label_names else {})
            for labels, count in sorted(series.items()):
                out.append(f"{full}{_labels(label_names, labels)} {count}")
        for name, (help_text, label_names) in self._HISTOGRAMS.items():
            full = f"{_PREFIX}_{name}"
            out.append(f"# HELP {full} {help_text}")
            out.append(f"# TYPE {full} histogram")
            for labels, (buckets, total, n) in sorted(histograms[name].items()):
                cumulative = 0
                bounds = [*(f"{b:g}" for b in self.BUCKETS), "+Inf"]
                for bound, in_bucket in zip(bounds, buckets, strict=True):
                    cumulative += in_bucket
                    le = _labels((*label_names, "le"), (*labels, bound))
                    out.append(f"{full}_bucket{le} {cumulative}")
                out.append(f"{full}_sum{_labels(label_names, labels)} {total:.6f}")
                out.append(f"{full}_count{_labels(label_names, labels)} {n}")
        return "\n".join(out) + "\n"
