"""SQLite upkeep: one chunk of event retention, the other retention deletes, ``check()``.

Retention subtracts deleted events from their sessions in the same transaction (and drops
a session once its last event is gone), so the session aggregates always equal a recount
of the stored events, which is what :func:`check_database` verifies.
"""

from __future__ import annotations

import hashlib
import sqlite3

from telemetry_client.collector.store import sqlite_schema as q
from telemetry_client.collector.store.migrations import current_version, latest_version
from telemetry_client.collector.store.sql import compare_sessions, recount_sessions

__all__ = [
    "DELETE_OLD_ATTACHMENTS",
    "DELETE_OLD_BATCHES",
    "DELETE_OLD_SESSIONS",
    "check_database",
    "retain_events",
]

# Each takes (cutoff_us, chunk) and deletes at most ``chunk`` rows.
DELETE_OLD_SESSIONS = (
    "DELETE FROM sessions WHERE rowid IN (SELECT rowid FROM sessions WHERE last_us < ? LIMIT ?)"
)
DELETE_OLD_BATCHES = (
    "DELETE FROM batches WHERE rowid IN (SELECT rowid FROM batches WHERE received_us < ? LIMIT ?)"
)
DELETE_OLD_ATTACHMENTS = (
    "DELETE FROM attachments WHERE sha256 IN (SELECT sha256 FROM attachments a"
    " WHERE received_us < ? AND NOT EXISTS"
    " (SELECT 1 FROM event_attachments r WHERE r.sha256 = a.sha256) LIMIT ?)"
)


def retain_events(conn: sqlite3.Connection, cutoff_us: int, chunk: int) -> tuple[int, int]:
    """Delete up to ``chunk`` events older than ``cutoff_us`` with their attachment
    references, subtracted from their sessions (inside the caller's transaction).
    Returns ``(events deleted, sessions deleted)``."""
    rows = conn.execute(
        "SELECT pk, session_id, ingest_team, type, ts_us,"
        " CASE WHEN type = 'llm_call' THEN body END"
        " FROM events WHERE ts_us < ? ORDER BY ts_us LIMIT ?",
        (cutoff_us, chunk),
    ).fetchall()
    if not rows:
        return 0, 0
    pks = [(r[0],) for r in rows]
    conn.executemany(q.DELETE_EVENT_REFS, pks)
    conn.executemany(q.DELETE_EVENT, pks)
    gone = 0
    removed = recount_sessions(r[1:] for r in rows)
    for key, s in sorted(removed.items()):
        conn.execute(
            q.SUBTRACT_SESSION,
            (s.events, s.errors, s.llm_calls, s.input_tokens, s.output_tokens, *key),
        )
        first = conn.execute(
            "SELECT MIN(ts_us) FROM events WHERE session_id = ? AND ingest_team = ?", key
        ).fetchone()[0]
        if first is None:
            conn.execute("DELETE FROM sessions WHERE session_id = ? AND team = ?", key)
            gone += 1
        else:
            conn.execute(
                "UPDATE sessions SET first_us = ? WHERE session_id = ? AND team = ?",
                (first, *key),
            )
    return len(rows), gone


def check_database(conn: sqlite3.Connection) -> list[str]:
    """Broken invariants: file integrity, schema version, dangling attachment references,
    attachment bytes vs their name and size, session aggregates vs a recount."""
    problems: list[str] = []
    integrity = [r[0] for r in conn.execute("PRAGMA integrity_check").fetchall()]
    if integrity != ["ok"]:
        problems += [f"integrity_check: {line}" for line in integrity]
    version, want = current_version(conn), latest_version(q.STEPS)
    if version != want:
        problems.append(f"schema version {version}, expected {want}")
    for event_pk, sha in conn.execute(
        "SELECT event_pk, sha256 FROM event_attachments r"
        " WHERE NOT EXISTS (SELECT 1 FROM events WHERE pk = r.event_pk)"
    ):
        problems.append(f"event_attachments ({sha}, {event_pk}): no such event")
    for sha, size, data in conn.execute("SELECT sha256, size, data FROM attachments"):
        if hashlib.sha256(data).hexdigest() != sha or len(data) != size:
            problems.append(f"attachment {sha}: content does not match its name or size")
    recount = recount_sessions(
        conn.execute(
            "SELECT session_id, ingest_team, type, ts_us,"
            " CASE WHEN type = 'llm_call' THEN body END FROM events"
        )
    )
    stored = conn.execute(
        "SELECT session_id, team, first_us, last_us, events, errors, llm_calls,"
        " input_tokens, output_tokens FROM sessions"
    ).fetchall()
    return problems + compare_sessions(stored, recount)
