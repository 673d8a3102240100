"""Serving the collector: in a background thread (tests, demo) or as the CLI process.

Both paths bind the listening socket themselves before uvicorn starts, so ``port=0`` has
a real port to report, and both learn that the server is up from uvicorn's own startup
(an overridden ``startup``), never from a sleep. The CLI prints exactly one line to
stdout when it is listening, ``telemetry-collector listening on http://HOST:PORT``, and
logs everything else to stderr; SIGINT/SIGTERM stop it gracefully with exit status 0.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import math
import os
import signal
import socket
import sys
import threading
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

import uvicorn
from fastapi import FastAPI

from telemetry_client._internal.units import parse_duration_s, parse_size
from telemetry_client._version import __version__
from telemetry_client.collector._config import CollectorConfig, split_tokens
from telemetry_client.collector.app import CollectorState, create_app
from telemetry_client.collector.store.files import StorageError

__all__ = ["RunningCollector", "main", "running_collector"]

_log = logging.getLogger("telemetry_client.collector")

TOKENS_ENV = "TELEMETRY_COLLECTOR_TOKENS"
DISABLE_ENV = "TELEMETRY_COLLECTOR_DISABLE_SECONDS"
EXIT_OK, EXIT_FAILURE, EXIT_CONFIG = 0, 1, 2
_START_TIMEOUT_S = 30.0
_STOP_TIMEOUT_S = 30.0


def _url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (``port`` 0: the kernel picks a free one)."""
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(2048)
    except BaseException:
        sock.close()
        raise
    return sock


class _Server(uvicorn.Server):
    """uvicorn with a startup callback and our own signal handling.

    uvicorn re-raises a captured SIGTERM after a graceful stop, which would end the CLI
    with status -15; here a signal only asks for the graceful stop.
    """

    def __init__(self, config: uvicorn.Config, on_started: Callable[[], None]) -> None:
        super().__init__(config)
        self._on_started = on_started

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.started:
            self._on_started()

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {
            sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGINT, signal.SIGTERM)
        }
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _on_signal(self, sig: int, frame: FrameType | None) -> None:
        if self.should_exit:  # a second signal: stop waiting for open connections
            self.force_exit = True
        self.should_exit = True


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
) -> Iterator[RunningCollector]:
    """Serve a collector for ``config`` on ``host:port`` in a background thread.

    Returns once the server accepts connections (``port=0`` picks a free port; see the
    handle's ``port``/``url``), and stops it gracefully on exit, releasing the data dir.
    Raises ``RuntimeError`` if the server does not come up.
    """
    sock = _bind(host, port)
    try:
        app = create_app(config)
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

    server = _Server(
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
        state.storage.close()  # in case the lifespan's shutdown never ran


# -- CLI --------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="telemetry-collector",
        description="Reference collector for telemetry-client (events, attachments, queries).",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    p.add_argument("--port", type=int, default=8787, help="port (0: a free one; default: 8787)")
    p.add_argument(
        "--data-dir",
        required=True,
        type=Path,
        metavar="DIR",
        help="where events and attachments go",
    )
    p.add_argument(
        "--token",
        action="append",
        default=[],
        help=f"accepted bearer token (repeatable; also {TOKENS_ENV}, comma-separated)",
    )
    p.add_argument(
        "--token-file", type=Path, metavar="FILE", help="file with one accepted token per line"
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
    if args.token_file is not None:
        try:
            text = args.token_file.read_text(encoding="utf-8")
        except OSError as exc:
            raise ValueError(f"--token-file {args.token_file}: {exc.strerror}") from None
        tokens += split_tokens(text, separator=None)
    if not tokens and not args.no_auth:
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
        allow_no_auth=args.no_auth,
        disable_seconds=disable_seconds,
        **overrides,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """``telemetry-collector``: serve until SIGINT/SIGTERM; returns the exit status.

    0 after a clean stop, 1 when the collector cannot start (port taken, data dir in use),
    2 for a configuration error (message on stderr; tokens are never printed).
    """
    args = _parser().parse_args(argv)
    try:
        config = config_from_args(args, dict(os.environ))
    except (ValueError, TypeError) as exc:
        print(f"telemetry-collector: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    logging.basicConfig(
        stream=sys.stderr,
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if config.allow_no_auth and not config.tokens:
        _log.warning("--no-auth: anyone who can reach %s can read and write", args.host)
    try:
        sock = _bind(args.host, args.port)
    except OSError as exc:
        print(
            f"telemetry-collector: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr
        )
        return EXIT_FAILURE
    try:
        app = create_app(config)
    except (OSError, StorageError) as exc:
        sock.close()
        print(f"telemetry-collector: cannot open {config.data_dir}: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    host, port = args.host, sock.getsockname()[1]

    def ready() -> None:
        print(f"telemetry-collector listening on {_url(host, port)}", flush=True)

    server = _Server(_uvicorn_config(app, host, port, access_log=not args.no_access_log), ready)
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
        app.state.collector.storage.close()
    return EXIT_OK if server.started else EXIT_FAILURE
