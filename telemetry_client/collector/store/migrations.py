"""Schema migrations: numbered steps per dialect, run once, at startup, in one transaction.

A backend lists its dialect's steps as ``(version, statements)``; :func:`migrate` creates
the ``schema_version`` table if needed, runs every step newer than the stored version and
records the newest, all in one transaction: a crash halfway leaves the old schema, and the
next start runs the steps again. A database whose version is newer than the code (a
newer collector migrated it) refuses to start rather than writing rows an older schema
does not describe. Plain DB-API, so both backends share it; PostgreSQL passes an advisory
lock in ``first`` so replicas starting together migrate one at a time.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from telemetry_client.collector.store.base import StorageError

__all__ = ["Connection", "Step", "current_version", "latest_version", "migrate"]

Step = tuple[int, Sequence[str]]
"""``(version, statements)``: what brings the schema from ``version - 1`` to ``version``."""


class Connection(Protocol):
    """The DB-API connection surface the runner uses (sqlite3, psycopg)."""

    def cursor(self) -> Any: ...

    def commit(self) -> None: ...

    def rollback(self) -> None: ...


def latest_version(steps: Sequence[Step]) -> int:
    """The version the steps lead to (0 for none)."""
    return max((version for version, _ in steps), default=0)


def current_version(conn: Connection) -> int:
    """The schema version a migrated database records."""
    cur = conn.cursor()
    try:
        cur.execute("SELECT MAX(version) FROM schema_version")
        return int(cur.fetchone()[0] or 0)
    finally:
        cur.close()


def migrate(
    conn: Connection,
    steps: Sequence[Step],
    *,
    begin: str | None = "BEGIN",
    first: Sequence[str] = (),
    placeholder: str = "?",
) -> int:
    """Bring the schema to :func:`latest_version` of ``steps``; returns that version.

    ``begin`` opens the transaction (``"BEGIN IMMEDIATE"`` on SQLite takes the write lock
    up front; None when the driver opens one implicitly); ``first`` runs right after it
    (PostgreSQL: ``SELECT pg_advisory_xact_lock(...)``); ``placeholder`` is the driver's
    parameter marker. Raises :class:`StorageError` when the database is newer than
    ``steps``; any other failure rolls back and propagates.
    """
    target = latest_version(steps)
    versions = [version for version, _ in steps]
    if sorted(versions) != list(range(1, target + 1)):
        raise ValueError(f"migration steps must be numbered 1..N, got {versions}")
    cur = conn.cursor()
    try:
        if begin is not None:
            cur.execute(begin)
        for statement in first:
            cur.execute(statement)
        cur.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        cur.execute("SELECT MAX(version) FROM schema_version")
        current = int(cur.fetchone()[0] or 0)
        if current > target:
            raise StorageError(
                f"database schema version {current} is newer than this collector supports"
                f" ({target}): upgrade telemetry-client"
            )
        for version, statements in sorted(steps):
            if version > current:
                for statement in statements:
                    cur.execute(statement)
        if target > current:
            cur.execute("DELETE FROM schema_version")
            cur.execute(
                f"INSERT INTO schema_version (version) VALUES ({placeholder})",  # noqa: S608
                (target,),
            )
        conn.commit()
    except BaseException:
        conn.rollback()
        raise
    finally:
        cur.close()
    return target
