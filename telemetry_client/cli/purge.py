"""``telemetry-client purge (--older-than DAYS | --dead-letter | --all) [--yes]``.

Deletes spooled data. Asks first on a terminal; without one it refuses unless ``--yes``
(exit 1), so a script never deletes by accident. A missing spool is not created.
"""

from __future__ import annotations

import argparse
import sys
from typing import TextIO

from telemetry_client.cli._common import EXIT_OK, EXIT_PENDING, open_spool
from telemetry_client.settings import TelemetrySettings

__all__ = ["command"]


def command(settings: TelemetrySettings, args: argparse.Namespace, out: TextIO) -> int:
    """``purge`` as parsed by ``cli.main``; returns the exit code."""
    what = (
        "ALL spooled data"
        if args.all
        else "dead-lettered batches"
        if args.dead_letter
        else f"data older than {args.older_than} days"
    )
    if not args.yes:
        if not sys.stdin.isatty():
            out.write(f"refusing to delete {what} without --yes\n")
            return EXIT_PENDING
        answer = input(f"Delete {what} from {settings.resolved_spool_dir}? [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            out.write("nothing deleted\n")
            return EXIT_OK
    if not settings.resolved_spool_dir.is_dir():
        out.write("nothing to delete (spool does not exist)\n")
        return EXIT_OK
    spool = open_spool(settings)
    removed = spool.purge(
        older_than_days=args.older_than, dead_letter=args.dead_letter, everything=args.all
    )
    out.write(f"deleted {removed} events ({what})\n")
    return EXIT_OK
