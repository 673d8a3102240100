"""App of test_workers: the panel on ``$CHANGES_ROOT`` plus a route that edits a file.

Run as ``uvicorn _panel_app:app``; settings come from ``TELEMETRY_*`` (one shared spool).
"""

from __future__ import annotations

import os
from pathlib import Path

from fastapi import FastAPI

from telemetry_client import TelemetryClient
from telemetry_client.integrations.fastapi import (
    TelemetryMiddleware,
    changes_router,
    current_client,
    telemetry_lifespan,
)

ROOT = Path(os.environ["CHANGES_ROOT"])
CLIENT = TelemetryClient()

app = FastAPI(lifespan=telemetry_lifespan(client=CLIENT, close_client=True))
app.add_middleware(TelemetryMiddleware)
app.include_router(changes_router(CLIENT, root=ROOT), prefix="/api/changes")


@app.post("/write/{name}")
def write(name: str, text: str) -> dict[str, object]:
    op_id = current_client().write_file(ROOT / name, text)
    return {"op_id": op_id, "pid": os.getpid()}


@app.get("/health")
def health() -> dict[str, int]:
    return {"pid": os.getpid()}
