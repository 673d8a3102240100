"""The uploader (``telemetry_client.upload``): one test per row of the retry matrix, and more.

Tests drive ``Uploader.step()`` directly against a scripted collector (respx) with a fake
clock and injected jitter, so minutes of backoff take no time and nothing sleeps. The last
tests run a whole ``TelemetryClient`` (real threads) against the same scripted collector;
they wait on conditions (``wait_until``), never on sleeps.
"""

from __future__ import annotations

import datetime as dt
import gzip
import logging
import os
import random
import threading
import time
from collections.abc import Callable, Iterator
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import respx
import zstandard
from conftest import wait_until

import telemetry_client
from telemetry_client import TelemetryClient, TelemetrySettings
from telemetry_client._internal.log import RateLimitedLogger
from telemetry_client.encode.encoder import Encoder, format_ts
from telemetry_client.encode.redact import Redactor
from telemetry_client.spool import BatchName, Spool
from telemetry_client.testing import FakeClock, FixedJitter
from telemetry_client.upload import Control, Step, Uploader
from telemetry_client.upload.uploader import IDLE_POLL_S, KILL_SWITCH_POLL_S

ENDPOINT = "https://collector.test/api/v1/events"
# A fake token, distinctive so tests can prove it never leaves the Authorization header.
TOKEN = "tok-DistinctiveSecret-7f3a9c1e5b"  # noqa: S105 - not a real credential
MAX_BYTES = 64 * 1024 * 1024

SettingsFactory = Callable[..., TelemetrySettings]
Answer = Callable[[httpx.Request, list[dict[str, Any]]], httpx.Response]


# --- helpers --------------------------------------------------------------------------------------


def envelope(seq: int, tag: str = "e", pad: int = 40) -> dict[str, Any]:
    """A complete event envelope (CONTRACT §4) with a recognisable id and payload."""
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


def make_encoder() -> Encoder:
    """The encoder loss reports are written with (what a client would pass)."""
    return Encoder(
        redactor=Redactor(enabled=False),
        app="tests",
        app_version=None,
        machine_id="m",
        user_id="u",
        session_id="s",
    )


# --- fixtures -------------------------------------------------------------------------------------


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
    """``make(settings=None, rng=FixedJitter(1.0), encoder=True)`` -> a step-driven Uploader."""
    made: list[Uploader] = []

    def make(
        settings: TelemetrySettings | None = None,
        *,
        rng: random.Random | None = None,
        encoder: bool = True,
    ) -> Uploader:
        s = settings or make_settings()
        up = Uploader(
            spool=Spool(spool.root, max_bytes=MAX_BYTES, fsync=False),  # its own "process"
            settings=s,
            log=RateLimitedLogger(s.log_cooldown_s),
            encoder_factory=make_encoder if encoder else None,
            clock=clock.time,
            monotonic=clock.monotonic,
            rng=rng if rng is not None else FixedJitter(1.0),
        )
        made.append(up)
        return up

    yield make
    for up in made:
        up.stop(0)  # closes its httpx client


# --- 2xx, headers, body ---------------------------------------------------------------------------


def test_2xx_acks_the_batch_and_counts_it(
    spool: Spool, router: respx.MockRouter, make_uploader: Callable[..., Uploader]
) -> None:
    """A 2xx answer removes the batch from the spool and counts its events, batches and bytes."""
    collector = Collector(router)
    name = seal_n(spool, 3)
    up = make_uploader()

    step = up.step()

    assert step.outcome == "sent"
    assert (step.events, step.bytes, step.wait_s) == (3, name.n_bytes, 0.0)
    assert step.result is not None
    assert step.result.status == 200
    assert spool.pending().batches == 0
    assert spool.dead_letters() == []
    assert [e["id"] for e in collector.accepted] == ["e-0000", "e-0001", "e-0002"]
    c = up.counters
    assert (c.uploaded, c.uploaded_batches, c.uploaded_bytes, c.retries) == (3, 1, name.n_bytes, 0)
    assert up.step().outcome == "idle"
    assert len(collector.requests) == 1
    assert spool.check() == []


def test_request_headers(
    spool: Spool, router: respx.MockRouter, make_uploader: Callable[..., Uploader]
) -> None:
    """The POST carries bearer auth, our User-Agent, zstd NDJSON and the batch id as key."""
    collector = Collector(router)
    name = seal_n(spool, 2)

    make_uploader().step()

    (request,) = collector.requests
    assert request.method == "POST"
    assert str(request.url) == ENDPOINT
    h = request.headers
    assert h["authorization"] == f"Bearer {TOKEN}"
    assert h["user-agent"] == f"telemetry-client/{telemetry_client.__version__}"
    assert h["content-encoding"] == "zstd"
    assert h["content-type"] == "application/x-ndjson"
    assert h["idempotency-key"] == name.batch_id
    assert TOKEN not in str(request.url)
    assert all(TOKEN not in v for k, v in h.items() if k != "authorization")


