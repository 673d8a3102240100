"""Helpers of the changes-panel tests (fixtures: ``_changes_fixtures``): the served panel's
handle, spooled events, a child environment, a condition waiter, the test app."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import orjson
from fastapi import FastAPI

from telemetry_client import TelemetryClient
from telemetry_client.integrations.fastapi import TelemetryMiddleware, changes_router

PREFIX = "/api/changes"
T = TypeVar("T")


def child_env(spool_dir: Path, **variables: str) -> dict[str, str]:
    """Environment for a child: ours minus telemetry settings, plus these."""
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("TELEMETRY_")}
    env.pop("DO_NOT_TRACK", None)
    env["TELEMETRY_SPOOL_DIR"] = str(spool_dir)
    env.update(variables)
    return env


def wait_until(predicate: Callable[[], T], timeout: float, *, interval: float, what: str) -> T:
    """Poll ``predicate`` until truthy (returned); fail after ``timeout`` s (a hang bound)."""
    deadline = time.monotonic() + timeout
    while not (result := predicate()):
        if time.monotonic() >= deadline:
            raise AssertionError(f"condition not met within {timeout} s: {what}")
        time.sleep(interval)
    return result


@dataclass
class Panel:
    """A served panel: ``http`` talks to it (base URL = the prefix, with a slash)."""

    client: TelemetryClient
    root: Path
    base: str
    http: httpx.Client

    def recent(self, **params: Any) -> list[dict[str, Any]]:
        response = self.http.get("recent", params=params)
        assert response.status_code == 200, response.text
        changes: list[dict[str, Any]] = response.json()["changes"]
        return changes

    def decide(self, op_id: str, decision: str, **headers: str) -> httpx.Response:
        headers.setdefault("content-type", "application/json")
        return self.http.post(f"{op_id}/{decision}", headers=headers)


def events_of(client: TelemetryClient, type_: str) -> list[dict[str, Any]]:
    """The spooled events of ``type_`` (after putting what is in memory on disk), oldest first."""
    assert client.flush_sync(timeout=10).ok
    found = []
    for _name, raw in client.spool.iter_batches_newest_first():
        for line in raw.splitlines():
            event = orjson.loads(line)
            if event["type"] == type_:
                found.append(event)
    return sorted(found, key=lambda e: (e["ts"], e["seq"]))


def panel_app(client: TelemetryClient, root: Path) -> FastAPI:
    app = FastAPI()
    app.add_middleware(TelemetryMiddleware, client=client)
    app.include_router(changes_router(client, root=root), prefix=PREFIX)
    return app
