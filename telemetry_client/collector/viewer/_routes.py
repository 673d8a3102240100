"""The viewer's routes: sign-in, the sessions list, a session's timeline, its pages (JSON
for the script), attachments for preview and download, and the static script and style.

Every page needs the ``read`` role and reads within the reader's scope, exactly like
``GET /api/v1/events`` (a team's reader sees its team's events only). Signed out, a page
redirects to the sign-in form (the script's JSON calls get 401); a token without the read
role gets 403. The timeline's first page (:data:`PAGE` events) is rendered with the page;
the script asks ``/ui/api/events?after=KEY`` for the rest, in stored order (``ts``, then
``seq``; the store's ``session_timeline`` keyset). Live mode polls ``?live=1&cursor=C`` from
the commit cursor taken with the first page: it gets exactly the events committed since,
which the script places by ``(ts, seq)`` (docs/viewer.md, "Order").
"""

from __future__ import annotations

from functools import partial
from importlib import resources
from typing import Any
from urllib.parse import parse_qs, urlencode

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response

from telemetry_client.collector._auth import READ, Principal
from telemetry_client.collector._errors import Rejected
from telemetry_client.collector._http import cursor_param, json_response, read_scope, sha256_param
from telemetry_client.collector._state import CollectorState
from telemetry_client.collector.store.base import (
    EventPage,
    EventQuery,
    ReadScope,
    SessionQuery,
    TimelinePage,
)
from telemetry_client.collector.viewer._access import CookieSigner, who
from telemetry_client.collector.viewer._format import parse_ts
from telemetry_client.collector.viewer._pages import UI, Renderer, security_headers
from telemetry_client.collector.viewer._timeline import Context, build

__all__ = ["PAGE", "viewer_router"]

PAGE = 200  # events per timeline page
SESSIONS_PAGE = 50
PREVIEW_BYTES = 64 * 1024
_STATIC = {"viewer.js": "text/javascript", "viewer.css": "text/css"}
_MAX_FORM = 8192


def _static_files() -> dict[str, bytes]:
    root = resources.files("telemetry_client.collector.viewer") / "static"
    return {name: (root / name).read_bytes() for name in _STATIC}


def _safe_next(target: str | None) -> str:
    """Where to go after signing in: a viewer path, never another site."""
    if target and target.startswith(UI + "/") and target.isprintable() and "\\" not in target:
        return target
    return UI + "/"


class _Viewer:
    def __init__(self, state: CollectorState) -> None:
        self.state = state
        self.store = state.store
        self.renderer = Renderer()
        self.signer = CookieSigner(state.auth)

    def chrome(self, principal: Principal) -> dict[str, Any]:
        """What the page header shows about the reader."""
        return {"who": principal.name, "can_sign_out": self.state.auth.required}

    def reader(self, request: Request, *, page: bool = True) -> Principal | Response:
        """The signed-in reader, or the response refusing the request."""
        principal = who(self.state.auth, self.signer, request)
        if principal is None:
            if not page:
                return security_headers(json_response({"detail": "sign in first"}, 401))
            target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            location = f"{UI}/login?{urlencode({'next': target})}"
            return security_headers(RedirectResponse(location, 303))
        if not principal.may(READ):
            why = "This token may only ingest events; sign in with a token that may read."
            if not page:
                return security_headers(json_response({"detail": why}, 403))
            return self.renderer.message("Not allowed", why, 403, **self.chrome(principal))
        return principal

    async def event_page(self, session_id: str, scope: ReadScope, cursor: str | None) -> EventPage:
        query = EventQuery(session_id=session_id, limit=PAGE, cursor=cursor)
        page: EventPage = await self.state.store_call("events", self.store.events, query, scope)
        return page

    async def timeline(self, session_id: str, scope: ReadScope, after: str | None) -> TimelinePage:
        call = partial(
            self.store.session_timeline, session_id, after=after, limit=PAGE, scope=scope
        )
        page: TimelinePage = await self.state.store_call("timeline", call)
        return page

    async def summary(
        self, session_id: str, scope: ReadScope, first: dict[str, Any]
    ) -> dict[str, Any] | None:
        """The session's row of the sessions list: among the sessions of its user and app
        that overlap its first event's time (usually one page)."""
        at = parse_ts(first.get("ts"))
        cursor: str | None = None
        for _ in range(10):
            query = SessionQuery(
                user_id=str(first.get("user_id")),
                app=str(first.get("app")),
                since_us=at,
                until_us=at + 1,
                limit=200,
                cursor=cursor,
            )
            page = await self.state.store_call("sessions", self.store.sessions, query, scope)
            for row in page.sessions:
                if row["session_id"] == session_id:
                    found: dict[str, Any] = row
                    return found
            cursor = page.next_cursor
            if cursor is None:
                break
        return None


