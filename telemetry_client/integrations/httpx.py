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

import inspect
from collections.abc import Mapping
from typing import Any, TypeVar

import httpx

from telemetry_client._internal.log import logger
from telemetry_client.client import TelemetryClient
from telemetry_client.integrations._httpx.recorder import RequestPredicate, default_should_record
from telemetry_client.integrations._httpx.transports import (
    AsyncInstrumentedTransport,
    InstrumentedTransport,
)
from telemetry_client.llm import (
    DEFAULT_MAX_PARSE_BYTES,
    DEFAULT_PROVIDERS,
    LLM_PATH_SUFFIXES,
    detect_provider,
    is_llm_path,
)

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
