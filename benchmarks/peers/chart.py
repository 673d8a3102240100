"""The peer benchmark's chart: three small bar panels as a hand-written SVG (no matplotlib).

``render(rows, title=..., notes=...)`` returns the SVG text. One row per SDK, one panel
per metric, lower is better in each: client CPU per delivered event (log scale), events
lost with defaults (linear, %), ``emit()`` p99 (log scale). Each bar is labelled with
its value; a missing value is drawn as "n/a" with the reason in the row's note.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from xml.sax.saxutils import escape

__all__ = ["Row", "render"]

FONT = "font-family='-apple-system,BlinkMacSystemFont,Segoe UI,Helvetica,Arial,sans-serif'"
LABEL_W = 240
PANEL_W = 250
GAP = 50
ROW_H = 30
BAR_H = 18
TOP = 96
MARGIN = 16
HIGHLIGHT = "#1f77b4"
PEER = "#9aa5b1"
BASELINE = "#d0d4d9"
LOSS = "#d62728"


@dataclass(frozen=True)
class Row:
    label: str
    sublabel: str
    cpu_us: float | None
    loss_pct: float | None
    p99_us: float | None
    kind: str = "peer"  # "ours", "peer" or "baseline"


def _fmt_us(v: float) -> str:
    if v >= 1000:
        return f"{v / 1000:,.1f} ms"
    if v >= 100:
        return f"{v:,.0f} µs"
    if v >= 10:
        return f"{v:.1f} µs"
    return f"{v:.2f} µs"


def _log_domain(values: list[float]) -> tuple[float, float]:
    positive = [v for v in values if v > 0]
    if not positive:
        return 1.0, 10.0
    lo = 10 ** math.floor(math.log10(min(positive)))
    hi = 10 ** math.ceil(math.log10(max(positive)))
    if hi <= lo:
        hi = lo * 10
    return lo, hi


def _text(x: float, y: float, s: str, *, size: int = 12, anchor: str = "start", **kw: str) -> str:
    extra = "".join(f" {k.replace('_', '-')}='{v}'" for k, v in kw.items())
    return (
        f"<text x='{x:.1f}' y='{y:.1f}' font-size='{size}' text-anchor='{anchor}'{extra}>"
        f"{escape(s)}</text>"
    )


def _panel(
    x0: float,
    title: str,
    subtitle: str,
    values: list[float | None],
    colors: list[str],
    *,
    log: bool,
) -> list[str]:
    out = [
        _text(x0, TOP - 38, title, size=13, font_weight="600"),
        _text(x0, TOP - 22, subtitle, size=11, fill="#555"),
    ]
    n = len(values)
    bottom = TOP + n * ROW_H
    present = [v for v in values if v is not None]
    if log:
        lo, hi = _log_domain(present)
        span = math.log10(hi) - math.log10(lo)

        def scale(v: float) -> float:
            v = min(max(v, lo), hi)
            return (math.log10(v) - math.log10(lo)) / span * PANEL_W

        ticks = [lo * 10**k for k in range(round(span) + 1)]
        tick_labels = [_fmt_us(t).replace(".00", "").replace(".0 ", " ") for t in ticks]
    else:

        def scale(v: float) -> float:
            return min(max(v, 0.0), 100.0) / 100.0 * PANEL_W

        ticks = [0.0, 25.0, 50.0, 75.0, 100.0]
        tick_labels = [f"{t:.0f}%" for t in ticks]
    for t, lab in zip(ticks, tick_labels, strict=True):
        x = x0 + scale(t)
        out.append(
            f"<line x1='{x:.1f}' y1='{TOP - 6}' x2='{x:.1f}' y2='{bottom}'"
            " stroke='#e3e6ea' stroke-width='1'/>"
        )
        out.append(_text(x, bottom + 14, lab, size=10, anchor="middle", fill="#666"))
    for i, (v, color) in enumerate(zip(values, colors, strict=True)):
        y = TOP + i * ROW_H + (ROW_H - BAR_H) / 2
        if v is None:
            out.append(_text(x0 + 4, y + BAR_H - 5, "n/a", size=11, fill="#888"))
            continue
        w = max(1.5, scale(v)) if (v > 0 or log) else 0.0
        if w > 0:
            out.append(
                f"<rect x='{x0:.1f}' y='{y:.1f}' width='{w:.1f}' height='{BAR_H}'"
                f" fill='{color}' rx='2'/>"
            )
        label = _fmt_us(v) if log else (f"{v:.1f}%" if 0 < v < 99.95 else f"{v:.0f}%")
        inside = w > PANEL_W - 62
        tx = x0 + w - 4 if inside else x0 + w + 4
        out.append(
            _text(
                tx,
                y + BAR_H - 5,
                label,
                size=11,
                anchor="end" if inside else "start",
                fill="#fff" if inside and color in (HIGHLIGHT, LOSS) else "#222",
            )
        )
    return out


def render(rows: list[Row], *, title: str, subtitle: str, notes: list[str]) -> str:
    """The chart as SVG text."""
    n = len(rows)
    width = MARGIN * 2 + LABEL_W + 3 * PANEL_W + 2 * GAP + 60
    bottom = TOP + n * ROW_H
    height = bottom + 34 + 15 * len(notes) + MARGIN
    colors = {"ours": HIGHLIGHT, "peer": PEER, "baseline": BASELINE}
    out = [
        f"<svg xmlns='http://www.w3.org/2000/svg' width='{width}' height='{height}'"
        f" viewBox='0 0 {width} {height}' {FONT}>",
        f"<rect width='{width}' height='{height}' fill='#fff'/>",
        _text(MARGIN, 24, title, size=16, font_weight="700"),
        _text(MARGIN, 42, subtitle, size=11, fill="#555"),
    ]
    for i, row in enumerate(rows):
        y = TOP + i * ROW_H
        if i % 2 == 0:
            out.append(
                f"<rect x='{MARGIN / 2}' y='{y}' width='{width - MARGIN}' height='{ROW_H}'"
                " fill='#f7f8fa'/>"
            )
        weight = "700" if row.kind == "ours" else "400"
        out.append(_text(MARGIN, y + 14, row.label, size=12, font_weight=weight))
        out.append(_text(MARGIN, y + 26, row.sublabel, size=9, fill="#777"))
    x_cpu = MARGIN + LABEL_W
    x_loss = x_cpu + PANEL_W + GAP
    x_p99 = x_loss + PANEL_W + GAP
    bar_colors = [colors[r.kind] for r in rows]
    loss_colors = [HIGHLIGHT if r.kind == "ours" else LOSS for r in rows]
    out += _panel(
        x_cpu,
        "Client CPU per delivered event",
        "all threads, no-drop config; log scale",
        [r.cpu_us for r in rows],
        bar_colors,
        log=True,
    )
    out += _panel(
        x_loss,
        "Events lost with defaults",
        "burst, emitted as fast as possible",
        [r.loss_pct for r in rows],
        loss_colors,
        log=False,
    )
    out += _panel(
        x_p99,
        "emit() p99 on the caller",
        "defaults; log scale",
        [r.p99_us for r in rows],
        bar_colors,
        log=True,
    )
    for k, note in enumerate(notes):
        out.append(_text(MARGIN, bottom + 34 + 15 * k, note, size=10, fill="#555"))
    out.append("</svg>")
    return "\n".join(out) + "\n"