def test_body_is_the_spool_file_byte_for_byte(
    spool: Spool, router: respx.MockRouter, make_uploader: Callable[..., Uploader]
) -> None:
    """With zstd the wire body is the sealed file itself: no re-encoding, no re-compression."""
    collector = Collector(router)
    name = seal_n(spool, 5)
    on_disk = batch_path(spool, name).read_bytes()

    make_uploader().step()

    assert collector.requests[0].content == on_disk


def test_gzip_compression_sends_the_same_jsonl(
    spool: Spool,
    router: respx.MockRouter,
    make_uploader: Callable[..., Uploader],
    make_settings: SettingsFactory,
) -> None:
    """``upload_compression="gzip"``: the body is gzip and gunzips to the batch's exact JSONL."""
    collector = Collector(router)
    events = [envelope(i) for i in range(4)]
    seal(spool, events)

    step = make_uploader(make_settings(upload_compression="gzip")).step()

    assert step.outcome == "sent"
    (request,) = collector.requests
    assert request.headers["content-encoding"] == "gzip"
    assert gzip.decompress(request.content) == jsonl(events)
    assert spool.pending().batches == 0


# --- retries ----------------------------------------------------------------------------------


def assert_released(spool: Spool, name: BatchName, pending: int = 1) -> None:
    """The batch is still pending, not dead-lettered, and claimable again (lock released)."""
    assert spool.pending().batches == pending
    assert spool.dead_letters() == []
    claim = spool.claim()
    assert claim is not None
    assert claim.batch_id == name.batch_id
    spool.release(claim)


@pytest.mark.parametrize(
    ("exc", "error"),
    [
        (httpx.ConnectError("connection refused"), "ConnectError"),
        (httpx.ReadTimeout("read timed out"), "ReadTimeout"),
        (httpx.ConnectTimeout("connect timed out"), "ConnectTimeout"),
        (httpx.RemoteProtocolError("server hung up"), "RemoteProtocolError"),
    ],
)
def test_network_errors_release_and_back_off(
    spool: Spool,
    router: respx.MockRouter,
    make_uploader: Callable[..., Uploader],
    exc: Exception,
    error: str,
) -> None:
    """No answer (refused, timeout, broken connection): batch released, soft backoff wait."""
    router.post(ENDPOINT).mock(side_effect=exc)
    name = seal_n(spool, 2)
    up = make_uploader(rng=random.Random(1))

    step = up.step()

    assert step.outcome == "retry"
    assert step.result is not None
    assert (step.result.status, step.result.error) == (None, error)
    assert not step.hard
    assert 0.0 <= step.wait_s <= 0.5  # first failure: uniform(0, initial)
    assert (up.counters.retries, up.counters.uploaded) == (1, 0)
    assert_released(spool, name)


@pytest.mark.parametrize("status", [408, 425, 429, 500, 502, 503, 504])
def test_retryable_statuses_release_and_back_off(
    spool: Spool,
    router: respx.MockRouter,
    make_uploader: Callable[..., Uploader],
    status: int,
) -> None:
    """408/425/429/5xx without Retry-After: batch released (not acked), soft backoff wait."""
    Collector(router, script(status))
    name = seal_n(spool, 2)
    up = make_uploader(rng=random.Random(status))

    step = up.step()

    assert step.outcome == "retry"
    assert step.result is not None
    assert step.result.status == status
    assert not step.hard
    assert 0.0 <= step.wait_s <= 0.5
    assert (up.counters.retries, up.counters.uploaded) == (1, 0)
    assert_released(spool, name)


def test_backoff_grows_with_consecutive_failures_up_to_the_cap(
    spool: Spool,
    router: respx.MockRouter,
    clock: FakeClock,
    make_uploader: Callable[..., Uploader],
    make_settings: SettingsFactory,
) -> None:
    """Consecutive failures double the top of the jitter range until the cap; success resets."""
    Collector(router, script(*([503] * 7), 200, 503))
    seal_n(spool, 1, "a")
    seal_n(spool, 1, "b")
    settings = make_settings(upload_backoff_initial=0.5, upload_backoff_max=4.0, replay_rate=0)
    up = make_uploader(settings, rng=FixedJitter(1.0))  # always the top of the range

    waits = []
    for _ in range(7):
        step = up.step()
        assert (step.outcome, step.hard) == ("retry", False)
        waits.append(step.wait_s)
        clock.advance(step.wait_s)
    assert waits == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0, 4.0]

    assert up.step().outcome == "sent"
    assert up.step().wait_s == 0.5  # the streak starts over after a success


def test_backoff_waits_stay_within_full_jitter_bounds(
    spool: Spool,
    router: respx.MockRouter,
    clock: FakeClock,
    make_uploader: Callable[..., Uploader],
    make_settings: SettingsFactory,
) -> None:
    """With real jitter, the n-th wait lies in [0, min(max, initial * 2**(n-1))] and varies."""
    Collector(router, script(500))
    seal_n(spool, 1)
    up = make_uploader(make_settings(upload_backoff_max=8.0), rng=random.Random(42))

    waits = []
    for n in range(1, 13):
        step = up.step()
        assert 0.0 <= step.wait_s <= min(8.0, 0.5 * 2 ** (n - 1))
        waits.append(step.wait_s)
        clock.advance(step.wait_s)
    assert len(set(waits)) == len(waits)  # jittered, not a fixed schedule


