"""The ``telemetry-collector`` command line: flags and environment → :class:`CollectorConfig`.

Every error is a ``ValueError`` whose message names the flag or variable and the bad
value, except tokens (never shown) and database passwords (the URL is shown redacted);
``main`` prints it and exits 2. argparse's own errors go through :class:`ScrubbingParser`,
which hides the password of any URL they quote.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any, NoReturn

from telemetry_client._internal.units import parse_duration_s, parse_size
from telemetry_client._version import __version__
from telemetry_client.collector._auth import TokenSpec, parse_token_file
from telemetry_client.collector._config import (
    CollectorConfig,
    database_url_problem,
    scrub,
    split_tokens,
)

__all__ = [
    "DATABASE_URL_ENV",
    "DISABLE_ENV",
    "RETENTION_ENV",
    "TOKENS_ENV",
    "ScrubbingParser",
    "config_from_args",
    "database_url_of",
    "parser",
]

TOKENS_ENV = "TELEMETRY_COLLECTOR_TOKENS"
DISABLE_ENV = "TELEMETRY_COLLECTOR_DISABLE_SECONDS"
RETENTION_ENV = "TELEMETRY_COLLECTOR_RETENTION_DAYS"
DATABASE_URL_ENV = "TELEMETRY_COLLECTOR_DATABASE_URL"


class ScrubbingParser(argparse.ArgumentParser):
    """argparse that never prints a URL's password in its own errors (it quotes values)."""

    def error(self, message: str) -> NoReturn:
        super().error(scrub(message))


