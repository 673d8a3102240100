"""Fixtures of the proxy tests, a plugin (``pytest_plugins = ["_proxy_fixtures"]``; a
``conftest.py`` here would shadow the root one): the fake upstream, a spool-only client, proxies.

``proxy_factory(**config)`` serves a :class:`~telemetry_client.proxy.ProxyApp` with uvicorn
on a free 127.0.0.1 port in a thread (as ``telemetry-client proxy`` does, lifespan on), in
front of the module's fake upstream unless ``upstream=`` says otherwise.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from _upstream import Upstream, serve_upstream
from proxy_kit import RunningProxy, serve_proxy

from telemetry_client import TelemetryClient, TelemetrySettings
from telemetry_client.proxy import ProxyConfig


@pytest.fixture(scope="module")
def upstream() -> Iterator[Upstream]:
    with serve_upstream() as state:
        yield state


@pytest.fixture
def fake(upstream: Upstream) -> Iterator[Upstream]:
    """The module's upstream, its log and gates reset for this test."""
    upstream.reset()
    yield upstream
    upstream.gate.set()


@pytest.fixture
def telemetry(settings_factory: Callable[..., TelemetrySettings]) -> Iterator[TelemetryClient]:
    client = TelemetryClient(settings_factory(fsync="off"))
    yield client
    client.close()


@pytest.fixture
def proxy_factory(
    fake: Upstream, telemetry: TelemetryClient
) -> Iterator[Callable[..., RunningProxy]]:
    stack = contextlib.ExitStack()

    def make(**config: Any) -> RunningProxy:
        config.setdefault("upstream", fake.base_url)
        config.setdefault("provider", "openai")
        return stack.enter_context(serve_proxy(ProxyConfig(**config), telemetry))

    with stack:
        yield make


@pytest.fixture
def proxy(proxy_factory: Callable[..., RunningProxy]) -> RunningProxy:
    return proxy_factory()
