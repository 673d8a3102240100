"""App of test_integration_fastapi's multi-worker test: ``uvicorn fastapi_workers_app:app``.

Settings come from ``TELEMETRY_*`` variables (one spool dir shared by every worker).
``GET /work/{marker}`` emits a ``tool_call`` carrying the marker and the worker's pid from
a helper that gets neither the client nor the session id, and answers the pid;
``GET /health`` is excluded from telemetry.
"""

from __future__ import annotations

import os

from fastapi import FastAPI

from telemetry_client import events
from telemetry_client.integrations.fastapi import (
    TelemetryMiddleware,
    current_client,
    telemetry_lifespan,
)

app = FastAPI(lifespan=telemetry_lifespan())
app.add_middleware(TelemetryMiddleware, exclude_paths={"/health"})


def note(marker: str) -> None:
    current_client().emit(
        events.ToolCall(tool_name="note", args={"marker": marker}, attributes={"pid": os.getpid()})
    )


@app.get("/health")
async def health() -> dict[str, int]:
    return {"pid": os.getpid()}


@app.get("/work/{marker}")
async def work(marker: str) -> dict[str, int]:
    note(marker)
    return {"pid": os.getpid()}
