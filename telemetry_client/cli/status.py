"""``telemetry-client status [--json]``: the spool and the endpoint as the app sees them.

Read-only: never creates the spool directory and never stores anything at the collector
(the reachability probe is an ``OPTIONS``). Always exits 0; what is wrong is in the output.
``status_dict`` is the one source of both renderings (and of the demo's status step).
"""

from __future__ import annotations

import argparse
import datetime as dt
import time
from typing import Any, TextIO

import orjson

from telemetry_client._internal.units import format_size
from telemetry_client.cli._common import EXIT_OK, masked_url, open_spool, probe_endpoint
from telemetry_client.settings import TelemetrySettings
from telemetry_client.spool import Spool
from telemetry_client.upload import Control, LastUpload, NativeCollector
from telemetry_client.upload.otlp import DESTINATION_NAME, Rejections

__all__ = ["command", "show_status", "status_dict"]


def status_dict(settings: TelemetrySettings) -> dict[str, Any]:
    """Everything ``status`` shows, as one JSON-able object.

    ``endpoint_reachable`` is True when the events endpoint itself answers (not merely
    something on its port); ``endpoint_check`` says what the probe found, in words.
    """
    spool = open_spool(settings)
    probe = probe_endpoint(settings)
    pending = spool.pending()
    dropped = spool.dropped()
    dead = spool.dead_letters()
    return {
        "enabled": settings.active,
        "endpoint": masked_url(settings.endpoint),
        "spool_dir": str(settings.resolved_spool_dir),
        "spool_exists": settings.resolved_spool_dir.is_dir(),
        "spool_bytes": spool.usage(),
        "spool_max_bytes": settings.spool_max_bytes,
        "pending_batches": pending.batches,
        "pending_events": pending.events,
        "pending_bytes": pending.bytes,
        "oldest_pending_age_s": pending.oldest_age_s,
        "dropped_events": dropped.events,
        "dropped_bytes": dropped.bytes,
        "dropped_by_reason": dropped.by_reason,
        "dead_letter_batches": len(dead),
        "dead_letter_events": sum(n.n_events for n in dead),
        "quarantined_batches": len(spool.quarantined()),
        "disabled_until": _disabled_until(settings),
        "last_upload": LastUpload(settings.resolved_spool_dir).read(),
        "endpoint_reachable": None if probe is None else probe[0],
        "endpoint_check": None if probe is None else probe[1],
        "otlp_endpoint": masked_url(settings.otlp_endpoint),
        "pending_by_destination": _pending_by_destination(settings, spool),
        "otlp_rejected": Rejections(settings.resolved_spool_dir).read(),
    }


def _pending_by_destination(settings: TelemetrySettings, spool: Spool) -> dict[str, Any]:
    """Per configured destination: what it has not acknowledged yet (docs/otlp.md)."""
    names = [NativeCollector.name] if settings.endpoint else []
    if settings.otlp_endpoint:
        names.append(DESTINATION_NAME)
    return {
        name: {
            "batches": p.batches,
            "events": p.events,
            "bytes": p.bytes,
            "oldest_pending_age_s": p.oldest_age_s,
        }
        for name, p in spool.pending_by_destination(names).items()
    }


def command(settings: TelemetrySettings, args: argparse.Namespace, out: TextIO) -> int:
    """``status`` as parsed by ``cli.main``."""
    return show_status(settings, out, as_json=args.json)


def show_status(settings: TelemetrySettings, out: TextIO, *, as_json: bool = False) -> int:
    """Write the status (one JSON object, or one line per fact); returns the exit code."""
    info = status_dict(settings)
    if as_json:
        out.write(orjson.dumps(info).decode() + "\n")
        return EXIT_OK
    out.write("\n".join(_lines(info)) + "\n")
    return EXIT_OK


def _lines(info: dict[str, Any]) -> list[str]:
    age = info["oldest_pending_age_s"]
    lines = [
        f"enabled:          {'yes' if info['enabled'] else 'no (TELEMETRY_ENABLED/DO_NOT_TRACK)'}",
        f"endpoint:         {info['endpoint'] or '(none: spool-only mode)'}",
        f"spool:            {info['spool_dir']}"
        + ("" if info["spool_exists"] else " (not created yet)"),
        f"spool size:       {format_size(info['spool_bytes'])}"
        f" of {format_size(info['spool_max_bytes'])}",
        f"pending:          {info['pending_events']} events in {info['pending_batches']} batches "
        f"({format_size(info['pending_bytes'])})"
        + (f", oldest {age:.0f}s old" if age is not None else ""),
        f"dropped:          {info['dropped_events']} events"
        + (
            " ("
            + ", ".join(f"{k}: {v['events']}" for k, v in info["dropped_by_reason"].items())
            + ")"
            if info["dropped_by_reason"]
            else ""
        ),
        f"dead letters:     {info['dead_letter_batches']} batches"
        f" ({info['dead_letter_events']} events)",
        f"quarantined:      {info['quarantined_batches']} batches",
        "kill switch:      "
        + (f"ON until {info['disabled_until']}" if info["disabled_until"] else "off"),
        f"last upload:      {_last_upload_text(info['last_upload'])}",
    ]
    if info["otlp_endpoint"]:
        lines.insert(2, f"otlp endpoint:    {info['otlp_endpoint']}")
    by_dest = info["pending_by_destination"]
    if len(by_dest) > 1 or info["otlp_endpoint"]:
        for name, p in by_dest.items():
            lines.append(f"pending ({name}):" + " " * max(1, 7 - len(name)) + _pending_text(p))
    rejected = info["otlp_rejected"]
    if rejected["spans"] or rejected["log_records"] or rejected["message"]:
        lines.append(
            f"otlp rejected:    {rejected['spans']} spans, {rejected['log_records']} log records"
            + (f" (last: {rejected['message']})" if rejected["message"] else "")
        )
    if info["endpoint_reachable"] is not None:
        check = info["endpoint_check"]
        answer = f"yes ({check})" if info["endpoint_reachable"] else f"no: {check}"
        lines.insert(2, f"reachable:        {answer}")
    return lines


def _pending_text(p: dict[str, Any]) -> str:
    age = p["oldest_pending_age_s"]
    return f"{p['events']} events in {p['batches']} batches" + (
        f", oldest {age:.0f}s old" if age is not None else ""
    )


def _disabled_until(settings: TelemetrySettings) -> str | None:
    """When the collector's kill switch ends (RFC 3339), or None when it is off."""
    until = Control(settings.resolved_spool_dir).disabled_until()
    if until <= time.time():
        return None
    return dt.datetime.fromtimestamp(until, dt.timezone.utc).isoformat(timespec="seconds")


def _last_upload_text(last: dict[str, Any] | None) -> str:
    if not last:
        return "never (from this spool)"
    at = dt.datetime.fromtimestamp(float(last.get("at", 0)), dt.timezone.utc)
    return f"{last.get('outcome')} ({last.get('detail')}) at {at.isoformat(timespec='seconds')}"
