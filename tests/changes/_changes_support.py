"""Helpers of the changes-panel tests (fixtures: ``_changes_fixtures``): the served panel's
handle, spooled events, the test app. Child environments and waiting: ``conftest``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from conftest import spooled_of_type
from fastapi import FastAPI

from telemetry_client import TelemetryClient
from telemetry_client.integrations.fastapi import TelemetryMiddleware, changes_router

PREFIX = "/api/changes"


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
    return spooled_of_type(client, type_)


def panel_app(client: TelemetryClient, root: Path) -> FastAPI:
    app = FastAPI()
    app.add_middleware(TelemetryMiddleware, client=client)
    app.include_router(changes_router(client, root=root), prefix=PREFIX)
    return app
