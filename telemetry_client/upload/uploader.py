"""The uploader: drains sealed batches from the spool to its destinations (docs/upload.md).

One step = claim the oldest batch (a flock: one sender per batch across threads and
processes) -> hand it to every :class:`~.destination.Destination` that has not settled it
yet -> act on the answers by the retry matrix in :mod:`.policy`. The batch is acked in the
spool once every destination acknowledged it; a destination that did is skipped when the
batch is retried for another. The step returns what to do next (wait how long, and whether
a flush may cut that wait short), so the loop (:mod:`.loop`), ``telemetry-client flush``
and tests share it, and tests drive it with an injected clock.
"""

from __future__ import annotations

import contextlib
import random
import time
from collections.abc import Callable, Container, Sequence
from pathlib import Path
from typing import Any, Protocol

from telemetry_client._internal.log import RateLimitedLogger
from telemetry_client.spool import Claim
from telemetry_client.spool.blobs import AttachmentRef, attachment_refs
from telemetry_client.upload._sender import SendResult
from telemetry_client.upload.attachments import BlobSource
from telemetry_client.upload.config import UploadConfig
from telemetry_client.upload.control import Control, KillSwitch, LastUpload
from telemetry_client.upload.destination import Acks, Destination, OutgoingBatch, TrustedBatches
from telemetry_client.upload.lanes import Lanes
from telemetry_client.upload.loop import KILL_SWITCH_POLL_S, UploadLoop
from telemetry_client.upload.native import NativeCollector
from telemetry_client.upload.policy import Action, Backoff, classify, parse_retry_after
from telemetry_client.upload.step import Outcome, Step, UploadCounters

__all__ = ["ClaimQueue", "LossReporter", "Uploader"]

IDLE_POLL_S = 0.25  # a batch sealed by any process is picked up within this
REPORT_EVERY_S = 5.0  # look for unreported losses at most this often
GC_EVERY_S = 60.0  # collect unreferenced attachment blobs at most this often


class ClaimQueue(BlobSource, Protocol):
    """The uploader's view of the spool: claim the oldest batch, settle it, housekeeping."""

    @property
    def root(self) -> Path: ...

    def claim(
        self,
        *,
        trusted: Container[str] = (),
        wanted: Callable[[dict[str, int]], bool] | None = None,
    ) -> Claim | None: ...

    def settle(self, claim: Claim, destination: str, status: int) -> None: ...

    def gc_settled(self) -> int: ...

    def ack(self, claim: Claim) -> None: ...

    def release(self, claim: Claim) -> None: ...

    def dead_letter(self, claim: Claim) -> None: ...

    def gc_blobs(self) -> int: ...


class LossReporter(Protocol):
    """Seals reports of unreported losses (``batch.loss_report.LossReports``)."""

    def seal_pending(self) -> int: ...


