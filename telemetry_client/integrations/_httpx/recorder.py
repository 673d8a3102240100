"""Per transport: which requests are LLM calls, the :class:`Call` of each, and counters.

Each transport (sync or async) holds one :class:`Recorder`; it never raises into the
caller: every telemetry step is guarded, failures are counted (``stats()["errors"]``) and
logged at most once per cooldown.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Mapping

import httpx

from telemetry_client._internal.log import RateLimitedLogger
from telemetry_client.agent.run import active_run_id_var
from telemetry_client.client import TelemetryClient
from telemetry_client.events import LLMCall
from telemetry_client.integrations._httpx.streams import wrap_stream
from telemetry_client.llm import Call, detect_provider, is_llm_path

__all__ = ["Recorder", "RequestPredicate", "default_should_record"]

RequestPredicate = Callable[[httpx.Request], bool]


def default_should_record(request: httpx.Request) -> bool:
    """``POST`` to a path ending in a known LLM API suffix (see the module docstring)."""
    return is_llm_path(request.method, request.url.path)


class Recorder:
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

    def begin(self, request: httpx.Request) -> Call | None:
        """A :class:`Call` for ``request``, or ``None`` to pass it through unobserved."""
        try:
            if not self.telemetry.enabled or not self.should_record(request):
                return None
            url = request.url
            body, size = _request_body(request)
            call = Call(
                provider=detect_provider(url.host, url.port, self.overrides),
                endpoint=url.path,
                body=body,
                request_bytes=size,
                # The run active where the request starts (the answer may be read elsewhere).
                emit=functools.partial(self._emit, active_run_id_var.get()),
                on_error=self.failed,
                capture_content=self.capture_content,
                max_parse_bytes=self.max_parse_bytes,
            )
        except Exception as exc:
            self.failed("request", exc)
            return None
        self.calls += 1
        return call

    def observe(self, call: Call, response: httpx.Response, *, is_async: bool) -> None:
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
            wrapper = wrap_stream(response.stream, call, is_async=is_async)
            if wrapper is None:  # a stream we cannot wrap safely: record the head only
                call.finish()
                return
            response.stream = wrapper
        except Exception as exc:
            self.failed("response", exc)
            call.finish()

    def _emit(self, run_id: str | None, event: LLMCall) -> None:
        if run_id is not None:  # inside client.run(): the call belongs to that run
            event.attributes = {**(event.attributes or {}), "run_id": run_id}
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
