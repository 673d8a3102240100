"""``TelemetryClient``: lifecycle and ``emit``/``flush``/``stats`` (README, "Python API").

The stages are built and wired by ``_pipeline.build``; the client keeps the public
contract around them. ``emit()`` hands a record to the batcher (a deque append); its
writer thread encodes, compresses and seals batches into the spool. Every blocking step
(disk, compression, fsync, waiting for the writer) runs on that thread or on a worker
thread via ``anyio.to_thread``, never on the caller's event loop.

Lifecycle: *unopened* -> *open* -> *closed*. ``emit()`` on an unopened client starts the
writer lazily, so plain scripts need no ceremony; ``async with`` / ``with`` / ``close()``
make shutdown explicit. A closed client cannot be reopened (``ClientClosedError``);
events emitted after close are counted (``dropped_after_close``) and logged, never raised.

Disabled (``TELEMETRY_ENABLED=0`` or ``DO_NOT_TRACK=1``): a true no-op. No directory,
thread, task or socket is ever created and ``emit()`` returns after one attribute check.

Fork safety: ``os.register_at_fork`` hooks quiesce the writer before a fork; the child
drops the parent's in-memory events (the parent still writes them), closes inherited spool
file descriptors without writing through them, and starts its own threads on first use.

An ``events.LLMCall`` or ``events.ChatTurn`` also goes to the usage recorder
(``telemetry_client.usage``: two type checks on the hot path, then a deque append).
"""

from __future__ import annotations

import atexit
import copy
import enum
import itertools
import os
import threading
import time
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import anyio.to_thread

from telemetry_client._pipeline import Pending, build
from telemetry_client.agent import files
from telemetry_client.agent.counters import tracking
from telemetry_client.agent.decisions import change_decision as emit_change_decision
from telemetry_client.agent.files import TrackedFile
from telemetry_client.agent.run import RunRecorder
from telemetry_client.context import session_id_var, user_id_var
from telemetry_client.errors import ClientClosedError
from telemetry_client.events import ChatTurn, Event, LLMCall
from telemetry_client.settings import TelemetrySettings

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
        pipeline = build(self.settings, redact_callback=redact_callback)
        self._pipeline = pipeline
        self._log = pipeline.log
        self._session_default = pipeline.session_id
        self.spool = pipeline.spool
        self._batcher = pipeline.batcher
        self._usage = pipeline.usage
        self._kill_switch = pipeline.kill_switch
        self._kill_switch_drops = 0
        self._start_lock = threading.Lock()
        _live_clients.add(self)

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
        ks = self._kill_switch
        if ks is not None and ks.until and ks.until > time.time():
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
                self._pipeline.start()
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
        done = self._pipeline.write_out(limit)
        if done.ok and self._state is _State.OPEN:
            done = self._pipeline.await_upload(deadline)
        return _result(done, start)

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
        if not was_open and not self._batcher.pending_events():
            return FlushResult(True, 0, 0.0)
        done = self._pipeline.close(start + max(0.0, limit))  # logs what stays on disk
        _live_clients.discard(self)
        return _result(done, start)

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
        base.update(self._pipeline.describe())
        base["dropped_kill_switch"] = self._kill_switch_drops
        base["dropped"] += self._closed_drops + self._kill_switch_drops
        base["pending"] = self._batcher.pending_events()
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
        self._pipeline.before_fork()

    def _after_fork_parent(self) -> None:
        self._pipeline.after_fork_in_parent()
        self._start_lock.release()

    def _after_fork_child(self) -> None:
        self._start_lock = threading.Lock()
        self._pipeline.after_fork_in_child()
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

        The diff runs on the caller's thread (cost: :mod:`telemetry_client.agent.diff`); large
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
        emit_change_decision(self, op_id, decision, reason=reason, extra=extra)

    def tracking_stats(self) -> dict[str, Any]:
        """Counters of runs and file tracking: ``coerced`` by kind, ``tracking_errors``."""
        return tracking(self).snapshot()


def _result(done: Pending, start: float) -> FlushResult:
    return FlushResult(done.ok, done.events, time.monotonic() - start, dropped_events=done.lost)


_live_clients: weakref.WeakSet[TelemetryClient] = weakref.WeakSet()


def _each_client(hook: str) -> Callable[[], None]:
    def run() -> None:
        for c in list(_live_clients):
            getattr(c, hook)()

    return run


os.register_at_fork(
    before=_each_client("_before_fork"),
    after_in_parent=_each_client("_after_fork_parent"),
    after_in_child=_each_client("_after_fork_child"),
)


@atexit.register
def _close_at_exit() -> None:
    """Interpreter exit: put what is still in memory on disk (bounded), as ``close()`` would."""
    for c in list(_live_clients):
        if c._state is _State.OPEN:
            c.close(timeout=min(2.0, c.settings.shutdown_timeout))
