"""Pure-ASGI request and WebSocket telemetry, and the per-connection session context.

:class:`TelemetryMiddleware` wraps HTTP and WebSocket scopes (``lifespan`` and anything
else pass straight through). Per connection it:

1. reads the session and user ids (headers, cookie; for WebSockets also the query string)
   and sets them in the ``contextvars`` of :mod:`telemetry_client.context`, so every event
   emitted while the app handles the connection, however deep, carries them;
2. emits ``session_start`` for a session id this process has not seen yet (a bounded LRU
   per client), and for every WebSocket connection;
3. after the app returned (routing has then filled in ``scope["route"]``), emits one
   ``http_request`` or ``websocket_session`` event with the route *template*;
4. turns an unhandled exception into an ``error`` event and re-raises it unchanged.

Nothing the middleware does for telemetry may change the app's behaviour: each step is
guarded, failures are counted (:func:`telemetry_failures`) and logged at most once per
minute, and the app's own messages and exceptions pass through untouched.

Why not ``BaseHTTPMiddleware``: it runs the app in a separate task (contextvars set by the
endpoint are lost), buffers streaming responses and does not see WebSockets.
"""

from __future__ import annotations

import collections
import contextlib
import contextvars
import functools
import platform
import threading
import time
import uuid
import weakref
from collections.abc import Collection, Iterable
from typing import Any
from urllib.parse import parse_qsl

from starlette.requests import cookie_parser
from starlette.routing import Mount
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .. import _env_info
from .._log import RateLimitedLogger
from ..client import TelemetryClient
from ..context import _session_id, _user_id
from ..events import Error, SessionStart
from ..settings import TelemetrySettings

__all__ = [
    "HTTP_REQUEST",
    "WEBSOCKET_SESSION",
    "TelemetryMiddleware",
    "bind_session",
    "current_client",
    "telemetry_failures",
]

#: Event type of one HTTP request: ``method, route, matched, status, duration_ms``.
HTTP_REQUEST = "http_request"
#: Event type of one WebSocket connection: ``route, matched, duration_ms, accepted,
#: close_code, closed_by`` (``client``, ``server`` or ``error``: an unhandled exception),
#: ``messages_in, messages_out`` (and ``status`` for an HTTP denial response).
WEBSOCKET_SESSION = "websocket_session"

#: Longer ids from headers, cookies or query strings are ignored (they come from clients).
MAX_ID_CHARS = 200
#: Session ids remembered per client to emit ``session_start`` once per session.
MAX_TRACKED_SESSIONS = 10_000

_log = RateLimitedLogger(60.0)
_failures_lock = threading.Lock()
_failures = [0]


def telemetry_failures() -> int:
    """How many telemetry steps the integration skipped because they failed (this process)."""
    return _failures[0]


def _failed(where: str, exc: BaseException) -> None:
    with _failures_lock:
        _failures[0] += 1
    _log.warning(
        f"integration-{where}",
        "telemetry: %s failed and was skipped (%s); the app is unaffected",
        where,
        type(exc).__name__,
    )


# -- which client ------------------------------------------------------------------------


class _Connection:
    """What the middleware knows about the connection being handled (one per request)."""

    __slots__ = ("client", "session_id", "transport", "user_id")

    def __init__(
        self, client: TelemetryClient, session_id: str | None, user_id: str | None, transport: str
    ) -> None:
        self.client = client
        self.session_id = session_id
        self.user_id = user_id
        self.transport = transport


