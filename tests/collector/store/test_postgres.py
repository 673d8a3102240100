"""PostgreSQL-only behaviour of the store, on a real server (``postgres_url``).

What several replicas on one database need: one ``Idempotency-Key`` stored once when two
pools race on it (and stored when the first dies mid-transaction), cursors that never pass
a transaction still in flight, migrations that run once when replicas start together,
retention on one replica at a time; failures mapped to ``StoreUnavailable`` (statement
timeout, pool exhausted, server stopped, then recovery) and ``StorageError`` at open; the
password never in a message or a log line. The shared behaviour is the contract test's.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from _postgres import PostgresServer
from conftest import collector_event, wait_until

from telemetry_client.collector._decode import DecodedEvent, validate_envelope
from telemetry_client.collector.store.base import (
    AppendResult,
    EventQuery,
    Ingest,
    ReadScope,
    StorageError,
    StoreUnavailable,
)
from telemetry_client.collector.store.open import open_store
from telemetry_client.collector.store.postgres import APPLICATION_NAME, PostgresStore
from telemetry_client.collector.store.postgres_schema import LOCK_MIGRATE, LOCK_RETAIN

INGEST = Ingest("token-1", "team-a")
ALL = ReadScope()
HANG = 30.0  # seconds: a generous bound on waits that should end at once


def batch(prefix: str, n: int = 3, **overrides: Any) -> list[DecodedEvent]:
    return [
        validate_envelope(collector_event(i, id=f"{prefix}-{i}", **overrides), "test")
        for i in range(n)
    ]


@pytest.fixture
def stores(postgres_url: str) -> Iterator[Callable[..., PostgresStore]]:
    """``make(**open_kwargs)`` -> a store on the test's database (closed after the test)."""
    opened: list[PostgresStore] = []

    def make(**kwargs: Any) -> PostgresStore:
        store = PostgresStore.open(postgres_url, **kwargs)
        opened.append(store)
        return store

    yield make
    for store in opened:
        store.close()


@pytest.fixture
def admin(postgres_server: PostgresServer, postgres_db: str) -> Iterator[Any]:
    """A superuser connection (autocommit) to the test's database."""
    with postgres_server.admin(postgres_db) as conn:
        yield conn


def waiting_backends(admin: Any, wait_event: str) -> int:
    """How many of our store's sessions wait on a lock of this kind right now."""
    row = admin.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
        " AND application_name = %s AND wait_event_type = 'Lock' AND wait_event = %s",
        (APPLICATION_NAME, wait_event),
    ).fetchone()
    return int(row[0])


def hold_transaction(
    monkeypatch: pytest.MonkeyPatch, store: PostgresStore, *, fail: bool = False
) -> tuple[threading.Event, threading.Event]:
    """Make ``store.append`` stop inside its transaction, after inserting the batch, until
    released (then commit, or die when ``fail``): ``(entered, release)``."""
    entered, release = threading.Event(), threading.Event()
    original = store._store_batch

    def held(cur: Any, events: Any, ingest: Ingest) -> None:
        original(cur, events, ingest)
        entered.set()
        assert release.wait(HANG)
        if fail:
            raise RuntimeError("replica died mid-transaction")

    monkeypatch.setattr(store, "_store_batch", held)
    return entered, release


def ids(store: PostgresStore) -> list[str]:
    return [e["id"] for e in store.events(EventQuery(limit=10_000), ALL).events]


# -- two replicas -------------------------------------------------------------------------


