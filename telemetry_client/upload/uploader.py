"""The uploader: drains sealed batches from the spool to the collector (docs/design.md).

One step = claim the oldest batch (a flock: one sender per batch across threads and
processes) -> make sure the collector has every attachment it references -> POST the
batch body as stored, with its id as ``Idempotency-Key`` -> act on the answer by the
retry matrix in :mod:`.policy`. The step returns what to do next (wait how long, and
whether a flush may cut that wait short), so the loop, ``flush`` and tests share it, and
tests drive it with an injected clock: minutes of backoff take no time.

Waits are *soft* (backoff after a failure, idle polling: a flush may cut them short) or
*hard* (``Retry-After``, an auth pause, the kill switch: nobody may shorten them).
"""

from __future__ import annotations

import contextlib
import gzip
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

import orjson
import zstandard

from telemetry_client._internal import ids as _ids
from telemetry_client._internal.log import RateLimitedLogger
from telemetry_client._internal.urls import display_url
from telemetry_client.encode.encoder import Encoder, format_ts
from telemetry_client.events import TelemetryDropped
from telemetry_client.settings import TelemetrySettings
from telemetry_client.spool import Claim, Spool
from telemetry_client.spool.blobs import attachment_refs
from telemetry_client.upload._sender import Sender, SendResult
from telemetry_client.upload.control import Control, LastUpload
from telemetry_client.upload.policy import (
    Action,
    Backoff,
    classify,
    endpoint_problem,
    parse_disable,
    parse_retry_after,
)

__all__ = ["Step", "UploadCounters", "Uploader"]

IDLE_POLL_S = 0.25  # a batch sealed by any process is picked up within this
KILL_SWITCH_POLL_S = 5.0  # re-read the kill switch at least this often while it is on
REPORT_EVERY_S = 5.0  # look for unreported losses at most this often
GC_EVERY_S = 60.0  # collect unreferenced attachment blobs at most this often
_DEGRADED_EXCERPT = 1024
_ACCEPTED_CACHE = 4096  # attachment hashes known to be on the collector
_TRUSTED_MAX = 4096


@dataclass(frozen=True, slots=True)
class Step:
    """What one step did and what comes next."""

    # "sent", "idle", "retry", "split", "dead_letter", "auth_pause", "endpoint_pause",
    # "paused" (an earlier pause still running), "kill_switch"
    outcome: str
    wait_s: float = 0.0
    hard: bool = False  # True: a flush must not cut the wait short
    events: int = 0
    bytes: int = 0
    result: SendResult | None = None


@dataclass(slots=True)
class UploadCounters:
    """This process's upload counters (merged into ``TelemetryClient.stats()``)."""

    uploaded: int = 0  # events acknowledged by the collector
    uploaded_batches: int = 0
    uploaded_bytes: int = 0  # wire bytes of acknowledged batches
    rejected: int = 0  # events dead-lettered (refused for good)
    retries: int = 0  # failed attempts that will be retried
    split_batches: int = 0
    degraded_events: int = 0
    attachments_sent: int = 0
    attachments_skipped: int = 0  # the collector already had them
    attachments_missing: int = 0  # referenced but no longer in the spool (evicted)
    attachments_rejected: int = 0
    drop_reports: int = 0

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


