"""Running the proxy: uvicorn on a socket, graceful stop, the telemetry client's flush.

:func:`serve` binds ``host:port`` itself (port 0 picks a free one: the startup line says
which), serves :class:`~telemetry_client.proxy.app.ProxyApp` with uvicorn (no access log:
URLs may carry keys in their query; no ``Server``/``Date`` headers of its own, the
upstream's are relayed) and returns 0 after SIGINT/SIGTERM:

1. the listening socket closes (new connections are refused), idle keep-alive
   connections close;
2. in-flight requests, streams included, go on for up to ``drain_timeout`` seconds, then
   are cancelled (recorded as such);
3. the upstream client closes, then the telemetry client is closed: what was recorded is
   on disk (and uploaded within ``TELEMETRY_SHUTDOWN_TIMEOUT`` when an endpoint is set).

uvicorn re-raises a caught signal after its shutdown, which would kill the process before
step 3; the server here handles the signals itself and does not.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import signal
import socket
import sys
import threading
from collections.abc import Callable, Iterator
from types import FrameType
from typing import TextIO

import uvicorn

from telemetry_client._internal.log import logger
from telemetry_client.client import TelemetryClient
from telemetry_client.proxy.app import ProxyApp
from telemetry_client.proxy.config import ProxyConfig
from telemetry_client.settings import TelemetrySettings

__all__ = ["bind", "serve", "startup_lines"]


class _Server(uvicorn.Server):
    """uvicorn's server, with signals that stop it without being re-raised afterwards."""

    def __init__(self, config: uvicorn.Config, on_started: Callable[[], None]) -> None:
        super().__init__(config)
        self._on_started = on_started

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.started:
            self._on_started()

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        stop_signals = (signal.SIGINT, signal.SIGTERM)
        previous = {sig: signal.signal(sig, self._stop) for sig in stop_signals}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _stop(self, sig: int, frame: FrameType | None) -> None:
        if self.should_exit and sig == signal.SIGINT:
            self.force_exit = True  # a second Ctrl-C: stop waiting for in-flight requests
        self.should_exit = True


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (IPv6 when ``host`` is an IPv6 address)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on sockets whose proto says TCP, and
    # without it every response written in two parts waits ~40 ms for a delayed ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.setblocking(False)
    return sock


def startup_lines(config: ProxyConfig, port: int, settings: TelemetrySettings) -> list[str]:
    """What the proxy prints when it is ready (and the warning for an open bind)."""
    host = f"[{config.host}]" if ":" in config.host else config.host
    lines = [
        f"telemetry-client proxy: listening on http://{host}:{port}/v1 -> {config.upstream}",
        "  recording llm_call events to "
        + (str(settings.resolved_spool_dir) if settings.active else "nowhere (telemetry off)"),
    ]
    if not config.loopback and not config.api_keys:
        lines.append(
            f"  WARNING: bound to {config.host} without --api-key: anyone who can reach this"
            " port can use the upstream with the keys it forwards"
        )
    return lines


def serve(
    config: ProxyConfig,
    settings: TelemetrySettings,
    *,
    out: TextIO | None = None,
    on_started: Callable[[int], None] | None = None,
) -> int:
    """Run the proxy until SIGINT/SIGTERM (see the module docstring); returns the exit code."""
    stream = out or sys.stdout
    sock = bind(config.host, config.port)
    port = sock.getsockname()[1]
    telemetry = TelemetryClient(settings)
    app = ProxyApp(config, telemetry)

    def started() -> None:
        for line in startup_lines(config, port, settings):
            stream.write(line + "\n")
        stream.flush()
        if not config.loopback and not config.api_keys:
            logger.warning("telemetry proxy: bound to %s without API keys", config.host)
        if on_started is not None:
            on_started(port)

    server = _Server(
        uvicorn.Config(
            app,
            lifespan="on",
            log_config=None,
            access_log=False,
            server_header=False,
            date_header=False,
            ws="none",
            timeout_graceful_shutdown=math.ceil(config.drain_timeout),
            timeout_keep_alive=30,
        ),
        started,
    )
    try:
        asyncio.run(server.serve(sockets=[sock]))
    finally:
        sock.close()
        telemetry.close()
    stream.write("telemetry-client proxy: stopped\n")
    stream.flush()
    return 0
