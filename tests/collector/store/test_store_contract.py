"""The Store contract (docs/collector-store.md), run against every backend.

Each test gets a fresh, empty database: a SQLite file in ``tmp_path`` or a PostgreSQL
database from the ``postgres_url`` fixture (tests/_postgres.py). Events are built
with the collector's own decoder so the stored bodies are the bytes a request would store.
"""

from __future__ import annotations

import hashlib
import random
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from telemetry_client.collector._decode import DecodedEvent, validate_envelope
from telemetry_client.collector.store import (
    BadCursor,
    EventQuery,
    Ingest,
    ReadScope,
    SessionQuery,
    SqliteStore,
    StorageError,
    Store,
    open_store,
)
from telemetry_client.collector.store.sql import encode_cursor, ts_text

S = 1_000_000  # microseconds per second
T0 = 1_795_255_200 * S  # 2026-11-21T10:00:00Z
RED = Ingest("tok-red", "red")
BLUE = Ingest("tok-blue", "blue")
NOTEAM = Ingest("tok-plain")
ALL = ReadScope()


def ev(n: int, *, at: int | None = None, **overrides: Any) -> DecodedEvent:
    """A decoded event number ``n`` at ``T0 + n s`` (or ``at``, epoch µs)."""
    envelope: dict[str, Any] = {
        "id": f"0190f000-0000-7000-8000-{n:012x}",
        "type": "chat_turn",
        "ts": ts_text(T0 + n * S if at is None else at),
        "session_id": "session-1",
        "user_id": "alice",
        "machine_id": "0123456789abcdef",
        "app": "tests",
        "app_version": "1.0",
        "seq": n,
        "data": {"n": n, "text": "héllo\nwörld"},
    }
    envelope.update(overrides)
    return validate_envelope(envelope, f"event {n}")


def ids(events: list[dict[str, Any]]) -> list[str]:
    return [e["id"] for e in events]


def id_of(n: int) -> str:
    return f"0190f000-0000-7000-8000-{n:012x}"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def all_events(store: Store, scope: ReadScope = ALL, **filters: Any) -> list[dict[str, Any]]:
    return store.events(EventQuery(limit=100_000, **filters), scope).events


class Backend:
    """Opens stores on one database and runs raw SQL on it (for schema tests)."""

    def __init__(self, name: str, tmp_path: Path, url: str | None) -> None:
        self.name = name
        self.path = tmp_path / "data" / "collector.db"
        self.url = url
        self.opened: list[Store] = []

    def open(self) -> Store:
        store: Store = (
            SqliteStore.open(self.path) if self.url is None else open_store(self.url, Path("/"))
        )
        self.opened.append(store)
        return store

    def execute(self, sql: str) -> None:
        if self.url is None:
            with sqlite3.connect(self.path) as conn:
                conn.execute(sql)
            conn.close()
        else:
            import psycopg

            with psycopg.connect(self.url, autocommit=True) as pg:
                pg.execute(sql.encode())


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    url = None
    if request.param == "postgres":
        url = request.getfixturevalue("postgres_url")
    b = Backend(request.param, tmp_path, url)
    yield b
    for store in b.opened:
        store.close()


@pytest.fixture
def store(backend: Backend) -> Store:
    return backend.open()


# -- append and read back ---------------------------------------------------------------


def test_events_come_back_byte_identical_with_the_ingest_stamp(store: Store) -> None:
    """Stored bodies are the decoded JSON lines; each event shows who ingested it."""
    red = [ev(i) for i in range(3)]
    plain = [ev(i) for i in range(3, 5)]
    assert store.append(red, "k1", RED).accepted == 3
    result = store.append(plain, "k2", NOTEAM)
    assert (result.accepted, result.duplicate) == (2, False)
    page = store.events(EventQuery(), ALL)
    assert page.total == 5
    assert page.next_cursor is None
    for stored, sent in zip(page.events, red + plain, strict=True):
        stamp = stored.pop("ingest")
        assert orjson.dumps(stored) + b"\n" == sent.line
        if sent in red:
            assert stamp == {"token": "tok-red", "team": "red"}
        else:
            assert stamp == {"token": "tok-plain", "team": None}
    assert store.check() == []


