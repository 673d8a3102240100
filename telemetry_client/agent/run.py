"""Run recorder: one agent invocation (e.g. a Claude or Codex adapter run) as an ordered stream.

``client.run(toolchain="claude", model="sonnet", **extra)`` returns a :class:`RunRecorder`,
used as ``with`` or ``async with`` (the same object does both) or by hand (``start()`` /
``finish()``). Entering emits ``started`` (``run_id``: a UUID string, ``toolchain``,
``model``, the extra keyword arguments); the helpers emit the run stream (``prompt_sent``,
``response_chunk``, ``response_complete``, ``tool_call``, ``tool_result``,
``bash_command``, ``bash_output``, ``file_read``, ``file_write``, ``thinking``); leaving
emits ``completed`` with ``status``, ``exit_code``, ``duration_ms`` (and the run's
``toolchain`` and ``model`` again, so that it describes the run on its own):

==========================================  =============================================
the block ...                                emits
==========================================  =============================================
ends normally                                ``completed(status="success")``
raises (the exception propagates unchanged)  ``error`` (``Error.from_exception``, with the
                                             run id) then ``completed(status="error")``
is cancelled (``asyncio.CancelledError``,    ``completed(status="cancelled")``
the async library's cancellation,
``KeyboardInterrupt``, ``GeneratorExit``)
raises ``SystemExit(code)``                  ``success`` for code 0/None, else ``error``;
                                             ``exit_code`` is the code when it is an int
==========================================  =============================================

Inside the ``with`` block the run is the *active run* of the context
(:data:`active_run_id_var`): the httpx integration stamps its ``run_id`` on the
``llm_call`` events recorded there, so an OTLP backend shows them as the run's children.

``run.finish(status, exit_code=...)`` ends the run explicitly (e.g. with the exit code of
the agent's process); later exits do nothing. Every event of the run carries ``run_id``
and ``run_seq`` (1, 2, 3, ... in emit order: ``started`` is 1), and the session/user ids
in effect where the recorder was created, whichever thread emits.

``response_chunk`` and ``bash_output`` chunks are coalesced into few events by size
(``coalesce_bytes``, 4 KiB) or age (``coalesce_ms``, 250 ms), in stream order (rules:
:mod:`telemetry_client.agent.coalesce`); ``run.flush()`` emits them now; content still
buffered when a recorder is dropped without ``finish`` is lost. Thread-safe: one lock per
run orders the events (costs: docs/features.md, "Agent runs").

Never raises for telemetry reasons: a failure inside a helper is counted
(``client.tracking_stats()["tracking_errors"]``) and logged at most once per cooldown.
A disabled client gives a recorder whose helpers return at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any

import anyio

from telemetry_client._internal import ids as _ids
from telemetry_client.agent.coalesce import RESPONSE, Coalescer, as_text, utf8_len
from telemetry_client.agent.counters import tracking
from telemetry_client.context import session_id_var, user_id_var
from telemetry_client.events import (
    BashCommand,
    Completed,
    Error,
    FileRead,
    FileWrite,
    PromptSent,
    ResponseComplete,
    RunEvent,
    Started,
    Thinking,
    ToolCall,
    ToolResult,
)

if TYPE_CHECKING:
    from telemetry_client.client import TelemetryClient

__all__ = [
    "DEFAULT_COALESCE_BYTES",
    "DEFAULT_COALESCE_MS",
    "STATUSES",
    "RunRecorder",
    "active_run_id_var",
]

#: The run active in this context (inside ``with client.run()`` / ``async with``): an
#: ``llm_call`` recorded here carries its ``run_id`` (OTLP makes it a child of the run).
active_run_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "telemetry_active_run_id", default=None
)

DEFAULT_COALESCE_BYTES = 4096
DEFAULT_COALESCE_MS = 250.0
#: The statuses ``completed`` reports by itself.
STATUSES = ("success", "error", "cancelled")

_CANCELLED = (asyncio.CancelledError, KeyboardInterrupt, GeneratorExit)

_NEW, _RUNNING, _FINISHED = 0, 1, 2


def _size_of(content: object) -> int | None:
    if isinstance(content, str):
        return utf8_len(content)
    if isinstance(content, bytes | bytearray | memoryview):
        return len(content)
    return None


class RunRecorder:
    """Records one agent run; see the module documentation. Build it with ``client.run()``."""

    def __init__(
        self,
        client: TelemetryClient,
        *,
        toolchain: str | None = None,
        model: str | None = None,
        run_id: str | None = None,
        coalesce_bytes: int = DEFAULT_COALESCE_BYTES,
        coalesce_ms: float = DEFAULT_COALESCE_MS,
        clock: Callable[[], float] | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        self.run_id = run_id or str(uuid.uuid4())
        self.toolchain = toolchain
        self.model = model
        #: Final status once the run is finished (``success``/``error``/``cancelled``).
        self.status: str | None = None
        #: Reported in ``completed`` unless ``finish(exit_code=...)`` says otherwise.
        self.exit_code: int | None = None
        self._client = client
        self._active = client.enabled
        self._extra = dict(extra) if extra else None
        self._clock = clock or time.monotonic
        self._session = session_id_var.get()
        self._user = user_id_var.get()
        self._lock = threading.Lock()
        self._state = _NEW
        self._seq = 0
        self._started_at = 0.0
        self._chunks = Coalescer(
            self._send_locked,
            max_bytes=max(0, int(coalesce_bytes)),
            max_age_s=max(0.0, float(coalesce_ms)) / 1000.0,
        )
        self._append_chunk = self._chunks.append  # bound once: the per-chunk path
        self._tokens: list[contextvars.Token[str | None]] = []  # active_run_id_var, per enter

    # -- lifecycle ------------------------------------------------------------------------

    @property
    def finished(self) -> bool:
        """True once ``completed`` was emitted."""
        return self._state == _FINISHED

    def start(self) -> RunRecorder:
        """Emit ``started`` (once; helpers called first start the run themselves)."""
        if self._active:
            try:
                with self._lock:
                    if self._state == _NEW:
                        self._start_locked()
            except Exception as exc:
                self._failed("start", exc)
        return self

    def finish(
        self, status: str | None = None, *, exit_code: int | None = None, **extra: Any
    ) -> None:
        """Flush buffered chunks and emit ``completed`` (once). ``status`` defaults to success."""
        self._finish(None, status=status, exit_code=exit_code, extra=extra)

    def flush(self) -> None:
        """Emit the coalesced chunks buffered so far now."""
        if not self._active:
            return
        try:
            with self._lock:
                self._chunks.flush()
        except Exception as exc:
            self._failed("flush", exc)

    def __enter__(self) -> RunRecorder:
        self._tokens.append(active_run_id_var.set(self.run_id))
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._leave()
        self._finish(exc)

    async def __aenter__(self) -> RunRecorder:
        self._tokens.append(active_run_id_var.set(self.run_id))
        return self.start()

    def _leave(self) -> None:
        """Restore the outer active run (a token from another context is only dropped)."""
        if self._tokens:
            with contextlib.suppress(ValueError):
                active_run_id_var.reset(self._tokens.pop())

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._leave()
        cancelled: tuple[type[BaseException], ...] = _CANCELLED
        with contextlib.suppress(Exception):  # trio's Cancelled too, under anyio on trio
            cancelled = (*_CANCELLED, anyio.get_cancelled_exc_class())
        self._finish(exc, cancelled=cancelled)

    # -- helpers ----------------------------------------------------------------------------

    def prompt_sent(
        self, prompt: str | None = None, *, tokens: int | None = None, **extra: Any
    ) -> None:
        """The prompt sent to the model."""
        self._emit("prompt_sent", PromptSent(prompt=prompt, tokens=tokens), extra)

    def response_chunk(self, text: str) -> None:
        """A piece of streamed model output (coalesced; see the module documentation)."""
        if not self._active or not text:
            return
        try:
            if type(text) is not str:
                text = as_text(text)
            now = self._clock()
            with self._lock:
                self._append_chunk(RESPONSE, text, now, None, self._state == _FINISHED)
        except Exception as exc:
            self._failed("response_chunk", exc)

    def response_complete(
        self, content: str | None = None, *, tokens: int | None = None, **extra: Any
    ) -> None:
        """The model's full response (after its chunks)."""
        self._emit("response_complete", ResponseComplete(content=content, tokens=tokens), extra)

    def tool_call(
        self,
        tool_name: str,
        *,
        args: Any = None,
        call_id: str | None = None,
        result: Any = None,
        duration_ms: float | None = None,
        error: str | None = None,
        **extra: Any,
    ) -> str:
        """The agent called a tool; returns ``call_id`` (a new UUIDv7 when not given)."""
        # _ids draws from a private RNG: os.urandom (uuid4) would release the GIL per call
        call_id = call_id or _ids.event_id(time.time_ns())
        event = ToolCall(
            tool_name=tool_name,
            call_id=call_id,
            args=args,
            result=result,
            duration_ms=duration_ms,
            error=error,
        )
        self._emit("tool_call", event, extra)
        return call_id

    def tool_result(
        self,
        tool_name: str | None = None,
        *,
        call_id: str | None = None,
        result: Any = None,
        is_error: bool | None = None,
        duration_ms: float | None = None,
        **extra: Any,
    ) -> None:
        """The result of a tool call (large results become attachments)."""
        event = ToolResult(
            tool_name=tool_name,
            call_id=call_id,
            result=result,
            is_error=is_error,
            duration_ms=duration_ms,
        )
        self._emit("tool_result", event, extra)

    def bash_command(self, command: str, *, cwd: str | None = None, **extra: Any) -> None:
        """A shell command the agent ran."""
        self._emit("bash_command", BashCommand(command=command, cwd=cwd), extra)

    def bash_output(
        self, output: str | None, *, stream: str = "stdout", exit_code: int | None = None
    ) -> None:
        """Output of a shell command, coalesced per ``stream``; ``exit_code`` ends the stream."""
        if not self._active:
            return
        try:
            text = output if type(output) is str else as_text(output)
            now = self._clock()
            with self._lock:
                if text or exit_code is not None:
                    self._append_chunk(
                        ("bash", stream), text, now, exit_code, self._state == _FINISHED
                    )
        except Exception as exc:
            self._failed("bash_output", exc)

    def file_read(
        self,
        path: Any,
        *,
        content: str | None = None,
        size: int | None = None,
        **extra: Any,
    ) -> None:
        """The agent read a file (``size`` defaults to the content's UTF-8 length)."""
        if size is None and content is not None:
            size = _size_of(content)
        self._emit("file_read", FileRead(path=str(path), content=content, size=size), extra)

    def file_write(
        self,
        path: Any,
        *,
        content: str | None = None,
        size: int | None = None,
        **extra: Any,
    ) -> None:
        """The agent wrote a file (``size`` defaults to the content's UTF-8 length)."""
        if size is None and content is not None:
            size = _size_of(content)
        self._emit("file_write", FileWrite(path=str(path), content=content, size=size), extra)

    def thinking(self, content: str | None, **extra: Any) -> None:
        """Model reasoning / planning text."""
        self._emit("thinking", Thinking(content=content), extra)

    # -- internals --------------------------------------------------------------------------

    def _failed(self, where: str, exc: BaseException) -> None:
        with contextlib.suppress(Exception):  # counting must not raise either
            tracking(self._client).failed(f"run.{where}", exc)

    def _emit(self, where: str, event: RunEvent, extra: Mapping[str, Any]) -> None:
        if not self._active:
            return
        try:
            if extra:
                event.attributes = dict(extra)
            with self._lock:
                self._chunks.flush()
                self._send_locked(event)
        except Exception as exc:
            self._failed(where, exc)

    def _start_locked(self) -> None:
        self._state = _RUNNING
        self._started_at = self._clock()
        event = Started(toolchain=self.toolchain, model=self.model, attributes=self._extra)
        self._send_locked(event)

    def _send_locked(self, event: RunEvent) -> None:
        """Stamp and emit one event (no flush of buffers: callers decide)."""
        if self._state == _NEW:
            self._start_locked()
        self._seq += 1
        event.run_id = self.run_id
        event.run_seq = self._seq
        self._client.emit(event, session_id=self._session, user_id=self._user)

    def _finish(
        self,
        exc: BaseException | None,
        *,
        status: str | None = None,
        exit_code: int | None = None,
        extra: Mapping[str, Any] | None = None,
        cancelled: tuple[type[BaseException], ...] = _CANCELLED,
    ) -> None:
        """Emit the end of the run once. Never raises; ``exc`` is only described."""
        if not self._active:
            if self._state != _FINISHED:
                self._state = _FINISHED
                self.status = status or _status_of(exc, cancelled)
            return
        try:
            with self._lock:
                if self._state == _FINISHED:
                    return
                if self._state == _NEW:
                    self._start_locked()
                self._chunks.flush()
                final = status or _status_of(exc, cancelled)
                code = exit_code if exit_code is not None else self.exit_code
                if isinstance(exc, SystemExit) and isinstance(exc.code, int) and code is None:
                    code = exc.code
                if exc is not None and final == "error":
                    self._send_locked(Error.from_exception(exc))
                duration_ms = round((self._clock() - self._started_at) * 1000.0, 3)
                # The run's toolchain/model again, so that ``completed`` alone describes the
                # run (OTLP names the run's root span from it, whatever the batching).
                described = {"toolchain": self.toolchain, "model": self.model}
                tail = {k: v for k, v in described.items() if v is not None} | dict(extra or {})
                done = Completed(
                    status=final,
                    exit_code=code,
                    duration_ms=duration_ms,
                    attributes=tail or None,
                )
                self._send_locked(done)
                self._state = _FINISHED
                self.status = final
                self.exit_code = code
        except Exception as err:
            self._failed("finish", err)


def _status_of(exc: BaseException | None, cancelled: tuple[type[BaseException], ...]) -> str:
    if exc is None:
        return "success"
    if isinstance(exc, SystemExit):
        return "success" if exc.code in (0, None) else "error"
    if isinstance(exc, cancelled):
        return "cancelled"
    return "error"
