"""A loopback HTTP load balancer that injects faults between clients and several upstreams.

``_netfaults.FaultProxy`` works on TCP connections to one server; this one understands
HTTP/1.1 requests, so it can route each request (not each connection) to one of several
upstreams (collector replicas) and fail it in ways that only make sense per request:

- ``"pass"``: forward the request, relay the answer;
- ``"drop_response"``: forward the request, read the whole answer (the upstream did the
  work, e.g. stored the batch), then close the client's connection without a byte of it:
  the client sees a network error and must retry with the same ``Idempotency-Key``.

A *router* decides, per request, the upstream and the fault; it sees the attempts already
made with the same ``Idempotency-Key`` (the default :class:`FailoverRouter` sends a retry
to another upstream than the last attempt's). An upstream that refuses the connection
(a killed replica) is marked down and the request goes to the next live one (nothing was
sent, so this is safe, as ``proxy_next_upstream error`` in nginx); an upstream whose
connection breaks after the request was sent (killed mid-request) makes the proxy close
the client's connection without an answer (``upstream_failed``): the client cannot know
whether the request took effect, exactly the case idempotency keys exist for.

Every request is recorded as an :class:`Exchange` (upstream, attempt, answer status, the
``"duplicate"`` flag of a JSON answer, the request body) *before* the client hears
anything, so a retry always sees the previous attempt. One request per client connection
(answers carry ``Connection: close``); request bodies need ``Content-Length`` (chunked
requests are answered 501). Loopback only; threads, no asyncio.
"""

from __future__ import annotations

import contextlib
import json
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from _listener import ThreadedListener

__all__ = ["EVENTS_PATH", "Exchange", "FailoverRouter", "HttpFaultProxy", "Request", "Router"]

EVENTS_PATH = "/api/v1/events"
HEAD_LIMIT = 64 * 1024
IO_TIMEOUT_S = 120.0  # a hang bound for one request, never a synchronisation
_HOP_HEADERS = {"connection", "keep-alive", "proxy-connection"}


@dataclass(frozen=True)
class Request:
    """One client request as read by the proxy (header names lower-cased)."""

    method: str
    target: str
    headers: dict[str, str]
    body: bytes

    @property
    def path(self) -> str:
        return self.target.partition("?")[0]

    @property
    def key(self) -> str | None:
        return self.headers.get("idempotency-key")


@dataclass
class Exchange:
    """What the proxy did with one request. ``outcome``: ``answered`` (relayed),
    ``dropped`` (upstream answered, client was not told), ``upstream_failed`` (the
    upstream connection broke before a full answer), ``no_upstream`` (none was live)."""

    request: Request
    attempt: int  # 1 for the first request with this key (or without a key)
    upstream: int | None = None
    outcome: str = "pending"
    status: int | None = None
    duplicate: bool | None = None  # the answer's JSON "duplicate" field, when it has one


# (request, earlier exchanges with the same key, live upstream indexes) -> (upstream, fault)
Router = Callable[[Request, Sequence[Exchange], Sequence[int]], tuple[int, str]]


class FailoverRouter:
    """First attempts round-robin over the live upstreams (``round_robin=False``: to the
    first live one, a primary with standbys); a retry (an ``Idempotency-Key`` seen before)
    goes to the live upstream after the one the last attempt used. Every ``drop_every``-th
    first attempt of ``POST /api/v1/events`` gets ``"drop_response"`` (0: never)."""

    def __init__(self, drop_every: int = 0, *, round_robin: bool = True) -> None:
        self.drop_every = drop_every
        self.round_robin = round_robin
        self._next = 0
        self._firsts = 0

    def __call__(
        self, request: Request, history: Sequence[Exchange], live: Sequence[int]
    ) -> tuple[int, str]:
        if history and history[-1].upstream is not None:
            last = history[-1].upstream
            after = [u for u in live if u > last] + [u for u in live if u <= last]
            return after[0], "pass"
        upstream = live[self._next % len(live)] if self.round_robin else live[0]
        self._next += 1
        fault = "pass"
        if request.method == "POST" and request.path == EVENTS_PATH and not history:
            self._firsts += 1
            if self.drop_every and self._firsts % self.drop_every == 0:
                fault = "drop_response"
        return upstream, fault


@dataclass
class _Answer:
    status: int | None
    raw: bytes  # the whole answer as the upstream sent it
    duplicate: bool | None = None
    head_end: int = field(default=0)


