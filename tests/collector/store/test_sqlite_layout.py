"""The SQLite file's layout choices made for ingest CPU (docs/collector-store.md, "Schema"):
a new file's page size, and a session's page served by ``(session_id, pk)`` in index order
(no sort) now that it is the only session index."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from test_store_contract import ALL, NOTEAM, ev

from telemetry_client.collector.store import EventQuery, SqliteStore
from telemetry_client.collector.store.sqlite import PAGE_SIZE


def test_a_new_file_gets_the_large_page_size(tmp_path: Path) -> None:
    SqliteStore.open(tmp_path / "c.db").close()
    with sqlite3.connect(tmp_path / "c.db") as conn:
        assert conn.execute("PRAGMA page_size").fetchone()[0] == PAGE_SIZE == 32768
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_session_pages_walk_the_session_index_without_sorting(tmp_path: Path) -> None:
    store = SqliteStore.open(tmp_path / "c.db")
    try:
        store.append([ev(n, session_id=f"s{n % 3}") for n in range(1, 31)], "k1", NOTEAM)
        store.events(EventQuery(limit=1), ALL)  # this thread's reader now exists
        seen: list[str] = []
        store._local.reader.conn.set_trace_callback(seen.append)
        first = store.events(EventQuery(session_id="s1", limit=4), ALL)
        assert first.next_cursor is not None
        store.events(EventQuery(session_id="s1", limit=4, cursor=first.next_cursor), ALL)
    finally:
        store.close()
    selects = [s for s in seen if s.startswith("SELECT pk")]
    assert len(selects) == 2  # the first page and the page after the cursor
    with sqlite3.connect(tmp_path / "c.db") as conn:
        for sql in selects:
            plan = " | ".join(r[3] for r in conn.execute(f"EXPLAIN QUERY PLAN {sql}"))
            assert "USING INDEX events_session_pk" in plan, plan
            assert "TEMP B-TREE" not in plan, plan
