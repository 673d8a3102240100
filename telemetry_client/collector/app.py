"""The reference collector's HTTP API (docs/protocol.md, "Collector API"), as a FastAPI app.

Every endpoint but health checks the bearer token and the role it needs (``ingest`` to
post, ``read`` to query; ``admin`` may do both), then the token's rate limit, before
reading a byte of the body. Bodies are read with a size cap on the loop; decompression,
validation and every store call run on worker threads (``CollectorState.run_sync``) so a
big batch or a slow database never stalls other requests. Storage is a
:class:`~telemetry_client.collector.store.base.Store` (SQLite in the data dir by default,
PostgreSQL with ``database_url``; docs/collector-store.md).

Refusals are :class:`Rejected` exceptions turned into ``{"detail": ...}`` responses in one
handler, which also counts them by reason; a :class:`StoreUnavailable` from any store call
answers 503 with ``Retry-After: 5`` (the client keeps the batch and retries), and a
:class:`BadCursor` answers 400. One pure-ASGI middleware counts every response by route
template and status, and adds ``X-Telemetry-Disable`` to every response of the events and
attachments endpoints while the kill switch is on (``CollectorState.disable_seconds``).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
from fastapi import FastAPI, Request
from fastapi.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from telemetry_client._version import __version__
from telemetry_client.collector._auth import TokenAuth
from telemetry_client.collector._config import CollectorConfig, scrub
from telemetry_client.collector._errors import Rejected
from telemetry_client.collector._http import json_response
from telemetry_client.collector._lifecycle import import_legacy, retention_loop
from telemetry_client.collector._metrics import Metrics
from telemetry_client.collector._ratelimit import TokenBuckets
from telemetry_client.collector._routes_read import (
    HEALTH_PATH,
    METRICS_PATH,
    SESSIONS_PATH,
    read_router,
)
from telemetry_client.collector._routes_write import ATTACHMENTS_PATH, EVENTS_PATH, write_router
from telemetry_client.collector._state import CollectorState
from telemetry_client.collector.store.base import BadCursor, Store, StoreUnavailable
from telemetry_client.collector.viewer import viewer_router

__all__ = ["CollectorState", "create_app"]

_log = logging.getLogger("telemetry_client.collector")

_KILL_SWITCH_PREFIXES = (EVENTS_PATH, ATTACHMENTS_PATH)
_ROUTES = {EVENTS_PATH, ATTACHMENTS_PATH, SESSIONS_PATH, HEALTH_PATH, METRICS_PATH}
RETRY_AFTER_S = 5


def _route_of(path: str) -> str:
    if path in _ROUTES:
        return path
    if path.startswith(ATTACHMENTS_PATH + "/"):
        return ATTACHMENTS_PATH + "/{sha256}"
    return "other"


class _Instrument:
    """Count responses by route and status; add the kill-switch header where it applies."""

    def __init__(self, app: ASGIApp, state: CollectorState) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        kill_switch = path.startswith(_KILL_SWITCH_PREFIXES)
        status = 500  # if the app dies before answering, the server answers 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                seconds = self.state.disable_seconds
                if kill_switch and seconds is not None:
                    headers = [
                        *message.get("headers", ()),
                        (b"x-telemetry-disable", b"%d" % seconds),
                    ]
                    message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            self.state.metrics.inc("requests_total", scope["method"], _route_of(path), str(status))


def _open_store(config: CollectorConfig) -> Store:
    # Imported here: the backends (and their drivers) load only when the app opens one.
    from telemetry_client.collector.store.open import open_store

    return open_store(
        config.database_url,
        config.data_dir,
        pool_size=config.db_pool_size,
        statement_timeout_s=config.db_statement_timeout_s,
    )


def create_app(config: CollectorConfig, store: Store | None = None) -> FastAPI:
    """The collector app for ``config``, on ``store`` (None: the one ``config`` names,
    opened now: ``database_url``, else SQLite in ``data_dir``).

    A store the app opened is closed when its lifespan ends (server shutdown), so serve
    the app once; a store passed in stays the caller's to close. Opening raises
    :class:`~telemetry_client.collector.store.base.StorageError` (bad URL, schema newer
    than this code, ...) or :class:`StoreUnavailable` (database down).
    """
    owns = store is None
    if store is None:
        store = _open_store(config)
    metrics = Metrics()
    state = CollectorState(
        config=config,
        store=store,
        metrics=metrics,
        auth=TokenAuth([*config.tokens, *config.principals], required=not config.allow_no_auth),
        buckets=(
            TokenBuckets(config.rate_limit_rps, config.rate_limit_burst)
            if config.rate_limit_rps > 0
            else None
        ),
        disable_seconds=config.disable_seconds,
        owns_store=owns,
    )

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        try:
            await import_legacy(state)
            async with anyio.create_task_group() as tasks:
                if config.retention_days > 0:
                    tasks.start_soon(retention_loop, state)
                yield
                tasks.cancel_scope.cancel()
        finally:
            state.close_store()

    app = FastAPI(
        title="telemetry-collector",
        version=__version__,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.state.collector = state

    async def on_rejected(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, Rejected)
        metrics.inc("rejections_total", exc.reason)
        _log.debug(
            "%s %s refused: %d %s", request.method, request.url.path, exc.status, exc.message
        )
        return json_response({"detail": exc.message}, status=exc.status, headers=exc.headers)

    async def on_unavailable(request: Request, exc: Exception) -> Response:
        metrics.inc("rejections_total", "storage_unavailable")
        # The stores redact their URLs; scrub() makes sure of it.
        why = scrub(str(exc), config.database_url)
        _log.warning("%s %s: storage unavailable: %s", request.method, request.url.path, why)
        return json_response(
            {"detail": "storage unavailable; retry later"},
            status=503,
            headers={"Retry-After": str(RETRY_AFTER_S)},
        )

    async def on_bad_cursor(request: Request, exc: Exception) -> Response:
        metrics.inc("rejections_total", "bad_cursor")
        return json_response({"detail": "cursor is not one this collector issued"}, status=400)

    app.add_exception_handler(Rejected, on_rejected)
    app.add_exception_handler(StoreUnavailable, on_unavailable)
    app.add_exception_handler(BadCursor, on_bad_cursor)
    app.add_middleware(_Instrument, state=state)
    # Write routes first: their HEAD of an attachment (role ingest) must match before the
    # read router's GET of the same path, which Starlette would also answer for HEAD.
    app.include_router(write_router(state))
    app.include_router(read_router(state))
    app.include_router(viewer_router(state))  # the session viewer under /ui (docs/viewer.md)
    return app
