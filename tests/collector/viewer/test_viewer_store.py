"""The store position the viewer's live mode polls from (``EventPage.last_cursor``), on
SQLite and PostgreSQL: after the last page it points past the last event returned, so a
poll from it later gets exactly the events committed since, and an empty poll keeps it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _viewer_seed import envelope

from telemetry_client.collector._decode import validate_envelope
from telemetry_client.collector.store import (
    EventQuery,
    Ingest,
    ReadScope,
    SqliteStore,
    Store,
    open_store,
)

ALL = ReadScope()
WHO = Ingest("tok", None)


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    opened: Store
    if request.param == "sqlite":
        opened = SqliteStore.open(tmp_path / "collector.db")
    else:
        opened = open_store(request.getfixturevalue("postgres_url"), Path("/"))
    yield opened
    opened.close()


def append(store: Store, session: str, first: int, count: int) -> list[str]:
    events: list[dict[str, Any]] = [
        envelope(session, "chat_turn", {"n": n}, n) for n in range(first, first + count)
    ]
    decoded = [validate_envelope(e, "event") for e in events]
    assert not store.append(decoded, None, WHO).duplicate
    return [e["id"] for e in events]


def page(store: Store, cursor: str | None, limit: int = 100) -> Any:
    return store.events(EventQuery(session_id="s", limit=limit, cursor=cursor), ALL)


def test_last_cursor_resumes_after_the_last_page(store: Store) -> None:
    """Paging to the end gives ``next_cursor`` None and a ``last_cursor`` from which a
    later poll returns exactly the new events of that session, then nothing."""
    first = append(store, "s", 0, 3)
    append(store, "other", 0, 2)
    head = page(store, None, limit=2)
    assert head.next_cursor is not None
    assert head.last_cursor == head.next_cursor
    tail = page(store, head.next_cursor)
    assert [e["id"] for e in head.events + tail.events] == first
    assert tail.next_cursor is None
    assert tail.last_cursor is not None
    empty = page(store, tail.last_cursor)
    assert empty.events == []
    assert empty.last_cursor == tail.last_cursor
    later = append(store, "s", 3, 2)
    append(store, "other", 2, 1)
    polled = page(store, empty.last_cursor)
    assert [e["id"] for e in polled.events] == later
    assert page(store, polled.last_cursor).events == []