class Uploader:
    """Delivers one spool's batches; a background thread or driven step by step."""

    def __init__(
        self,
        *,
        spool: ClaimQueue,
        config: UploadConfig,
        log: RateLimitedLogger,
        destinations: Sequence[Destination] | None = None,
        kill_switch: KillSwitch | None = None,
        losses: LossReporter | None = None,
        trusted: TrustedBatches | None = None,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        """``destinations`` default to the native collector of ``config``; ``losses``:
        without one, losses stay counted in the spool for a process that can report them."""
        self.spool = spool
        self._config = config
        self._log = log
        self._clock = clock
        self._monotonic = monotonic
        self.kill_switch = kill_switch or KillSwitch(
            Control(spool.root, fsync=config.fsync), log=log, clock=clock
        )
        if destinations is None:
            destinations = [
                NativeCollector(config, blobs=spool, kill_switch=self.kill_switch, log=log)
            ]
        names = [d.name for d in destinations]
        if not names or len(set(names)) != len(names):
            raise ValueError(f"destinations need distinct names, got {names}")
        self.destinations = tuple(destinations)
        self._losses = losses
        self._trusted = trusted if trusted is not None else TrustedBatches()
        self._acks = Acks()
        self._rng = rng or random.Random()
        self._backoff = Backoff(config.backoff_initial, config.backoff_max, rng=rng)
        self.last = LastUpload(spool.root)
        self.counters = UploadCounters()
        self._lanes = Lanes(names)  # per destination: failures, backoff, pauses
        self._recovering = False  # a failure or pause happened: the next success replays
        self._replaying = False  # draining a backlog after an outage: paced
        self._last_report = -1e18
        self._last_gc = monotonic()
        self._deadline: float | None = None  # monotonic; set during shutdown
        self._loop = UploadLoop(self, log, monotonic)

    # -- thread (upload/loop.py) ---------------------------------------------------------------

    def start(self) -> None:
        self._loop.start()

    def stop(self, timeout: float) -> bool:
        """Stop the thread within ``timeout`` (requests from now on end by then)."""
        self._deadline = self._monotonic() + max(0.0, timeout)
        return self._loop.stop(timeout)

    def wake(self) -> None:
        """Cut a soft wait short (a flush wants delivery now)."""
        self._loop.wake()

    def wait_progress(self, timeout: float) -> None:
        """Block until the uploader finished another step (or ``timeout``)."""
        self._loop.wait_progress(timeout)

    def wait_idle(self, timeout: float) -> None:
        """Block until the step in flight (if any) has recorded its outcome (or ``timeout``)."""
        self._loop.wait_idle(timeout)

    def after_fork_in_child(self) -> None:
        self._loop.after_fork_in_child()

    @property
    def alive(self) -> bool:
        return self._loop.alive

    def set_deadline(self, deadline: float | None) -> None:
        """Bound requests started from now on to end before ``deadline`` (monotonic)."""
        self._deadline = deadline

    def close(self) -> None:
        """Close the destinations' connections (the loop does when it ends)."""
        for dest in self.destinations:
            with contextlib.suppress(Exception):
                dest.close()

    def blocked_reason(self) -> str | None:
        """Why nothing can be delivered right now (kill switch, auth pause), else None."""
        now = self._clock()
        if self.kill_switch.refresh(now) > now:
            return "kill switch on (X-Telemetry-Disable from the collector)"
        lane = self._lanes.blocked(now)
        if lane is None:
            return None
        if lane.reason == "auth" and lane.name == NativeCollector.name:
            return "the collector refused our credentials (check TELEMETRY_TOKEN)"
        if lane.reason == "auth":
            return f"{lane.name} refused our credentials: {lane.detail}"
        return f"the {_label(lane.name)} answered {lane.detail}"

    # -- one step ------------------------------------------------------------------------------

    def step(self) -> Step:
        """Deliver (or try to deliver) the oldest batch a ready destination still needs."""
        now = self._clock()
        until = self.kill_switch.refresh(now)
        if until > now:
            self._recovering = True  # when it ends: paced replay, not a stampede
            return Step(Outcome.KILL_SWITCH, min(until - now, KILL_SWITCH_POLL_S), hard=True)
        ready = self._lanes.ready(now)
        if not ready:
            return Step(Outcome.PAUSED, self._lanes.next_ready_in(now), hard=True)
        self._maybe_report_drops()
        wanted = None
        if len(ready) < len(self.destinations) or len(self.destinations) > 1:
            wanted = _wants(ready)  # skip batches only waiting destinations still need
        if wanted is None:
            claim = self.spool.claim(trusted=self._trusted)
        else:
            claim = self.spool.claim(trusted=self._trusted, wanted=wanted)
        if claim is None:
            self._replaying = False
            self._maybe_gc()
            if len(ready) < len(self.destinations):  # a waiting destination has a backlog
                return Step(Outcome.IDLE, min(IDLE_POLL_S, self._lanes.next_ready_in(now)))
            return Step(Outcome.IDLE, IDLE_POLL_S)
        try:
            return self._deliver(claim, ready)
        finally:
            if claim.held:  # not acked nor dead-lettered: give it back for a later retry
                self.spool.release(claim)

    def _deliver(self, claim: Claim, ready: frozenset[str]) -> Step:
        """Send ``claim`` to every ready destination that has not settled it yet."""
        trusted = self._trusted.take(claim.batch_id)  # sealed here without attachment refs
        refs: tuple[AttachmentRef, ...] = ()
        if not trusted and any(d.uploads_attachments for d in self.destinations):
            refs = tuple(attachment_refs(claim.raw))  # a substring check when there are none
        with_refs = OutgoingBatch(claim, refs, self._request_timeout)
        without_refs = OutgoingBatch(claim, (), self._request_timeout) if refs else with_refs
        # destination -> the answer that settled it: on disk (another process, a restart),
        # then this process's memory.
        settled = {n: SendResult(st) for n, st in claim.settled.items()}
        settled |= self._acks.settled(claim.batch_id)
        failure: Step | None = None  # the first failure decides the step
        failed: set[str] = set()
        last: SendResult | None = None
        for dest in self.destinations:
            if dest.name in settled or dest.name not in ready:
                continue
            last = dest.send(with_refs if dest.uploads_attachments else without_refs)
            action = classify(last)
            # ACK, or refused for good (a final 413: the destination split what it could).
            if action in (Action.ACK, Action.DEAD_LETTER, Action.SPLIT):
                settled[dest.name] = last
                if len(settled) < len(self.destinations):  # a crash before the others'
                    self._settle(claim, dest.name, last)  # answers must not resend this one
                self._acks.record(claim.batch_id, dest.name, last)
                if self._lanes[dest.name].succeeded():
                    self._recovering = True
            else:
                step = self._after_failure(dest, last, action)
                failed.add(dest.name)
                failure = failure or step
        if len(settled) < len(self.destinations):
            if failure is not None:
                if ready - failed:  # a healthy destination goes on with newer batches at once
                    return Step(Outcome.RETRY, 0.0, result=failure.result)
                return failure
            return Step(Outcome.DELIVERED, 0.0, events=claim.n_events, result=last)
        self._acks.forget(claim.batch_id)
        refused = [r for r in settled.values() if not r.ok]
        if refused:
            return self._dead_letter(claim, refused[0])
        step = self._after_success(claim, last)  # counted first: a flush may be waiting
        self.spool.ack(claim)
        return step

    def _settle(self, claim: Claim, name: str, result: SendResult) -> None:
        try:
            self.spool.settle(claim, name, result.status or 0)
        except (OSError, ValueError) as exc:  # a resend later, at worst
            self._log.warning("settle", "telemetry upload: could not record an ack: %s", exc)

    def _dead_letter(self, claim: Claim, result: SendResult) -> Step:
        self.counters.rejected += claim.n_events
        self.spool.dead_letter(claim)
        self._log.warning(
            "dead_letter",
            "telemetry upload: the collector refused batch %s for good (%s);"
            " kept in the dead-letter area (telemetry-client status / purge --dead-letter)",
            claim.batch_id,
            result.describe(),
        )
        self.last.record("dead_letter", result.describe(), batches=1, events=claim.n_events)
        return Step(Outcome.DEAD_LETTER, events=claim.n_events, result=result)

    def _after_success(self, claim: Claim, result: SendResult | None) -> Step:
        c = self.counters
        c.uploaded += claim.n_events
        c.uploaded_batches += 1
        c.uploaded_bytes += claim.name.n_bytes
        if self._recovering:
            self._replaying = True  # backlog after an outage: pace it (bounded replay)
        self._recovering = False
        detail = result.describe() if result is not None else "acknowledged"
        self.last.record("ok", detail, batches=1, events=claim.n_events)
        wait = 0.0
        if self._replaying and self._config.replay_rate > 0:
            interval = 1.0 / self._config.replay_rate
            wait = interval * self._rng.uniform(0.5, 1.5)
        n, size = claim.n_events, claim.name.n_bytes
        return Step(Outcome.SENT, wait, hard=True, events=n, bytes=size, result=result)

    def _after_failure(self, dest: Destination, result: SendResult, action: Action) -> Step:
        """The failed destination's lane waits; the step that says so."""
        now = self._clock()
        lane = self._lanes[dest.name]
        self.counters.retries += 1
        self._recovering = True
        label = _label(dest.name)
        if action in (Action.AUTH_PAUSE, Action.ENDPOINT_PAUSE):
            # Credentials refused, or a URL that is not an events endpoint: nothing is wrong
            # with the batch, so keep everything and pause (a person has to fix a setting).
            pause = self._config.auth_pause
            problem = dest.explain(result)
            auth = action is Action.AUTH_PAUSE
            lane.wait(now, pause, hard=True, reason="auth" if auth else "endpoint", detail=problem)
            if auth:
                self._log.warning(
                    f"auth:{dest.name}",
                    "telemetry upload refused by the %s with %s; uploads paused"
                    " for %.0f s, nothing is dropped",
                    label,
                    problem,
                    pause,
                )
                self.last.record("auth_refused", result.describe())
                return Step(Outcome.AUTH_PAUSE, pause, hard=True, result=result)
            self._log.warning(
                f"endpoint:{dest.name}",
                "telemetry upload: the %s answered %s; uploads paused for %.0f s,"
                " nothing is dropped",
                label,
                problem,
                pause,
            )
            self.last.record("wrong_endpoint", problem)
            return Step(Outcome.ENDPOINT_PAUSE, pause, hard=True, result=result)
        lane.failures += 1
        self.last.record("retrying", result.describe())
        retry_after = parse_retry_after(
            result.retry_after, now=now, ceiling=self._config.retry_after_max
        )
        # A Retry-After of zero (or an HTTP-date already past: clock skew) is no pause at all;
        # honouring it as one would retry back to back, so the backoff applies instead.
        if retry_after and result.status is not None:
            lane.wait(now, retry_after, hard=True, reason="retry_after")
            return Step(Outcome.RETRY, retry_after, hard=True, result=result)
        where = "" if dest.name == NativeCollector.name else f" to the {label}"
        self._log.warning(
            f"retry:{dest.name}",
            "telemetry upload%s failed (%s); retrying with backoff",
            where,
            result.describe(),
        )
        delay = self._backoff.delay(lane.failures)
        lane.wait(now, delay, hard=False, reason="backoff")
        return Step(Outcome.RETRY, delay, result=result)

    # -- losses and housekeeping ---------------------------------------------------------------

    def report_drops(self) -> int:
        """Seal a report of unreported losses now (``flush`` does before draining)."""
        if self._losses is None:
            return 0
        n = self._losses.seal_pending()
        if n:
            self.counters.drop_reports += 1
        return n

    def _maybe_report_drops(self) -> None:
        if self._losses is None:
            return  # cannot build events: the losses stay counted for a client to report
        mono = self._monotonic()
        if mono - self._last_report < REPORT_EVERY_S:
            return
        self._last_report = mono
        try:
            self.report_drops()
        except OSError as exc:
            self._log.warning("report", "telemetry: could not record a loss report: %s", exc)

    def _maybe_gc(self) -> None:
        mono = self._monotonic()
        if mono - self._last_gc < GC_EVERY_S:
            return
        self._last_gc = mono
        with contextlib.suppress(OSError):
            self.spool.gc_blobs()
        if len(self.destinations) > 1:
            with contextlib.suppress(OSError):
                self.spool.gc_settled()

    # -- helpers -------------------------------------------------------------------------------

    def _request_timeout(self) -> float:
        timeout = self._config.timeout
        if self._deadline is not None:
            timeout = min(timeout, max(0.05, self._deadline - self._monotonic()))
        return timeout

    def describe(self) -> dict[str, Any]:
        """Counters for ``stats()``: the uploader's, then its destinations' (summed by name)."""
        out: dict[str, Any] = self.counters.as_dict()
        reports = out.pop("drop_reports")
        for dest in self.destinations:
            for key, value in dest.describe().items():
                out[key] = out.get(key, 0) + value
        out["drop_reports"] = reports
        return out


def _wants(ready: frozenset[str]) -> Callable[[dict[str, int]], bool]:
    """A claim filter: the batch is still needed by a destination that is ready now."""

    def wanted(settled: dict[str, int]) -> bool:
        return any(name not in settled for name in ready)

    return wanted


def _label(name: str) -> str:
    """How logs name a destination: the native one is "the collector"."""
    return "collector" if name == NativeCollector.name else f"{name} endpoint"
