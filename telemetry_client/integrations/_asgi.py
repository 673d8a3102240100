"""Pure-ASGI request and WebSocket telemetry, and the per-connection session context.

:class:`TelemetryMiddleware` wraps HTTP and WebSocket scopes (``lifespan`` and anything
else pass straight through). Per connection it:

1. reads the session and user ids (headers, cookie; for WebSockets also the query string)
   and sets them in the ``contextvars`` of :mod:`telemetry_client.context`, so every event
   emitted while the app handles the connection, however deep, carries them;
2. emits ``session_start`` for a session id this process has not seen yet (a bounded LRU
   per client), and for every WebSocket connection;
3. emits one ``http_request`` when the response is complete (background tasks that run
   after it are not part of its ``duration_ms``), or one ``websocket_session`` when the
   connection ends, with the route *template* (see below);
4. turns an unhandled exception into an ``error`` event and re-raises it unchanged. A
   normal WebSocket close (``WebSocketDisconnect`` 1000/1001) is not an error; an
   exception group is reported as its first leaf exception; the middleware's own frames
   are left out of the stack trace.

Routes: ``route`` is the template of what matched, mount and ``include_router`` prefixes
included (``/api/users/{user_id}``, ``/static/{path}``), for FastAPI and Starlette routes,
mounts and hosts alike, looked up in an index of the app's routes (built once, rebuilt when
a matched route is missing from it). A request nothing matched gets ``UNMATCHED_ROUTE``
and ``matched: false``; with ``record_unmatched_paths=True`` its path is added as ``path``
with every segment that holds a digit or an ``@``, or is longer than 24 characters,
replaced by ``{id}`` (raw paths carry ids and explode cardinality).

Status: what was sent. An exception that leaves the middleware before a response started
is answered further out (Starlette's ``ServerErrorMiddleware`` calls the app's
``exception_handler(Exception)``); to see that answer, the middleware puts a small observer
(:class:`_ResponseObserver`) around the app's built middleware stack, at lifespan startup
or, without a lifespan, at the first request (which is then recorded as 500).

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
import re
import threading
import time
import traceback
import uuid
import weakref
from collections.abc import Callable, Collection, Iterable, Sequence
from typing import Any
from urllib.parse import parse_qsl

from starlette.applications import Starlette
from starlette.requests import cookie_parser
from starlette.routing import Host, Mount, Router, compile_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from starlette.websockets import WebSocketDisconnect

from telemetry_client._internal import env_info as _env_info
from telemetry_client._internal.log import RateLimitedLogger
from telemetry_client.client import TelemetryClient
from telemetry_client.context import session_id_var, user_id_var
from telemetry_client.events import Error, SessionStart
from telemetry_client.settings import TelemetrySettings

__all__ = [
    "HTTP_REQUEST",
    "NORMAL_CLOSE_CODES",
    "UNMATCHED_ROUTE",
    "WEBSOCKET_SESSION",
    "TelemetryMiddleware",
    "bind_session",
    "current_client",
    "telemetry_failures",
]

#: Event type of one HTTP request: ``method, route, matched, status, duration_ms`` (and
#: ``path`` for an unmatched request with ``record_unmatched_paths=True``).
HTTP_REQUEST = "http_request"
#: Event type of one WebSocket connection: ``route, matched, duration_ms, accepted,
#: close_code, closed_by`` (``client``, ``server`` or ``error``: an unhandled exception),
#: ``messages_in, messages_out`` (and ``status`` for an HTTP denial response).
WEBSOCKET_SESSION = "websocket_session"

#: Longer ids from headers, cookies or query strings are ignored (they come from clients).
MAX_ID_CHARS = 200
#: Session ids remembered per client to emit ``session_start`` once per session.
MAX_TRACKED_SESSIONS = 10_000
#: ``route`` of a request or WebSocket that no route matched (404, slash redirects).
UNMATCHED_ROUTE = "<unmatched>"
#: ``WebSocketDisconnect`` codes that end a connection normally: not an ``error``.
NORMAL_CLOSE_CODES = frozenset({1000, 1001})
#: Unmatched paths recorded with ``record_unmatched_paths=True`` are cut to this length.
MAX_PATH_CHARS = 200

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
            session_id_var.set(session_id)
        if user_id is not None:
            user_id_var.set(user_id)
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
            _emit_session_start(client, session_id, user_id or user_id_var.get(), transport)
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


# -- route templates ---------------------------------------------------------------------

_iter_route_contexts: Callable[[Sequence[Any]], Iterable[Any]] | None
try:  # newer FastAPI keeps included routers unflattened; this flattens them (public)
    from fastapi.routing import iter_route_contexts as _iter_route_contexts
except ImportError:  # older FastAPI (routes already flat) or a Starlette-only app
    _iter_route_contexts = None

#: Rebuild the route index at most this often when a matched route is missing from it.
_INDEX_REBUILD_S = 5.0
_INDEX_MAX_TEMPLATES = 10_000
_INDEX_MAX_DEPTH = 16
# A path segment that may hold an id: a digit or an @ in it, or long.
_ID_SEGMENT = re.compile(r"[^/]*[0-9@][^/]*|[^/]{25,}")


class _Template:
    """One full route template: ``format`` (``/api/users/{user_id}``) and its regex."""

    __slots__ = ("format", "mount", "regex", "router_mount")

    def __init__(self, raw: str, *, mount: bool = False, router_mount: bool = False) -> None:
        self.regex, self.format, _ = compile_path(raw)
        self.mount = mount  # a Mount's own template, ``prefix/{path}``
        self.router_mount = router_mount  # ... of a mounted app that routes itself


def _route_entries(routes: Sequence[Any]) -> list[tuple[Any, Any, Any]]:
    """``(route as routing sets it in the scope, its full path or None, the route to read)``.

    FastAPI's ``include_router`` keeps the included router's routes as they are and
    applies the prefix when matching; ``iter_route_contexts`` gives each with its full path.
    """
    if _iter_route_contexts is not None:
        with contextlib.suppress(Exception):
            return [(c.original_route, c.path, c) for c in _iter_route_contexts(routes)]
    return [(route, getattr(route, "path", None), route) for route in routes]


class _RouteIndex:
    """The full templates of one router's routes, by ``id()`` of route and endpoint.

    After routing, the scope names what matched: ``scope["route"]`` (FastAPI's
    ``APIRoute``, any route of a Starlette ``Router``; a mount's inner router overwrites
    its mount) and ``scope["endpoint"]`` (a Starlette ``Route``'s endpoint, a ``Mount``'s
    app). Both map to the templates they are reachable under (mount and include prefixes
    composed); when several, the one whose regex matches the path wins.
    """

    def __init__(self, router: Router) -> None:
        self._router = router
        self._by_id: dict[int, list[_Template]] = {}
        self._keep: list[object] = []  # the keyed objects, so their ids stay theirs
        self._built = -_INDEX_REBUILD_S
        self._lock = threading.Lock()
        self._build()

    def _build(self) -> None:
        with self._lock:
            if time.monotonic() - self._built < _INDEX_REBUILD_S:
                return
            by_id: dict[int, list[_Template]] = {}
            keep: list[object] = []
            self._add(self._router.routes, "", 0, by_id, keep)
            self._by_id, self._keep = by_id, keep
            self._built = time.monotonic()

    def _add(
        self,
        routes: Sequence[Any],
        prefix: str,
        depth: int,
        by_id: dict[int, list[_Template]],
        keep: list[object],
    ) -> None:
        if depth > _INDEX_MAX_DEPTH:
            return
        for original, path, route in _route_entries(routes):
            if len(keep) >= _INDEX_MAX_TEMPLATES:
                return
            try:
                if isinstance(original, Host):
                    self._add(getattr(route, "routes", ()), prefix, depth + 1, by_id, keep)
                    continue
                if not isinstance(path, str):
                    continue
                if isinstance(original, Mount):
                    inner = getattr(route, "routes", None) or ()
                    template = _Template(
                        prefix + path + "/{path:path}", mount=True, router_mount=bool(inner)
                    )
                    keys = (original, getattr(original, "app", None), getattr(route, "app", None))
                    self._key(template, keys, by_id, keep)
                    self._add(inner, prefix + path, depth + 1, by_id, keep)
                else:
                    endpoint = getattr(route, "endpoint", None)
                    self._key(_Template(prefix + path), (original, endpoint), by_id, keep)
            except Exception as exc:  # a route this walk cannot read: the fallback names it
                _failed("route-index", exc)

    @staticmethod
    def _key(
        template: _Template,
        keys: Iterable[object],
        by_id: dict[int, list[_Template]],
        keep: list[object],
    ) -> None:
        for key in dict.fromkeys(id(k) for k in keys if k is not None):
            by_id.setdefault(key, []).append(template)
        keep.extend(k for k in keys if k is not None)

    def lookup(self, scope: Scope, root_path: str) -> tuple[str, bool] | None:
        """``(template, matched)``; None: something matched that the index does not know."""
        route = scope.get("route")
        endpoint = scope.get("endpoint")
        if route is None and endpoint is None:
            return UNMATCHED_ROUTE, False
        by_id = self._by_id
        found = by_id.get(id(route)) if route is not None else None
        if (found is None or found[0].mount) and endpoint is not None:
            # A mount in scope["route"] may be stale: the mounted app's router may have
            # matched a route it does not record there (FastAPI for Starlette routes).
            via_endpoint = by_id.get(id(endpoint))
            if via_endpoint is not None:
                found = via_endpoint if found is None else via_endpoint + found
        if found is None:
            return None
        template = found[0]
        if len(found) > 1:  # reachable under several prefixes: the one the path matches
            path = _route_path(scope, root_path)
            for candidate in sorted(found, key=lambda t: t.mount):
                if candidate.regex.match(path):
                    template = candidate
                    break
        if template.router_mount:  # the mounted app's own router matched nothing
            return UNMATCHED_ROUTE, False
        return template.format, True

    def rebuild_if_stale(self) -> bool:
        """Rebuild when the last build is old enough (routes added later); True: rebuilt."""
        if time.monotonic() - self._built < _INDEX_REBUILD_S:
            return False
        self._build()
        return True


def _route_path(scope: Scope, root_path: str) -> str:
    """The path below ``root_path``, as Starlette's routers match it."""
    path = str(scope.get("path", ""))
    if root_path and path.startswith(root_path):
        if path == root_path:
            return ""
        if path[len(root_path)] == "/":
            return path[len(root_path) :]
    return path


