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
import math
import sys
from collections.abc import Callable
from typing import TextIO

import uvicorn

from telemetry_client._internal.log import logger
from telemetry_client._internal.serving import Server, bind
from telemetry_client.client import TelemetryClient
from telemetry_client.proxy.app import ProxyApp
from telemetry_client.proxy.config import ProxyConfig
from telemetry_client.settings import TelemetrySettings

__all__ = ["serve", "startup_lines"]


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

    server = Server(
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
