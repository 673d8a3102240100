"""Loopback sink for the peer benchmark: accepts any SDK's uploads, counts unique markers.

Usage::

    python benchmarks/peers/sink.py [--host 127.0.0.1] [--port 0]

Prints ``READY <port>`` once it listens, then serves until its stdin reaches EOF (the
parent died or closed the pipe), SIGTERM or SIGINT.

The first path segment is the run id: an adapter gets ``endpoint_base =
http://127.0.0.1:<port>/<run-id>`` and points its SDK there, whatever the SDK appends
(``/batch/``, ``/v1/batch``, ``/v1/logs``, ``/api/<project>/envelope/``,
``/api/v1/events``...). Every request is answered 200 at once, with a body each SDK
accepts (an empty protobuf message under ``/v1/logs|traces|metrics``, else
``{"status": "Ok"}``); ``HEAD`` answers 404 unless that attachment hash was posted.

Bodies are decoded off the request path, by one decoder thread, with
``decoders.decode(path, headers, body) -> (markers, n_events, error)`` (or ``extract``
without the error; ``benchmarks/peers/decoders.py``: every SDK's wire format); ``path``
is the request path without the run id and query. Without that module, a minimal
fallback decodes zstd / gzip / identity NDJSON or JSON by a regex on the marker field.
Per run the sink counts requests, wire bytes (request bodies as received), events, unique
and duplicate markers, undecodable bodies, and the receive time of the last body that
brought a new marker (the delivery time of the run's last event).

* ``GET /<run-id>/stats``: the run's counters (``queued``: bodies not decoded yet);
* ``DELETE /<run-id>``: forget the run's marker set (counters stay);
* ``GET /stats``: every run's counters; ``GET /health``: 200.

An asyncio server with a minimal HTTP/1.1 parser (keep-alive, Content-Length or chunked,
``Expect: 100-continue``): an order of magnitude less Python per request than
``http.server``, which matters for SDKs that send one request per event, on a machine
the client under test shares.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gzip
import io
import json
import os
import queue
import re
import resource
import signal
import sys
import threading
import time
import traceback
import zlib
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

import zstandard

sys.path.insert(0, str(Path(__file__).resolve().parent))
from workload import MARKER_FIELD

#: ``(path, headers, body) -> (markers, events, error or None)``
Decode = Callable[[str, Mapping[str, str], bytes], tuple[list[str], int, str | None]]

MAX_BODY = 512 * 1024 * 1024
MAX_HEADER = 64 * 1024
MAX_ERRORS_KEPT = 5
_OTLP_SUFFIXES = ("/v1/logs", "/v1/traces", "/v1/metrics")
_JSON_OK = b'{"status": "Ok"}'


# --- decoding ---------------------------------------------------------------------------


class Headers(Mapping[str, str]):
    """Request headers, case-insensitive (``headers["content-encoding"]`` works too)."""

    def __init__(self, items: list[tuple[str, str]]) -> None:
        self._items = items
        self._by_lower = {k.lower(): v for k, v in items}

    def __getitem__(self, key: str) -> str:
        return self._by_lower[key.lower()]

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and key.lower() in self._by_lower

    def __iter__(self) -> Iterator[str]:
        return iter(k for k, _ in self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"Headers({self._items!r})"


def _inflate(body: bytes, encoding: str) -> bytes:
    if encoding in ("zstd",) or body[:4] == b"\x28\xb5\x2f\xfd":
        reader = zstandard.ZstdDecompressor().stream_reader(
            io.BytesIO(body), read_across_frames=True
        )
        return reader.read()
    if encoding in ("gzip", "x-gzip") or body[:2] == b"\x1f\x8b":
        return gzip.decompress(body)
    if encoding == "deflate":
        return zlib.decompress(body)
    return body


def fallback_extract(path: str, headers: Mapping[str, str], body: bytes) -> tuple[list[str], int]:
    """zstd / gzip / identity NDJSON or JSON: markers by regex, events by lines or items."""
    raw = _inflate(body, headers.get("Content-Encoding", "").strip().lower())
    markers = [m.decode() for m in _MARKER_RE.findall(raw)]
    stripped = raw.lstrip()
    if stripped[:1] in (b"[", b"{") and b"\n{" not in raw:
        try:
            doc = json.loads(raw)
        except ValueError:
            doc = None
        if isinstance(doc, list):
            return markers, len(doc)
        if isinstance(doc, dict):
            for key in ("batch", "events", "data"):
                if isinstance(doc.get(key), list):
                    return markers, len(doc[key])
            return markers, 1
    return markers, sum(1 for line in raw.split(b"\n") if line.strip())


# The marker key: in JSON text a key is a quoted string followed by a colon.
_MARKER_RE = re.compile(rb'"' + re.escape(MARKER_FIELD.encode()) + rb'"\s*:\s*(\d+)')


def load_decoder() -> tuple[Decode, str]:
    """``benchmarks/peers/decoders.py`` when it exists, else :func:`fallback_extract`."""
    decoders: ModuleType | None
    try:
        import decoders
    except ModuleNotFoundError as exc:
        if exc.name != "decoders":
            raise
        decoders = None
    if decoders is not None and hasattr(decoders, "decode"):
        decode_fn = decoders.decode  # (markers, events, error): never raises

        def decode(path: str, headers: Mapping[str, str], body: bytes) -> Any:
            return tuple(decode_fn(path, headers, body))

        return decode, "decoders.decode"
    extract = decoders.extract if decoders is not None else fallback_extract
    how = "decoders.extract" if decoders is not None else "fallback (zstd/gzip/identity JSON)"

    def decode_extract(path: str, headers: Mapping[str, str], body: bytes) -> Any:
        try:
            markers, n = extract(path, headers, body)
        except Exception as exc:
            return [], 0, f"{type(exc).__name__}: {exc}"
        return markers, n, None

    return decode_extract, how


# --- counters -------------------------------------------------------------------------------


class RunStats:
    """Counters of one run; written by the decoder thread, read under the sink's lock."""

    def __init__(self) -> None:
        self.requests = 0
        self.queued = 0
        self.wire_bytes = 0
        self.events = 0
        self.markers: set[int | str] = set()
        self.distinct = 0
        self.duplicate_markers = 0
        self.decode_errors = 0
        self.errors: list[str] = []
        self.paths: dict[str, int] = {}
        self.first_unix = 0.0
        self.last_new_unix = 0.0
        self.last_unix = 0.0
        self.forgotten = False

    def as_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "queued": self.queued,
            "wire_bytes": self.wire_bytes,
            "events": self.events,
            "delivered": self.distinct,
            "duplicate_markers": self.duplicate_markers,
            "decode_errors": self.decode_errors,
            "errors": list(self.errors),
            "paths": dict(self.paths),
            "first_unix": self.first_unix,
            "last_new_unix": self.last_new_unix,
            "last_unix": self.last_unix,
        }


