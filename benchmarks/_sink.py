"""A minimal collector sink for benchmarks: counts what arrives, stores nothing.

Usage::

    python benchmarks/_sink.py [--host 127.0.0.1] [--port 0]

Prints one line ``READY <port>`` on stdout once it listens, then serves until its stdin
reaches EOF (the parent died or closed the pipe) or it gets SIGTERM/SIGINT.

Endpoints (any path prefix works: ``/r/<run>/...`` keeps the counts of each run apart,
anything else is counted under run ``default``):

* ``POST .../events``: body = one batch, ``Content-Encoding`` zstd / gzip / identity,
  NDJSON (``application/x-ndjson``) or a JSON array (``application/json``). Answers 200
  ``{"accepted": n}``; a repeated ``Idempotency-Key`` is answered 200
  ``{"duplicate": true}`` and not counted as delivered (as the reference collector does).
  An undecodable body is answered 400 and counted as ``bad_requests``.
* ``HEAD .../attachments/<sha256>``: 200 if that blob was posted before, else 404.
* ``POST .../attachments``: 200, counted.
* ``GET .../health``: 200.
* ``GET /r/<run>/stats`` (or ``GET /stats?run=<run>``): the run's counters as JSON;
  ``GET /stats`` alone returns every run.

Delivered events are counted by lines (NDJSON) or elements (array) of batches with a new
key; the distinct integer values of ``"marker"`` keys are counted too (the benchmark
workload numbers its events), so a benchmark can check that every event arrived once.

Built on ``http.server.ThreadingHTTPServer`` (HTTP/1.1 keep-alive, one thread per
connection, ``TCP_NODELAY``): per request it costs a few hundred µs of Python, and the
body work (zstd/gzip inflate, ``bytes.count``, one regex scan) runs in C, so it takes well
over 100 MB/s of compressed bodies on one core, far above what the clients send.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import io
import json
import os
import re
import resource
import signal
import sys
import threading
import time
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import zstandard

MAX_BODY = 256 * 1024 * 1024  # refuse larger bodies (413): a benchmark never sends them
MAX_INFLATED = 1 << 30
# A "marker" key: inside a JSON string every quote is escaped, so the text "marker": (the
# closing quote unescaped) only occurs as a key. json.dumps puts a space after the colon,
# orjson does not. Starts with a literal, so ``re`` skips ahead with a fast search.
_MARKER_RE = re.compile(rb'"marker": ?(\d+)')


class RunStats:
    """Counters of one run (guarded by the server's lock)."""

    def __init__(self) -> None:
        self.requests = 0
        self.batches = 0  # accepted batches with a new key (or no key)
        self.duplicate_batches = 0
        self.events = 0  # events in accepted batches with a new key
        self.duplicate_events = 0
        self.wire_bytes = 0  # request bodies of every events POST, duplicates included
        self.raw_bytes = 0  # the same, decompressed
        self.attachment_posts = 0
        self.attachment_bytes = 0
        self.bad_requests = 0
        self.keys: set[str] = set()
        self.markers: set[int] = set()
        self.encodings: dict[str, int] = {}
        self.content_types: dict[str, int] = {}
        self.blobs: set[str] = set()
        self.first_unix = 0.0
        self.last_unix = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "batches": self.batches,
            "unique_keys": len(self.keys),
            "duplicate_batches": self.duplicate_batches,
            "events": self.events,
            "duplicate_events": self.duplicate_events,
            "distinct_markers": len(self.markers),
            "wire_bytes": self.wire_bytes,
            "raw_bytes": self.raw_bytes,
            "attachment_posts": self.attachment_posts,
            "attachment_bytes": self.attachment_bytes,
            "bad_requests": self.bad_requests,
            "encodings": dict(self.encodings),
            "content_types": dict(self.content_types),
            "first_unix": self.first_unix,
            "last_unix": self.last_unix,
        }


class Sink:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.runs: dict[str, RunStats] = {}

    def run(self, name: str) -> RunStats:
        stats = self.runs.get(name)
        if stats is None:
            stats = self.runs[name] = RunStats()
        return stats


SINK = Sink()


def inflate(body: bytes, encoding: str) -> bytes:
    """Decode a request body by its ``Content-Encoding`` (zstd, gzip, deflate, identity)."""
    if encoding in ("", "identity"):
        return body
    if encoding == "zstd":
        reader = zstandard.ZstdDecompressor().stream_reader(
            io.BytesIO(body), read_across_frames=True
        )
        out = reader.read(MAX_INFLATED + 1)
        if len(out) > MAX_INFLATED:
            raise ValueError("inflated body too large")
        return out
    if encoding in ("gzip", "x-gzip"):
        return gzip.decompress(body)
    if encoding == "deflate":
        return zlib.decompress(body)
    raise ValueError(f"unsupported Content-Encoding {encoding!r}")


