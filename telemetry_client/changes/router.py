"""``changes_router(client, root)``: the changes panel as a FastAPI ``APIRouter`` (CONTRACT §10).

Routes (relative to the prefix the app mounts it under): ``GET /recent`` (JSON), ``POST
/{op_id}/accept|reject|revert``, ``GET /`` (the HTML page) and ``GET /static/<file>``.

CSRF: a decision is refused (403) when the request comes from another site (``Origin``
or ``Sec-Fetch-Site``), and otherwise needs one of: the panel's token (form field
``csrf_token`` or header ``X-CSRF-Token``, shared by every process on the spool), a JSON
content type, or an ``X-Requested-With`` header; the last two cannot be sent cross-origin
without a CORS preflight the panel never answers. A form post (no JS) is answered with a
303 back to the page, which shows the outcome; anything else gets JSON.

The page is sent with a strict ``Content-Security-Policy`` (no inline script or style, no
remote origin); every value on it is autoescaped text.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from importlib import resources
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, quote, urlsplit

import anyio.to_thread
import jinja2
from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from telemetry_client._internal.diff_html import DiffRender, render_diff
from telemetry_client._internal.log import RateLimitedLogger
from telemetry_client.changes.panel import ChangesPanel, Refused

if TYPE_CHECKING:
    from telemetry_client.client import TelemetryClient

__all__ = ["CSP", "changes_router"]

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}
_STATIC = {
    "changes.css": "text/css; charset=utf-8",
    "changes.js": "text/javascript; charset=utf-8",
    "changes.svg": "image/svg+xml",
}
_FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data", "text/plain")
_FORM_MAX = 4096
_log = RateLimitedLogger(60.0)
PAGE_SIZE = 20
DIFF_MAX_LINES = 400

#: The page's notice for each outcome code (``?notice=`` after a form post).
NOTICES = {
    "accept": "Change accepted.",
    "reject": "Change rejected.",
    "revert": "Change reverted: the file is back as it was before.",
    "unchanged": "Nothing to do: that decision was already recorded.",
    "conflict": "Not reverted: the file changed since this operation.",
    "reverted": "That change was reverted; it cannot be decided any more.",
    "symlink": "Refused: the file or a directory on its path is a symlink.",
    "outside_root": "Refused: the file is outside this panel's root.",
    "evicted": "Not reverted: its before-content was dropped (oldest first).",
    "too_large": "Not reverted: its before-content was too large to keep.",
    "unknown": "Not reverted: the file could not be read before the operation.",
    "not_found": "No such change.",
    "forbidden": "Refused: the form's token is missing or wrong; reload the page.",
    "error": "The decision could not be recorded (see the server log).",
}

_env = jinja2.Environment(
    loader=jinja2.PackageLoader("telemetry_client.changes", "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
)
_env.filters["q"] = lambda v: quote(str(v), safe="")


def _static(name: str) -> bytes:
    return (
        resources.files("telemetry_client.changes").joinpath("static").joinpath(name).read_bytes()
    )


def _without_file_headers(diff: str) -> DiffRender:
    """The diff's records minus its ``---``/``+++`` lines: the card already names the file."""
    r = render_diff(diff, max_lines=DIFF_MAX_LINES)
    lines = tuple(
        line for line in r.lines if not (line.kind == "meta" and line.text[:4] in ("--- ", "+++ "))
    )
    return DiffRender(lines, r.added, r.removed, r.omitted)


def _form_post(request: Request) -> bool:
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    accept = request.headers.get("accept", "")
    return ctype in _FORM_TYPES and "application/json" not in accept


