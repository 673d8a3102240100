"""The reference collector's HTTP API (docs/protocol.md, "Collector API"), as a FastAPI app.

Every endpoint but health checks the bearer token, then the token's rate limit, before
reading a byte of the body. Bodies are read with a size cap on the loop; decompression,
validation and disk work run on worker threads (bounded by a capacity limiter) so a big
batch never stalls other requests. Refusals are :class:`Rejected` exceptions turned into
``{"detail": ...}`` responses in one handler, which also counts them by reason.

One pure-ASGI middleware counts every response by route template and status, and adds
``X-Telemetry-Disable`` to every response of the events and attachments endpoints while
the kill switch is on (``CollectorState.disable_seconds``, changeable at runtime).
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

import anyio
import anyio.to_thread
import orjson
from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import FileResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from telemetry_client._version import __version__
from telemetry_client.collector._auth import TokenAuth
from telemetry_client.collector._config import CollectorConfig
from telemetry_client.collector._decode import (
    content_kind,
    decode_events,
    encoding_of,
    iter_decompressed,
    read_body,
)
from telemetry_client.collector._errors import Rejected
from telemetry_client.collector._metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from telemetry_client.collector._metrics import Metrics
from telemetry_client.collector._ratelimit import TokenBuckets
from telemetry_client.collector._time import parse_rfc3339
from telemetry_client.collector.store.files import AppendResult, EventQuery, QueryResult, Storage

__all__ = ["CollectorState", "create_app"]

_log = logging.getLogger("telemetry_client.collector")
T = TypeVar("T")

EVENTS_PATH = "/api/v1/events"
ATTACHMENTS_PATH = "/api/v1/attachments"
HEALTH_PATH = "/api/v1/health"
METRICS_PATH = "/metrics"
_KILL_SWITCH_PREFIXES = (EVENTS_PATH, ATTACHMENTS_PATH)
_ROUTES = {EVENTS_PATH, ATTACHMENTS_PATH, HEALTH_PATH, METRICS_PATH}

DEFAULT_LIMIT = 1000
MAX_LIMIT = 10000
# Concurrent worker-thread jobs per lane; "write" (decode + store) also bounds memory to a
# few request bodies' worth.
_WORKERS = {"write": 8, "read": 4}
_SHA256_RE = re.compile(r"[0-9a-fA-F]{64}")
_KEY_RE = re.compile(r"[\x21-\x7e]{1,256}")
_CONTENT_TYPE_RE = re.compile(r"[\x20-\x7e]{1,255}")


@dataclass(eq=False)
class CollectorState:
    """What the routes share (``app.state.collector``).

    Setting ``disable_seconds`` at runtime turns the kill switch on (or off with None).
    """

    config: CollectorConfig
    storage: Storage
    metrics: Metrics
    auth: TokenAuth
    buckets: TokenBuckets | None
    disable_seconds: int | None
    _limiters: dict[str, anyio.CapacityLimiter] = field(default_factory=dict, repr=False)

    async def run_sync(self, func: Callable[..., T], *args: Any, lane: str = "write") -> T:
        """Run ``func(*args)`` on a worker thread, at most ``_WORKERS[lane]`` at once.

        Reads (queries, attachment lookups) get their own lane so they never queue behind
        batches waiting for the store's lock and fsync.
        """
        limiter = self._limiters.get(lane)
        if limiter is None:  # created lazily: it belongs to the serving event loop
            limiter = self._limiters[lane] = anyio.CapacityLimiter(_WORKERS[lane])
        return await anyio.to_thread.run_sync(func, *args, limiter=limiter)


def _json(payload: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    return Response(orjson.dumps(payload), status, headers, media_type="application/json")


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


def _admit(state: CollectorState, request: Request) -> str:
    """Authenticate (401) and rate-limit (429) a request; returns its principal id."""
    principal = state.auth.principal(request.headers.get("authorization"))
    if principal is None:
        raise Rejected(
            401,
            "unauthorized",
            "missing or invalid bearer token",
            headers={"WWW-Authenticate": 'Bearer realm="telemetry-collector"'},
        )
    if state.buckets is not None:
        wait = state.buckets.acquire(principal)
        if wait > 0:
            raise Rejected(
                429,
                "rate_limited",
                "rate limit exceeded for this token; retry later",
                headers={"Retry-After": TokenBuckets.retry_after(wait)},
            )
    return principal


def _idempotency_key(value: str | None) -> str | None:
    if value is None:
        return None
    if not _KEY_RE.fullmatch(value):
        raise Rejected(400, "bad_header", "Idempotency-Key must be 1-256 visible ASCII characters")
    return value


def _sha256(value: str | None, what: str) -> str:
    if value is None:
        raise Rejected(400, "bad_header", f"{what} is missing")
    if not _SHA256_RE.fullmatch(value):
        raise Rejected(400, "bad_header", f"{what} must be 64 hex digits (sha256 of the raw bytes)")
    return value.lower()


def _sha(path_value: str) -> str:
    return _sha256(path_value, "the sha256 in the path")


def _query_of(params: Mapping[str, str]) -> EventQuery:
    def integer(name: str, default: int, high: int | None) -> int:
        raw = params.get(name)
        if raw is None or raw == "":
            return default
        try:
            value = int(raw)
        except ValueError:
            value = -1
        if value < 0 or (high is not None and value > high):
            bound = f"between 0 and {high}" if high is not None else "0 or more"
            raise Rejected(400, "bad_query", f"{name} must be an integer {bound}")
        return value

    since_us = None
    if params.get("since"):
        instant = parse_rfc3339(params["since"])
        if instant is None:
            raise Rejected(400, "bad_query", "since must be an RFC 3339 timestamp with offset")
        since_us = instant.epoch_us
    return EventQuery(
        user_id=params.get("user_id") or None,
        session_id=params.get("session_id") or None,
        type=params.get("type") or None,
        since_us=since_us,
        limit=integer("limit", DEFAULT_LIMIT, MAX_LIMIT),
        offset=integer("offset", 0, None),
    )


def _storage_unavailable(what: str) -> Rejected:
    _log.exception("storage error while %s", what)
    return Rejected(503, "storage_error", "storage unavailable; retry later")


def _router(state: CollectorState) -> APIRouter:
    config = state.config
    storage = state.storage
    metrics = state.metrics
    router = APIRouter()

    def ingest(body: bytes, encoding: str, kind: str, key: str | None) -> AppendResult:
        events = decode_events(
            body,
            encoding=encoding,
            kind=kind,
            max_decompressed=config.max_decompressed_bytes,
            max_event=config.max_event_bytes,
        )
        return storage.events.append(events, key)

    def store_attachment(
        body: bytes, encoding: str, sha256: str, content_type: str
    ) -> tuple[bool, int]:
        with storage.attachments.stage() as staging:
            for chunk in iter_decompressed(body, encoding, config.max_attachment_bytes):
                staging.write(chunk)
            actual = staging.hexdigest()
            if actual != sha256:
                raise Rejected(
                    400,
                    "sha256_mismatch",
                    f"X-Attachment-SHA256 does not match the body (its sha256 is {actual})",
                )
            return staging.commit(sha256, content_type), staging.size

    @router.post(EVENTS_PATH)
    async def post_events(request: Request) -> Response:
        """Store one batch (NDJSON or JSON array; zstd, gzip or identity), once per key."""
        _admit(state, request)
        headers = request.headers
        key = _idempotency_key(headers.get("idempotency-key"))
        encoding = encoding_of(headers.get("content-encoding"))
        kind = content_kind(headers.get("content-type"))
        body = await read_body(
            request.stream(), headers.get("content-length"), config.max_body_bytes
        )
        if key is not None and storage.events.has_key(key):
            result = AppendResult(0, duplicate=True)  # a retry: skip decoding entirely
        else:
            try:
                result = await state.run_sync(ingest, body, encoding, kind, key)
            except OSError:
                raise _storage_unavailable("storing a batch") from None
        if result.duplicate:
            metrics.inc("duplicates_total", "events")
        else:
            metrics.inc("events_stored_total", by=result.accepted)
            metrics.inc("stored_bytes_total", "events", by=result.bytes)
        return _json({"accepted": result.accepted, "duplicate": result.duplicate})

    @router.get(EVENTS_PATH)
    async def get_events(request: Request) -> Response:
        """Stored envelopes matching the filters, oldest first, with the total before paging."""
        _admit(state, request)
        query = _query_of(request.query_params)
        try:
            result: QueryResult = await state.run_sync(storage.events.query, query, lane="read")
        except OSError:
            raise _storage_unavailable("reading events") from None
        return _json({"events": result.events, "total": result.total})

    @router.options(EVENTS_PATH)
    async def probe_events(request: Request) -> Response:
        """A probe of the events endpoint (``telemetry-client status``): 204 and ``Allow``.

        Checks the token like every endpoint but health (401), so the probe tells a wrong
        token from a wrong path (404); it reads no body and stores nothing.
        """
        _admit(state, request)
        return Response(status_code=204, headers={"Allow": "GET, OPTIONS, POST"})

    @router.post(ATTACHMENTS_PATH)
    async def post_attachment(request: Request) -> Response:
        """Store one blob under the sha256 of its raw bytes (verified), once."""
        _admit(state, request)
        headers = request.headers
        sha256 = _sha256(headers.get("x-attachment-sha256"), "X-Attachment-SHA256")
        content_type = headers.get("content-type") or "application/octet-stream"
        if not _CONTENT_TYPE_RE.fullmatch(content_type):
            raise Rejected(
                400, "bad_header", "Content-Type must be 1-255 printable ASCII characters"
            )
        encoding = encoding_of(headers.get("content-encoding"))
        body = await read_body(
            request.stream(), headers.get("content-length"), config.max_attachment_body_bytes
        )
        try:
            stored, size = await state.run_sync(
                store_attachment, body, encoding, sha256, content_type
            )
        except OSError:
            raise _storage_unavailable("storing an attachment") from None
        if stored:
            metrics.inc("attachments_stored_total")
            metrics.inc("stored_bytes_total", "attachments", by=size)
        else:
            metrics.inc("duplicates_total", "attachments")
        return _json({"sha256": sha256, "size": size, "duplicate": not stored})

    @router.head(ATTACHMENTS_PATH + "/{sha256}")
    async def head_attachment(request: Request, sha256: str) -> Response:
        """200 with the size and type when the blob is stored, else 404; no body."""
        _admit(state, request)
        info = await state.run_sync(storage.attachments.info, _sha(sha256), lane="read")
        if info is None:
            return Response(status_code=404)
        return Response(
            status_code=200,
            headers={"Content-Length": str(info.size), "Content-Type": info.content_type},
        )

    @router.get(ATTACHMENTS_PATH + "/{sha256}")
    async def get_attachment(request: Request, sha256: str) -> Response:
        """The raw bytes of a stored blob, with the content type it was uploaded with."""
        _admit(state, request)
        info = await state.run_sync(storage.attachments.info, _sha(sha256), lane="read")
        if info is None:
            return _json({"detail": "no attachment with this sha256"}, status=404)
        # As a header, not media_type: Starlette would append "; charset=utf-8" to text/*.
        return FileResponse(info.path, headers={"Content-Type": info.content_type})

    @router.get(HEALTH_PATH)
    async def health() -> Response:
        """Liveness, without auth: 200 while the collector is serving."""
        return _json({"status": "ok"})

    @router.get(METRICS_PATH)
    async def get_metrics(request: Request) -> Response:
        """Prometheus text: requests, events/bytes stored, duplicates, rejections, attachments."""
        _admit(state, request)
        return Response(metrics.render(), media_type=METRICS_CONTENT_TYPE)

    return router


def create_app(config: CollectorConfig) -> FastAPI:
    """The collector app for ``config``; opens (and recovers) the data directory now.

    The data directory stays locked for this app until its lifespan ends (server
    shutdown), so serve the app once; a second app on the same directory raises
    :class:`~telemetry_client.collector.store.files.StorageError`.
    """
    storage = Storage.open(config.data_dir)
    metrics = Metrics()
    state = CollectorState(
        config=config,
        storage=storage,
        metrics=metrics,
        auth=TokenAuth(config.tokens, required=not config.allow_no_auth),
        buckets=(
            TokenBuckets(config.rate_limit_rps, config.rate_limit_burst)
            if config.rate_limit_rps > 0
            else None
        ),
        disable_seconds=config.disable_seconds,
    )

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        try:
            yield
        finally:
            storage.close()

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
        return _json({"detail": exc.message}, status=exc.status, headers=exc.headers)

    app.add_exception_handler(Rejected, on_rejected)
    app.add_middleware(_Instrument, state=state)
    app.include_router(_router(state))
    return app