def count_events(raw: bytes, content_type: str) -> tuple[int, list[int]]:
    """(events, marker values) of a decoded batch body."""
    if content_type.startswith("application/json") or raw.lstrip()[:1] == b"[":
        items = json.loads(raw)
        if not isinstance(items, list):
            items = [items]
        markers = []
        for item in items:
            data = item.get("data") if isinstance(item, dict) else None
            if isinstance(data, dict) and isinstance(data.get("marker"), int):
                markers.append(data["marker"])
        return len(items), markers
    n = raw.count(b"\n")
    if raw and not raw.endswith(b"\n"):
        n += 1
    n -= raw.count(b"\n\n")  # blank lines are not events
    return n, [int(m) for m in _MARKER_RE.findall(raw)]


def split_run(path: str) -> tuple[str, str]:
    """``/r/<run>/rest`` -> (run, /rest); anything else -> ("default", path)."""
    if path.startswith("/r/"):
        run, _, rest = path[3:].partition("/")
        return run or "default", "/" + rest
    return "default", path


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "bench-sink/1"
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:
        pass

    # -- helpers ----------------------------------------------------------------------

    def _read_body(self) -> bytes | None:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            parts = []
            total = 0
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    break
                total += size
                if total > MAX_BODY:
                    return None
                parts.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(parts)
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            return None
        return self.rfile.read(length) if length else b""

    def _reply(self, status: int, payload: Any = None, *, head: bool = False) -> None:
        body = b"" if payload is None else json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if body and not head:
            self.wfile.write(body)

    # -- methods ----------------------------------------------------------------------

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        run, path = split_run(parts.path)
        if path.endswith("/health") or path == "/health":
            self._reply(200, {"ok": True})
            return
        if path == "/stats":
            query = parse_qs(parts.query)
            if parts.path.startswith("/r/"):
                wanted: str | None = run
            else:
                wanted = query.get("run", [None])[0]
            with SINK.lock:
                if wanted is None:
                    out: dict[str, Any] = {k: v.as_dict() for k, v in SINK.runs.items()}
                else:
                    out = SINK.run(wanted).as_dict()
            usage = resource.getrusage(resource.RUSAGE_SELF)
            out = {"sink_cpu_s": usage.ru_utime + usage.ru_stime, **out}
            self._reply(200, out)
            return
        self._reply(404, {"error": "not found"})

    def do_HEAD(self) -> None:
        run, path = split_run(urlsplit(self.path).path)
        sha = path.rstrip("/").rsplit("/", 1)[-1]
        with SINK.lock:
            known = sha in SINK.run(run).blobs
        self._reply(200 if known else 404, head=True)

    def do_POST(self) -> None:
        run, path = split_run(urlsplit(self.path).path)
        body = self._read_body()
        if body is None:
            self.close_connection = True
            self._reply(413, {"error": "body too large"})
            return
        if path.rstrip("/").endswith("/attachments"):
            sha = self.headers.get("X-Attachment-SHA256", "")
            with SINK.lock:
                stats = SINK.run(run)
                stats.attachment_posts += 1
                stats.attachment_bytes += len(body)
                if sha:
                    stats.blobs.add(sha)
            self._reply(200, {"sha256": sha})
            return
        if not path.rstrip("/").endswith("/events"):
            self._reply(404, {"error": "not found"})
            return
        encoding = self.headers.get("Content-Encoding", "").strip().lower()
        content_type = self.headers.get("Content-Type", "").strip().lower()
        key = self.headers.get("Idempotency-Key")
        try:
            raw = inflate(body, encoding)
            n, markers = count_events(raw, content_type)
        except Exception as exc:
            with SINK.lock:
                stats = SINK.run(run)
                stats.requests += 1
                stats.bad_requests += 1
            self._reply(400, {"error": f"{type(exc).__name__}: {exc}"})
            return
        now = time.time()
        with SINK.lock:
            stats = SINK.run(run)
            stats.requests += 1
            stats.wire_bytes += len(body)
            stats.raw_bytes += len(raw)
            enc = encoding or "identity"
            stats.encodings[enc] = stats.encodings.get(enc, 0) + 1
            stats.content_types[content_type] = stats.content_types.get(content_type, 0) + 1
            duplicate = key is not None and key in stats.keys
            if duplicate:
                stats.duplicate_batches += 1
                stats.duplicate_events += n
            else:
                if key is not None:
                    stats.keys.add(key)
                stats.batches += 1
                stats.events += n
                stats.markers.update(markers)
            stats.first_unix = stats.first_unix or now
            stats.last_unix = now
        self._reply(200, {"duplicate": True} if duplicate else {"accepted": n})


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128


def _exit_on_stdin_eof() -> None:
    """The parent holds our stdin: EOF means it is gone, so go too (no orphans)."""
    try:
        while sys.stdin.buffer.read(4096):
            pass
    except (OSError, ValueError):
        pass
    os._exit(0)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument(
        "--no-stdin-watch", action="store_true", help="keep running when stdin is closed"
    )
    args = ap.parse_args(argv)
    server = Server((args.host, args.port), Handler)
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    if not args.no_stdin_watch:
        threading.Thread(target=_exit_on_stdin_eof, name="stdin-watch", daemon=True).start()
    print(f"READY {server.server_address[1]}", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever(poll_interval=0.2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
