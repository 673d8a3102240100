"""Shared test helpers: clean environments (in-process and for children), a condition waiter,
the spooled events of one type."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

from telemetry_client import TelemetryClient, TelemetrySettings

T = TypeVar("T")

# PostgreSQL fixtures (postgres_server, postgres_url): one server per session, on first use.
pytest_plugins = ["_postgres"]


def _is_telemetry_var(name: str) -> bool:
    return name.upper().startswith("TELEMETRY_") or name.upper() == "DO_NOT_TRACK"


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Remove every TELEMETRY_* variable and DO_NOT_TRACK so only explicit settings apply."""
    for name in list(os.environ):
        if _is_telemetry_var(name):
            monkeypatch.delenv(name)


def child_env(spool_dir: Path, **variables: str) -> dict[str, str]:
    """Environment for a child process: ours minus any telemetry settings, plus these."""
    env = {k: v for k, v in os.environ.items() if not _is_telemetry_var(k)}
    env["TELEMETRY_SPOOL_DIR"] = str(spool_dir)
    env.update(variables)
    return env


@pytest.fixture
def settings_factory(tmp_path: Path, clean_env: None) -> Callable[..., TelemetrySettings]:
    """``make(**overrides)`` -> settings with ``spool_dir=tmp_path/"spool"`` and a clean env."""

    def make(**overrides: Any) -> TelemetrySettings:
        overrides.setdefault("spool_dir", tmp_path / "spool")
        return TelemetrySettings(**overrides)

    return make


def wait_until(
    predicate: Callable[[], T], timeout: float = 10.0, *, interval: float = 0.005, what: str = ""
) -> T:
    """Poll ``predicate`` until it returns something truthy (returned); fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise AssertionError(f"condition not met within {timeout} s: {what or predicate!r}")
        time.sleep(interval)


# -- reference collector ----------------------------------------------------------------
# (imports are local: most test files never start a collector, and it needs the extra)

COLLECTOR_TOKEN = "collector-test-token-" + os.urandom(8).hex()


def collector_event(n: int = 0, /, **overrides: Any) -> dict[str, Any]:
    """A valid event envelope (docs/protocol.md, "Envelope"); ``overrides`` replace fields."""
    event: dict[str, Any] = {
        "id": f"0190f000-0000-7000-8000-{n:012x}",
        "type": "chat_turn",
        "ts": f"2026-11-21T10:00:{n % 60:02d}.000000Z",
        "session_id": "session-1",
        "user_id": "alice",
        "machine_id": "0123456789abcdef",
        "app": "tests",
        "app_version": "1.0",
        "seq": n,
        "data": {"n": n},
    }
    event.update(overrides)
    return event


_SSL_CONTEXTS: list[Any] = []


def _plain_http_ssl_context() -> Any:
    """One shared SSL context: httpx builds a new one per client (~20 ms) even for http://."""
    if not _SSL_CONTEXTS:
        import ssl

        _SSL_CONTEXTS.append(ssl.create_default_context())
    return _SSL_CONTEXTS[0]


class CollectorHandle:
    """A reference collector on 127.0.0.1 serving this test (see ``collector_factory``)."""

    def __init__(self, running: Any, token: str, stop: Callable[[], None]) -> None:
        self.running = running
        self.token = token
        self._stop = stop
        self.url: str = running.url
        self.events_url: str = running.events_url
        self.attachments_url: str = running.attachments_url
        self.health_url: str = running.health_url
        self.metrics_url: str = running.metrics_url
        self.config: Any = running.config
        self.data_dir: Path = running.config.data_dir

    @property
    def state(self) -> Any:
        """The live ``CollectorState`` (``state.disable_seconds = 60`` flips the kill switch)."""
        return self.running.state

    @property
    def auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def client(self, **kwargs: Any) -> Any:
        """A new ``httpx.Client`` on ``url`` sending the token (close it: ``with``)."""
        import httpx

        kwargs.setdefault("timeout", 10)
        kwargs.setdefault("verify", _plain_http_ssl_context())
        return httpx.Client(base_url=self.url, headers=self.auth_headers, **kwargs)

    def query(self, **filters: Any) -> dict[str, Any]:
        """GET /api/v1/events with these filters, every page: ``{"events": [...], "total": N}``."""
        events: list[dict[str, Any]] = []
        with self.client() as http:
            while True:
                params = {**filters, "limit": 10000, "offset": len(events)}
                response = http.get("/api/v1/events", params=params)
                response.raise_for_status()
                page = response.json()
                events.extend(page["events"])
                if not page["events"] or len(events) >= page["total"]:
                    return {"events": events, "total": page["total"]}

    def stop(self) -> None:
        """Stop the server now (idempotent); the data dir is released."""
        self._stop()


@pytest.fixture
def collector_factory(tmp_path: Path) -> Any:
    """``make(**config)`` -> a running :class:`CollectorHandle`; all stopped at teardown.

    Defaults: data dir ``tmp_path/"collector"`` (so a second ``make()`` after ``stop()``
    restarts on the same data), ``tokens=[COLLECTOR_TOKEN]``; any other keyword is a
    ``CollectorConfig`` field (``rate_limit_rps=1``, ``disable_seconds=60``, ...).
    """
    import contextlib

    from telemetry_client.collector import CollectorConfig, running_collector

    stack = contextlib.ExitStack()

    def make(**config: Any) -> CollectorHandle:
        config.setdefault("data_dir", tmp_path / "collector")
        config.setdefault("tokens", [COLLECTOR_TOKEN])
        own = contextlib.ExitStack()
        running = own.enter_context(running_collector(CollectorConfig(**config)))
        stack.callback(own.close)
        tokens = config["tokens"]
        return CollectorHandle(running, tokens[0] if tokens else "", own.close)

    with stack:
        yield make


@pytest.fixture
def collector(collector_factory: Any) -> CollectorHandle:
    """A running reference collector with the default config and ``COLLECTOR_TOKEN``."""
    handle: CollectorHandle = collector_factory()
    return handle


def spooled_of_type(client: TelemetryClient, event_type: str) -> list[dict[str, Any]]:
    """Every spooled envelope of ``event_type``, in emit order (after a flush to disk)."""
    assert client.flush_sync(timeout=10).ok
    found = []
    for _name, raw in client.spool.iter_batches_newest_first():
        for line in raw.splitlines():
            event = json.loads(line)
            if event["type"] == event_type:
                found.append(event)
    return sorted(found, key=lambda e: e["seq"])