def test_a_repeated_key_stores_nothing_and_reports_duplicate(store: Store) -> None:
    """Same Idempotency-Key again: duplicate, nothing stored, whatever the events are."""
    assert store.append([ev(0), ev(1)], "same", RED).duplicate is False
    again = store.append([ev(2), ev(3), ev(4)], "same", BLUE)
    assert (again.accepted, again.duplicate) == (0, True)
    assert ids(all_events(store)) == [id_of(0), id_of(1)]
    assert store.has_key("same")
    assert not store.has_key("other")
    assert store.sessions(SessionQuery(), ALL).sessions[0]["events"] == 2
    assert store.check() == []


def test_no_key_is_never_deduplicated(store: Store) -> None:
    """Batches without a key are stored every time they are sent."""
    for _ in range(3):
        assert store.append([ev(0), ev(1)], None, RED).duplicate is False
    assert store.events(EventQuery(), ALL).total == 6
    assert store.check() == []


def test_a_batch_failing_midway_stores_nothing(store: Store) -> None:
    """A row the database refuses (seq beyond a signed 64-bit integer, which the decoder
    refuses too, so it is built past it) after good rows: nothing of the batch is stored,
    its key stays free, and the retry is stored once."""
    bad = [ev(0), ev(1), ev(2), ev(3)._replace(seq=2**63), ev(4)]
    with pytest.raises(Exception) as failure:
        store.append(bad, "k", RED)
    assert not isinstance(failure.value, (AssertionError, BadCursor))
    assert store.events(EventQuery(), ALL).total == 0
    assert store.sessions(SessionQuery(), ALL).sessions == []
    assert not store.has_key("k")
    assert store.append([ev(0), ev(1)], "k", RED).accepted == 2
    assert store.events(EventQuery(), ALL).total == 2
    assert store.check() == []


# -- queries ------------------------------------------------------------------------------


def test_filters_select_and_total_counts_every_match(store: Store) -> None:
    """user_id, session_id, type, since (inclusive) and until (exclusive), combined."""
    batch = [
        ev(0, user_id="alice", session_id="a1"),
        ev(1, user_id="bob", session_id="b1", type="error"),
        ev(2, user_id="alice", session_id="a2", type="error"),
        ev(3, user_id="alice", session_id="a1"),
        ev(4, user_id="bob", session_id="b1"),
    ]
    store.append(batch, "k", NOTEAM)
    cases: list[tuple[dict[str, Any], list[int]]] = [
        ({"user_id": "alice"}, [0, 2, 3]),
        ({"session_id": "b1"}, [1, 4]),
        ({"type": "error"}, [1, 2]),
        ({"user_id": "alice", "type": "error"}, [2]),
        ({"since_us": T0 + 1 * S}, [1, 2, 3, 4]),
        ({"until_us": T0 + 3 * S}, [0, 1, 2]),
        ({"since_us": T0 + 1 * S, "until_us": T0 + 3 * S, "user_id": "alice"}, [2]),
        ({"user_id": "nobody"}, []),
    ]
    for filters, want in cases:
        page = store.events(EventQuery(limit=1, **filters), ALL)
        assert page.total == len(want), filters
        assert ids(page.events) == [id_of(n) for n in want[:1]], filters
        assert ids(all_events(store, **filters)) == [id_of(n) for n in want], filters


def test_cursor_paging_never_skips_or_repeats_while_batches_arrive(store: Store) -> None:
    """Pages of 4 while a batch of 3 arrives after each of the first 5 pages: every
    event once, in commit order (a late batch of hours-old events comes after the
    earlier batches), and next_cursor None only after the last one."""
    sent = [ev(i) for i in range(10)]
    store.append(sent, "b0", NOTEAM)
    seen: list[str] = []
    cursor: str | None = None
    for page_no in range(1, 100):
        page = store.events(EventQuery(limit=4, cursor=cursor), ALL)
        seen += ids(page.events)
        if page_no <= 5:
            late = [ev(100 * page_no + i, at=T0 - 3600 * S * page_no + i) for i in range(3)]
            store.append(late, f"b{page_no}", NOTEAM)
            sent += late
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert page_no >= 3
    assert seen == [e.id for e in sent]
    assert store.events(EventQuery(limit=4, cursor=cursor), ALL).events[-1]["id"] == seen[-1]


