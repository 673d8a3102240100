"""Helpers of the proxy tests: a proxy served in a thread, the spooled ``llm_call`` events."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from _fake_llm import serve_asgi as _serve_asgi
from conftest import spooled_of_type, wait_until

from telemetry_client import TelemetryClient
from telemetry_client.proxy import ProxyApp, ProxyConfig

__all__ = ["RunningProxy", "llm_calls", "serve_asgi", "serve_proxy", "wait_until"]


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
    return [e["data"] for e in spooled_of_type(client, "llm_call")]
