"""Fixtures of the changes-panel tests, loaded with ``pytest_plugins = ["_changes_fixtures"]``
(a ``conftest.py`` here would shadow ``tests/conftest.py`` for ``from conftest import``)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from _changes_support import PREFIX, Panel, panel_app
from _fake_llm import serve_app

from telemetry_client import TelemetryClient, TelemetrySettings


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    root = tmp_path / "workspace"
    root.mkdir()
    return root


@pytest.fixture
def make_client(
    settings_factory: Callable[..., TelemetrySettings],
) -> Iterator[Callable[..., TelemetryClient]]:
    made: list[TelemetryClient] = []

    def make(**overrides: Any) -> TelemetryClient:
        client = TelemetryClient(settings_factory(**overrides))
        made.append(client)
        return client

    yield make
    for c in made:
        c.close(timeout=5)


@pytest.fixture
def client(make_client: Callable[..., TelemetryClient]) -> TelemetryClient:
    return make_client()


@pytest.fixture
def serve_panel() -> Iterator[Callable[[TelemetryClient, Path], Panel]]:
    """``serve(client, root)`` -> a :class:`Panel` served until the test ends."""
    stack = contextlib.ExitStack()

    def serve(client: TelemetryClient, root: Path) -> Panel:
        server = stack.enter_context(serve_app(panel_app(client, root)))
        base = f"{server.origin}{PREFIX}/"
        http = stack.enter_context(httpx.Client(base_url=base, timeout=10, trust_env=False))
        return Panel(client, root, base, http)

    with stack:
        yield serve


@pytest.fixture
def panel(
    serve_panel: Callable[[TelemetryClient, Path], Panel], client: TelemetryClient, workspace: Path
) -> Panel:
    return serve_panel(client, workspace)
