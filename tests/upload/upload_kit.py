"""Helpers shared by the upload tests: batches on a real spool, and a scripted HTTP collector.

The scripted collector (respx) is for the native destination's wire behaviour (headers,
bodies, 413 splits, attachments); the uploader's own logic is tested against the
destinations of ``telemetry_client.testing``.
"""

from __future__ import annotations

import gzip
import random
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import respx
import zstandard

from telemetry_client import TelemetrySettings
from telemetry_client._internal.log import RateLimitedLogger
from telemetry_client.batch.loss_report import LossReports
from telemetry_client.encode.encoder import Encoder
from telemetry_client.encode.redact import Redactor
from telemetry_client.spool import BatchName, Spool
from telemetry_client.testing import FakeClock, FixedJitter
from telemetry_client.upload import Destination, UploadConfig, Uploader

ENDPOINT = "https://collector.test/api/v1/events"
# A fake token, distinctive so tests can prove it never leaves the Authorization header.
TOKEN = "tok-DistinctiveSecret-7f3a9c1e5b"  # noqa: S105 - not a real credential
MAX_BYTES = 64 * 1024 * 1024

Answer = Callable[[httpx.Request, list[dict[str, Any]]], httpx.Response]
SettingsFactory = Callable[..., TelemetrySettings]


# --- fixtures: a test module binds them by name (``spool = upload_kit.spool``); there is no
# conftest.py here, as the tests' ``from conftest import ...`` means tests/conftest.py ---------


@pytest.fixture
def make_settings(settings_factory: SettingsFactory) -> SettingsFactory:
    """Settings for an uploader talking to the scripted collector (spool under tmp_path)."""

    def make(**overrides: Any) -> TelemetrySettings:
        values: dict[str, Any] = {
            "endpoint": ENDPOINT,
            "token": TOKEN,
            "fsync": "off",
            "app": "tests",
            "user_id": "u",
            "redact": False,
        }
        values.update(overrides)
        return settings_factory(**values)

    return make


@pytest.fixture
def spool(tmp_path: Path) -> Spool:
    """An opened spool under tmp_path (what the uploaders under test drain)."""
    s = Spool(tmp_path / "spool", max_bytes=MAX_BYTES, fsync=False)
    s.open()
    return s


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def router() -> Iterator[respx.MockRouter]:
    with respx.mock(assert_all_called=False) as r:
        yield r


@pytest.fixture
def make_uploader(
    spool: Spool, clock: FakeClock, make_settings: SettingsFactory
) -> Iterator[Callable[..., Uploader]]:
    """``make(settings=None, *, destinations=None, rng=FixedJitter(1.0), losses=True)`` -> a
    step-driven Uploader on its own ``Spool`` object (its own "process") with the fake clock.

    ``destinations=None``: the native collector (HTTP, scripted with respx); ``losses``:
    whether it has loss reports to trigger (with an encoder, as the pipeline wires it).
    """
    made: list[Uploader] = []

    def make(
        settings: TelemetrySettings | None = None,
        *,
        destinations: Sequence[Destination] | None = None,
        rng: random.Random | None = None,
        losses: bool = True,
    ) -> Uploader:
        s = settings or make_settings()
        own = Spool(spool.root, max_bytes=MAX_BYTES, fsync=False)
        up = Uploader(
            spool=own,
            config=UploadConfig.from_settings(s),
            log=RateLimitedLogger(s.log_cooldown_s),
            destinations=destinations,
            losses=LossReports(own, make_encoder) if losses else None,
            clock=clock.time,
            monotonic=clock.monotonic,
            rng=rng if rng is not None else FixedJitter(1.0),
        )
        made.append(up)
        return up

    yield make
    for up in made:
        up.stop(0)  # closes its destinations (the native one's httpx client)


