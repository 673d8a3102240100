"""Value formatting for the templates: clipped text, JSON, diffs, times, sizes, attachments.

Everything here returns plain text (or plain data) and the templates escape it
(autoescape is on): no helper builds markup. Long values are clipped so a hostile 10 MB
string costs the page a few kilobytes, and JSON too deep to pretty-print falls back to a
compact, clipped form instead of failing the page.
"""

from __future__ import annotations

import datetime as dt
import difflib
import json
from dataclasses import dataclass
from typing import Any

import orjson
from jinja2 import Undefined

from telemetry_client._internal.diff_html import render_diff

__all__ = [
    "MAX_TEXT",
    "Clipped",
    "DiffLine",
    "attachment_of",
    "clip",
    "diff_lines",
    "fmt_bytes",
    "fmt_ms",
    "parse_ts",
    "pretty",
    "short",
    "short_time",
]

MAX_TEXT = 20_000  # characters of one value shown in the page
MAX_DIFF_LINES = 2_000
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)


@dataclass(frozen=True, slots=True)
class Clipped:
    """A value's text, at most :data:`MAX_TEXT` characters, and how many were left out."""

    text: str
    omitted: int


def clip(value: Any, limit: int = MAX_TEXT) -> Clipped:
    """``value`` as text (JSON for non-strings), cut at ``limit`` characters."""
    text = value if isinstance(value, str) else pretty(value, limit)
    if len(text) <= limit:
        return Clipped(text, 0)
    return Clipped(text[:limit], len(text) - limit)


def pretty(value: Any, limit: int = MAX_TEXT) -> str:
    """Indented JSON; compact JSON when too deep for that; a note when too deep for both."""
    try:
        return orjson.dumps(value, option=orjson.OPT_INDENT_2).decode()
    except (orjson.JSONEncodeError, TypeError):
        pass
    try:
        return json.dumps(value, ensure_ascii=False)[: limit + 1]
    except (RecursionError, ValueError, TypeError):
        return "(too deeply nested to show)"


def short(value: Any, limit: int = 300) -> str:
    """``value`` as one short text: cut at ``limit`` characters with an ellipsis."""
    if value is None or isinstance(value, Undefined):
        return ""
    text = value if isinstance(value, str) else str(value)
    return text if len(text) <= limit else text[:limit] + "…"


def parse_ts(value: Any) -> int:
    """An RFC 3339 timestamp as epoch microseconds; 0 when it is not one."""
    if not isinstance(value, str):
        return 0
    try:
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return 0
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.timezone.utc)
    return (parsed - _EPOCH) // dt.timedelta(microseconds=1)


def short_time(value: Any) -> str:
    """``10:00:01.250`` (UTC) of an RFC 3339 timestamp; the raw text when unreadable."""
    us = parse_ts(value)
    if not us:
        return str(value)[:40]
    t = _EPOCH + dt.timedelta(microseconds=us)
    return f"{t:%H:%M:%S}.{t.microsecond // 1000:03d}"


def day_time(value: Any) -> str:
    """``2026-12-01 10:00:01`` (UTC) of an RFC 3339 timestamp."""
    us = parse_ts(value)
    if not us:
        return str(value)[:40]
    return f"{_EPOCH + dt.timedelta(microseconds=us):%Y-%m-%d %H:%M:%S}"


def fmt_ms(value: Any) -> str:
    """``812 ms`` / ``3.4 s`` / ``2 min 5 s``; empty for a missing value."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return ""
    ms = float(value)
    if ms < 1000:
        return f"{ms:.0f} ms"
    if ms < 60_000:
        return f"{ms / 1000:.1f} s"
    return f"{int(ms // 60_000)} min {int(ms % 60_000 // 1000)} s"


def fmt_bytes(value: Any) -> str:
    """``512 B`` / ``1.5 KiB`` / ``3.0 MiB``."""
    if not isinstance(value, int) or isinstance(value, bool):
        return ""
    size = float(value)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return ""  # pragma: no cover


def attachment_of(value: Any) -> dict[str, Any] | None:
    """The ``{"sha256", "size", "content_type"}`` of an attachment reference, else None."""
    if not isinstance(value, dict) or len(value) != 1:
        return None
    ref = value.get("$attachment")
    if not isinstance(ref, dict) or not isinstance(ref.get("sha256"), str):
        return None
    sha = ref["sha256"].lower()
    if len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):
        return None
    return {"sha256": sha, "size": ref.get("size"), "content_type": ref.get("content_type")}


@dataclass(frozen=True, slots=True)
class DiffLine:
    """One line of a unified diff and its kind: ``add``, ``del``, ``hunk``, ``meta``, ``ctx``,
    ``note`` (``\\ No newline at end of file``)."""

    kind: str
    text: str


def diff_lines(data: dict[str, Any]) -> tuple[list[DiffLine], int, int, int]:
    """A file operation's diff as classified lines, with ``(added, removed, omitted)``
    (from ``loc_added``/``loc_removed`` when given; the diff is made from ``before`` and
    ``after`` when the event has none)."""
    diff = data.get("diff")
    if not isinstance(diff, str):
        before, after = data.get("before"), data.get("after")
        if isinstance(before, str) or isinstance(after, str):
            old = (before if isinstance(before, str) else "")[: MAX_TEXT * 10]
            new = (after if isinstance(after, str) else "")[: MAX_TEXT * 10]
            path = str(data.get("path", "file"))
            diff = "".join(
                difflib.unified_diff(
                    old.splitlines(keepends=True),
                    new.splitlines(keepends=True),
                    f"a/{path}",
                    f"b/{path}",
                )
            )
        else:
            diff = ""
    # One diff parser for the viewer and the changes panel (hunk-aware line records).
    rendered = render_diff(diff, max_lines=MAX_DIFF_LINES)
    lines = [DiffLine(line.kind, line.text[:MAX_TEXT]) for line in rendered.lines]
    added, removed = rendered.added, rendered.removed
    stated_add, stated_del = data.get("loc_added"), data.get("loc_removed")
    if isinstance(stated_add, int) and not isinstance(stated_add, bool):
        added = stated_add
    if isinstance(stated_del, int) and not isinstance(stated_del, bool):
        removed = stated_del
    return lines, added, removed, rendered.omitted
