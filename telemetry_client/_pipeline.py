"""The client's stages, created and wired in one place (docs/architecture.md, docs/upload.md).

:func:`build` makes, from the settings: the spool; the encoder factory (used on the writer
and uploader threads); the batcher (emit-side buffer, writer and sealer threads); the loss
reports; the uploader with its destinations (the native collector with ``TELEMETRY_ENDPOINT``,
OTLP with ``TELEMETRY_OTLP_ENDPOINT``; none: spool-only); and the
LLM usage recorder. Objects two stages share are made here and handed to both, so no
stage reaches into another: the batcher's "sealed here" hint goes to a
:class:`~telemetry_client.upload.TrustedBatches` the uploader reads, and the kill switch
the native collector sets is the one ``emit()`` reads.

:class:`Pipeline` runs their lifecycle together (start, write out, wait for upload,
close, fork hooks); :class:`~telemetry_client.client.TelemetryClient` keeps the public
contract around it, and ``telemetry-client flush`` drives ``pipeline.uploader`` itself.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from telemetry_client._internal import env_info as _env_info
from telemetry_client._internal.log import RateLimitedLogger, logger
from telemetry_client.batch.batcher import Batcher
from telemetry_client.batch.loss_report import LossReports
from telemetry_client.encode.encoder import Encoder
from telemetry_client.encode.redact import Redactor
from telemetry_client.settings import TelemetrySettings
from telemetry_client.spool import Spool
from telemetry_client.upload import (
    Control,
    Destination,
    KillSwitch,
    NativeCollector,
    TrustedBatches,
    UploadConfig,
    Uploader,
)
from telemetry_client.upload.otlp import OtlpConfig, make_destination
from telemetry_client.usage.recorder import UsageRecorder
from telemetry_client.usage.store import UsageStore, usage_dir

__all__ = ["Pipeline", "build"]

RedactCallback = Callable[[str, str], str | None]


@dataclass(frozen=True, slots=True)
class Pending:
    """What a flush or close left undone: ``ok`` when nothing is pending."""

    ok: bool
    events: int = 0
    lost: int = 0  # close(): events in memory that could not be written (counted as dropped)


@dataclass(slots=True)
class Pipeline:
    """The wired stages of one client (or of ``telemetry-client flush``)."""

    settings: TelemetrySettings
    log: RateLimitedLogger
    session_id: str  # stamped on events emitted outside any session_context
    spool: Spool
    batcher: Batcher
    loss_reports: LossReports
    usage: UsageRecorder
    uploader: Uploader | None  # None: no endpoint, native or OTLP (spool-only mode)
    kill_switch: KillSwitch | None  # the collector's, read by emit(); None without an uploader

    def start(self) -> None:
        """Start the writer and uploader threads (no disk I/O on the caller)."""
        self.batcher.start()
        if self.uploader is not None:
            self.uploader.start()

    def write_out(self, limit: float) -> Pending:
        """Everything handed to the batcher so far is on disk; usage merged (``limit`` s)."""
        deadline = time.monotonic() + max(0.0, limit)
        ok = self.batcher.flush(max(0.0, limit))
        self.usage.flush(max(0.0, deadline - time.monotonic()))  # never raises
        if not ok:
            return Pending(False, self.batcher.pending_events())
        return Pending(True)

    def await_upload(self, deadline: float) -> Pending:
        """Wait until every batch sealed so far (by any process on the spool) is delivered,
        or ``deadline`` (monotonic), or the uploader cannot deliver (paused, stopped)."""
        up = self.uploader
        if up is None:
            return Pending(True)
        cutoff = time.time_ns()
        up.wake()
        while True:
            left = self.spool.pending_before(cutoff)
            if left.batches == 0:
                return Pending(True)
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not up.alive:
                return Pending(False, left.events)
            if up.blocked_reason() is not None:
                # The step that heard the kill switch (or a refusal) may still be recording
                # the batch it delivered: judge once it is done.
                up.wait_idle(remaining)
                left = self.spool.pending_before(cutoff)
                return Pending(left.batches == 0, left.events)
            up.wait_progress(min(remaining, 0.05))

    def close(self, deadline: float) -> Pending:
        """Memory to disk first (what cannot be written is counted as lost), then upload
        until ``deadline`` (monotonic), then stop every thread."""
        up = self.uploader
        if up is not None:
            up.set_deadline(deadline)  # requests from now on end before the deadline
        closed = self.batcher.close(max(0.0, deadline - time.monotonic()))
        flushed = closed.drained
        self.usage.close(max(0.0, deadline - time.monotonic()))
        pending = self.batcher.pending_events()
        if up is not None:
            if flushed and pending == 0:
                uploaded = self.await_upload(deadline)
                flushed, pending = uploaded.ok, uploaded.events
            up.stop(max(0.0, deadline - time.monotonic()))
        self._log_left_on_disk()
        return Pending(flushed and pending == 0, pending, closed.lost_events)

    def _log_left_on_disk(self) -> None:
        """One line at shutdown when batches wait on disk: how many, where, what happens next."""
        try:
            left = self.spool.pending()
        except OSError:
            return
        if not left.events:
            return
        what = f"{_count(left.events, 'event')} ({_count(left.batches, 'batch')})"
        if self.uploader is None:
            logger.info(
                "telemetry: %s kept in %s (spool-only mode: TELEMETRY_ENDPOINT is not set)",
                what,
                self.spool.root,
            )
            return
        logger.warning(
            "telemetry: %s left in %s; they will be sent by the next client or"
            " `telemetry-client flush`",
            what,
            self.spool.root,
        )

    def describe(self) -> dict[str, Any]:
        """The stages' counters for ``stats()`` (this process only)."""
        out: dict[str, Any] = dict(self.batcher.describe())
        if self.uploader is not None:
            out.update(self.uploader.describe())
        out.update(self.usage.describe())
        return out

    def before_fork(self) -> None:
        self.batcher.before_fork()

    def after_fork_in_parent(self) -> None:
        self.batcher.after_fork_in_parent()

    def after_fork_in_child(self) -> None:
        """The parent's threads do not exist here: every stage restarts on demand."""
        self.batcher.after_fork_in_child()
        self.usage.after_fork_in_child()
        if self.uploader is not None:
            self.uploader.after_fork_in_child()


