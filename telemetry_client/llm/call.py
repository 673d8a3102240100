"""One recorded LLM call, from the request to the emitted :class:`~telemetry_client.events.LLMCall`.

The HTTP layer (the httpx transport wrapper, the recording proxy) hands a :class:`Call`
plain values: the provider and path, the request body bytes, then the response's status
and headers, the raw body chunks as the caller reads them, and how the call ended. The
call parses the request when it ends (never before it is sent), feeds the response to a
:class:`~telemetry_client.llm.response.ResponseParser` and emits one event. No HTTP
library here.
"""

from __future__ import annotations

import asyncio
import re
import sys
import time
from collections.abc import Callable, Mapping
from typing import Any

from telemetry_client.events import LLMCall
from telemetry_client.llm.formats import MAX_ERROR_CHARS
from telemetry_client.llm.request import parse_request
from telemetry_client.llm.response import DEFAULT_MAX_PARSE_BYTES, ResponseParser

__all__ = ["Call", "error_text", "is_cancellation"]

# Memory addresses in exception texts (``<Task ... at 0x7f54...>``, anyio's ``cancel scope
# 7f54...``) make every occurrence unique; they are masked so errors group.
_ADDRESS = re.compile(r"\b0x[0-9a-fA-F]{6,}\b|(?<=cancel scope )[0-9a-fA-F]{6,}\b")


def is_cancellation(exc: BaseException) -> bool:
    """``exc`` says the caller stopped waiting (task cancelled, Ctrl-C), not that the call failed.

    asyncio's ``CancelledError`` (also what anyio raises on asyncio), trio's ``Cancelled``
    and ``KeyboardInterrupt``.
    """
    if isinstance(exc, asyncio.CancelledError | KeyboardInterrupt):
        return True
    trio = sys.modules.get("trio")  # never imported here: only if the app uses it
    cancelled = getattr(trio, "Cancelled", None)
    return isinstance(cancelled, type) and isinstance(exc, cancelled)


def error_text(exc: BaseException) -> str:
    """``"Type: message"`` for an event, memory addresses masked (so errors group), bounded."""
    text = _ADDRESS.sub("…", str(exc))
    name = type(exc).__name__
    return (f"{name}: {text}" if text else name)[:MAX_ERROR_CHARS]


