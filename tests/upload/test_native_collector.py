"""The native collector destination (``upload/native.py``) on the wire, and through a client.

A scripted collector (respx) answers the requests: headers, bodies, 413 splits, attachments,
what refusals say (never the token), the kill switch header. The uploader's own logic
(retry matrix, pauses, replay, acknowledgements) is in ``test_uploader.py``, against the
destinations of ``telemetry_client.testing``.
"""

from __future__ import annotations

import gzip
import logging
import os
import random
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import respx
import upload_kit
import zstandard
from conftest import wait_until
from upload_kit import (
    ENDPOINT,
    TOKEN,
    Answer,
    Collector,
    SettingsFactory,
    assert_released,
    batch_path,
    decode,
    envelope,
    jsonl,
    script,
    seal,
    seal_n,
)

import telemetry_client
from telemetry_client import TelemetryClient
from telemetry_client.spool import Spool
from telemetry_client.testing import FakeClock
from telemetry_client.upload import Control, Outcome, Step, Uploader
from telemetry_client.upload.loop import KILL_SWITCH_POLL_S

# The shared fixtures (upload_kit).
clock = upload_kit.clock
make_settings = upload_kit.make_settings
make_uploader = upload_kit.make_uploader
router = upload_kit.router
spool = upload_kit.spool


# --- 2xx, headers, body ---------------------------------------------------------------------------


def test_2xx_acks_the_batch_and_counts_it(
    spool: Spool, router: respx.MockRouter, make_uploader: Callable[..., Uploader]
) -> None:
    """A 2xx answer removes the batch from the spool and counts its events, batches and bytes."""
    collector = Collector(router)
    name = seal_n(spool, 3)
    up = make_uploader()

    step = up.step()

    assert step.outcome == Outcome.SENT
    assert (step.events, step.bytes, step.wait_s) == (3, name.n_bytes, 0.0)
    assert step.result is not None
    assert step.result.status == 200
    assert spool.pending().batches == 0
    assert spool.dead_letters() == []
    assert [e["id"] for e in collector.accepted] == ["e-0000", "e-0001", "e-0002"]
    c = up.counters
    assert (c.uploaded, c.uploaded_batches, c.uploaded_bytes, c.retries) == (3, 1, name.n_bytes, 0)
    assert up.step().outcome == Outcome.IDLE
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

    assert step.outcome == Outcome.SENT
    (request,) = collector.requests
    assert request.headers["content-encoding"] == "gzip"
    assert gzip.decompress(request.content) == jsonl(events)
    assert spool.pending().batches == 0


# --- network errors, idempotency keys ---------------------------------------------------------


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

    assert step.outcome == Outcome.RETRY
    assert step.result is not None
    assert (step.result.status, step.result.error) == (None, error)
    assert not step.hard
    assert 0.0 <= step.wait_s <= 0.5  # first failure: uniform(0, initial)
    assert (up.counters.retries, up.counters.uploaded) == (1, 0)
    assert_released(spool, name)


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
    assert second.step().outcome == Outcome.SENT

    assert collector.keys == [name.batch_id] * 4
    assert spool.pending().batches == 0


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

    assert step.outcome == Outcome.SENT
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
    c = up.describe()
    assert (c["uploaded"], c["degraded_events"], c["split_batches"], c["rejected"]) == (7, 1, 1, 0)


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

    assert make_uploader().step().outcome == Outcome.RETRY
    assert spool.pending().batches == 1
    attempt["n"] = 1
    assert make_uploader().step().outcome == Outcome.SENT

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

    assert step.outcome == Outcome.DEAD_LETTER
    assert len(collector.requests) == 2  # the batch, then the degraded event
    assert "$degraded" in decode(collector.requests[1])[0]["data"]
    assert [n.batch_id for n in spool.dead_letters()] == [name.batch_id]
    assert spool.pending().batches == 0
    assert up.counters.rejected == 1


# --- 401/403/404/405: what a pause says -----------------------------------------------------------


def all_spool_bytes(root: Path) -> Iterator[tuple[Path, bytes]]:
    """Every file under the spool, and the decompressed content of compressed ones."""
    for dirpath, _dirs, files in os.walk(root):
        for fn in files:
            p = Path(dirpath) / fn
            data = p.read_bytes()
            yield p, data
            if fn.endswith(".zst"):
                yield p, zstandard.ZstdDecompressor().decompress(data)


Refuse = Callable[[int], tuple[Uploader, Step, str]]


@pytest.fixture
def refuse(
    spool: Spool,
    router: respx.MockRouter,
    make_uploader: Callable[..., Uploader],
    caplog: pytest.LogCaptureFixture,
) -> Refuse:
    """``refuse(status)``: one step against a collector answering ``status`` -> the uploader,
    the step and the one warning it logged."""

    def run(status: int) -> tuple[Uploader, Step, str]:
        caplog.set_level(logging.DEBUG, logger="telemetry_client")
        Collector(router, script(status))
        seal_n(spool, 2)
        up = make_uploader()
        step = up.step()
        (warning,) = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
        return up, step, warning

    return run


