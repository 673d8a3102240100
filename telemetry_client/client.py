"""``TelemetryClient``: lifecycle and the public ``emit``/``flush``/``stats`` API (CONTRACT §2).

The client wires the stages: ``emit()`` appends to the batcher's bounded buffer; the
batcher's writer thread encodes, compresses and seals batches into the spool. Every
blocking step (disk, compression, fsync, waiting for the writer) runs on that thread or
on a worker thread via ``anyio.to_thread``, never on the caller's event loop.

Lifecycle: *unopened* -> *open* -> *closed*. ``emit()`` on an unopened client starts the
writer lazily, so plain scripts need no ceremony; ``async with`` / ``with`` / ``close()``
make shutdown explicit. A closed client cannot be reopened (``ClientClosedError``);
events emitted after close are counted (``dropped_after_close``) and logged, never raised.

Disabled (``TELEMETRY_ENABLED=0`` or ``DO_NOT_TRACK=1``): a true no-op. No directory,
thread, task or socket is ever created and ``emit()`` returns after one attribute check.

Fork safety: ``os.register_at_fork`` hooks quiesce the writer before a fork; the child
drops the parent's in-memory events (the parent still writes them), closes inherited spool
file descriptors without writing through them, and starts its own writer on first use.

Usage stats: an ``events.LLMCall`` or ``events.ChatTurn`` is also handed to a
``UsageRecorder`` (two type checks on the hot path, then a deque append); its own small
thread, started on the first LLM call, merges those calls about once a second into the
spool's shared usage store (``telemetry_client.usage``), and ``flush``/``close`` merge the
rest. Failures there are counted and logged, never raised.
"""

from __future__ import annotations

import atexit
import copy
import enum
import itertools
import os
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import anyio.to_thread

from telemetry_client._internal import env_info as _env_info
from telemetry_client._internal.log import RateLimitedLogger, logger
from telemetry_client.agent import files
from telemetry_client.agent.files import TrackedFile
from telemetry_client.agent.run import RunRecorder
from telemetry_client.batch.batcher import Batcher
from telemetry_client.context import session_id_var, user_id_var
from telemetry_client.encode.encoder import Encoder
from telemetry_client.encode.redact import Redactor
from telemetry_client.errors import ClientClosedError
from telemetry_client.events import ChatTurn, Event, LLMCall
from telemetry_client.settings import TelemetrySettings
from telemetry_client.spool import Spool
from telemetry_client.upload import Uploader
from telemetry_client.usage.recorder import UsageRecorder
from telemetry_client.usage.store import UsageStore, usage_dir

__all__ = ["FlushResult", "TelemetryClient"]


class _State(enum.Enum):
    UNOPENED = "unopened"
    OPEN = "open"
    CLOSED = "closed"


@dataclass(frozen=True, slots=True)
class FlushResult:
    """Outcome of :meth:`TelemetryClient.flush`: truthy when nothing is left pending.

    ``dropped_events`` (``close()`` only): events still in memory at shutdown that could not
    be written (deadline passed, disk failing); they are counted in the spool's loss ledger.
    """

    ok: bool
    pending_events: int
    elapsed_s: float
    dropped_events: int = 0

    def __bool__(self) -> bool:
        return self.ok


