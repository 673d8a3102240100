"""Reference collector: public API, auth, health, kill switch, metrics and the query endpoint.

Every test talks to a real uvicorn on 127.0.0.1 (the ``collector`` fixtures in conftest).
Ingestion, limits, storage, attachments and the CLI have their own ``test_collector_*`` files.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import re
from typing import Any

import httpx
import orjson
import pytest
import zstandard
from conftest import COLLECTOR_TOKEN, CollectorHandle, collector_event

import telemetry_client.collector as collector_pkg
from telemetry_client.collector import _decode
from telemetry_client.events import ENVELOPE_FIELDS

NDJSON = {"Content-Type": "application/x-ndjson"}


def ndjson(events: list[dict[str, Any]]) -> bytes:
    return b"".join(orjson.dumps(e) + b"\n" for e in events)


def envelopes(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Stored events as sent: without the collector's ``ingest`` stamp."""
    return [{k: v for k, v in e.items() if k != "ingest"} for e in events]


def post_events(
    handle: CollectorHandle, events: list[dict[str, Any]], *, key: str | None = None
) -> httpx.Response:
    headers = {**NDJSON, "Content-Encoding": "zstd"}
    if key is not None:
        headers["Idempotency-Key"] = key
    body = zstandard.ZstdCompressor().compress(ndjson(events))
    with handle.client() as http:
        return http.post("/api/v1/events", content=body, headers=headers)


def test_public_names_are_exactly_the_documented_ones() -> None:
    """The package exports CollectorConfig, TokenSpec, create_app, running_collector and
    main, sorted."""
    assert collector_pkg.__all__ == [
        "CollectorConfig",
        "TokenSpec",
        "create_app",
        "main",
        "running_collector",
    ]
    for name in collector_pkg.__all__:
        assert getattr(collector_pkg, name) is not None


def test_validated_fields_are_the_envelope_fields() -> None:
    """The collector validates exactly the envelope the client writes, in the same order."""
    assert tuple(name for name, _, _ in _decode._FIELD_TYPES) == ENVELOPE_FIELDS


def test_config_refuses_to_start_without_a_token(tmp_path: Any) -> None:
    """No token and no allow_no_auth is a clear error, before anything is created."""
    with pytest.raises(ValueError, match="no token configured"):
        collector_pkg.CollectorConfig(data_dir=tmp_path / "d")
    assert not (tmp_path / "d").exists()
    collector_pkg.CollectorConfig(data_dir=tmp_path / "d", allow_no_auth=True)


def test_health_answers_without_a_token(collector: CollectorHandle) -> None:
    """GET /api/v1/health needs no auth and says ok, for the database too."""
    response = httpx.get(collector.health_url)
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "database": "ok"}


AUTHED_REQUESTS = [
    ("POST", "/api/v1/events"),
    ("GET", "/api/v1/events"),
    ("OPTIONS", "/api/v1/events"),
    ("GET", "/api/v1/sessions"),
    ("POST", "/api/v1/attachments"),
    ("GET", "/api/v1/attachments/" + "0" * 64),
    ("HEAD", "/api/v1/attachments/" + "0" * 64),
    ("GET", "/metrics"),
]


WRONG_AUTHORIZATIONS = [
    None,
    "Bearer wrong-token",
    f"Bearer {COLLECTOR_TOKEN}x",
    f"Bearer {COLLECTOR_TOKEN[:-1]}",
    f"Basic {COLLECTOR_TOKEN}",
    "Bearer",
]


