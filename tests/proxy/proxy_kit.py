"""Helpers of the proxy tests: a proxy served in a thread, the spooled ``llm_call`` events."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import uvicorn

from telemetry_client import TelemetryClient
from telemetry_client.proxy import ProxyApp, ProxyConfig
from telemetry_client.proxy.server import bind


@dataclass
class RunningProxy:
    app: ProxyApp
    port: int

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        return f"{self.origin}/v1"


class _Server(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, started: threading.Event) -> None:
        super().__init__(config)
        self._started = started

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.started:
            self._started.set()


@contextlib.contextmanager
def serve_asgi(app: Any, name: str = "asgi") -> Iterator[int]:
    """Serve ``app`` with uvicorn on a free 127.0.0.1 port (yielded) in a thread.

    The socket is the proxy's own ``bind()`` (TCP_NODELAY on accepted connections: a
    socket made with ``proto=0`` gets none, and each response then waits ~40 ms for a
    delayed ACK).
    """
    sock = bind("127.0.0.1", 0)
    started = threading.Event()
    server = _Server(
        uvicorn.Config(
            app,
            lifespan="on",
            log_config=None,
            access_log=False,
            server_header=False,
            date_header=False,
            ws="none",
            timeout_graceful_shutdown=5,
        ),
        started,
    )
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name=name, daemon=True)
    thread.start()
    try:
        assert started.wait(30), f"{name} did not start within 30 s"
        yield sock.getsockname()[1]
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()


@contextlib.contextmanager
def serve_proxy(config: ProxyConfig, telemetry: TelemetryClient | None) -> Iterator[RunningProxy]:
    """Serve a :class:`ProxyApp` (lifespan on, as ``telemetry-client proxy`` does)."""
    app = ProxyApp(config, telemetry)
    with serve_asgi(app, "proxy") as port:
        yield RunningProxy(app, port)


def llm_calls(client: TelemetryClient) -> list[dict[str, Any]]:
    """Every spooled ``llm_call`` payload, in emit order (after a flush to disk)."""
    assert client.flush_sync(timeout=10).ok
    found = []
    for _name, raw in client.spool.iter_batches_newest_first():
        for line in raw.splitlines():
            event = json.loads(line)
            if event["type"] == "llm_call":
                found.append(event)
    return [e["data"] for e in sorted(found, key=lambda e: e["seq"])]


T = TypeVar("T")


def wait_until(predicate: Callable[[], T], timeout: float = 10.0, what: str = "") -> T:
    """Poll ``predicate`` until it returns something truthy (returned); fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise AssertionError(f"condition not met within {timeout} s: {what or predicate!r}")
        time.sleep(0.005)
