"""Segment (segment-analytics-python): ``Client.track(user_id, event, properties=data)``.

Wire: ``POST <endpoint_base>/v1/batch`` with JSON ``{"batch": [{"type": "track", "event",
"userId", "properties": {...data}, "context": {"library"}, "timestamp", "messageId",
"integrations"}, ...], "sentAt", "writeKey"}`` and HTTP Basic auth from the write key;
gzip'ed (with ``Content-Encoding: gzip``) only when ``gzip=True``. Any 2xx is success (the
body is not read); 408/410/429/460 and most 5xx are retried (``max_retries`` 10, backoff
up to 60 s, a ``Retry-After`` honoured), other 4xx dropped.

Client side: ``track`` copies and cleans the message and ``json.dumps`` it on the caller
to enforce a 32 KiB per-message cap (over it, ``track`` *raises*), then puts it on a
bounded ``queue.Queue`` (``max_queue_size`` 10,000): when full, the event is dropped with
a WARNING log line each (``segment`` logger). One consumer thread takes up to
``upload_size`` (100) events or 475 KB, waiting at most ``upload_interval`` (0.5 s).
Segment sends nothing else.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from segment.analytics import Client
from segment.analytics.version import VERSION

WRITE_KEY = "peers-bench-write-key"
USER_ID = "peers-bench-user"
#: ``max_queue_size`` for the nodrop modes: 10x the largest burst the benchmark emits.
NODROP_QUEUE = 1_000_000
DEFAULT_QUEUE = Client.DefaultConfig.max_queue_size


class SegmentAdapter:
    name = "segment"
    version = VERSION

    def __init__(self, endpoint_base: str, mode: str) -> None:
        options: dict[str, Any] = {}
        queue = DEFAULT_QUEUE
        if mode in ("nodrop", "nodrop_compressed"):
            options["max_queue_size"] = queue = NODROP_QUEUE
        if mode == "nodrop_compressed":
            options["gzip"] = True
        self.client = Client(WRITE_KEY, host=endpoint_base, **options)
        self.timed_out = False
        cfg = Client.DefaultConfig
        gzip = "gzip" if options.get("gzip") else "no gzip (default)"
        self.notes = (
            f"track() -> queue {queue:,} (drops newest when full), 1 consumer thread,"
            f" batches of {cfg.upload_size} / {cfg.upload_interval} s / 475 KB,"
            f" /v1/batch JSON, {gzip}"
        )

    def emit(self, event_type: str, data: dict[str, Any]) -> None:
        self.client.track(USER_ID, event_type, data)

    def finish(self, timeout: float) -> None:
        """Wait for the queue to drain (``flush()`` has no timeout), then ``join()``."""
        deadline = time.monotonic() + timeout
        drained = _drained(self.client.queue, deadline)
        # join() stops the consumer, which leaves anything still queued unsent.
        joined = _within(deadline, self.client.join)
        self.timed_out = not (drained and joined)


def _drained(queue: Any, deadline: float) -> bool:
    """``queue.join()`` with a deadline: True once every queued event was uploaded."""
    with queue.all_tasks_done:
        while queue.unfinished_tasks:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            queue.all_tasks_done.wait(remaining)
    return True


def _within(deadline: float, fn: Callable[[], object]) -> bool:
    """Run ``fn`` on a daemon thread; False if it is still running at ``deadline``."""
    thread = threading.Thread(target=fn, name="peers-finish", daemon=True)
    thread.start()
    thread.join(max(0.0, deadline - time.monotonic()))
    return not thread.is_alive()


def make(endpoint_base: str, mode: str, marker_field: str) -> SegmentAdapter:
    """``marker_field`` travels in ``properties`` like the rest of ``data``."""
    if mode not in ("defaults", "nodrop", "nodrop_compressed"):
        raise ValueError(f"unknown mode {mode!r}")
    return SegmentAdapter(endpoint_base, mode)