def test_idempotency_key_is_the_batch_id_on_every_retry_and_in_every_process(
    spool: Spool,
    router: respx.MockRouter,
    clock: FakeClock,
    make_uploader: Callable[..., Uploader],
) -> None:
    """Every attempt at a batch, by this uploader or another one on the spool, uses its id."""
    collector = Collector(router, script(503, 503, 503, 200))
    name = seal_n(spool, 2)
    first, second = make_uploader(), make_uploader()

    for _ in range(2):
        clock.advance(first.step().wait_s)
    clock.advance(second.step().wait_s)  # another process picks the batch up
    assert second.step().outcome == "sent"

    assert collector.keys == [name.batch_id] * 4
    assert spool.pending().batches == 0


# --- Retry-After --------------------------------------------------------------------------------


def http_date(unix_s: float) -> str:
    return format_datetime(dt.datetime.fromtimestamp(unix_s, dt.timezone.utc), usegmt=True)


@pytest.mark.parametrize("status", [429, 503])
@pytest.mark.parametrize("form", ["seconds", "http-date"])
def test_retry_after_pauses_the_whole_endpoint(
    spool: Spool,
    router: respx.MockRouter,
    clock: FakeClock,
    make_uploader: Callable[..., Uploader],
    status: int,
    form: str,
) -> None:
    """Retry-After (seconds or HTTP-date): a hard wait that long; no request until it passes."""
    value = "120" if form == "seconds" else http_date(clock.time() + 120)
    collector = Collector(router, script((status, {"Retry-After": value}), 200))
    name = seal_n(spool, 1, "a")
    seal_n(spool, 1, "b")
    up = make_uploader()

    step = up.step()
    assert (step.outcome, step.wait_s, step.hard) == ("retry", 120.0, True)
    assert_released(spool, name, pending=2)

    # The pause is for the endpoint, not the batch: the other batch is not tried either.
    for advance in (0.0, 60.0, 59.0):
        clock.advance(advance)
        paused = up.step()
        assert paused.outcome == "paused"
        assert paused.hard
        assert paused.wait_s == pytest.approx(120.0 - clock.monotonic() + 1000.0)
    assert len(collector.requests) == 1

    clock.advance(1.0)
    assert up.step().outcome == "sent"
    assert collector.keys == [name.batch_id, name.batch_id]


def test_retry_after_is_capped_by_retry_after_max(
    spool: Spool,
    router: respx.MockRouter,
    make_uploader: Callable[..., Uploader],
    make_settings: SettingsFactory,
) -> None:
    """A Retry-After beyond ``retry_after_max`` waits ``retry_after_max``."""
    Collector(router, script((429, {"Retry-After": "86400"})))
    seal_n(spool, 1)

    step = make_uploader(make_settings(retry_after_max=30)).step()

    assert (step.outcome, step.wait_s, step.hard) == ("retry", 30.0, True)


def test_garbage_retry_after_falls_back_to_backoff(
    spool: Spool, router: respx.MockRouter, make_uploader: Callable[..., Uploader]
) -> None:
    """An unparseable Retry-After is ignored: the normal (soft) backoff applies."""
    Collector(router, script((503, {"Retry-After": "later, maybe"})))
    seal_n(spool, 1)

    step = make_uploader(rng=FixedJitter(1.0)).step()

    assert (step.outcome, step.wait_s, step.hard) == ("retry", 0.5, False)


@pytest.mark.parametrize("value", ["0", "past-date"])
def test_zero_retry_after_does_not_retry_back_to_back(
    spool: Spool,
    router: respx.MockRouter,
    clock: FakeClock,
    make_uploader: Callable[..., Uploader],
    value: str,
) -> None:
    """Retry-After 0 or a date already past (clock skew) must not cancel the backoff.

    Otherwise an overloaded collector answering 503 is hammered with back-to-back retries.
    """
    header = "0" if value == "0" else http_date(clock.time() - 3600)
    Collector(router, script((503, {"Retry-After": header})))
    seal_n(spool, 1)
    up = make_uploader(rng=FixedJitter(1.0))

    waits = []
    for _ in range(3):
        step = up.step()
        assert step.outcome == "retry"
        waits.append(step.wait_s)
        clock.advance(step.wait_s)
    assert waits == [0.5, 1.0, 2.0]


# --- 413: split ---------------------------------------------------------------------------------


def too_large_over(limit: int) -> Answer:
    """413 for a body whose JSONL exceeds ``limit`` bytes, 200 otherwise."""

    def answer(request: httpx.Request, events: list[dict[str, Any]]) -> httpx.Response:
        size = len(jsonl(events))
        return httpx.Response(413 if size > limit else 200)

    return answer