class Sink:
    def __init__(self, decode: Decode) -> None:
        self.decode = decode
        self.lock = threading.Lock()
        self.runs: dict[str, RunStats] = {}
        self.work: queue.SimpleQueue[tuple[str, str, Headers, bytes, float] | None] = (
            queue.SimpleQueue()
        )
        self.decoder_cpu_s = 0.0

    def run(self, name: str) -> RunStats:
        stats = self.runs.get(name)
        if stats is None:
            stats = self.runs[name] = RunStats()
        return stats

    def submit(self, run: str, path: str, headers: Headers, body: bytes) -> None:
        now = time.time()
        with self.lock:
            stats = self.run(run)
            stats.requests += 1
            stats.queued += 1
            stats.wire_bytes += len(body)
            stats.paths[path] = stats.paths.get(path, 0) + 1
            stats.first_unix = stats.first_unix or now
            stats.last_unix = now
        self.work.put((run, path, headers, body, now))

    def decode_forever(self) -> None:
        while True:
            item = self.work.get()
            if item is None:
                return
            run, path, headers, body, received = item
            try:
                markers, n, error = self.decode(path, headers, body)
            except Exception as exc:  # a decoder bug: count it, keep serving
                markers, n, error = [], 0, f"{type(exc).__name__}: {exc}"
                if os.environ.get("PEERS_SINK_DEBUG"):
                    traceback.print_exc()
            if error is not None:
                error = f"{path}: {error}"
            keys = [int(m) if str(m).isdigit() else str(m) for m in markers]
            with self.lock:
                stats = self.run(run)
                stats.queued -= 1
                stats.events += n
                if error is not None:
                    stats.decode_errors += 1
                    if len(stats.errors) < MAX_ERRORS_KEPT:
                        stats.errors.append(error)
                if stats.forgotten:
                    continue
                before = len(stats.markers)
                stats.markers.update(keys)
                new = len(stats.markers) - before
                stats.distinct = len(stats.markers)
                stats.duplicate_markers += len(keys) - new
                if new:
                    stats.last_new_unix = max(stats.last_new_unix, received)
            self.decoder_cpu_s = time.thread_time()

    def stats(self, run: str | None) -> dict[str, Any]:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        with self.lock:
            if run is None:
                runs: dict[str, Any] = {k: v.as_dict() for k, v in self.runs.items()}
                out: dict[str, Any] = {"runs": runs}
            else:
                out = self.run(run).as_dict()
        out["sink_cpu_s"] = usage.ru_utime + usage.ru_stime
        out["sink_decoder_cpu_s"] = self.decoder_cpu_s
        return out

    def forget(self, run: str) -> None:
        with self.lock:
            stats = self.run(run)
            stats.markers = set()
            stats.forgotten = True


# --- HTTP -------------------------------------------------------------------------------------