def _filters(request: Request) -> tuple[dict[str, str], int | None, int | None, str | None]:
    params = request.query_params
    form = {k: params.get(k, "") for k in ("user_id", "app", "since", "until", "errors")}
    bad: str | None = None
    bounds: list[int | None] = []
    for name in ("since", "until"):
        raw = form[name]
        us = parse_ts(raw) if raw else None
        if raw and not us:
            bad = f"{name}: not a date and time"
            us = None
        bounds.append(us)
    return form, bounds[0], bounds[1], bad


def viewer_router(state: CollectorState) -> APIRouter:
    """The viewer under ``/ui`` for the collector ``state``."""
    v = _Viewer(state)
    static = _static_files()
    router = APIRouter()

    @router.get(UI, include_in_schema=False)
    async def root() -> Response:
        return security_headers(RedirectResponse(UI + "/", 308))

    @router.get(UI + "/login")
    async def login_form(request: Request) -> Response:
        if not state.auth.required:
            return security_headers(RedirectResponse(UI + "/", 303))
        nxt = _safe_next(request.query_params.get("next"))
        return v.renderer.page("login.html", next=nxt, who=None)

    @router.post(UI + "/login")
    async def login(request: Request) -> Response:
        body = await request.body()
        form = parse_qs(body[:_MAX_FORM].decode("utf-8", "replace"), max_num_fields=4)
        token = (form.get("token") or [""])[0].strip()
        nxt = _safe_next((form.get("next") or [""])[0])
        principal = state.auth.principal(f"Bearer {token}") if token else None
        if principal is None:
            error = "That token is not accepted by this collector."
            return v.renderer.page("login.html", 401, next=nxt, who=None, error=error)
        if not principal.may(READ):
            error = "This token may only ingest events; sign in with a token that may read."
            return v.renderer.page("login.html", 403, next=nxt, who=None, error=error)
        response = security_headers(RedirectResponse(nxt, 303))
        v.signer.set(response, request, principal)
        return response

    @router.post(UI + "/logout")
    async def logout(request: Request) -> Response:
        response = security_headers(RedirectResponse(UI + "/login", 303))
        v.signer.clear(response, request)
        return response

    @router.get(UI + "/")
    async def sessions(request: Request) -> Response:
        principal = v.reader(request)
        if isinstance(principal, Response):
            return principal
        form, since_us, until_us, bad = _filters(request)
        cursor = cursor_param(request.query_params)
        rows: list[dict[str, Any]] = []
        next_cursor: str | None = cursor
        for _ in range(20):  # "has errors" filters here: bounded scan for a page
            query = SessionQuery(
                user_id=form["user_id"] or None,
                app=form["app"] or None,
                since_us=since_us,
                until_us=until_us,
                limit=SESSIONS_PAGE,
                cursor=next_cursor,
            )
            page = await state.store_call(
                "sessions", v.store.sessions, query, read_scope(principal)
            )
            rows += [s for s in page.sessions if not form["errors"] or s["errors"] > 0]
            next_cursor = page.next_cursor
            if next_cursor is None or len(rows) >= SESSIONS_PAGE:
                break
        next_url = None
        if next_cursor is not None:
            kept = {k: x for k, x in form.items() if x}
            next_url = f"{UI}/?{urlencode({**kept, 'cursor': next_cursor})}"
        return v.renderer.page(
            "sessions.html",
            sessions=rows,
            f=form,
            bad_filter=bad,
            next_url=next_url,
            **v.chrome(principal),
        )

    @router.get(UI + "/sessions/{session_id:path}")
    async def session(request: Request, session_id: str) -> Response:
        principal = v.reader(request)
        if isinstance(principal, Response):
            return principal
        scope = read_scope(principal)
        page = await v.timeline(session_id, scope, None)
        if not page.events:
            return v.renderer.message(
                "No such session",
                "No events of this session are visible to you.",
                404,
                **v.chrome(principal),
            )
        summary = await v.summary(session_id, scope, page.events[0])
        return v.renderer.page(
            "session.html",
            session_id=session_id,
            summary=summary,
            tree=build(page.events),
            total=page.total,
            loaded=len(page.events),
            cursor=page.next_key,
            live_cursor=page.live_cursor,
            more=page.next_key is not None,
            **v.chrome(principal),
        )

    @router.get(UI + "/api/events")
    async def events(request: Request) -> Response:
        principal = v.reader(request, page=False)
        if isinstance(principal, Response):
            return principal
        params = request.query_params
        session_id = params.get("session", "")
        if not session_id:
            raise Rejected(400, "bad_query", "session is required")
        cursor = cursor_param(params)
        run = params.get("run", "")
        context = Context(int(run) if run.isdigit() else None, params.get("chunks") == "1")
        scope = read_scope(principal)
        if params.get("live") == "1":  # commit order from the cursor: what came since
            live = await v.event_page(session_id, scope, cursor)
            events, total, next_at = live.events, live.total, live.last_cursor
            more = live.next_cursor is not None
        else:  # stored order: the page after the key
            after = cursor_param({"cursor": params.get("after", "")})
            page = await v.timeline(session_id, scope, after)
            events, total, next_at = page.events, page.total, page.next_key
            more = page.next_key is not None
        payload = {
            "html": v.renderer.fragment(events, context) if events else "",
            "count": len(events),
            "total": total,
            "cursor": next_at,
            "more": more,
        }
        return security_headers(json_response(payload))

    @router.get(UI + "/attachments/{sha256}")
    async def attachment(request: Request, sha256: str) -> Response:
        principal = v.reader(request, page=False)
        if isinstance(principal, Response):
            return principal
        sha = sha256_param(sha256, "the sha256 in the path")
        blob = await state.store_call("attachment", v.store.attachment, sha, read_scope(principal))
        if blob is None:
            return security_headers(json_response({"detail": "no such attachment"}, 404))
        if request.query_params.get("preview") == "1":
            text = blob.data[:PREVIEW_BYTES].decode("utf-8", "replace")
            if blob.size > PREVIEW_BYTES:
                text += f"\n… {blob.size - PREVIEW_BYTES} more bytes (download to see all)"
            response = Response(text, media_type="text/plain; charset=utf-8")
        else:
            response = Response(
                blob.data,
                media_type="application/octet-stream",
                headers={"Content-Disposition": f'attachment; filename="{sha}"'},
            )
        response.headers["Content-Security-Policy"] = "sandbox; default-src 'none'"
        response.headers["X-Content-Type-Options"] = "nosniff"
        return response

    @router.get(UI + "/static/{name}")
    async def static_file(name: str) -> Response:
        if name not in static:
            return security_headers(json_response({"detail": "not found"}, 404))
        response = Response(static[name], media_type=_STATIC[name])
        response.headers["Cache-Control"] = "public, max-age=300"
        return security_headers(response)

    return router
