"""The proxy's ASGI application: routes, the guard, and the client going away.

A plain ASGI callable (no framework: every microsecond here is added latency):

- ``GET /health``: ``{"status": "ok"}``; ``GET /metrics``: Prometheus text;
- ``/v1/<anything>``: key check (401), rate limit (429 + ``Retry-After``), body limit
  (413, from ``Content-Length`` or while reading), then
  :meth:`~telemetry_client.proxy.forward.Forwarder.forward`;
- anything else: 404. The proxy's own errors use OpenAI's error shape.

While a request is forwarded, one task waits for the client's ``http.disconnect``; if it
comes first, the request's task is cancelled, which closes the upstream request (httpx
closes the stream) and records the call as ``closed_early``/``cancelled`` with the usage
that had arrived. The lifespan shutdown closes the upstream client.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import httpx

from telemetry_client.client import TelemetryClient
from telemetry_client.proxy.config import ProxyConfig
from telemetry_client.proxy.forward import Exchange, Forwarder
from telemetry_client.proxy.guard import (
    RateLimiter,
    client_key,
    error_body,
    key_allowed,
    retry_after,
)
from telemetry_client.proxy.metrics import ProxyMetrics
from telemetry_client.proxy.record import Recorder

__all__ = ["ProxyApp"]

Scope = dict[str, Any]
Receive = Any
Send = Any
_CLIENT_CLOSED = 499  # nginx's status for "the client closed the request" (metrics only)


class _TooLarge(Exception):
    pass


class _Gone(Exception):
    pass


class ProxyApp:
    """The recording proxy as an ASGI app; ``telemetry`` receives the ``llm_call`` events.

    The caller owns ``telemetry`` (``None``: nothing is recorded) and closes it after the
    server stopped; the app closes its upstream client at lifespan shutdown (or
    :meth:`aclose`).
    """

    def __init__(self, config: ProxyConfig, telemetry: TelemetryClient | None) -> None:
        self.config = config
        self.metrics = ProxyMetrics()
        self.limiter = RateLimiter(config.rate_limit) if config.rate_limit else None
        upstream = httpx.URL(config.upstream)
        self.recorder = Recorder(
            telemetry,
            self.metrics,
            host=upstream.host,
            port=upstream.port,
            provider=config.provider,
            capture_content=config.capture_content,
        )
        self.forwarder = Forwarder(config, self.recorder, self.metrics)

    async def aclose(self) -> None:
        await self.forwarder.aclose()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            path: str = scope["path"]
            if path.startswith("/v1/"):
                await self._proxied(scope, receive, send)
            elif path == "/health":
                await _reply(send, 200, b'{"status":"ok"}')
            elif path == "/metrics":
                text = self.metrics.render().encode()
                await _reply(send, 200, text, b"text/plain; version=0.0.4; charset=utf-8")
            else:
                await _error(send, 404, "not found: the API is under /v1/", "not_found")
        elif kind == "lifespan":
            await self._lifespan(receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _proxied(self, scope: Scope, receive: Receive, send: Send) -> None:
        metrics = self.metrics
        metrics.in_flight += 1
        ex = Exchange()
        try:
            await self._guarded(scope, receive, send, ex)
        finally:
            metrics.in_flight -= 1
            metrics.request_done(ex.status, ex.recording.model if ex.recording else None)

    async def _guarded(self, scope: Scope, receive: Receive, send: Send, ex: Exchange) -> None:
        config = self.config
        headers: list[tuple[bytes, bytes]] = scope["headers"]
        key = client_key(headers) if config.api_keys or self.limiter is not None else None
        if config.api_keys and not key_allowed(key, config.api_keys):
            ex.status = 401
            message = "missing API key" if key is None else "invalid API key"
            await _error(send, 401, message, "invalid_api_key", "invalid_request_error")
            return
        if self.limiter is not None:
            client = scope.get("client")
            who = key if config.api_keys and key else f"addr:{client[0] if client else '?'}"
            wait = self.limiter.check(who)
            if wait > 0:
                ex.status = 429
                extra = [(b"retry-after", retry_after(wait).encode())]
                message = f"rate limit of {config.rate_limit} requests per minute reached"
                await _error(send, 429, message, "rate_limit_exceeded", "requests", extra)
                return
        try:
            body = await _read_body(scope, receive, config.max_body_bytes)
        except _TooLarge:
            ex.status = 413
            message = f"request body over the proxy's limit of {config.max_body_bytes} bytes"
            await _error(send, 413, message, "request_too_large", "invalid_request_error")
            return
        except _Gone:
            ex.status = _CLIENT_CLOSED
            return
        await self._forward_watching(scope, body, receive, send, ex)

    async def _forward_watching(
        self, scope: Scope, body: bytes, receive: Receive, send: Send, ex: Exchange
    ) -> None:
        """Forward, cancelling the forwarding when the client disconnects first."""
        task = asyncio.current_task()
        state = {"gone": False, "done": False}

        def disconnected(fut: asyncio.Future[Any]) -> None:
            if fut.cancelled() or state["done"] or fut.exception() is not None:
                return
            if fut.result().get("type") == "http.disconnect" and task is not None:
                state["gone"] = True
                task.cancel()

        watch = asyncio.ensure_future(receive())
        watch.add_done_callback(disconnected)
        try:
            await self.forwarder.forward(scope, body, send, ex)
        except asyncio.CancelledError:
            if not state["gone"]:
                raise  # the server is stopping: not ours to swallow
            ex.status = _CLIENT_CLOSED
            uncancel = getattr(task, "uncancel", None)
            if uncancel is not None:
                uncancel()
        finally:
            state["done"] = True
            watch.cancel()


async def _read_body(scope: Scope, receive: Receive, limit: int) -> bytes:
    for name, value in scope["headers"]:
        if name == b"content-length":
            with contextlib.suppress(ValueError):
                if int(value) > limit:
                    raise _TooLarge
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _Gone
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise _TooLarge
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def _reply(
    send: Send,
    status: int,
    body: bytes,
    content_type: bytes = b"application/json",
    extra: list[tuple[bytes, bytes]] | None = None,
) -> None:
    headers = [(b"content-type", content_type), *(extra or ())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _error(
    send: Send,
    status: int,
    message: str,
    code: str,
    kind: str = "proxy_error",
    extra: list[tuple[bytes, bytes]] | None = None,
) -> None:
    """An error the proxy makes itself, in OpenAI's shape."""
    await _reply(send, status, error_body(message, kind, code), extra=extra)
