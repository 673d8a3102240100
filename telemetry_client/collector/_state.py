"""``CollectorState``: what the routes, the middleware and the lifespan tasks share.

Every store call goes through :meth:`CollectorState.store_call`: it runs on a worker
thread (never on the event loop: the database may be slow or locked), in a lane with its
own capacity limiter so reads never queue behind writes, and is timed into the
``store_seconds`` histogram; a :class:`StoreUnavailable` is counted in
``store_errors_total`` and left to propagate (the app's handler answers 503).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import anyio
import anyio.to_thread

from telemetry_client.collector._auth import TokenAuth
from telemetry_client.collector._config import CollectorConfig
from telemetry_client.collector._metrics import Metrics
from telemetry_client.collector._ratelimit import TokenBuckets
from telemetry_client.collector.store.base import RetentionResult, Store, StoreUnavailable

__all__ = ["CollectorState"]

T = TypeVar("T")

# Concurrent worker-thread jobs per lane. "write" (decode + store) also bounds memory to a
# few request bodies' worth; "health" is one ping at a time; "maintenance" is retention and
# the 0.1 import, which must never take a request's slot.
_WORKERS = {"write": 8, "read": 4, "health": 1, "maintenance": 1}


@dataclass(eq=False)
class CollectorState:
    """What the routes share (``app.state.collector``).

    Setting ``disable_seconds`` at runtime turns the kill switch on (or off with None).
    ``retention_passes``/``last_retention`` tell what the retention task did (tests and
    logs); ``clock`` is the wall clock retention computes its cutoff from.
    """

    config: CollectorConfig
    store: Store
    metrics: Metrics
    auth: TokenAuth
    buckets: TokenBuckets | None
    disable_seconds: int | None
    owns_store: bool = True
    clock: Callable[[], float] = time.time
    retention_passes: int = 0
    last_retention: RetentionResult | None = None
    _limiters: dict[str, anyio.CapacityLimiter] = field(default_factory=dict, repr=False)
    _closed: bool = field(default=False, repr=False)

    async def run_sync(self, func: Callable[..., T], *args: Any, lane: str = "write") -> T:
        """Run ``func(*args)`` on a worker thread, at most ``_WORKERS[lane]`` at once."""
        limiter = self._limiters.get(lane)
        if limiter is None:  # created lazily: it belongs to the serving event loop
            limiter = self._limiters[lane] = anyio.CapacityLimiter(_WORKERS[lane])
        return await anyio.to_thread.run_sync(func, *args, limiter=limiter)

    def timed(self, op: str, func: Callable[..., T], *args: Any) -> T:
        """Call ``func(*args)`` here (a worker thread), recording its latency as ``op``."""
        start = time.perf_counter()
        try:
            return func(*args)
        except StoreUnavailable:
            self.metrics.inc("store_errors_total", op)
            raise
        finally:
            self.metrics.observe("store_seconds", op, seconds=time.perf_counter() - start)

    async def store_call(
        self, op: str, func: Callable[..., T], *args: Any, lane: str = "read"
    ) -> T:
        """``func(*args)`` (a store method) on a worker thread of ``lane``, timed as ``op``."""
        return await self.run_sync(self.timed, op, func, *args, lane=lane)

    def close_store(self) -> None:
        """Close the store if this app opened it (idempotent)."""
        if self.owns_store and not self._closed:
            self._closed = True
            self.store.close()
