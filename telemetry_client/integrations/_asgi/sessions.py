"""``session_start``: once per session id new to this process, and once per WebSocket.

A bounded LRU of session ids per client decides what is new. The host facts the event
reports (app version, machine id) read small files: ``warm_host_facts`` looks them up on a
worker thread at startup so requests only hit a cache. ``bind_session`` sets ids known
only inside an endpoint (a path parameter, the first WebSocket message).
"""

from __future__ import annotations

import collections
import functools
import platform
import threading
import weakref

from telemetry_client._internal import env_info as _env_info
from telemetry_client.client import TelemetryClient
from telemetry_client.context import session_id_var, user_id_var
from telemetry_client.events import SessionStart
from telemetry_client.integrations._asgi.connection import connection_var, current_client
from telemetry_client.integrations._asgi.failures import failed

__all__ = [
    "MAX_TRACKED_SESSIONS",
    "SeenSessions",
    "bind_session",
    "emit_session_start",
    "seen_for",
    "warm_host_facts",
]

#: Session ids remembered per client to emit ``session_start`` once per session.
MAX_TRACKED_SESSIONS = 10_000


class SeenSessions:
    """A bounded LRU of session ids (thread-safe: sync endpoints run on worker threads)."""

    def __init__(self, maxsize: int) -> None:
        self._ids: collections.OrderedDict[str, None] = collections.OrderedDict()
        self._max = maxsize
        self._lock = threading.Lock()

    def add(self, session_id: str) -> bool:
        """Remember ``session_id``; True when it was not remembered yet."""
        with self._lock:
            if session_id in self._ids:
                self._ids.move_to_end(session_id)
                return False
            self._ids[session_id] = None
            if len(self._ids) > self._max:
                self._ids.popitem(last=False)
            return True


_seen: weakref.WeakKeyDictionary[TelemetryClient, SeenSessions] = weakref.WeakKeyDictionary()
_seen_lock = threading.Lock()


def seen_for(client: TelemetryClient) -> SeenSessions:
    seen = _seen.get(client)
    if seen is None:
        with _seen_lock:
            seen = _seen.setdefault(client, SeenSessions(MAX_TRACKED_SESSIONS))
    return seen


_OS = platform.system()
_OS_VERSION = platform.release()
_PYTHON_VERSION = platform.python_version()


@functools.lru_cache(maxsize=16)
def _host_facts(app_version: str | None, machine_id: str | None) -> tuple[str | None, str]:
    """(app version, machine id): the settings, else the git SHA and the hashed machine id.

    Both lookups read small files; ``warm_host_facts`` runs them on a worker thread at
    startup so requests only hit this cache.
    """
    return (
        app_version or _env_info.detect_app_version(),
        machine_id or _env_info.machine_id(),
    )


def warm_host_facts(client: TelemetryClient) -> None:
    """Look up what ``session_start`` reports (disk reads: call it off the event loop)."""
    if client.enabled:
        _host_facts(client.settings.app_version, client.settings.machine_id)


def emit_session_start(
    client: TelemetryClient, session_id: str, user_id: str | None, transport: str | None
) -> None:
    settings = client.settings
    app_version, machine_id = _host_facts(settings.app_version, settings.machine_id)
    attributes = {"machine_id": machine_id}
    if transport is not None:
        attributes["transport"] = transport
    client.emit(
        SessionStart(
            app_version=app_version,
            os=_OS,
            os_version=_OS_VERSION,
            python_version=_PYTHON_VERSION,
            attributes=attributes,
        ),
        session_id=session_id,
        user_id=user_id,
    )


def bind_session(session_id: str | None = None, user_id: str | None = None) -> None:
    """Set the session and/or user id for the rest of the current request or WebSocket.

    For ids known only inside the endpoint (a path parameter, the first WebSocket
    message). Events emitted afterwards carry them, as do the middleware's own
    ``http_request``/``websocket_session`` events, and a session id new to this process
    gets its ``session_start``. The middleware restores the previous values when the
    connection ends. Outside a connection it handles, the ids stay set for the rest of
    the current context (task or thread): prefer ``session_context`` there. Never raises.
    """
    try:
        if session_id is not None:
            session_id_var.set(session_id)
        if user_id is not None:
            user_id_var.set(user_id)
        conn = connection_var.get()
        transport: str | None = None
        if conn is not None:
            if user_id is not None:
                conn.user_id = user_id
            if session_id is None or session_id == conn.session_id:
                return
            conn.session_id = session_id
            client, transport = conn.client, conn.transport
        elif session_id is None:
            return
        else:
            client = current_client()
        if client.enabled and seen_for(client).add(session_id):
            emit_session_start(client, session_id, user_id or user_id_var.get(), transport)
    except Exception as exc:
        failed("bind_session", exc)