class HttpFaultProxy(ThreadedListener):
    """Listens on 127.0.0.1 (``url``, ``events_url``); ``close()`` (or ``with``) stops it."""

    def __init__(self, upstreams: Sequence[str], router: Router | None = None) -> None:
        super().__init__()
        self.upstreams = [_host_port(u) for u in upstreams]
        self.router: Router = router or FailoverRouter()
        self.down: set[int] = set()
        self.refused = 0  # connections an upstream refused (then marked down)
        self._exchanges: list[Exchange] = []
        self.events_url = self.url + EVENTS_PATH
        self._start()

    # -- what happened --------------------------------------------------------------------

    def exchanges(self) -> list[Exchange]:
        """A snapshot of every finished request, in the order they were decided."""
        with self._lock:
            return [e for e in self._exchanges if e.outcome != "pending"]

    def count(self, outcome: str) -> int:
        return sum(1 for e in self.exchanges() if e.outcome == outcome)

    # -- internals ------------------------------------------------------------------------

    def _on_accept(self, conn: socket.socket) -> None:
        self._spawn(self._serve, conn)

    def _serve(self, conn: socket.socket) -> None:
        with self._tracked(conn):
            conn.settimeout(IO_TIMEOUT_S)
            try:
                request = _read_request(conn)
            except (OSError, ValueError):
                return
            if request is None:
                with contextlib.suppress(OSError):
                    conn.sendall(b"HTTP/1.1 501 Not Implemented\r\nContent-Length: 0\r\n\r\n")
                return
            exchange, fault = self._route(request)
            answer = self._forward(exchange)
            with self._lock:
                if answer is None:
                    if exchange.outcome == "pending":
                        exchange.outcome = "upstream_failed"
                else:
                    exchange.status, exchange.duplicate = answer.status, answer.duplicate
                    exchange.outcome = "dropped" if fault == "drop_response" else "answered"
            if answer is not None and fault != "drop_response":
                with contextlib.suppress(OSError):
                    conn.sendall(_close_after(answer))
                    conn.shutdown(socket.SHUT_WR)

    def _route(self, request: Request) -> tuple[Exchange, str]:
        with self._lock:
            key = request.key
            history = [e for e in self._exchanges if key is not None and e.request.key == key]
            exchange = Exchange(request, attempt=len(history) + 1)
            self._exchanges.append(exchange)
            live = [i for i in range(len(self.upstreams)) if i not in self.down]
            if not live:
                exchange.outcome = "no_upstream"
                return exchange, "pass"
            exchange.upstream, fault = self.router(request, history, live)
            return exchange, fault

    def _forward(self, exchange: Exchange) -> _Answer | None:
        """Send the request to its upstream (failing over while connections are refused);
        the whole answer, or None when no upstream took it or the connection broke."""
        while exchange.upstream is not None:
            try:
                upstream = socket.create_connection(self.upstreams[exchange.upstream], timeout=5)
            except OSError:
                with self._lock:
                    self.refused += 1
                    self.down.add(exchange.upstream)
                    live = [i for i in range(len(self.upstreams)) if i not in self.down]
                    exchange.upstream = live[0] if live else None
                    if not live:
                        exchange.outcome = "no_upstream"
                continue
            with self._tracked(upstream):
                upstream.settimeout(IO_TIMEOUT_S)
                try:
                    upstream.sendall(_upstream_request(exchange.request))
                    return _read_answer(upstream)
                except (OSError, ValueError):
                    return None
        return None


def _host_port(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    if parts.hostname is None or parts.port is None:
        raise ValueError(f"upstream {url!r} needs a host and a port")
    return parts.hostname, parts.port


def _split_head(head: bytes) -> tuple[str, list[tuple[str, str]]]:
    lines = head.decode("latin-1").split("\r\n")
    headers = []
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers.append((name.strip(), value.strip()))
    return lines[0], headers


def _read_request(conn: socket.socket) -> Request | None:
    """The next request (None for a chunked one); ValueError when the client went away."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        if len(buf) > HEAD_LIMIT:
            raise ValueError("request head too long")
        chunk = conn.recv(65536)
        if not chunk:
            raise ValueError("client closed before a whole request head")
        buf += chunk
    head, _, body = buf.partition(b"\r\n\r\n")
    start, pairs = _split_head(head)
    headers = {name.lower(): value for name, value in pairs}
    if "chunked" in headers.get("transfer-encoding", "").lower():
        return None
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = conn.recv(min(1 << 20, length - len(body)))
        if not chunk:
            raise ValueError("client closed mid-body")
        body += chunk
    method, target, _version = start.split(" ", 2)
    return Request(method, target, headers, body[:length])


def _upstream_request(request: Request) -> bytes:
    lines = [f"{request.method} {request.target} HTTP/1.1"]
    lines += [f"{k}: {v}" for k, v in request.headers.items() if k not in _HOP_HEADERS]
    lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + request.body


def _read_answer(upstream: socket.socket) -> _Answer | None:
    """Read until the upstream closes (it was asked to); None without a whole answer."""
    chunks = []
    while True:
        chunk = upstream.recv(65536)
        if not chunk:
            break
        chunks.append(chunk)
    raw = b"".join(chunks)
    head, sep, body = raw.partition(b"\r\n\r\n")
    if not sep:
        return None
    start, pairs = _split_head(head)
    headers = {name.lower(): value for name, value in pairs}
    if "content-length" in headers and len(body) < int(headers["content-length"]):
        return None  # cut short: the upstream died mid-answer
    duplicate = None
    if headers.get("content-type", "").startswith("application/json"):
        with contextlib.suppress(ValueError):
            obj = json.loads(body)
            if isinstance(obj, dict) and isinstance(obj.get("duplicate"), bool):
                duplicate = obj["duplicate"]
    return _Answer(int(start.split(" ", 2)[1]), raw, duplicate, len(head) + len(sep))


def _close_after(answer: _Answer) -> bytes:
    """The answer with ``Connection: close`` as its only hop-by-hop header."""
    start, pairs = _split_head(answer.raw[: answer.head_end - 4])
    lines = [start] + [f"{k}: {v}" for k, v in pairs if k.lower() not in _HOP_HEADERS]
    lines.append("Connection: close")
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    return head + answer.raw[answer.head_end :]
