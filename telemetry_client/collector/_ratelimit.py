"""Per-token rate limit: a token bucket per bearer token, answered with 429 + ``Retry-After``.

A bucket holds up to ``burst`` requests and refills at ``rate`` per second, so a client may
burst after being quiet but cannot exceed ``rate`` on average. The clock is injected so
tests can move time without waiting.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable

__all__ = ["TokenBuckets"]


class TokenBuckets:
    """One bucket per key (a token's id, never the token itself); thread-safe."""

    def __init__(
        self, rate: float, burst: int, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be > 0 and burst >= 1")
        self._rate = rate
        self._burst = float(burst)
        self._clock = clock
        self._lock = threading.Lock()
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, last refill)

    def acquire(self, key: str) -> float:
        """Take one request from ``key``'s bucket: 0.0 if allowed, else seconds until allowed."""
        now = self._clock()
        with self._lock:
            tokens, last = self._buckets.get(key, (self._burst, now))
            tokens = min(self._burst, tokens + (now - last) * self._rate)
            if tokens >= 1.0 - 1e-9:  # float drift must not refuse a client pacing at the rate
                self._buckets[key] = (max(0.0, tokens - 1.0), now)
                return 0.0
            self._buckets[key] = (tokens, now)
            return (1.0 - tokens) / self._rate

    @staticmethod
    def retry_after(wait_s: float) -> str:
        """``Retry-After`` value for a wait: whole seconds, rounded up, at least 1."""
        return str(max(1, math.ceil(wait_s)))
