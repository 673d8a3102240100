"""End to end: real client processes, the real reference collector (uvicorn on 127.0.0.1).

Faults are injected by a TCP proxy between the two (``_netfaults.FaultProxy``): resets for
an outage, withheld responses for slow acks and a hung server. Every scenario checks the
collector's stored events: each emitted event exactly once.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from _netfaults import FaultProxy
from conftest import COLLECTOR_TOKEN, CollectorHandle, child_env, wait_until

from telemetry_client import Spool, TelemetryClient, TelemetrySettings

PROCS = Path(__file__).parent.parent / "_procs"
FAST_RETRY = {
    "upload_backoff_initial": "20ms",
    "upload_backoff_max": "200ms",
    "replay_rate": 0,
    "linger_ms": 20,
}
FAST_RETRY_ENV = {
    "TELEMETRY_UPLOAD_BACKOFF_INITIAL": "20ms",
    "TELEMETRY_UPLOAD_BACKOFF_MAX": "200ms",
    "TELEMETRY_REPLAY_RATE": "0",
    "TELEMETRY_LINGER_MS": "20",
}


@pytest.fixture
def proxy(collector: CollectorHandle) -> Iterator[FaultProxy]:
    port = int(collector.url.rsplit(":", 1)[1])
    with FaultProxy(port) as p:
        yield p


def _markers(collector: CollectorHandle, **filters: Any) -> Counter[str]:
    events = collector.query(**filters)["events"]
    return Counter(str(e["data"].get("marker")) for e in events)


def _run_cli(
    *args: str, env: dict[str, str], timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "telemetry_client", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_outage_then_recovery_without_restarting_the_client(
    settings_factory: Callable[..., TelemetrySettings],
    collector: CollectorHandle,
    proxy: FaultProxy,
) -> None:
    """With the endpoint down, uploads retry; when it returns, everything arrives, once."""
    proxy.mode = "reset"
    settings = settings_factory(endpoint=proxy.events_url(), token=COLLECTOR_TOKEN, **FAST_RETRY)
    with TelemetryClient(settings) as client:
        for i in range(300):
            client.emit("probe", {"marker": f"o-{i}"})
        assert not client.flush_sync(timeout=0.5).ok  # nothing can be delivered yet
        wait_until(lambda: client.stats()["retries"] >= 3, what="uploader retrying")
        assert collector.query()["total"] == 0

        proxy.mode = "pass"
        wait_until(lambda: collector.query()["total"] >= 300, timeout=30, what="recovery")
        assert client.flush_sync(timeout=10).ok
        assert client.stats()["uploaded"] == 300
    markers = _markers(collector)
    assert markers == Counter({f"o-{i}": 1 for i in range(300)})


def test_slow_acks_beyond_the_client_timeout_are_stored_exactly_once(
    settings_factory: Callable[..., TelemetrySettings],
    collector: CollectorHandle,
    proxy: FaultProxy,
) -> None:
    """The collector stores a batch but its answer arrives after the client's timeout:
    the client retries with the same Idempotency-Key and the collector keeps one copy."""
    proxy.mode, proxy.hold_s, proxy.hold_count = "hold", 1.5, 2
    settings = settings_factory(
        endpoint=proxy.events_url(), token=COLLECTOR_TOKEN, upload_timeout="0.5s", **FAST_RETRY
    )
    with TelemetryClient(settings) as client:
        for i in range(50):
            client.emit("probe", {"marker": f"s-{i}"})
        assert client.flush_sync(timeout=30).ok
        stats = client.stats()
    assert stats["retries"] >= 2  # both slow answers timed out on the client
    assert stats["uploaded"] == 50
    assert _markers(collector) == Counter({f"s-{i}": 1 for i in range(50)})
    with collector.client() as http:
        metrics = http.get("/metrics").text
    duplicates = sum(
        float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith("telemetry_collector_duplicates_total{")
    )
    assert duplicates >= 1  # the retried batch reached the collector again and was deduplicated


def test_four_processes_sharing_one_spool_deliver_every_event_once(
    tmp_path: Path, collector: CollectorHandle
) -> None:
    """4 app processes on one spool, each uploading: every event stored exactly once."""
    spool_dir, go = tmp_path / "spool", tmp_path / "go"
    env = child_env(
        spool_dir,
        TELEMETRY_ENDPOINT=collector.events_url,
        TELEMETRY_TOKEN=COLLECTOR_TOKEN,
        TELEMETRY_BATCH_MAX_EVENTS="50",
        **FAST_RETRY_ENV,
    )
    n = 1000
    procs = [
        subprocess.Popen(
            [sys.executable, str(PROCS / "mp_emitter.py"), str(k), str(n), str(go)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for k in range(4)
    ]
    try:
        for p in procs:
            assert p.stdout is not None
            assert p.stdout.readline().strip() == b"ready"
        go.touch()
        for p in procs:
            _out, err = p.communicate(timeout=90)
            assert p.returncode == 0, err.decode()[-2000:]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.communicate()
    markers = _markers(collector)
    assert markers == Counter({f"{k}-{i}": 1 for k in range(4) for i in range(n)})
    assert Spool(spool_dir, max_bytes=1 << 30).pending().batches == 0


def test_sigkill_mid_upload_then_flush_delivers_everything_once(
    tmp_path: Path, collector: CollectorHandle, proxy: FaultProxy
) -> None:
    """An uploader killed while its request is in flight (already stored by the collector):
    ``telemetry-client flush`` sends the rest and the replay, nothing lost or doubled."""
    spool_dir = tmp_path / "spool"
    proxy.mode, proxy.hold_s, proxy.hold_count = "hold", None, 1_000_000  # answers never return
    n = 2500
    env = child_env(
        spool_dir,
        TELEMETRY_ENDPOINT=proxy.events_url(),
        TELEMETRY_TOKEN=COLLECTOR_TOKEN,
        TELEMETRY_UPLOAD_TIMEOUT="60s",
        **FAST_RETRY_ENV,
    )
    child = subprocess.Popen(
        [sys.executable, str(PROCS / "e2e_uploader.py"), str(n)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    spool = Spool(spool_dir, max_bytes=1 << 30)
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == b"emitted"
        # The first batch reached the collector (stored), its answer is withheld, and
        # every event is sealed on disk: now the kill lands mid-request.
        wait_until(lambda: collector.query()["total"] > 0, timeout=30, what="first batch stored")
        wait_until(lambda: spool.pending().events == n, timeout=30, what="all sealed")
        child.send_signal(signal.SIGKILL)
        child.communicate(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
            child.communicate()
    assert child.returncode == -signal.SIGKILL
    stored_before = collector.query()["total"]
    assert 0 < stored_before < n

    flush_env = child_env(
        spool_dir, TELEMETRY_ENDPOINT=collector.events_url, TELEMETRY_TOKEN=COLLECTOR_TOKEN
    )
    result = _run_cli("flush", "--timeout", "60", env=flush_env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert _markers(collector) == Counter({f"k-{i}": 1 for i in range(n)})
    assert spool.pending().batches == 0


def test_attachments_end_to_end_with_hash_verification(
    settings_factory: Callable[..., TelemetrySettings], collector: CollectorHandle
) -> None:
    """Large fields travel as attachments; the collector serves bytes matching the hash."""
    text = "".join(f"line {i}: all good\n" for i in range(5000))  # ~90 KB
    blob = os.urandom(40_000)
    settings = settings_factory(
        endpoint=collector.events_url, token=COLLECTOR_TOKEN, inline_max_bytes="1KiB"
    )
    with TelemetryClient(settings) as client:
        client.emit("tool_call", {"marker": "att", "result": text, "image": blob})
        assert client.flush_sync(timeout=20).ok
        stats = client.stats()
    assert stats["attachments_sent"] == 2
    (event,) = collector.query()["events"]
    refs = {k: v["$attachment"] for k, v in event["data"].items() if isinstance(v, dict)}
    assert set(refs) == {"result", "image"}
    with collector.client() as http:
        for key, raw in (("result", text.encode()), ("image", blob)):
            ref = refs[key]
            assert ref["sha256"] == hashlib.sha256(raw).hexdigest()
            assert ref["size"] == len(raw)
            got = http.get(f"/api/v1/attachments/{ref['sha256']}")
            assert got.status_code == 200
            assert hashlib.sha256(got.content).hexdigest() == ref["sha256"]


def _spooled_offline(spool_dir: Path, n: int) -> None:
    """Fill a spool with ``n`` events from a client that has no endpoint."""
    settings = TelemetrySettings(spool_dir=spool_dir, linger_ms=20)
    with TelemetryClient(settings) as client:
        for i in range(n):
            client.emit("probe", {"marker": f"f-{i}"})
    assert Spool(spool_dir, max_bytes=1 << 30).pending().events == n


@pytest.mark.usefixtures("clean_env")
def test_flush_exit_codes(tmp_path: Path, collector: CollectorHandle) -> None:
    """flush: 2 without an endpoint, 1 when the endpoint is down, 1 when the token is
    refused (nothing dropped), 0 once delivered, 0 when telemetry is disabled."""
    spool_dir = tmp_path / "spool"
    _spooled_offline(spool_dir, 120)

    no_endpoint = _run_cli("flush", env=child_env(spool_dir))
    assert no_endpoint.returncode == 2
    assert "TELEMETRY_ENDPOINT" in no_endpoint.stderr

    with FaultProxy(1) as dead:
        dead.mode = "reset"
        down = _run_cli(
            "flush",
            "--timeout",
            "1",
            env=child_env(spool_dir, TELEMETRY_ENDPOINT=dead.events_url(), **FAST_RETRY_ENV),
        )
    assert down.returncode == 1
    assert "120 events" in down.stdout
    assert "still pending" in down.stdout

    wrong = "wrong-token-" + os.urandom(6).hex()
    refused = _run_cli(
        "flush",
        env=child_env(spool_dir, TELEMETRY_ENDPOINT=collector.events_url, TELEMETRY_TOKEN=wrong),
    )
    assert refused.returncode == 1
    assert "TELEMETRY_TOKEN" in refused.stdout + refused.stderr
    assert wrong not in refused.stdout + refused.stderr
    assert collector.query()["total"] == 0

    good_env = child_env(
        spool_dir, TELEMETRY_ENDPOINT=collector.events_url, TELEMETRY_TOKEN=COLLECTOR_TOKEN
    )
    ok = _run_cli("flush", env=good_env)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "flushed 120 events" in ok.stdout
    assert collector.query()["total"] == 120
    assert COLLECTOR_TOKEN not in ok.stdout + ok.stderr

    again = _run_cli("flush", env=good_env)
    assert again.returncode == 0
    assert "nothing pending" in again.stdout

    disabled = _run_cli("flush", env={**good_env, "TELEMETRY_ENABLED": "0"})
    assert disabled.returncode == 0
    assert "disabled" in disabled.stdout


def test_aclose_is_bounded_against_a_server_that_never_answers(
    settings_factory: Callable[..., TelemetrySettings], collector: CollectorHandle
) -> None:
    """A collector that accepts the connection and never answers cannot hold aclose()
    past its timeout; the unsent batch stays sealed on disk."""
    with FaultProxy(1) as hung:
        hung.mode = "blackhole"
        settings = settings_factory(
            endpoint=hung.events_url(),
            token=COLLECTOR_TOKEN,
            upload_timeout="600s",
            shutdown_timeout="1s",
            linger_ms=20,
        )

        async def run() -> float:
            client = TelemetryClient(settings)
            async with client:
                for i in range(10):
                    client.emit("probe", {"marker": f"h-{i}"})
                await asyncio.to_thread(
                    wait_until, hung.request_seen.is_set, 10.0, what="request in flight"
                )
                start = time.monotonic()
            return time.monotonic() - start

        elapsed = asyncio.run(run())
        assert hung.request_seen.is_set()
    # Bounded by the shutdown timeout, not the 600 s upload timeout; the bound is generous so
    # only waiting for the hung request fails it, never a busy machine.
    assert elapsed < 90.0
    spool = Spool(settings.resolved_spool_dir, max_bytes=1 << 30)
    assert spool.pending().events == 10


def test_kill_switch_from_the_collector_pauses_collection_and_shows_in_status(
    tmp_path: Path, settings_factory: Callable[..., TelemetrySettings], collector: CollectorHandle
) -> None:
    """X-Telemetry-Disable on a response stops emits on this spool; status shows until when."""
    collector.state.disable_seconds = 120
    settings = settings_factory(endpoint=collector.events_url, token=COLLECTOR_TOKEN, linger_ms=20)
    with TelemetryClient(settings) as client:
        client.emit("probe", {"marker": "before"})
        client.flush_sync(timeout=10)
        wait_until(lambda: client.stats()["uploaded"] == 1, what="first batch delivered")
        for _ in range(5):
            client.emit("probe", {"marker": "during"})
        assert client.stats()["dropped_kill_switch"] == 5
    status = _run_cli("status", "--json", env=child_env(settings.resolved_spool_dir))
    info = orjson.loads(status.stdout)
    assert info["disabled_until"] is not None
    assert _markers(collector) == Counter({"before": 1})


def test_token_never_appears_in_logs_spool_or_cli_output(
    tmp_path: Path,
    settings_factory: Callable[..., TelemetrySettings],
    collector: CollectorHandle,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Through refused and accepted uploads, the token is in no log line, file or output."""
    caplog.set_level(logging.DEBUG)
    wrong = "sekret-" + os.urandom(8).hex()
    for token in (wrong, COLLECTOR_TOKEN):
        settings = settings_factory(endpoint=collector.events_url, token=token, linger_ms=20)
        with TelemetryClient(settings) as client:
            client.emit("probe", {"marker": token[:3]})
            client.flush_sync(timeout=5)
    env = child_env(
        settings.resolved_spool_dir, TELEMETRY_ENDPOINT=collector.events_url, TELEMETRY_TOKEN=wrong
    )
    outputs = [_run_cli(cmd, env=env) for cmd in ("status", "flush")]
    text = caplog.text + "".join(r.stdout + r.stderr for r in outputs)
    spool = Spool(settings.resolved_spool_dir, max_bytes=1 << 30)
    assert collector.query()["total"] == 2  # the refused event was kept, sent with the good token
    decompressed = b"".join(raw for _, raw in spool.iter_batches_newest_first())
    for secret in (wrong, COLLECTOR_TOKEN):
        assert secret not in text
        assert secret.encode() not in decompressed
        for path in settings.resolved_spool_dir.rglob("*"):
            if path.is_file():
                assert secret.encode() not in path.read_bytes(), path