_connection: contextvars.ContextVar[_Connection | None] = contextvars.ContextVar(
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


def _newest_active_client() -> TelemetryClient | None:
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
    conn = _connection.get()
    if conn is not None:
        return conn.client
    client = _newest_active_client()
    if client is not None:
        return client
    _log.warning(
        "integration-no-client",
        "telemetry: current_client() found no running telemetry_lifespan; events are dropped",
    )
    return _noop_client()


# -- session_start ----------------------------------------------------------------------


class _SeenSessions:
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


_seen: weakref.WeakKeyDictionary[TelemetryClient, _SeenSessions] = weakref.WeakKeyDictionary()
_seen_lock = threading.Lock()


def _seen_for(client: TelemetryClient) -> _SeenSessions:
    seen = _seen.get(client)
    if seen is None:
        with _seen_lock:
            seen = _seen.setdefault(client, _SeenSessions(MAX_TRACKED_SESSIONS))
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


def _emit_session_start(
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
            _session_id.set(session_id)
        if user_id is not None:
            _user_id.set(user_id)
        conn = _connection.get()
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
        if client.enabled and _seen_for(client).add(session_id):
            _emit_session_start(client, session_id, user_id or _user_id.get(), transport)
    except Exception as exc:
        _failed("bind_session", exc)


# -- the middleware -------------------------------------------------------------------------


def _header_name(name: str | None) -> bytes | None:
    return name.lower().encode("latin-1") if name else None


def _clean_id(value: str | None) -> str | None:
    if value is None:
        return None
    value = value.strip()
    return value if 0 < len(value) <= MAX_ID_CHARS else None


def _route_template(scope: Scope, root_path: str) -> tuple[str, bool]:
    """The matched route's path template (mount prefixes included), else the raw path."""
    route = scope.get("route")
    fmt = getattr(route, "path_format", None) if route is not None else None
    if not isinstance(fmt, str):
        return str(scope.get("path", "")), False
    # A Mount extends root_path by its own prefix before the app below it routes.
    now_root = scope.get("root_path", "")
    prefix = now_root[len(root_path) :] if now_root.startswith(root_path) else ""
    if isinstance(route, Mount):
        return prefix + "/{path}", True
    return prefix + fmt, True


class TelemetryMiddleware:
    """Pure-ASGI middleware: session context, ``session_start``, request events, errors.

    Add it with ``app.add_middleware(TelemetryMiddleware)`` (then the client comes from
    ``app.state.telemetry``, set by ``telemetry_lifespan``), or pass ``client=``. Without
    an enabled client it passes everything through.

    Ids are read, in this order, from: for WebSockets the query parameters
    ``session_query_param``/``user_query_param`` (browsers cannot set WebSocket headers);
    the headers ``session_header``/``user_header``; the cookies ``session_cookie``/
    ``user_cookie``. ``None`` switches a source off. A WebSocket without a session id gets
    a random one (``websocket_session_ids=False``: the client's default session instead).
    ``record_requests=False`` keeps the context, ``session_start`` and ``error`` events but
    emits no ``http_request``/``websocket_session``. Paths in ``exclude_paths`` (exact
    match, e.g. a health check) are not touched at all.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        client: TelemetryClient | None = None,
        session_header: str | None = "X-Session-ID",
        user_header: str | None = "X-User-ID",
        session_cookie: str | None = "session_id",
        user_cookie: str | None = None,
        session_query_param: str | None = "session_id",
        user_query_param: str | None = "user_id",
        websocket_session_ids: bool = True,
        record_requests: bool = True,
        exclude_paths: Collection[str] = (),
    ) -> None:
        self.app = app
        self._client = client
        self._session_header = _header_name(session_header)
        self._user_header = _header_name(user_header)
        self._session_cookie = session_cookie
        self._user_cookie = user_cookie
        self._wants_cookie = bool(session_cookie or user_cookie)
        self._session_param = session_query_param
        self._user_param = user_query_param
        self._ws_ids = websocket_session_ids
        self._record = record_requests
        self._exclude = frozenset(exclude_paths)
        self._seen: tuple[TelemetryClient, _SeenSessions] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "websocket":
            await self._websocket(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    # -- per connection -------------------------------------------------------------------

    def _client_for(self, scope: Scope) -> TelemetryClient | None:
        if self._client is not None:
            return self._client
        state = getattr(scope.get("app"), "state", None)
        client = getattr(state, "telemetry", None)
        if isinstance(client, TelemetryClient):
            return client
        return _newest_active_client()

    def _begin(self, scope: Scope, transport: str) -> _Connection | None:
        """The connection's context, with ``session_start`` emitted; None: pass through."""
        try:
            if self._exclude and scope.get("path") in self._exclude:
                return None
            client = self._client_for(scope)
            if client is None or not client.enabled:
                return None
            websocket = transport == "websocket"
            session_id, user_id = self._ids(scope, websocket)
            if session_id is None and websocket and self._ws_ids:
                session_id = uuid.uuid4().hex  # a WebSocket connection is a session
            conn = _Connection(client, session_id, user_id, transport)
        except Exception as exc:
            _failed("middleware", exc)
            return None
        if session_id is not None:
            try:
                seen = self._seen
                if seen is None or seen[0] is not client:  # one weak-dict lookup per client
                    seen = self._seen = (client, _seen_for(client))
                new = seen[1].add(session_id)
                if new or websocket:  # once per new session, and once per WebSocket
                    _emit_session_start(client, session_id, user_id or _user_id.get(), transport)
            except Exception as exc:
                _failed("middleware", exc)
        return conn

    def _ids(self, scope: Scope, websocket: bool) -> tuple[str | None, str | None]:
        session_id = user_id = None
        if websocket and (self._session_param or self._user_param):
            query = scope.get("query_string", b"")
            if query:
                params = dict(parse_qsl(query.decode("latin-1")))
                if self._session_param:
                    session_id = _clean_id(params.get(self._session_param))
                if self._user_param:
                    user_id = _clean_id(params.get(self._user_param))
        header_session = header_user = None
        cookies: list[bytes] = []
        headers: Iterable[tuple[bytes, bytes]] = scope.get("headers", ())
        for name, value in headers:
            if name == self._session_header:
                header_session = value
            elif name == self._user_header:
                header_user = value
            elif name == b"cookie":
                cookies.append(value)
        if session_id is None and header_session is not None:
            session_id = _clean_id(header_session.decode("latin-1"))
        if user_id is None and header_user is not None:
            user_id = _clean_id(header_user.decode("latin-1"))
        if cookies and self._wants_cookie and (session_id is None or user_id is None):
            jar = cookie_parser(b"; ".join(cookies).decode("latin-1"))
            if session_id is None and self._session_cookie:
                session_id = _clean_id(jar.get(self._session_cookie))
            if user_id is None and self._user_cookie:
                user_id = _clean_id(jar.get(self._user_cookie))
        return session_id, user_id

    def _enter(self, conn: _Connection) -> tuple[contextvars.Token[Any], ...]:
        # Always set all three (even to the current value) so that whatever bind_session
        # sets during the connection is undone by the reset at its end.
        return (
            _connection.set(conn),
            _session_id.set(conn.session_id if conn.session_id is not None else _session_id.get()),
            _user_id.set(conn.user_id if conn.user_id is not None else _user_id.get()),
        )

    @staticmethod
    def _exit(tokens: tuple[contextvars.Token[Any], ...]) -> None:
        conn_token, session_token, user_token = tokens
        _user_id.reset(user_token)
        _session_id.reset(session_token)
        _connection.reset(conn_token)

    # -- HTTP ---------------------------------------------------------------------------

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        conn = self._begin(scope, "http")
        if conn is None:
            await self.app(scope, receive, send)
            return
        root_path = scope.get("root_path", "")
        status: int | None = None

        async def send_recording_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message.get("status")
            await send(message)

        tokens = self._enter(conn)
        start = time.perf_counter_ns()
        try:
            await self.app(scope, receive, send_recording_status)
        except Exception as exc:
            if status is None:
                status = 500  # what the server answers for an exception before a response
            self._record_error(conn, scope, root_path, exc)
            raise
        finally:
            try:
                if self._record:
                    elapsed_ns = time.perf_counter_ns() - start
                    route, matched = _route_template(scope, root_path)
                    conn.client.emit(
                        HTTP_REQUEST,
                        {
                            "method": scope.get("method"),
                            "route": route,
                            "matched": matched,
                            "status": status,
                            "duration_ms": round(elapsed_ns / 1e6, 3),
                        },
                        session_id=conn.session_id,
                        user_id=conn.user_id,
                    )
            except Exception as exc:
                _failed("middleware", exc)
            self._exit(tokens)

    # -- WebSocket --------------------------------------------------------------------------

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        conn = self._begin(scope, "websocket")
        if conn is None:
            await self.app(scope, receive, send)
            return
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

        tokens = self._enter(conn)
        start = time.perf_counter_ns()
        try:
            await self.app(scope, receive_counting, send_counting)
        except Exception as exc:
            if close_code is None:
                closed_by = "error"  # the server closes it; the code it uses varies (1006/1011)
            self._record_error(conn, scope, root_path, exc)
            raise
        finally:
            try:
                if self._record:
                    elapsed_ns = time.perf_counter_ns() - start
                    route, matched = _route_template(scope, root_path)
                    data: dict[str, Any] = {
                        "route": route,
                        "matched": matched,
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
                _failed("middleware", exc)
            self._exit(tokens)

    # -- errors -------------------------------------------------------------------------------

    @staticmethod
    def _record_error(conn: _Connection, scope: Scope, root_path: str, exc: Exception) -> None:
        """An ``error`` event with the stack trace (redacted by the client's writer)."""
        try:
            route, _ = _route_template(scope, root_path)
            context: dict[str, Any] = {"transport": conn.transport, "route": route}
            if conn.transport == "http":
                context["method"] = scope.get("method")
            conn.client.emit(
                Error.from_exception(exc, context=context),
                session_id=conn.session_id,
                user_id=conn.user_id,
            )
        except Exception as failure:
            _failed("middleware", failure)
