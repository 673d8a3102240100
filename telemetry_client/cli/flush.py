"""``telemetry-client flush``: drain the spool to the endpoint now (README, "CLI").

Runs the uploader's steps on the calling thread, so it shares every rule of the
background uploader (claims, retry matrix, kill switch, loss reports) and works while app
processes on the same spool are uploading too: a batch another process holds is simply
waited for. It drains what was pending when it started; batches sealed afterwards by
running apps are theirs to send.

Exit codes: 0 nothing pending is left (or telemetry is disabled); 1 something is left
(timeout, endpoint down, credentials refused, wrong endpoint path, kill switch); 2
configuration error; 130 interrupted (Ctrl-C), with one line saying what is still pending.

A collector that refuses connections (nothing listens on the port) fails the flush after
a few attempts instead of waiting out ``--timeout``; ``--wait`` keeps trying until then
(a collector that is starting up).
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import TextIO

from telemetry_client._internal.units import format_size
from telemetry_client._internal.urls import host_port
from telemetry_client._pipeline import Pipeline, build
from telemetry_client.cli._common import EXIT_CONFIG, EXIT_INTERRUPTED, EXIT_OK, EXIT_PENDING
from telemetry_client.settings import TelemetrySettings
from telemetry_client.upload import SendResult, Uploader

__all__ = ["command", "run_flush"]

_BAR = 30
# Consecutive refused connections before a flush without --wait gives up: enough to ride
# out one restart race, few enough to answer in about a second (backoff 0.5 s, 1 s).
REFUSED_ATTEMPTS = 3


class _Progress:
    """A one-line progress bar on a TTY; a plain line per second otherwise."""

    def __init__(self, out: TextIO, total_events: int, *, tty: bool) -> None:
        self.out = out
        self.total = max(1, total_events)
        self.tty = tty
        self.start = time.monotonic()
        self._last = 0.0
        self._shown: tuple[int, int] | None = None
        self._open_line = False  # a TTY bar without its newline yet

    def end_line(self) -> None:
        """Finish a TTY bar's line so that a message can follow (Ctrl-C)."""
        if self._open_line:
            self.out.write("\n")
            self.out.flush()
            self._open_line = False

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
            self._open_line = not final
            if final:
                self.out.write("\n")
        else:
            self.out.write(f"flush: {figures}\n")
        self.out.flush()


def command(settings: TelemetrySettings, args: argparse.Namespace, out: TextIO) -> int:
    """``flush`` as parsed by ``cli.main``; configuration errors and Ctrl-C go to stderr."""
    return run_flush(settings, args.timeout, out, sys.stderr, wait=args.wait)


def run_flush(
    settings: TelemetrySettings,
    timeout: float,
    out: TextIO,
    err: TextIO,
    *,
    wait: bool = False,
) -> int:
    """Deliver every batch pending now, within ``timeout`` seconds; returns the exit code.

    ``wait``: keep trying a collector that refuses connections until ``timeout``.
    """
    if not settings.active:
        out.write("telemetry is disabled (TELEMETRY_ENABLED/DO_NOT_TRACK): nothing to flush\n")
        return EXIT_OK
    if not settings.endpoint and not settings.otlp_endpoint:
        err.write(
            "telemetry-client: configuration error: neither TELEMETRY_ENDPOINT nor"
            " TELEMETRY_OTLP_ENDPOINT is set: there is nowhere to flush to\n"
        )
        return EXIT_CONFIG
    if not settings.resolved_spool_dir.is_dir():
        out.write("nothing pending (the spool does not exist yet)\n")
        return EXIT_OK
    pipeline = build(settings)  # never started: flush drives its uploader on this thread
    up = pipeline.uploader
    assert up is not None
    drain = _Drain(pipeline, up, out, err, wait=wait)
    try:
        pipeline.spool.open()
        return drain.run(timeout)
    except KeyboardInterrupt:
        return drain.interrupted()
    finally:
        up.stop(0)


