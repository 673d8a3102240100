"""LLM calls over httpx: a transport wrapper that emits one ``events.LLMCall`` per LLM request.

The official ``openai`` and ``anthropic`` SDKs send through an httpx (or ``httpx2``)
client, so one wrapped transport records every model call they make::

    import anthropic, openai
    from telemetry_client.integrations.httpx import instrument, instrumented_http_client

    llm = instrument(anthropic.Anthropic(), telemetry)  # wraps the SDK's own client
    gpt = openai.OpenAI(http_client=instrumented_http_client(telemetry))

    # or wrap an httpx/httpx2 client you already have:
    instrument(existing_http_client, telemetry, capture_content=True)

``instrument()`` accepts ``httpx``/``httpx2`` clients and the SDK clients built on them:
``openai`` >= 1.0 and ``anthropic`` >= 0.30 (sync and async). Like a Sentry or
OpenTelemetry integration, it never stops the app: given anything else, it logs one
warning and returns the object unchanged (nothing is recorded for it).

What is an LLM call: by default a ``POST`` to a path ending in ``/chat/completions``,
``/completions``, ``/responses``, ``/messages``, ``/embeddings``, ``:generateContent`` or
``:streamGenerateContent`` (``should_record=`` replaces the rule). Every other request
passes straight through.

Per call the event records the provider (from the host, ``provider_overrides`` first),
model, URL path (no query), status, error, latency (request start to the end of the
body), whether it streamed, body bytes on the wire each way, token usage (input, output,
total, cache reads and writes, reasoning) and, with ``capture_content=True``, the prompt
and the answer (redacted by the client, large ones moved to attachments). The event is
emitted when the caller has read the body to its end or closed the response. A response
closed before its end carries ``closed_early: true`` and ``partial: true`` with whatever
answer and usage had arrived; when the caller's task was cancelled meanwhile (a client
disconnecting from a streaming endpoint), also ``cancelled: true``, and no ``error``.
Error texts have memory addresses masked, so equal errors group.

The wrapper never changes what the caller receives and never raises into it: the body
is observed chunk by chunk as the caller reads it (no extra buffering, no extra reads),
every telemetry step is guarded (failures counted in ``stats()["errors"]`` and logged,
rate-limited), and the caller's own exceptions (connect errors, timeouts, cancellation)
propagate unchanged, after the ``LLMCall`` is emitted.
"""

from __future__ import annotations

import contextlib
import inspect
import sys
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from types import TracebackType
from typing import Any, TypeVar

import httpx

from telemetry_client._internal.log import RateLimitedLogger, logger
from telemetry_client.client import TelemetryClient
from telemetry_client.events import LLMCall
from telemetry_client.llm.parse import (
    DEFAULT_MAX_PARSE_BYTES,
    DEFAULT_PROVIDERS,
    LLM_PATH_SUFFIXES,
    detect_provider,
    is_llm_path,
)
from telemetry_client.llm.parse import Call as _Call

__all__ = [
    "DEFAULT_PROVIDERS",
    "LLM_PATH_SUFFIXES",
    "AsyncInstrumentedTransport",
    "InstrumentedTransport",
    "default_should_record",
    "detect_provider",
    "instrument",
    "instrumented_async_http_client",
    "instrumented_http_client",
    "is_llm_path",
]

_T = TypeVar("_T")
_S = TypeVar("_S", bound="InstrumentedTransport")
_AS = TypeVar("_AS", bound="AsyncInstrumentedTransport")
RequestPredicate = Callable[[httpx.Request], bool]


def default_should_record(request: httpx.Request) -> bool:
    """``POST`` to a path ending in a known LLM API suffix (see the module docstring)."""
    return is_llm_path(request.method, request.url.path)


