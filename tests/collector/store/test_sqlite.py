"""The SQLite store's own promises: file modes, reads beside a write, lock timeouts,
concurrent duplicates, and how ``--database-url`` is read (with passwords redacted)."""

from __future__ import annotations

import gc
import os
import sqlite3
import stat
import sys
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from test_store_contract import ALL, NOTEAM, RED, ev, id_of, ids

from telemetry_client.collector._decode import DecodedEvent
from telemetry_client.collector.store import (
    AppendResult,
    EventQuery,
    Ingest,
    SessionQuery,
    SqliteStore,
    StorageError,
    StoreUnavailable,
    open_store,
)
from telemetry_client.collector.store.sql import SessionSums, redact_url

HANG = 30.0  # seconds: only a bound on a hang, never a measurement


class PausingStore(SqliteStore):
    """Stops inside its write transaction (rows inserted, not committed) until released;
    or fails there when ``fail`` is set."""

    def __init__(self, path: Path, **kwargs: Any) -> None:
        super().__init__(path, **kwargs)
        self.inside = threading.Event()
        self.release = threading.Event()
        self.fail = False

    def _store_batch(
        self,
        conn: sqlite3.Connection,
        events: Sequence[DecodedEvent],
        ingest: Ingest,
        sums: list[SessionSums],
    ) -> None:
        super()._store_batch(conn, events, ingest, sums)
        if self.fail:
            raise RuntimeError("injected failure after the inserts")
        self.inside.set()
        assert self.release.wait(HANG)


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "data" / "collector.db"


@pytest.fixture
def store(db_path: Path) -> Iterator[SqliteStore]:
    s = SqliteStore.open(db_path)
    yield s
    s.close()


def test_files_are_owner_only_whatever_the_umask(db_path: Path) -> None:
    """The data dir is 0700, the database and its WAL and shared-memory files 0600."""
    old = os.umask(0)
    try:
        s = SqliteStore.open(db_path)
        s.append([ev(0)], "k", NOTEAM)
        s.events(EventQuery(), ALL)
        modes = {
            p.name: stat.S_IMODE(p.stat().st_mode)
            for p in [db_path.parent, *db_path.parent.iterdir()]
        }
        s.close()
    finally:
        os.umask(old)
    assert modes["data"] == 0o700
    assert {"collector.db", "collector.db-wal", "collector.db-shm"} <= set(modes)
    assert {name: mode for name, mode in modes.items() if name != "data"} == {
        name: 0o600 for name in modes if name != "data"
    }


def test_durable_settings(store: SqliteStore, db_path: Path) -> None:
    """WAL journal and synchronous=FULL on the writer: a commit is fsync'ed."""
    with sqlite3.connect(db_path) as raw:
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    raw.close()
    assert store._writer.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL


def test_reads_do_not_wait_for_an_open_write_transaction(db_path: Path) -> None:
    """While a batch sits inside its transaction (write lock held), other threads read
    the last committed state; the batch appears once it commits."""
    s = PausingStore.open(db_path)
    try:
        s.release.set()
        s.append([ev(0)], "first", NOTEAM)
        s.release.clear()
        s.inside.clear()
        writer = threading.Thread(target=s.append, args=([ev(1), ev(2)], "second", NOTEAM))
        writer.start()
        assert s.inside.wait(HANG)
        seen: dict[str, Any] = {}

        def read() -> None:
            seen["events"] = ids(s.events(EventQuery(), ALL).events)
            seen["sessions"] = s.sessions(SessionQuery(), ALL).sessions[0]["events"]
            seen["key"] = s.has_key("second")
            s.ping()

        reader = threading.Thread(target=read)
        reader.start()
        reader.join(HANG)
        done_while_writing = not reader.is_alive()
        still_writing = writer.is_alive()
        s.release.set()
        writer.join(HANG)
        assert done_while_writing
        assert still_writing
        assert seen == {"events": [id_of(0)], "sessions": 1, "key": False}
        assert ids(s.events(EventQuery(), ALL).events) == [id_of(0), id_of(1), id_of(2)]
        assert s.check() == []
    finally:
        s.release.set()
        s.close()


