"""The transports: wrap a sync or async httpx transport and record its LLM calls.

``handle_request`` asks the :class:`~telemetry_client.integrations._httpx.recorder.Recorder`
for a call (``None``: the request passes straight through), sends the request through the
inner transport and hooks the call into the response's body stream. The caller's own
exceptions propagate unchanged, after the call recorded them.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import TracebackType
from typing import TypeVar

import httpx

from telemetry_client.client import TelemetryClient
from telemetry_client.integrations._httpx.recorder import Recorder, RequestPredicate
from telemetry_client.llm import DEFAULT_MAX_PARSE_BYTES

__all__ = ["AsyncInstrumentedTransport", "InstrumentedTransport"]

_S = TypeVar("_S", bound="InstrumentedTransport")
_AS = TypeVar("_AS", bound="AsyncInstrumentedTransport")


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
        self._recorder = Recorder(
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
        self._recorder = Recorder(
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