def test_offset_paging_walks_commit_order(store: Store) -> None:
    """limit/offset (0.1 clients): consecutive pages concatenate to everything, once."""
    store.append([ev(i) for i in range(5)], "a", NOTEAM)
    store.append([ev(i, at=T0 - i * S) for i in range(5, 10)], "b", NOTEAM)
    walked: list[str] = []
    for offset in range(0, 12, 4):
        page = store.events(EventQuery(limit=4, offset=offset), ALL)
        assert page.total == 10
        walked += ids(page.events)
    assert walked == [id_of(i) for i in range(10)]


def test_cursors_not_issued_by_the_store_are_refused(store: Store) -> None:
    """Garbage, other shapes and a sessions cursor on events: BadCursor, both lists."""
    store.append([ev(0, session_id="s1"), ev(1, session_id="s2")], "k", NOTEAM)
    session_cursor = store.sessions(SessionQuery(limit=1), ALL).next_cursor
    assert session_cursor is not None
    for bad in ["!!!", "bm90IGpzb24", encode_cursor(["x"]), encode_cursor([1, 2, 3])]:
        with pytest.raises(BadCursor):
            store.events(EventQuery(cursor=bad), ALL)
        with pytest.raises(BadCursor):
            store.sessions(SessionQuery(cursor=bad), ALL)
    with pytest.raises(BadCursor):
        store.events(EventQuery(cursor=session_cursor), ALL)
    with pytest.raises(BadCursor):
        store.events(EventQuery(cursor="A" * 5000), ALL)


def test_a_team_reader_sees_only_its_teams_events(store: Store) -> None:
    """Team scope on events: red sees red's, blue blue's, an unscoped reader all."""
    store.append([ev(0), ev(1)], "r", RED)
    store.append([ev(2)], "b", BLUE)
    store.append([ev(3)], "n", NOTEAM)
    assert ids(all_events(store, ReadScope("red"))) == [id_of(0), id_of(1)]
    assert store.events(EventQuery(limit=1), ReadScope("red")).total == 2
    assert ids(all_events(store, ReadScope("blue"))) == [id_of(2)]
    assert all_events(store, ReadScope("green")) == []
    assert len(all_events(store)) == 4


# -- a session's timeline ----------------------------------------------------------------


def timeline(store: Store, session: str, limit: int, scope: ReadScope = ALL) -> list[str]:
    """Every page of the session's timeline, checking each page's size and total."""
    seen: list[str] = []
    after: str | None = None
    for _ in range(1000):
        page = store.session_timeline(session, after=after, limit=limit, scope=scope)
        assert len(page.events) <= limit
        seen += ids(page.events)
        if page.next_key is None:
            return seen
        assert len(page.events) == limit
        after = page.next_key
    raise AssertionError("the timeline never ended")


def test_timeline_is_ts_then_seq_order_whatever_the_commit_order(store: Store) -> None:
    """Batches committed out of ts order (a late upload of older events, equal ts broken by
    seq, equal (ts, seq) by commit order) come back in (ts, seq) order, every page size."""
    store.append([ev(i) for i in range(10, 20)], "now", NOTEAM)
    store.append([ev(i) for i in range(10)][::-1], "late", NOTEAM)  # older, reversed
    tied = [ev(30, at=T0 + 5 * S, seq=7), ev(31, at=T0 + 5 * S, seq=2)]
    store.append(tied, "tied", NOTEAM)
    store.append([ev(32, at=T0 + 5 * S, seq=7)], "tie-again", NOTEAM)
    store.append([ev(40, session_id="other")], "other", NOTEAM)
    want = [id_of(i) for i in range(5)] + [id_of(31), id_of(5), id_of(30), id_of(32)]
    want += [id_of(i) for i in range(6, 20)]
    for limit in (1, 3, 7, 100):
        assert timeline(store, "session-1", limit) == want, limit
    first = store.session_timeline("session-1", after=None, limit=3, scope=ALL)
    assert first.total == len(want)
    assert timeline(store, "nobody", 5) == []


def test_timeline_paging_never_skips_or_repeats_while_batches_arrive(store: Store) -> None:
    """Keys are positions, not offsets: events stored between pages land where they sort
    (before the key: not on a later page; after it: once, in order)."""
    store.append([ev(i) for i in range(0, 20, 2)], "even", NOTEAM)
    seen: list[str] = []
    after: str | None = None
    late = iter([[ev(1)], [ev(19), ev(15)], [ev(3, at=T0 + 21 * S)]])
    for _ in range(100):
        page = store.session_timeline("session-1", after=after, limit=3, scope=ALL)
        seen += ids(page.events)
        batch = next(late, None)
        if batch is not None:
            store.append(batch, f"late-{batch[0].seq}", NOTEAM)
        if page.next_key is None:
            break
        after = page.next_key
    assert len(seen) == len(set(seen))
    assert id_of(1) not in seen  # sorted before the first page's key
    want = [id_of(i) for i in (0, 2, 4, 6, 8, 10, 12, 14, 15, 16, 18, 19, 3)]
    assert seen == want


