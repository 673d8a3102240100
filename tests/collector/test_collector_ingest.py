"""Reference collector, POST /api/v1/events: encodings, body formats, validation, dedupe."""

from __future__ import annotations

import gzip
import threading
from typing import Any

import httpx
import orjson
import zstandard
from conftest import CollectorHandle, collector_event

NDJSON = "application/x-ndjson"


def ndjson(events: list[dict[str, Any]]) -> bytes:
    return b"".join(orjson.dumps(e) + b"\n" for e in events)


def envelopes(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Stored events as sent: without the collector's ``ingest`` stamp."""
    return [{k: v for k, v in e.items() if k != "ingest"} for e in events]


def zstd(data: bytes) -> bytes:
    return zstandard.ZstdCompressor().compress(data)


def post(
    handle: CollectorHandle,
    body: bytes,
    *,
    encoding: str | None = None,
    content_type: str = NDJSON,
    key: str | None = None,
) -> httpx.Response:
    headers = {"Content-Type": content_type}
    if encoding is not None:
        headers["Content-Encoding"] = encoding
    if key is not None:
        headers["Idempotency-Key"] = key
    with handle.client() as http:
        return http.post("/api/v1/events", content=body, headers=headers)


def test_ndjson_batches_are_stored_in_every_encoding(collector: CollectorHandle) -> None:
    """NDJSON as zstd, gzip, identity (explicit or absent) is stored exactly as sent."""
    sent: list[dict[str, Any]] = []
    bodies = [("zstd", zstd), ("gzip", gzip.compress), ("identity", bytes), (None, bytes)]
    for n, (encoding, compress) in enumerate(bodies):
        events = [
            collector_event(10 * n + i, data={"text": "héllo\nwörld", "i": i}) for i in range(3)
        ]
        response = post(collector, compress(ndjson(events)), encoding=encoding)
        assert response.status_code == 200, encoding
        assert response.json() == {"accepted": 3, "duplicate": False}
        sent += events
    result = collector.query()
    assert (envelopes(result["events"]), result["total"]) == (sent, len(sent))
    assert collector.state.store.check() == []


def test_json_array_bodies_are_accepted(collector: CollectorHandle) -> None:
    """Content-Type application/json with an array of envelopes is a batch too (zstd here)."""
    events = [collector_event(i) for i in range(4)]
    response = post(
        collector,
        zstd(orjson.dumps(events)),
        encoding="zstd",
        content_type="application/json; charset=utf-8",
    )
    assert response.json() == {"accepted": 4, "duplicate": False}
    assert envelopes(collector.query()["events"]) == events


def test_a_body_of_several_zstd_frames_or_gzip_members_is_one_batch(
    collector: CollectorHandle,
) -> None:
    """Concatenated zstd frames / gzip members decode as one stream (what zstd/gzip -c do)."""
    a, b = ndjson([collector_event(0)]), ndjson([collector_event(1)])
    assert post(collector, zstd(a) + zstd(b), encoding="zstd").json()["accepted"] == 2
    assert (
        post(collector, gzip.compress(a) + gzip.compress(b), encoding="gzip").json()["accepted"]
        == 2
    )


GOOD = ndjson([collector_event(1), collector_event(2)])


def _line(**overrides: Any) -> bytes:
    return orjson.dumps(collector_event(3, **overrides)) + b"\n"


def _without(field: str) -> bytes:
    event = collector_event(3)
    del event[field]
    return orjson.dumps(event) + b"\n"


# (case, body, Content-Encoding, Content-Type, expected detail; a trailing "…" = prefix)
MALFORMED: list[tuple[str, bytes, str | None, str, str]] = [
    ("bad zstd", b"this is not zstd", "zstd", NDJSON, "body is not valid zstd (…"),
    (
        "truncated zstd",
        zstd(GOOD * 50)[:-6],
        "zstd",
        NDJSON,
        "body is not valid zstd (truncated frame)",
    ),
    ("zstd then garbage", zstd(GOOD) + b"junk", "zstd", NDJSON, "body is not valid zstd (…"),
    ("bad gzip", b"this is not gzip", "gzip", NDJSON, "body is not valid gzip (…"),
    (
        "truncated gzip",
        gzip.compress(GOOD)[:-12],
        "gzip",
        NDJSON,
        "body is not valid gzip (truncated stream)",
    ),
    ("non-JSON line", GOOD + b"{oops\n", None, NDJSON, "line 3: not valid JSON (…"),
    ("invalid UTF-8", GOOD + b'{"id": "\xff"}\n', None, NDJSON, "line 3: not valid JSON (…"),
    ("array line", GOOD[: len(GOOD) // 2] + b"[1, 2]\n", None, NDJSON, "line 2: not a JSON object"),
    (
        "blank lines count",
        b"\n" + GOOD + _without("ts"),
        None,
        NDJSON,
        'line 4: missing field "ts"',
    ),
    ("missing ts", GOOD + _without("ts"), None, NDJSON, 'line 3: missing field "ts"'),
    ("missing data", GOOD + _without("data"), None, NDJSON, 'line 3: missing field "data"'),
    (
        "seq as string",
        GOOD + _line(seq="7"),
        None,
        NDJSON,
        'line 3: field "seq" must be an integer, got a string',
    ),
    (
        "seq as bool",
        GOOD + _line(seq=True),
        None,
        NDJSON,
        'line 3: field "seq" must be an integer, got a boolean',
    ),
    (
        "seq as float",
        GOOD + _line(seq=1.5),
        None,
        NDJSON,
        'line 3: field "seq" must be an integer, got a number',
    ),
    (
        "seq beyond 64 bits",
        GOOD + _line(seq=2**63),
        None,
        NDJSON,
        'line 3: field "seq" must fit in a signed 64-bit integer',
    ),
    (
        "NUL in session_id",
        GOOD + _line(session_id="s\x00"),
        None,
        NDJSON,
        'line 3: field "session_id" contains a NUL character',
    ),
    (
        "data as list",
        GOOD + _line(data=[1]),
        None,
        NDJSON,
        'line 3: field "data" must be an object, got an array',
    ),
    (
        "data as string",
        GOOD + _line(data="x"),
        None,
        NDJSON,
        'line 3: field "data" must be an object, got a string',
    ),
    (
        "null user_id",
        GOOD + _line(user_id=None),
        None,
        NDJSON,
        'line 3: field "user_id" must be a string, got null',
    ),
    (
        "numeric app_version",
        GOOD + _line(app_version=3),
        None,
        NDJSON,
        'line 3: field "app_version" must be a string or null, got a number',
    ),
    (
        "CamelCase type",
        GOOD + _line(type="ChatTurn"),
        None,
        NDJSON,
        'line 3: field "type" must be snake_case (…',
    ),
    ("empty id", GOOD + _line(id=""), None, NDJSON, 'line 3: field "id" must not be empty'),
    (
        "ts not a time",
        GOOD + _line(ts="yesterday"),
        None,
        NDJSON,
        'line 3: field "ts" is not an RFC 3339 timestamp with offset',
    ),
    (
        "ts without offset",
        GOOD + _line(ts="2026-11-21T10:00:00"),
        None,
        NDJSON,
        'line 3: field "ts" is not an RFC 3339 timestamp with offset',
    ),
    (
        "ts day 32",
        GOOD + _line(ts="2026-01-32T10:00:00Z"),
        None,
        NDJSON,
        'line 3: field "ts" is not an RFC 3339 timestamp with offset',
    ),
    ("empty body", b"", None, NDJSON, "body holds no events"),
    ("blank lines only", b"\n \n\r\n", None, NDJSON, "body holds no events"),
    ("empty zstd frame", zstd(b""), "zstd", NDJSON, "body holds no events"),
    (
        "JSON object, not array",
        orjson.dumps(collector_event()),
        None,
        "application/json",
        "body: not a JSON array (application/json)",
    ),
    ("JSON array of numbers", b"[1]", None, "application/json", "item 1: not a JSON object"),
    (
        "JSON array, bad item 2",
        orjson.dumps([collector_event(), {"id": 1}]),
        None,
        "application/json",
        'item 2: field "id" must be a string, got a number',
    ),
    ("empty JSON array", b"[]", None, "application/json", "body holds no events"),
    ("broken JSON", b'[{"id": ', None, "application/json", "body: not valid JSON (…"),
]


def test_malformed_bodies_are_refused_whole_with_a_precise_message(
    collector: CollectorHandle,
) -> None:
    """Each malformed body answers 400 naming the line/item and fault; nothing is stored."""
    for case, body, encoding, content_type, detail in MALFORMED:
        key = case.replace(" ", "-")
        response = post(collector, body, encoding=encoding, content_type=content_type, key=key)
        assert response.status_code == 400, case
        message = response.json()["detail"]
        if detail.endswith("…"):
            assert message.startswith(detail[:-1]), (case, message)
        else:
            assert message == detail, case
    assert collector.query()["total"] == 0
    # A refused key was never acknowledged: the same key with a good body is stored.
    assert post(collector, GOOD, key="missing-ts").json() == {"accepted": 2, "duplicate": False}
    assert collector.state.store.check() == []


def test_unsupported_encoding_or_content_type_is_415(collector: CollectorHandle) -> None:
    """Content-Encoding other than zstd/gzip/identity, or a non-JSON type, answers 415."""
    cases = [("br", NDJSON), ("deflate", NDJSON), (None, "text/plain"), (None, "")]
    for encoding, content_type in cases:
        response = post(collector, GOOD, encoding=encoding, content_type=content_type)
        assert response.status_code == 415, (encoding, content_type)
        assert "unsupported Content-" in response.json()["detail"]
    assert collector.query()["total"] == 0


def test_a_repeated_idempotency_key_is_stored_once(collector: CollectorHandle) -> None:
    """The first delivery answers accepted N; a replay answers duplicate and stores nothing."""
    body = zstd(GOOD)
    first = post(collector, body, encoding="zstd", key="batch-0001")
    assert first.status_code == 200
    assert first.json() == {"accepted": 2, "duplicate": False}
    for replay in (body, zstd(ndjson([collector_event(9)]))):  # even with another body
        again = post(collector, replay, encoding="zstd", key="batch-0001")
        assert again.status_code == 200
        assert again.json() == {"accepted": 0, "duplicate": True}
    assert collector.query()["total"] == 2


def test_dedupe_survives_a_collector_restart(collector_factory: Any) -> None:
    """A key acknowledged before a restart is still a duplicate after it (same data dir)."""
    first = collector_factory()
    assert post(first, GOOD, key="batch-restart").json()["duplicate"] is False
    first.stop()
    second = collector_factory()
    assert post(second, GOOD, key="batch-restart").json() == {"accepted": 0, "duplicate": True}
    assert post(second, GOOD, key="batch-new").json() == {"accepted": 2, "duplicate": False}
    assert second.query()["total"] == 4
    assert second.state.store.check() == []


def test_concurrent_deliveries_of_one_key_store_it_once(collector: CollectorHandle) -> None:
    """Eight simultaneous deliveries of one batch: one stores it, seven are duplicates."""
    body = zstd(ndjson([collector_event(i) for i in range(50)]))
    start = threading.Barrier(8)
    answers: list[dict[str, Any]] = []

    def deliver() -> None:
        with collector.client() as http:
            start.wait()
            response = http.post(
                "/api/v1/events",
                content=body,
                headers={
                    "Content-Type": NDJSON,
                    "Content-Encoding": "zstd",
                    "Idempotency-Key": "k",
                },
            )
        answers.append(response.json())

    threads = [threading.Thread(target=deliver) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(a["duplicate"] for a in answers) == [False] + [True] * 7
    assert collector.query()["total"] == 50


def test_batches_without_a_key_are_not_deduplicated(collector: CollectorHandle) -> None:
    """Without Idempotency-Key each delivery is stored (at-least-once is the sender's choice)."""
    for _ in range(2):
        assert post(collector, GOOD).json() == {"accepted": 2, "duplicate": False}
    assert collector.query()["total"] == 4


def test_an_ill_formed_idempotency_key_is_refused(collector: CollectorHandle) -> None:
    """An Idempotency-Key with spaces or over 256 characters answers 400."""
    for key in ("has space", "k" * 257, "tab\there"):
        response = post(collector, GOOD, key=key)
        assert response.status_code == 400, key
        assert response.json()["detail"] == "Idempotency-Key must be 1-256 visible ASCII characters"
    assert post(collector, GOOD, key="k" * 256).status_code == 200


def test_fields_beyond_the_envelope_are_kept(collector: CollectorHandle) -> None:
    """A newer client's extra envelope fields are stored, not refused (rolling upgrades)."""
    event = collector_event(1, trace_id="abc", schema=2)
    assert post(collector, ndjson([event])).status_code == 200
    assert envelopes(collector.query()["events"]) == [event]
