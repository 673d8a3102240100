"""Counters of one collector process, rendered in the Prometheus text format (0.0.4).

Hand-written (a few counters do not justify a dependency). Labels come from fixed sets
(route templates, status codes, rejection reasons), never from request data, so the
number of series stays small whatever clients send.
"""

from __future__ import annotations

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
    }

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[str, Counter[tuple[str, ...]]] = {
            name: Counter() for name in self._FAMILIES
        }

    def inc(self, family: str, *labels: str, by: int = 1) -> None:
        """Add ``by`` to the series of ``family`` with these label values (in declared order)."""
        if len(labels) != len(self._FAMILIES[family][1]):
            raise ValueError(f"{family} takes labels {self._FAMILIES[family][1]}")
        with self._lock:
            self._counts[family][labels] += by

    def value(self, family: str, *labels: str) -> int:
        """Current value of one series (0 if never incremented)."""
        with self._lock:
            return self._counts[family][labels]

    def render(self) -> str:
        """The Prometheus exposition text of every family (families without data included)."""
        with self._lock:
            snapshot = {name: dict(c) for name, c in self._counts.items()}
        out: list[str] = []
        for name, (help_text, label_names) in self._FAMILIES.items():
            full = f"{_PREFIX}_{name}"
            out.append(f"# HELP {full} {help_text}")
            out.append(f"# TYPE {full} counter")
            series = snapshot[name] or ({(): 0} if not label_names else {})
            for labels, count in sorted(series.items()):
                out.append(f"{full}{_labels(label_names, labels)} {count}")
        return "\n".join(out) + "\n"
