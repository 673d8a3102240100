"""Reference collector limits: decompression bombs, body/event/batch sizes, rate limit (429)."""

from __future__ import annotations

import struct
import time
import zlib
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import httpx
import orjson
import psutil
import pytest
import zstandard
from conftest import COLLECTOR_TOKEN, CollectorHandle, collector_event

from telemetry_client.collector._ratelimit import TokenBuckets

T = TypeVar("T")
NDJSON = {"Content-Type": "application/x-ndjson"}
GIB = 1 << 30
MIB = 1 << 20


def _zstd_bomb() -> bytes:
    """1 GiB of zeros in one zstd frame (~32 KB), built in 1 MiB steps to spare our memory."""
    cobj = zstandard.ZstdCompressor(level=3).compressobj()
    zeros = bytes(MIB)
    return b"".join(cobj.compress(zeros) for _ in range(GIB // MIB)) + cobj.flush()


def _gzip_bomb() -> bytes:
    """1 GiB of zeros as one gzip member (~1 MB): one deflated 1 MiB block repeated.

    After a full flush the compressor starts afresh, so every 1 MiB of zeros deflates to
    the same bytes and the stream can be assembled without compressing a gibibyte.
    """
    zeros = bytes(MIB)
    cobj = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    block = cobj.compress(zeros) + cobj.flush(zlib.Z_FULL_FLUSH)
    crc = 0
    for _ in range(GIB // MIB):
        crc = zlib.crc32(zeros, crc)
    header = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"
    trailer = struct.pack("<II", crc, GIB & 0xFFFFFFFF)
    return header + block * (GIB // MIB) + cobj.flush() + trailer


@pytest.fixture(scope="module")
def bombs() -> dict[str, bytes]:
    return {"zstd": _zstd_bomb(), "gzip": _gzip_bomb()}


def _peak_rss_resettable() -> bool:
    """Reset the kernel's peak-RSS mark (VmHWM) of this process; False where unsupported."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    return True


def _peak_rss() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM in /proc/self/status")


def _memory_growth(fn: Callable[[], T]) -> tuple[T, int]:
    """``fn()`` and how far this process's RSS (its peak, where measurable) rose above the start."""
    process = psutil.Process()
    peak_known = _peak_rss_resettable()
    before = process.memory_info().rss
    result = fn()
    highest = max(process.memory_info().rss, _peak_rss() if peak_known else 0)
    return result, highest - before


@pytest.mark.parametrize("encoding", ["zstd", "gzip"])
def test_decompression_bombs_are_refused_in_bounded_memory(
    collector: CollectorHandle, bombs: dict[str, bytes], encoding: str
) -> None:
    """1 GiB of zeros (KBs on the wire) is refused with 413 without inflating it (RSS bound).

    Speed is not asserted (shared machines); the time bound only catches a hang.
    """
    bomb = bombs[encoding]
    headers = {**NDJSON, "Content-Encoding": encoding}
    with collector.client() as http:
        http.get("/api/v1/health")  # connection and lazy setup out of the measurement
        start = time.monotonic()
        response, growth = _memory_growth(
            lambda: http.post("/api/v1/events", content=bomb, headers=headers)
        )
        elapsed = time.monotonic() - start
    assert response.status_code == 413
    assert "exceeds" in response.json()["detail"]
    assert elapsed < 60.0  # hang bound only: it takes tens of milliseconds
    assert growth < 128 * MIB, f"RSS grew by {growth / MIB:.0f} MiB"
    assert collector.query()["total"] == 0


def test_a_batch_over_the_decompressed_limit_is_413(collector_factory: Any) -> None:
    """Valid events that decompress past max_decompressed_bytes are refused whole (413)."""
    handle = collector_factory(max_decompressed_bytes=MIB)
    events = [collector_event(i, data={"pad": "x" * 1000}) for i in range(1500)]  # ~1.7 MB
    ndjson = b"".join(orjson.dumps(e) + b"\n" for e in events)
    compress = zstandard.ZstdCompressor().compress
    with handle.client() as http:
        for body, content_type in ((ndjson, NDJSON), (orjson.dumps(events), {})):
            response = http.post(
                "/api/v1/events",
                content=compress(body),
                headers={
                    "Content-Type": "application/json",
                    **content_type,
                    "Content-Encoding": "zstd",
                },
            )
            assert response.status_code == 413
            assert response.json() == {"detail": f"decompressed body exceeds {MIB} bytes"}
    assert handle.query()["total"] == 0


def test_one_event_over_max_event_bytes_is_413(collector_factory: Any) -> None:
    """A single NDJSON line larger than max_event_bytes is refused (the client then degrades it)."""
    handle = collector_factory(max_event_bytes=64 * 1024)
    small = orjson.dumps(collector_event(1)) + b"\n"
    huge = orjson.dumps(collector_event(2, data={"blob": "y" * 100_000})) + b"\n"
    with handle.client() as http:
        response = http.post("/api/v1/events", content=small + huge, headers=NDJSON)
    assert response.status_code == 413
    assert response.json() == {"detail": "line 2: event exceeds 65536 bytes"}


def test_a_body_over_max_body_bytes_is_413_by_length_or_while_streaming(
    collector_factory: Any,
) -> None:
    """413 from Content-Length before reading, and from the running total of a chunked body."""
    handle = collector_factory(max_body_bytes=64 * 1024)
    body = b"z" * (200 * 1024)

    def chunked() -> Iterator[bytes]:
        for start in range(0, len(body), 16 * 1024):
            yield body[start : start + 16 * 1024]

    with handle.client() as http:
        response = http.post("/api/v1/events", content=body, headers=NDJSON)
        assert response.status_code == 413
        assert response.json() == {"detail": "body of 204800 bytes exceeds 65536"}
        response = http.post("/api/v1/events", content=chunked(), headers=NDJSON)
        assert response.status_code == 413
        assert response.json() == {"detail": "body exceeds 65536 bytes"}
        assert http.get("/api/v1/health").status_code == 200  # still serving
    assert handle.query()["total"] == 0


def test_rate_limit_answers_429_with_retry_after_per_token(collector_factory: Any) -> None:
    """Past its burst a token gets 429 + Retry-After (seconds); other tokens are unaffected."""
    handle = collector_factory(
        tokens=[COLLECTOR_TOKEN, "other-token"], rate_limit_rps=0.1, rate_limit_burst=2
    )
    with handle.client() as http:
        assert [http.get("/api/v1/events").status_code for _ in range(2)] == [200, 200]
        limited = http.get("/api/v1/events")
        assert limited.status_code == 429
        assert 1 <= int(limited.headers["Retry-After"]) <= 10  # one request per 10 s
        assert limited.json() == {"detail": "rate limit exceeded for this token; retry later"}
        assert http.get("/api/v1/health").status_code == 200  # health is never limited
        other = http.get("/api/v1/events", headers={"Authorization": "Bearer other-token"})
        assert other.status_code == 200
    assert handle.state.metrics.value("rejections_total", "rate_limited") == 1


def test_rate_limit_zero_turns_it_off(collector_factory: Any) -> None:
    """rate_limit_rps=0 disables the limiter: a burst far past the default is served."""
    handle = collector_factory(rate_limit_rps=0, rate_limit_burst=0)
    assert handle.state.buckets is None
    with handle.client() as http:
        assert {http.get("/api/v1/events", params={"limit": 0}).status_code for _ in range(50)} == {
            200
        }


def test_token_buckets_refill_at_the_configured_rate() -> None:
    """A bucket allows `burst` at once, then one request per 1/rate s; waits round up."""
    now = [100.0]
    buckets = TokenBuckets(10.0, 3, clock=lambda: now[0])
    assert [buckets.acquire("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert buckets.acquire("a") == pytest.approx(0.1)
    assert buckets.acquire("b") == 0.0  # buckets are per key
    now[0] += 0.1
    assert buckets.acquire("a") == 0.0
    now[0] += 60  # refill is capped at the burst
    assert [buckets.acquire("a") for _ in range(4)][-1] > 0
    assert TokenBuckets.retry_after(0.1) == "1"
    assert TokenBuckets.retry_after(2.01) == "3"
    with pytest.raises(ValueError, match="rate must be"):
        TokenBuckets(0, 1)


def test_unauthenticated_requests_never_reach_the_body_limits(collector: CollectorHandle) -> None:
    """A request without a token is refused 401 before its (oversize) body is considered."""
    response = httpx.post(collector.events_url, content=b"x" * (2 * MIB), headers=NDJSON)
    assert response.status_code == 401