def test_a_finished_threads_read_connection_is_closed(store: SqliteStore) -> None:
    """Worker threads come and go: each one's reader goes with it, none pile up."""
    store.append([ev(0)], None, NOTEAM)
    seen: list[int] = []
    threads = [
        threading.Thread(target=lambda: seen.append(store.events(EventQuery(), ALL).total))
        for _ in range(10)
    ]
    for t in threads:
        t.start()
        t.join(HANG)
    assert seen == [1] * 10
    gc.collect()
    assert len(store._readers) == 0
    assert store.events(EventQuery(), ALL).total == 1
    assert len(store._readers) == 1


def test_a_failure_inside_the_transaction_stores_nothing(db_path: Path) -> None:
    """Events and session sums inserted, then an error before COMMIT: all rolled back."""
    s = PausingStore.open(db_path)
    try:
        s.fail = True
        with pytest.raises(RuntimeError, match="injected"):
            s.append([ev(0), ev(1)], "k", NOTEAM)
        assert s.events(EventQuery(), ALL).total == 0
        assert s.sessions(SessionQuery(), ALL).sessions == []
        assert not s.has_key("k")
        s.fail = False
        s.release.set()
        assert s.append([ev(0), ev(1)], "k", NOTEAM).accepted == 2
        assert s.check() == []
    finally:
        s.close()