class _Recorder:
    """One transport's options and counters; starts a :class:`Call` per LLM request."""

    def __init__(
        self,
        telemetry: TelemetryClient,
        *,
        capture_content: bool,
        provider_overrides: Mapping[str, str] | None,
        should_record: RequestPredicate | None,
        max_parse_bytes: int,
    ) -> None:
        self.telemetry = telemetry
        self.capture_content = capture_content
        self.overrides = {k.lower(): v for k, v in (provider_overrides or {}).items()}
        self.should_record = should_record or default_should_record
        self.max_parse_bytes = max_parse_bytes
        self.calls = 0
        self.errors = 0
        self._log = RateLimitedLogger(telemetry.settings.log_cooldown_s)

    def stats(self) -> dict[str, int]:
        return {"calls": self.calls, "errors": self.errors}

    def begin(self, request: httpx.Request) -> _Call | None:
        """A :class:`Call` for ``request``, or ``None`` to pass it through unobserved."""
        try:
            if not self.telemetry.enabled or not self.should_record(request):
                return None
            url = request.url
            body, size = _request_body(request)
            call = _Call(
                provider=detect_provider(url.host, url.port, self.overrides),
                endpoint=url.path,
                body=body,
                request_bytes=size,
                emit=self._emit,
                on_error=self.failed,
                capture_content=self.capture_content,
                max_parse_bytes=self.max_parse_bytes,
            )
        except Exception as exc:
            self.failed("request", exc)
            return None
        self.calls += 1
        return call

    def observe(self, call: _Call, response: httpx.Response, *, is_async: bool) -> None:
        """Hook ``call`` into ``response``'s body stream (the response is otherwise untouched)."""
        try:
            headers = response.headers
            call.on_response(
                response.status_code,
                headers.get("content-type", ""),
                headers.get("content-encoding", ""),
            )
            if getattr(response, "is_closed", False):  # the body was read already (mocks)
                call.feed_decoded(response.content)
                call.finish()
                return
            wrapper = _wrap_stream(response.stream, call, is_async=is_async)
            if wrapper is None:  # a stream we cannot wrap safely: record the head only
                call.finish()
                return
            response.stream = wrapper
        except Exception as exc:
            self.failed("response", exc)
            call.finish()

    def _emit(self, event: LLMCall) -> None:
        self.telemetry.emit(event)  # read at emit time: the client may be swapped or patched

    def failed(self, where: str, exc: BaseException) -> None:
        """Count and log (rate-limited) a telemetry failure; never raises."""
        self.errors += 1
        with contextlib.suppress(Exception):  # logging must not break the caller either
            self._log.warning(
                f"llm-capture-{where}",
                "telemetry: LLM-call capture failed at %s (%s: %s); the request is unaffected",
                where,
                type(exc).__name__,
                exc,
            )


def _request_body(request: httpx.Request) -> tuple[bytes | None, int]:
    """The request body when it is in memory (not a streamed upload), and its size."""
    try:
        body = request.content
    except Exception:  # httpx.RequestNotRead: a streamed body, which we must not consume
        body = None
    if body is not None:
        return body, len(body)
    length = request.headers.get("content-length", "")
    return None, int(length) if length.isdigit() else 0


# -- body stream wrappers ---------------------------------------------------------------


class _SyncObserver:
    """Yields the inner stream's chunks unchanged, showing each to the call first."""

    def __init__(self, inner: Any, call: _Call) -> None:
        self._inner = inner
        self._call = call

    def __iter__(self) -> Iterator[bytes]:
        call = self._call
        try:
            for chunk in self._inner:
                call.feed(chunk)
                yield chunk
        except GeneratorExit:  # the reader abandoned the iteration
            call.finish(closed_early=True)
            raise
        except BaseException as exc:
            call.fail(exc)
            raise
        call.finish()

    def close(self) -> None:
        try:
            self._inner.close()
        finally:
            self._call.finish(closed_early=True)  # no-op when the body was read to its end


class _AsyncObserver:
    """The async twin of :class:`_SyncObserver`."""

    def __init__(self, inner: Any, call: _Call) -> None:
        self._inner = inner
        self._call = call

    async def __aiter__(self) -> AsyncIterator[bytes]:
        call = self._call
        try:
            async for chunk in self._inner:
                call.feed(chunk)
                yield chunk
        except GeneratorExit:
            call.finish(closed_early=True)
            raise
        except BaseException as exc:
            call.fail(exc)
            raise
        call.finish()

    async def aclose(self) -> None:
        try:
            await self._inner.aclose()
        finally:
            self._call.finish(closed_early=True)


class _SyncStream(_SyncObserver, httpx.SyncByteStream):
    pass


class _AsyncStream(_AsyncObserver, httpx.AsyncByteStream):
    pass


# Wrappers for another httpx-compatible library's streams (httpx2, which openai>=3 uses):
# its client asserts ``isinstance(response.stream, <its>.SyncByteStream)``.
_FOREIGN_STREAMS: dict[type, type] = {}


def _wrap_stream(stream: Any, call: _Call, *, is_async: bool) -> Any:
    if is_async:
        if isinstance(stream, httpx.AsyncByteStream):
            return _AsyncStream(stream, call)
    elif isinstance(stream, httpx.SyncByteStream):
        return _SyncStream(stream, call)
    name = "AsyncByteStream" if is_async else "SyncByteStream"
    library = sys.modules.get(type(stream).__module__.partition(".")[0])
    base = getattr(library, name, None)
    if not isinstance(base, type) or not isinstance(stream, base):
        return None
    cls = _FOREIGN_STREAMS.get(base)
    if cls is None:
        observer = _AsyncObserver if is_async else _SyncObserver
        cls = _FOREIGN_STREAMS[base] = type(f"_{name}Observer", (observer, base), {})
    return cls(stream, call)


