"""WebSocket connections: one ``websocket_session`` event per connection, when it ends.

The event has the route, whether the app accepted, the close code and who closed
(``client``, ``server``, or ``error``: an unhandled exception), the messages each way and,
for an HTTP denial response, its ``status``. A client leaving normally (1000/1001) while
the app waits is not an error.
"""

from __future__ import annotations

import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from telemetry_client.integrations._asgi.connection import Connection, enter, leave
from telemetry_client.integrations._asgi.errors import first_leaf, normal_close, record_error
from telemetry_client.integrations._asgi.failures import failed
from telemetry_client.integrations._asgi.routes import RouteNamer

__all__ = ["WEBSOCKET_SESSION", "record_websocket"]

#: Event type of one WebSocket connection: ``route, matched, duration_ms, accepted,
#: close_code, closed_by`` (``client``, ``server`` or ``error``: an unhandled exception),
#: ``messages_in, messages_out`` (and ``status`` for an HTTP denial response).
WEBSOCKET_SESSION = "websocket_session"


async def record_websocket(
    app: ASGIApp,
    routes: RouteNamer,
    conn: Connection,
    scope: Scope,
    receive: Receive,
    send: Send,
    *,
    record: bool,
) -> None:
    """Run ``app`` for one WebSocket in ``conn``'s context, recording it (``record``) and its
    unhandled exception; the app's messages and exceptions pass through unchanged."""
    root_path = scope.get("root_path", "")
    accepted = False
    close_code: int | None = None
    closed_by: str | None = None
    status: int | None = None
    messages_in = messages_out = 0

    async def receive_counting() -> Message:
        nonlocal messages_in, close_code, closed_by
        message = await receive()
        kind = message.get("type")
        if kind == "websocket.receive":
            messages_in += 1
        elif kind == "websocket.disconnect" and close_code is None:
            close_code, closed_by = message.get("code", 1005), "client"
        return message

    async def send_counting(message: Message) -> None:
        nonlocal messages_out, accepted, close_code, closed_by, status
        kind = message.get("type")
        if kind == "websocket.send":
            messages_out += 1
        elif kind == "websocket.accept":
            accepted = True
        elif kind == "websocket.close" and close_code is None:
            close_code, closed_by = message.get("code", 1000), "server"
        elif kind == "websocket.http.response.start":
            status = message.get("status")
        await send(message)

    tokens = enter(conn)
    start = time.perf_counter_ns()
    try:
        await app(scope, receive_counting, send_counting)
    except Exception as exc:
        if normal_close(exc):  # the client left normally while the app waited: no error
            if close_code is None:
                close_code, closed_by = getattr(first_leaf(exc)[0], "code", 1000), "client"
        else:
            if close_code is None:
                closed_by = "error"  # the server closes it; the code varies (1006/1011)
            record_error(conn, scope, root_path, routes, exc)
        raise
    finally:
        try:
            if record:
                elapsed_ns = time.perf_counter_ns() - start
                data = routes.data(scope, root_path)
                data |= {
                    "duration_ms": round(elapsed_ns / 1e6, 3),
                    "accepted": accepted,
                    "close_code": close_code,
                    "closed_by": closed_by,
                    "messages_in": messages_in,
                    "messages_out": messages_out,
                }
                if status is not None:
                    data["status"] = status
                conn.client.emit(
                    WEBSOCKET_SESSION, data, session_id=conn.session_id, user_id=conn.user_id
                )
        except Exception as exc:
            failed("middleware", exc)
        leave(tokens)