def test_a_locked_database_is_unavailable_not_an_error(db_path: Path) -> None:
    """Another process holds the write lock past busy_timeout: StoreUnavailable (503),
    nothing stored; reads still answer; the retry after the lock is gone succeeds."""
    s = SqliteStore.open(db_path, busy_timeout_s=0.05)
    other = sqlite3.connect(db_path, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        with pytest.raises(StoreUnavailable, match="locked"):
            s.append([ev(0)], "k", NOTEAM)
        with pytest.raises(StoreUnavailable):
            s.put_attachment("0" * 64, "text/plain", b"x")
        assert s.events(EventQuery(), ALL).total == 0
        other.execute("ROLLBACK")
        assert s.append([ev(0)], "k", NOTEAM).accepted == 1
        assert s.check() == []
    finally:
        other.close()
        s.close()


def test_a_closed_store_is_unavailable(store: SqliteStore) -> None:
    """After close(), calls raise StoreUnavailable (the app answers 503), not crash."""
    store.close()
    with pytest.raises(StoreUnavailable):
        store.append([ev(0)], None, NOTEAM)
    with pytest.raises(StoreUnavailable):
        store.ping()


@pytest.mark.parametrize("stores", ["one store", "a store per thread"])
def test_eight_threads_appending_one_key_store_it_once(db_path: Path, stores: str) -> None:
    """Eight threads released together with the same key: one stores, seven duplicate."""
    shared = SqliteStore.open(db_path)
    opened = [shared] + [
        SqliteStore.open(db_path) for _ in range(8 if stores != "one store" else 0)
    ]
    barrier = threading.Barrier(8)
    results: list[AppendResult] = []
    lock = threading.Lock()

    def worker(i: int) -> None:
        target = shared if stores == "one store" else opened[1 + i]
        batch = [ev(10 * i + j) for j in range(5)]
        barrier.wait(HANG)
        result = target.append(batch, "the-key", RED)
        with lock:
            results.append(result)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(HANG)
        assert sorted(r.duplicate for r in results) == [False] + [True] * 7
        assert shared.events(EventQuery(), ALL).total == 5
        assert shared.check() == []
    finally:
        for s in opened:
            s.close()


def test_a_file_that_is_not_a_database_refuses_to_open(db_path: Path) -> None:
    """Garbage in the database file: StorageError naming the file, nothing overwritten."""
    db_path.parent.mkdir(parents=True)
    db_path.write_bytes(b"not a database, " * 100)
    with pytest.raises(StorageError, match=str(db_path)):
        SqliteStore.open(db_path)
    assert db_path.read_bytes() == b"not a database, " * 100


# -- open_store -----------------------------------------------------------------------------


def test_no_url_means_sqlite_in_the_data_dir(tmp_path: Path) -> None:
    """No --database-url: collector.db inside the data dir."""
    s = open_store(None, tmp_path / "data")
    try:
        assert isinstance(s, SqliteStore)
        assert s.path == tmp_path / "data" / "collector.db"
        assert s.path.is_file()
    finally:
        s.close()


def test_a_sqlite_url_names_an_absolute_file(tmp_path: Path) -> None:
    """sqlite:///ABS/PATH.db opens that file (percent-escapes decoded)."""
    target = tmp_path / "else where" / "t.db"
    s = open_store(f"sqlite://{str(target).replace(' ', '%20')}", tmp_path / "data")
    try:
        assert isinstance(s, SqliteStore)
        assert s.path == target
        assert target.is_file()
        assert not (tmp_path / "data").exists()
    finally:
        s.close()


@pytest.mark.parametrize(
    "url", ["sqlite://relative.db", "sqlite:relative.db", "sqlite:///x.db?mode=ro", "sqlite://"]
)
def test_other_sqlite_urls_are_refused_by_name(url: str, tmp_path: Path) -> None:
    """Relative paths and options: StorageError naming the flag, the variable and the URL."""
    with pytest.raises(StorageError) as refused:
        open_store(url, tmp_path)
    message = str(refused.value)
    assert "--database-url" in message
    assert "TELEMETRY_COLLECTOR_DATABASE_URL" in message
    assert url in message


@pytest.mark.parametrize(
    "url",
    [
        "mysql://admin:hunter2secret@db.example:3306/telemetry",
        "mysql://db.example/telemetry?user=x&password=hunter2secret",
    ],
)
def test_unsupported_urls_are_refused_without_the_password(url: str, tmp_path: Path) -> None:
    """An unknown scheme: StorageError naming the setting, the password shown as ***."""
    with pytest.raises(StorageError) as refused:
        open_store(url, tmp_path)
    message = str(refused.value)
    assert "TELEMETRY_COLLECTOR_DATABASE_URL" in message
    assert "hunter2secret" not in message
    assert "***" in message
    assert "db.example" in message


def test_a_missing_postgres_driver_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """postgresql:// without the driver: StorageError with the install hint, no password."""
    monkeypatch.setitem(sys.modules, "psycopg", None)
    monkeypatch.delitem(sys.modules, "telemetry_client.collector.store.postgres", raising=False)
    monkeypatch.delitem(
        sys.modules, "telemetry_client.collector.store.postgres_read", raising=False
    )
    monkeypatch.delitem(
        sys.modules, "telemetry_client.collector.store.postgres_maint", raising=False
    )
    with pytest.raises(StorageError) as refused:
        open_store("postgresql://u:hunter2secret@127.0.0.1:1/db", tmp_path)
    message = str(refused.value)
    assert "pip install" in message
    assert "hunter2secret" not in message
    assert "postgresql://u:***@127.0.0.1:1/db" in message


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://u:pw@h:5432/d", "postgresql://u:***@h:5432/d"),
        ("postgresql://u@h/d", "postgresql://u@h/d"),
        ("postgresql://u:p%40ss:w@h/d?sslmode=require", "postgresql://u:***@h/d?sslmode=require"),
        ("postgresql://h/d?password=pw&user=u", "postgresql://h/d?password=***&user=u"),
        ("sqlite:///tmp/x.db", "sqlite:///tmp/x.db"),
    ],
)
def test_redact_url(url: str, shown: str) -> None:
    """Passwords in the userinfo or a password= option become ***; nothing else changes."""
    assert redact_url(url) == shown