def build(
    settings: TelemetrySettings,
    *,
    redact_callback: RedactCallback | None = None,
    log: RateLimitedLogger | None = None,
) -> Pipeline:
    """Create the stages for ``settings`` (an active configuration) and wire them once.

    Starts no thread and writes nothing: the spool is opened by the writer thread (or by
    the caller), threads start with :meth:`Pipeline.start`; only the kill switch is read.
    """
    s = settings
    log = log or RateLimitedLogger(s.log_cooldown_s)
    session_id = s.session_id or uuid.uuid4().hex
    fsync = s.fsync == "batch"
    spool = Spool(
        s.resolved_spool_dir,
        max_bytes=s.spool_max_bytes,
        retention_days=s.retention_days,
        fsync=fsync,
    )

    def make_encoder() -> Encoder:
        """Called on the writer (and uploader) thread: machine id and git SHA touch the disk."""
        redactor = Redactor(
            enabled=s.redact,
            extra_patterns=s.redact_patterns,
            extra_keys=s.redact_keys,
            callback=redact_callback,
        )
        return Encoder(
            redactor=redactor,
            app=s.app,
            app_version=s.app_version or _env_info.detect_app_version(),
            machine_id=s.machine_id or _env_info.machine_id(),
            user_id=s.user_id,
            session_id=session_id,
            put_blob=spool.put_blob,
            inline_max_bytes=s.inline_max_bytes,
            attachment_max_bytes=s.attachment_max_bytes,
            log=log,
        )

    loss_reports = LossReports(spool, make_encoder)
    uploader: Uploader | None = None
    kill_switch: KillSwitch | None = None
    trusted = TrustedBatches()
    otlp = OtlpConfig.from_settings(s)
    if s.endpoint or otlp is not None:
        config = UploadConfig.from_settings(s)
        kill_switch = KillSwitch(Control(spool.root, fsync=config.fsync), log=log)
        destinations: list[Destination] = []
        if s.endpoint:
            destinations.append(
                NativeCollector(config, blobs=spool, kill_switch=kill_switch, log=log)
            )
        if otlp is not None:  # docs/otlp.md: every batch also goes out as OTLP
            destinations.append(make_destination(otlp, spool_root=spool.root, log=log))
        uploader = Uploader(
            spool=spool,
            config=config,
            log=log,
            destinations=destinations,
            kill_switch=kill_switch,
            losses=loss_reports,
            trusted=trusted,
        )
    batcher = Batcher(
        spool=spool,
        encoder_factory=make_encoder,
        batch_max_events=s.batch_max_events,
        batch_max_bytes=s.batch_max_bytes,
        linger_s=s.linger_ms / 1000.0,
        buffer_max=s.buffer_max_events,
        log=log,
        on_sealed=trusted.note if uploader is not None else None,
    )
    usage = UsageRecorder(UsageStore(usage_dir(s.resolved_spool_dir), fsync=fsync), log)
    return Pipeline(
        settings=s,
        log=log,
        session_id=session_id,
        spool=spool,
        batcher=batcher,
        loss_reports=loss_reports,
        usage=usage,
        uploader=uploader,
        kill_switch=kill_switch,
    )


def _count(n: int, noun: str) -> str:
    """``1 batch``, ``1,234 events``."""
    plural = noun if n == 1 else noun + ("es" if noun.endswith("ch") else "s")
    return f"{n:,} {plural}"
