"""``telemetry-client proxy --upstream URL ...``: run the recording LLM proxy.

Flags override the ``TELEMETRY_PROXY_*`` variables (README, "proxy"); the proxy's events
go to the spool of the ordinary ``TELEMETRY_*`` settings. Runs until SIGINT/SIGTERM and
exits 0 after a clean stop, 2 on a configuration error (one line naming the variable or
flag; keys are never shown).
"""

from __future__ import annotations

import argparse
import sys
from typing import TextIO

from telemetry_client.cli._common import EXIT_CONFIG
from telemetry_client.errors import ConfigError
from telemetry_client.proxy import ProxyConfig, serve
from telemetry_client.settings import TelemetrySettings

__all__ = ["add_arguments", "command"]

_FLAGS = {
    "upstream": "--upstream",
    "host": "--host",
    "port": "--port",
    "api_keys": "--api-key",
    "rate_limit": "--rate-limit",
    "timeout": "--timeout",
    "max_body_bytes": "--max-body-bytes",
    "drain_timeout": "--drain-timeout",
    "provider": "--provider",
    "capture_content": "--capture-content",
}


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The ``proxy`` subcommand's flags (values are checked by ``ProxyConfig.load``)."""
    p.add_argument("--upstream", metavar="URL", help="e.g. https://api.openai.com/v1")
    p.add_argument("--host", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", help="port to bind (default 8788; 0 picks a free one)")
    p.add_argument(
        "--api-key",
        dest="api_keys",
        action="append",
        metavar="KEY",
        help="a key clients must present (repeatable; default: no auth)",
    )
    p.add_argument("--rate-limit", metavar="N", help="requests per minute per client (0: off)")
    p.add_argument("--timeout", metavar="S", help="upstream connect/read timeout (600)")
    p.add_argument("--max-body-bytes", metavar="N", help="larger request bodies get 413")
    p.add_argument(
        "--drain-timeout", metavar="S", help="on SIGTERM, let requests finish this long (30)"
    )
    p.add_argument("--provider", help="provider name recorded (default: from the upstream host)")
    p.add_argument(
        "--capture-content",
        action="store_const",
        const=True,
        default=None,
        help="record prompts and answers (redacted)",
    )


def command(settings: TelemetrySettings, args: argparse.Namespace, out: TextIO) -> int:
    """``proxy`` as parsed by ``cli.main``; returns the exit code."""
    flags = {name: getattr(args, name, None) for name in _FLAGS}
    try:
        config = ProxyConfig.load({**flags, "flag_names": _FLAGS})
    except ConfigError as exc:
        sys.stderr.write(f"telemetry-client proxy: configuration error: {exc}\n")
        return EXIT_CONFIG
    try:
        return serve(config, settings, out=out)
    except OSError as exc:  # the port is taken, the address is not ours...
        sys.stderr.write(
            f"telemetry-client proxy: cannot listen on {config.host}:{config.port} ({exc})\n"
        )
        return EXIT_CONFIG