# -- transports -------------------------------------------------------------------------


class InstrumentedTransport(httpx.BaseTransport):
    """Wraps a sync transport (default ``httpx.HTTPTransport()``); records LLM calls.

    ``client`` is the :class:`TelemetryClient` events go to. Options: ``capture_content``
    (record prompt and answer), ``provider_overrides`` (``{"host" | "host:port" |
    "*.domain": provider}``, checked before the built-in host table), ``should_record``
    (which requests are LLM calls; default :func:`default_should_record`) and
    ``max_parse_bytes`` (larger bodies are not parsed whole).
    """

    def __init__(
        self,
        inner: httpx.BaseTransport | None = None,
        *,
        client: TelemetryClient,
        capture_content: bool = False,
        provider_overrides: Mapping[str, str] | None = None,
        should_record: RequestPredicate | None = None,
        max_parse_bytes: int = DEFAULT_MAX_PARSE_BYTES,
    ) -> None:
        self.inner = inner if inner is not None else httpx.HTTPTransport()
        self._recorder = _Recorder(
            client,
            capture_content=capture_content,
            provider_overrides=provider_overrides,
            should_record=should_record,
            max_parse_bytes=max_parse_bytes,
        )

    def stats(self) -> dict[str, int]:
        """``calls`` recorded and telemetry ``errors`` swallowed by this transport."""
        return self._recorder.stats()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        call = self._recorder.begin(request)
        if call is None:
            return self.inner.handle_request(request)
        try:
            response = self.inner.handle_request(request)
        except BaseException as exc:
            call.fail(exc)
            raise
        self._recorder.observe(call, response, is_async=False)
        return response

    def close(self) -> None:
        self.inner.close()

    def __enter__(self: _S) -> _S:
        self.inner.__enter__()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None = None,
        exc_value: BaseException | None = None,
        traceback: TracebackType | None = None,
    ) -> None:
        self.inner.__exit__(exc_type, exc_value, traceback)


class AsyncInstrumentedTransport(httpx.AsyncBaseTransport):
    """The async twin of :class:`InstrumentedTransport` (default ``httpx.AsyncHTTPTransport()``)."""

    def __init__(
        self,
        inner: httpx.AsyncBaseTransport | None = None,
        *,
        client: TelemetryClient,
        capture_content: bool = False,
        provider_overrides: Mapping[str, str] | None = None,
        should_record: RequestPredicate | None = None,
        max_parse_bytes: int = DEFAULT_MAX_PARSE_BYTES,
    ) -> None:
        self.inner = inner if inner is not None else httpx.AsyncHTTPTransport()
        self._recorder = _Recorder(
            client,
            capture_content=capture_content,
            provider_overrides=provider_overrides,
            should_record=should_record,
            max_parse_bytes=max_parse_bytes,
        )

    def stats(self) -> dict[str, int]:
        """``calls`` recorded and telemetry ``errors`` swallowed by this transport."""
        return self._recorder.stats()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        call = self._recorder.begin(request)
        if call is None:
            return await self.inner.handle_async_request(request)
        try:
            response = await self.inner.handle_async_request(request)
        except BaseException as exc:
            call.fail(exc)
            raise
        self._recorder.observe(call, response, is_async=True)
        return response

    async def aclose(self) -> None:
        await self.inner.aclose()

    async def __aenter__(self: _AS) -> _AS:
        await self.inner.__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None = None,
        exc_value: BaseException | None = None,
        traceback: TracebackType | None = None,
    ) -> None:
        await self.inner.__aexit__(exc_type, exc_value, traceback)


# -- convenience ------------------------------------------------------------------------


def _http_client_of(obj: Any) -> Any:
    """The httpx-like client to wrap: ``obj`` itself, or the one an SDK client holds.

    An httpx client has a ``send`` method and a transport in ``_transport``. The SDKs hold
    theirs as ``_client``; openai 1.x and anthropic 0.x also have a ``_transport``
    attribute of their own, left ``None``, so that alone does not make an HTTP client.
    """
    for candidate in (obj, getattr(obj, "_client", None)):
        transport = getattr(candidate, "_transport", None)
        if (
            callable(getattr(candidate, "send", None))
            and transport is not None
            and (hasattr(transport, "handle_request") or hasattr(transport, "handle_async_request"))
        ):
            return candidate
    return None


