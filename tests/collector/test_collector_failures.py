"""Reference collector when its database fails: 503 + Retry-After, health, metrics.

The collector runs under uvicorn on a real SQLite store wrapped by :class:`Flaky`, which
raises :class:`StoreUnavailable` from the operations a test switches off (what the real
stores raise when the database is down, locked or slow), with a message that quotes a
database URL holding a password, so the tests also check that nothing logs it.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from conftest import COLLECTOR_TOKEN, collector_event

from telemetry_client.collector import CollectorConfig, running_collector
from telemetry_client.collector._decode import DecodedEvent
from telemetry_client.collector.store.base import (
    AppendResult,
    Attachment,
    AttachmentMeta,
    EventPage,
    EventQuery,
    Ingest,
    ReadScope,
    RetentionResult,
    SessionPage,
    SessionQuery,
    StoreUnavailable,
    TimelinePage,
)
from telemetry_client.collector.store.open import open_store

SECRET = "SECRETPW"  # noqa: S105 - a fake password that must never be logged
URL = f"postgresql://collector:{SECRET}@db.internal:5432/telemetry"
NDJSON = {"Content-Type": "application/x-ndjson"}
BLOB = b"blob bytes"
SHA = hashlib.sha256(BLOB).hexdigest()


class Flaky:
    """A real store whose operations in ``down`` raise StoreUnavailable."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.down: set[str] = set()
        self.calls: list[str] = []

    def _gate(self, op: str) -> None:
        self.calls.append(op)
        if op in self.down or "*" in self.down:
            raise StoreUnavailable(f"cannot reach {URL}: connection refused")

    def has_key(self, key: str) -> bool:
        self._gate("has_key")
        result: bool = self.inner.has_key(key)
        return result

    def append(
        self, events: Sequence[DecodedEvent], key: str | None, ingest: Ingest
    ) -> AppendResult:
        self._gate("append")
        result: AppendResult = self.inner.append(events, key, ingest)
        return result

    def events(self, q: EventQuery, scope: ReadScope) -> EventPage:
        self._gate("events")
        result: EventPage = self.inner.events(q, scope)
        return result

    def sessions(self, q: SessionQuery, scope: ReadScope) -> SessionPage:
        self._gate("sessions")
        result: SessionPage = self.inner.sessions(q, scope)
        return result

    def session_timeline(
        self, session_id: str, *, after: str | None, limit: int, scope: ReadScope
    ) -> TimelinePage:
        self._gate("session_timeline")
        result: TimelinePage = self.inner.session_timeline(
            session_id, after=after, limit=limit, scope=scope
        )
        return result

    def put_attachment(self, sha256: str, content_type: str, data: bytes) -> bool:
        self._gate("put_attachment")
        result: bool = self.inner.put_attachment(sha256, content_type, data)
        return result

    def attachment_meta(self, sha256: str) -> AttachmentMeta | None:
        self._gate("attachment_meta")
        result: AttachmentMeta | None = self.inner.attachment_meta(sha256)
        return result

    def attachment(self, sha256: str, scope: ReadScope) -> Attachment | None:
        self._gate("attachment")
        result: Attachment | None = self.inner.attachment(sha256, scope)
        return result

    def retain(self, cutoff_us: int, *, chunk: int = 5000) -> RetentionResult:
        self._gate("retain")
        result: RetentionResult = self.inner.retain(cutoff_us, chunk=chunk)
        return result

    def ping(self) -> None:
        self._gate("ping")
        self.inner.ping()

    def check(self) -> list[str]:
        result: list[str] = self.inner.check()
        return result

    def close(self) -> None:
        self.inner.close()


@pytest.fixture
def flaky(tmp_path: Path) -> Iterator[tuple[Any, Flaky]]:
    """(running collector, its Flaky store); the store is the test's to close."""
    store = Flaky(open_store(None, tmp_path / "db"))
    config = CollectorConfig(data_dir=tmp_path / "data", tokens=[COLLECTOR_TOKEN])
    try:
        with running_collector(config, store=store) as running:
            yield running, store
    finally:
        store.close()


def client(running: Any) -> httpx.Client:
    headers = {"Authorization": f"Bearer {COLLECTOR_TOKEN}"}
    return httpx.Client(base_url=running.url, headers=headers, timeout=10)


REQUESTS: list[tuple[str, str, str, dict[str, str], bytes]] = [
    # (failing op, method, path, headers, body)
    ("append", "POST", "/api/v1/events", {**NDJSON, "Idempotency-Key": "k-1"}, b""),
    ("has_key", "POST", "/api/v1/events", {**NDJSON, "Idempotency-Key": "k-1"}, b""),
    ("events", "GET", "/api/v1/events", {}, b""),
    ("sessions", "GET", "/api/v1/sessions", {}, b""),
    ("put_attachment", "POST", "/api/v1/attachments", {"X-Attachment-SHA256": SHA}, BLOB),
    ("attachment_meta", "HEAD", f"/api/v1/attachments/{SHA}", {}, b""),
    ("attachment", "GET", f"/api/v1/attachments/{SHA}", {}, b""),
]
EVENT_LINE = orjson.dumps(collector_event(1)) + b"\n"


