"""The PostgreSQL schema (docs/collector-store.md, "Schema") as migration steps, and its SQL.

Same logical schema as SQLite's (``sqlite_schema``), plus ``events.txid``: the id of the
transaction that inserted the row (``pg_current_xact_id()``, 64-bit, never wraps). Cursors
follow ``(txid, pk)`` and only include rows whose ``txid`` is below the reading snapshot's
``xmin`` (every transaction below it has finished), so a row can never commit behind a
cursor; hence the ``(…, txid, pk)`` indexes where SQLite has ``(…, pk)``. ``pk`` comes
from a named identity sequence so a batch can reserve its pks in one round trip and COPY
its events and attachment references together (``GENERATED ALWAYS``: only COPY, which
writes what it is given, and never a client's INSERT, chooses a pk). ``sessions`` text
columns sort bytewise (``COLLATE "C"``), as SQLite's do, so both backends list sessions
in the same order and pick the same ``MIN(user_id)`` whatever the database's locale.
"""

from __future__ import annotations

from telemetry_client.collector.store.migrations import Step

__all__ = ["EVENT_COLUMNS", "EVENT_TYPES", "LOCK_MIGRATE", "LOCK_RETAIN", "STEPS"]

# Advisory lock keys (any two bigints unique to this application): migrations, retention.
LOCK_MIGRATE = 0x7E1E_0001
LOCK_RETAIN = 0x7E1E_0002

_V1 = (
    """CREATE TABLE batches (
        key text PRIMARY KEY,
        received_us bigint NOT NULL,
        events integer NOT NULL,
        ingest_token text NOT NULL
    )""",
    "CREATE INDEX batches_received ON batches (received_us)",
    """CREATE TABLE events (
        pk bigint GENERATED ALWAYS AS IDENTITY (SEQUENCE NAME events_pk_seq) PRIMARY KEY,
        txid bigint NOT NULL DEFAULT (pg_current_xact_id()::text::bigint),
        id text NOT NULL,
        type text NOT NULL,
        ts_us bigint NOT NULL,
        session_id text NOT NULL,
        user_id text NOT NULL,
        app text NOT NULL,
        seq bigint NOT NULL,
        ingest_token text NOT NULL,
        ingest_team text NOT NULL,
        body bytea NOT NULL
    )""",
    "CREATE INDEX events_session_ts ON events (session_id, ts_us, seq)",
    "CREATE INDEX events_txid ON events (txid, pk)",
    "CREATE INDEX events_session_txid ON events (session_id, txid, pk)",
    "CREATE INDEX events_user_txid ON events (user_id, txid, pk)",
    "CREATE INDEX events_type_txid ON events (type, txid, pk)",
    "CREATE INDEX events_ts ON events (ts_us)",
    """CREATE TABLE event_attachments (
        sha256 text NOT NULL,
        event_pk bigint NOT NULL,
        PRIMARY KEY (sha256, event_pk)
    )""",
    "CREATE INDEX event_attachments_event ON event_attachments (event_pk)",
    """CREATE TABLE sessions (
        session_id text COLLATE "C" NOT NULL,
        team text COLLATE "C" NOT NULL,
        user_id text COLLATE "C" NOT NULL,
        app text COLLATE "C" NOT NULL,
        first_us bigint NOT NULL,
        last_us bigint NOT NULL,
        events bigint NOT NULL,
        errors bigint NOT NULL,
        llm_calls bigint NOT NULL,
        input_tokens bigint NOT NULL,
        output_tokens bigint NOT NULL,
        PRIMARY KEY (session_id, team)
    )""",
    "CREATE INDEX sessions_last ON sessions (last_us, session_id)",
    """CREATE TABLE attachments (
        sha256 text PRIMARY KEY,
        content_type text NOT NULL,
        size bigint NOT NULL,
        received_us bigint NOT NULL,
        data bytea NOT NULL
    )""",
    "CREATE INDEX attachments_received ON attachments (received_us)",
)

STEPS: tuple[Step, ...] = ((1, _V1),)

# COPY column lists and their binary types (same order).
EVENT_COLUMNS = (
    "pk, txid, id, type, ts_us, session_id, user_id, app, seq, ingest_token, ingest_team, body"
)
EVENT_TYPES = (
    "int8",
    "int8",
    "text",
    "text",
    "int8",
    "text",
    "text",
    "text",
    "int8",
    "text",
    "text",
    "bytea",
)
