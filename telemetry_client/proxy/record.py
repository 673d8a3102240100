"""One ``llm_call`` per proxied LLM request, through the shared :mod:`telemetry_client.llm`.

The proxy hands the same :class:`~telemetry_client.llm.Call` the httpx integration uses
the client's request body, the upstream's response head and its raw body chunks (before
any usage the proxy asked for is stripped, so the usage is recorded), and how the
exchange ended; the call parses and emits. Which requests are LLM calls is the shared
rule too (:func:`~telemetry_client.llm.is_llm_path`): other paths (``/v1/models``) are
forwarded and counted in the metrics, not recorded.

Recorded per call (README, "proxy"): provider (``--provider``, else from the upstream
host), model, the upstream's URL path (never the query), status, latency, ``ttft_ms`` for
streams, tokens, bytes, ``closed_early``/``cancelled``/``partial`` when the client went
away, errors. Prompts and answers only with content capture on (then redacted and moved
to attachments when large by the client). Keys and headers are never recorded.
"""

from __future__ import annotations

import contextlib

from telemetry_client._internal.log import RateLimitedLogger
from telemetry_client.client import TelemetryClient
from telemetry_client.events import LLMCall
from telemetry_client.llm import Call, detect_provider, is_llm_path
from telemetry_client.proxy.metrics import ProxyMetrics

__all__ = ["Recorder", "Recording"]


class Recording:
    """One request's call, and the model its event named (for the metrics)."""

    __slots__ = ("_recorder", "call", "event")

    def __init__(self, recorder: Recorder, provider: str, path: str, body: bytes) -> None:
        self._recorder = recorder
        self.event: LLMCall | None = None
        self.call = Call(
            provider=provider,
            endpoint=path,
            body=body,
            request_bytes=len(body),
            emit=self._emitted,
            on_error=recorder.failed,
            capture_content=recorder.capture_content,
        )

    @property
    def model(self) -> str | None:
        return self.event.model if self.event is not None else None

    def _emitted(self, event: LLMCall) -> None:
        self.event = event
        self._recorder.emitted(event)


class Recorder:
    """Starts a :class:`Recording` per LLM request; emits to the proxy's telemetry client."""

    def __init__(
        self,
        telemetry: TelemetryClient | None,
        metrics: ProxyMetrics,
        *,
        host: str,
        port: int | None,
        provider: str | None,
        capture_content: bool,
    ) -> None:
        self.telemetry = telemetry
        self.metrics = metrics
        self.provider = provider or detect_provider(host, port)
        self.capture_content = capture_content
        self.errors = 0
        cooldown = telemetry.settings.log_cooldown_s if telemetry is not None else 60.0
        self._log = RateLimitedLogger(cooldown)

    def begin(self, method: str, path: str, body: bytes) -> Recording | None:
        """A recording for an LLM request (``None``: forwarded unrecorded)."""
        telemetry = self.telemetry
        if telemetry is None or not telemetry.enabled or not is_llm_path(method, path):
            return None
        try:
            return Recording(self, self.provider, path, body)
        except Exception as exc:
            self.failed("request", exc)
            return None

    def emitted(self, event: LLMCall) -> None:
        if self.telemetry is not None:
            self.telemetry.emit(event)
        m = self.metrics
        m.add_tokens(event.model, "input", event.input_tokens)
        m.add_tokens(event.model, "output", event.output_tokens)
        m.add_tokens(event.model, "cached", event.cache_read_input_tokens)
        m.add_tokens(event.model, "reasoning", event.reasoning_tokens)
        ttft = (event.attributes or {}).get("ttft_ms")
        if isinstance(ttft, float | int):
            m.ttft.observe(ttft / 1000.0)

    def failed(self, where: str, exc: BaseException) -> None:
        """Count and log (rate-limited) a recording failure; the request is unaffected."""
        self.errors += 1
        with contextlib.suppress(Exception):
            self._log.warning(
                f"proxy-record-{where}",
                "telemetry proxy: recording failed at %s (%s); the request is unaffected",
                where,
                type(exc).__name__,
            )
