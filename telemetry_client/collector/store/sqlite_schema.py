"""The SQLite schema (docs/collector-store.md, "Schema") as migration steps, and its SQL.

``events.body`` is the JSON line exactly as the decoder produced it (a BLOB: never parsed
again to answer a query). Every ``events`` index costs ingest CPU, so there is one per
filter, each ending in ``pk`` (the page order): a session's page and retention's "first
event left" both use ``(session_id, pk)``. ``event_attachments`` is keyed by sha256 first
(scoped attachment reads and retention ask "who references this blob?") with an index on
the event for deleting an event's references. ``sessions`` is keyed ``(session_id, team)`` with team
``''`` for none; ``last_us`` is indexed for the list order and retention.
"""

from __future__ import annotations

from telemetry_client.collector.store.migrations import Step

__all__ = [
    "DELETE_EVENT",
    "DELETE_EVENT_REFS",
    "INSERT_BATCH",
    "INSERT_EVENT",
    "INSERT_REF",
    "SESSION_COLUMNS",
    "STEPS",
    "SUBTRACT_SESSION",
    "UPSERT_SESSION",
]

_V1 = (
    """CREATE TABLE batches (
        key TEXT PRIMARY KEY,
        received_us INTEGER NOT NULL,
        events INTEGER NOT NULL,
        ingest_token TEXT NOT NULL
    )""",
    "CREATE INDEX batches_received ON batches (received_us)",
    """CREATE TABLE events (
        pk INTEGER PRIMARY KEY AUTOINCREMENT,
        id TEXT NOT NULL,
        type TEXT NOT NULL,
        ts_us INTEGER NOT NULL,
        session_id TEXT NOT NULL,
        user_id TEXT NOT NULL,
        app TEXT NOT NULL,
        seq INTEGER NOT NULL,
        ingest_token TEXT NOT NULL,
        ingest_team TEXT NOT NULL,
        body BLOB NOT NULL
    )""",
    "CREATE INDEX events_session_pk ON events (session_id, pk)",
    "CREATE INDEX events_user_pk ON events (user_id, pk)",
    "CREATE INDEX events_type_pk ON events (type, pk)",
    "CREATE INDEX events_ts ON events (ts_us)",
    """CREATE TABLE event_attachments (
        sha256 TEXT NOT NULL,
        event_pk INTEGER NOT NULL,
        PRIMARY KEY (sha256, event_pk)
    ) WITHOUT ROWID""",
    "CREATE INDEX event_attachments_event ON event_attachments (event_pk)",
    """CREATE TABLE sessions (
        session_id TEXT NOT NULL,
        team TEXT NOT NULL,
        user_id TEXT NOT NULL,
        app TEXT NOT NULL,
        first_us INTEGER NOT NULL,
        last_us INTEGER NOT NULL,
        events INTEGER NOT NULL,
        errors INTEGER NOT NULL,
        llm_calls INTEGER NOT NULL,
        input_tokens INTEGER NOT NULL,
        output_tokens INTEGER NOT NULL,
        PRIMARY KEY (session_id, team)
    )""",
    "CREATE INDEX sessions_last ON sessions (last_us)",
    """CREATE TABLE attachments (
        sha256 TEXT PRIMARY KEY,
        content_type TEXT NOT NULL,
        size INTEGER NOT NULL,
        received_us INTEGER NOT NULL,
        data BLOB NOT NULL
    )""",
    "CREATE INDEX attachments_received ON attachments (received_us)",
)

STEPS: tuple[Step, ...] = ((1, _V1),)

INSERT_BATCH = (
    "INSERT INTO batches (key, received_us, events, ingest_token) VALUES (?, ?, ?, ?)"
    " ON CONFLICT DO NOTHING"
)
INSERT_EVENT = (
    "INSERT INTO events (pk, id, type, ts_us, session_id, user_id, app, seq,"
    " ingest_token, ingest_team, body) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
INSERT_REF = "INSERT OR IGNORE INTO event_attachments (sha256, event_pk) VALUES (?, ?)"
UPSERT_SESSION = (
    "INSERT INTO sessions (session_id, team, user_id, app, first_us, last_us, events, errors,"
    " llm_calls, input_tokens, output_tokens) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (session_id, team) DO UPDATE SET"
    " first_us = min(first_us, excluded.first_us),"
    " last_us = max(last_us, excluded.last_us),"
    " events = events + excluded.events,"
    " errors = errors + excluded.errors,"
    " llm_calls = llm_calls + excluded.llm_calls,"
    " input_tokens = input_tokens + excluded.input_tokens,"
    " output_tokens = output_tokens + excluded.output_tokens"
)
SUBTRACT_SESSION = (
    "UPDATE sessions SET events = events - ?, errors = errors - ?, llm_calls = llm_calls - ?,"
    " input_tokens = input_tokens - ?, output_tokens = output_tokens - ?"
    " WHERE session_id = ? AND team = ?"
)
DELETE_EVENT_REFS = "DELETE FROM event_attachments WHERE event_pk = ?"
DELETE_EVENT = "DELETE FROM events WHERE pk = ?"
SESSION_COLUMNS = (
    "session_id, user_id, app, first_us, last_us, events, errors, llm_calls,"
    " input_tokens, output_tokens"
)
