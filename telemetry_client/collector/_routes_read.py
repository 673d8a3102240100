"""The read side of the API: events, sessions, attachments out; health and metrics.

Every read needs the ``read`` role (or ``admin``) and is answered within the reader's
:class:`ReadScope`: a read token with a team sees only what tokens of its team ingested
(docs/collector-store.md, "Who may read what"). Events come in commit order with an
opaque ``next_cursor`` (``offset`` still works for 0.1 clients); sessions most recent
first. Health needs no token and pings the store on a worker thread.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from telemetry_client.collector._auth import READ
from telemetry_client.collector._http import (
    admit,
    bounded_int,
    cursor_param,
    json_response,
    read_scope,
    sha256_param,
    timestamp_param,
)
from telemetry_client.collector._metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from telemetry_client.collector._routes_write import ATTACHMENTS_PATH, EVENTS_PATH
from telemetry_client.collector._state import CollectorState
from telemetry_client.collector.store.base import (
    EventPage,
    EventQuery,
    SessionPage,
    SessionQuery,
    StoreUnavailable,
)

__all__ = ["HEALTH_PATH", "METRICS_PATH", "SESSIONS_PATH", "read_router"]

SESSIONS_PATH = "/api/v1/sessions"
HEALTH_PATH = "/api/v1/health"
METRICS_PATH = "/metrics"

DEFAULT_LIMIT = 1000
MAX_LIMIT = 10000
DEFAULT_SESSIONS = 100
MAX_SESSIONS = 1000


def read_router(state: CollectorState) -> APIRouter:
    store = state.store
    router = APIRouter()

    @router.get(EVENTS_PATH)
    async def get_events(request: Request) -> Response:
        """Stored envelopes (each with its ``ingest`` stamp) matching the filters, in commit
        order: ``{"events", "total", "next_cursor"}``."""
        scope = read_scope(admit(state, request, READ))
        params = request.query_params
        query = EventQuery(
            user_id=params.get("user_id") or None,
            session_id=params.get("session_id") or None,
            type=params.get("type") or None,
            since_us=timestamp_param(params, "since"),
            until_us=timestamp_param(params, "until"),
            limit=bounded_int(params, "limit", DEFAULT_LIMIT, MAX_LIMIT),
            offset=bounded_int(params, "offset", 0, None),
            cursor=cursor_param(params),
        )
        page: EventPage = await state.store_call("events", store.events, query, scope)
        return json_response(
            {"events": page.events, "total": page.total, "next_cursor": page.next_cursor}
        )

    @router.get(SESSIONS_PATH)
    async def get_sessions(request: Request) -> Response:
        """Sessions overlapping [since, until), most recent ``last_ts`` first:
        ``{"sessions", "next_cursor"}``."""
        scope = read_scope(admit(state, request, READ))
        params = request.query_params
        query = SessionQuery(
            user_id=params.get("user_id") or None,
            app=params.get("app") or None,
            since_us=timestamp_param(params, "since"),
            until_us=timestamp_param(params, "until"),
            limit=bounded_int(params, "limit", DEFAULT_SESSIONS, MAX_SESSIONS),
            cursor=cursor_param(params),
        )
        page: SessionPage = await state.store_call("sessions", store.sessions, query, scope)
        return json_response({"sessions": page.sessions, "next_cursor": page.next_cursor})

    @router.get(ATTACHMENTS_PATH + "/{sha256}")
    async def get_attachment(request: Request, sha256: str) -> Response:
        """The raw bytes of a stored blob the reader may see, with its uploaded content type."""
        scope = read_scope(admit(state, request, READ))
        sha = sha256_param(sha256, "the sha256 in the path")
        blob = await state.store_call("attachment", store.attachment, sha, scope)
        if blob is None:
            return json_response({"detail": "no attachment with this sha256"}, status=404)
        # As a header, not media_type: Starlette would append "; charset=utf-8" to text/*.
        return Response(blob.data, headers={"Content-Type": blob.content_type})

    @router.get(HEALTH_PATH)
    async def health() -> Response:
        """Without auth: 200 when the store answers a ping now, else 503 (degraded)."""
        # The store bounds a ping (statement/connect timeout, SQLite busy timeout), so a
        # database that hangs answers 503 here after that long.
        try:
            await state.run_sync(state.timed, "ping", store.ping, lane="health")
            ok = True
        except StoreUnavailable:
            ok = False
        if ok:
            return json_response({"status": "ok", "database": "ok"})
        return json_response({"status": "degraded", "database": "unavailable"}, status=503)

    @router.get(METRICS_PATH)
    async def get_metrics(request: Request) -> Response:
        """Prometheus text: requests, events/bytes stored, duplicates, rejections, store
        latency and errors."""
        admit(state, request, READ)
        return Response(state.metrics.render(), media_type=METRICS_CONTENT_TYPE)

    return router