def _find_router(app: Any) -> Router | None:
    """The router below ``app``, following ``.app`` through the middleware stack."""
    for _ in range(32):
        if isinstance(app, Router):
            return app
        router = getattr(app, "router", None)
        if isinstance(router, Router):
            return router
        app = getattr(app, "app", None)
        if app is None:
            return None
    return None


def _redacted_path(path: str) -> str:
    """``path`` with segments that may hold ids (a digit, an @, long) as ``{id}``."""
    return _ID_SEGMENT.sub("{id}", path[:MAX_PATH_CHARS])


# -- what the app really sent ------------------------------------------------------------


class _Outcome:
    """One request seen by a :class:`_ResponseObserver`; ``finish`` is a deferred record."""

    __slots__ = ("finish", "status", "trailers")

    def __init__(self) -> None:
        self.finish: Callable[[int | None], None] | None = None
        self.status: int | None = None
        self.trailers = False


_outcome: contextvars.ContextVar[_Outcome | None] = contextvars.ContextVar(
    "telemetry_response_outcome", default=None
)


_BODY_MESSAGES = frozenset({"http.response.body", "http.response.zerocopysend"})


def _completes(message: Message, trailers: bool) -> bool:
    """True when ``message`` (not ``http.response.start``) completes the response."""
    kind = message["type"]
    if kind in _BODY_MESSAGES:
        return not trailers and not message.get("more_body", False)
    if kind == "http.response.trailers":
        return not message.get("more_trailers", False)
    return bool(kind == "http.response.pathsend")