def split_run(target: str) -> tuple[str | None, str]:
    """``/<run>/rest?q`` -> (run, /rest); ``/stats`` and ``/health`` have no run."""
    path = target.split("?", 1)[0].split("#", 1)[0]
    if path in ("/stats", "/health", "/"):
        return None, path
    run, _, rest = path.lstrip("/").partition("/")
    return run, "/" + rest


def _response(status: int, body: bytes, content_type: str, *, head: bool = False) -> bytes:
    reason = {200: "OK", 400: "Bad Request", 404: "Not Found", 413: "Payload Too Large"}
    lines = [
        f"HTTP/1.1 {status} {reason.get(status, 'OK')}",
        f"Content-Type: {content_type}",
        f"Content-Length: {len(body)}",
        "",
        "",
    ]
    return "\r\n".join(lines).encode() + (b"" if head else body)


class BadRequest(Exception):
    pass


async def _read_body(reader: asyncio.StreamReader, headers: Headers) -> bytes:
    if "chunked" in headers.get("Transfer-Encoding", "").lower():
        parts: list[bytes] = []
        total = 0
        while True:
            line = await reader.readline()
            size = int(line.split(b";", 1)[0].strip() or b"0", 16)
            if size == 0:
                while (await reader.readline()) not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                return b"".join(parts)
            total += size
            if total > MAX_BODY:
                raise BadRequest("body too large")
            parts.append(await reader.readexactly(size))
            await reader.readline()
    length = int(headers.get("Content-Length") or 0)
    if length > MAX_BODY:
        raise BadRequest("body too large")
    return await reader.readexactly(length) if length else b""


class Server:
    def __init__(self, sink: Sink) -> None:
        self.sink = sink
        self.blobs: set[tuple[str, str]] = set()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await self._serve_connection(reader, writer)
        except (asyncio.IncompleteReadError, ConnectionError, BadRequest, ValueError, OSError):
            pass  # the client went away or sent garbage: drop the connection
        finally:
            with contextlib.suppress(Exception):
                writer.close()

    async def _serve_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except asyncio.LimitOverrunError:
                return
            lines = head.decode("latin-1").split("\r\n")
            method, target, version = lines[0].split(" ", 2)
            headers = Headers(
                [
                    (k.strip(), v.strip())
                    for k, _, v in (line.partition(":") for line in lines[1:] if line)
                ]
            )
            if headers.get("Expect", "").lower() == "100-continue":
                writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            body = await _read_body(reader, headers)
            writer.write(self.respond(method, target, headers, body))
            await writer.drain()
            if version == "HTTP/1.0" or headers.get("Connection", "").lower() == "close":
                return

    def respond(self, method: str, target: str, headers: Headers, body: bytes) -> bytes:
        run, path = split_run(target)
        if method == "GET":
            if path == "/health":
                return _response(200, b'{"ok": true}', "application/json")
            if path == "/stats":
                data = json.dumps(self.sink.stats(run)).encode()
                return _response(200, data, "application/json")
            return _response(200, b"{}", "application/json")
        if method == "HEAD":
            sha = path.rstrip("/").rsplit("/", 1)[-1]
            known = (run or "", sha) in self.blobs
            return _response(200 if known else 404, b"", "application/json", head=True)
        if method == "DELETE" and run is not None:
            self.sink.forget(run)
            return _response(200, b"{}", "application/json")
        if method in ("POST", "PUT") and run is not None:
            blob = headers.get("X-Attachment-SHA256")
            if blob:
                self.blobs.add((run, blob))
            self.sink.submit(run, path, headers, body)
            if path.rstrip("/").endswith(_OTLP_SUFFIXES):
                return _response(200, b"", "application/x-protobuf")
            return _response(200, _JSON_OK, "application/json")
        return _response(404, b'{"error": "not found"}', "application/json")


def _exit_on_stdin_eof() -> None:
    """The parent holds our stdin: EOF means it is gone, so go too (no orphans)."""
    with contextlib.suppress(OSError, ValueError):
        while sys.stdin.buffer.read(4096):
            pass
    os._exit(0)


async def serve(host: str, port: int, sink: Sink) -> None:
    server = Server(sink)
    srv = await asyncio.start_server(
        server.handle, host, port, limit=MAX_HEADER, backlog=256, reuse_address=True
    )
    bound = srv.sockets[0].getsockname()[1]
    print(f"READY {bound}", flush=True)
    async with srv:
        await srv.serve_forever()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument(
        "--no-stdin-watch", action="store_true", help="keep running when stdin is closed"
    )
    args = ap.parse_args(argv)
    decode, how = load_decoder()
    print(f"sink: decoding with {how}", file=sys.stderr, flush=True)
    sink = Sink(decode)
    threading.Thread(target=sink.decode_forever, name="decoder", daemon=True).start()
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    if not args.no_stdin_watch:
        threading.Thread(target=_exit_on_stdin_eof, name="stdin-watch", daemon=True).start()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args.host, args.port, sink))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
