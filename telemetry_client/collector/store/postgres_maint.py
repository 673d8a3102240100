"""The PostgreSQL store's upkeep: one retention chunk at a time, and the invariant check.

A retention chunk deletes up to ``chunk`` of the oldest events, then locks their sessions
rows in ``(session_id, team)`` order (the order ingest upserts them in, so the two never
deadlock) before subtracting the deleted events and re-reading the session's first event:
once the row is locked no ingest transaction touching that session is half done, so what
the later statements see is exact, and a session left without events is deleted. Session
aggregates therefore always equal a recount, which :func:`check` verifies.
"""

from __future__ import annotations

from typing import Any

from psycopg import Cursor

from telemetry_client.collector.store.migrations import current_version, latest_version
from telemetry_client.collector.store.postgres_schema import STEPS
from telemetry_client.collector.store.sql import compare_sessions, recount_sessions

__all__ = ["DELETE_ATTACHMENTS", "DELETE_BATCHES", "DELETE_SESSIONS", "check", "retain_events"]

DELETE_SESSIONS = (
    "DELETE FROM sessions WHERE ctid = ANY(ARRAY("
    "SELECT ctid FROM sessions WHERE last_us < %s LIMIT %s FOR UPDATE SKIP LOCKED))"
)
DELETE_BATCHES = (
    "DELETE FROM batches WHERE key = ANY(ARRAY("
    "SELECT key FROM batches WHERE received_us < %s LIMIT %s))"
)
DELETE_ATTACHMENTS = (
    "DELETE FROM attachments WHERE sha256 = ANY(ARRAY(SELECT sha256 FROM attachments a"
    " WHERE received_us < %s AND NOT EXISTS"
    " (SELECT 1 FROM event_attachments r WHERE r.sha256 = a.sha256) LIMIT %s))"
)


def retain_events(cur: Cursor[Any], cutoff_us: int, chunk: int) -> tuple[int, int]:
    """Delete up to ``chunk`` events older than ``cutoff_us`` (in the caller's
    transaction); returns ``(events deleted, sessions deleted)``."""
    cur.execute(
        "DELETE FROM events WHERE pk = ANY(ARRAY("
        "SELECT pk FROM events WHERE ts_us < %s ORDER BY ts_us LIMIT %s))"
        " RETURNING pk, session_id, ingest_team, type, ts_us,"
        " CASE WHEN type = 'llm_call' THEN body END",
        (cutoff_us, chunk),
    )
    rows = cur.fetchall()
    if not rows:
        return 0, 0
    cur.execute("DELETE FROM event_attachments WHERE event_pk = ANY(%s)", ([r[0] for r in rows],))
    removed = recount_sessions((r[1], r[2], r[3], r[4], r[5]) for r in rows)
    keys = sorted(removed)
    cur.execute(
        "SELECT 1 FROM sessions s JOIN unnest(%s::text[], %s::text[]) AS k(session_id, team)"
        " USING (session_id, team) ORDER BY session_id, team FOR UPDATE OF s",
        ([k[0] for k in keys], [k[1] for k in keys]),
    )
    gone = 0
    for key in keys:
        s = removed[key]
        cur.execute(
            "UPDATE sessions SET events = events - %s, errors = errors - %s,"
            " llm_calls = llm_calls - %s, input_tokens = input_tokens - %s,"
            " output_tokens = output_tokens - %s,"
            " first_us = COALESCE((SELECT MIN(ts_us) FROM events e"
            "   WHERE e.session_id = sessions.session_id AND e.ingest_team = sessions.team),"
            "   first_us)"
            " WHERE session_id = %s AND team = %s RETURNING events",
            (s.events, s.errors, s.llm_calls, s.input_tokens, s.output_tokens, *key),
        )
        left = cur.fetchone()
        if left is not None and int(left[0]) <= 0:
            cur.execute("DELETE FROM sessions WHERE session_id = %s AND team = %s", key)
            gone += 1
    return len(rows), gone


def check(cur: Cursor[Any]) -> list[str]:
    """Broken invariants: schema version, dangling attachment references, attachment
    bytes vs their name and size, session aggregates vs a recount of the events."""
    problems: list[str] = []
    version, want = current_version(cur.connection), latest_version(STEPS)
    if version != want:
        problems.append(f"schema version {version}, expected {want}")
    cur.execute(
        "SELECT event_pk, sha256 FROM event_attachments r"
        " WHERE NOT EXISTS (SELECT 1 FROM events WHERE pk = r.event_pk)"
    )
    for event_pk, sha in cur.fetchall():
        problems.append(f"event_attachments ({sha}, {event_pk}): no such event")
    cur.execute(
        "SELECT sha256 FROM attachments"
        " WHERE encode(sha256(data), 'hex') <> sha256 OR length(data) <> size"
    )
    for (sha,) in cur.fetchall():
        problems.append(f"attachment {sha}: content does not match its name/size")
    cur.execute(
        "SELECT session_id, ingest_team, type, ts_us,"
        " CASE WHEN type = 'llm_call' THEN body END FROM events"
    )
    recount = recount_sessions(cur.fetchall())
    cur.execute(
        "SELECT session_id, team, first_us, last_us, events, errors, llm_calls,"
        " input_tokens, output_tokens FROM sessions"
    )
    return problems + compare_sessions(cur.fetchall(), recount)