class _ResponseObserver:
    """The outermost layer of an instrumented Starlette app's middleware stack.

    ``app.add_middleware`` puts :class:`TelemetryMiddleware` inside Starlette's
    ``ServerErrorMiddleware``, which answers an exception (with the app's
    ``exception_handler(Exception)``, e.g. a 418) after the exception has left the
    telemetry middleware. When that happens the middleware hands its ``http_request``
    record to this observer, which completes it with the status actually sent. Otherwise
    it only forwards messages. Installed around ``app.middleware_stack`` (once per app)
    by the middleware; it keeps ``.app`` so code walking the stack still can.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        outcome = _Outcome()

        async def send_observed(message: Message) -> None:
            if outcome.finish is None:
                await send(message)
                return
            if message["type"] == "http.response.start":
                outcome.status = message.get("status")
                outcome.trailers = bool(message.get("trailers", False))
                await send(message)
                return
            await send(message)
            finish = outcome.finish
            if finish is not None and _completes(message, outcome.trailers):
                outcome.finish = None
                finish(outcome.status)

        token = _outcome.set(outcome)
        try:
            await self.app(scope, receive, send_observed)
        finally:
            _outcome.reset(token)
            finish = outcome.finish
            if finish is not None:  # no complete response went out: the server answers 500
                outcome.finish = None
                finish(outcome.status if outcome.status is not None else 500)


def _observe(scope: Scope) -> None:
    """Put a :class:`_ResponseObserver` around the built middleware stack of the app."""
    app = scope.get("app")
    if not isinstance(app, Starlette):
        return
    stack = app.middleware_stack
    if stack is None or isinstance(stack, _ResponseObserver):
        return
    try:
        app.middleware_stack = _ResponseObserver(stack)
    except Exception as exc:
        _failed("observer", exc)


# -- errors ------------------------------------------------------------------------------

_OWN_FILE = (lambda: None).__code__.co_filename


def _group_members(exc: BaseException) -> tuple[BaseException, ...] | None:
    """The members of an exception group (builtin or the ``exceptiongroup`` backport)."""
    members = getattr(exc, "exceptions", None)
    if (
        isinstance(members, tuple)
        and members
        and all(isinstance(m, BaseException) for m in members)
    ):
        return members
    return None


def _first_leaf(exc: BaseException) -> tuple[BaseException, int]:
    """The first non-group exception inside ``exc`` and how many leaves it holds."""
    members = _group_members(exc)
    if members is None:
        return exc, 1
    first: BaseException | None = None
    count = 0
    todo: list[tuple[BaseException, int]] = [(m, 1) for m in reversed(members)]
    while todo:
        current, depth = todo.pop()
        inner = _group_members(current) if depth < 64 else None
        if inner is None:
            count += 1
            if first is None:
                first = current
        else:
            todo.extend((m, depth + 1) for m in reversed(inner))
    return (first if first is not None else exc), count


def _normal_close(exc: BaseException) -> bool:
    """A WebSocket the client closed normally (1000/1001), possibly alone in a group."""
    leaf, count = _first_leaf(exc)
    return count == 1 and isinstance(leaf, WebSocketDisconnect) and leaf.code in NORMAL_CLOSE_CODES


def _drop_own_frames(formatted: traceback.TracebackException) -> None:
    """Leave this module's frames (the middleware's) out of every traceback in the chain."""
    seen: set[int] = set()
    todo = [formatted]
    while todo:
        current = todo.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        if any(frame.filename == _OWN_FILE for frame in current.stack):
            current.stack = traceback.StackSummary.from_list(
                [frame for frame in current.stack if frame.filename != _OWN_FILE]
            )
        todo.extend(t for t in (current.__cause__, current.__context__) if t is not None)
        todo.extend(getattr(current, "exceptions", None) or ())


def _error_event(exc: BaseException, context: dict[str, Any]) -> Error:
    """An ``error`` for ``exc``: an exception group as its first leaf, with the count."""
    leaf, count = _first_leaf(exc)
    if count > 1:
        context["exception_group"] = {"type": type(exc).__qualname__, "exceptions": count}
    formatted = traceback.TracebackException(type(leaf), leaf, leaf.__traceback__, compact=True)
    _drop_own_frames(formatted)
    return Error(
        error_type=type(leaf).__qualname__,
        message=str(leaf),
        stack_trace="".join(formatted.format()),
        context=context,
    )


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
    match, e.g. a health check) are not touched at all. ``record_unmatched_paths=True``
    adds the redacted path of unmatched requests (see the module docstring).
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
        record_unmatched_paths: bool = False,
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
        self._unmatched_paths = record_unmatched_paths
        self._seen: tuple[TelemetryClient, _SeenSessions] | None = None
        self._index: _RouteIndex | None = None
        self._index_searched = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "websocket":
            await self._websocket(scope, receive, send)
        elif kind == "lifespan":
            await self.app(scope, receive, self._watch_startup(scope, send))
        else:
            await self.app(scope, receive, send)

    def _watch_startup(self, scope: Scope, send: Send) -> Send:
        """``send`` for the lifespan: installs the response observer once startup is done
        (the stack is built then, and the lifespan has set the client), before the server
        takes requests."""

        async def send_watching(message: Message) -> None:
            if message.get("type") == "lifespan.startup.complete":
                try:
                    client = self._client_for(scope)
                    if client is not None and client.enabled:
                        _observe(scope)
                except Exception as exc:
                    _failed("middleware", exc)
            await send(message)

        return send_watching

    # -- route templates ----------------------------------------------------------------

    def _route(self, scope: Scope, root_path: str) -> tuple[str, bool]:
        """``(template, matched)`` of what routing chose for this connection (never raises
        for the caller: the callers guard it)."""
        if not self._index_searched:
            self._index_searched = True
            router = _find_router(self.app) or getattr(scope.get("app"), "router", None)
            if isinstance(router, Router):
                self._index = _RouteIndex(router)
        index = self._index
        if index is not None:
            found = index.lookup(scope, root_path)
            if found is None and index.rebuild_if_stale():
                found = index.lookup(scope, root_path)
            if found is not None:
                return found
        elif scope.get("route") is None and scope.get("endpoint") is None:
            return UNMATCHED_ROUTE, False
        # Matched, but not through the index: the route's own template (no prefix).
        fmt = getattr(scope.get("route"), "path_format", None)
        return (fmt if isinstance(fmt, str) else UNMATCHED_ROUTE), True

    def _route_data(self, scope: Scope, root_path: str) -> dict[str, Any]:
        route, matched = self._route(scope, root_path)
        data: dict[str, Any] = {"route": route, "matched": matched}
        if not matched and self._unmatched_paths:
            data["path"] = _redacted_path(_route_path(scope, root_path))
        return data

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
                    _emit_session_start(client, session_id, user_id or user_id_var.get(), transport)
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
            session_id_var.set(
                conn.session_id if conn.session_id is not None else session_id_var.get()
            ),
            user_id_var.set(conn.user_id if conn.user_id is not None else user_id_var.get()),
        )

    @staticmethod
    def _exit(tokens: tuple[contextvars.Token[Any], ...]) -> None:
        conn_token, session_token, user_token = tokens
        user_id_var.reset(user_token)
        session_id_var.reset(session_token)
        _connection.reset(conn_token)

    # -- HTTP ---------------------------------------------------------------------------

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        conn = self._begin(scope, "http")
        if conn is None:
            await self.app(scope, receive, send)
        else:  # a separate frame: the closures' cells cost nothing when passing through
            await self._http_recorded(conn, scope, receive, send)

    async def _http_recorded(
        self, conn: _Connection, scope: Scope, receive: Receive, send: Send
    ) -> None:
        root_path = scope.get("root_path", "")
        outcome = _outcome.get()
        if outcome is None and "app" in scope:  # no observer yet (no lifespan ran)
            _observe(scope)  # for the next requests
        status: int | None = None
        trailers = False
        done = not self._record

        def finish(final_status: int | None) -> None:
            """Emit ``http_request`` once: when the response is complete, else at the end."""
            nonlocal done
            if done:
                return
            done = True
            try:
                elapsed_ns = time.perf_counter_ns() - start
                route, matched = self._route(scope, root_path)
                data: dict[str, Any] = {
                    "method": scope.get("method"),
                    "route": route,
                    "matched": matched,
                    "status": final_status,
                    "duration_ms": round(elapsed_ns / 1e6, 3),
                }
                if not matched and self._unmatched_paths:
                    data["path"] = _redacted_path(_route_path(scope, root_path))
                conn.client.emit(
                    HTTP_REQUEST, data, session_id=conn.session_id, user_id=conn.user_id
                )
            except Exception as exc:
                _failed("middleware", exc)

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
            elif _completes(message, trailers):
                finish(status)

        tokens = self._enter(conn)
        deferred = False
        start = time.perf_counter_ns()
        try:
            await self.app(scope, receive, send_recording)
        except Exception as exc:
            if status is None and not done:
                if outcome is not None and outcome.finish is None:
                    outcome.finish = finish  # answered further out: the observer knows how
                    deferred = True
                else:
                    status = 500  # what ServerErrorMiddleware or the server answers
            self._record_error(conn, scope, root_path, exc)
            raise
        finally:
            if not deferred:
                finish(status)
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
            if _normal_close(exc):  # the client left normally while the app waited: no error
                if close_code is None:
                    close_code, closed_by = getattr(_first_leaf(exc)[0], "code", 1000), "client"
            else:
                if close_code is None:
                    closed_by = "error"  # the server closes it; the code varies (1006/1011)
                self._record_error(conn, scope, root_path, exc)
            raise
        finally:
            try:
                if self._record:
                    elapsed_ns = time.perf_counter_ns() - start
                    data = self._route_data(scope, root_path)
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
                _failed("middleware", exc)
            self._exit(tokens)

    # -- errors -------------------------------------------------------------------------------

    def _record_error(
        self, conn: _Connection, scope: Scope, root_path: str, exc: Exception
    ) -> None:
        """An ``error`` event with the stack trace (redacted by the client's writer)."""
        try:
            route, _ = self._route(scope, root_path)
            context: dict[str, Any] = {"transport": conn.transport, "route": route}
            if conn.transport == "http":
                context["method"] = scope.get("method")
            conn.client.emit(
                _error_event(exc, context), session_id=conn.session_id, user_id=conn.user_id
            )
        except Exception as failure:
            _failed("middleware", failure)
