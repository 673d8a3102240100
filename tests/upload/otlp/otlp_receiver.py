"""An in-process OTLP/HTTP receiver (and a minimal native events endpoint) for the tests.

A raw ASGI app served by uvicorn on 127.0.0.1 (``tests/_fake_llm.serve_app``). It decodes
``/v1/traces`` and ``/v1/logs`` bodies with ``opentelemetry-proto`` (gzip undone first),
keeps every request's headers, and answers what the test scripted: a status, headers and
a body per path (default 200 with an empty response message), or *hangs* a request until
the test releases it (the crash test kills the sender meanwhile). ``/api/v1/events`` takes
native batches and records their ``Idempotency-Key`` s and events.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson
import zstandard
from _fake_llm import serve_app
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord
from opentelemetry.proto.trace.v1.trace_pb2 import Span

Answer = tuple[int, dict[str, str], bytes]


@dataclass
class Received:
    """What reached the receiver."""

    traces: list[ExportTraceServiceRequest] = field(default_factory=list)
    logs: list[ExportLogsServiceRequest] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)  # every OTLP request's
    native_keys: list[str] = field(default_factory=list)  # Idempotency-Key per native POST
    native_events: list[dict[str, Any]] = field(default_factory=list)
    hits: dict[str, int] = field(default_factory=dict)  # requests per path, any answer

    def spans(self) -> list[Span]:
        return [
            s
            for r in self.traces
            for rs in r.resource_spans
            for ss in rs.scope_spans
            for s in ss.spans
        ]

    def log_records(self) -> list[LogRecord]:
        return [
            lr
            for r in self.logs
            for rl in r.resource_logs
            for sl in rl.scope_logs
            for lr in sl.log_records
        ]


class Receiver:
    """The app and its script; thread-safe for the test thread."""

    def __init__(self) -> None:
        self.got = Received()
        self._lock = threading.Lock()
        self._script: dict[str, list[Answer]] = {}
        self._sticky: dict[str, Answer] = {}
        self._hang: set[str] = set()
        self.hanging = threading.Event()  # set when a hung request arrived
        self._release: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.base = ""

    # -- script ---------------------------------------------------------------------------

    def answer(self, path: str, *answers: Answer) -> None:
        """Answer the next requests to ``path`` with these, in order."""
        with self._lock:
            self._script.setdefault(path, []).extend(answers)

    def always(self, path: str, answer: Answer | None) -> None:
        """Answer every request to ``path`` with this (``None``: back to 200)."""
        with self._lock:
            if answer is None:
                self._sticky.pop(path, None)
            else:
                self._sticky[path] = answer

    def hang(self, path: str) -> None:
        """Requests to ``path`` hang until :meth:`release`, then end unanswered, not kept."""
        with self._lock:
            self._hang.add(path)

    def release(self) -> None:
        with self._lock:
            self._hang.clear()
        if self._loop is not None and self._release is not None:
            self._loop.call_soon_threadsafe(self._release.set)

    # -- ASGI -----------------------------------------------------------------------------

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        if self._loop is None:
            self._loop, self._release = asyncio.get_running_loop(), asyncio.Event()
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        path = scope["path"]
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        with self._lock:
            self.got.hits[path] = self.got.hits.get(path, 0) + 1
        with self._lock:
            hang = path in self._hang
        if hang:
            self.hanging.set()
            assert self._release is not None
            await self._release.wait()
            return  # never answered nor kept: as if the receiver had died with the request
        status, extra, reply = self._next(path)
        if 200 <= status < 300 and scope["method"] == "POST":
            self._record(path, headers, body)
        elif path.startswith("/v1/"):
            with self._lock:
                self.got.headers.append(headers)
        out = [(b"content-type", b"application/x-protobuf")]
        out += [(k.lower().encode(), v.encode()) for k, v in extra.items()]
        await send({"type": "http.response.start", "status": status, "headers": out})
        await send({"type": "http.response.body", "body": reply})

    def _next(self, path: str) -> Answer:
        with self._lock:
            queue = self._script.get(path)
            if queue:
                return queue.pop(0)
            return self._sticky.get(path, (200, {}, b""))

    def _record(self, path: str, headers: dict[str, str], body: bytes) -> None:
        if path == "/api/v1/events":
            raw = body
            if headers.get("content-encoding") == "zstd":
                raw = zstandard.ZstdDecompressor().decompressobj().decompress(body)
            elif headers.get("content-encoding") == "gzip":
                raw = gzip.decompress(body)
            events = [orjson.loads(line) for line in raw.splitlines() if line]
            with self._lock:
                self.got.native_keys.append(headers.get("idempotency-key", ""))
                self.got.native_events.extend(events)
            return
        if not path.startswith("/v1/"):
            return  # attachments, health: accepted
        raw = gzip.decompress(body) if headers.get("content-encoding") == "gzip" else body
        with self._lock:
            self.got.headers.append(headers)
            if path == "/v1/traces":
                self.got.traces.append(ExportTraceServiceRequest.FromString(raw))
            elif path == "/v1/logs":
                self.got.logs.append(ExportLogsServiceRequest.FromString(raw))


@contextlib.contextmanager
def serve_receiver() -> Iterator[Receiver]:
    """A running :class:`Receiver`; ``receiver.base`` is ``http://127.0.0.1:<port>``."""
    receiver = Receiver()
    with serve_app(receiver) as server:
        receiver.base = server.origin
        try:
            yield receiver
        finally:
            receiver.release()
