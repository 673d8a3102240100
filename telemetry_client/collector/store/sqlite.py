"""The SQLite store: the collector's default database, one file in the data dir.

WAL with ``synchronous=FULL``: a commit is fsync'ed before ``append`` returns, so a 2xx
means durable. One writer connection behind a lock serialises every write, which makes
``pk`` order commit order (the events cursor is the last ``pk``); each reading thread has
its own connection and reads a WAL snapshot, so reads never wait for ingest and ingest
never waits for reads. Lock waits beyond ``busy_timeout`` and I/O errors become
:class:`StoreUnavailable` (503, the client retries); nothing of the batch was committed.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import time
import weakref
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

from telemetry_client._internal import fs as _fs
from telemetry_client.collector._decode import DecodedEvent
from telemetry_client.collector.store import sqlite_schema as q
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
from telemetry_client.collector.store.sql import (
    SessionSums,
    decode_cursor,
    encode_cursor,
    event_dict,
    event_filters,
    session_dict,
    session_sums,
    team_key,
)
from telemetry_client.collector.store.sqlite_timeline import timeline_page
from telemetry_client.collector.store.sqlite_upkeep import (
    DELETE_OLD_ATTACHMENTS,
    DELETE_OLD_BATCHES,
    DELETE_OLD_SESSIONS,
    check_database,
    retain_events,
)

__all__ = ["SqliteStore"]

_O_FLAGS = os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOFOLLOW", 0)


_S = TypeVar("_S", bound="SqliteStore")

PAGE_SIZE = 32768


def _now_us() -> int:
    return time.time_ns() // 1000


def _where(conditions: Sequence[str]) -> str:
    return f" WHERE {' AND '.join(conditions)}" if conditions else ""


class _Reader:
    """One thread's read connection, closed when the thread ends (its thread-local goes)
    or when the store closes: worker threads come and go, connections must not pile up."""

    __slots__ = ("__weakref__", "conn")

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def __del__(self) -> None:
        self.conn.close()


class SqliteStore:
    """:class:`~telemetry_client.collector.store.base.Store` on one SQLite file."""

    def __init__(self, path: Path, *, busy_timeout_s: float = 5.0) -> None:
        self.path = Path(path)
        self._timeout = busy_timeout_s
        self._write_lock = threading.Lock()
        self._readers_lock = threading.Lock()
        self._readers: weakref.WeakSet[_Reader] = weakref.WeakSet()
        self._local = threading.local()
        self._closed = False
        try:
            self._writer = self._connect()
        except sqlite3.Error as exc:
            raise StorageError(f"cannot open the SQLite database {self.path}: {exc}") from exc
        try:
            # Only a new (empty) file takes it: fewer WAL frames and syscalls per batch of
            # ~2.5 KB bodies (docs/collector-store.md, "Schema").
            self._writer.execute(f"PRAGMA page_size = {PAGE_SIZE}")
            mode = self._writer.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise StorageError(f"{self.path}: cannot use WAL mode (journal_mode={mode})")
            self._writer.execute("PRAGMA synchronous = FULL")
            migrate(self._writer, q.STEPS, begin="BEGIN IMMEDIATE")
        except BaseException as exc:
            self._writer.close()
            if isinstance(exc, sqlite3.Error):
                raise StorageError(f"cannot open the SQLite database {self.path}: {exc}") from exc
            raise

    @classmethod
    def open(cls: type[_S], path: Path, *, busy_timeout_s: float = 5.0) -> _S:
        """Open (creating, migrating) the database at ``path``: a new file is 0600 and a
        missing directory 0700; :class:`StorageError` when it cannot be used."""
        path = Path(path)
        try:
            _fs.ensure_dir(path.parent)
            fd = os.open(path, _O_FLAGS | os.O_EXCL, _fs.FILE_MODE)
        except FileExistsError:
            pass
        except OSError as exc:
            raise StorageError(f"cannot create the SQLite database {path}: {exc}") from exc
        else:
            try:
                os.fchmod(fd, _fs.FILE_MODE)  # whatever the umask
            finally:
                os.close(fd)
        return cls(path, busy_timeout_s=busy_timeout_s)

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(
            self.path, timeout=self._timeout, isolation_level=None, check_same_thread=False
        )

    # -- transactions -------------------------------------------------------------------

    @contextlib.contextmanager
    def _translated(self) -> Iterator[None]:
        if self._closed:
            raise StoreUnavailable("the store is closed")
        try:
            yield
        except sqlite3.OperationalError as exc:  # locked, busy, I/O, disk full
            raise StoreUnavailable(f"SQLite database {self.path}: {exc}") from exc

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """The writer in a transaction holding the write lock; committed on success."""
        with self._translated(), self._write_lock:
            conn = self._writer
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise

    @contextlib.contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        """This thread's reader in a read transaction (one consistent snapshot)."""
        with self._translated():
            reader: _Reader | None = getattr(self._local, "reader", None)
            if reader is None:
                reader = _Reader(self._connect())
                reader.conn.execute("PRAGMA query_only = ON")
                with self._readers_lock:
                    if self._closed:
                        reader.conn.close()
                        raise StoreUnavailable("the store is closed")
                    self._readers.add(reader)
                self._local.reader = reader
            conn = reader.conn
            conn.execute("BEGIN")
            try:
                yield conn
            finally:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")

    # -- ingest ---------------------------------------------------------------------------

    def has_key(self, key: str) -> bool:
        """True when a batch with this ``Idempotency-Key`` is stored."""
        with self._read() as conn:
            row = conn.execute("SELECT 1 FROM batches WHERE key = ?", (key,)).fetchone()
        return row is not None

    def append(
        self, events: Sequence[DecodedEvent], key: str | None, ingest: Ingest
    ) -> AppendResult:
        """Store ``events`` in one durable transaction; a stored ``key`` stores nothing."""
        sums = session_sums(events, ingest.team)
        with self._write() as conn:
            if key is not None:
                row = (key, _now_us(), len(events), ingest.token)
                if conn.execute(q.INSERT_BATCH, row).rowcount != 1:
                    return AppendResult(0, duplicate=True)
            self._store_batch(conn, events, ingest, sums)
        return AppendResult(len(events), duplicate=False, bytes=sum(len(e.line) for e in events))

    def _store_batch(
        self,
        conn: sqlite3.Connection,
        events: Sequence[DecodedEvent],
        ingest: Ingest,
        sums: list[SessionSums],
    ) -> None:
        """Insert a batch's events, attachment references and session sums (in a
        transaction). ``pk`` is assigned here: the single writer owns the sequence."""
        row = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'events'").fetchone()
        base = (row[0] if row else 0) + 1
        token, team = ingest.token, team_key(ingest.team)
        conn.executemany(
            q.INSERT_EVENT,
            [
                (
                    base + i,
                    e.id,
                    e.type,
                    e.ts_us,
                    e.session_id,
                    e.user_id,
                    e.app,
                    e.seq,
                    token,
                    team,
                    e.line,
                )
                for i, e in enumerate(events)
            ],
        )
        refs = [(sha, base + i) for i, e in enumerate(events) for sha in e.attachments]
        if refs:
            conn.executemany(q.INSERT_REF, refs)
        conn.executemany(q.UPSERT_SESSION, [s.row() for s in sums])

    # -- reads ----------------------------------------------------------------------------

    def events(self, query: EventQuery, scope: ReadScope) -> EventPage:
        """Matching events in commit order; ``total`` counts every match."""
        where, params = event_filters(query, scope, "?")
        page_where, page_params, offset = list(where), list(params), max(0, query.offset)
        if query.cursor is not None:
            (after,) = decode_cursor(query.cursor, (int,))
            page_where.append("pk > ?")
            page_params.append(after)
            offset = 0
        limit = max(0, query.limit)
        count_sql = f"SELECT COUNT(*) FROM events{_where(where)}"  # noqa: S608
        page_sql = (
            f"SELECT pk, body, ingest_token, ingest_team FROM events{_where(page_where)}"  # noqa: S608
            " ORDER BY pk LIMIT ? OFFSET ?"
        )
        with self._read() as conn:
            total = conn.execute(count_sql, params).fetchone()[0]
            rows = conn.execute(page_sql, [*page_params, limit + 1, offset]).fetchall()
        more = len(rows) > limit
        rows = rows[:limit]
        return EventPage(
            [event_dict(body, token, team) for _, body, token, team in rows],
            total,
            encode_cursor([rows[-1][0]]) if more and rows else None,
            encode_cursor([rows[-1][0]]) if rows else query.cursor,
        )

    def session_timeline(
        self, session_id: str, *, after: str | None, limit: int, scope: ReadScope
    ) -> TimelinePage:
        """The session's events by ``(ts_us, seq, pk)`` keyset, in one snapshot."""
        with self._read() as conn:
            return timeline_page(conn, session_id, after, limit, scope)

    def sessions(self, query: SessionQuery, scope: ReadScope) -> SessionPage:
        """Sessions by most recent ``last_ts``; an unscoped reader sees each session once
        (its rows of several teams summed)."""
        params: list[Any] = []
        if scope.team is None:
            source = (
                "(SELECT session_id, MIN(user_id) AS user_id, MIN(app) AS app,"
                " MIN(first_us) AS first_us, MAX(last_us) AS last_us, SUM(events) AS events,"
                " SUM(errors) AS errors, SUM(llm_calls) AS llm_calls,"
                " SUM(input_tokens) AS input_tokens, SUM(output_tokens) AS output_tokens"
                " FROM sessions GROUP BY session_id)"
            )
        else:
            source = "(SELECT * FROM sessions WHERE team = ?)"
            params.append(team_key(scope.team))
        where: list[str] = []
        for column, value in (("user_id", query.user_id), ("app", query.app)):
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        if query.since_us is not None:
            where.append("last_us >= ?")
            params.append(query.since_us)
        if query.until_us is not None:
            where.append("first_us < ?")
            params.append(query.until_us)
        if query.cursor is not None:
            last_us, session_id = decode_cursor(query.cursor, (int, str))
            where.append("(last_us < ? OR (last_us = ? AND session_id > ?))")
            params += [last_us, last_us, session_id]
        limit = max(0, query.limit)
        sql = (
            f"SELECT {q.SESSION_COLUMNS} FROM {source}{_where(where)}"  # noqa: S608
            " ORDER BY last_us DESC, session_id LIMIT ?"
        )
        with self._read() as conn:
            rows = conn.execute(sql, [*params, limit + 1]).fetchall()
        more = len(rows) > limit
        rows = rows[:limit]
        cursor = encode_cursor([rows[-1][4], rows[-1][0]]) if more and rows else None
        return SessionPage([session_dict(r) for r in rows], cursor)

    # -- attachments ----------------------------------------------------------------------

    def put_attachment(self, sha256: str, content_type: str, data: bytes) -> bool:
        """Store a blob under its (verified) sha256; False when it was already stored."""
        with self._write() as conn:
            cur = conn.execute(
                "INSERT INTO attachments (sha256, content_type, size, received_us, data)"
                " VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                (sha256, content_type, len(data), _now_us(), data),
            )
            return cur.rowcount == 1

    def attachment_meta(self, sha256: str) -> AttachmentMeta | None:
        with self._read() as conn:
            row = conn.execute(
                "SELECT size, content_type FROM attachments WHERE sha256 = ?", (sha256,)
            ).fetchone()
        return None if row is None else AttachmentMeta(row[0], row[1])

    def attachment(self, sha256: str, scope: ReadScope) -> Attachment | None:
        """The blob; for a team scope only if an event of that team references it."""
        sql = "SELECT size, content_type, data FROM attachments a WHERE sha256 = ?"
        params: list[Any] = [sha256]
        if scope.team is not None:
            sql += (
                " AND EXISTS (SELECT 1 FROM event_attachments r JOIN events e"
                " ON e.pk = r.event_pk WHERE r.sha256 = a.sha256 AND e.ingest_team = ?)"
            )
            params.append(team_key(scope.team))
        with self._read() as conn:
            row = conn.execute(sql, params).fetchone()
        return None if row is None else Attachment(row[0], row[1], bytes(row[2]))

    # -- retention ------------------------------------------------------------------------

    def retain(self, cutoff_us: int, *, chunk: int = 5000) -> RetentionResult:
        """Delete what is older than ``cutoff_us``, at most ``chunk`` rows per transaction.

        Deleting events subtracts them from their sessions (a session whose events are
        all gone goes too), so the aggregates always equal a recount of what is stored.
        """
        chunk = max(1, chunk)
        events = sessions = 0
        while True:
            with self._write() as conn:
                n, s = retain_events(conn, cutoff_us, chunk)
            events += n
            sessions += s
            if n < chunk:
                break
        sessions += self._delete_chunks(DELETE_OLD_SESSIONS, cutoff_us, chunk)
        batches = self._delete_chunks(DELETE_OLD_BATCHES, cutoff_us, chunk)
        attachments = self._delete_chunks(DELETE_OLD_ATTACHMENTS, cutoff_us, chunk)
        return RetentionResult(events, attachments, sessions, batches)

    def _delete_chunks(self, sql: str, cutoff_us: int, chunk: int) -> int:
        deleted = 0
        while True:
            with self._write() as conn:
                n = conn.execute(sql, (cutoff_us, chunk)).rowcount
            deleted += n
            if n < chunk:
                return deleted

    # -- health -----------------------------------------------------------------------------

    def ping(self) -> None:
        """Raise :class:`StoreUnavailable` unless the database answers."""
        with self._read() as conn:
            conn.execute("SELECT 1 FROM schema_version").fetchone()

    def check(self) -> list[str]:
        """Broken invariants (:func:`sqlite_upkeep.check_database`); tests call it."""
        with self._read() as conn:
            return check_database(conn)

    def close(self) -> None:
        """Close every connection (idempotent); later calls raise StoreUnavailable."""
        with self._write_lock, self._readers_lock:
            if self._closed:
                return
            self._closed = True
            self._writer.close()
            for reader in list(self._readers):
                reader.conn.close()
            self._readers.clear()
