"""Which client the code running now emits to, and the connection being handled.

Inside a connection the middleware handles, the connection (its client and ids) is in a
contextvar, so ``current_client()`` and ``bind_session()`` reach it from any depth.
Outside one, the clients started by ``telemetry_lifespan`` are found in a process-wide
list (the lifespan runs in its own task: a contextvar set there would not reach
requests), else a disabled client: ``current_client()`` never fails.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
from typing import Any

from telemetry_client._internal.log import RateLimitedLogger
from telemetry_client.client import TelemetryClient
from telemetry_client.context import session_id_var, user_id_var
from telemetry_client.settings import TelemetrySettings

__all__ = [
    "Connection",
    "connection_var",
    "current_client",
    "enter",
    "leave",
    "newest_active_client",
    "register_client",
    "unregister_client",
]

_log = RateLimitedLogger(60.0)


class Connection:
    """What the middleware knows about the connection being handled (one per request)."""

    __slots__ = ("client", "session_id", "transport", "user_id")

    def __init__(
        self, client: TelemetryClient, session_id: str | None, user_id: str | None, transport: str
    ) -> None:
        self.client = client
        self.session_id = session_id
        self.user_id = user_id
        self.transport = transport


connection_var: contextvars.ContextVar[Connection | None] = contextvars.ContextVar(
    "telemetry_connection", default=None
)
# Clients started by telemetry_lifespan, newest last. The lifespan runs in its own task,
# so a contextvar set there would not reach requests: this is process-wide on purpose.
_active_clients: list[TelemetryClient] = []


def register_client(client: TelemetryClient) -> None:
    """Make ``client`` what :func:`current_client` returns outside a handled request."""
    _active_clients.append(client)


def unregister_client(client: TelemetryClient) -> None:
    with contextlib.suppress(ValueError):
        _active_clients.remove(client)


def newest_active_client() -> TelemetryClient | None:
    for client in reversed(_active_clients):
        if not client.closed:
            return client
    return None


@functools.cache
def _noop_client() -> TelemetryClient:
    # model_construct reads no environment: a bad TELEMETRY_* value cannot make this fail.
    return TelemetryClient(TelemetrySettings.model_construct(enabled=False))


def current_client() -> TelemetryClient:
    """The client for the code running now; never raises.

    Inside a request or WebSocket handled by :class:`TelemetryMiddleware`: that app's
    client. Otherwise the newest client started by ``telemetry_lifespan`` that is still
    open. Without either: a disabled client whose ``emit()`` does nothing (logged once a
    minute), so tool code can always call ``current_client().emit(...)``.
    """
    conn = connection_var.get()
    if conn is not None:
        return conn.client
    client = newest_active_client()
    if client is not None:
        return client
    _log.warning(
        "integration-no-client",
        "telemetry: current_client() found no running telemetry_lifespan; events are dropped",
    )
    return _noop_client()


def enter(conn: Connection) -> tuple[contextvars.Token[Any], ...]:
    """Make ``conn`` and its ids current; pass the result to :func:`leave` at its end."""
    # Always set all three (even to the current value) so that whatever bind_session
    # sets during the connection is undone by the reset at its end.
    return (
        connection_var.set(conn),
        session_id_var.set(
            conn.session_id if conn.session_id is not None else session_id_var.get()
        ),
        user_id_var.set(conn.user_id if conn.user_id is not None else user_id_var.get()),
    )


def leave(tokens: tuple[contextvars.Token[Any], ...]) -> None:
    """Restore what :func:`enter` replaced."""
    conn_token, session_token, user_token = tokens
    user_id_var.reset(user_token)
    session_id_var.reset(session_token)
    connection_var.reset(conn_token)
