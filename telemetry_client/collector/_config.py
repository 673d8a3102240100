"""``CollectorConfig``: everything the reference collector is told at startup, validated once.

The CLI (``_serve.py``) builds one from flags and environment variables; tests and the
demo build one directly. Validation happens in ``__post_init__`` so a bad value fails
before any file, socket or database connection is opened, with a message naming the field
and the bad value, except a token (never shown) and a database password (shown as ``***``:
:func:`redact_url`).
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl, unquote, urlsplit

from telemetry_client.collector._auth import TokenAuth, TokenSpec, check_token
from telemetry_client.collector.store.sql import redact_url

__all__ = [
    "MIB",
    "CollectorConfig",
    "database_url_problem",
    "redact_url",
    "scrub",
    "split_tokens",
    "url_secrets",
]

MIB = 1024 * 1024


def split_tokens(text: str, *, separator: str | None = ",") -> list[str]:
    """Tokens from a comma-separated variable (or, with ``separator=None``, a token file).

    Blank entries are dropped; in a file, lines starting with ``#`` are comments.
    """
    if separator is None:
        parts = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    else:
        parts = text.split(separator)
    return [p.strip() for p in parts if p.strip()]


_USERINFO_RE = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*://)([^/?#]*)@")


def url_secrets(url: str) -> list[str]:
    """The passwords in ``url`` (user info, ``password=`` option), raw and URL-decoded, so
    a message from elsewhere (a driver) can be scrubbed of them."""
    found: list[str] = []
    match = _USERINFO_RE.match(url)
    if match is not None and ":" in match.group(2):
        found.append(match.group(2).partition(":")[2])
    try:
        query = urlsplit(url).query
    except ValueError:
        query = ""
    found += [v for k, v in parse_qsl(query, keep_blank_values=True) if k.lower() == "password"]
    found += [unquote(v) for v in found]
    return sorted({v for v in found if v}, key=len, reverse=True)


_ANY_URL_PASSWORD_RE = re.compile(r"(://[^:/@\s'\"]*):[^@\s'\"]*@")
_ANY_QUERY_PASSWORD_RE = re.compile(r"(?i)(\bpassword=)[^&\s'\"]*")


def scrub(message: str, url: str | None = None) -> str:
    """``message`` with every password of ``url`` and of any URL it quotes (user info,
    ``password=``) replaced by ``***``: for text from elsewhere (a driver, argparse)."""
    if url is not None:
        for secret in url_secrets(url):
            message = message.replace(secret, "***")
    message = _ANY_URL_PASSWORD_RE.sub(r"\1:***@", message)
    return _ANY_QUERY_PASSWORD_RE.sub(r"\1***", message)


def database_url_problem(url: str) -> str | None:
    """Why ``url`` cannot be a database URL (None when its form is right); the reason
    shows the URL redacted."""
    try:
        scheme = urlsplit(url).scheme.lower()
    except ValueError:
        scheme = ""
    if scheme == "sqlite":
        if url.startswith("sqlite:///") and len(url) > len("sqlite:///"):
            return None
    elif scheme in ("postgresql", "postgres"):
        return None
    return (
        f"{redact_url(url)!r} is not sqlite:///ABSOLUTE/PATH.db"
        " or postgresql://user:password@host:port/dbname"
    )


@dataclass(eq=False)
class CollectorConfig:
    """Configuration of one collector process.

    ``tokens`` are the accepted bare bearer tokens (named ``token-N``, roles ingest and
    read, no team) and ``principals`` the named ones with their roles and team; at least
    one is needed unless ``allow_no_auth`` (local development only). Limits are in bytes:
    ``max_body_bytes`` caps the request body as sent (compressed), ``max_decompressed_bytes``
    the decompressed events body, ``max_event_bytes`` one NDJSON line (so a decompression
    bomb is refused after at most that much memory), ``max_attachment_bytes`` one
    attachment's raw size. The rate limit is a token bucket per bearer token
    (``rate_limit_rps`` 0 = off).
    ``disable_seconds`` turns on the kill switch: every response of the events and
    attachments endpoints carries ``X-Telemetry-Disable: <seconds>`` (``None`` = off; it can
    be changed at runtime through the app's ``CollectorState``).

    ``database_url`` None keeps the events in an SQLite database inside ``data_dir``;
    ``retention_days`` 0 keeps them forever; ``db_pool_size`` and
    ``db_statement_timeout_s`` apply to PostgreSQL (docs/collector-store.md).
    """

    data_dir: Path
    tokens: Sequence[str] = ()
    allow_no_auth: bool = False
    max_body_bytes: int = 32 * MIB
    max_decompressed_bytes: int = 256 * MIB
    max_event_bytes: int = 16 * MIB
    max_attachment_bytes: int = 64 * MIB
    rate_limit_rps: float = 200.0
    rate_limit_burst: int = 400
    disable_seconds: int | None = None
    principals: Sequence[TokenSpec] = ()
    database_url: str | None = None
    retention_days: int = 30
    db_pool_size: int = 4
    db_statement_timeout_s: float = 10.0

    def __post_init__(self) -> None:
        self.data_dir = Path(os.fspath(self.data_dir))
        if isinstance(self.tokens, str):  # a lone string would be split into characters
            raise TypeError("tokens: expected a sequence of strings, got one string")
        self.tokens = tuple(self.tokens)
        for token in self.tokens:
            check_token(token)
        self.principals = tuple(self.principals)
        if not all(isinstance(p, TokenSpec) for p in self.principals):
            raise TypeError("principals: expected TokenSpec items")
        TokenAuth([*self.tokens, *self.principals])  # refuses duplicate names and tokens
        if not self.tokens and not self.principals and not self.allow_no_auth:
            raise ValueError(
                "no token configured: give at least one bearer token"
                " (or allow_no_auth=True, for local development only)"
            )
        for name in (
            "max_body_bytes",
            "max_decompressed_bytes",
            "max_event_bytes",
            "max_attachment_bytes",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name}: expected a positive number of bytes, got {value!r}")
        if not self.rate_limit_rps >= 0:  # also refuses NaN
            raise ValueError(f"rate_limit_rps: expected >= 0, got {self.rate_limit_rps!r}")
        if self.rate_limit_rps and self.rate_limit_burst < 1:
            raise ValueError(f"rate_limit_burst: expected >= 1, got {self.rate_limit_burst!r}")
        if self.disable_seconds is not None and self.disable_seconds < 0:
            raise ValueError(f"disable_seconds: expected >= 0, got {self.disable_seconds!r}")
        if self.database_url is not None:
            problem = database_url_problem(self.database_url)
            if problem is not None:
                raise ValueError(f"database_url: {problem}")
        if not _is_int(self.retention_days) or self.retention_days < 0:
            raise ValueError(
                f"retention_days: expected a whole number of days >= 0 (0 = keep forever),"
                f" got {self.retention_days!r}"
            )
        if not _is_int(self.db_pool_size) or self.db_pool_size < 1:
            raise ValueError(f"db_pool_size: expected an integer >= 1, got {self.db_pool_size!r}")
        timeout = self.db_statement_timeout_s
        if (
            isinstance(timeout, bool)
            or not isinstance(timeout, (int, float))
            or not math.isfinite(timeout)
            or timeout <= 0
        ):
            raise ValueError(f"db_statement_timeout_s: expected seconds > 0, got {timeout!r}")

    def __repr__(self) -> str:  # never the tokens, never a database password
        url = None if self.database_url is None else redact_url(self.database_url)
        return (
            f"CollectorConfig(data_dir={str(self.data_dir)!r}, tokens={len(self.tokens)},"
            f" principals={[p.name for p in self.principals]!r}, database_url={url!r},"
            f" retention_days={self.retention_days})"
        )

    @property
    def max_attachment_body_bytes(self) -> int:
        """Largest attachment request body: the raw cap plus the worst framing overhead.

        zstd and gzip add well under 1/1024 (plus a small header) to incompressible data,
        so an attachment of exactly ``max_attachment_bytes`` always fits on the wire.
        """
        return self.max_attachment_bytes + self.max_attachment_bytes // 1024 + 4096


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