def test_every_endpoint_but_health_refuses_a_missing_or_wrong_token(
    collector: CollectorHandle,
) -> None:
    """401 (with WWW-Authenticate: Bearer) without the right bearer token, on every endpoint."""
    with httpx.Client(base_url=collector.url) as http:
        for method, path in AUTHED_REQUESTS:
            for authorization in WRONG_AUTHORIZATIONS:
                headers = {} if authorization is None else {"Authorization": authorization}
                response = http.request(method, path, headers=headers, content=b"x")
                assert response.status_code == 401, (method, path, authorization)
                assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_every_configured_token_is_accepted(collector_factory: Any) -> None:
    """Several tokens may be configured; each one authenticates on its own."""
    handle = collector_factory(tokens=["first-token", "second-token"])
    for token in ("first-token", "second-token"):
        response = httpx.get(handle.events_url, headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 200, token


def test_token_never_appears_in_logs_responses_or_stored_data(
    collector: CollectorHandle, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    """Neither the right token nor a near-miss shows up in logs, output, responses or files."""
    caplog.set_level(logging.DEBUG)
    near_miss = COLLECTOR_TOKEN[:-1] + "Z"
    texts: list[str] = []
    with httpx.Client(base_url=collector.url) as http:
        for token in (COLLECTOR_TOKEN, near_miss, None):
            headers = {} if token is None else {"Authorization": f"Bearer {token}"}
            for response in (
                http.post(
                    "/api/v1/events",
                    content=ndjson([collector_event()]),
                    headers={**headers, **NDJSON},
                ),
                http.post("/api/v1/events", content=b"not json\n", headers={**headers, **NDJSON}),
                http.post(
                    "/api/v1/events",
                    content=b"x",
                    headers={**headers, "Content-Encoding": "zstd", **NDJSON},
                ),
                http.get("/api/v1/events", params={"limit": "-3"}, headers=headers),
                http.get("/metrics", headers=headers),
                http.post("/api/v1/attachments", content=b"x", headers=headers),
            ):
                texts.append(response.text)
                texts.extend(f"{k}: {v}" for k, v in response.headers.items())
    out, err = capfd.readouterr()
    stored = b"".join(p.read_bytes() for p in collector.data_dir.rglob("*") if p.is_file())
    for secret in (COLLECTOR_TOKEN, near_miss):
        assert secret not in caplog.text
        assert secret not in out + err
        assert all(secret not in text for text in texts)
        assert secret.encode() not in stored
    assert "refused" in caplog.text  # the refusals were logged (at debug), just not the token


def test_kill_switch_header_on_events_and_attachments_responses(collector_factory: Any) -> None:
    """disable_seconds adds X-Telemetry-Disable to every events/attachments response, even a 401."""
    handle = collector_factory(disable_seconds=120)
    with handle.client() as http:
        responses = [
            http.post("/api/v1/events", content=ndjson([collector_event()]), headers=NDJSON),
            http.get("/api/v1/events"),
            http.get("/api/v1/attachments/" + "a" * 64),
            http.head("/api/v1/attachments/" + "a" * 64),
            httpx.post(handle.events_url, content=b"{}"),  # no token: 401, still told to stop
        ]
        assert [r.headers.get("X-Telemetry-Disable") for r in responses] == ["120"] * 5
        assert responses[-1].status_code == 401
        assert "X-Telemetry-Disable" not in http.get("/api/v1/health").headers
        assert "X-Telemetry-Disable" not in http.get("/metrics").headers


def test_kill_switch_can_be_flipped_at_runtime(collector: CollectorHandle) -> None:
    """Setting state.disable_seconds on a running collector turns the header on and off."""
    with collector.client() as http:
        assert "X-Telemetry-Disable" not in http.get("/api/v1/events").headers
        collector.state.disable_seconds = 45
        assert http.get("/api/v1/events").headers["X-Telemetry-Disable"] == "45"
        collector.state.disable_seconds = None
        assert "X-Telemetry-Disable" not in http.get("/api/v1/events").headers


def _metrics(text: str) -> dict[str, float]:
    values: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            series, value = line.rsplit(" ", 1)
            values[series] = float(value)
    return values


def test_metrics_count_requests_events_duplicates_rejections_and_attachments(
    collector: CollectorHandle,
) -> None:
    """/metrics is Prometheus text with the counters the collector's traffic implies."""
    assert (
        post_events(collector, [collector_event(i) for i in range(3)], key="k1").status_code == 200
    )
    assert post_events(collector, [collector_event(0)], key="k1").json()["duplicate"] is True
    with collector.client() as http:
        assert http.post("/api/v1/events", content=b"nope\n", headers=NDJSON).status_code == 400
        blob = b"attachment bytes"
        for sha, status in (("0" * 64, 400), (hashlib.sha256(blob).hexdigest(), 200)):
            headers = {"X-Attachment-SHA256": sha}
            assert (
                http.post("/api/v1/attachments", content=blob, headers=headers).status_code
                == status
            )
        assert httpx.get(collector.metrics_url).status_code == 401
        response = http.get("/metrics")
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    assert re.search(r"^# TYPE telemetry_collector_requests_total counter$", response.text, re.M)
    m = _metrics(response.text)
    p = "telemetry_collector_"
    assert m[p + 'requests_total{method="POST",endpoint="/api/v1/events",status="200"}'] == 2
    assert m[p + 'requests_total{method="POST",endpoint="/api/v1/events",status="400"}'] == 1
    assert m[p + 'requests_total{method="GET",endpoint="/metrics",status="401"}'] == 1
    assert m[p + "events_stored_total"] == 3
    assert m[p + 'stored_bytes_total{kind="events"}'] > 0
    assert m[p + 'stored_bytes_total{kind="attachments"}'] == len(blob)
    assert m[p + 'duplicates_total{kind="events"}'] == 1
    assert m[p + 'rejections_total{reason="bad_json"}'] == 1
    assert m[p + 'rejections_total{reason="sha256_mismatch"}'] == 1
    assert m[p + 'rejections_total{reason="unauthorized"}'] == 1
    assert m[p + "attachments_stored_total"] == 1


# -- GET /api/v1/events ------------------------------------------------------------------


def test_query_returns_stored_envelopes_in_commit_order(collector: CollectorHandle) -> None:
    """Events come back as sent, in the order they were stored (batch, then line), whatever
    their ts: the only order a cursor can follow while late events arrive."""
    late = collector_event(1, ts="2026-11-22T08:00:00.000000Z", user_id="bob")
    early = collector_event(2, ts="2026-11-20T23:59:59.999999Z")
    middle = collector_event(3, ts="2026-11-21T12:00:00.000000+05:00")  # 07:00 UTC on the 21st
    assert post_events(collector, [late, early]).status_code == 200
    assert post_events(collector, [middle]).status_code == 200
    result = collector.query()
    assert result["total"] == 3
    assert envelopes(result["events"]) == [late, early, middle]
    stamp = {"token": "token-1", "team": None}
    assert [e["ingest"] for e in result["events"]] == [stamp] * 3


def test_query_filters_by_user_session_type_and_since(collector: CollectorHandle) -> None:
    """user_id, session_id, type and since (ts >= since, any offset) narrow the result."""
    events = [
        collector_event(0, user_id="alice", session_id="s1", type="chat_turn"),
        collector_event(1, user_id="bob", session_id="s1", type="tool_call"),
        collector_event(2, user_id="alice", session_id="s2", type="tool_call"),
        collector_event(3, user_id="Alice", session_id="s2", type="error"),
    ]
    assert post_events(collector, events).status_code == 200

    def ids(**filters: str) -> list[int]:
        return [e["seq"] for e in collector.query(**filters)["events"]]

    assert ids(user_id="alice") == [0, 2]
    assert ids(user_id="Alice") == [3]
    assert ids(session_id="s2") == [2, 3]
    assert ids(type="tool_call") == [1, 2]
    assert ids(user_id="alice", type="tool_call") == [2]
    assert ids(since="2026-11-21T10:00:02Z") == [2, 3]
    assert ids(since="2026-11-21T12:00:01.5+02:00") == [2, 3]  # 10:00:01.5 UTC
    assert ids(user_id="nobody") == []


def test_query_pages_with_limit_and_offset(collector: CollectorHandle) -> None:
    """limit/offset slice the ordered matches; total counts every match."""
    events = [collector_event(i) for i in range(25)]
    assert post_events(collector, events).status_code == 200
    pages = []
    with collector.client() as http:
        for offset in (0, 10, 20, 30):
            page = http.get("/api/v1/events", params={"limit": 10, "offset": offset}).json()
            assert page["total"] == 25
            pages.append(page["events"])
        empty = http.get("/api/v1/events", params={"limit": 0}).json()
        assert (empty["events"], empty["total"]) == ([], 25)
        assert len(http.get("/api/v1/events").json()["events"]) == 25  # default limit 1000
    assert [len(p) for p in pages] == [10, 10, 5, 0]
    assert envelopes([event for page in pages for event in page]) == events


BAD_QUERIES = [
    ({"limit": "10001"}, "limit must be an integer between 0 and 10000"),
    ({"limit": "-1"}, "limit must be an integer between 0 and 10000"),
    ({"limit": "ten"}, "limit must be an integer between 0 and 10000"),
    ({"offset": "-5"}, "offset must be an integer 0 or more"),
    ({"since": "yesterday"}, "since must be an RFC 3339 timestamp with offset"),
    ({"since": "2026-11-21T10:00:00"}, "since must be an RFC 3339 timestamp with offset"),
    ({"until": "tomorrow"}, "until must be an RFC 3339 timestamp with offset"),
    ({"cursor": "not a cursor!"}, "cursor is not one this collector issued"),
    ({"cursor": "bm9wZQ"}, "cursor is not one this collector issued"),  # base64 of "nope"
]


def test_query_refuses_bad_parameters(collector: CollectorHandle) -> None:
    """Bad limit/offset/since/until/cursor answer 400 with a message naming the parameter."""
    with collector.client() as http:
        for params, detail in BAD_QUERIES:
            response = http.get("/api/v1/events", params=params)
            assert response.status_code == 400, params
            assert response.json() == {"detail": detail}


def test_gzip_and_json_array_bodies_are_queryable_like_ndjson(collector: CollectorHandle) -> None:
    """A gzip JSON-array batch is stored and queried exactly like a zstd NDJSON batch."""
    events = [collector_event(i) for i in range(3)]
    with collector.client() as http:
        response = http.post(
            "/api/v1/events",
            content=gzip.compress(orjson.dumps(events)),
            headers={"Content-Type": "application/json", "Content-Encoding": "gzip"},
        )
    assert response.json() == {"accepted": 3, "duplicate": False}
    assert envelopes(collector.query()["events"]) == events
