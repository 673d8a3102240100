"""Run recorder: one agent invocation (e.g. a Claude or Codex adapter run) as an ordered stream.

``client.run(toolchain="claude", model="sonnet", **extra)`` returns a :class:`RunRecorder`,
used as ``with`` or ``async with`` (the same object does both) or by hand (``start()`` /
``finish()``). Entering emits ``started`` (``run_id``: a UUID string, ``toolchain``,
``model``, the extra keyword arguments); the helpers emit the run stream (``prompt_sent``,
``response_chunk``, ``response_complete``, ``tool_call``, ``tool_result``,
``bash_command``, ``bash_output``, ``file_read``, ``file_write``, ``thinking``); leaving
emits ``completed`` with ``status``, ``exit_code`` and ``duration_ms``:

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

``run.finish(status, exit_code=...)`` ends the run explicitly (e.g. with the exit code of
the agent's process); later exits do nothing. Every event of the run carries ``run_id``
and ``run_seq`` (1, 2, 3, ... in emit order: ``started`` is 1), and the session/user ids
in effect where the recorder was created, whichever thread emits.

Coalescing: ``response_chunk(text)`` appends to a buffer that becomes *one*
``response_chunk`` event (``content``: the concatenated text, ``index``: the ordinal of
its first chunk, ``chunks``: how many were joined) when it holds ``coalesce_bytes``
(default 4 KiB, UTF-8) or its first chunk is ``coalesce_ms`` old (default 250 ms; checked
when the next chunk arrives: there is no timer thread, so a buffer waits for the next
chunk or run event), and before any other event of the run, so the stream keeps its order.
``bash_output(text, stream=...)`` is coalesced the same way per stream; stdout and
stderr buffers do not flush each other (their relative order is only kept at the
granularity of coalesced events), anything else does. ``bash_output(..., exit_code=n)``
ends the command: every other buffer goes out, then this stream's with ``exit_code``.
``run.flush()`` emits the buffers now; ``coalesce_bytes=0`` emits every chunk.
Content still buffered when a recorder is dropped without ``finish`` is lost.

Cost on the caller's thread (measured on a 2-core VM, CPython 3.11): a chunk costs a
lock, a clock read and a list append (about 1 µs); other helpers build one small event
and call ``emit()`` (about 2 µs); the error event formats the traceback. Thread-safe:
one lock per run orders the events; it is held while emitting, so concurrent helpers of
one run serialise for microseconds.

Never raises for telemetry reasons: a failure inside a helper is counted
(``client.tracking_stats()["tracking_errors"]``) and logged at most once per cooldown.
A disabled client gives a recorder whose helpers return at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any

import anyio

from telemetry_client._internal import ids as _ids
from telemetry_client.agent.files import tracking
from telemetry_client.context import session_id_var, user_id_var
from telemetry_client.events import (
    BashCommand,
    BashOutput,
    Completed,
    Error,
    FileRead,
    FileWrite,
    PromptSent,
    ResponseChunk,
    ResponseComplete,
    Started,
    Thinking,
    ToolCall,
    ToolResult,
)

if TYPE_CHECKING:
    from telemetry_client.client import TelemetryClient

__all__ = ["DEFAULT_COALESCE_BYTES", "DEFAULT_COALESCE_MS", "STATUSES", "RunRecorder"]

DEFAULT_COALESCE_BYTES = 4096
DEFAULT_COALESCE_MS = 250.0
#: The statuses ``completed`` reports by itself.
STATUSES = ("success", "error", "cancelled")

_RunEvent = (
    Started
    | PromptSent
    | ResponseChunk
    | ResponseComplete
    | ToolCall
    | ToolResult
    | BashCommand
    | BashOutput
    | FileRead
    | FileWrite
    | Thinking
    | Completed
    | Error
)
_Key = tuple[str, str | None]  # ("response", None) or ("bash", stream)
_RESPONSE: _Key = ("response", None)
_CANCELLED = (asyncio.CancelledError, KeyboardInterrupt, GeneratorExit)

_NEW, _RUNNING, _FINISHED = 0, 1, 2


class _Pending:
    """Chunks waiting to become one event."""

    __slots__ = ("count", "first_at", "index", "parts", "size")

    def __init__(self, first_at: float, index: int) -> None:
        self.first_at = first_at
        self.index = index
        self.parts: list[str] = []
        self.size = 0
        self.count = 0


def _utf8_len(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))


def _as_text(value: object) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).decode("utf-8", "replace")
    return "" if value is None else str(value)


def _size_of(content: object) -> int | None:
    if isinstance(content, str):
        return _utf8_len(content)
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
        self._max_bytes = max(0, int(coalesce_bytes))
        self._max_age = max(0.0, float(coalesce_ms)) / 1000.0
        self._clock = clock or time.monotonic
        self._session = session_id_var.get()
        self._user = user_id_var.get()
        self._lock = threading.Lock()
        self._state = _NEW
        self._seq = 0
        self._started_at = 0.0
        self._pending: dict[_Key, _Pending] = {}
        self._chunk_counts: dict[_Key, int] = {}

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
                self._flush_locked()
        except Exception as exc:
            self._failed("flush", exc)

    def __enter__(self) -> RunRecorder:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._finish(exc)

    async def __aenter__(self) -> RunRecorder:
        return self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
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
                text = _as_text(text)
            now = self._clock()
            with self._lock:
                self._append_locked(_RESPONSE, text, now, None)
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
            text = output if type(output) is str else _as_text(output)
            now = self._clock()
            with self._lock:
                if text or exit_code is not None:
                    self._append_locked(("bash", stream), text, now, exit_code)
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

    def _emit(self, where: str, event: _RunEvent, extra: Mapping[str, Any]) -> None:
        if not self._active:
            return
        try:
            if extra:
                event.attributes = dict(extra)
            with self._lock:
                self._flush_locked()
                self._send_locked(event)
        except Exception as exc:
            self._failed(where, exc)

    def _start_locked(self) -> None:
        self._state = _RUNNING
        self._started_at = self._clock()
        event = Started(toolchain=self.toolchain, model=self.model, attributes=self._extra)
        self._send_locked(event)

    def _send_locked(self, event: _RunEvent) -> None:
        """Stamp and emit one event (no flush of buffers: callers decide)."""
        if self._state == _NEW:
            self._start_locked()
        self._seq += 1
        event.run_id = self.run_id
        event.run_seq = self._seq
        self._client.emit(event, session_id=self._session, user_id=self._user)

    def _append_locked(self, key: _Key, text: str, now: float, exit_code: int | None) -> None:
        pending = self._pending
        if pending and (len(pending) > 1 or key not in pending):
            # order across kinds: another kind's buffer (and, to end a stream, every
            # other buffer) goes out before this one grows
            for other in list(pending):
                if other != key and (exit_code is not None or other[0] != key[0]):
                    self._send_pending_locked(other, None)
        buf = pending.get(key)
        if buf is None:
            index = self._chunk_counts.get(key, 0)
            buf = pending[key] = _Pending(now, index)
        if text:
            buf.parts.append(text)
            buf.size += _utf8_len(text)
            buf.count += 1
            self._chunk_counts[key] = buf.index + buf.count
        if (
            exit_code is not None
            or buf.size >= self._max_bytes
            or now - buf.first_at >= self._max_age
            or self._state == _FINISHED
        ):
            self._send_pending_locked(key, exit_code)

    def _send_pending_locked(self, key: _Key, exit_code: int | None) -> None:
        buf = self._pending.pop(key)
        content = "".join(buf.parts) if buf.parts else None
        count = buf.count or None
        if key[0] == "response":
            self._send_locked(ResponseChunk(content=content, index=buf.index, chunks=count))
        else:
            event = BashOutput(
                output=content, stream=key[1], exit_code=exit_code, index=buf.index, chunks=count
            )
            self._send_locked(event)

    def _flush_locked(self) -> None:
        for key in list(self._pending):
            self._send_pending_locked(key, None)

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
                self._flush_locked()
                final = status or _status_of(exc, cancelled)
                code = exit_code if exit_code is not None else self.exit_code
                if isinstance(exc, SystemExit) and isinstance(exc.code, int) and code is None:
                    code = exc.code
                if exc is not None and final == "error":
                    self._send_locked(Error.from_exception(exc))
                duration_ms = round((self._clock() - self._started_at) * 1000.0, 3)
                done = Completed(
                    status=final,
                    exit_code=code,
                    duration_ms=duration_ms,
                    attributes=dict(extra) if extra else None,
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
