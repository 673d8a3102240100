"""PostHog (posthog-python): ``Posthog.capture(event, distinct_id=, properties=data)``.

Wire: its default capture protocol ("V0"), ``POST <endpoint_base>/batch/`` with JSON
``{"batch": [{"event", "distinct_id", "properties": {...data, "$lib", ...}, "timestamp",
"uuid"}, ...], "historical_migration", "sent_at", "api_key"}``; gzip'ed (with a
``Content-Encoding: gzip`` header) only when ``gzip=True``. Success is status 200 exactly
(any body; another 2xx is an error and retried); 408/429/5xx are retried
``max_retries`` (3) times with backoff, other 4xx dropped.

Client side: ``capture`` enriches the properties and puts the event on a bounded
``queue.Queue`` (``max_queue_size`` 10,000): when full, the event is dropped with a WARNING
log line each (``posthog`` logger). One consumer thread (``thread=1``) takes up to
``flush_at`` (100) events, waiting at most ``flush_interval`` (5 s) for a batch to fill,
``json.dumps`` each event to check its size (900 KiB cap; 5 MiB per batch), then posts.

Nothing else is sent: feature-flag polling needs a personal API key (none given), and
exception autocapture, metrics and tracing are off by default.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from posthog import Posthog
from posthog.version import VERSION

API_KEY = "phc_peers_bench"  # the sink checks nothing
DISTINCT_ID = "peers-bench-user"
#: ``max_queue_size`` for the nodrop modes: 10x the largest burst the benchmark emits.
NODROP_QUEUE = 1_000_000
DEFAULT_QUEUE = 10_000  # posthog.Client's default, for the notes


class PosthogAdapter:
    name = "posthog"
    version = VERSION

    def __init__(self, endpoint_base: str, mode: str) -> None:
        options: dict[str, Any] = {}
        queue = DEFAULT_QUEUE
        if mode in ("nodrop", "nodrop_compressed"):
            options["max_queue_size"] = queue = NODROP_QUEUE
        if mode == "nodrop_compressed":
            options["gzip"] = True
        self.client = Posthog(API_KEY, host=endpoint_base, **options)
        self.timed_out = False
        gzip = "gzip" if options.get("gzip") else "no gzip (default)"
        self.notes = (
            f"capture() -> queue {queue:,} (drops newest when full), 1 consumer thread,"
            f" batches of 100 / 5 s, V0 /batch/ JSON, {gzip}"
        )

    def emit(self, event_type: str, data: dict[str, Any]) -> None:
        self.client.capture(event_type, distinct_id=DISTINCT_ID, properties=data)

    def finish(self, timeout: float) -> None:
        """``flush(timeout)``, then ``shutdown()`` (which drains without a time limit)."""
        deadline = time.monotonic() + timeout
        self.client.flush(timeout_seconds=timeout)  # returns early only once drained
        flushed = time.monotonic() < deadline
        self.timed_out = not (_within(deadline, self.client.shutdown) and flushed)


def _within(deadline: float, fn: Callable[[], object]) -> bool:
    """Run ``fn`` on a daemon thread; False if it is still running at ``deadline``."""
    thread = threading.Thread(target=fn, name="peers-finish", daemon=True)
    thread.start()
    thread.join(max(0.0, deadline - time.monotonic()))
    return not thread.is_alive()


def make(endpoint_base: str, mode: str, marker_field: str) -> PosthogAdapter:
    """``marker_field`` travels in ``properties`` like the rest of ``data``."""
    if mode not in ("defaults", "nodrop", "nodrop_compressed"):
        raise ValueError(f"unknown mode {mode!r}")
    return PosthogAdapter(endpoint_base, mode)