def test_413_splits_recursively_and_degrades_a_single_oversized_event(
    spool: Spool, router: respx.MockRouter, make_uploader: Callable[..., Uploader]
) -> None:
    """413: halves, recursively, down to one event sent with a size marker; nothing dropped."""
    collector = Collector(router, too_large_over(2000))
    events = [envelope(i, pad=500) for i in range(7)]
    events[4] = envelope(4, pad=6000)  # too large even alone
    big_line_len = len(orjson.dumps(events[4]))
    name = seal(spool, events)
    up = make_uploader()

    step = up.step()

    assert step.outcome == "sent"
    assert step.events == 7
    assert spool.pending().batches == 0
    assert spool.dead_letters() == []
    by_id: dict[str, list[dict[str, Any]]] = {}
    for e in collector.accepted:
        by_id.setdefault(e["id"], []).append(e)
    assert sorted(by_id) == [e["id"] for e in events]  # every event arrived...
    assert all(len(copies) == 1 for copies in by_id.values())  # ...exactly once
    for e in events:
        if e["seq"] != 4:
            assert by_id[e["id"]][0] == e  # untouched
    degraded = by_id["e-0004"][0]
    assert degraded["type"] == events[4]["type"]
    assert degraded["data"]["$degraded"]["reason"] == "too_large"
    assert degraded["data"]["$degraded"]["bytes"] == big_line_len
    assert degraded["data"]["$degraded"]["excerpt"].startswith('{"n":4,"text":"h')
    assert name.batch_id not in collector.keys[1:]  # parts never reuse the parent's key
    assert len(set(collector.keys)) == len(collector.keys)
    c = up.counters
    assert (c.uploaded, c.degraded_events, c.split_batches, c.rejected) == (7, 1, 1, 0)


def test_413_split_ids_are_deterministic_across_uploaders(
    spool: Spool, router: respx.MockRouter, make_uploader: Callable[..., Uploader]
) -> None:
    """A batch split again (after a failure, by a fresh uploader) reuses the same part ids."""
    attempt = {"n": 0}
    seen: list[list[str]] = [[], []]

    def answer(request: httpx.Request, events: list[dict[str, Any]]) -> httpx.Response:
        seen[attempt["n"]].append(request.headers["idempotency-key"])
        if len(events) > 1:
            return httpx.Response(413)
        # The first attempt fails on the last event: the batch is released and retried.
        if attempt["n"] == 0 and events[0]["seq"] == 5:
            return httpx.Response(503)
        return httpx.Response(200)

    collector = Collector(router, answer)
    name = seal_n(spool, 6)

    assert make_uploader().step().outcome == "retry"
    assert spool.pending().batches == 1
    attempt["n"] = 1
    assert make_uploader().step().outcome == "sent"

    assert seen[0] == seen[1]
    assert seen[0][0] == name.batch_id
    assert len(set(seen[0])) == len(seen[0])
    assert all(len(k) == 32 and int(k, 16) >= 0 for k in seen[0])
    assert sorted({e["id"] for e in collector.accepted}) == [f"e-{i:04d}" for i in range(6)]


def test_413_on_the_degraded_event_dead_letters_the_batch(
    spool: Spool, router: respx.MockRouter, make_uploader: Callable[..., Uploader]
) -> None:
    """If even the size marker is refused with 413, the batch goes to dead letters (kept)."""
    collector = Collector(router, script(413))
    name = seal(spool, [envelope(0, pad=3000)])
    up = make_uploader()

    step = up.step()

    assert step.outcome == "dead_letter"
    assert len(collector.requests) == 2  # the batch, then the degraded event
    assert "$degraded" in decode(collector.requests[1])[0]["data"]
    assert [n.batch_id for n in spool.dead_letters()] == [name.batch_id]
    assert spool.pending().batches == 0
    assert up.counters.rejected == 1


# --- other 4xx: dead letter ------------------------------------------------------------------


