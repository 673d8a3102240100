"""Serving the collector: in a background thread (tests, demo) or as the CLI process.

Both paths bind the listening socket themselves before uvicorn starts, so ``port=0`` has
a real port to report, and both learn that the server is up from uvicorn's own startup
(an overridden ``startup``), never from a sleep. The CLI prints exactly one line to
stdout when it is listening, ``telemetry-collector listening on http://HOST:PORT``, and
logs everything else to stderr; SIGINT/SIGTERM stop it gracefully with exit status 0.

``telemetry-collector import DIR`` (``_import_cli``) copies a 0.1 data dir into the
database. Every message that could show a database URL shows it redacted.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import uvicorn
from fastapi import FastAPI

from telemetry_client._internal.serving import Server, bind
from telemetry_client.collector._cli import (
    DATABASE_URL_ENV,
    DISABLE_ENV,
    RETENTION_ENV,
    TOKENS_ENV,
    config_from_args,
)
from telemetry_client.collector._cli import parser as _parser
from telemetry_client.collector._config import CollectorConfig, scrub
from telemetry_client.collector._import_cli import run_import
from telemetry_client.collector.app import CollectorState, create_app
from telemetry_client.collector.store.base import StorageError, Store, StoreUnavailable

__all__ = [
    "DATABASE_URL_ENV",
    "DISABLE_ENV",
    "RETENTION_ENV",
    "TOKENS_ENV",
    "RunningCollector",
    "config_from_args",
    "main",
    "running_collector",
]

_log = logging.getLogger("telemetry_client.collector")

EXIT_OK, EXIT_FAILURE, EXIT_CONFIG = 0, 1, 2
_START_TIMEOUT_S = 30.0
_STOP_TIMEOUT_S = 30.0


def _url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _uvicorn_config(app: FastAPI, host: str, port: int, *, access_log: bool) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        log_config=None,  # never reconfigure the host process's logging
        access_log=access_log,
        lifespan="on",
        ws="none",
        timeout_graceful_shutdown=5,
        server_header=False,
    )


@dataclass(frozen=True, eq=False)
class RunningCollector:
    """A collector served by :func:`running_collector`: its address, config and live state."""

    host: str
    port: int
    config: CollectorConfig
    app: FastAPI

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:8787``."""
        return _url(self.host, self.port)

    @property
    def events_url(self) -> str:
        return f"{self.url}/api/v1/events"

    @property
    def attachments_url(self) -> str:
        return f"{self.url}/api/v1/attachments"

    @property
    def health_url(self) -> str:
        return f"{self.url}/api/v1/health"

    @property
    def metrics_url(self) -> str:
        return f"{self.url}/metrics"

    @property
    def state(self) -> CollectorState:
        """The app's live state (e.g. ``state.disable_seconds = 60`` turns the kill switch on)."""
        state: CollectorState = self.app.state.collector
        return state


@contextlib.contextmanager
def running_collector(
    config: CollectorConfig,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    access_log: bool = False,
    store: Store | None = None,
) -> Iterator[RunningCollector]:
    """Serve a collector for ``config`` on ``host:port`` in a background thread.

    Returns once the server accepts connections (``port=0`` picks a free port; see the
    handle's ``port``/``url``), and stops it gracefully on exit, closing the store it
    opened (a ``store`` passed in stays the caller's). Raises ``RuntimeError`` if the
    server does not come up.
    """
    sock = bind(host, port)
    try:
        app = create_app(config, store)
    except BaseException:
        sock.close()
        raise
    state: CollectorState = app.state.collector
    status = threading.Condition()
    phase = {"started": False, "stopped": False}

    def mark(name: str) -> None:
        with status:
            phase[name] = True
            status.notify_all()

    server = Server(
        _uvicorn_config(app, host, sock.getsockname()[1], access_log=access_log),
        on_started=lambda: mark("started"),
    )

    def serve() -> None:
        try:
            server.run(sockets=[sock])
        finally:
            mark("stopped")

    thread = threading.Thread(target=serve, name="telemetry-collector", daemon=True)
    try:
        thread.start()
        with status:
            status.wait_for(lambda: phase["started"] or phase["stopped"], _START_TIMEOUT_S)
            if not phase["started"]:
                raise RuntimeError("the collector did not start (see the log)")
        yield RunningCollector(host, sock.getsockname()[1], config, app)
    finally:
        server.should_exit = True
        thread.join(_STOP_TIMEOUT_S)
        sock.close()
        state.close_store()  # in case the lifespan's shutdown never ran


# -- CLI --------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """``telemetry-collector``: serve until SIGINT/SIGTERM; returns the exit status.

    0 after a clean stop, 1 when the collector cannot start (port taken, database
    unreachable or in use), 2 for a configuration error (message on stderr; tokens and
    database passwords are never printed). ``import DIR ...`` imports a 0.1 data dir.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["import"]:
        return run_import(argv[1:], dict(os.environ))
    args = _parser().parse_args(argv)
    url = args.database_url or os.environ.get(DATABASE_URL_ENV)
    try:
        config = config_from_args(args, dict(os.environ))
    except (ValueError, TypeError) as exc:
        print(scrub(f"telemetry-collector: {exc}", url), file=sys.stderr)
        return EXIT_CONFIG
    logging.basicConfig(
        stream=sys.stderr,
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if config.allow_no_auth and not config.tokens:
        _log.warning("--no-auth: anyone who can reach %s can read and write", args.host)
    try:
        sock = bind(args.host, args.port)
    except OSError as exc:
        print(
            f"telemetry-collector: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr
        )
        return EXIT_FAILURE
    try:
        app = create_app(config)
    except (OSError, StorageError, StoreUnavailable) as exc:
        sock.close()
        where = config.data_dir if url is None else "the database"
        print(scrub(f"telemetry-collector: cannot open {where}: {exc}", url), file=sys.stderr)
        return EXIT_FAILURE
    host, port = args.host, sock.getsockname()[1]

    def ready() -> None:
        print(f"telemetry-collector listening on {_url(host, port)}", flush=True)

    server = Server(_uvicorn_config(app, host, port, access_log=not args.no_access_log), ready)
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
        app.state.collector.close_store()
    return EXIT_OK if server.started else EXIT_FAILURE
