"""The SQLite store's session timeline: one session's events by keyset over
``(ts_us, seq, pk)`` (docs/viewer.md, "Order").

Read in one snapshot with the session's newest ``pk`` in scope: that is the live cursor
(the events query's format), so a poll from it gets exactly what was committed after the
page's snapshot. The session's rows are found by ``events_session_pk`` and sorted; a
session is small next to the table, so no extra index is paid on ingest.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from telemetry_client.collector.store.base import ReadScope, TimelinePage
from telemetry_client.collector.store.sql import (
    decode_cursor,
    encode_cursor,
    event_dict,
    team_key,
)

__all__ = ["timeline_page"]


def timeline_page(
    conn: sqlite3.Connection,
    session_id: str,
    after: str | None,
    limit: int,
    scope: ReadScope,
) -> TimelinePage:
    """A page of ``session_id``'s events after the key ``after`` (in a read transaction)."""
    where = ["session_id = ?"]
    params: list[Any] = [session_id]
    if scope.team is not None:
        where.append("ingest_team = ?")
        params.append(team_key(scope.team))
    cond = " AND ".join(where)
    page_cond, page_params = cond, list(params)
    if after is not None:
        ts_us, seq, pk = decode_cursor(after, (int, int, int))
        page_cond += " AND (ts_us, seq, pk) > (?, ?, ?)"
        page_params += [ts_us, seq, pk]
    limit = max(0, limit)
    live: str | None = None
    if after is None:
        head = conn.execute(f"SELECT MAX(pk) FROM events WHERE {cond}", params).fetchone()  # noqa: S608
        live = encode_cursor([head[0]]) if head and head[0] is not None else None
    total = conn.execute(f"SELECT COUNT(*) FROM events WHERE {cond}", params).fetchone()[0]  # noqa: S608
    rows = conn.execute(
        "SELECT ts_us, seq, pk, body, ingest_token, ingest_team FROM events"  # noqa: S608
        f" WHERE {page_cond} ORDER BY ts_us, seq, pk LIMIT ?",
        [*page_params, limit + 1],
    ).fetchall()
    more = len(rows) > limit
    rows = rows[:limit]
    return TimelinePage(
        [event_dict(r[3], r[4], r[5]) for r in rows],
        int(total),
        encode_cursor(list(rows[-1][:3])) if more and rows else None,
        live,
    )