class Uploader:
    """Delivers one spool's batches; a background thread or driven step by step."""

    def __init__(
        self,
        *,
        spool: Spool,
        settings: TelemetrySettings,
        log: RateLimitedLogger,
        encoder_factory: Callable[[], Encoder] | None = None,
        sender: Sender | None = None,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        if not settings.endpoint:
            raise ValueError("the uploader needs TELEMETRY_ENDPOINT")
        self.spool = spool
        self.settings = settings
        self._log = log
        self._encoder_factory = encoder_factory
        self._encoder: Encoder | None = None
        token = settings.token.get_secret_value() if settings.token else None
        self.sender = sender or Sender(
            endpoint=settings.endpoint,
            attachments_endpoint=settings.resolved_attachments_endpoint,
            token=token,
            timeout=settings.upload_timeout,
        )
        self._clock = clock
        self._monotonic = monotonic
        self._rng = rng or random.Random()
        self._backoff = Backoff(
            settings.upload_backoff_initial, settings.upload_backoff_max, rng=rng
        )
        self.control = Control(spool.root, fsync=settings.fsync == "batch")
        self.last = LastUpload(spool.root)
        self.counters = UploadCounters()
        self._encoding = "gzip" if settings.upload_compression == "gzip" else "zstd"
        self._cctx = zstandard.ZstdCompressor(level=3, write_checksum=True)
        self._failures = 0  # consecutive failed attempts (drives backoff and replay)
        self._paused_until = 0.0  # Retry-After / auth pause, for the whole endpoint
        self._pause_reason = ""
        self._pause_detail = ""  # what a 404/405 pause is about, for flush
        self._replaying = False  # draining a backlog after an outage: paced
        self._last_report = -1e18
        self._last_gc = self._monotonic()
        self._accepted: dict[str, None] = {}  # LRU-ish set of attachment hashes
        # Batches this process sealed without attachment references: claimed without the
        # decompress-and-count check (the bytes were written moments ago by us).
        self._trusted: dict[str, None] = {}
        self._deadline: float | None = None  # monotonic; set during shutdown
        # thread machinery
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._wake = threading.Event()
        self._progress = threading.Condition()
        self._step_no = 0
        # Kill switch end (unix s), read by emit(). Read from disk now, not at the first
        # step: a restarted process must not collect between its start and that step.
        until = self.control.disabled_until()
        self.disabled_until = until if until > self._clock() else 0.0

    # -- thread --------------------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stopping.clear()
        self._thread = threading.Thread(target=self._run, name="telemetry-uploader", daemon=True)
        self._thread.start()

    def stop(self, timeout: float) -> bool:
        """Ask the thread to stop; wait up to ``timeout``. False if it is still busy.

        A thread stuck in a request is abandoned (daemon): its claim stays on disk and
        is released by the kernel when the process exits.
        """
        self._deadline = self._monotonic() + max(0.0, timeout)
        self._stopping.set()
        self._wake.set()
        thread = self._thread
        if thread is None:
            self._close_sender()
            return True
        thread.join(max(0.0, timeout))
        alive = thread.is_alive()
        if not alive:
            self._thread = None
        return not alive

    def set_deadline(self, deadline: float | None) -> None:
        """Bound requests started from now on to end before ``deadline`` (monotonic)."""
        self._deadline = deadline

    def wake(self) -> None:
        """Cut a soft wait short (a flush wants delivery now)."""
        self._wake.set()

    def after_fork_in_child(self) -> None:
        """The parent's thread does not exist here; start afresh on demand."""
        self._thread = None
        self._stopping = threading.Event()
        self._wake = threading.Event()
        self._progress = threading.Condition()

    def _run(self) -> None:
        try:
            while not self._stopping.is_set():
                try:
                    step = self.step()
                except Exception as exc:  # the loop never dies
                    self._log.error(
                        "upload_loop",
                        "telemetry uploader: unexpected %s: %s",
                        type(exc).__name__,
                        exc,
                    )
                    step = Step("error", wait_s=1.0)
                self._notify()
                if step.wait_s > 0:
                    # Long hard pauses are slept in slices: each new step re-reads the kill
                    # switch (set or lifted by another process) and re-checks the pause.
                    wait = min(step.wait_s, KILL_SWITCH_POLL_S) if step.hard else step.wait_s
                    self._pause(wait, hard=step.hard)
        finally:
            self._close_sender()
            self._notify()

    def _close_sender(self) -> None:
        with contextlib.suppress(Exception):
            self.sender.close()

    def _pause(self, seconds: float, *, hard: bool) -> None:
        end = self._monotonic() + seconds
        while not self._stopping.is_set():
            remaining = end - self._monotonic()
            if remaining <= 0:
                return
            if self._wake.wait(remaining):
                self._wake.clear()
                if not hard:
                    return

    def _notify(self) -> None:
        with self._progress:
            self._step_no += 1
            self._progress.notify_all()

    def wait_progress(self, timeout: float) -> None:
        """Block until the uploader finished another step (or ``timeout``)."""
        with self._progress:
            seen = self._step_no
            self._progress.wait_for(lambda: self._step_no != seen, timeout)

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def blocked_reason(self) -> str | None:
        """Why nothing can be delivered right now (kill switch, auth pause), else None."""
        now = self._clock()
        if self.control.disabled_until() > now:
            return "kill switch on (X-Telemetry-Disable from the collector)"
        if self._paused_until > now and self._pause_reason == "auth":
            return "the collector refused our credentials (check TELEMETRY_TOKEN)"
        if self._paused_until > now and self._pause_reason == "endpoint":
            return f"the collector answered {self._pause_detail}"
        return None

    # -- one step ------------------------------------------------------------------------------

    def step(self) -> Step:
        """Deliver (or try to deliver) the oldest claimable batch."""
        now = self._clock()
        until = self.control.disabled_until()
        self.disabled_until = until if until > now else 0.0
        if until > now:
            self._failures = max(self._failures, 1)  # when it ends: paced replay, not a stampede
            return Step("kill_switch", min(until - now, KILL_SWITCH_POLL_S), hard=True)
        if self._paused_until > now:
            return Step("paused", self._paused_until - now, hard=True)
        self._maybe_report_drops()
        claim = self.spool.claim(trusted=self._trusted)
        if claim is None:
            self._replaying = False
            self._maybe_gc()
            return Step("idle", IDLE_POLL_S)
        try:
            return self._deliver(claim)
        finally:
            if claim._fd >= 0:
                self.spool.release(claim)

    def trust(self, batch_id: str, has_attachments: bool) -> None:
        """Hint from this process's writer: a batch it just sealed (see ``Spool.claim``)."""
        if has_attachments:
            return
        trusted = self._trusted
        if len(trusted) >= _TRUSTED_MAX:
            with contextlib.suppress(StopIteration, KeyError, RuntimeError):
                del trusted[next(iter(trusted))]
        trusted[batch_id] = None

    def _deliver(self, claim: Claim) -> Step:
        trusted = claim.batch_id in self._trusted  # sealed here without attachment refs
        self._trusted.pop(claim.batch_id, None)
        blocked = None if trusted else self._ensure_attachments(claim)
        if blocked is not None:
            return self._after_failure(blocked)
        result = self.sender.send_batch(
            self._wire_body(claim),
            batch_id=claim.batch_id,
            encoding=self._encoding,
            timeout=self._request_timeout(),
        )
        self._check_disable(result)
        action = classify(result)
        if action is Action.SPLIT:
            self.counters.split_batches += 1
            action, result = self._send_split(claim.lines(), claim.batch_id)
        if action is Action.ACK:
            step = self._after_success(claim, result)  # counted first: a flush may be waiting
            self.spool.ack(claim)
            return step
        if action is Action.DEAD_LETTER:
            self.counters.rejected += claim.n_events
            self.spool.dead_letter(claim)
            self._failures = 0
            self._log.warning(
                "dead_letter",
                "telemetry upload: the collector refused batch %s for good (%s);"
                " kept in the dead-letter area (telemetry-client status / purge --dead-letter)",
                claim.batch_id,
                result.describe(),
            )
            self.last.record("dead_letter", result.describe(), batches=1, events=claim.n_events)
            return Step("dead_letter", events=claim.n_events, result=result)
        return self._after_failure(result, action)

    def _after_success(self, claim: Claim, result: SendResult) -> Step:
        c = self.counters
        c.uploaded += claim.n_events
        c.uploaded_batches += 1
        c.uploaded_bytes += claim.name.n_bytes
        if self._failures:
            self._replaying = True  # backlog after an outage: pace it (bounded replay)
        self._failures = 0
        self.last.record("ok", result.describe(), batches=1, events=claim.n_events)
        wait = 0.0
        if self._replaying and self.settings.replay_rate > 0:
            interval = 1.0 / self.settings.replay_rate
            wait = interval * self._rng.uniform(0.5, 1.5)
        return Step(
            "sent", wait, hard=True, events=claim.n_events, bytes=claim.name.n_bytes, result=result
        )

    def _after_failure(self, result: SendResult, action: Action | None = None) -> Step:
        action = action or classify(result)
        now = self._clock()
        self.counters.retries += 1
        if action is Action.AUTH_PAUSE:
            pause = self.settings.auth_pause
            self._paused_until, self._pause_reason = now + pause, "auth"
            self._failures = max(self._failures, 1)  # resumed later: paced replay
            self._log.warning(
                "auth",
                "telemetry upload refused by the collector with %s at %s: check"
                " TELEMETRY_TOKEN and TELEMETRY_ENDPOINT; uploads paused for %.0f s,"
                " nothing is dropped",
                result.describe(),
                self._url_of(result),
                pause,
            )
            self.last.record("auth_refused", result.describe())
            return Step("auth_pause", pause, hard=True, result=result)
        if action is Action.ENDPOINT_PAUSE:
            # A misconfiguration, not a bad token and not a bad batch: keep everything and
            # pause like an auth refusal (a person has to fix the setting).
            pause = self.settings.auth_pause
            problem = self._endpoint_problem(result)
            self._paused_until, self._pause_reason = now + pause, "endpoint"
            self._pause_detail = problem
            self._failures = max(self._failures, 1)
            self._log.warning(
                "endpoint",
                "telemetry upload: the collector answered %s; uploads paused for %.0f s,"
                " nothing is dropped",
                problem,
                pause,
            )
            self.last.record("wrong_endpoint", problem)
            return Step("endpoint_pause", pause, hard=True, result=result)
        self._failures += 1
        self.last.record("retrying", result.describe())
        retry_after = parse_retry_after(
            result.retry_after, now=now, ceiling=self.settings.retry_after_max
        )
        # A Retry-After of zero (or an HTTP-date already past: clock skew) is no pause at all;
        # honouring it as one would retry back to back, so the backoff applies instead.
        if retry_after and result.status is not None:
            self._paused_until, self._pause_reason = now + retry_after, "retry_after"
            return Step("retry", retry_after, hard=True, result=result)
        self._log.warning(
            "retry", "telemetry upload failed (%s); retrying with backoff", result.describe()
        )
        return Step("retry", self._backoff.delay(self._failures), result=result)

    # -- 413: split ----------------------------------------------------------------------------

    def _send_split(self, lines: list[bytes], parent_id: str) -> tuple[Action, SendResult]:
        """Send ``lines`` as two halves with ids derived from ``parent_id`` (recursively).

        The split point and the ids depend only on the parent, so a retry after a crash
        resends identical halves under identical keys (the collector stores them once).
        """
        ts = _ids.uuid7_time_ns(parent_id)
        if len(lines) == 1:
            return self._send_degraded(lines[0], parent_id)
        mid = len(lines) // 2
        result = SendResult(None, "empty")
        for i, part in enumerate((lines[:mid], lines[mid:])):
            bid = _ids.derived_batch_id(ts, f"{parent_id}/{i}")
            raw = b"\n".join(part) + b"\n"
            result = self.sender.send_batch(
                self._compress(raw),
                batch_id=bid,
                encoding=self._encoding,
                timeout=self._request_timeout(),
            )
            self._check_disable(result)
            action = classify(result)
            if action is Action.SPLIT:
                action, result = self._send_split(part, bid)
            if action is not Action.ACK:
                return action, result
        return Action.ACK, result

    def _send_degraded(self, line: bytes, parent_id: str) -> tuple[Action, SendResult]:
        """One event the collector finds too large: send its envelope with a size marker."""
        try:
            event = orjson.loads(line)
            if not isinstance(event, dict):
                raise TypeError
            data = orjson.dumps(event.get("data"))
        except (TypeError, ValueError):
            event, data = {}, line
        event["data"] = {
            "$degraded": {
                "reason": "too_large",
                "bytes": len(line),
                "excerpt": data[:_DEGRADED_EXCERPT].decode("utf-8", "replace"),
            }
        }
        bid = _ids.derived_batch_id(_ids.uuid7_time_ns(parent_id), f"{parent_id}/degraded")
        result = self.sender.send_batch(
            self._compress(orjson.dumps(event) + b"\n"),
            batch_id=bid,
            encoding=self._encoding,
            timeout=self._request_timeout(),
        )
        self._check_disable(result)
        action = classify(result)
        if action is Action.ACK:
            self.counters.degraded_events += 1
            self._log.warning(
                "degraded",
                "telemetry upload: an event of %d bytes was too large for the"
                " collector; sent with its content replaced by a size marker",
                len(line),
            )
        elif action is Action.SPLIT:
            action = Action.DEAD_LETTER  # even the marker is refused: keep it in dead/
        return action, result

    # -- attachments ---------------------------------------------------------------------------

    def _ensure_attachments(self, claim: Claim) -> SendResult | None:
        """Upload every blob the batch references; a failure result blocks the batch."""
        refs = attachment_refs(claim.raw)  # a substring check when there are none
        for ref in refs:
            if ref.sha256 in self._accepted:
                continue
            head = self.sender.has_attachment(ref.sha256, timeout=self._request_timeout())
            self._check_disable(head)
            if head.ok:
                self.counters.attachments_skipped += 1
                self._remember(ref.sha256)
                continue
            if head.status not in (404, 405):
                action = classify(head)
                if action in _BLOCKING:
                    return head
            blob = self.spool.read_blob(ref.sha256)
            if blob is None:
                self.counters.attachments_missing += 1
                self._log.warning(
                    "attachment_missing",
                    "telemetry upload: attachment %s was evicted before upload; the event"
                    " keeps its reference (size and hash)",
                    ref.sha256[:16],
                )
                continue
            body = blob if self._encoding == "zstd" else gzip.compress(_unzstd(blob), mtime=0)
            result = self.sender.send_attachment(
                body,
                sha256=ref.sha256,
                content_type=ref.content_type,
                encoding=self._encoding,
                timeout=self._request_timeout(),
            )
            self._check_disable(result)
            action = classify(result)
            if action is Action.ACK:
                self.counters.attachments_sent += 1
                self._remember(ref.sha256)
            elif action in _BLOCKING:
                return result
            else:  # refused for good (too large, hash mismatch): the event keeps its reference
                self.counters.attachments_rejected += 1
                self._log.warning(
                    "attachment_rejected",
                    "telemetry upload: the collector refused attachment %s (%s)",
                    ref.sha256[:16],
                    result.describe(),
                )
        return None

    def _remember(self, sha: str) -> None:
        if len(self._accepted) >= _ACCEPTED_CACHE:
            self._accepted.pop(next(iter(self._accepted)))
        self._accepted[sha] = None

    # -- losses and housekeeping ---------------------------------------------------------------

    def _maybe_report_drops(self) -> None:
        if self._encoder_factory is None:
            return  # cannot build events: the losses stay counted for a client to report
        mono = self._monotonic()
        if mono - self._last_report < REPORT_EVERY_S:
            return
        self._last_report = mono
        try:
            self.report_drops()
        except OSError as exc:
            self._log.warning("report", "telemetry: could not record a loss report: %s", exc)

    def report_drops(self) -> int:
        """Seal one ``telemetry_dropped`` event per loss reason not yet reported.

        The report is sealed before the counters are cleared, so a loss is reported at
        least once: a crash in between reports it again (like any event, at-least-once).
        It is stamped with the current time so that it is the newest data on the spool.
        """
        unreported = self.spool.peek_unreported()
        if not unreported:
            return 0
        encoder = self._get_encoder()
        lines = []
        for reason in sorted(unreported):
            u = unreported[reason]
            event = TelemetryDropped(
                events=int(u.get("events", 0)),
                bytes=int(u.get("bytes", 0)),
                reason=reason,
                first_ts=format_ts(int(u.get("first_ns", 0))),
                last_ts=format_ts(int(u.get("last_ns", 0))),
            )
            lines.append(encoder.encode((event, None, time.time_ns(), 0, None, None)))
        # Stamped now, not at the loss: the report must be the *newest* data on disk, or
        # the cap or retention that caused the loss would evict the report first.
        bid = _ids.batch_id()
        raw = b"\n".join(lines) + b"\n"
        self.spool.seal(self._cctx.compress(raw), len(lines), batch_id=bid)
        self.spool.forget_reported(unreported)
        self.counters.drop_reports += 1
        return len(lines)

    def _get_encoder(self) -> Encoder:
        if self._encoder is None:
            if self._encoder_factory is None:
                raise RuntimeError("no encoder for loss reports")
            self._encoder = self._encoder_factory()
        return self._encoder

    def _maybe_gc(self) -> None:
        mono = self._monotonic()
        if mono - self._last_gc < GC_EVERY_S:
            return
        self._last_gc = mono
        gc = getattr(self.spool, "gc_blobs", None)
        if gc is not None:
            with contextlib.suppress(OSError):
                gc()

    # -- helpers -------------------------------------------------------------------------------

    def _check_disable(self, result: SendResult) -> None:
        seconds = parse_disable(result.disable)
        if seconds is None:
            return
        try:
            until = self.control.disable(seconds, now=self._clock())
        except OSError as exc:
            self._log.warning("kill_switch_io", "telemetry: cannot persist kill switch: %s", exc)
            until = self._clock() + seconds if seconds > 0 else 0.0
        self.disabled_until = until
        if seconds > 0:
            self._log.warning(
                "kill_switch",
                "telemetry disabled by the collector for %.0f s (X-Telemetry-Disable);"
                " spooled data is kept",
                seconds,
            )

    def _request_timeout(self) -> float:
        timeout = self.settings.upload_timeout
        if self._deadline is not None:
            timeout = min(timeout, max(0.05, self._deadline - self._monotonic()))
        return timeout

    def _wire_body(self, claim: Claim) -> bytes:
        if self._encoding == "zstd":
            return claim.body  # the spool file is the wire body: no re-encoding
        return gzip.compress(claim.raw, compresslevel=6, mtime=0)

    def _compress(self, raw: bytes) -> bytes:
        if self._encoding == "zstd":
            return self._cctx.compress(raw)
        return gzip.compress(raw, compresslevel=6, mtime=0)

    def _url_of(self, result: SendResult) -> str:
        return result.url or display_url(self.settings.endpoint or "")

    def _endpoint_problem(self, result: SendResult) -> str:
        """One line for a 404/405: status, URL (no credentials), the setting to check."""
        url = self._url_of(result)
        attachments = self.settings.attachments_endpoint is not None and url == display_url(
            self.settings.attachments_endpoint
        )
        variable = "TELEMETRY_ATTACHMENTS_ENDPOINT" if attachments else "TELEMETRY_ENDPOINT"
        return endpoint_problem(result.status or 0, url, variable)

    def describe(self) -> dict[str, Any]:
        return self.counters.as_dict()


# Answers that stop a batch before it is sent: its attachments could not be delivered now.
_BLOCKING = (Action.RETRY, Action.AUTH_PAUSE, Action.ENDPOINT_PAUSE)


def _unzstd(blob: bytes) -> bytes:
    return zstandard.ZstdDecompressor().decompress(blob, max_output_size=1 << 31)