class _Drain:
    """One flush: the stepping loop, and what an interruption reports."""

    def __init__(
        self, pipeline: Pipeline, up: Uploader, out: TextIO, err: TextIO, *, wait: bool
    ) -> None:
        self.pipeline = pipeline
        self.up = up
        self.out = out
        self.err = err
        self.wait = wait
        self.cutoff: int | None = None  # batches sealed before this are ours to deliver
        self.progress: _Progress | None = None
        self.sent_events = 0
        self.sent_bytes = 0

    def interrupted(self) -> int:
        """Ctrl-C: one line on stderr with what is still pending (it stays spooled)."""
        self._end_progress_line()
        spool = self.pipeline.spool
        left = spool.pending() if self.cutoff is None else spool.pending_before(self.cutoff)
        self.err.write(
            f"telemetry-client flush: interrupted; {left.events} events in {left.batches}"
            f" batches ({format_size(left.bytes)}) are still pending and stay spooled"
            " (run flush again to send them)\n"
        )
        self.err.flush()
        return EXIT_INTERRUPTED

    def run(self, timeout: float) -> int:
        spool = self.pipeline.spool
        deadline = time.monotonic() + timeout
        self.up.set_deadline(deadline)
        self.up.report_drops()  # losses not yet reported go out with this flush
        self.cutoff = cutoff = time.time_ns()
        todo = spool.pending_before(cutoff)
        if todo.batches == 0:
            self.out.write("nothing pending\n")
            return EXIT_OK
        self.progress = _Progress(self.out, todo.events, tty=self.out.isatty())
        why = self._loop(deadline, cutoff)
        self.progress.update(self.sent_events, self.sent_bytes, final=True)
        if why is None:
            self.out.write(f"flushed {self.sent_events} events ({format_size(self.sent_bytes)})\n")
            return EXIT_OK
        left = spool.pending_before(cutoff)
        self.out.write(
            f"{left.events} events in {left.batches} batches ({format_size(left.bytes)}) are"
            f" still pending: {why}; they stay spooled and will be sent later\n"
        )
        return EXIT_PENDING

    def _loop(self, deadline: float, cutoff: int) -> str | None:
        """Step until every batch sealed before ``cutoff`` is delivered (None), or why not."""
        up, spool, progress = self.up, self.pipeline.spool, self.progress
        assert progress is not None
        why = "timed out"
        refused = 0  # consecutive attempts that could not connect at all
        while True:
            if spool.pending_before(cutoff).batches == 0:
                return None
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return why
            step = up.step()
            if step.outcome == "sent":
                self.sent_events += step.events
                self.sent_bytes += step.bytes
            progress.update(self.sent_events, self.sent_bytes)
            if step.outcome in _BLOCKED and step.hard:
                if step.outcome == "paused" and step.wait_s < remaining:
                    time.sleep(step.wait_s)  # Retry-After shorter than our deadline: honour it
                    continue
                return up.blocked_reason() or f"the collector asked to wait {step.wait_s:.0f} s"
            if step.outcome == "retry" and step.hard and step.wait_s >= remaining:
                return f"the collector asked to retry after {step.wait_s:.0f} s"
            result = step.result
            if result is not None and result.refused:
                refused += 1
                if not self.wait and refused >= REFUSED_ATTEMPTS:
                    return _refused_text(result, refused)
                if self.wait and refused == 1:
                    self._say_waiting(result, remaining)
            elif result is not None:
                refused = 0
            if step.outcome == "idle":
                # Pending batches are held by other processes right now: wait for their acks.
                time.sleep(min(0.05, max(0.0, remaining)))
            elif step.wait_s > 0:
                time.sleep(min(step.wait_s, max(0.0, remaining)))
            if step.outcome == "retry" and result is not None:
                why = f"the endpoint is failing ({result.describe()})"

    def _say_waiting(self, result: SendResult, remaining: float) -> None:
        self._end_progress_line()
        self.out.write(
            f"flush: cannot connect to {host_port(result.url)}"
            f" ({result.cause or result.error}); waiting for it (--wait),"
            f" up to {remaining:.0f} s\n"
        )
        self.out.flush()

    def _end_progress_line(self) -> None:
        if self.progress is not None:
            self.progress.end_line()


# Step outcomes that a flush cannot wait out (unless a "paused" ends before its deadline).
_BLOCKED = ("kill_switch", "auth_pause", "endpoint_pause", "paused")


def _refused_text(result: SendResult, attempts: int) -> str:
    return (
        f"cannot connect to {host_port(result.url)} ({result.cause or result.error},"
        f" {attempts} attempts): is the collector running? (flush --wait keeps trying"
        " until --timeout)"
    )