def test_timeline_live_cursor_resumes_the_commit_order(store: Store) -> None:
    """The first page's live cursor: polling events from it gets exactly what came later."""
    store.append([ev(i) for i in range(3)], "a", NOTEAM)
    page = store.session_timeline("session-1", after=None, limit=1, scope=ALL)
    assert page.live_cursor is not None
    store.append([ev(10, at=T0 - 60 * S), ev(4, session_id="other")], "b", NOTEAM)
    after = store.events(EventQuery(session_id="session-1", cursor=page.live_cursor), ALL)
    assert ids(after.events) == [id_of(10)]
    assert store.session_timeline("nobody", after=None, limit=1, scope=ALL).live_cursor is None


def test_timeline_scope_and_bad_keys(store: Store) -> None:
    """A team reader's timeline holds its team's events only; foreign keys are refused."""
    store.append([ev(0), ev(2)], "r", RED)
    store.append([ev(1)], "b", BLUE)
    assert timeline(store, "session-1", 2, ReadScope("red")) == [id_of(0), id_of(2)]
    assert timeline(store, "session-1", 2, ReadScope("blue")) == [id_of(1)]
    assert timeline(store, "session-1", 2, ReadScope("green")) == []
    assert timeline(store, "session-1", 2) == [id_of(0), id_of(1), id_of(2)]
    red = store.session_timeline("session-1", after=None, limit=5, scope=ReadScope("red"))
    assert red.total == 2
    for bad in ["!!!", encode_cursor([1, 2]), encode_cursor(["x", 1, 2])]:
        with pytest.raises(BadCursor):
            store.session_timeline("session-1", after=bad, limit=5, scope=ALL)


# -- sessions -----------------------------------------------------------------------------


def test_session_aggregates(store: Store) -> None:
    """Counts, errors, llm calls, token sums, first/last ts, user and app, over batches."""
    store.append(
        [
            ev(5, type="llm_call", data={"input_tokens": 100, "output_tokens": 7}),
            ev(2, type="error"),
        ],
        "a",
        NOTEAM,
    )
    store.append(
        [
            ev(9, type="llm_call", data={"input_tokens": 5, "output_tokens": 1}),
            ev(3, type="llm_call", data={"input_tokens": True, "output_tokens": -4}),
            ev(4),
        ],
        "b",
        NOTEAM,
    )
    assert store.sessions(SessionQuery(), ALL).sessions == [
        {
            "session_id": "session-1",
            "user_id": "alice",
            "app": "tests",
            "first_ts": "2026-11-21T10:00:02.000000Z",
            "last_ts": "2026-11-21T10:00:09.000000Z",
            "events": 5,
            "errors": 1,
            "llm_calls": 3,
            "input_tokens": 105,
            "output_tokens": 8,
        }
    ]
    assert store.check() == []


def sessions_at(store: Store, **filters: Any) -> list[str]:
    return [s["session_id"] for s in store.sessions(SessionQuery(**filters), ALL).sessions]


def test_sessions_order_cursor_and_overlap(store: Store) -> None:
    """Most recent last_ts first (ties by id), a cursor through pages, and since/until
    selecting sessions whose [first, last] span overlaps [since, until)."""
    spans = {"s1": (0, 10), "s2": (5, 20), "s3": (30, 40), "s4": (25, 40), "s5": (50, 50)}
    batch = [
        ev(n, at=T0 + t * S, session_id=sid, user_id="bob" if sid == "s3" else "alice")
        for n, (sid, (a, b)) in enumerate(spans.items())
        for t in (a, b)
    ]
    store.append(batch, "k", NOTEAM)
    assert sessions_at(store) == ["s5", "s3", "s4", "s2", "s1"]
    walked: list[str] = []
    cursor = None
    for _ in range(3):
        page = store.sessions(SessionQuery(limit=2, cursor=cursor), ALL)
        walked += [s["session_id"] for s in page.sessions]
        cursor = page.next_cursor
    assert walked == ["s5", "s3", "s4", "s2", "s1"]
    assert cursor is None
    assert sessions_at(store, since_us=T0 + 15 * S, until_us=T0 + 26 * S) == ["s4", "s2"]
    assert sessions_at(store, since_us=T0 + 40 * S) == ["s5", "s3", "s4"]
    assert sessions_at(store, until_us=T0 + 5 * S) == ["s1"]
    assert sessions_at(store, user_id="bob") == ["s3"]
    assert sessions_at(store, app="other") == []