@pytest.mark.parametrize("first_dies", [False, True])
def test_same_key_from_two_replicas_at_once_is_stored_once(
    stores: Callable[..., PostgresStore],
    admin: Any,
    monkeypatch: pytest.MonkeyPatch,
    first_dies: bool,
) -> None:
    one, two = stores(), stores()
    entered, release = hold_transaction(monkeypatch, one, fail=first_dies)
    events = batch("b")
    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(one.append, events, "key-1", INGEST)
        try:
            assert entered.wait(HANG)
            second = pool.submit(two.append, events, "key-1", INGEST)
            # The second replica is inside its transaction, blocked on the key's unique index.
            wait_until(lambda: waiting_backends(admin, "transactionid") == 1, HANG)
        finally:
            release.set()
        results: list[AppendResult] = [second.result(HANG)]
        if first_dies:
            with pytest.raises(RuntimeError):
                first.result(HANG)
        else:
            results.append(first.result(HANG))
    assert sorted(r.duplicate for r in results) == [False] + [True] * (len(results) - 1)
    assert sum(r.accepted for r in results) == len(events)
    assert ids(two) == [e.id for e in events]
    assert one.check() == two.check() == []


def sync(store: PostgresStore, cursor: str | None) -> tuple[list[str], str | None]:
    """Page by cursor (2 per page) to the end: the ids, and the cursor to resume from (the
    one that fetched the last page: the last page's own ``next_cursor`` is None)."""
    seen: list[str] = []
    while True:
        page = store.events(EventQuery(limit=2, cursor=cursor), ALL)
        seen += [e["id"] for e in page.events]
        if page.next_cursor is None:
            return seen, cursor
        cursor = page.next_cursor