def _wrong_path_url(collector: CollectorHandle) -> str:
    """The collector's root with user info and a query: no events endpoint there (404)."""
    return collector.url.replace("http://", "http://bob:hunter2@") + "/?key=qs-secret"


@pytest.mark.usefixtures("clean_env")
def test_wrong_endpoint_path_is_reported_as_a_404_by_flush_and_status(
    tmp_path: Path, collector: CollectorHandle
) -> None:
    """TELEMETRY_ENDPOINT without /api/v1/events on the real collector: flush exits 1 saying
    404, the URL (no credentials, no query) and the path to check, never the token; status
    says the events endpoint does not answer; nothing is stored, dropped or dead-lettered."""
    spool_dir = tmp_path / "spool"
    _spooled_offline(spool_dir, 12)
    env = child_env(
        spool_dir, TELEMETRY_ENDPOINT=_wrong_path_url(collector), TELEMETRY_TOKEN=COLLECTOR_TOKEN
    )
    expected = f"HTTP 404 at {collector.url}/: check the path of TELEMETRY_ENDPOINT"

    flush = _run_cli("flush", env=env)
    status = _run_cli("status", env=env)
    status_json = _run_cli("status", "--json", env=env)

    assert flush.returncode == 1, flush.stdout + flush.stderr
    assert f"still pending: the collector answered {expected}" in flush.stdout
    assert "TELEMETRY_TOKEN" not in flush.stdout + flush.stderr
    assert "credentials" not in flush.stdout + flush.stderr
    assert status.returncode == 0, status.stderr
    assert f"reachable:        no: {expected}" in status.stdout
    info = orjson.loads(status_json.stdout)
    assert info["endpoint_reachable"] is False
    assert expected in info["endpoint_check"]
    assert info["last_upload"]["outcome"] == "wrong_endpoint"
    everything = "".join(p.stdout + p.stderr for p in (flush, status, status_json))
    for secret in ("hunter2", "qs-secret", COLLECTOR_TOKEN):
        assert secret not in everything
    assert collector.query()["total"] == 0
    assert info["pending_events"] == 12
    assert info["dead_letter_batches"] == 0
    assert info["dropped_events"] == 0


