"""Helpers of the proxy tests: a proxy served in a thread, the spooled ``llm_call`` events."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

from _fake_llm import serve_asgi as _serve_asgi

from telemetry_client import TelemetryClient
from telemetry_client.proxy import ProxyApp, ProxyConfig


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


@contextlib.contextmanager
def serve_asgi(app: Any, name: str = "asgi") -> Iterator[int]:
    """Serve ``app`` (lifespan on, as ``telemetry-client proxy`` does) on a free 127.0.0.1
    port, yielded; the server itself is :func:`_fake_llm.serve_asgi`."""
    with _serve_asgi(app, name, lifespan="on") as port:
        yield port


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