def parser() -> argparse.ArgumentParser:
    p = ScrubbingParser(
        prog="telemetry-collector",
        description="Reference collector for telemetry-client (events, attachments, queries).",
        epilog=(
            "Upgrade a 0.1 data dir: telemetry-collector import DIR [--database-url URL]"
            " [--data-dir DIR] (see telemetry-collector import --help)."
        ),
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    p.add_argument("--port", type=int, default=8787, help="port (0: a free one; default: 8787)")
    p.add_argument(
        "--data-dir",
        required=True,
        type=Path,
        metavar="DIR",
        help="where the collector keeps its data (the default SQLite database)",
    )
    p.add_argument(
        "--database-url",
        metavar="URL",
        help=(
            "sqlite:///ABSOLUTE/PATH.db or postgresql://user:password@host:port/dbname"
            f" (also {DATABASE_URL_ENV}; default: SQLite in --data-dir)"
        ),
    )
    p.add_argument(
        "--retention-days",
        metavar="N",
        help=f"delete events older than N days (0: keep forever; default 30; also {RETENTION_ENV})",
    )
    p.add_argument(
        "--db-pool-size", metavar="N", help="PostgreSQL connections per process (default 4)"
    )
    p.add_argument(
        "--db-statement-timeout",
        metavar="S",
        help="PostgreSQL statement timeout in seconds (default 10)",
    )
    p.add_argument(
        "--token",
        action="append",
        default=[],
        help=f"accepted bearer token (repeatable; also {TOKENS_ENV}, comma-separated)",
    )
    p.add_argument(
        "--token-file",
        type=Path,
        metavar="FILE",
        help="file with one token per line: TOKEN, or TOKEN name=NAME"
        " roles=ingest|read|admin[,..] [team=TEAM] (# comments)",
    )
    p.add_argument(
        "--no-auth", action="store_true", help="accept requests without a token (development only)"
    )
    p.add_argument(
        "--max-body-bytes", type=parse_size, metavar="SIZE", help="request body cap (default 32MiB)"
    )
    p.add_argument(
        "--max-decompressed-bytes",
        type=parse_size,
        metavar="SIZE",
        help="decompressed batch cap (default 256MiB)",
    )
    p.add_argument(
        "--max-event-bytes", type=parse_size, metavar="SIZE", help="one event's cap (default 16MiB)"
    )
    p.add_argument(
        "--max-attachment-bytes",
        type=parse_size,
        metavar="SIZE",
        help="one attachment's cap (default 64MiB)",
    )
    p.add_argument(
        "--rate-limit-rps",
        type=float,
        metavar="RPS",
        help="requests/s per token (0: off; default 200)",
    )
    p.add_argument(
        "--rate-limit-burst", type=int, metavar="N", help="burst per token (default 400)"
    )
    p.add_argument(
        "--disable-clients",
        metavar="SECONDS",
        help=f"kill switch: tell clients to stop for this long (also {DISABLE_ENV})",
    )
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    p.add_argument("--no-access-log", action="store_true", help="do not log each request")
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    return p


def config_from_args(args: argparse.Namespace, environ: dict[str, str]) -> CollectorConfig:
    """The :class:`CollectorConfig` that flags plus environment describe; ``ValueError`` if bad."""
    tokens = list(args.token)
    tokens += split_tokens(environ.get(TOKENS_ENV, ""))
    principals: list[TokenSpec] = []
    if args.token_file is not None:
        try:
            text = args.token_file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            why = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
            raise ValueError(f"--token-file {args.token_file}: {why}") from None
        for spec in parse_token_file(text, f"--token-file {args.token_file}"):
            if spec.name is None:
                tokens.append(spec.token)
            else:
                principals.append(spec)
    if not tokens and not principals and not args.no_auth:
        raise ValueError(
            f"no token configured: pass --token TOKEN, --token-file FILE or set {TOKENS_ENV}"
            " (or --no-auth, for local development only)"
        )
    disable = args.disable_clients
    source = "--disable-clients"
    if disable is None and environ.get(DISABLE_ENV):
        disable, source = environ[DISABLE_ENV], DISABLE_ENV
    disable_seconds = None
    if disable is not None:
        try:
            disable_seconds = math.ceil(parse_duration_s(disable))
        except ValueError as exc:
            raise ValueError(f"{source}={disable!r}: {exc}") from None
    overrides = {
        name: value
        for name in (
            "max_body_bytes",
            "max_decompressed_bytes",
            "max_event_bytes",
            "max_attachment_bytes",
            "rate_limit_rps",
            "rate_limit_burst",
        )
        if (value := getattr(args, name)) is not None
    }
    return CollectorConfig(
        data_dir=args.data_dir,
        tokens=list(dict.fromkeys(tokens)),  # de-duplicated, order kept
        principals=principals,
        allow_no_auth=args.no_auth,
        disable_seconds=disable_seconds,
        **overrides,
        **_database_settings(args, environ),
    )


def database_url_of(args: argparse.Namespace, environ: dict[str, str]) -> str | None:
    """``--database-url`` or its variable (None: SQLite in the data dir); ``ValueError``
    naming the flag or variable, with the URL redacted, if its form is wrong."""
    url, source = args.database_url, "--database-url"
    if url is None and environ.get(DATABASE_URL_ENV):
        url, source = environ[DATABASE_URL_ENV], DATABASE_URL_ENV
    if url is None:
        return None
    problem = database_url_problem(url)
    if problem is not None:
        raise ValueError(f"{source}: {problem}")
    return str(url)


def _number(raw: str, source: str, kind: type[int] | type[float], low: float) -> float:
    try:
        value = kind(raw)
        ok = value >= low and math.isfinite(value)
    except ValueError:
        ok = False
    if not ok:
        what = "a whole number" if kind is int else "a number"
        raise ValueError(f"{source}={raw!r}: expected {what} >= {low:g}")
    return value


def _database_settings(args: argparse.Namespace, environ: dict[str, str]) -> dict[str, Any]:
    settings: dict[str, Any] = {"database_url": database_url_of(args, environ)}
    days, source = args.retention_days, "--retention-days"
    if days is None and environ.get(RETENTION_ENV):
        days, source = environ[RETENTION_ENV], RETENTION_ENV
    if days is not None:
        settings["retention_days"] = int(_number(days, source, int, 0))
    if args.db_pool_size is not None:
        settings["db_pool_size"] = int(_number(args.db_pool_size, "--db-pool-size", int, 1))
    if args.db_statement_timeout is not None:
        timeout = _number(args.db_statement_timeout, "--db-statement-timeout", float, 0)
        if timeout <= 0:
            raise ValueError(f"--db-statement-timeout={args.db_statement_timeout!r}: expected > 0")
        settings["db_statement_timeout_s"] = timeout
    return settings