def test_store_unavailable_answers_503_with_retry_after_everywhere(
    flaky: tuple[Any, Flaky], caplog: pytest.LogCaptureFixture
) -> None:
    """Each endpoint whose store call fails answers 503 {"detail": ...} with Retry-After: 5;
    the failure is counted by operation and logged without the database password."""
    running, store = flaky
    caplog.set_level(logging.DEBUG)
    with client(running) as http:
        for op, method, path, headers, body in REQUESTS:
            store.down = {op}
            response = http.request(method, path, headers=headers, content=body or EVENT_LINE)
            assert response.status_code == 503, (op, response.text)
            assert response.headers["Retry-After"] == "5"
            if method != "HEAD":
                assert response.json() == {"detail": "storage unavailable; retry later"}
            assert running.state.metrics.value("store_errors_total", op) == 1, op
    assert running.state.metrics.value("rejections_total", "storage_unavailable") == len(REQUESTS)
    assert "storage unavailable" in caplog.text
    assert SECRET not in caplog.text


def test_a_batch_refused_with_503_is_stored_once_when_retried(flaky: tuple[Any, Flaky]) -> None:
    """Nothing of a 503'd batch is kept: the retry with the same key stores it, once."""
    running, store = flaky
    headers = {**NDJSON, "Idempotency-Key": "retry-me"}
    with client(running) as http:
        store.down = {"append"}
        assert http.post("/api/v1/events", content=EVENT_LINE, headers=headers).status_code == 503
        store.down = set()
        for duplicate in (False, True):
            response = http.post("/api/v1/events", content=EVENT_LINE, headers=headers)
            assert response.json() == {"accepted": int(not duplicate), "duplicate": duplicate}
        assert http.get("/api/v1/events").json()["total"] == 1
    assert store.check() == []


def test_health_pings_the_store_and_says_degraded_when_it_does_not_answer(
    flaky: tuple[Any, Flaky],
) -> None:
    """200 ok/ok while the ping answers; 503 degraded/unavailable while it fails; no token."""
    running, store = flaky
    assert httpx.get(running.health_url).json() == {"status": "ok", "database": "ok"}
    store.down = {"ping"}
    response = httpx.get(running.health_url)
    assert response.status_code == 503
    assert response.json() == {"status": "degraded", "database": "unavailable"}
    store.down = set()
    assert httpx.get(running.health_url).status_code == 200
    assert store.calls.count("ping") == 3


def _series(text: str) -> dict[str, float]:
    values: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            values[name] = float(value)
    return values


def test_metrics_have_store_latency_per_operation_and_errors(flaky: tuple[Any, Flaky]) -> None:
    """/metrics: a histogram telemetry_collector_store_seconds{op} (cumulative buckets,
    +Inf = count) and telemetry_collector_store_errors_total{op}."""
    running, store = flaky
    with client(running) as http:
        for n in range(3):
            body = orjson.dumps(collector_event(n)) + b"\n"
            assert http.post("/api/v1/events", content=body, headers=NDJSON).status_code == 200
        assert http.get("/api/v1/events").status_code == 200
        store.down = {"events"}
        assert http.get("/api/v1/events").status_code == 503
        store.down = set()
        text = http.get("/metrics").text
    assert re.search(r"^# TYPE telemetry_collector_store_seconds histogram$", text, re.M)
    assert re.search(r"^# TYPE telemetry_collector_store_errors_total counter$", text, re.M)
    m = _series(text)
    p = "telemetry_collector_store_"
    assert m[p + 'seconds_count{op="append"}'] == 3
    assert m[p + 'seconds_bucket{op="append",le="+Inf"}'] == 3
    assert m[p + 'seconds_count{op="events"}'] == 2  # the failed call is timed too
    assert m[p + 'errors_total{op="events"}'] == 1
    assert m[p + 'seconds_sum{op="append"}'] > 0
    buckets = [v for k, v in m.items() if k.startswith(p + 'seconds_bucket{op="append"')]
    assert buckets == sorted(buckets)  # cumulative
    assert p + 'errors_total{op="append"}' not in m


def test_no_store_call_runs_on_the_event_loop(flaky: tuple[Any, Flaky]) -> None:
    """Every store method the app calls runs on a worker thread, has_key included."""
    running, store = flaky
    loop_threads: list[str] = []
    original = store._gate

    def gate(op: str) -> None:
        import asyncio

        with contextlib.suppress(RuntimeError):
            asyncio.get_running_loop()
            loop_threads.append(op)
        original(op)

    store._gate = gate  # type: ignore[method-assign]
    with client(running) as http:
        for _, method, path, headers, body in REQUESTS:
            http.request(method, path, headers=headers, content=body or EVENT_LINE)
    httpx.get(running.health_url)
    assert set(store.calls) >= {op for op, *_ in REQUESTS} | {"ping"}
    assert loop_threads == []