def test_sessions_by_team(store: Store) -> None:
    """One session ingested by two teams: each team sees its part; an unscoped reader
    sees one session with the sums, the earliest first and the latest last."""
    store.append([ev(1, type="error"), ev(2)], "r", RED)
    store.append([ev(0), ev(5, type="error"), ev(6)], "b", BLUE)
    red = store.sessions(SessionQuery(), ReadScope("red")).sessions
    assert [(s["events"], s["errors"], s["first_ts"]) for s in red] == [(2, 1, ts_text(T0 + S))]
    both = store.sessions(SessionQuery(), ALL).sessions
    assert len(both) == 1
    assert (both[0]["events"], both[0]["errors"]) == (5, 2)
    assert (both[0]["first_ts"], both[0]["last_ts"]) == (ts_text(T0), ts_text(T0 + 6 * S))
    assert store.sessions(SessionQuery(), ReadScope("green")).sessions == []


def test_aggregates_equal_a_recount_after_many_batches(store: Store) -> None:
    """Random batches over sessions, teams and types: check() recounts from events, and
    the unscoped list agrees with a model."""
    rng = random.Random(7)
    model: dict[str, list[int]] = {}
    n = 0
    for b in range(40):
        ingest = rng.choice([RED, BLUE, NOTEAM])
        batch = []
        for _ in range(rng.randint(1, 12)):
            sid = f"s{rng.randint(0, 6)}"
            kind = rng.choice(["chat_turn", "error", "llm_call"])
            tokens = rng.randint(0, 1000)
            data = {"input_tokens": tokens, "output_tokens": 1}
            at = T0 + rng.randint(0, 10_000) * S
            batch.append(ev(n, at=at, session_id=sid, type=kind, data=data))
            agg = model.setdefault(sid, [0, 0, 0, 0])
            agg[0] += 1
            agg[1] += kind == "error"
            agg[2] += kind == "llm_call"
            agg[3] += tokens if kind == "llm_call" else 0
            n += 1
        store.append(batch, f"k{b}", ingest)
    assert store.check() == []
    got = {
        s["session_id"]: [s["events"], s["errors"], s["llm_calls"], s["input_tokens"]]
        for s in store.sessions(SessionQuery(limit=100), ALL).sessions
    }
    assert got == model


# -- attachments --------------------------------------------------------------------------


def test_attachments_are_stored_once(store: Store) -> None:
    """put / meta / get; a second put of the same blob reports it was already stored."""
    data = b"\x00binary\xff" * 100
    digest = sha(data)
    assert store.attachment_meta(digest) is None
    assert store.attachment(digest, ALL) is None
    assert store.put_attachment(digest, "image/png", data) is True
    assert store.put_attachment(digest, "text/plain", data) is False
    meta = store.attachment_meta(digest)
    assert meta is not None
    assert (meta.size, meta.content_type) == (len(data), "image/png")
    blob = store.attachment(digest, ALL)
    assert blob is not None
    assert (blob.data, blob.size, blob.content_type) == (data, len(data), "image/png")
    assert store.check() == []


def ref(digest: str) -> dict[str, Any]:
    return {"shot": {"$attachment": {"sha256": digest, "size": 1}}}


def test_a_team_reads_only_attachments_its_events_reference(store: Store) -> None:
    """Red's event references blob A: red and unscoped readers get it, blue does not;
    nobody's event references blob B: only unscoped readers get it."""
    a, b = b"blob a", b"blob b"
    store.put_attachment(sha(a), "text/plain", a)
    store.put_attachment(sha(b), "text/plain", b)
    store.append([ev(0, data=ref(sha(a)))], "r", RED)
    store.append([ev(1)], "b", BLUE)
    assert store.attachment(sha(a), ReadScope("red")) is not None
    assert store.attachment(sha(a), ReadScope("blue")) is None
    assert store.attachment(sha(a), ALL) is not None
    assert store.attachment(sha(b), ReadScope("red")) is None
    assert store.attachment(sha(b), ALL) is not None


