"""``telemetry-client``: inspect and manage the local spool (CONTRACT §7).

Commands read the same ``TELEMETRY_*`` configuration as the app. Read-only commands
(``status``, ``tail``) never create the spool directory. Every command exits 2 with a
one-line message naming the variable when the configuration is invalid, and 130 with one
line when interrupted (Ctrl-C).
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import time
from collections.abc import Sequence
from typing import Any, TextIO
from urllib.parse import urlsplit, urlunsplit

import orjson

from telemetry_client._internal.units import format_size
from telemetry_client._internal.urls import host_port
from telemetry_client.errors import ConfigError
from telemetry_client.settings import TelemetrySettings
from telemetry_client.spool import Spool
from telemetry_client.upload import Control, LastUpload, Sender, SendResult
from telemetry_client.upload.policy import endpoint_problem

__all__ = ["main"]

EXIT_OK, EXIT_PENDING, EXIT_CONFIG, EXIT_INTERRUPTED = 0, 1, 2, 130
PROBE_TIMEOUT_S = 2.0
_QUERY_PAGE = 10_000  # the reference collector's largest ``limit``


def _spool(settings: TelemetrySettings) -> Spool:
    return Spool(
        settings.resolved_spool_dir,
        max_bytes=settings.spool_max_bytes,
        retention_days=settings.retention_days,
        fsync=settings.fsync == "batch",
    )


def status_dict(settings: TelemetrySettings) -> dict[str, Any]:
    """Everything ``status`` shows, as one JSON-able object.

    ``endpoint_reachable`` is True when the events endpoint itself answers (not merely
    something on its port); ``endpoint_check`` says what the probe found, in words.
    """
    spool = _spool(settings)
    probe = _probe(settings)
    pending = spool.pending()
    dropped = spool.dropped()
    dead = spool.dead_letters()
    return {
        "enabled": settings.active,
        "endpoint": _masked_url(settings.endpoint),
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
    }


def _masked_url(url: str | None) -> str | None:
    """``url`` with its password and query values shown as ``***`` (status output)."""
    if not url:
        return url
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return "<invalid URL>"
    netloc = parts.netloc
    if password is not None:
        userinfo, _, hostport = netloc.rpartition("@")
        netloc = f"{userinfo.partition(':')[0]}:***@{hostport}"
    query = "&".join(
        f"{name}=***" if sep else name
        for name, sep, _value in (item.partition("=") for item in parts.query.split("&") if item)
    )
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))


def _disabled_until(settings: TelemetrySettings) -> str | None:
    """When the collector's kill switch ends (RFC 3339), or None when it is off."""
    until = Control(settings.resolved_spool_dir).disabled_until()
    if until <= time.time():
        return None
    return dt.datetime.fromtimestamp(until, dt.timezone.utc).isoformat(timespec="seconds")


def _sender(settings: TelemetrySettings, timeout: float) -> Sender:
    assert settings.endpoint is not None
    token = settings.token.get_secret_value() if settings.token else None
    return Sender(
        endpoint=settings.endpoint, attachments_endpoint=None, token=token, timeout=timeout
    )


def _probe(settings: TelemetrySettings) -> tuple[bool, str] | None:
    """Probe the events endpoint itself (``OPTIONS``, stores nothing): (reachable, words).

    None without an endpoint or while telemetry is disabled (no sockets then).
    """
    if not settings.endpoint or not settings.active:
        return None
    sender = _sender(settings, PROBE_TIMEOUT_S)
    try:
        return _judge_probe(sender.probe())
    finally:
        sender.close()