@pytest.mark.parametrize("status", [400, 409, 410, 415, 422])
def test_other_4xx_dead_letters_the_batch(
    spool: Spool,
    router: respx.MockRouter,
    clock: FakeClock,
    make_uploader: Callable[..., Uploader],
    status: int,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Other 4xx: the batch moves to ``dead/`` (listed, kept), counted rejected, never retried."""
    caplog.set_level(logging.WARNING, logger="telemetry_client")
    collector = Collector(router, script(status))
    name = seal_n(spool, 3)
    up = make_uploader()

    step = up.step()

    assert step.outcome == "dead_letter"
    assert step.events == 3
    assert [n.batch_id for n in spool.dead_letters()] == [name.batch_id]
    assert (spool.root / "dead" / name.filename).is_file()
    assert spool.pending().batches == 0
    assert (up.counters.rejected, up.counters.uploaded, up.counters.retries) == (3, 0, 0)
    clock.advance(3600)
    assert up.step().outcome == "idle"
    assert len(collector.requests) == 1
    assert f"HTTP {status}" in caplog.text
    assert spool.check() == []


# --- 401/403/404: auth pause -----------------------------------------------------------------


def all_spool_bytes(root: Path) -> Iterator[tuple[Path, bytes]]:
    """Every file under the spool, and the decompressed content of compressed ones."""
    for dirpath, _dirs, files in os.walk(root):
        for fn in files:
            p = Path(dirpath) / fn
            data = p.read_bytes()
            yield p, data
            if fn.endswith(".zst"):
                yield p, zstandard.ZstdDecompressor().decompress(data)


@pytest.mark.parametrize("status", [401, 403])
def test_auth_refusal_pauses_keeps_everything_and_warns_once_without_the_token(
    spool: Spool,
    router: respx.MockRouter,
    clock: FakeClock,
    make_uploader: Callable[..., Uploader],
    make_settings: SettingsFactory,
    caplog: pytest.LogCaptureFixture,
    status: int,
) -> None:
    """401/403: nothing dropped, hard pause of ``auth_pause``, one warning per cooldown.

    The warning names the status and the endpoint, never the token; nor do results or files.
    """
    caplog.set_level(logging.DEBUG, logger="telemetry_client")
    collector = Collector(router, script(status))
    name = seal_n(spool, 2)
    up = make_uploader(make_settings(auth_pause=120))

    steps: list[Step] = []
    for _ in range(3):  # three pauses, all within one log cooldown
        step = up.step()
        steps.append(step)
        assert (step.outcome, step.wait_s, step.hard) == ("auth_pause", 120.0, True)
        assert_released(spool, name)
        paused = up.step()  # nothing is sent during the pause
        assert (paused.outcome, paused.hard) == ("paused", True)
        assert "check TELEMETRY_TOKEN" in (up.blocked_reason() or "")
        clock.advance(120)
    assert len(collector.requests) == 3
    assert spool.dead_letters() == []
    assert up.counters.rejected == 0

    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1
    message = warnings[0].getMessage()
    assert f"HTTP {status}" in message
    assert "https://collector.test/api/v1/events" in message
    assert "TELEMETRY_TOKEN" in message

    assert TOKEN not in caplog.text
    assert all(TOKEN not in repr(s) for s in steps)
    assert TOKEN not in repr(up.describe()) + repr(up.last.read())
    for path, data in all_spool_bytes(spool.root):
        assert TOKEN.encode() not in data, path


def test_auth_warning_never_shows_credentials_in_the_endpoint(
    spool: Spool,
    router: respx.MockRouter,
    make_uploader: Callable[..., Uploader],
    make_settings: SettingsFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """User info and query of the endpoint URL stay out of the warning that names it."""
    caplog.set_level(logging.WARNING, logger="telemetry_client")
    url = "https://bob:hunter2@collector.test:8443/v1/events?key=qs-secret"
    router.post(url).mock(return_value=httpx.Response(401))
    seal_n(spool, 1)

    step = make_uploader(make_settings(endpoint=url)).step()

    assert step.outcome == "auth_pause"
    assert "https://collector.test:8443/v1/events" in caplog.text
    assert "hunter2" not in caplog.text
    assert "qs-secret" not in caplog.text


@pytest.mark.parametrize("status", [404, 405])
def test_wrong_endpoint_pauses_keeps_everything_and_names_the_path_not_the_token(
    spool: Spool,
    router: respx.MockRouter,
    clock: FakeClock,
    make_uploader: Callable[..., Uploader],
    make_settings: SettingsFactory,
    caplog: pytest.LogCaptureFixture,
    status: int,
) -> None:
    """404/405 (a wrong TELEMETRY_ENDPOINT path): nothing dead-lettered, a hard pause of
    ``auth_pause``, one warning per cooldown naming the status, the URL and the path to
    check; nothing says the token is wrong."""
    caplog.set_level(logging.DEBUG, logger="telemetry_client")
    collector = Collector(router, script(status))
    name = seal_n(spool, 2)
    up = make_uploader(make_settings(auth_pause=120))

    for _ in range(3):  # three pauses, all within one log cooldown
        step = up.step()
        assert (step.outcome, step.wait_s, step.hard) == ("endpoint_pause", 120.0, True)
        assert_released(spool, name)
        paused = up.step()
        assert (paused.outcome, paused.hard) == ("paused", True)
        clock.advance(120)
    assert len(collector.requests) == 3
    assert spool.dead_letters() == []
    assert up.counters.rejected == 0

    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1
    expected = f"HTTP {status} at {ENDPOINT}: check the path of TELEMETRY_ENDPOINT"
    if status == 405:
        expected = f"HTTP 405 at {ENDPOINT} (it does not accept POST): check the path"
    assert expected in warnings[0]
    up.step()  # one more refusal: blocked_reason describes the pause it starts
    reason = up.blocked_reason() or ""
    assert expected in reason
    last = up.last.read()
    assert last is not None
    assert last["outcome"] == "wrong_endpoint"
    assert expected in last["detail"]
    for text in (warnings[0], reason, last["detail"]):
        assert "TOKEN" not in text
        assert "credentials" not in text


def test_wrong_endpoint_warning_never_shows_credentials_or_query(
    spool: Spool,
    router: respx.MockRouter,
    make_uploader: Callable[..., Uploader],
    make_settings: SettingsFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A 404 on an endpoint with user info and a query names the URL without either."""
    caplog.set_level(logging.WARNING, logger="telemetry_client")
    url = "https://bob:hunter2@collector.test:8443/?key=qs-secret"
    router.post(url).mock(return_value=httpx.Response(404))
    seal_n(spool, 1)
    up = make_uploader(make_settings(endpoint=url))

    step = up.step()

    assert step.outcome == "endpoint_pause"
    assert "HTTP 404 at https://collector.test:8443/: check the path" in caplog.text
    text = caplog.text + (up.blocked_reason() or "") + repr(up.last.read()) + repr(step)
    assert "hunter2" not in text
    assert "qs-secret" not in text


def test_404_on_the_attachments_endpoint_names_that_variable(
    spool: Spool,
    router: respx.MockRouter,
    make_uploader: Callable[..., Uploader],
    make_settings: SettingsFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A configured attachments URL answering 404 to the blob's POST: the batch waits (not
    sent, not dead-lettered) and the warning names TELEMETRY_ATTACHMENTS_ENDPOINT."""
    caplog.set_level(logging.WARNING, logger="telemetry_client")
    blobs = "https://collector.test/blobs/v1"
    ref = spool.put_blob(b"attachment body " * 100, "text/plain; charset=utf-8")
    router.head(f"{blobs}/{ref.sha256}").mock(return_value=httpx.Response(404))
    router.post(blobs).mock(return_value=httpx.Response(404))
    collector = Collector(router)
    attachment = {"sha256": ref.sha256, "size": ref.size, "content_type": ref.content_type}
    event = envelope(0)
    event["data"] = {"log": {"$attachment": attachment}}
    name = seal(spool, [event])
    up = make_uploader(make_settings(attachments_endpoint=blobs))

    step = up.step()

    assert step.outcome == "endpoint_pause"
    assert collector.requests == []
    assert_released(spool, name)
    assert f"HTTP 404 at {blobs}: check the path of TELEMETRY_ATTACHMENTS_ENDPOINT" in caplog.text


# --- kill switch ------------------------------------------------------------------------------


def test_kill_switch_is_persisted_honoured_by_siblings_and_ends_with_the_clock(
    spool: Spool,
    router: respx.MockRouter,
    clock: FakeClock,
    make_uploader: Callable[..., Uploader],
) -> None:
    """``X-Telemetry-Disable: 60``: written to ``state/control.json``; no uploads until it ends."""
    collector = Collector(router, script((200, {"X-Telemetry-Disable": "60"}), 200))
    first = seal_n(spool, 1, "a")
    later = seal_n(spool, 1, "b")
    up = make_uploader()
    start = clock.time()

    assert up.step().outcome == "sent"  # the answer that carries the switch is still a 2xx
    control = orjson.loads((spool.root / "state" / "control.json").read_bytes())
    assert control["disabled_until"] == start + 60
    assert up.disabled_until == start + 60

    step = up.step()
    assert (step.outcome, step.hard) == ("kill_switch", True)
    assert 0 < step.wait_s <= KILL_SWITCH_POLL_S
    sibling = make_uploader()  # another process on the same spool
    assert sibling.disabled_until == start + 60
    assert sibling.step().outcome == "kill_switch"
    assert sibling.blocked_reason() is not None
    clock.advance(59)
    assert up.step().outcome == "kill_switch"
    assert collector.keys == [first.batch_id]
    assert spool.pending().batches == 1  # spooled data is kept

    clock.advance(1.5)
    assert up.step().outcome == "sent"
    assert up.disabled_until == 0.0
    assert collector.keys == [first.batch_id, later.batch_id]


def test_kill_switch_zero_lifts_it(
    spool: Spool,
    router: respx.MockRouter,
    make_uploader: Callable[..., Uploader],
) -> None:
    """``X-Telemetry-Disable: 0`` lifts a kill switch that is on, for every uploader on the spool.

    Here the 0 arrives on a sibling's request that was in flight when the switch went on.
    """
    b1, b2, b3 = (seal_n(spool, 1, tag) for tag in "abc")
    a, b = make_uploader(), make_uploader()
    inner: list[str] = []

    def answer(request: httpx.Request, events: list[dict[str, Any]]) -> httpx.Response:
        key = request.headers["idempotency-key"]
        if key == b1.batch_id:  # b's request, in flight while a turns the switch on
            inner.append(a.step().outcome)  # a sends b2 and hears "disable"
            inner.append(a.step().outcome)
            return httpx.Response(200, headers={"X-Telemetry-Disable": "0"})
        if key == b2.batch_id:
            return httpx.Response(200, headers={"X-Telemetry-Disable": "60"})
        return httpx.Response(200)

    collector = Collector(router, answer)

    assert b.step().outcome == "sent"
    assert inner == ["sent", "kill_switch"]
    assert Control(spool.root).disabled_until() == 0.0
    assert a.step().outcome == "sent"
    assert a.disabled_until == 0.0
    assert sorted(collector.keys) == sorted([b1.batch_id, b2.batch_id, b3.batch_id])


def test_kill_switch_makes_a_client_on_the_spool_drop_emits(
    spool: Spool,
    router: respx.MockRouter,
    make_uploader: Callable[..., Uploader],
    make_settings: SettingsFactory,
) -> None:
    """While the switch is on, a (re)started client on that spool collects nothing, counted."""
    collector = Collector(router, script((200, {"X-Telemetry-Disable": "60"})))
    seal_n(spool, 1)
    settings = make_settings(linger_ms=5)
    assert make_uploader(settings).step().outcome == "sent"  # clock: the real time, whole s

    client = TelemetryClient(settings)
    try:
        client.start()
        for i in range(5):
            client.emit("after_kill_switch", {"i": i})
        stats = client.stats()
        assert stats["dropped_kill_switch"] == 5
        assert stats["dropped"] >= 5
    finally:
        result = client.close(timeout=5)
    assert result.ok
    assert client.stats()["spooled"] == 0
    assert spool.pending().batches == 0
    assert len(collector.requests) == 1


def test_control_sees_a_rewrite_of_the_same_size_within_one_mtime_tick(tmp_path: Path) -> None:
    """Two kill-switch writes of equal size and mtime are still told apart by readers."""
    writer, reader = Control(tmp_path, fsync=False), Control(tmp_path, fsync=False)
    writer.disable(60, now=1_700_000_000.0)
    st = os.stat(writer.path)
    assert reader.disabled_until() == 1_700_000_060.0

    writer.disable(70, now=1_700_000_000.0)  # same JSON length
    os.utime(writer.path, ns=(st.st_atime_ns, st.st_mtime_ns))  # same tick
    assert os.stat(writer.path).st_size == st.st_size

    assert reader.disabled_until() == 1_700_000_070.0


# --- bounded replay ---------------------------------------------------------------------------


def test_replay_after_a_failure_streak_is_paced_until_drained(
    spool: Spool,
    router: respx.MockRouter,
    clock: FakeClock,
    make_uploader: Callable[..., Uploader],
    make_settings: SettingsFactory,
) -> None:
    """After failures, sends are paced at ~1/replay_rate (jittered, hard) until drained."""
    Collector(router, script(503, 503, 200))
    for tag in "abcd":
        seal_n(spool, 1, tag)
    up = make_uploader(make_settings(replay_rate=10), rng=random.Random(3))

    for _ in range(2):
        step = up.step()
        assert step.outcome == "retry"
        clock.advance(step.wait_s)
    paced = []
    for _ in range(4):
        step = up.step()
        assert step.outcome == "sent"
        assert step.hard
        paced.append(step.wait_s)
        clock.advance(step.wait_s)
    assert all(0.05 <= w <= 0.15 for w in paced)  # 1/rate, jittered by up to half each way
    assert len(set(paced)) > 1

    idle = up.step()
    assert (idle.outcome, idle.wait_s, idle.hard) == ("idle", IDLE_POLL_S, False)
    seal_n(spool, 1, "e")
    assert up.step().wait_s == 0.0  # drained: the replay window is over


def test_replay_is_paced_after_a_kill_switch_ends(
    spool: Spool,
    router: respx.MockRouter,
    clock: FakeClock,
    make_uploader: Callable[..., Uploader],
    make_settings: SettingsFactory,
) -> None:
    """A fleet-wide kill switch ends at the same moment everywhere: the backlog that waited
    behind it drains paced (hard waits of ~1/replay_rate), not back to back."""
    Collector(router)
    for tag in "abc":
        seal_n(spool, 1, tag)
    up = make_uploader(make_settings(replay_rate=10))
    up.control.disable(30, now=clock.time())

    assert up.step().outcome == "kill_switch"
    clock.advance(31)
    steps = [up.step() for _ in range(3)]

    assert [s.outcome for s in steps] == ["sent"] * 3
    assert all(s.hard and 0.05 <= s.wait_s <= 0.15 + 1e-9 for s in steps)


def test_no_pacing_without_a_failure(
    spool: Spool,
    router: respx.MockRouter,
    make_uploader: Callable[..., Uploader],
    make_settings: SettingsFactory,
) -> None:
    """Outside a replay window (no failure yet) batches go back to back."""
    Collector(router)
    for tag in "abcd":
        seal_n(spool, 1, tag)
    up = make_uploader(make_settings(replay_rate=10))

    steps = [up.step() for _ in range(4)]

    assert [(s.outcome, s.wait_s) for s in steps] == [("sent", 0.0)] * 4


# --- loss reports -----------------------------------------------------------------------------


def test_losses_are_reported_as_a_telemetry_dropped_event(
    spool: Spool, router: respx.MockRouter, make_uploader: Callable[..., Uploader]
) -> None:
    """Unreported losses become one ``telemetry_dropped`` event, sent; the counters clear."""
    collector = Collector(router)
    now_ns = time.time_ns()
    first_ns, last_ns = now_ns - 90 * 10**9, now_ns - 30 * 10**9
    spool.record_loss("cap", 7, 7000, first_ns, last_ns)
    up = make_uploader()

    step = up.step()

    assert step.outcome == "sent"
    (event,) = collector.accepted
    assert event["type"] == "telemetry_dropped"
    assert event["data"] == {
        "events": 7,
        "bytes": 7000,
        "reason": "cap",
        "first_ts": format_ts(first_ns),
        "last_ts": format_ts(last_ns),
    }
    assert spool.peek_unreported() == {}
    assert spool.dropped().events == 7  # the history stays for status
    assert up.counters.drop_reports == 1
    assert spool.pending().batches == 0
    assert up.step().outcome == "idle"
    assert len(collector.requests) == 1


def test_loss_report_is_the_newest_batch_and_repeats_after_a_crash(
    spool: Spool, make_uploader: Callable[..., Uploader], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The report is stamped now (newer than the lost data, so the cap evicts it last), and
    sealing it without clearing the counters (a crash) reports the loss again: at least once."""
    seal_n(spool, 2)
    spool.record_loss("cap", 3, 300, 1_700_000_000 * 10**9, 1_700_000_050 * 10**9)
    monkeypatch.setattr(Spool, "forget_reported", lambda self, reported: None)
    before_ns = time.time_ns()

    assert make_uploader().report_drops() == 1
    assert make_uploader().report_drops() == 1  # the next process: reported again

    names = _pending_names(spool)
    reports = [n for n in names if n.n_events == 1 and n.created_ns >= before_ns - 10**6]
    assert len(reports) == 2
    assert max(n.batch_id for n in names) in {n.batch_id for n in reports}


def _pending_names(spool: Spool) -> list[BatchName]:
    root = spool.root / "batches"
    return [
        n
        for day in sorted(root.iterdir())
        for f in day.iterdir()
        if (n := BatchName.parse(f.name)) is not None
    ]


def test_uploader_without_an_encoder_still_uploads_when_losses_are_pending(
    spool: Spool, router: respx.MockRouter, make_uploader: Callable[..., Uploader]
) -> None:
    """An uploader that cannot build events leaves losses counted and goes on uploading."""
    collector = Collector(router)
    spool.record_loss("cap", 1, 100, 1, 2)
    seal_n(spool, 2)
    up = make_uploader(encoder=False)

    assert up.step().outcome == "sent"
    assert len(collector.accepted) == 2
    assert "cap" in spool.peek_unreported()


# --- through a TelemetryClient ----------------------------------------------------------------


def test_client_flush_uploads_every_event(
    router: respx.MockRouter, make_settings: SettingsFactory
) -> None:
    """emit N -> ``flush_sync()``: the collector saw exactly those N events; stats agree."""
    collector = Collector(router)
    n = 25
    client = TelemetryClient(make_settings(batch_max_events=10, linger_ms=10))
    try:
        for i in range(n):
            client.emit("flush_test", {"i": i})
        result = client.flush_sync(timeout=10)
        assert result.ok, result
        assert sorted(e["data"]["i"] for e in collector.accepted) == list(range(n))
        assert len({e["id"] for e in collector.accepted}) == n
        assert client.stats()["uploaded"] == n
        assert client.spool.pending().batches == 0
    finally:
        client.close(timeout=5)


def test_client_close_with_a_hung_collector_returns_in_time_and_keeps_the_batch(
    router: respx.MockRouter, make_settings: SettingsFactory
) -> None:
    """``close()`` returns within the shutdown timeout while a request hangs; the batch stays.

    The uploader thread stuck in the request is abandoned; once the request returns it
    ends cleanly (no warning, no exception).
    """
    started, release = threading.Event(), threading.Event()

    def hang(request: httpx.Request, events: list[dict[str, Any]]) -> httpx.Response:
        started.set()
        release.wait(600)  # far beyond any bound below: waiting for it would be a hang
        return httpx.Response(503)

    Collector(router, hang)
    shutdown = 0.5
    client = TelemetryClient(make_settings(shutdown_timeout=shutdown, linger_ms=5))
    abandoned: list[threading.Thread] = []
    try:
        client.emit("close_test", {"i": 1})
        wait_until(started.is_set, what="the upload request started")
        t0 = time.monotonic()
        result = client.close()
        elapsed = time.monotonic() - t0
        abandoned = [t for t in threading.enumerate() if t.name == "telemetry-uploader"]

        assert elapsed < 60.0  # generous: only waiting for the hung request (600 s) fails it
        assert not result.ok
        assert result.pending_events == 1
        assert client.spool.pending().events == 1  # on disk for the next client
        assert abandoned  # still stuck in the request: close() did not wait for it
        assert all(t.daemon for t in abandoned)
    finally:
        release.set()
        for t in abandoned:
            t.join(10)
    assert not any(t.is_alive() for t in abandoned)