def changes_router(
    client: TelemetryClient, root: str | os.PathLike[str], *, page_size: int = PAGE_SIZE
) -> APIRouter:
    """An ``APIRouter`` for the file operations recorded through ``client`` under ``root``.

    Mount it with ``app.include_router(changes_router(client, root=workspace),
    prefix="/api/changes")``; the page is then at ``/api/changes/``.
    """
    panel = ChangesPanel(client, root)
    router = APIRouter()
    token_cache: list[str] = []

    def token() -> str:
        if not token_cache:
            journal = panel.journal
            key = journal.csrf_key() if journal is not None else os.urandom(32)
            token_cache.append(hmac.new(key, b"changes-panel-csrf", hashlib.sha256).hexdigest())
        return token_cache[0]

    def same_origin(request: Request) -> bool:
        if request.headers.get("sec-fetch-site", "same-origin") not in ("same-origin", "none"):
            return False
        origin = request.headers.get("origin")
        if origin is None or origin == "null":  # "null": privacy-sensitive contexts
            return True
        return urlsplit(origin).netloc.lower() == request.headers.get("host", "").lower()

    async def csrf_ok(request: Request) -> bool:
        if not same_origin(request):
            return False
        given = request.headers.get("x-csrf-token")
        if given is None and _form_post(request):
            body = await request.body()
            if len(body) <= _FORM_MAX:
                values = parse_qs(body.decode("utf-8", "replace")).get("csrf_token")
                given = values[0] if values else None
        expected = await anyio.to_thread.run_sync(token)
        if given is not None:
            return hmac.compare_digest(given.encode(), expected.encode())
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        return ctype == "application/json" or "x-requested-with" in request.headers

    @router.get("/recent")
    def recent(limit: int = Query(50, ge=1, le=500), before: str | None = None) -> dict[str, Any]:
        """The changes newest first; ``next`` is the ``before`` of the next page (or null)."""
        changes, nxt = panel.recent(limit, before)
        return {"changes": [c.as_json() for c in changes], "next": nxt}

    async def decide(request: Request, op_id: str, decision: str) -> Response:
        form = _form_post(request)

        def answer(status: int, code: str, body: dict[str, Any]) -> Response:
            if form:
                url = f"../?notice={quote(code)}&op={quote(op_id, safe='')}#op-{quote(op_id)}"
                return RedirectResponse(url, status_code=303)
            return JSONResponse(body, status_code=status)

        if not await csrf_ok(request):
            msg = "cross-site or token-less form post refused (send X-CSRF-Token or JSON)"
            return answer(403, "forbidden", {"detail": msg, "code": "forbidden"})
        try:
            outcome = await anyio.to_thread.run_sync(panel.decide, op_id, decision)
        except Refused as exc:
            return answer(exc.status, exc.code, {"detail": exc.message, "code": exc.code})
        except OSError as exc:  # disk full, lock held too long: say so, keep serving
            _log.warning("changes-decide", "telemetry: changes panel decision failed (%r)", exc)
            msg = "the decision could not be recorded (disk or lock); try again"
            return answer(503, "error", {"detail": msg, "code": "error"})
        if outcome is None:
            return answer(404, "not_found", {"detail": "unknown operation", "code": "not_found"})
        return answer(200, decision if outcome.changed else "unchanged", outcome.as_json())

    for name in ("accept", "reject", "revert"):

        async def endpoint(request: Request, op_id: str, _d: str = name) -> Response:
            return await decide(request, op_id, _d)

        endpoint.__name__ = f"changes_{name}"
        router.add_api_route(
            f"/{{op_id}}/{name}", endpoint, methods=["POST"], name=f"changes_{name}"
        )

    @router.get("/static/{name}", include_in_schema=False)
    def static(name: str) -> Response:
        if name not in _STATIC:
            return Response(status_code=404)
        headers = {"X-Content-Type-Options": "nosniff", "Cache-Control": "no-cache"}
        return Response(_static(name), media_type=_STATIC[name], headers=headers)

    @router.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page(
        before: str | None = None, notice: str | None = None, op: str | None = None
    ) -> Response:
        changes, nxt = panel.recent(page_size, before)
        items = []
        for c in changes:
            diff = panel.diff(c.rec)
            items.append(
                {
                    **c.as_json(),
                    "diff": None if diff is None else _without_file_headers(diff),
                }
            )
        html = _env.get_template("changes.html").render(
            root=panel.root,
            items=items,
            next=nxt,
            first_page=before is None,
            notice=NOTICES.get(notice or ""),
            notice_op=op if notice in NOTICES else None,
            csrf=token(),
            enabled=client.enabled,
        )
        return HTMLResponse(html, headers=_HEADERS)

    return router