# -- retention ----------------------------------------------------------------------------


def test_retention(store: Store) -> None:
    """Old events, their sessions, old batch keys and unreferenced old attachments go;
    new events, their sessions and attachments a remaining event references stay."""
    now = time.time_ns() // 1000
    day = 86_400 * S
    kept_blob, lost_blob, old_ref_blob = b"kept", b"lost", b"old ref"
    for blob in (kept_blob, lost_blob, old_ref_blob):
        store.put_attachment(sha(blob), "text/plain", blob)
    store.append(
        [
            ev(0, at=now - 10 * day, session_id="old", data=ref(sha(old_ref_blob))),
            ev(1, at=now - 9 * day, session_id="old", type="error"),
        ],
        "old-batch",
        RED,
    )
    store.append(
        [ev(2, at=now + 2 * day, session_id="future", data=ref(sha(kept_blob)))],
        "new-batch",
        RED,
    )
    # A cutoff in the past: old events go; batch keys and blobs received now stay.
    first = store.retain(now - day)
    assert (first.events, first.sessions, first.batches, first.attachments) == (2, 1, 0, 0)
    assert ids(all_events(store)) == [id_of(2)]
    assert sessions_at(store) == ["future"]
    assert store.has_key("old-batch")
    assert store.attachment_meta(sha(lost_blob)) is not None
    # A cutoff after "now": keys and unreferenced blobs received before it go too.
    second = store.retain(now + day)
    assert (second.events, second.batches, second.attachments) == (0, 2, 2)
    assert not store.has_key("old-batch")
    assert store.attachment_meta(sha(lost_blob)) is None
    assert store.attachment_meta(sha(old_ref_blob)) is None
    assert store.attachment(sha(kept_blob), ReadScope("red")) is not None
    assert ids(all_events(store)) == [id_of(2)]
    assert store.check() == []


def test_retention_trims_a_session_that_spans_the_cutoff(store: Store) -> None:
    """Deleting a live session's early events subtracts them; first_ts moves up."""
    store.append(
        [ev(0, type="error"), ev(1, type="llm_call", data={"input_tokens": 9}), ev(5), ev(7)],
        "k",
        NOTEAM,
    )
    store.retain(T0 + 3 * S)
    [session] = store.sessions(SessionQuery(), ALL).sessions
    assert (session["events"], session["errors"], session["llm_calls"]) == (2, 0, 0)
    assert (session["input_tokens"], session["first_ts"]) == (0, ts_text(T0 + 5 * S))
    assert store.check() == []


def test_retention_in_small_chunks_deletes_everything(store: Store) -> None:
    """chunk=2: seven events, four sessions, three keys go over several transactions."""
    old = T0 - 100 * 86_400 * S
    for b in range(3):
        batch = [ev(10 * b + i, at=old + i * S, session_id=f"s{(b + i) % 4}") for i in range(3)]
        store.append(batch[: 3 - (b == 2) * 2], f"k{b}", RED)
    assert store.events(EventQuery(), ALL).total == 7
    result = store.retain(time.time_ns() // 1000 + S, chunk=2)
    assert (result.events, result.sessions, result.batches) == (7, 4, 3)
    assert store.events(EventQuery(), ALL).total == 0
    assert store.sessions(SessionQuery(), ALL).sessions == []
    assert store.check() == []


# -- migrations and lifecycle ---------------------------------------------------------------


def test_reopening_migrates_nothing_and_keeps_the_data(backend: Backend) -> None:
    """A second open of a current database is a no-op: same rows, check() clean."""
    first = backend.open()
    first.append([ev(0), ev(1)], "k", RED)
    first.close()
    again = backend.open()
    assert again.events(EventQuery(), ALL).total == 2
    assert again.has_key("k")
    assert again.check() == []


def test_a_database_newer_than_the_code_refuses_to_start(backend: Backend) -> None:
    """A schema version from a newer collector: StorageError naming both versions."""
    backend.open().close()
    backend.execute("UPDATE schema_version SET version = 99")
    with pytest.raises(StorageError) as refused:
        backend.open()
    assert str(refused.value).endswith(
        "database schema version 99 is newer than this collector supports (1):"
        " upgrade telemetry-client"
    )


def test_ping_and_close(store: Store) -> None:
    """ping() answers while open; close() is idempotent."""
    store.ping()
    store.close()
    store.close()
