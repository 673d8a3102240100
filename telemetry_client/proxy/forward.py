"""Forwarding one request upstream and relaying its answer as it arrives.

One pooled ``httpx.AsyncClient`` per proxy (keep-alive connections to the upstream, no
default headers of its own, no environment proxies or netrc). A request to ``/v1/<path>``
goes to ``<upstream>/<path>`` with its method, query (raw), body and headers minus the
hop-by-hop ones (``Host`` and ``Content-Length`` are the upstream request's own). The
client's key goes along unless ``upstream_api_key`` replaces it (in the header the client
used: ``x-api-key`` for Anthropic-style clients, else ``Authorization: Bearer``). A
client that sent no ``Accept-Encoding`` asks the upstream for ``identity``, as it would
have by itself.

The answer is relayed as httpx reads it from the socket (``aiter_raw``: still encoded,
never buffered), status and headers (minus hop-by-hop) unchanged, so each SSE event
reaches the client as soon as the upstream sent it. Usage on OpenAI streams: see
:mod:`telemetry_client.proxy.stream_usage`; when the proxy added the option and the
upstream answers 400/422, the original request is sent once more as the client made it;
if that succeeds, the upstream is remembered as one that rejects the option (the
option is not added for it again). The original answer is what the client gets.

Failures before the response head are the proxy's own answers: 504 on a timeout, 502
when the upstream cannot be reached. A failure mid-body aborts the client's connection
(a truncated stream must not look complete) after the call is recorded.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

import httpx

from telemetry_client.proxy.config import ProxyConfig
from telemetry_client.proxy.guard import HOP_BY_HOP, error_body
from telemetry_client.proxy.metrics import ProxyMetrics
from telemetry_client.proxy.record import Recorder, Recording
from telemetry_client.proxy.stream_usage import UsageStripper, add_usage_option, wants_usage_option

__all__ = ["Exchange", "Forwarder", "UpstreamBroken"]

Send = Any  # the ASGI send callable
_RETRY_STATUSES = (400, 422)
_JSON = [(b"content-type", b"application/json")]


class UpstreamBroken(Exception):
    """The upstream failed after its response head: the client's response is aborted."""


class Exchange:
    """What one request came to: the status sent, the recording (for the metrics)."""

    __slots__ = ("recording", "status")

    def __init__(self) -> None:
        self.status = 0
        self.recording: Recording | None = None


def _connection_tokens(headers: Iterable[tuple[bytes, bytes]]) -> set[bytes]:
    """Header names a ``Connection`` header lists (hop-by-hop as well)."""
    names: set[bytes] = set()
    for name, value in headers:
        if name.lower() == b"connection":
            names.update(t.strip().lower() for t in value.split(b",") if t.strip())
    return names