def envelope(seq: int, tag: str = "e", pad: int = 40) -> dict[str, Any]:
    """A complete event envelope (docs/protocol.md) with a recognisable id and payload."""
    return {
        "id": f"{tag}-{seq:04d}",
        "type": "upload_test",
        "ts": "2024-01-01T00:00:00.000000Z",
        "session_id": "s",
        "user_id": "u",
        "machine_id": "m",
        "app": "tests",
        "app_version": None,
        "seq": seq,
        "data": {"n": seq, "text": "héllo " + "x" * pad},
    }


def jsonl(events: list[dict[str, Any]]) -> bytes:
    return b"".join(orjson.dumps(e) + b"\n" for e in events)


def seal(spool: Spool, events: list[dict[str, Any]]) -> BatchName:
    """Seal ``events`` as one batch (a zstd frame of JSONL, as the writer makes them)."""
    # Level 19, unlike the uploader's own level 3: a re-encoded body would not match the file.
    body = zstandard.ZstdCompressor(level=19, write_checksum=True).compress(jsonl(events))
    name = spool.seal(body, len(events)).name
    assert name is not None
    return name


def seal_n(spool: Spool, n: int, tag: str = "e") -> BatchName:
    return seal(spool, [envelope(i, tag) for i in range(n)])


def batch_path(spool: Spool, name: BatchName) -> Path:
    return spool.root / "batches" / name.day / name.filename


def pending_names(spool: Spool) -> list[BatchName]:
    root = spool.root / "batches"
    return [
        n
        for day in sorted(root.iterdir())
        for f in day.iterdir()
        if (n := BatchName.parse(f.name)) is not None
    ]


def assert_released(spool: Spool, name: BatchName, pending: int = 1) -> None:
    """The batch is still pending, not dead-lettered, and claimable again (lock released)."""
    assert spool.pending().batches == pending
    assert spool.dead_letters() == []
    claim = spool.claim()
    assert claim is not None
    assert claim.batch_id == name.batch_id
    spool.release(claim)


def make_encoder() -> Encoder:
    """The encoder loss reports are written with (what the pipeline would pass)."""
    return Encoder(
        redactor=Redactor(enabled=False),
        app="tests",
        app_version=None,
        machine_id="m",
        user_id="u",
        session_id="s",
    )


# --- a scripted collector over HTTP (respx) --------------------------------------------------


def decode(request: httpx.Request) -> list[dict[str, Any]]:
    """The events of a POSTed batch, whatever its Content-Encoding."""
    body = request.content
    encoding = request.headers.get("content-encoding")
    if encoding == "zstd":
        raw = zstandard.ZstdDecompressor().decompress(body)
    elif encoding == "gzip":
        raw = gzip.decompress(body)
    else:
        raise AssertionError(f"unexpected Content-Encoding {encoding!r}")
    return [orjson.loads(line) for line in raw.splitlines()]


def ok(request: httpx.Request, events: list[dict[str, Any]]) -> httpx.Response:
    return httpx.Response(200, json={"accepted": len(events)})


def script(*responses: tuple[int, dict[str, str]] | int) -> Answer:
    """Answer with these statuses (optionally with headers) in turn, then repeat the last."""
    queue = [r if isinstance(r, tuple) else (r, {}) for r in responses]

    def answer(request: httpx.Request, events: list[dict[str, Any]]) -> httpx.Response:
        status, headers = queue.pop(0) if len(queue) > 1 else queue[0]
        return httpx.Response(status, headers=headers)

    return answer


class Collector:
    """A scripted events endpoint: records every request, keeps the events it answered 2xx."""

    def __init__(self, router: respx.MockRouter, answer: Answer = ok) -> None:
        self.answer = answer
        self.requests: list[httpx.Request] = []
        self.accepted: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        router.post(ENDPOINT).mock(side_effect=self._handle)

    def _handle(self, request: httpx.Request) -> httpx.Response:
        events = decode(request)
        with self.lock:
            self.requests.append(request)
        response = self.answer(request, events)
        if 200 <= response.status_code < 300:
            with self.lock:
                self.accepted.extend(events)
        return response

    @property
    def keys(self) -> list[str]:
        return [r.headers["idempotency-key"] for r in self.requests]
