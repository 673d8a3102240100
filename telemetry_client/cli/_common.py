"""What the ``telemetry-client`` commands share: exit codes, the spool, the endpoint.

Commands open the spool and talk to the endpoint exactly as the app would (same settings,
same ``Sender``), so what they report is what the app sees. Nothing here writes to the
spool or stores anything at the collector.
"""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

from telemetry_client._internal.urls import host_port
from telemetry_client.settings import TelemetrySettings
from telemetry_client.spool import Spool
from telemetry_client.upload import Sender, SendResult
from telemetry_client.upload.policy import endpoint_problem

__all__ = [
    "EXIT_CONFIG",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_PENDING",
    "cannot_connect",
    "make_sender",
    "masked_url",
    "open_spool",
    "probe_endpoint",
]

# Exit codes (README, "CLI"): 0 done, 1 something left to do, 2 configuration error; 130 Ctrl-C.
EXIT_OK, EXIT_PENDING, EXIT_CONFIG, EXIT_INTERRUPTED = 0, 1, 2, 130
PROBE_TIMEOUT_S = 2.0


def open_spool(settings: TelemetrySettings) -> Spool:
    """The spool the app with these settings uses (not created until something writes)."""
    return Spool(
        settings.resolved_spool_dir,
        max_bytes=settings.spool_max_bytes,
        retention_days=settings.retention_days,
        fsync=settings.fsync == "batch",
    )


def make_sender(settings: TelemetrySettings, timeout: float) -> Sender:
    """A ``Sender`` for the events endpoint, with the app's token; the caller closes it."""
    assert settings.endpoint is not None
    token = settings.token.get_secret_value() if settings.token else None
    return Sender(
        endpoint=settings.endpoint, attachments_endpoint=None, token=token, timeout=timeout
    )


def masked_url(url: str | None) -> str | None:
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


def cannot_connect(result: SendResult) -> str:
    """Words for a request that never got an HTTP answer."""
    return f"cannot connect to {host_port(result.url)} ({result.cause or result.error})"


def probe_endpoint(settings: TelemetrySettings) -> tuple[bool, str] | None:
    """Probe the events endpoint itself (``OPTIONS``, stores nothing): (reachable, words).

    The events URL, not ``.../health``: a collector that is up behind a wrong path must
    read as unreachable. None without an endpoint or while telemetry is disabled (no
    sockets then).
    """
    if not settings.endpoint or not settings.active:
        return None
    sender = make_sender(settings, PROBE_TIMEOUT_S)
    try:
        return _judge_probe(sender.probe())
    finally:
        sender.close()


def _judge_probe(result: SendResult) -> tuple[bool, str]:
    """What the probe's answer means: (reachable, words naming the variable to check)."""
    status, url = result.status, result.url
    if status is None:
        return False, cannot_connect(result)
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