@pytest.mark.usefixtures("clean_env")
def test_status_probes_the_events_endpoint_itself_and_stores_nothing(
    tmp_path: Path, collector: CollectorHandle
) -> None:
    """status on the right URL says the events endpoint answers; with a refused token it
    says so; on the health URL (which takes no POST) it says no; the probe stores nothing."""
    spool_dir = tmp_path / "spool"

    def reachable(url: str, token: str) -> str:
        env = child_env(spool_dir, TELEMETRY_ENDPOINT=url, TELEMETRY_TOKEN=token)
        proc = _run_cli("status", env=env)
        assert proc.returncode == 0, proc.stderr
        (line,) = [x for x in proc.stdout.splitlines() if x.startswith("reachable:")]
        return line

    good = reachable(collector.events_url, COLLECTOR_TOKEN)
    refused = reachable(collector.events_url, "wrong-token")
    health = reachable(collector.health_url, COLLECTOR_TOKEN)

    assert good == "reachable:        yes (events endpoint answers)"
    assert refused.startswith("reachable:        yes (")
    assert "refused our credentials (HTTP 401): check TELEMETRY_TOKEN" in refused
    assert health.startswith(f"reachable:        no: HTTP 405 at {collector.health_url}")
    assert "check the path of TELEMETRY_ENDPOINT" in health
    assert collector.query()["total"] == 0
    assert not spool_dir.exists()


def test_running_uploader_reports_a_wrong_path_not_an_auth_problem(
    settings_factory: Callable[..., TelemetrySettings],
    collector: CollectorHandle,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An app whose endpoint lacks the path: the uploader warns about a 404 and the path,
    not about credentials; its events stay spooled (not dead-lettered, not dropped)."""
    caplog.set_level(logging.WARNING, logger="telemetry_client")
    settings = settings_factory(endpoint=collector.url, token=COLLECTOR_TOKEN, linger_ms=20)
    with TelemetryClient(settings) as client:
        for i in range(5):
            client.emit("probe", {"marker": f"w-{i}"})
        client.flush_sync(timeout=10)
        wait_until(
            lambda: "check the path of TELEMETRY_ENDPOINT" in caplog.text,
            what="wrong-endpoint warning",
        )
        stats = client.stats()
    assert f"HTTP 404 at {collector.url}/" in caplog.text
    assert "TELEMETRY_TOKEN" not in caplog.text
    assert "credentials" not in caplog.text
    assert stats["rejected"] == 0
    spool = Spool(settings.resolved_spool_dir, max_bytes=1 << 30)
    assert spool.pending().events == 5
    assert spool.dead_letters() == []
    assert collector.query()["total"] == 0
