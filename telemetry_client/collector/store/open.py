"""``--database-url`` → a :class:`Store`: SQLite by default, PostgreSQL on request.

``None`` is the embedded default (``collector.db`` in the data dir); ``sqlite:///ABS/PATH.db``
names another SQLite file (an absolute path only: a relative one would depend on the
directory the service happens to start in); ``postgresql://`` / ``postgres://`` opens the
PostgreSQL store, imported only then so a SQLite collector never loads psycopg. Every
error names the flag and variable and shows the URL with its password as ``***``.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from urllib.parse import unquote, urlsplit

from telemetry_client.collector.store.base import StorageError, Store
from telemetry_client.collector.store.sql import redact_url
from telemetry_client.collector.store.sqlite import SqliteStore

__all__ = ["DEFAULT_SQLITE_NAME", "open_store"]

DEFAULT_SQLITE_NAME = "collector.db"
_SETTING = "--database-url / TELEMETRY_COLLECTOR_DATABASE_URL"
_POSTGRES_MODULE = "telemetry_client.collector.store.postgres"


def open_store(
    database_url: str | None,
    data_dir: Path,
    *,
    pool_size: int = 4,
    statement_timeout_s: float = 10.0,
) -> Store:
    """Open (creating, migrating) the store ``database_url`` names; :class:`StorageError`
    for a URL this collector cannot use or a database it cannot open."""
    if database_url is None or not database_url.strip():
        return SqliteStore.open(Path(data_dir) / DEFAULT_SQLITE_NAME)
    scheme = database_url.partition(":")[0].lower()
    if scheme == "sqlite":
        return SqliteStore.open(_sqlite_path(database_url))
    if scheme in ("postgresql", "postgres"):
        try:
            module = importlib.import_module(_POSTGRES_MODULE)
        except ImportError as exc:
            missing = exc.name or ""
            detail = (
                "this build has no PostgreSQL store"
                if missing == _POSTGRES_MODULE
                else f"its driver is not installed ({missing}):"
                " pip install 'telemetry-client[collector]'"
            )
            raise StorageError(
                f"{_SETTING}: cannot use {redact_url(database_url)!r}: {detail}"
            ) from None
        store: Store = module.PostgresStore.open(
            database_url, pool_size=pool_size, statement_timeout_s=statement_timeout_s
        )
        return store
    raise StorageError(
        f"{_SETTING}: unsupported database URL {redact_url(database_url)!r}:"
        " use sqlite:///ABSOLUTE/PATH.db or postgresql://user:password@host:port/dbname"
    )


def _sqlite_path(url: str) -> Path:
    """The file of ``sqlite:///ABS/PATH.db``; StorageError for any other shape."""
    parts = urlsplit(url)
    path = unquote(parts.path)
    if parts.netloc or not path.startswith("/") or parts.query or parts.fragment:
        raise StorageError(
            f"{_SETTING}: {redact_url(url)!r} is not sqlite:///ABSOLUTE/PATH.db"
            " (three slashes, then an absolute path; no relative paths or options)"
        )
    return Path("/" + path.lstrip("/"))
