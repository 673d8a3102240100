"""Public fakes for testing code that uses telemetry-client (and for our own tests).

- :class:`FakeClock`: a wall clock and a monotonic clock that only move when told to, for
  the uploader's ``clock=``/``monotonic=`` arguments: minutes of backoff take no time.
- :class:`FixedJitter`: a ``random.Random`` whose ``uniform(a, b)`` always lands at the same
  fraction of the range, for the uploader's ``rng=`` argument: jittered waits become exact.
"""

from __future__ import annotations

import random
import threading
import time

__all__ = ["FakeClock", "FixedJitter"]


class FakeClock:
    """Time that stands still until :meth:`advance` (thread-safe).

    ``time()`` starts at the current wall time in whole seconds (so it agrees with code
    that reads the real clock, and HTTP dates, which have one-second resolution, round-trip
    exactly); ``monotonic()`` starts at ``1000.0``. Both move together.
    """

    def __init__(self, start: float | None = None, *, monotonic_start: float = 1000.0) -> None:
        self._wall = float(int(time.time())) if start is None else float(start)
        self._mono = float(monotonic_start)
        self._lock = threading.Lock()

    def time(self) -> float:
        """Seconds since the epoch (a stand-in for ``time.time``)."""
        with self._lock:
            return self._wall

    def monotonic(self) -> float:
        """A stand-in for ``time.monotonic``."""
        with self._lock:
            return self._mono

    def advance(self, seconds: float) -> None:
        """Move both clocks forward by ``seconds`` (>= 0)."""
        if seconds < 0:
            raise ValueError("a clock does not go backwards")
        with self._lock:
            self._wall += seconds
            self._mono += seconds

    def sleep(self, seconds: float) -> None:
        """A stand-in for ``time.sleep``: advances instead of waiting."""
        self.advance(max(0.0, seconds))


class FixedJitter(random.Random):
    """``uniform(a, b)`` returns ``a + (b - a) * fraction``: 0.0 the shortest, 1.0 the longest."""

    def __init__(self, fraction: float = 1.0) -> None:
        if not 0.0 <= fraction <= 1.0:
            raise ValueError("fraction must be within [0, 1]")
        super().__init__(0)
        self.fraction = fraction

    def uniform(self, a: float, b: float) -> float:
        return a + (b - a) * self.fraction
