"""Cross-process LLM usage: the shared store in the spool (``store``, its content and bounds
in ``series``, its file format in ``stats_file``), its summaries over a window (``summary``)
and text/json/tmux formats (``formats``) for ``telemetry-client stats``, and the recorder
that feeds it from ``emit()`` (``recorder``)."""

from telemetry_client.usage.formats import format_json, format_text, format_tmux
from telemetry_client.usage.recorder import UsageRecorder
from telemetry_client.usage.series import (
    COALESCE_TO,
    MAX_CALLS,
    MAX_MINUTES,
    MAX_SERIES,
    RETENTION_S,
    Series,
)
from telemetry_client.usage.store import (
    MergeResult,
    UsageRecord,
    UsageSnapshot,
    UsageStore,
    usage_dir,
)
from telemetry_client.usage.summary import (
    MAX_WINDOW_S,
    MIN_WINDOW_S,
    ModelUsage,
    UsageSummary,
    UsageTotals,
    format_window,
    parse_window,
    summarize,
)

__all__ = [
    "COALESCE_TO",
    "MAX_CALLS",
    "MAX_MINUTES",
    "MAX_SERIES",
    "MAX_WINDOW_S",
    "MIN_WINDOW_S",
    "RETENTION_S",
    "MergeResult",
    "ModelUsage",
    "Series",
    "UsageRecord",
    "UsageRecorder",
    "UsageSnapshot",
    "UsageStore",
    "UsageSummary",
    "UsageTotals",
    "format_json",
    "format_text",
    "format_tmux",
    "format_window",
    "parse_window",
    "summarize",
    "usage_dir",
]