class Call:
    """One recorded LLM call, from request to emitted :class:`LLMCall`.

    Every method is safe to call from the caller's path: failures are reported through
    ``on_error(where, exc)`` and swallowed, never raised. ``finish`` emits exactly once.

    A call that ends before its body's own end (``finish(closed_early=True)``: the caller
    closed the response; or ``fail`` with a cancellation: the caller's task was cancelled,
    e.g. its client disconnected) is emitted with ``closed_early`` (and ``cancelled``), no
    ``error``, and ``partial``: the answer and usage are what had arrived. A read error
    after the head is an ``error`` with ``partial`` set the same way.

    A streamed (SSE) response's time to its first body chunk, from the call's start, goes
    into the event's attributes as ``ttft_ms`` (time to first token, as LLM gateways measure
    it); ``attributes`` given here are merged in too.
    """

    __slots__ = (
        "_attributes",
        "_body",
        "_cancelled",
        "_capture",
        "_closed_early",
        "_emit",
        "_error",
        "_max_bytes",
        "_on_error",
        "_parser",
        "_partial",
        "_t0",
        "_t_first",
        "done",
        "endpoint",
        "provider",
        "request_bytes",
        "response_bytes",
        "status",
    )

    def __init__(
        self,
        *,
        provider: str,
        endpoint: str,
        body: bytes | None,
        request_bytes: int,
        emit: Callable[[LLMCall], None],
        on_error: Callable[[str, BaseException], None],
        capture_content: bool = False,
        max_parse_bytes: int = DEFAULT_MAX_PARSE_BYTES,
        attributes: Mapping[str, Any] | None = None,
    ) -> None:
        self._t0 = time.perf_counter()
        self._t_first: float | None = None  # the first body chunk of the response
        self._attributes = attributes
        self.provider = provider
        self.endpoint = endpoint
        self._body = body  # the caller's own bytes object; parsed when the call ends
        self.request_bytes = request_bytes
        self._emit = emit
        self._on_error = on_error
        self._capture = capture_content
        self._max_bytes = max_parse_bytes
        self.status: int | None = None
        self.response_bytes = 0
        self._parser: ResponseParser | None = None
        self._error: str | None = None
        self._closed_early = False
        self._cancelled = False
        self._partial = False
        self.done = False

    @property
    def complete(self) -> bool:
        """A stream's own end was seen (``[DONE]``, ``message_stop``, ...); JSON: after finish."""
        parser = self._parser
        return parser is not None and parser.complete

    def on_response(self, status: int, content_type: str, content_encoding: str) -> None:
        """The response head arrived."""
        try:
            self.status = status
            self._parser = ResponseParser(
                content_type=content_type,
                content_encoding=content_encoding,
                capture_content=self._capture,
                max_bytes=self._max_bytes,
            )
        except Exception as exc:
            self._on_error("response", exc)

    def feed(self, chunk: bytes) -> None:
        """The caller read this raw body chunk."""
        try:
            if self._t_first is None and chunk:
                self._t_first = time.perf_counter()
            self.response_bytes += len(chunk)
            parser = self._parser
            if parser is not None and not parser.dead:
                parser.feed(chunk)
        except Exception as exc:
            self._parser = None  # a parser that failed once is not trusted again
            self._on_error("parse", exc)

    def feed_decoded(self, body: bytes) -> None:
        """The transport had already read the whole (decoded) body."""
        try:
            self.response_bytes += len(body)
            if self._parser is not None:
                self._parser.feed_decoded(body)
        except Exception as exc:
            self._parser = None
            self._on_error("parse", exc)

    def fail(self, exc: BaseException) -> None:
        """The request or the body read ended with ``exc`` (the caller sees it unchanged).

        A cancellation (:func:`is_cancellation`) is not an error: the call is emitted as
        closed early and cancelled.
        """
        if self.done:
            return
        try:
            if is_cancellation(exc):
                self._cancelled = True
                self.finish(closed_early=True)
                return
            self._error = error_text(exc)
        except Exception as err:
            self._on_error("fail", err)
        self.finish()

    def finish(self, *, closed_early: bool = False) -> None:
        """The call ended: emit its event (only the first call does anything)."""
        if self.done:
            return
        self.done = True
        parser = self._parser
        if parser is not None:
            try:
                parser.close()
            except Exception as exc:
                self._parser = parser = None
                self._on_error("parse", exc)
        try:
            complete = parser is not None and parser.complete
            self._closed_early = closed_early and self._error is None and not complete
            self._cancelled = self._cancelled and self._closed_early
            # What arrived is only part of the answer (an answer had started: a status).
            self._partial = (
                self.status is not None
                and not complete
                and (self._closed_early or self._error is not None)
            )
            self._emit(self._event())
        except Exception as exc:
            self._on_error("emit", exc)

    def _event(self) -> LLMCall:
        latency_ms = round((time.perf_counter() - self._t0) * 1000.0, 3)
        parser = self._parser
        model, stream, prompt = None, False, None
        try:
            model, stream, prompt = parse_request(
                self._body, self.endpoint, capture_content=self._capture, max_bytes=self._max_bytes
            )
        except Exception as exc:
            self._on_error("request", exc)
        self._body = None
        answer = None
        attributes = self._attributes
        inp = out = total = cache_read = cache_creation = reasoning = None
        error = self._error
        if parser is not None:
            stream = stream or parser.streamed
            model = model or parser.model
            inp, out, total = parser.input_tokens, parser.output_tokens, parser.total_tokens
            if total is None and inp is not None and out is not None:
                total = inp + out
            cache_read = parser.cache_read_input_tokens
            cache_creation = parser.cache_creation_input_tokens
            reasoning = parser.reasoning_tokens
            answer = parser.answer
            if parser.streamed and self._t_first is not None:
                ttft = round((self._t_first - self._t0) * 1000.0, 3)
                attributes = {**(attributes or {}), "ttft_ms": ttft}
            if error is None and self.status is not None and self.status >= 400:
                msg = parser.error_message
                error = f"HTTP {self.status}: {msg}" if msg else f"HTTP {self.status}"
        elif error is None and self.status is not None and self.status >= 400:
            error = f"HTTP {self.status}"
        return LLMCall(
            provider=self.provider,
            model=model,
            endpoint=self.endpoint,
            status=self.status,
            error=error,
            latency_ms=latency_ms,
            streamed=stream,
            request_bytes=self.request_bytes,
            response_bytes=self.response_bytes,
            input_tokens=inp,
            output_tokens=out,
            total_tokens=total,
            cache_read_input_tokens=cache_read,
            cache_creation_input_tokens=cache_creation,
            reasoning_tokens=reasoning,
            prompt=prompt,
            answer=answer if self._capture else None,
            closed_early=True if self._closed_early else None,
            cancelled=True if self._cancelled else None,
            partial=True if self._partial else None,
            attributes=attributes,
        )