class TelemetryClient:
    """Non-blocking telemetry: ``emit()`` from anywhere; batches land in a crash-safe spool."""

    def __init__(
        self,
        settings: TelemetrySettings | None = None,
        *,
        redact_callback: Callable[[str, str], str | None] | None = None,
    ) -> None:
        self.settings = settings if settings is not None else TelemetrySettings()
        self._disabled = not self.settings.active
        self._state = _State.UNOPENED
        self._seq = itertools.count(1)
        self._closed_drops = 0
        if self._disabled:
            return
        s = self.settings
        self._log = RateLimitedLogger(s.log_cooldown_s)
        self._session_default = s.session_id or uuid.uuid4().hex
        self._redact_callback = redact_callback
        self.spool = Spool(
            s.resolved_spool_dir,
            max_bytes=s.spool_max_bytes,
            retention_days=s.retention_days,
            fsync=s.fsync == "batch",
        )
        self._uploader: Uploader | None = None
        if s.endpoint:
            self._uploader = Uploader(
                spool=self.spool, settings=s, log=self._log, encoder_factory=self._make_encoder
            )
        self._batcher = Batcher(
            spool=self.spool,
            encoder_factory=self._make_encoder,
            batch_max_events=s.batch_max_events,
            batch_max_bytes=s.batch_max_bytes,
            linger_s=s.linger_ms / 1000.0,
            buffer_max=s.buffer_max_events,
            log=self._log,
            on_sealed=self._uploader.trust if self._uploader is not None else None,
        )
        self._kill_switch_drops = 0
        self._start_lock = threading.Lock()
        self._usage = UsageRecorder(
            UsageStore(usage_dir(s.resolved_spool_dir), fsync=s.fsync == "batch"), self._log
        )
        _live_clients.add(self)

    def _make_encoder(self) -> Encoder:
        """Built on the writer thread: machine id and git SHA lookups touch the disk."""
        s = self.settings
        redactor = Redactor(
            enabled=s.redact,
            extra_patterns=s.redact_patterns,
            extra_keys=s.redact_keys,
            callback=self._redact_callback,
        )
        return Encoder(
            redactor=redactor,
            app=s.app,
            app_version=s.app_version or _env_info.detect_app_version(),
            machine_id=s.machine_id or _env_info.machine_id(),
            user_id=s.user_id,
            session_id=self._session_default,
            put_blob=self.spool.put_blob,
            inline_max_bytes=s.inline_max_bytes,
            attachment_max_bytes=s.attachment_max_bytes,
            log=self._log,
        )

    # -- properties ---------------------------------------------------------------------

    @property
    def enabled(self) -> bool:
        """False when telemetry is disabled by configuration (the client is a no-op)."""
        return not self._disabled

    @property
    def closed(self) -> bool:
        return self._state is _State.CLOSED

    @property
    def session_id(self) -> str | None:
        """Session id stamped on events emitted outside any ``session_context``."""
        return None if self._disabled else self._session_default

    # -- emit ---------------------------------------------------------------------------

    def emit(
        self,
        event: Event | str,
        data: Mapping[str, Any] | None = None,
        *,
        session_id: str | None = None,
        user_id: str | None = None,
    ) -> None:
        """Queue an event; returns in microseconds, never blocks on I/O, never raises for content.

        ``event`` is a typed event from :mod:`telemetry_client.events`, or a type name with
        a JSON-able ``data`` mapping. The payload is serialised later on the writer thread:
        do not mutate it after emitting.
        """
        if self._disabled:
            return
        if self._state is not _State.OPEN:
            if self._state is _State.CLOSED:
                self._drop_after_close()
                return
            self._ensure_started()
        up = self._uploader
        if up is not None and up.disabled_until and up.disabled_until > time.time():
            self._kill_switch_drops += 1  # the collector's kill switch: collection paused
            return
        if type(event) is LLMCall or type(event) is ChatTurn:
            # usage stats: a deque append; merged by its own thread
            self._usage.add(event, session_id or session_id_var.get())
        self._batcher.put(
            (
                event,
                data,
                time.time_ns(),
                next(self._seq),
                session_id or session_id_var.get(),
                user_id or user_id_var.get(),
            )
        )

    def _drop_after_close(self) -> None:
        self._closed_drops += 1
        self._log.warning(
            "emit-after-close", "telemetry: emit() after the client was closed; event dropped"
        )

    def _ensure_started(self) -> None:
        with self._start_lock:
            if self._state is _State.UNOPENED:
                self._batcher.start()
                if self._uploader is not None:
                    self._uploader.start()
                self._state = _State.OPEN

    # -- lifecycle (sync) -----------------------------------------------------------------

    def start(self) -> TelemetryClient:
        """Start the background writer (non-blocking). Raises ``ClientClosedError`` if closed."""
        if self._state is _State.CLOSED:
            raise ClientClosedError("this TelemetryClient is closed; create a new one")
        if not self._disabled:
            self._ensure_started()
        return self

    def flush_sync(self, timeout: float | None = None) -> FlushResult:
        """Blocking flush for non-async code: wait until everything emitted so far is on disk."""
        if self._state is _State.CLOSED:
            raise ClientClosedError("this TelemetryClient is closed; create a new one")
        return self._flush(timeout)

    def _flush(self, timeout: float | None) -> FlushResult:
        start = time.monotonic()
        if self._disabled:
            return FlushResult(True, 0, 0.0)
        limit = self.settings.shutdown_timeout if timeout is None else timeout
        deadline = start + max(0.0, limit)
        ok = self._batcher.flush(max(0.0, limit))
        self._usage.flush(max(0.0, deadline - time.monotonic()))  # never raises
        if not ok:
            return FlushResult(False, self._batcher.pending_events(), time.monotonic() - start)
        if self._uploader is None or self._state is not _State.OPEN:
            return FlushResult(True, 0, time.monotonic() - start)
        return self._await_upload(deadline, start)

    def _await_upload(self, deadline: float, start: float) -> FlushResult:
        """Wait until every batch sealed so far (by any process on the spool) is delivered."""
        up = self._uploader
        assert up is not None
        cutoff = time.time_ns()
        up.wake()
        while True:
            left = self.spool.pending_before(cutoff)
            if left.batches == 0:
                return FlushResult(True, 0, time.monotonic() - start)
            remaining = deadline - time.monotonic()
            if remaining <= 0 or up.blocked_reason() is not None or not up.alive:
                return FlushResult(False, left.events, time.monotonic() - start)
            up.wait_progress(min(remaining, 0.05))

    def close(self, timeout: float | None = None) -> FlushResult:
        """Put what is in memory on disk, upload (bounded by ``timeout``, default
        ``TELEMETRY_SHUTDOWN_TIMEOUT``), and stop.

        Idempotent. Writing comes first and ignores the per-batch limits (large batches,
        one fsync each); what still cannot be written is counted as dropped, persistently
        (reason ``shutdown``). Upload gets the time left; what is not delivered stays
        spooled, and one log line says how much and where.
        """
        if self._state is _State.CLOSED:
            return FlushResult(True, 0, 0.0)
        start = time.monotonic()
        limit = self.settings.shutdown_timeout if timeout is None else timeout
        if self._disabled:
            self._state = _State.CLOSED
            return FlushResult(True, 0, 0.0)
        was_open = self._state is _State.OPEN
        self._state = _State.CLOSED
        if not was_open and not self._batcher.buffer:
            return FlushResult(True, 0, 0.0)
        deadline = start + max(0.0, limit)
        up = self._uploader
        if up is not None:
            up.set_deadline(deadline)  # requests from now on end before the deadline
        closed = self._batcher.close(limit)  # memory to disk first (or counted as lost)
        flushed = closed.drained
        self._usage.close(max(0.0, deadline - time.monotonic()))
        pending = self._batcher.pending_events()
        if up is not None:
            if flushed and pending == 0:
                result = self._await_upload(deadline, start)
                pending = result.pending_events
                flushed = result.ok
            up.stop(max(0.0, deadline - time.monotonic()))
        _live_clients.discard(self)
        self._log_left_on_disk()
        return FlushResult(
            flushed and pending == 0,
            pending,
            time.monotonic() - start,
            dropped_events=closed.lost_events,
        )

    def _log_left_on_disk(self) -> None:
        """One line at shutdown when batches wait on disk: how many, where, what happens next."""
        try:
            left = self.spool.pending()
        except OSError:
            return
        if not left.events:
            return
        what = f"{_count(left.events, 'event')} ({_count(left.batches, 'batch')})"
        if self._uploader is None:
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

    def __enter__(self) -> TelemetryClient:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- lifecycle (async) ----------------------------------------------------------------

    async def flush(self, timeout: float | None = None) -> FlushResult:
        """Wait (on a worker thread) until everything emitted so far is sealed on disk."""
        if self._state is _State.CLOSED:
            raise ClientClosedError("this TelemetryClient is closed; create a new one")
        if self._disabled:
            return FlushResult(True, 0, 0.0)
        return await anyio.to_thread.run_sync(self._flush, timeout, abandon_on_cancel=True)

    async def aclose(self, timeout: float | None = None) -> FlushResult:
        """Async :meth:`close`: bounded flush, then stop. Idempotent."""
        if self._state is _State.CLOSED or self._disabled:
            return self.close(timeout)
        return await anyio.to_thread.run_sync(self.close, timeout, abandon_on_cancel=True)

    async def __aenter__(self) -> TelemetryClient:
        return self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    # -- introspection ----------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """This client's own counters (this process only)."""
        emitted = next(copy.copy(self._seq)) - 1
        base: dict[str, Any] = {
            "emitted": emitted,
            "spooled": 0,
            "uploaded": 0,
            "dropped": 0,
            "rejected": 0,
            "retries": 0,
            "pending": 0,
            "dropped_after_close": self._closed_drops,
        }
        if self._disabled:
            return base
        base.update(self._batcher.describe())
        if self._uploader is not None:
            base.update(self._uploader.describe())
        base["dropped_kill_switch"] = self._kill_switch_drops
        base["dropped"] += self._closed_drops + self._kill_switch_drops
        base["pending"] = self._batcher.pending_events()
        base.update(self._usage.describe())
        tracking = self.tracking_stats()
        if tracking["tracking_errors"] or tracking["coerced"]:
            coerced = dict(base.get("coerced") or {})
            for kind, n in tracking["coerced"].items():
                coerced[kind] = coerced.get(kind, 0) + n
            base["coerced"] = coerced
            base["tracking_errors"] = tracking["tracking_errors"]
        return base

    # -- fork hooks ---------------------------------------------------------------------------

    def _before_fork(self) -> None:
        self._start_lock.acquire()
        self._batcher.before_fork()

    def _after_fork_parent(self) -> None:
        self._batcher.after_fork_in_parent()
        self._start_lock.release()

    def _after_fork_child(self) -> None:
        self._start_lock = threading.Lock()
        self._batcher.after_fork_in_child()
        self._usage.after_fork_in_child()
        if self._uploader is not None:
            self._uploader.after_fork_in_child()
        self._seq = itertools.count(1)
        if self._state is _State.OPEN:
            self._state = _State.UNOPENED  # restart lazily in the child

    # -- agent runs and file changes (agent/run.py, agent/files.py) -----------------------

    def run(
        self,
        *,
        toolchain: str | None = None,
        model: str | None = None,
        run_id: str | None = None,
        coalesce_bytes: int = 4096,
        coalesce_ms: float = 250.0,
        clock: Callable[[], float] | None = None,
        **extra: Any,
    ) -> RunRecorder:
        """A recorder of one agent run: ``with client.run(...) as run:`` (or ``async with``).

        Emits ``started`` (a new UUID ``run_id`` unless given, ``toolchain``, ``model``,
        ``extra``), the events of ``run.prompt_sent(...)``, ``run.response_chunk(...)``, ...
        and ``completed``; see :mod:`telemetry_client.agent.run` for statuses, coalescing of
        streamed chunks (``coalesce_bytes``/``coalesce_ms``; ``clock`` is injectable) and costs.
        """
        return RunRecorder(
            self,
            toolchain=toolchain,
            model=model,
            run_id=run_id,
            coalesce_bytes=coalesce_bytes,
            coalesce_ms=coalesce_ms,
            clock=clock,
            extra=extra,
        )

    def file_operation(
        self,
        path: str | os.PathLike[str],
        before: str | bytes | None = None,
        after: str | bytes | None = None,
        op: str = "edit",
        op_id: str | None = None,
        **extra: Any,
    ) -> str:
        """Emit a ``file_operation`` (diff and line counts, or a binary summary); returns its id.

        The diff runs on the caller's thread (cost: :mod:`telemetry_client.agent.files`); large
        contents become attachments on the writer thread. Never raises.
        """
        return files.file_operation(
            self, path, before=before, after=after, op=op, op_id=op_id, extra=extra
        )

    def write_file(
        self,
        path: str | os.PathLike[str],
        content: str | bytes,
        *,
        encoding: str = "utf-8",
        op: str | None = None,
        op_id: str | None = None,
        **extra: Any,
    ) -> str:
        """Write ``content`` to ``path`` and emit the change (``edit``, or ``write`` if new).

        The old content is read first; the write's own errors (``OSError``, encoding
        errors) propagate as without telemetry, and then nothing is emitted. Returns the
        operation id.
        """
        return files.write_file(
            self, path, content, encoding=encoding, op=op, op_id=op_id, extra=extra
        )

    def track_file(
        self,
        path: str | os.PathLike[str],
        *,
        op: str | None = None,
        op_id: str | None = None,
        encoding: str = "utf-8",
        **extra: Any,
    ) -> TrackedFile:
        """``with client.track_file(path) as t:`` snapshot before, emit the change after."""
        return TrackedFile(self, path, op=op, op_id=op_id, encoding=encoding, extra=extra)

    def change_decision(
        self, op_id: str, decision: str, *, reason: str | None = None, **extra: Any
    ) -> None:
        """Emit a ``change_decision`` (accept/reject/revert) for the operation ``op_id``.

        Another value is coerced (case, past tense; else ``"invalid"``), counted in
        ``tracking_stats()["coerced"]`` and logged; never raises.
        """
        files.change_decision(self, op_id, decision, reason=reason, extra=extra)

    def tracking_stats(self) -> dict[str, Any]:
        """Counters of runs and file tracking: ``coerced`` by kind, ``tracking_errors``."""
        return files.tracking(self).snapshot()


def _count(n: int, noun: str) -> str:
    """``1 batch``, ``1,234 events``."""
    plural = noun if n == 1 else noun + ("es" if noun.endswith("ch") else "s")
    return f"{n:,} {plural}"


_live_clients: weakref.WeakSet[TelemetryClient] = weakref.WeakSet()


def _before_fork() -> None:
    for c in list(_live_clients):
        c._before_fork()


def _after_fork_parent() -> None:
    for c in list(_live_clients):
        c._after_fork_parent()


def _after_fork_child() -> None:
    for c in list(_live_clients):
        c._after_fork_child()


os.register_at_fork(
    before=_before_fork, after_in_parent=_after_fork_parent, after_in_child=_after_fork_child
)


@atexit.register
def _close_at_exit() -> None:
    """Interpreter exit: put what is still in memory on disk (bounded), as ``close()`` would."""
    for c in list(_live_clients):
        if c._state is _State.OPEN:
            c.close(timeout=min(2.0, c.settings.shutdown_timeout))
