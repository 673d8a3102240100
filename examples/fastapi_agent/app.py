"""A small LLM-agent backend instrumented with telemetry-client's FastAPI integration.

Run (see README.md next to this file)::

    uvicorn app:app --port 8000                      # spool-only unless TELEMETRY_ENDPOINT is set

What it shows:

* ``telemetry_lifespan`` composed with the app's own lifespan: the client starts first,
  is flushed and stopped last;
* ``TelemetryMiddleware``: ``http_request``/``websocket_session`` events with route
  templates, ``session_start`` per session, unhandled errors as ``error`` events;
* session ids from the ``X-Session-ID`` header (REST), the ``session_id`` query parameter
  (WebSocket) or the path (``bind_session``);
* tools that report through ``current_client()`` without receiving a client or an id;
* the changes panel at ``/api/changes/``: review, accept, reject or revert the file edits.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path

from fastapi import FastAPI, WebSocket, WebSocketDisconnect
from pydantic import BaseModel

from telemetry_client import TelemetryClient, events
from telemetry_client.integrations.fastapi import (
    Telemetry,
    TelemetryMiddleware,
    bind_session,
    changes_router,
    current_client,
    telemetry_lifespan,
)

WORKSPACE = Path("workspace")
MODEL = "demo-model"


# -- tools: deep in agent code, they get neither the client nor the session id ----------------


def search_docs(query: str) -> str:
    start = time.perf_counter()
    result = f"3 documents mention {query!r}"
    current_client().emit(
        events.ToolCall(
            tool_name="search_docs",
            args={"query": query},
            result=result,
            duration_ms=(time.perf_counter() - start) * 1000,
        )
    )
    return result


def append_note(name: str, line: str) -> None:
    """A file edit: ``write_file`` reads the old content, writes, and records the diff."""
    path = WORKSPACE / name
    before = path.read_text() if path.exists() else ""
    current_client().write_file(path, before + line + "\n")


def answer(prompt: str) -> str:
    """Stands in for the model call and its tool loop."""
    found = search_docs(prompt)
    append_note("notes.md", f"- asked: {prompt}")
    return f"{found}; noted."


# -- the app -------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def own_lifespan(app: FastAPI) -> AsyncIterator[None]:
    WORKSPACE.mkdir(exist_ok=True)  # the app's own startup; telemetry is already running
    yield


telemetry = TelemetryClient()  # TelemetrySettings() from TELEMETRY_*; one per worker process
app = FastAPI(
    lifespan=telemetry_lifespan(client=telemetry, app_lifespan=own_lifespan, close_client=True)
)
app.add_middleware(TelemetryMiddleware, exclude_paths={"/health"})
# The changes panel: the page at /api/changes/, JSON at /api/changes/recent.
app.include_router(changes_router(telemetry, root=WORKSPACE), prefix="/api/changes")


class Prompt(BaseModel):
    prompt: str


@app.get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}


@app.post("/chat")
async def chat(body: Prompt, telemetry: Telemetry) -> dict[str, str]:
    """Session from the X-Session-ID header (set by the middleware)."""
    start = time.perf_counter()
    reply = answer(body.prompt)
    telemetry.emit(
        events.ChatTurn(
            model=MODEL,
            user_prompt=body.prompt,
            assistant_final=reply,
            latency_ms=(time.perf_counter() - start) * 1000,
        )
    )
    return {"answer": reply}


@app.post("/sessions/{session_id}/chat")
async def chat_in_session(session_id: str, body: Prompt, telemetry: Telemetry) -> dict[str, str]:
    """Session from the path: bound explicitly."""
    bind_session(session_id=session_id)
    reply = answer(body.prompt)
    telemetry.emit(events.ChatTurn(model=MODEL, user_prompt=body.prompt, assistant_final=reply))
    return {"answer": reply}


@app.websocket("/ws")
async def chat_socket(ws: WebSocket, telemetry: Telemetry) -> None:
    """Session from ``?session_id=...`` (a random one per connection without it)."""
    await ws.accept()
    try:
        while True:
            prompt = await ws.receive_text()
            reply = answer(prompt)
            telemetry.emit(events.ChatTurn(model=MODEL, user_prompt=prompt, assistant_final=reply))
            await ws.send_text(reply)
    except WebSocketDisconnect:
        pass


@app.get("/fail")
async def fail() -> None:
    """An unhandled error: the caller gets a 500, the collector an ``error`` event."""
    raise RuntimeError("the agent tripped over a tool")
