"""The PostgreSQL store's queries: events by cursor, sessions, as the SQLite store answers.

Events come in ``(txid, pk)`` order and a query only sees rows whose ``txid`` is below
the horizon: ``xmin`` of the snapshot the count runs in (every transaction below it has
committed or aborted), read once and passed to the page query so count and page agree.
A row committed later always has ``txid >=`` that horizon, hence sorts after any cursor
handed out now: paging never skips it (docs/collector-store.md, "Order and cursors").

A session's timeline pages by keyset over ``(ts_us, seq, pk)`` (``events_session_ts``);
its live cursor is the session's last ``(txid, pk)`` below the horizon, read before the
page: every row below it is visible to the page's statement, every later one sorts after.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from psycopg import Cursor

from telemetry_client.collector.store.base import (
    BadCursor,
    EventPage,
    EventQuery,
    ReadScope,
    SessionPage,
    SessionQuery,
    TimelinePage,
)
from telemetry_client.collector.store.sql import (
    decode_cursor,
    encode_cursor,
    event_dict,
    event_filters,
    session_dict,
    team_key,
)

__all__ = ["events_page", "sessions_page", "timeline_page"]

_HORIZON = "pg_snapshot_xmin(pg_current_snapshot())::text::bigint"
_SESSION_COLUMNS = (
    "session_id, user_id, app, first_us, last_us, events, errors, llm_calls,"
    " input_tokens, output_tokens"
)
_ALL_TEAMS = (
    "(SELECT session_id, MIN(user_id) AS user_id, MIN(app) AS app,"
    " MIN(first_us) AS first_us, MAX(last_us) AS last_us, SUM(events) AS events,"
    " SUM(errors) AS errors, SUM(llm_calls) AS llm_calls,"
    " SUM(input_tokens) AS input_tokens, SUM(output_tokens) AS output_tokens"
    " FROM sessions GROUP BY session_id) AS s"
)


def _where(conditions: Sequence[str]) -> str:
    return f" WHERE {' AND '.join(conditions)}" if conditions else ""


def _unstorable(*values: object) -> bool:
    """A filter PostgreSQL text cannot hold (NUL): it matches nothing (and would raise)."""
    return any(isinstance(v, str) and "\x00" in v for v in values)


def events_page(cur: Cursor[Any], query: EventQuery, scope: ReadScope) -> EventPage:
    """One page of matching events below the horizon; ``total`` counts every such match."""
    where, params = event_filters(query, scope, "%s")
    after: list[Any] | None = None
    if query.cursor is not None:
        after = decode_cursor(query.cursor, (int, int))
    offset = 0 if after is not None else max(0, query.offset)
    limit = max(0, query.limit)
    if _unstorable(*params):
        return EventPage([], 0, None)

    cur.execute(
        f"WITH h AS MATERIALIZED (SELECT {_HORIZON} AS x)"  # noqa: S608
        " SELECT h.x, (SELECT COUNT(*) FROM events"
        f"{_where([*where, 'txid < h.x'])}) FROM h",
        params,
    )
    horizon, total = cur.fetchone() or (0, 0)
    page_where = [*where, "txid < %s"]
    page_params = [*params, horizon]
    if after is not None:
        page_where.append("(txid, pk) > (%s, %s)")
        page_params += after
    cur.execute(
        "SELECT txid, pk, body, ingest_token, ingest_team FROM events"  # noqa: S608
        f"{_where(page_where)} ORDER BY txid, pk LIMIT %s OFFSET %s",
        [*page_params, limit + 1, offset],
    )
    rows = cur.fetchall()
    more = len(rows) > limit
    rows = rows[:limit]
    return EventPage(
        [event_dict(body, token, team) for _, _, body, token, team in rows],
        int(total),
        encode_cursor([rows[-1][0], rows[-1][1]]) if more and rows else None,
        encode_cursor([rows[-1][0], rows[-1][1]]) if rows else query.cursor,
    )


def sessions_page(cur: Cursor[Any], query: SessionQuery, scope: ReadScope) -> SessionPage:
    """Sessions by most recent ``last_us`` (then ``session_id``); an unscoped reader sees
    each session once, its rows of several teams summed."""
    params: list[Any] = []
    if scope.team is None:
        source = _ALL_TEAMS
    else:
        source = "(SELECT * FROM sessions WHERE team = %s) AS s"
        params.append(team_key(scope.team))
    where: list[str] = []
    for column, value in (("user_id", query.user_id), ("app", query.app)):
        if value is not None:
            where.append(f"{column} = %s")
            params.append(value)
    if query.since_us is not None:
        where.append("last_us >= %s")
        params.append(query.since_us)
    if query.until_us is not None:
        where.append("first_us < %s")
        params.append(query.until_us)
    if query.cursor is not None:
        last_us, session_id = decode_cursor(query.cursor, (int, str))
        if _unstorable(session_id):
            raise BadCursor("cursor is not one this collector issued")
        where.append("(last_us < %s OR (last_us = %s AND session_id > %s))")
        params += [last_us, last_us, session_id]
    limit = max(0, query.limit)
    if _unstorable(query.user_id, query.app):
        return SessionPage([], None)
    cur.execute(
        f"SELECT {_SESSION_COLUMNS} FROM {source}{_where(where)}"  # noqa: S608
        " ORDER BY last_us DESC, session_id LIMIT %s",
        [*params, limit + 1],
    )
    rows = cur.fetchall()
    more = len(rows) > limit
    rows = rows[:limit]
    cursor = encode_cursor([int(rows[-1][4]), rows[-1][0]]) if more and rows else None
    return SessionPage([session_dict(r) for r in rows], cursor)


def timeline_page(
    cur: Cursor[Any], session_id: str, after: str | None, limit: int, scope: ReadScope
) -> TimelinePage:
    """A page of ``session_id``'s events after the key ``after``, in ``(ts, seq, pk)``."""
    where = ["session_id = %s"]
    params: list[Any] = [session_id]
    if scope.team is not None:
        where.append("ingest_team = %s")
        params.append(team_key(scope.team))
    key: list[Any] | None = None
    if after is not None:
        key = decode_cursor(after, (int, int, int))
    limit = max(0, limit)
    if _unstorable(session_id, scope.team):
        return TimelinePage([], 0, None)
    live: str | None = None
    if key is None:
        cur.execute(
            f"WITH h AS MATERIALIZED (SELECT {_HORIZON} AS x)"  # noqa: S608
            f" SELECT txid, pk FROM events, h{_where([*where, 'txid < h.x'])}"
            " ORDER BY txid DESC, pk DESC LIMIT 1",
            params,
        )
        head = cur.fetchone()
        live = encode_cursor([int(head[0]), int(head[1])]) if head else None
    cur.execute(f"SELECT COUNT(*) FROM events{_where(where)}", params)  # noqa: S608
    total = (cur.fetchone() or (0,))[0]
    page_where, page_params = list(where), list(params)
    if key is not None:
        page_where.append("(ts_us, seq, pk) > (%s, %s, %s)")
        page_params += key
    cur.execute(
        "SELECT ts_us, seq, pk, body, ingest_token, ingest_team FROM events"  # noqa: S608
        f"{_where(page_where)} ORDER BY ts_us, seq, pk LIMIT %s",
        [*page_params, limit + 1],
    )
    rows = cur.fetchall()
    more = len(rows) > limit
    rows = rows[:limit]
    return TimelinePage(
        [event_dict(r[3], r[4], r[5]) for r in rows],
        int(total),
        encode_cursor([int(v) for v in rows[-1][:3]]) if more and rows else None,
        live,
    )
