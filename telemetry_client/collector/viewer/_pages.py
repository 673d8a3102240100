"""Rendering: the Jinja2 environment, the security headers, and the page bodies.

Autoescape is on for every template and no helper returns markup, so stored text is
always text. Every response carries a Content-Security-Policy that allows only this
origin (no inline script or style, no remote image, frame or connection), and the
viewer's pages are never cached.
"""

from __future__ import annotations

from typing import Any

from fastapi.responses import HTMLResponse, Response
from jinja2 import Environment, PackageLoader, Undefined, select_autoescape

from telemetry_client.collector.viewer import _format as fmt
from telemetry_client.collector.viewer._timeline import Context, build

__all__ = ["CSP", "UI", "Renderer", "security_headers"]

UI = "/ui"
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self';"
    " connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self';"
    " frame-ancestors 'none'"
)
KNOWN_TYPES = frozenset(
    {
        "session_start",
        "chat_turn",
        "llm_call",
        "tool_call",
        "tool_result",
        "bash_command",
        "bash_output",
        "file_operation",
        "change_decision",
        "error",
        "thinking",
        "prompt_sent",
        "response_chunk",
        "response_complete",
        "file_read",
        "file_write",
        "started",
        "completed",
    }
)


def _present(value: Any) -> bool:
    """The ``present`` test: a value the event has (neither missing nor null)."""
    return value is not None and not isinstance(value, Undefined)


def _seq(value: Any) -> int:
    """An event's ``seq`` for ``data-seq`` (0 when not an integer)."""
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def security_headers(response: Response) -> Response:
    """Add the CSP and its companions to ``response`` (returned for chaining)."""
    response.headers["Content-Security-Policy"] = CSP
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["X-Frame-Options"] = "DENY"
    response.headers.setdefault("Cache-Control", "no-store")
    return response


class Renderer:
    """The viewer's templates with their filters."""

    def __init__(self) -> None:
        env = Environment(
            loader=PackageLoader("telemetry_client.collector.viewer", "templates"),
            autoescape=select_autoescape(default=True, default_for_string=True),
            trim_blocks=False,
        )
        env.filters.update(
            clip=fmt.clip,
            pretty=fmt.pretty,
            fmt_ms=fmt.fmt_ms,
            fmt_bytes=fmt.fmt_bytes,
            short=fmt.short,
            short_time=fmt.short_time,
            day_time=fmt.day_time,
            attachment_of=fmt.attachment_of,
            diff_lines=fmt.diff_lines,
            ts_us=fmt.parse_ts,
            seq_of=_seq,
        )
        env.tests["present"] = _present
        env.globals.update(ui=UI, known=KNOWN_TYPES)
        self._env = env

    def render(self, name: str, **context: Any) -> str:
        return self._env.get_template(name).render(**context)

    def page(self, name: str, status: int = 200, **context: Any) -> Response:
        """An HTML page with the security headers."""
        return security_headers(HTMLResponse(self.render(name, **context), status))

    def fragment(self, events: list[dict[str, Any]], context: Context) -> str:
        """The timeline HTML of ``events`` continuing after ``context``."""
        return self.render("fragment.html", tree=build(events, context))

    def message(self, title: str, message: str, status: int, **context: Any) -> Response:
        return self.page("message.html", status, title=title, message=message, **context)
