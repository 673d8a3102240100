"""``telemetry-client flush``: drain the spool to the endpoint now (CONTRACT §7).

Runs the uploader's steps on the calling thread, so it shares every rule of the
background uploader (claims, retry matrix, kill switch, loss reports) and works while app
processes on the same spool are uploading too: a batch another process holds is simply
waited for. It drains what was pending when it started; batches sealed afterwards by
running apps are theirs to send.

Exit codes: 0 nothing pending is left (or telemetry is disabled); 1 something is left
(timeout, endpoint down, credentials refused, kill switch); 2 configuration error.
"""

from __future__ import annotations

import time
from typing import TextIO

from ._units import format_size
from .client import TelemetryClient
from .settings import TelemetrySettings
from .upload import Uploader

__all__ = ["run_flush"]

EXIT_OK, EXIT_PENDING, EXIT_CONFIG = 0, 1, 2
_BAR = 30


class _Progress:
    """A one-line progress bar on a TTY; a plain line per second otherwise."""

    def __init__(self, out: TextIO, total_events: int, *, tty: bool) -> None:
        self.out = out
        self.total = max(1, total_events)
        self.tty = tty
        self.start = time.monotonic()
        self._last = 0.0
        self._shown: tuple[int, int] | None = None

    def update(self, events: int, nbytes: int, *, final: bool = False) -> None:
        now = time.monotonic()
        if not final and now - self._last < (0.1 if self.tty else 1.0):
            return
        self._last = now
        if final and not self.tty and (events, nbytes) == self._shown:
            return  # a log line with these figures was just printed
        self._shown = (events, nbytes)
        elapsed = max(1e-6, now - self.start)
        rate = events / elapsed
        figures = f"{events}/{self.total} events  {format_size(nbytes)}  {rate:,.0f} ev/s"
        if self.tty:
            done = min(_BAR, round(_BAR * events / self.total))
            self.out.write(f"\r[{'#' * done}{'.' * (_BAR - done)}] {figures}\x1b[K")
            if final:
                self.out.write("\n")
        else:
            self.out.write(f"flush: {figures}\n")
        self.out.flush()


def run_flush(settings: TelemetrySettings, timeout: float, out: TextIO, err: TextIO) -> int:
    """Deliver every batch pending now, within ``timeout`` seconds; returns the exit code."""
    if not settings.active:
        out.write("telemetry is disabled (TELEMETRY_ENABLED/DO_NOT_TRACK): nothing to flush\n")
        return EXIT_OK
    if not settings.endpoint:
        err.write(
            "telemetry-client: configuration error: TELEMETRY_ENDPOINT is not set:"
            " there is nowhere to flush to\n"
        )
        return EXIT_CONFIG
    if not settings.resolved_spool_dir.is_dir():
        out.write("nothing pending (the spool does not exist yet)\n")
        return EXIT_OK
    client = TelemetryClient(settings)  # never started: lends its spool and uploader
    up = client._uploader
    assert up is not None
    try:
        client.spool.open()
        return _drain(client, up, timeout, out)
    finally:
        up.stop(0)
        client.close(0)


def _drain(client: TelemetryClient, up: Uploader, timeout: float, out: TextIO) -> int:
    spool = client.spool
    deadline = time.monotonic() + timeout
    up.set_deadline(deadline)
    up.report_drops()  # losses not yet reported go out with this flush
    cutoff = time.time_ns()
    todo = spool.pending_before(cutoff)
    if todo.batches == 0:
        out.write("nothing pending\n")
        return EXIT_OK
    progress = _Progress(out, todo.events, tty=out.isatty())
    sent_events = sent_bytes = 0
    why = "timed out"
    while True:
        left = spool.pending_before(cutoff)
        if left.batches == 0:
            progress.update(sent_events, sent_bytes, final=True)
            out.write(f"flushed {sent_events} events ({format_size(sent_bytes)})\n")
            return EXIT_OK
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        step = up.step()
        sent_events += step.events if step.outcome == "sent" else 0
        sent_bytes += step.bytes if step.outcome == "sent" else 0
        progress.update(sent_events, sent_bytes)
        if step.outcome in ("kill_switch", "auth_pause", "paused") and step.hard:
            if step.outcome == "paused" and step.wait_s < remaining:
                time.sleep(step.wait_s)  # Retry-After shorter than our deadline: honour it
                continue
            why = up.blocked_reason() or f"the collector asked to wait {step.wait_s:.0f} s"
            break
        if step.outcome == "retry" and step.hard and step.wait_s >= remaining:
            why = f"the collector asked to retry after {step.wait_s:.0f} s"
            break
        if step.outcome == "idle":
            # Pending batches are held by other processes right now: wait for their acks.
            time.sleep(min(0.05, max(0.0, remaining)))
        elif step.wait_s > 0:
            time.sleep(min(step.wait_s, max(0.0, remaining)))
        if step.outcome == "retry" and step.result is not None:
            why = f"the endpoint is failing ({step.result.describe()})"
    progress.update(sent_events, sent_bytes, final=True)
    left = spool.pending_before(cutoff)
    out.write(
        f"{left.events} events in {left.batches} batches ({format_size(left.bytes)}) are still"
        f" pending: {why}; they stay spooled and will be sent later\n"
    )
    return EXIT_PENDING
