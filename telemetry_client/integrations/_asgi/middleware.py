"""The pure-ASGI middleware: per connection, the session context and what it records.

:class:`TelemetryMiddleware` wraps HTTP and WebSocket scopes (``lifespan`` and anything
else pass straight through). Per connection it:

1. reads the session and user ids (headers, cookie; for WebSockets also the query string)
   and sets them in the ``contextvars`` of :mod:`telemetry_client.context`, so every event
   emitted while the app handles the connection, however deep, carries them;
2. emits ``session_start`` for a session id this process has not seen yet, and for every
   WebSocket connection (:mod:`.sessions`);
3. emits one ``http_request`` when the response is complete (:mod:`.http`), or one
   ``websocket_session`` when the connection ends (:mod:`.websocket`), with the route
   *template* (:mod:`.routes`);
4. turns an unhandled exception into an ``error`` event and re-raises it unchanged
   (:mod:`.errors`).

Nothing it does for telemetry may change the app's behaviour: each step is guarded,
failures are counted (:func:`~.failures.telemetry_failures`) and logged at most once per
minute, and the app's own messages and exceptions pass through untouched. Why a pure-ASGI
middleware and how the status of an answer sent further out is seen: docs/features.md.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection, Iterable
from urllib.parse import parse_qsl

from starlette.requests import cookie_parser
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from telemetry_client.client import TelemetryClient
from telemetry_client.context import user_id_var
from telemetry_client.integrations._asgi.connection import Connection, newest_active_client
from telemetry_client.integrations._asgi.failures import failed
from telemetry_client.integrations._asgi.http import record_http
from telemetry_client.integrations._asgi.observer import observe
from telemetry_client.integrations._asgi.routes import RouteNamer
from telemetry_client.integrations._asgi.sessions import (
    SeenSessions,
    emit_session_start,
    seen_for,
)
from telemetry_client.integrations._asgi.websocket import record_websocket

__all__ = ["MAX_ID_CHARS", "TelemetryMiddleware"]

#: Longer ids from headers, cookies or query strings are ignored (they come from clients).
MAX_ID_CHARS = 200


def _header_name(name: str | None) -> bytes | None:
    return name.lower().encode("latin-1") if name else None


def _clean_id(value: str | None) -> str | None:
    if value is None:
        return None
    value = value.strip()
    return value if 0 < len(value) <= MAX_ID_CHARS else None


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
    adds the redacted path of unmatched requests (see :mod:`.routes`).
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
        self._routes = RouteNamer(app, record_unmatched_paths=record_unmatched_paths)
        self._seen: tuple[TelemetryClient, SeenSessions] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            conn = self._begin(scope, "http")
            if conn is None:
                await self.app(scope, receive, send)
            else:
                await record_http(
                    self.app, self._routes, conn, scope, receive, send, record=self._record
                )
        elif kind == "websocket":
            conn = self._begin(scope, "websocket")
            if conn is None:
                await self.app(scope, receive, send)
            else:
                await record_websocket(
                    self.app, self._routes, conn, scope, receive, send, record=self._record
                )
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
                        observe(scope)
                except Exception as exc:
                    failed("middleware", exc)
            await send(message)

        return send_watching

    # -- per connection -------------------------------------------------------------------

    def _client_for(self, scope: Scope) -> TelemetryClient | None:
        if self._client is not None:
            return self._client
        state = getattr(scope.get("app"), "state", None)
        client = getattr(state, "telemetry", None)
        if isinstance(client, TelemetryClient):
            return client
        return newest_active_client()

    def _begin(self, scope: Scope, transport: str) -> Connection | None:
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
            conn = Connection(client, session_id, user_id, transport)
        except Exception as exc:
            failed("middleware", exc)
            return None
        if session_id is not None:
            try:
                seen = self._seen
                if seen is None or seen[0] is not client:  # one weak-dict lookup per client
                    seen = self._seen = (client, seen_for(client))
                new = seen[1].add(session_id)
                if new or websocket:  # once per new session, and once per WebSocket
                    emit_session_start(client, session_id, user_id or user_id_var.get(), transport)
            except Exception as exc:
                failed("middleware", exc)
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