class Forwarder:
    """The upstream client and the forwarding of requests (see the module docstring)."""

    def __init__(self, config: ProxyConfig, recorder: Recorder, metrics: ProxyMetrics) -> None:
        self.config = config
        self.recorder = recorder
        self.metrics = metrics
        self.base = config.upstream.encode()
        self.base_path = httpx.URL(config.upstream).path.rstrip("/")
        self._upstream_key = config.upstream_api_key
        self.rejects_usage: set[str] = set()  # upstreams that refused stream_options
        self.client = httpx.AsyncClient(
            timeout=httpx.Timeout(config.timeout),
            limits=httpx.Limits(
                max_connections=None, max_keepalive_connections=256, keepalive_expiry=60.0
            ),
            trust_env=False,
            follow_redirects=False,
        )
        for name in list(self.client.headers):  # no User-Agent etc. of our own
            del self.client.headers[name]

    async def aclose(self) -> None:
        await self.client.aclose()

    def _headers(
        self, raw: list[tuple[bytes, bytes]], *, identity: bool
    ) -> list[tuple[bytes, bytes]]:
        drop = _connection_tokens(raw)
        out: list[tuple[bytes, bytes]] = []
        key_header = b"authorization"
        encoding = False
        for name, value in raw:
            if name in HOP_BY_HOP or name in drop or name in (b"host", b"content-length"):
                continue
            if name == b"accept-encoding":
                if identity:
                    continue
                encoding = True
            elif self._upstream_key is not None and name in (b"authorization", b"x-api-key"):
                if name == b"x-api-key":
                    key_header = name
                continue
            out.append((name, value))
        if self._upstream_key is not None:
            key = self._upstream_key.encode()
            out.append((key_header, key if key_header == b"x-api-key" else b"Bearer " + key))
        if not encoding:
            out.append((b"accept-encoding", b"identity"))
        return out

    async def forward(self, scope: dict[str, Any], body: bytes, send: Send, ex: Exchange) -> None:
        """Forward the request, relay the answer (or the proxy's 502/504) through ``send``."""
        method: str = scope["method"]
        raw_path: bytes = scope.get("raw_path") or scope["path"].encode()
        rest = raw_path[3:]  # after "/v1"
        query: bytes = scope.get("query_string") or b""
        url = self.base + rest + (b"?" + query if query else b"")
        path = self.base_path + scope["path"][3:]
        recording = ex.recording = self.recorder.begin(method, path, body)
        call = recording.call if recording is not None else None
        headers: list[tuple[bytes, bytes]] = scope["headers"]
        sent_body = body
        if (
            self.config.stream_usage
            and self.config.upstream not in self.rejects_usage
            and wants_usage_option(method, path, body)
        ):
            sent_body = add_usage_option(body) or body
        added = sent_body is not body
        t0 = time.perf_counter()
        try:
            response = await self._send(method, url, headers, sent_body, identity=added)
            if added and response.status_code in _RETRY_STATUSES:
                await response.aread()
                await response.aclose()
                added = False
                response = await self._send(method, url, headers, body, identity=False)
                if response.status_code < 400:
                    self.rejects_usage.add(self.config.upstream)
                    self.metrics.usage_option["rejected"] += 1
        except httpx.TimeoutException as exc:
            if call is not None:
                call.fail(exc)
            self.metrics.upstream_errors["timeout"] += 1
            ex.status = 504
            await _answer(send, 504, "the upstream did not answer in time", "timeout")
            return
        except httpx.TransportError as exc:
            if call is not None:
                call.fail(exc)
            self.metrics.upstream_errors["unreachable"] += 1
            ex.status = 502
            await _answer(send, 502, f"cannot reach the upstream ({type(exc).__name__})", "bad")
            return
        except BaseException as exc:  # cancelled (the client went away) or a bug
            if call is not None:
                call.fail(exc)
            raise
        self.metrics.upstream_latency.observe(time.perf_counter() - t0)
        if added:
            self.metrics.usage_option["added"] += 1
        await self._relay(response, send, call, UsageStripper() if added else None, ex)

    async def _send(
        self,
        method: str,
        url: bytes,
        headers: list[tuple[bytes, bytes]],
        body: bytes,
        *,
        identity: bool,
    ) -> httpx.Response:
        request = self.client.build_request(
            method,
            url.decode("latin-1"),
            headers=self._headers(headers, identity=identity),
            content=body if body or method not in ("GET", "HEAD") else None,
        )
        return await self.client.send(request, stream=True)

    async def _relay(
        self,
        response: httpx.Response,
        send: Send,
        call: Any,
        stripper: UsageStripper | None,
        ex: Exchange,
    ) -> None:
        head = response.headers
        if call is not None:
            call.on_response(
                response.status_code,
                head.get("content-type", ""),
                head.get("content-encoding", ""),
            )
        drop = _connection_tokens(head.raw)
        headers = []
        for raw_name, value in head.raw:
            name = raw_name.lower()
            if name in HOP_BY_HOP or name in drop:
                continue
            if stripper is not None and name == b"content-length":
                continue
            headers.append((name, value))
        ex.status = response.status_code
        try:
            await send(
                {"type": "http.response.start", "status": response.status_code, "headers": headers}
            )
            left = _content_length(head) if call is not None else None
            async for chunk in response.aiter_raw():
                if call is not None:
                    call.feed(chunk)
                    if left is not None:
                        left -= len(chunk)
                    if call.complete or (left is not None and left <= 0):
                        call.finish()  # before the send that completes the client's answer
                if stripper is not None and not (chunk := stripper.feed(chunk)):
                    continue
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            tail = stripper.close() if stripper is not None else b""
        except httpx.HTTPError as exc:
            if call is not None:
                call.fail(exc)
            self.metrics.upstream_errors["stream"] += 1
            raise UpstreamBroken(type(exc).__name__) from None
        except BaseException as exc:
            if call is not None:
                call.fail(exc)
            raise
        finally:
            await response.aclose()
        if call is not None:
            call.finish()  # before the last send: a client that has the whole answer has its event
        await send({"type": "http.response.body", "body": tail, "more_body": False})


def _content_length(head: httpx.Headers) -> int | None:
    value = head.get("content-length", "")
    return int(value) if value.isdigit() else None


async def _answer(send: Send, status: int, message: str, kind: str) -> None:
    """One of the proxy's own answers, in OpenAI's error shape."""
    code = {502: "upstream_unreachable", 504: "upstream_timeout"}.get(status, kind)
    body = error_body(message, "proxy_error", code)
    await send({"type": "http.response.start", "status": status, "headers": _JSON})
    await send({"type": "http.response.body", "body": body})
