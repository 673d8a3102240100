"""FastAPI integration: lifespan, ``Depends`` accessor, session context, request middleware.

Needs the extra: ``pip install 'telemetry-client[fastapi]'``.

.. code-block:: python

    from fastapi import FastAPI, WebSocket
    from telemetry_client import events
    from telemetry_client.integrations.fastapi import (
        Telemetry, TelemetryMiddleware, bind_session, current_client, telemetry_lifespan,
    )

    app = FastAPI(lifespan=telemetry_lifespan())        # TelemetrySettings() from TELEMETRY_*
    app.add_middleware(TelemetryMiddleware)             # X-Session-ID / X-User-ID, cookie, ws query

    def run_tool(name: str, args: dict) -> str:         # deep inside tool code: no client, no ids
        result = ...
        current_client().emit(events.ToolCall(tool_name=name, args=args, result=result))
        return result

    @app.post("/chat/{session_id}")
    async def chat(session_id: str, prompt: str, telemetry: Telemetry):
        bind_session(session_id=session_id)             # ids known only from the path
        telemetry.emit(events.ChatTurn(user_prompt=prompt, assistant_final=run_tool("grep", {})))

The changes panel (review, accept, revert the agent's file edits; docs/changes.md):
``app.include_router(changes_router(client, root=workspace), prefix="/api/changes")``.

Or ``instrument_app(app)`` for an app that already exists: it composes the telemetry
lifespan with the app's own and adds the middleware.

Lifecycle: the telemetry lifespan starts the client *before* the app's own lifespan
(so the app's startup can emit) and flushes and stops it *after* the app's shutdown (so
what the shutdown emitted is delivered), bounded by ``shutdown_timeout``
(``TELEMETRY_SHUTDOWN_TIMEOUT``); what is not delivered in time stays in the spool.
With ``uvicorn --workers N`` every worker runs the lifespan and shares the spool.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from typing import Annotated, Any

import anyio.to_thread
from fastapi import Depends, FastAPI
from starlette.requests import HTTPConnection

from telemetry_client._internal.log import RateLimitedLogger
from telemetry_client.changes.router import changes_router
from telemetry_client.client import TelemetryClient
from telemetry_client.integrations._asgi.connection import (
    current_client,
    register_client,
    unregister_client,
)
from telemetry_client.integrations._asgi.errors import NORMAL_CLOSE_CODES
from telemetry_client.integrations._asgi.failures import telemetry_failures
from telemetry_client.integrations._asgi.http import HTTP_REQUEST
from telemetry_client.integrations._asgi.middleware import TelemetryMiddleware
from telemetry_client.integrations._asgi.routes import UNMATCHED_ROUTE
from telemetry_client.integrations._asgi.sessions import bind_session, warm_host_facts
from telemetry_client.integrations._asgi.websocket import WEBSOCKET_SESSION
from telemetry_client.settings import TelemetrySettings

__all__ = [
    "HTTP_REQUEST",
    "NORMAL_CLOSE_CODES",
    "UNMATCHED_ROUTE",
    "WEBSOCKET_SESSION",
    "Telemetry",
    "TelemetryMiddleware",
    "bind_session",
    "changes_router",
    "current_client",
    "get_telemetry",
    "instrument_app",
    "telemetry_failures",
    "telemetry_lifespan",
]

#: ``app.state`` attribute holding the client while the lifespan runs.
STATE_ATTR = "telemetry"

_log = RateLimitedLogger(60.0)

#: What ``FastAPI(lifespan=...)`` takes: ``app -> async context manager`` (state or None).
AppLifespan = Callable[[Any], AbstractAsyncContextManager[Any]]


def telemetry_lifespan(
    settings: TelemetrySettings | None = None,
    *,
    client: TelemetryClient | None = None,
    app_lifespan: AppLifespan | None = None,
    shutdown_timeout: float | None = None,
    close_client: bool | None = None,
) -> AppLifespan:
    """A lifespan for ``FastAPI(lifespan=...)`` that runs a :class:`TelemetryClient`.

    On startup: builds ``TelemetryClient(settings)`` (or uses ``client``), starts it, sets
    ``app.state.telemetry`` and makes it :func:`current_client`, then enters
    ``app_lifespan`` (the app's own, whose state, if any, is passed through). On shutdown,
    in reverse: the app's lifespan exits first, then the client is flushed and stopped,
    bounded by ``shutdown_timeout`` (default ``TELEMETRY_SHUTDOWN_TIMEOUT``).

    ``close_client``: stop the client at shutdown (default: only when this lifespan built
    it; a client passed in is flushed and left open for its owner). A bad ``TELEMETRY_*``
    value fails startup with a ``ConfigError`` naming the variable.
    """
    if settings is not None and client is not None:
        raise ValueError("pass settings or client, not both")

    @contextlib.asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[Any]:
        own = client is None
        telemetry = TelemetryClient(settings) if client is None else client
        telemetry.start()
        app.state.telemetry = telemetry
        register_client(telemetry)
        try:
            try:  # disk reads (git SHA, machine id) for session_start, off the event loop
                await anyio.to_thread.run_sync(warm_host_facts, telemetry)
            except Exception as exc:
                _log.warning("lifespan-facts", "telemetry: host facts unavailable (%r)", exc)
            if app_lifespan is None:
                yield None
            else:
                async with app_lifespan(app) as state:
                    yield state
        finally:
            unregister_client(telemetry)
            close = own if close_client is None else close_client
            await _shutdown(telemetry, close, shutdown_timeout)

    return lifespan


async def _shutdown(client: TelemetryClient, close: bool, timeout: float | None) -> None:
    try:
        if close:
            result = await client.aclose(timeout)
        elif client.closed:
            return
        else:
            result = await client.flush(timeout)
    except Exception as exc:  # never turn a telemetry problem into a failed shutdown
        _log.warning("lifespan-shutdown", "telemetry: shutdown flush failed (%r)", exc)
        return
    if not result.ok:
        _log.warning(
            "lifespan-shutdown",
            "telemetry: %d events not delivered within the shutdown timeout; they stay spooled",
            result.pending_events,
        )


def instrument_app(
    app: FastAPI,
    settings: TelemetrySettings | None = None,
    *,
    client: TelemetryClient | None = None,
    shutdown_timeout: float | None = None,
    middleware: bool = True,
    **middleware_options: Any,
) -> FastAPI:
    """Add telemetry to an existing app: its lifespan wrapped, the middleware added.

    Call it before the app starts serving. ``middleware_options`` go to
    :class:`TelemetryMiddleware` (``session_header=...``, ``exclude_paths=...``, ...).
    """
    app.router.lifespan_context = telemetry_lifespan(
        settings,
        client=client,
        app_lifespan=app.router.lifespan_context,
        shutdown_timeout=shutdown_timeout,
    )
    if middleware:
        app.add_middleware(TelemetryMiddleware, **middleware_options)
    return app


def get_telemetry(connection: HTTPConnection) -> TelemetryClient:
    """FastAPI dependency (HTTP and WebSocket routes): the app's :class:`TelemetryClient`.

    ``app.state.telemetry`` when the lifespan set it, else :func:`current_client` (which
    never fails: a disabled client when telemetry is not running).
    """
    state = getattr(connection.scope.get("app"), "state", None)
    client = getattr(state, STATE_ATTR, None)
    if isinstance(client, TelemetryClient):
        return client
    return current_client()


#: ``telemetry: Telemetry`` in an endpoint's signature injects the client.
Telemetry = Annotated[TelemetryClient, Depends(get_telemetry)]