def _judge_probe(result: SendResult) -> tuple[bool, str]:
    status, url = result.status, result.url
    if status is None:
        return False, f"cannot connect to {host_port(url)} ({result.cause or result.error})"
    allow = {m.strip().upper() for m in (result.allow or "").split(",") if m.strip()}
    if status == 404 or (status == 405 and allow and "POST" not in allow):
        return False, endpoint_problem(status, url)
    if status in (401, 403):
        return True, (
            f"the events endpoint answers, but refused our credentials (HTTP {status}):"
            " check TELEMETRY_TOKEN"
        )
    if 300 <= status < 400:
        return False, (
            f"HTTP {status} at {url} redirects elsewhere, and uploads do not follow"
            " redirects: check TELEMETRY_ENDPOINT"
        )
    if status >= 500:
        return False, f"HTTP {status} at {url}: the collector is failing"
    return True, "events endpoint answers"


def _cmd_status(settings: TelemetrySettings, args: argparse.Namespace, out: TextIO) -> int:
    info = status_dict(settings)
    if args.json:
        out.write(orjson.dumps(info).decode() + "\n")
        return EXIT_OK
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
    if info["endpoint_reachable"] is not None:
        check = info["endpoint_check"]
        answer = f"yes ({check})" if info["endpoint_reachable"] else f"no: {check}"
        lines.insert(2, f"reachable:        {answer}")
    out.write("\n".join(lines) + "\n")
    return EXIT_OK


def _last_upload_text(last: dict[str, Any] | None) -> str:
    if not last:
        return "never (from this spool)"
    at = dt.datetime.fromtimestamp(float(last.get("at", 0)), dt.timezone.utc)
    return f"{last.get('outcome')} ({last.get('detail')}) at {at.isoformat(timespec='seconds')}"


def _cmd_flush(settings: TelemetrySettings, args: argparse.Namespace, out: TextIO) -> int:
    from telemetry_client.cli.flush import run_flush

    return run_flush(settings, args.timeout, out, sys.stderr, wait=args.wait)


def _cmd_tail(settings: TelemetrySettings, args: argparse.Namespace, out: TextIO) -> int:
    if args.collector:
        return _tail_collector(settings, args, out)
    spool = _spool(settings)
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


def _tail_collector(settings: TelemetrySettings, args: argparse.Namespace, out: TextIO) -> int:
    """The newest ``-n`` events stored at the collector (its query API, CONTRACT §8)."""
    if not settings.endpoint:
        sys.stderr.write(
            "telemetry-client: configuration error: TELEMETRY_ENDPOINT is not set:"
            " tail --collector reads the collector's events endpoint\n"
        )
        return EXIT_CONFIG
    sender = _sender(settings, settings.upload_timeout)
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
        return f"cannot connect to {host_port(url)} ({result.cause or result.error})"
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


def _human_line(event: dict[str, Any]) -> str:
    data = orjson.dumps(event.get("data", {})).decode()
    if len(data) > 160:
        data = data[:157] + "..."
    sid = str(event.get("session_id", ""))[:12]
    return f"{event.get('ts', '?')}  {event.get('type', '?'):<18} {sid:<12}  {data}"


def _cmd_purge(settings: TelemetrySettings, args: argparse.Namespace, out: TextIO) -> int:
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
    spool = _spool(settings)
    removed = spool.purge(
        older_than_days=args.older_than, dead_letter=args.dead_letter, everything=args.all
    )
    out.write(f"deleted {removed} events ({what})\n")
    return EXIT_OK


def _cmd_stats(settings: TelemetrySettings, args: argparse.Namespace, out: TextIO) -> int:
    """Sliding-window LLM usage of every process on this spool (read-only, takes no lock)."""
    from telemetry_client import usage

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


def _window(text: str) -> float:
    from telemetry_client.usage import parse_window

    try:
        return parse_window(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _cmd_demo(settings: TelemetrySettings, args: argparse.Namespace, out: TextIO) -> int:
    from telemetry_client.cli.demo import run_demo

    return run_demo(out, spool_dir=args.spool_dir, keep=args.keep)


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
        type=_window,
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
    d.add_argument("--keep", action="store_true", help="keep the temporary spool afterwards")
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


_COMMANDS = {
    "flush": _cmd_flush,
    "status": _cmd_status,
    "tail": _cmd_tail,
    "purge": _cmd_purge,
    "stats": _cmd_stats,
    "demo": _cmd_demo,
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
