"""HTTP requests: one ``http_request`` event per request, when its response is complete.

The event (``method, route, matched, status, duration_ms``, and ``path`` for an unmatched
request when configured) goes out when the last body message was sent, before background
tasks run (they are not part of ``duration_ms``); else when the app returns. ``status`` is
what was sent: an exception before the response started is answered further out, and the
response observer (:mod:`.observer`) completes the record with that answer's status; without
an observer the server answers 500.
"""

from __future__ import annotations

import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from telemetry_client.integrations._asgi.connection import Connection, enter, leave
from telemetry_client.integrations._asgi.errors import record_error
from telemetry_client.integrations._asgi.failures import failed
from telemetry_client.integrations._asgi.observer import completes, observe, outcome_var
from telemetry_client.integrations._asgi.routes import RouteNamer, unmatched_path

__all__ = ["HTTP_REQUEST", "record_http"]

#: Event type of one HTTP request: ``method, route, matched, status, duration_ms`` (and
#: ``path`` for an unmatched request with ``record_unmatched_paths=True``).
HTTP_REQUEST = "http_request"


async def record_http(
    app: ASGIApp,
    routes: RouteNamer,
    conn: Connection,
    scope: Scope,
    receive: Receive,
    send: Send,
    *,
    record: bool,
) -> None:
    """Run ``app`` for one request in ``conn``'s context, recording it (``record``) and its
    unhandled exception; the app's messages and exceptions pass through unchanged."""
    root_path = scope.get("root_path", "")
    outcome = outcome_var.get()
    if outcome is None and "app" in scope:  # no observer yet (no lifespan ran)
        observe(scope)  # for the next requests
    status: int | None = None
    trailers = False
    done = not record

    def finish(final_status: int | None) -> None:
        """Emit ``http_request`` once: when the response is complete, else at the end."""
        nonlocal done
        if done:
            return
        done = True
        try:
            elapsed_ns = time.perf_counter_ns() - start
            route, matched = routes.route(scope, root_path)
            data: dict[str, Any] = {
                "method": scope.get("method"),
                "route": route,
                "matched": matched,
                "status": final_status,
                "duration_ms": round(elapsed_ns / 1e6, 3),
            }
            if not matched and routes.record_unmatched_paths:
                data["path"] = unmatched_path(scope, root_path)
            conn.client.emit(HTTP_REQUEST, data, session_id=conn.session_id, user_id=conn.user_id)
        except Exception as exc:
            failed("middleware", exc)

    async def send_recording(message: Message) -> None:
        nonlocal status, trailers
        if message["type"] == "http.response.start":
            status = message.get("status")
            trailers = bool(message.get("trailers", False))
            await send(message)
            return
        await send(message)
        if done:
            return
        if message["type"] == "http.response.body":  # the common case, inline
            if not trailers and not message.get("more_body", False):
                finish(status)  # before background tasks, which run after the response
        elif completes(message, trailers):
            finish(status)

    tokens = enter(conn)
    deferred = False
    start = time.perf_counter_ns()
    try:
        await app(scope, receive, send_recording)
    except Exception as exc:
        if status is None and not done:
            if outcome is not None and outcome.finish is None:
                outcome.finish = finish  # answered further out: the observer knows how
                deferred = True
            else:
                status = 500  # what ServerErrorMiddleware or the server answers
        record_error(conn, scope, root_path, routes, exc)
        raise
    finally:
        if not deferred:
            finish(status)
        leave(tokens)
