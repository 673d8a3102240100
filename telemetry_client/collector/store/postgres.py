"""The PostgreSQL store: several collector replicas serving one database.

psycopg 3 with a :class:`psycopg_pool.ConnectionPool` (``pool_size`` connections at most,
each checked before use so a restarted server costs no failed request; every statement
under ``statement_timeout``). ``append`` is one transaction: the ``Idempotency-Key`` row
first (a second replica inserting the same key waits on the unique index until the first
commits, then sees the conflict and stores nothing), then the batch's pks reserved from
the identity sequence in one round trip, events and attachment references by binary COPY,
and one sorted session upsert. Migrations run at open under a transaction-scoped advisory
lock, so replicas starting together migrate once; retention runs on one replica at a time
(a session advisory lock it only tries). Connection loss, pool exhaustion and statement
timeouts are :class:`StoreUnavailable` (503, the client retries); a database that cannot
be reached or used at open is :class:`StorageError`. Messages show the URL as
:func:`~telemetry_client.collector.store.sql.redact_url` does and never the password.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Iterator, Sequence
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg_pool import ConnectionPool

from telemetry_client.collector._decode import DecodedEvent
from telemetry_client.collector.store import postgres_maint as maint
from telemetry_client.collector.store.base import (
    AppendResult,
    Attachment,
    AttachmentMeta,
    EventPage,
    EventQuery,
    Ingest,
    ReadScope,
    RetentionResult,
    SessionPage,
    SessionQuery,
    StorageError,
    StoreUnavailable,
    TimelinePage,
)
from telemetry_client.collector.store.migrations import migrate
from telemetry_client.collector.store.postgres_read import (
    events_page,
    sessions_page,
    timeline_page,
)
from telemetry_client.collector.store.postgres_schema import (
    EVENT_COLUMNS,
    EVENT_TYPES,
    LOCK_MIGRATE,
    LOCK_RETAIN,
    STEPS,
)
from telemetry_client.collector.store.sql import redact_url, session_sums, team_key

__all__ = ["APPLICATION_NAME", "PostgresStore"]

APPLICATION_NAME = "telemetry-collector"
_SETTING = "--database-url / TELEMETRY_COLLECTOR_DATABASE_URL"

_INSERT_BATCH = (
    "INSERT INTO batches (key, received_us, events, ingest_token) VALUES (%s, %s, %s, %s)"
    " ON CONFLICT DO NOTHING RETURNING 1"
)
_RESERVE = (
    "SELECT pg_current_xact_id()::text::bigint,"
    " ARRAY(SELECT nextval('events_pk_seq') FROM generate_series(1, %s))"
)
_UPSERT_SESSIONS = (
    "INSERT INTO sessions (session_id, team, user_id, app, first_us, last_us, events, errors,"
    " llm_calls, input_tokens, output_tokens)"
    " SELECT * FROM unnest(%s::text[], %s::text[], %s::text[], %s::text[], %s::int8[],"
    " %s::int8[], %s::int8[], %s::int8[], %s::int8[], %s::int8[], %s::int8[])"
    " ORDER BY 1, 2"
    " ON CONFLICT (session_id, team) DO UPDATE SET"
    " first_us = LEAST(sessions.first_us, excluded.first_us),"
    " last_us = GREATEST(sessions.last_us, excluded.last_us),"
    " events = sessions.events + excluded.events,"
    " errors = sessions.errors + excluded.errors,"
    " llm_calls = sessions.llm_calls + excluded.llm_calls,"
    " input_tokens = sessions.input_tokens + excluded.input_tokens,"
    " output_tokens = sessions.output_tokens + excluded.output_tokens"
)


def _now_us() -> int:
    return time.time_ns() // 1000


def _secrets_of(url: str) -> list[str]:
    """The password(s) a URL carries (userinfo or ``password=``), raw and decoded."""
    found: list[str] = []
    with contextlib.suppress(ValueError):
        parts = urlsplit(url)
        userinfo, at, _ = parts.netloc.rpartition("@")
        if at and ":" in userinfo:
            found.append(userinfo.partition(":")[2])
        found += [v for k, v in parse_qsl(parts.query) if k.lower() == "password"]
    found += [unquote(s) for s in found]
    return sorted({s for s in found if s}, key=len, reverse=True)


class PostgresStore:
    """:class:`~telemetry_client.collector.store.base.Store` on a PostgreSQL database."""

    def __init__(self, url: str, pool: ConnectionPool[psycopg.Connection[Any]]) -> None:
        self.display_url = redact_url(url)
        self._secrets = _secrets_of(url)
        self._pool = pool

    @classmethod
    def open(
        cls, url: str, *, pool_size: int = 4, statement_timeout_s: float = 10.0
    ) -> PostgresStore:
        """Connect, migrate (once across replicas) and start the pool; :class:`StorageError`
        (the URL shown without its password) when the database cannot be used."""
        shown, secrets = redact_url(url), _secrets_of(url)

        def scrub(text: str) -> str:
            for secret in secrets:
                text = text.replace(secret, "***")
            return text

        try:
            params = conninfo_to_dict(url)
        except psycopg.Error as exc:
            raise StorageError(
                f"{_SETTING}: {shown!r} is not a usable URL: {scrub(str(exc))}"
            ) from None
        if pool_size < 1:
            raise StorageError(f"the database pool size must be at least 1, got {pool_size}")
        timeout_ms = max(1, round(statement_timeout_s * 1000))
        params["options"] = " ".join(
            str(o)
            for o in (
                params.get("options"),
                f"-c statement_timeout={timeout_ms}",
                # A transaction left open holds back every replica's cursor horizon.
                f"-c idle_in_transaction_session_timeout={max(60_000, 6 * timeout_ms)}",
            )
            if o
        )
        params.setdefault("application_name", APPLICATION_NAME)
        params.setdefault("connect_timeout", max(2, math.ceil(statement_timeout_s)))
        conninfo = make_conninfo("", **params)
        try:
            with psycopg.connect(conninfo) as conn:
                migrate(
                    conn,
                    STEPS,
                    begin=None,
                    first=(f"SELECT pg_advisory_xact_lock({LOCK_MIGRATE})",),
                    placeholder="%s",
                )
        except psycopg.Error as exc:
            detail = scrub(str(exc).strip()) or type(exc).__name__
            raise StorageError(
                f"{_SETTING}: cannot open the PostgreSQL database {shown!r}: {detail}"
            ) from None
        pool: ConnectionPool[psycopg.Connection[Any]] = ConnectionPool(
            conninfo,
            min_size=1,
            max_size=pool_size,
            timeout=statement_timeout_s,
            check=ConnectionPool.check_connection,
            name="telemetry-store",
            open=True,
        )
        return cls(url, pool)

    # -- connections ----------------------------------------------------------------------

    def _scrub(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    @contextlib.contextmanager
    def _conn(self) -> Iterator[psycopg.Connection[Any]]:
        """A pooled connection in a transaction, committed on success; connection loss,
        pool timeout and statement timeout become :class:`StoreUnavailable`."""
        try:
            with self._pool.connection() as conn:
                yield conn
        except psycopg.OperationalError as exc:  # incl. QueryCanceled, PoolTimeout, closed
            detail = self._scrub(str(exc).strip()) or type(exc).__name__
            raise StoreUnavailable(f"PostgreSQL database {self.display_url!r}: {detail}") from None

    @contextlib.contextmanager
    def _cursor(self) -> Iterator[psycopg.Cursor[Any]]:
        with self._conn() as conn, conn.cursor() as cur:
            yield cur

    # -- ingest ---------------------------------------------------------------------------

    def has_key(self, key: str) -> bool:
        """True when a batch with this ``Idempotency-Key`` is committed."""
        with self._cursor() as cur:
            cur.execute("SELECT 1 FROM batches WHERE key = %s", (key,))
            return cur.fetchone() is not None

    def append(
        self, events: Sequence[DecodedEvent], key: str | None, ingest: Ingest
    ) -> AppendResult:
        """Store ``events`` in one transaction; a key already stored stores nothing."""
        sums = session_sums(events, ingest.team)
        with self._cursor() as cur:
            if key is not None:
                cur.execute(_INSERT_BATCH, (key, _now_us(), len(events), ingest.token))
                if cur.fetchone() is None:
                    return AppendResult(0, duplicate=True)
            if events:
                self._store_batch(cur, events, ingest)
                cur.execute(
                    _UPSERT_SESSIONS,
                    [list(column) for column in zip(*(s.row() for s in sums), strict=True)],
                )
        return AppendResult(len(events), duplicate=False, bytes=sum(len(e.line) for e in events))

    def _store_batch(
        self, cur: psycopg.Cursor[Any], events: Sequence[DecodedEvent], ingest: Ingest
    ) -> None:
        """COPY the batch's events and attachment references (in the caller's transaction)
        under pks reserved from the identity sequence."""
        cur.execute(_RESERVE, (len(events),))
        row = cur.fetchone()
        assert row is not None
        txid, pks = row
        token, team = ingest.token, team_key(ingest.team)
        with cur.copy(f"COPY events ({EVENT_COLUMNS}) FROM STDIN (FORMAT BINARY)") as copy:
            copy.set_types(EVENT_TYPES)
            for pk, e in zip(pks, events, strict=True):
                copy.write_row(
                    (pk, txid, e.id, e.type, e.ts_us, e.session_id, e.user_id, e.app, e.seq,
                     token, team, e.line)
                )  # fmt: skip
        refs = [(sha, pk) for pk, e in zip(pks, events, strict=True) for sha in e.attachments]
        if refs:
            with cur.copy(
                "COPY event_attachments (sha256, event_pk) FROM STDIN (FORMAT BINARY)"
            ) as copy:
                copy.set_types(("text", "int8"))
                for ref in refs:
                    copy.write_row(ref)

    # -- reads ----------------------------------------------------------------------------

    def events(self, query: EventQuery, scope: ReadScope) -> EventPage:
        """Matching events in commit order (``(txid, pk)``, below the snapshot horizon)."""
        with self._cursor() as cur:
            return events_page(cur, query, scope)

    def session_timeline(
        self, session_id: str, *, after: str | None, limit: int, scope: ReadScope
    ) -> TimelinePage:
        """The session's events by ``(ts_us, seq, pk)`` keyset (docs/viewer.md, "Order")."""
        with self._cursor() as cur:
            return timeline_page(cur, session_id, after, limit, scope)

    def sessions(self, query: SessionQuery, scope: ReadScope) -> SessionPage:
        """Sessions by most recent ``last_ts``; unscoped readers see each session once."""
        with self._cursor() as cur:
            return sessions_page(cur, query, scope)

    # -- attachments ----------------------------------------------------------------------

    def put_attachment(self, sha256: str, content_type: str, data: bytes) -> bool:
        """Store a blob under its (verified) sha256; False when it was already stored."""
        with self._cursor() as cur:
            cur.execute(
                "INSERT INTO attachments (sha256, content_type, size, received_us, data)"
                " VALUES (%s, %s, %s, %s, %s) ON CONFLICT DO NOTHING RETURNING 1",
                (sha256, content_type, len(data), _now_us(), data),
            )
            return cur.fetchone() is not None

    def attachment_meta(self, sha256: str) -> AttachmentMeta | None:
        with self._cursor() as cur:
            cur.execute("SELECT size, content_type FROM attachments WHERE sha256 = %s", (sha256,))
            row = cur.fetchone()
        return None if row is None else AttachmentMeta(int(row[0]), row[1])

    def attachment(self, sha256: str, scope: ReadScope) -> Attachment | None:
        """The blob; for a team scope only if an event of that team references it."""
        sql = "SELECT size, content_type, data FROM attachments a WHERE sha256 = %s"
        params: list[Any] = [sha256]
        if scope.team is not None:
            sql += (
                " AND EXISTS (SELECT 1 FROM event_attachments r JOIN events e"
                " ON e.pk = r.event_pk WHERE r.sha256 = a.sha256 AND e.ingest_team = %s)"
            )
            params.append(team_key(scope.team))
        with self._cursor() as cur:
            cur.execute(sql, params)
            row = cur.fetchone()
        return None if row is None else Attachment(int(row[0]), row[1], bytes(row[2]))

    # -- retention ------------------------------------------------------------------------

    def retain(self, cutoff_us: int, *, chunk: int = 5000) -> RetentionResult:
        """Delete what is older than ``cutoff_us``, at most ``chunk`` rows per transaction;
        on one replica at a time (another running it: returns zeros at once)."""
        chunk = max(1, chunk)
        with self._conn() as conn:
            # A session lock (held across the chunks, each committed on its own).
            row = conn.execute("SELECT pg_try_advisory_lock(%s)", (LOCK_RETAIN,)).fetchone()
            conn.commit()
            if not row or not row[0]:
                return RetentionResult(0, 0, 0, 0)
            try:
                return self._retain_locked(conn, cutoff_us, chunk)
            finally:
                conn.rollback()
                conn.execute("SELECT pg_advisory_unlock(%s)", (LOCK_RETAIN,))
                conn.commit()

    def _retain_locked(
        self, conn: psycopg.Connection[Any], cutoff_us: int, chunk: int
    ) -> RetentionResult:
        events = sessions = 0
        with conn.cursor() as cur:
            while True:
                with conn.transaction():
                    n, gone = maint.retain_events(cur, cutoff_us, chunk)
                events += n
                sessions += gone
                if n < chunk:
                    break
            counts = []
            for sql in (maint.DELETE_SESSIONS, maint.DELETE_BATCHES, maint.DELETE_ATTACHMENTS):
                total = 0
                while True:
                    with conn.transaction():
                        cur.execute(sql, (cutoff_us, chunk))
                        n = cur.rowcount
                    total += n
                    if n < chunk:
                        break
                counts.append(total)
        return RetentionResult(events, counts[2], sessions + counts[0], counts[1])

    # -- health ---------------------------------------------------------------------------

    def ping(self) -> None:
        """Raise :class:`StoreUnavailable` unless the database answers now."""
        with self._cursor() as cur:
            cur.execute("SELECT 1 FROM schema_version LIMIT 1")

    def check(self) -> list[str]:
        """Broken invariants (empty when all hold): schema version, references,
        attachment contents, session aggregates vs a recount."""
        with self._cursor() as cur:
            return maint.check(cur)

    def close(self) -> None:
        """Close the pool (idempotent); later calls raise :class:`StoreUnavailable`."""
        self._pool.close()
