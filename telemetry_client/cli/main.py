"""``telemetry-client``: inspect and manage the local spool (README, "CLI").

This module is the parser and the dispatch; each command lives in its own module
(``status``, ``flush``, ``tail``, ``purge``, ``stats``, ``demo``, ``proxy``) as
``command(settings, args, out) -> exit code``. Commands read the same ``TELEMETRY_*``
configuration as the app. Read-only commands (``status``, ``tail``) never create the spool
directory. Every command exits 2 with a one-line message naming the variable when the
configuration is invalid, and 130 with one line when interrupted (Ctrl-C).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import TextIO

from telemetry_client.cli import demo, flush, proxy, purge, stats, status, tail
from telemetry_client.cli._common import EXIT_CONFIG, EXIT_INTERRUPTED
from telemetry_client.cli.status import status_dict
from telemetry_client.errors import ConfigError
from telemetry_client.settings import TelemetrySettings

__all__ = ["main", "status_dict"]

Command = Callable[[TelemetrySettings, argparse.Namespace, TextIO], int]

_COMMANDS: dict[str, Command] = {
    "flush": flush.command,
    "status": status.command,
    "tail": tail.command,
    "purge": purge.command,
    "stats": stats.command,
    "demo": demo.command,
    "proxy": proxy.command,
}


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    """Entry point of the ``telemetry-client`` console script; returns the exit code."""
    stream = out or sys.stdout
    args = _parser().parse_args(argv)
    try:
        settings = TelemetrySettings()
    except ConfigError as exc:
        sys.stderr.write(f"telemetry-client: configuration error: {exc}\n")
        return EXIT_CONFIG
    try:
        return _COMMANDS[args.command](settings, args, stream)
    except KeyboardInterrupt:  # flush reports what is pending itself; anything else: one line
        sys.stderr.write(f"telemetry-client {args.command}: interrupted\n")
        return EXIT_INTERRUPTED


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="telemetry-client",
        description="Inspect and manage the local telemetry spool (TELEMETRY_* variables).",
    )
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser(
        "status", help="enabled?, endpoint, spool usage, pending, dropped, dead letters"
    )
    s.add_argument("--json", action="store_true", help="one JSON object")
    f = sub.add_parser("flush", help="deliver the pending spool to the endpoint now")
    f.add_argument(
        "--timeout", type=_positive_float, default=60.0, help="give up after S seconds (60)"
    )
    f.add_argument(
        "--wait",
        action="store_true",
        help="keep trying until --timeout while the collector refuses connections"
        " (default: give up after a few refused attempts)",
    )
    t = sub.add_parser("tail", help="the newest spooled events, decompressed")
    t.add_argument("-n", type=_positive_int, default=10, help="how many events (default 10)")
    t.add_argument("--type", help="only events of this type")
    t.add_argument("--json", action="store_true", help="one event envelope per line")
    t.add_argument(
        "--collector",
        action="store_true",
        help="the newest events stored at the collector (its query API) instead of the spool",
    )
    u = sub.add_parser("purge", help="delete spooled data")
    g = u.add_mutually_exclusive_group(required=True)
    g.add_argument("--older-than", type=float, metavar="DAYS", help="data older than DAYS days")
    g.add_argument("--dead-letter", action="store_true", help="dead-lettered batches")
    g.add_argument("--all", action="store_true", help="everything")
    u.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    st = sub.add_parser(
        "stats", help="LLM usage over a sliding window, across every process on this spool"
    )
    st.add_argument(
        "--window",
        type=stats.window_arg,
        default=3600.0,
        metavar="DURATION",
        help="how far back to look, 1m to 24h, e.g. 15m, 90s, 6h (a bare number is minutes;"
        " default 60m)",
    )
    st.add_argument(
        "--format",
        choices=("text", "json", "tmux"),
        default="text",
        help="text (a table), json (one object) or tmux (one compact line)",
    )
    d = sub.add_parser("demo", help="run a simulated agent session and show what was recorded")
    d.add_argument("--spool-dir", help="spool directory (default: a fresh temporary one)")
    d.add_argument(
        "--keep",
        action="store_true",
        help="keep the collector (and its viewer) running until Ctrl-C, and the temporary files",
    )
    proxy.add_arguments(
        sub.add_parser(
            "proxy", help="run the recording OpenAI-compatible LLM proxy (SIGTERM stops)"
        )
    )
    return p


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError("must be > 0")
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be >= 1")
    return value
