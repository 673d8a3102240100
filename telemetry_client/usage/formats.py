"""``telemetry-client stats`` output: a text table, one JSON line, or one tmux status line."""

from __future__ import annotations

import orjson

from telemetry_client.usage.summary import UsageSummary, UsageTotals, format_window

__all__ = ["format_json", "format_text", "format_tmux"]


def _si(n: int) -> str:
    """Compact decimal size for one-line displays: ``512B``, ``1.2kB``, ``3.4MB``."""
    if n < 1000:
        return f"{n}B"
    value, units = n / 1000, ["kB", "MB", "GB", "TB"]
    while round(value, 1) >= 1000 and len(units) > 1:
        value /= 1000
        units.pop(0)
    return f"{value:.1f}{units[0]}"


def _compact(n: int) -> str:
    """Compact count: ``950``, ``12.3k``, ``4.5M``."""
    if n < 1000:
        return str(n)
    if n < 999_950:
        return f"{n / 1000:.1f}k"
    return f"{n / 1_000_000:.1f}M"


def format_json(summary: UsageSummary) -> str:
    """One JSON object (``UsageSummary.to_dict``) on one line."""
    return orjson.dumps(summary.to_dict()).decode()


def format_tmux(summary: UsageSummary, *, top: int = 3) -> str:
    """One compact line for a status bar, e.g.
    ``Σ@1h reqs=123 rpm=2.1 ↑1.2MB ↓3.4MB tok=45.6k cached=12.0k | openai:gpt-4.1 reqs=80``
    (``cached``, ``cache_write`` and ``reasoning`` only when not 0)."""
    t = summary.total
    parts = [f"Σ@{format_window(summary.window_s)} reqs={t.requests}"]
    if t.errors:
        parts.append(f"err={t.errors}")
    parts.append(f"rpm={t.rpm:.1f} ↑{_si(t.bytes_up)} ↓{_si(t.bytes_down)}")
    if t.total_tokens:
        parts.append(f"tok={_compact(t.total_tokens)}")
    for label, n in (
        ("cached", t.cache_read_tokens),
        ("cache_write", t.cache_write_tokens),
        ("reasoning", t.reasoning_tokens),
    ):
        if n:
            parts.append(f"{label}={_compact(n)}")
    line = " ".join(parts)
    for m in summary.models[:top]:
        line += f" | {m.label} reqs={m.totals.requests}"
    if len(summary.models) > top:
        line += f" | +{len(summary.models) - top} more"
    return line


_COLUMNS = ("reqs", "errors", "rpm", "sent", "received", "in tokens", "out tokens")
#: Shown only when not 0 over the window: parts of the in/out tokens.
_PART_COLUMNS = (
    ("cache read", "cache_read_tokens"),
    ("cache write", "cache_write_tokens"),
    ("reasoning", "reasoning_tokens"),
)


def _row(label: str, t: UsageTotals, parts: tuple[str, ...]) -> tuple[str, ...]:
    return (
        label,
        str(t.requests),
        str(t.errors),
        f"{t.rpm:.2f}",
        _si(t.bytes_up),
        _si(t.bytes_down),
        str(t.input_tokens),
        str(t.output_tokens),
        *(str(getattr(t, field)) for field in parts),
    )


def format_text(summary: UsageSummary) -> str:
    """A small table: one row for everything, one per provider:model (most requests first).

    The ``cache read``, ``cache write`` and ``reasoning`` columns (parts of the in/out
    tokens) appear when the window has such tokens.
    """
    shown = [(title, field) for title, field in _PART_COLUMNS if getattr(summary.total, field)]
    parts = tuple(field for _, field in shown)
    rows = [("", *_COLUMNS, *(title for title, _ in shown)), _row("all", summary.total, parts)]
    rows += [_row(m.label, m.totals, parts) for m in summary.models]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = [
        f"LLM usage over the last {format_window(summary.window_s)}, every process on this spool"
    ]
    for r in rows:
        cells = [r[0].ljust(widths[0])]
        cells += [c.rjust(w) for c, w in zip(r[1:], widths[1:], strict=True)]
        lines.append("  ".join(cells).rstrip())
    if not summary.models:
        lines.append("(no LLM calls in this window)")
    return "\n".join(lines)
