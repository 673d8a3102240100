"""``telemetry-client tail [-n N] [--type T] [--json] [--collector]``: the newest events.

From the spool (decompressed, read-only) by default; the spool holds only what is not
uploaded yet, so a short tail says so on stderr (``--json`` output stays clean).
``--collector`` reads the newest events stored at the collector through its query API
(docs/protocol.md, "Collector API") instead. Either way the events print oldest first.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, TextIO

import orjson

from telemetry_client.cli._common import (
    EXIT_CONFIG,
    EXIT_OK,
    EXIT_PENDING,
    cannot_connect,
    make_sender,
    open_spool,
)
from telemetry_client.settings import TelemetrySettings
from telemetry_client.upload import Sender
from telemetry_client.upload.policy import endpoint_problem

__all__ = ["command"]

_QUERY_PAGE = 10_000  # the reference collector's largest ``limit``


def command(settings: TelemetrySettings, args: argparse.Namespace, out: TextIO) -> int:
    """``tail`` as parsed by ``cli.main``; returns the exit code."""
    if args.collector:
        return _tail_collector(settings, args, out)
    spool = open_spool(settings)
    picked: list[dict[str, Any]] = []
    for _name, raw in spool.iter_batches_newest_first():
        for line in reversed(raw.splitlines()):
            try:
                event = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue
            if args.type and event.get("type") != args.type:
                continue
            picked.append(event)
            if len(picked) >= args.n:
                break
        if len(picked) >= args.n:
            break
    _print_events(picked, args, out)
    if len(picked) < args.n:
        # The spool holds only what is not uploaded yet: say so, or an empty tail after a
        # successful upload looks like lost data. On stderr: --json output stays clean.
        pending = spool.pending()
        sys.stderr.write(
            f"tail: the spool holds only events not uploaded yet ({pending.events} pending);"
            " uploaded events are at the collector: telemetry-client tail --collector\n"
        )
    return EXIT_OK


def _print_events(events: list[dict[str, Any]], args: argparse.Namespace, out: TextIO) -> None:
    events.sort(key=lambda e: (str(e.get("ts")), e.get("seq", 0)))
    for event in events:
        if args.json:
            out.write(orjson.dumps(event).decode() + "\n")
        else:
            out.write(_human_line(event) + "\n")


def _human_line(event: dict[str, Any]) -> str:
    data = orjson.dumps(event.get("data", {})).decode()
    if len(data) > 160:
        data = data[:157] + "..."
    sid = str(event.get("session_id", ""))[:12]
    return f"{event.get('ts', '?')}  {event.get('type', '?'):<18} {sid:<12}  {data}"


def _tail_collector(settings: TelemetrySettings, args: argparse.Namespace, out: TextIO) -> int:
    """The newest ``-n`` events stored at the collector (its query API, docs/protocol.md)."""
    if not settings.endpoint:
        sys.stderr.write(
            "telemetry-client: configuration error: TELEMETRY_ENDPOINT is not set:"
            " tail --collector reads the collector's events endpoint\n"
        )
        return EXIT_CONFIG
    sender = make_sender(settings, settings.upload_timeout)
    base: dict[str, str | int] = {"type": args.type} if args.type else {}
    try:
        first = _query(sender, {**base, "limit": 0})
        if isinstance(first, str):
            sys.stderr.write(f"telemetry-client: tail --collector: {first}\n")
            return EXIT_PENDING
        total = int(first.get("total", 0))
        offset = max(0, total - args.n)
        picked: list[dict[str, Any]] = []
        while offset + len(picked) < total:
            limit = min(_QUERY_PAGE, total - offset - len(picked))
            page = _query(sender, {**base, "limit": limit, "offset": offset + len(picked)})
            if isinstance(page, str):
                sys.stderr.write(f"telemetry-client: tail --collector: {page}\n")
                return EXIT_PENDING
            events = [e for e in page.get("events", []) if isinstance(e, dict)]
            if not events:
                break
            picked.extend(events)
    finally:
        sender.close()
    _print_events(picked[-args.n :], args, out)
    return EXIT_OK


def _query(sender: Sender, params: dict[str, str | int]) -> dict[str, Any] | str:
    """One page of the collector's query API, or what went wrong in words."""
    result, body = sender.query_events(params)
    status, url = result.status, result.url
    if status is None:
        return cannot_connect(result)
    if status in (401, 403):
        return f"the collector refused our credentials (HTTP {status}): check TELEMETRY_TOKEN"
    if status == 404:
        return endpoint_problem(status, url)
    if status == 405:
        return f"HTTP 405 at {url}: this collector has no query API (GET on the events URL)"
    if not result.ok:
        return f"HTTP {status} at {url}"
    try:
        page = orjson.loads(body)
    except orjson.JSONDecodeError:
        page = None
    if not isinstance(page, dict):
        return f"unexpected answer from {url} (not a JSON object)"
    return page
