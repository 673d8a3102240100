"""Reference collector on its database, through the HTTP API, on SQLite and PostgreSQL.

Two collectors on one database (replicas: one SQLite data dir, or one PostgreSQL
database) store a batch delivered to both at once exactly once, and a reader paging by
cursor while batches arrive from several threads never skips or repeats an event.
The sessions endpoint answers the contract's shape and filters.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from conftest import CollectorHandle, collector_event

NDJSON = {"Content-Type": "application/x-ndjson"}
HANG_BOUND_S = 60.0


def ndjson(events: list[dict[str, Any]]) -> bytes:
    return b"".join(orjson.dumps(e) + b"\n" for e in events)


def post_ok(http: httpx.Client, events: list[dict[str, Any]], key: str | None = None) -> None:
    headers = {**NDJSON, **({"Idempotency-Key": key} if key else {})}
    response = http.post("/api/v1/events", content=ndjson(events), headers=headers)
    assert response.json() == {"accepted": len(events), "duplicate": False}


@pytest.fixture(params=["sqlite", "postgres"])
def replicas(
    request: pytest.FixtureRequest, collector_factory: Any, tmp_path: Path
) -> Callable[..., CollectorHandle]:
    """``make(**config)``: a collector on this test's database; each call is another
    replica (SQLite: the same data dir; PostgreSQL: its own data dir, the same URL)."""
    url = request.getfixturevalue("postgres_url") if request.param == "postgres" else None
    made = [0]

    def make(**config: Any) -> CollectorHandle:
        made[0] += 1
        if url is not None:
            config.setdefault("database_url", url)
            config.setdefault("data_dir", tmp_path / f"replica-{made[0]}")
        handle: CollectorHandle = collector_factory(**config)
        return handle

    return make


def test_one_batch_delivered_to_two_replicas_at_once_is_stored_once(
    replicas: Callable[..., CollectorHandle],
) -> None:
    """Eight simultaneous deliveries of one key, alternating between two replicas: one
    stores it, seven answer duplicate; both replicas serve the 40 events once."""
    pair = [replicas(), replicas()]
    body = ndjson([collector_event(i) for i in range(40)])
    start = threading.Barrier(8)
    answers: list[dict[str, Any]] = []

    def deliver(handle: CollectorHandle) -> None:
        with handle.client() as http:
            start.wait()
            headers = {**NDJSON, "Idempotency-Key": "replicated-1"}
            answers.append(http.post("/api/v1/events", content=body, headers=headers).json())

    threads = [threading.Thread(target=deliver, args=(pair[i % 2],)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(HANG_BOUND_S)
    assert sorted(a["duplicate"] for a in answers) == [False] + [True] * 7
    assert sum(a["accepted"] for a in answers) == 40
    for handle in pair:
        events = handle.query()["events"]
        assert sorted(e["seq"] for e in events) == list(range(40))
        assert handle.state.store.check() == []


def _page(http: httpx.Client, cursor: str | None, limit: int) -> dict[str, Any]:
    params: dict[str, Any] = {"limit": limit}
    if cursor is not None:
        params["cursor"] = cursor
    response = http.get("/api/v1/events", params=params)
    assert response.status_code == 200, response.text
    page: dict[str, Any] = response.json()
    return page


def test_cursor_paging_while_batches_arrive_never_skips_or_repeats(
    replicas: Callable[..., CollectorHandle],
) -> None:
    """Four writer threads post 20 batches each (to two replicas) while a reader pages by
    cursor (5 per page). At the end of the stream (``next_cursor`` null) the reader asks
    again from its last cursor: the answer must start with exactly what it already saw
    after that cursor (nothing appeared behind it). It ends with every event once, in
    the order the final listing gives."""
    writer_replica, reader_replica = replicas(), replicas()
    writers, batches, per_batch, limit = 4, 20, 3, 5
    done = threading.Event()

    def write(w: int) -> None:
        with (writer_replica if w % 2 else reader_replica).client() as http:
            for b in range(batches):
                events = [collector_event(w * 1000 + b * 10 + i) for i in range(per_batch)]
                post_ok(http, events, key=f"w{w}-b{b}")

    threads = [threading.Thread(target=write, args=(w,)) for w in range(writers)]
    for t in threads:
        t.start()
    joiner = threading.Thread(target=lambda: ([t.join() for t in threads], done.set()))
    joiner.start()

    seen: list[str] = []
    at_cursor = 0  # how many events come before ``cursor``
    cursor: str | None = None
    refetches = 0
    with reader_replica.client() as http:
        while True:
            finished = done.is_set()  # read before the page: then the page sees everything
            page = _page(http, cursor, limit)
            ids = [e["id"] for e in page["events"]]
            already = seen[at_cursor:]
            assert ids[: len(already)] == already, "an event appeared behind the cursor"
            assert len(ids) >= len(already), "an event vanished"
            seen.extend(ids[len(already) :])
            if page["next_cursor"] is not None:
                assert len(ids) == limit
                cursor, at_cursor = page["next_cursor"], at_cursor + limit
            elif finished:
                break
            else:
                refetches += 1
    joiner.join(HANG_BOUND_S)
    expected = writers * batches * per_batch
    assert len(seen) == len(set(seen)) == expected
    assert seen == [e["id"] for e in reader_replica.query()["events"]]
    assert reader_replica.query()["total"] == expected


SESSION_KEYS = [
    "session_id",
    "user_id",
    "app",
    "first_ts",
    "last_ts",
    "events",
    "errors",
    "llm_calls",
    "input_tokens",
    "output_tokens",
]


def _sessions(handle: CollectorHandle, **params: Any) -> dict[str, Any]:
    with handle.client() as http:
        response = http.get("/api/v1/sessions", params=params)
    assert response.status_code == 200, response.text
    page: dict[str, Any] = response.json()
    return page


def test_sessions_answer_the_contract_shape_most_recent_first(
    replicas: Callable[..., CollectorHandle],
) -> None:
    """Each session: the contract's keys, errors/llm_calls/tokens summed across batches
    and replicas, first/last ts as UTC RFC 3339; most recent last_ts first."""
    a, b = replicas(), replicas()
    llm = {"provider": "openai", "model": "m", "input_tokens": 12, "output_tokens": 30}
    s1 = [
        collector_event(0, session_id="s1", ts="2026-11-21T10:00:00+02:00"),  # 08:00Z
        collector_event(1, session_id="s1", ts="2026-11-21T08:30:00Z", type="error"),
        collector_event(2, session_id="s1", ts="2026-11-21T08:10:00Z", type="llm_call", data=llm),
    ]
    s2 = [collector_event(3, session_id="s2", ts="2026-11-21T09:00:00Z", user_id="bob", app="x")]
    s1_more = [
        collector_event(4, session_id="s1", ts="2026-11-21T08:45:00Z", type="llm_call", data=llm)
    ]
    for handle, events in ((a, s1), (b, s2), (b, s1_more)):
        with handle.client() as http:
            post_ok(http, events)
    page = _sessions(a)
    assert page["next_cursor"] is None
    assert page["sessions"] == [
        {
            "session_id": "s2",
            "user_id": "bob",
            "app": "x",
            "first_ts": "2026-11-21T09:00:00.000000Z",
            "last_ts": "2026-11-21T09:00:00.000000Z",
            "events": 1,
            "errors": 0,
            "llm_calls": 0,
            "input_tokens": 0,
            "output_tokens": 0,
        },
        {
            "session_id": "s1",
            "user_id": "alice",
            "app": "tests",
            "first_ts": "2026-11-21T08:00:00.000000Z",
            "last_ts": "2026-11-21T08:45:00.000000Z",
            "events": 4,
            "errors": 1,
            "llm_calls": 2,
            "input_tokens": 24,
            "output_tokens": 60,
        },
    ]
    assert all(list(s) == SESSION_KEYS for s in page["sessions"])


def test_sessions_filter_by_user_app_and_time_and_page_by_cursor(
    replicas: Callable[..., CollectorHandle],
) -> None:
    """user_id, app, and since/until (sessions whose span overlaps [since, until));
    limit + cursor page through them without repeats."""
    handle = replicas()
    events = [
        collector_event(i, session_id=f"s{i}", ts=f"2026-11-21T{10 + i:02d}:00:00Z")
        for i in range(6)
    ]
    events += [
        collector_event(10, session_id="s0", ts="2026-11-21T10:30:00Z"),  # s0 spans 10:00-10:30
        collector_event(11, session_id="b", user_id="bob", app="other"),
    ]
    with handle.client() as http:
        post_ok(http, events)

    def ids(**params: Any) -> list[str]:
        return [s["session_id"] for s in _sessions(handle, **params)["sessions"]]

    assert ids() == ["s5", "s4", "s3", "s2", "s1", "s0", "b"]
    assert ids(user_id="bob") == ids(app="other") == ["b"]
    assert ids(user_id="alice", app="other") == []
    assert ids(since="2026-11-21T13:00:00Z") == ["s5", "s4", "s3"]
    assert ids(until="2026-11-21T10:00:00.000001Z") == ["s0"]  # b starts at 10:00:11
    assert ids(since="2026-11-21T10:15:00Z", until="2026-11-21T11:00:00Z") == ["s0"]
    pages: list[list[str]] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 3, **({"cursor": cursor} if cursor else {})}
        page = _sessions(handle, **params)
        pages.append([s["session_id"] for s in page["sessions"]])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert pages == [["s5", "s4", "s3"], ["s2", "s1", "s0"], ["b"]]
    with handle.client() as http:
        for params, detail in (
            ({"limit": "1001"}, "limit must be an integer between 0 and 1000"),
            ({"limit": "-1"}, "limit must be an integer between 0 and 1000"),
            ({"since": "noon"}, "since must be an RFC 3339 timestamp with offset"),
            ({"cursor": "zzzz"}, "cursor is not one this collector issued"),
        ):
            response = http.get("/api/v1/sessions", params=params)
            assert (response.status_code, response.json()) == (400, {"detail": detail})
        assert len(http.get("/api/v1/sessions", params={"limit": 1000}).json()["sessions"]) == 7
