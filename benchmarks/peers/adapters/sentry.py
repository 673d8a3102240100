"""Sentry (sentry-sdk): ``capture_event({"message": type, "contexts": {"agent_event": data}})``.

Why an event and not Sentry's logs API (``sentry_sdk.logger.info``, ``enable_logs``): logs
are batched 100 to an envelope, but their buffer drops past a hard-coded 1,000 records
(``LogBatcher.MAX_BEFORE_DROP``, no option raises it, so there is no nodrop mode) and
their attributes are flat (a nested dict becomes its ``repr`` string). An event keeps the
structure. ``contexts`` rather than ``extra``: the serializer trims ``extra`` to 10 keys and
5 levels (``MAX_DATABAG_BREADTH/DEPTH``), which would cut workload events with an added
key; ``contexts`` are not trimmed, and no string is truncated (``max_value_length``
defaults to None).

Wire: one envelope per event, ``POST <endpoint_base>/api/1/envelope/`` (the DSN is
``http://public@<host>/<run-id>/1``: the DSN path before the project id prefixes the API
path), ``Content-Type: application/x-sentry-envelope``, ``X-Sentry-Auth`` header; the
body is gzip'ed at level 9 by default (brotli quality 4 instead when the ``brotli`` module
is importable; it is not in this venv). Any 2xx is success (the body is not read;
``X-Sentry-Rate-Limits`` / ``Retry-After`` on 429 are honoured); no retries.

Client side: ``capture_event`` applies the scope and serializes the event on the caller,
then queues one send job on the transport's ``BackgroundWorker`` (``transport_queue_size``
100): when full the event is dropped (counted, logged only in debug mode), and the
backpressure monitor (every 10 s) then samples events out until the queue is healthy.

Configured for every mode, all options a user has: ``default_integrations=False`` (no
logging/stdlib/threading/excepthook/atexit/modules/argv/dedupe hooks, and no
auto-enabling integrations), ``send_client_reports=False`` (no loss-report items), and a
fixed ``release`` (else the SDK runs ``git rev-parse`` at ``init``). No tracing, profiling
or sessions are on by default.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import sentry_sdk
from sentry_sdk.consts import DEFAULT_QUEUE_SIZE, VERSION

PROJECT_ID = 1
RELEASE = "peers-bench"
CONTEXT_KEY = "agent_event"
#: ``transport_queue_size`` for the nodrop modes: 10x the largest burst the benchmark emits.
NODROP_QUEUE = 1_000_000


def dsn_for(endpoint_base: str) -> str:
    """``http://public@<host>/<run-id>/1``: Sentry posts to ``<endpoint_base>/api/1/envelope/``."""
    parts = urlsplit(endpoint_base)
    return f"{parts.scheme}://public@{parts.netloc}{parts.path.rstrip('/')}/{PROJECT_ID}"


class SentryAdapter:
    name = "sentry"
    version = VERSION

    def __init__(self, endpoint_base: str, mode: str) -> None:
        queue = NODROP_QUEUE if mode in ("nodrop", "nodrop_compressed") else DEFAULT_QUEUE_SIZE
        sentry_sdk.init(
            dsn=dsn_for(endpoint_base),
            release=RELEASE,
            default_integrations=False,
            send_client_reports=False,
            transport_queue_size=queue,
        )
        self.client = sentry_sdk.get_client()
        self.timed_out = False
        self.notes = (
            f"capture_event(contexts=data) -> transport queue {queue:,} (drops newest when"
            " full; backpressure sampling), 1 worker thread, one envelope POST per event,"
            " gzip -9 (default); default integrations and client reports off"
        )

    def emit(self, event_type: str, data: dict[str, Any]) -> None:
        sentry_sdk.capture_event(
            {"message": event_type, "level": "info", "contexts": {CONTEXT_KEY: data}}
        )

    def finish(self, timeout: float) -> None:
        """``flush(timeout)``, then ``close()`` (which stops the worker and the monitor)."""
        deadline = time.monotonic() + timeout
        self.client.flush(timeout=timeout)  # returns early only once the queue is empty
        flushed = time.monotonic() < deadline
        remaining = max(0.0, deadline - time.monotonic())
        closed = _within(deadline, lambda: self.client.close(timeout=remaining))
        self.timed_out = not (flushed and closed)


def _within(deadline: float, fn: Callable[[], object]) -> bool:
    """Run ``fn`` on a daemon thread; False if it is still running at ``deadline``."""
    thread = threading.Thread(target=fn, name="peers-finish", daemon=True)
    thread.start()
    thread.join(max(0.0, deadline - time.monotonic()))
    return not thread.is_alive()


def make(endpoint_base: str, mode: str, marker_field: str) -> SentryAdapter:
    """``marker_field`` travels inside ``contexts.agent_event`` like the rest of ``data``.

    For every mode, since Sentry compresses by default (there is no uncompressed
    ``nodrop``: ``nodrop`` and ``nodrop_compressed`` are one configuration).
    """
    if mode not in ("defaults", "nodrop", "nodrop_compressed"):
        raise ValueError(f"unknown mode {mode!r}")
    return SentryAdapter(endpoint_base, mode)