def test_a_cursor_never_passes_a_transaction_still_in_flight(
    stores: Callable[..., PostgresStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    slow, fast = stores(), stores()
    early, late, after = batch("early"), batch("late"), batch("after")
    fast.append(early, "k-early", INGEST)
    entered, release = hold_transaction(monkeypatch, slow)
    with ThreadPoolExecutor(1) as pool:
        in_flight = pool.submit(slow.append, late, "k-late", INGEST)
        try:
            assert entered.wait(HANG)
            # ``late`` has its rows (and lower pks) but has not committed; ``after`` commits.
            fast.append(after, "k-after", INGEST)
            seen, resume = sync(fast, None)
            assert seen == [e.id for e in early]  # nothing past the transaction in flight
            assert fast.events(EventQuery(), ALL).total == len(early)
        finally:
            release.set()
        in_flight.result(HANG)
    more, _ = sync(fast, resume)
    combined = seen + [i for i in more if i not in seen]
    assert combined == [e.id for e in early + late + after]  # nothing skipped, in order
    assert ids(fast) == combined


def test_replicas_starting_together_migrate_once(
    postgres_url: str, admin: Any, stores: Callable[..., PostgresStore]
) -> None:
    admin.execute("SELECT pg_advisory_lock(%s)", (LOCK_MIGRATE,))
    with ThreadPoolExecutor(2) as pool:
        opening: list[Future[PostgresStore]] = [pool.submit(stores) for _ in range(2)]
        try:
            # Both are inside their migration transaction, queued on the advisory lock.
            wait_until(lambda: waiting_backends(admin, "advisory") == 2, HANG)
        finally:
            admin.execute("SELECT pg_advisory_unlock(%s)", (LOCK_MIGRATE,))
        one, two = (f.result(HANG) for f in opening)
    assert admin.execute("SELECT version FROM schema_version").fetchall() == [(1,)]
    assert one.append(batch("m"), "k", INGEST).accepted == 3
    assert two.append(batch("m"), "k", INGEST).duplicate
    assert one.check() == two.check() == []


def test_retention_runs_on_one_replica_at_a_time(
    stores: Callable[..., PostgresStore], admin: Any
) -> None:
    store = stores()
    store.append(batch("old"), "k", INGEST)
    admin.execute("SELECT pg_advisory_lock(%s)", (LOCK_RETAIN,))  # another replica's pass
    assert store.retain(2**62).events == 0
    assert len(ids(store)) == 3
    admin.execute("SELECT pg_advisory_unlock(%s)", (LOCK_RETAIN,))
    result = store.retain(2**62, chunk=2)
    assert (result.events, result.sessions, result.batches) == (3, 1, 1)
    assert ids(store) == []
    assert store.check() == []


# -- failures -------------------------------------------------------------------------------


def test_statement_timeout_is_unavailable_and_stores_nothing(
    stores: Callable[..., PostgresStore], admin: Any
) -> None:
    store = stores(statement_timeout_s=0.2)
    with admin.transaction():
        admin.execute("LOCK TABLE events, batches IN ACCESS EXCLUSIVE MODE")
        with pytest.raises(StoreUnavailable, match="statement timeout"):
            store.events(EventQuery(), ALL)
        with pytest.raises(StoreUnavailable, match="statement timeout"):
            store.append(batch("t"), "k-t", INGEST)
    assert not store.has_key("k-t")
    assert store.append(batch("t"), "k-t", INGEST).accepted == 3
    assert store.check() == []


def test_an_exhausted_pool_is_unavailable(stores: Callable[..., PostgresStore]) -> None:
    store = stores(pool_size=1, statement_timeout_s=0.2)
    with store._pool.connection(), pytest.raises(StoreUnavailable):
        store.ping()
    store.ping()


def test_a_stopped_server_is_unavailable_then_recovers(
    postgres_server: PostgresServer,
    stores: Callable[..., PostgresStore],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    store = stores(statement_timeout_s=0.5)
    store.append(batch("a"), "k-a", INGEST)
    postgres_server.stop()
    try:
        with pytest.raises(StoreUnavailable) as failed:
            store.append(batch("b"), "k-b", INGEST)
        with pytest.raises(StoreUnavailable):
            store.ping()
    finally:
        postgres_server.start()
    assert postgres_server.password not in str(failed.value)
    wait_until(lambda: _answers(store), HANG, what="the store reconnects")
    assert not store.has_key("k-b")
    assert not store.append(batch("b"), "k-b", INGEST).duplicate
    assert ids(store) == [e.id for e in batch("a") + batch("b")]
    assert store.check() == []
    assert postgres_server.password not in caplog.text


def _answers(store: PostgresStore) -> bool:
    try:
        store.ping()
    except StoreUnavailable:
        return False
    return True


SECRET = "Wr0ng@pa:ss/word%"  # noqa: S105 (a wrong one, on purpose)


def test_a_wrong_password_is_a_storage_error_without_the_password(
    postgres_server: PostgresServer, postgres_db: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    url = postgres_server.url(postgres_db, password=SECRET)
    assert "%40" in url  # percent-encoded in the URL: neither spelling may leak
    with pytest.raises(StorageError) as failed:
        PostgresStore.open(url)
    message = str(failed.value)
    assert "password authentication failed" in message
    assert "***" in message
    assert "DATABASE_URL" in message
    for spelling in (SECRET, url.split(":")[2].split("@")[0]):
        assert spelling not in message
        assert spelling not in caplog.text


def test_an_unreachable_server_is_a_storage_error_without_the_password(
    postgres_server: PostgresServer, postgres_db: str
) -> None:
    url = postgres_server.url(postgres_db).replace(
        f":{postgres_server.port}/", f":{_closed_port()}/"
    )
    with pytest.raises(StorageError) as failed:
        open_store(url, Path("/nonexistent"), statement_timeout_s=2)
    assert "127.0.0.1" in str(failed.value)
    assert postgres_server.password not in str(failed.value)


def _closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_open_store_opens_postgres_and_shows_the_url_redacted(
    postgres_server: PostgresServer, postgres_url: str, tmp_path: Path
) -> None:
    store = open_store(postgres_url, tmp_path, pool_size=2, statement_timeout_s=5)
    try:
        assert isinstance(store, PostgresStore)
        assert store.display_url == postgres_url.replace(postgres_server.password, "***")
        store.ping()
        assert list(tmp_path.iterdir()) == []  # nothing written to the data dir
    finally:
        store.close()
    with pytest.raises(StoreUnavailable):  # closed
        store.ping()


def test_a_filter_postgres_text_cannot_hold_matches_nothing(
    stores: Callable[..., PostgresStore],
) -> None:
    store = stores()
    store.append(batch("n"), "k", INGEST)
    page = store.events(EventQuery(user_id="al\x00ice"), ALL)
    assert (page.events, page.total) == ([], 0)
