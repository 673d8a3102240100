"""OTLP export end to end (docs/otlp.md): a real client, a real OTLP/HTTP receiver.

The receiver (``otlp_receiver.py``) is uvicorn on 127.0.0.1 decoding with
``opentelemetry-proto``; it also takes native batches, so one server plays both
destinations. Synchronisation is on what the receiver or the spool shows (``wait_until``),
never on sleeps; timeouts are hang bounds only.
"""

from __future__ import annotations

import io
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from _fake_llm import serve_fake_llm
from conftest import child_env, wait_until
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsPartialSuccess,
    ExportLogsServiceResponse,
)
from otlp_receiver import Receiver, serve_receiver

from telemetry_client import TelemetryClient, TelemetrySettings
from telemetry_client.cli.status import show_status, status_dict
from telemetry_client.integrations.httpx import instrumented_http_client
from telemetry_client.spool import Spool
from telemetry_client.upload.otlp.spans import run_ids

SECRET = "otlp-secret-" + os.urandom(6).hex()
CHILD = Path(__file__).with_name("otlp_crash_child.py")
FAST = {
    "fsync": "off",
    "linger_ms": 10,
    "upload_backoff_initial": 0.02,
    "upload_backoff_max": 0.1,
    "replay_rate": 0,
    "app": "otlp-tests",
    "app_version": "9.9.9",
    "machine_id": "machine-1",
}


@pytest.fixture
def rx() -> Iterator[Receiver]:
    with serve_receiver() as receiver:
        yield receiver


@pytest.fixture
def make(settings_factory: Callable[..., TelemetrySettings]) -> Callable[..., TelemetrySettings]:
    def build(**overrides: Any) -> TelemetrySettings:
        return settings_factory(**{**FAST, **overrides})

    return build


def attrs(kvs: Any) -> dict[str, Any]:
    out = {}
    for kv in kvs:
        which = kv.value.WhichOneof("value")
        out[kv.key] = getattr(kv.value, which) if which else None
    return out


def test_a_run_with_its_llm_call_reaches_the_receiver_as_one_trace(
    rx: Receiver, make: Callable[..., TelemetrySettings], caplog: pytest.LogCaptureFixture
) -> None:
    """A recorded run with a real (instrumented) LLM call and a tool call: spans with the
    GenAI attributes in one trace, the other events as log records, gzip protobuf with the
    configured headers, and the headers' secret in no log line."""
    caplog.set_level(logging.DEBUG)
    settings = make(
        otlp_endpoint=rx.base,
        otlp_headers=f"Authorization=Bearer%20{SECRET},x-tenant=acme",
    )
    with serve_fake_llm() as llm, TelemetryClient(settings) as client:
        http = instrumented_http_client(
            client, provider_overrides={f"127.0.0.1:{llm.port}": "openai"}
        )
        with client.run(toolchain="claude", model="sonnet") as run:
            run.prompt_sent("say hello")
            answer = http.post(
                f"{llm.base_url}/chat/completions",
                json={"model": "gpt-fake", "messages": [{"role": "user", "content": "hello"}]},
            )
            assert answer.status_code == 200
            run.tool_call("grep", args={"pattern": "x"}, duration_ms=3.0)
        http.close()
        assert client.flush_sync(30).ok
    spans = {s.name: s for s in rx.got.spans()}
    assert set(spans) == {"invoke_agent claude", "execute_tool grep", "chat gpt-fake"}
    trace, root = run_ids(run.run_id)
    assert {s.trace_id for s in spans.values()} == {trace}
    assert spans["chat gpt-fake"].parent_span_id == root
    assert spans["execute_tool grep"].parent_span_id == root
    llm_attrs = attrs(spans["chat gpt-fake"].attributes)
    assert llm_attrs["gen_ai.provider.name"] == "openai"
    assert llm_attrs["gen_ai.usage.input_tokens"] > 0
    assert llm_attrs["gen_ai.usage.output_tokens"] > 0
    assert "gen_ai.input.messages" not in llm_attrs  # content capture is off
    names = {r.event_name for r in rx.got.log_records()}
    assert {"started", "prompt_sent"} <= names
    resource = attrs(rx.got.traces[0].resource_spans[0].resource.attributes)
    assert (resource["service.name"], resource["service.version"], resource["host.id"]) == (
        "otlp-tests",
        "9.9.9",
        "machine-1",
    )
    for headers in rx.got.headers:
        assert headers["authorization"] == f"Bearer {SECRET}"
        assert headers["x-tenant"] == "acme"
        assert headers["content-type"] == "application/x-protobuf"
        assert headers["content-encoding"] == "gzip"
    assert SECRET not in caplog.text
    assert SECRET not in repr(settings)