def instrument(
    http_client: _T,
    telemetry: TelemetryClient,
    *,
    capture_content: bool = False,
    provider_overrides: Mapping[str, str] | None = None,
    should_record: RequestPredicate | None = None,
    max_parse_bytes: int = DEFAULT_MAX_PARSE_BYTES,
) -> _T:
    """Wrap the transports of an existing client in place and return the client.

    ``http_client`` is an ``httpx.Client``/``AsyncClient``, the same from ``httpx2``, or
    an SDK client holding one as ``_client`` (``openai.OpenAI``/``AsyncOpenAI`` >= 1.0,
    ``anthropic.Anthropic``/``AsyncAnthropic`` >= 0.30). Mounted transports (proxies) are
    wrapped too; transports already instrumented are left as they are.

    Never raises: for anything else (or if wrapping fails) it logs one warning naming
    the type and returns ``http_client`` unchanged, so a telemetry problem cannot stop
    the app's startup (as Sentry and OpenTelemetry integrations behave).
    """
    try:
        target = _http_client_of(http_client)
        if target is None:
            logger.warning(
                "telemetry: instrument() cannot record LLM calls made through a %s: expected "
                "an httpx/httpx2 Client or AsyncClient, or an SDK client holding one "
                "(openai>=1.0, anthropic>=0.30); it is returned unchanged, not instrumented",
                _type_name(http_client),
            )
            return http_client
        _wrap_transports(
            target,
            {
                "client": telemetry,
                "capture_content": capture_content,
                "provider_overrides": provider_overrides,
                "should_record": should_record,
                "max_parse_bytes": max_parse_bytes,
            },
        )
    except Exception as exc:
        logger.warning(
            "telemetry: instrument() could not wrap the transport of a %s (%s: %s); "
            "it is returned unchanged, not instrumented",
            _type_name(http_client),
            type(exc).__name__,
            exc,
        )
    return http_client


def _type_name(obj: Any) -> str:
    cls = type(obj)
    return f"{cls.__module__}.{cls.__qualname__}"


def _wrap_transports(target: Any, options: dict[str, Any]) -> None:
    """Replace ``target``'s transport and mounted transports by instrumented ones."""
    is_async = inspect.iscoroutinefunction(target.send)

    def wrap(transport: Any) -> Any:
        if transport is None or isinstance(
            transport, InstrumentedTransport | AsyncInstrumentedTransport
        ):
            return transport
        if is_async:
            return AsyncInstrumentedTransport(transport, **options)
        return InstrumentedTransport(transport, **options)

    mounts = getattr(target, "_mounts", None)
    if not isinstance(mounts, dict):
        mounts = {}
    wrapped = {pattern: wrap(transport) for pattern, transport in mounts.items()}
    target._transport = wrap(target._transport)  # all built first: nothing half-wrapped
    mounts.update(wrapped)


def instrumented_http_client(
    telemetry: TelemetryClient,
    *,
    capture_content: bool = False,
    provider_overrides: Mapping[str, str] | None = None,
    should_record: RequestPredicate | None = None,
    max_parse_bytes: int = DEFAULT_MAX_PARSE_BYTES,
    **httpx_kwargs: Any,
) -> httpx.Client:
    """A new ``httpx.Client(**httpx_kwargs)`` that records LLM calls, e.g. for
    ``openai.OpenAI(http_client=...)`` or, before anthropic 2.0,
    ``anthropic.Anthropic(http_client=...)`` (anthropic 2.x takes ``httpx2`` clients only:
    ``instrument(anthropic.Anthropic(), telemetry)`` works on every line)."""
    return instrument(
        httpx.Client(**httpx_kwargs),
        telemetry,
        capture_content=capture_content,
        provider_overrides=provider_overrides,
        should_record=should_record,
        max_parse_bytes=max_parse_bytes,
    )


def instrumented_async_http_client(
    telemetry: TelemetryClient,
    *,
    capture_content: bool = False,
    provider_overrides: Mapping[str, str] | None = None,
    should_record: RequestPredicate | None = None,
    max_parse_bytes: int = DEFAULT_MAX_PARSE_BYTES,
    **httpx_kwargs: Any,
) -> httpx.AsyncClient:
    """A new ``httpx.AsyncClient(**httpx_kwargs)`` that records LLM calls, e.g. for
    ``openai.AsyncOpenAI(http_client=...)``."""
    return instrument(
        httpx.AsyncClient(**httpx_kwargs),
        telemetry,
        capture_content=capture_content,
        provider_overrides=provider_overrides,
        should_record=should_record,
        max_parse_bytes=max_parse_bytes,
    )
