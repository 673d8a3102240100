"""``telemetry-client stats [--window 60m] [--format text|json|tmux]``: LLM usage.

A sliding-window summary of the LLM calls of every process on this spool (the shared
usage store). Read-only and takes no lock: an unreadable store shows zeros with one line
on stderr (the next LLM call starts it over) and still exits 0.
"""

from __future__ import annotations

import argparse
import sys
from typing import TextIO

from telemetry_client import usage
from telemetry_client.cli._common import EXIT_OK
from telemetry_client.settings import TelemetrySettings

__all__ = ["command", "window_arg"]


def command(settings: TelemetrySettings, args: argparse.Namespace, out: TextIO) -> int:
    """``stats`` as parsed by ``cli.main``; returns the exit code."""
    store = usage.UsageStore(usage.usage_dir(settings.resolved_spool_dir))
    snapshot = store.read()
    if snapshot.problem is not None:
        sys.stderr.write(
            f"telemetry-client: usage stats {store.path} unreadable ({snapshot.problem}); "
            "showing zeros, the next LLM call starts it over\n"
        )
    summary = usage.summarize(snapshot, args.window, store=str(store.path))
    render = {"text": usage.format_text, "json": usage.format_json, "tmux": usage.format_tmux}
    out.write(render[args.format](summary) + "\n")
    return EXIT_OK


def window_arg(text: str) -> float:
    """``--window``'s argparse type: a duration in seconds, or argparse's usage error."""
    try:
        return usage.parse_window(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