def test_an_otlp_outage_holds_nothing_back_and_recovers(
    rx: Receiver, make: Callable[..., TelemetrySettings]
) -> None:
    """OTLP answers 503 (and a 429 with Retry-After) while the native collector is up: the
    collector gets every batch at once, the OTLP backlog waits on disk (``status`` shows it
    per destination), and once OTLP is back it gets every event, the collector none twice."""
    settings = make(endpoint=f"{rx.base}/api/v1/events", otlp_endpoint=rx.base, batch_max_events=2)
    rx.answer("/v1/logs", (429, {"Retry-After": "0.05"}, b""))
    rx.always("/v1/logs", (503, {}, b""))
    client = TelemetryClient(settings).start()
    try:
        for i in range(6):
            client.emit("outage_probe", {"i": i})
            if i % 2 == 1:
                assert client.flush_sync(0.01) is not None  # seal this pair (not delivered)
        wait_until(lambda: len(rx.got.native_events) == 6, 20, what="collector has all six")

        def per_destination() -> tuple[int, int]:
            p = status_dict(settings)["pending_by_destination"]
            return p["collector"]["events"], p["otlp"]["events"]

        wait_until(lambda: per_destination() == (0, 6), 10, what="pending: otlp only")
        wait_until(lambda: rx.got.hits.get("/v1/logs", 0) >= 3, 10, what="OTLP retried")
        rx.always("/v1/logs", None)  # the backend is back
        assert client.flush_sync(20).ok
    finally:
        client.close(5)
    assert sorted(r.body.kvlist_value.values[0].value.int_value for r in rx.got.log_records()) == [
        0,
        1,
        2,
        3,
        4,
        5,
    ]
    assert len(rx.got.native_keys) == len(set(rx.got.native_keys))  # none resent
    assert Spool(settings.resolved_spool_dir, max_bytes=1 << 30).pending().batches == 0


def test_a_4xx_dead_letters_the_batch_for_good(
    rx: Receiver, make: Callable[..., TelemetrySettings]
) -> None:
    """Any 4xx but 401/403/404/405/429 is not retried: the batch moves to ``dead/``."""
    settings = make(otlp_endpoint=rx.base)
    rx.always("/v1/logs", (400, {}, b""))
    with TelemetryClient(settings) as client:
        client.emit("refused_probe", {"i": 1})
        client.flush_sync(10)
    info = status_dict(settings)
    assert info["dead_letter_batches"] == 1
    assert info["pending_batches"] == 0
    assert rx.got.hits["/v1/logs"] == 1


def test_partial_success_rejections_are_counted_and_shown_by_status(
    rx: Receiver, make: Callable[..., TelemetrySettings]
) -> None:
    settings = make(otlp_endpoint=rx.base)
    partial = ExportLogsPartialSuccess(rejected_log_records=2, error_message="attribute too long")
    rx.always(
        "/v1/logs",
        (200, {}, ExportLogsServiceResponse(partial_success=partial).SerializeToString()),
    )
    with TelemetryClient(settings) as client:
        for i in range(3):
            client.emit("partial_probe", {"i": i})
        assert client.flush_sync(10).ok
        assert client.stats()["otlp_rejected"] == 2
    info = status_dict(settings)
    assert info["otlp_rejected"]["log_records"] == 2
    assert info["otlp_rejected"]["message"] == "attribute too long"
    out = io.StringIO()
    show_status(settings, out)
    assert "otlp rejected:    0 spans, 2 log records (last: attribute too long)" in out.getvalue()
    assert info["pending_batches"] == 0  # accepted: nothing to retry


def test_a_crash_between_two_acknowledgements_still_delivers_to_the_second(
    rx: Receiver, make: Callable[..., TelemetrySettings], tmp_path: Path
) -> None:
    """A real process: the collector acknowledges, OTLP hangs, the process is SIGKILLed.
    The next client on the spool delivers to OTLP, and does not resend to the collector."""
    spool_dir = tmp_path / "spool"
    rx.hang("/v1/logs")
    env = child_env(
        spool_dir,
        TELEMETRY_ENDPOINT=f"{rx.base}/api/v1/events",
        TELEMETRY_OTLP_ENDPOINT=rx.base,
        TELEMETRY_FSYNC="off",
        TELEMETRY_LINGER_MS="10",
    )
    proc = subprocess.Popen([sys.executable, str(CHILD)], env=env, stdout=subprocess.DEVNULL)
    try:
        assert rx.hanging.wait(30), "the child never reached the OTLP receiver"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert len(rx.got.native_keys) == 1
    assert rx.got.log_records() == []
    rx.release()
    settings = make(spool_dir=spool_dir, endpoint=f"{rx.base}/api/v1/events", otlp_endpoint=rx.base)
    per = status_dict(settings)["pending_by_destination"]
    assert (per["collector"]["events"], per["otlp"]["events"]) == (0, 3)
    with TelemetryClient(settings) as client:
        assert client.flush_sync(20).ok
    assert len(rx.got.native_keys) == 1  # the collector's acknowledgement survived the crash
    assert sorted(r.event_name for r in rx.got.log_records()) == ["crash_probe"] * 3