@pytest.mark.parametrize("status", [401, 403])
def test_auth_refusal_names_status_url_and_setting_never_the_token(
    refuse: Refuse, spool: Spool, caplog: pytest.LogCaptureFixture, status: int
) -> None:
    """401/403: the warning names the status, the endpoint and TELEMETRY_TOKEN; the token
    itself is in no log line, step, counter, status file or spool file (the pause itself is
    tested in test_uploader.py)."""
    up, step, message = refuse(status)

    assert step.outcome == Outcome.AUTH_PAUSE
    assert f"HTTP {status} at {ENDPOINT}: check TELEMETRY_TOKEN" in message
    assert "check TELEMETRY_TOKEN" in (up.blocked_reason() or "")
    assert TOKEN not in caplog.text
    assert TOKEN not in repr(step)
    assert TOKEN not in repr(up.describe()) + repr(up.last.read())
    for path, data in all_spool_bytes(spool.root):
        assert TOKEN.encode() not in data, path


@pytest.mark.parametrize("status", [404, 405])
def test_wrong_endpoint_names_the_path_to_check_not_the_token(refuse: Refuse, status: int) -> None:
    """404/405 (a wrong TELEMETRY_ENDPOINT path): the warning, ``blocked_reason`` (what flush
    prints) and the last outcome (what status shows) name the status, the URL and the path
    to check; nothing says the token is wrong."""
    up, step, warning = refuse(status)

    assert step.outcome == Outcome.ENDPOINT_PAUSE
    expected = f"HTTP {status} at {ENDPOINT}: check the path of TELEMETRY_ENDPOINT"
    if status == 405:
        expected = f"HTTP 405 at {ENDPOINT} (it does not accept POST): check the path"
    assert expected in warning
    reason = up.blocked_reason() or ""
    assert expected in reason
    last = up.last.read()
    assert last is not None
    assert last["outcome"] == "wrong_endpoint"
    assert expected in last["detail"]
    for text in (warning, reason, last["detail"]):
        assert "TOKEN" not in text
        assert "credentials" not in text


@pytest.mark.parametrize(
    ("status", "url", "shown"),
    [
        (
            401,
            "https://bob:hunter2@collector.test:8443/v1/events?key=qs-secret",
            "HTTP 401 at https://collector.test:8443/v1/events",
        ),
        (
            404,
            "https://bob:hunter2@collector.test:8443/?key=qs-secret",
            "HTTP 404 at https://collector.test:8443/: check the path",
        ),
    ],
)
def test_refusal_warnings_never_show_credentials_or_query_of_the_endpoint(
    spool: Spool,
    router: respx.MockRouter,
    make_uploader: Callable[..., Uploader],
    make_settings: SettingsFactory,
    caplog: pytest.LogCaptureFixture,
    status: int,
    url: str,
    shown: str,
) -> None:
    """User info and query of the endpoint URL stay out of what names the URL."""
    caplog.set_level(logging.WARNING, logger="telemetry_client")
    router.post(url).mock(return_value=httpx.Response(status))
    seal_n(spool, 1)
    up = make_uploader(make_settings(endpoint=url))

    step = up.step()

    assert shown in caplog.text
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

    assert step.outcome == Outcome.ENDPOINT_PAUSE
    assert collector.requests == []
    assert_released(spool, name)
    assert f"HTTP 404 at {blobs}: check the path of TELEMETRY_ATTACHMENTS_ENDPOINT" in caplog.text


# --- kill switch ----------------------------------------------------------------------------------


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

    assert up.step().outcome == Outcome.SENT  # the answer that carries the switch is still a 2xx
    control = orjson.loads((spool.root / "state" / "control.json").read_bytes())
    assert control["disabled_until"] == start + 60
    assert up.kill_switch.until == start + 60

    step = up.step()
    assert (step.outcome, step.hard) == (Outcome.KILL_SWITCH, True)
    assert 0 < step.wait_s <= KILL_SWITCH_POLL_S
    sibling = make_uploader()  # another process on the same spool
    assert sibling.kill_switch.until == start + 60
    assert sibling.step().outcome == Outcome.KILL_SWITCH
    assert sibling.blocked_reason() is not None
    clock.advance(59)
    assert up.step().outcome == Outcome.KILL_SWITCH
    assert collector.keys == [first.batch_id]
    assert spool.pending().batches == 1  # spooled data is kept

    clock.advance(1.5)
    assert up.step().outcome == Outcome.SENT
    assert up.kill_switch.until == 0.0
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
    inner: list[Outcome] = []

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

    assert b.step().outcome == Outcome.SENT
    assert inner == [Outcome.SENT, Outcome.KILL_SWITCH]
    assert Control(spool.root).disabled_until() == 0.0
    assert a.step().outcome == Outcome.SENT
    assert a.kill_switch.until == 0.0
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
    assert make_uploader(settings).step().outcome == Outcome.SENT  # clock: the real time, whole s

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


def test_kill_switch_heard_by_a_running_client_stops_its_own_emits(
    router: respx.MockRouter, make_settings: SettingsFactory
) -> None:
    """The native destination hears ``X-Telemetry-Disable`` and the same client's ``emit()``
    drops from then on (counted): the pipeline gives both one kill switch."""
    collector = Collector(router, script((200, {"X-Telemetry-Disable": "60"})))
    client = TelemetryClient(make_settings(linger_ms=5))
    try:
        client.emit("before_kill_switch", {"i": 0})
        assert client.flush_sync(timeout=10).ok
        for i in range(3):
            client.emit("after_kill_switch", {"i": i})
        stats = client.stats()
    finally:
        client.close(timeout=5)
    assert stats["dropped_kill_switch"] == 3
    assert [e["type"] for e in collector.accepted] == ["before_kill_switch"]


# --- through a TelemetryClient --------------------------------------------------------------------


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
