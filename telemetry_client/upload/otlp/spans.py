"""Events that become spans: LLM calls, agent runs, tool calls, HTTP requests (docs/otlp.md).

Follows the OpenTelemetry GenAI semantic conventions (schema 1.42, status Development):

- ``llm_call`` -> ``{gen_ai.operation.name} {model}``, kind CLIENT, timed by the call
  (ends at the event's ``ts``, starts ``latency_ms`` earlier), with the provider, the model,
  the token counts (cached and reasoning included), finish reasons when the event has them,
  ``error.type`` on failure; prompt and answer only when the event carries them (content
  capture is on), as ``gen_ai.input.messages`` / ``gen_ai.output.messages``.
- a run's ``completed`` -> the ``invoke_agent`` root span of the run's trace (it knows the
  run's duration); ``tool_call`` -> ``execute_tool {name}``, a child of the root; an
  ``llm_call`` carrying a ``run_id`` is a child of the root too.
- ``http_request`` -> a SERVER span ``{method} {route}``.

A span is built from one event alone, so every batch maps on its own and the ids (from
the run and event ids) are the same on every resend.
"""

from __future__ import annotations

from typing import Any

from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from telemetry_client.upload.otlp.values import attribute, scalar, span_id, trace_id, ts_ns

__all__ = ["SPAN_TYPES", "fill_span", "run_ids"]

#: Event types that become spans (every other type is a log record).
SPAN_TYPES = frozenset({"llm_call", "tool_call", "completed", "http_request"})

# Our provider names -> gen_ai.provider.name (well-known values of the convention).
_PROVIDERS = {
    "openai": "openai",
    "anthropic": "anthropic",
    "google": "gcp.gemini",
    "groq": "groq",
    "mistral": "mistral_ai",
    "azure_openai": "azure.ai.openai",
    "openrouter": "openrouter",
}
_TOKENS = (
    ("input_tokens", "gen_ai.usage.input_tokens"),
    ("output_tokens", "gen_ai.usage.output_tokens"),
    ("cache_read_input_tokens", "gen_ai.usage.cache_read.input_tokens"),
    ("cache_creation_input_tokens", "gen_ai.usage.cache_creation.input_tokens"),
    ("reasoning_tokens", "gen_ai.usage.reasoning.output_tokens"),
)
_STATUS_ERROR = Status.StatusCode.STATUS_CODE_ERROR


def run_ids(run_id: str) -> tuple[bytes, bytes]:
    """(trace id, root span id) of the run ``run_id``."""
    return trace_id(run_id), span_id(f"run:{run_id}")


def operation(endpoint: object) -> str:
    """``gen_ai.operation.name`` from the API path of an LLM call."""
    path = endpoint if isinstance(endpoint, str) else ""
    if path.endswith("/embeddings"):
        return "embeddings"
    if path.endswith((":generateContent", ":streamGenerateContent")):
        return "generate_content"
    if path.endswith("/completions") and not path.endswith("/chat/completions"):
        return "text_completion"
    return "chat"


def fill_span(span: Span, event: dict[str, Any], data: dict[str, Any]) -> bool:
    """Write ``event`` (of a type in :data:`SPAN_TYPES`) into ``span``; False to skip it."""
    kind = event.get("type")
    end = ts_ns(event.get("ts"))
    event_id = str(event.get("id", ""))
    run_id = data.get("run_id")
    if isinstance(run_id, str) and run_id:
        span.trace_id, root = run_ids(run_id)
    else:
        run_id, root = None, b""
        span.trace_id = trace_id(event_id)
    span.end_time_unix_nano = end
    a = span.attributes
    if kind == "completed":
        if run_id is None:
            return False
        span.span_id = root
        span.name = "invoke_agent"
        span.kind = Span.SpanKind.SPAN_KIND_INTERNAL
        span.start_time_unix_nano = _start(end, data.get("duration_ms"))
        attribute(a, "gen_ai.operation.name", "invoke_agent")
        attribute(a, "gen_ai.agent.id", run_id)
        attribute(a, "telemetry.run.status", data.get("status"))
        attribute(a, "telemetry.run.exit_code", data.get("exit_code"))
        if data.get("status") == "error":
            span.status.code = _STATUS_ERROR
            attribute(a, "error.type", "agent_error")
        return True
    span.span_id = span_id(event_id)
    if root:
        span.parent_span_id = root
    if kind == "llm_call":
        _llm_call(span, data, end)
    elif kind == "tool_call":
        _tool_call(span, data, end)
    else:
        _http_request(span, data, end)
    return True


def _start(end: int, duration_ms: object) -> int:
    if isinstance(duration_ms, int | float) and duration_ms > 0:
        return max(0, end - int(duration_ms * 1_000_000))
    return end


def _llm_call(span: Span, data: dict[str, Any], end: int) -> None:
    a = span.attributes
    op = operation(data.get("endpoint"))
    model = data.get("model")
    span.name = f"{op} {model}" if model else op
    span.kind = Span.SpanKind.SPAN_KIND_CLIENT
    span.start_time_unix_nano = _start(end, data.get("latency_ms"))
    provider = str(data.get("provider") or "")
    attribute(a, "gen_ai.operation.name", op)
    attribute(a, "gen_ai.provider.name", _PROVIDERS.get(provider, provider) or None)
    attribute(a, "gen_ai.request.model", model)
    for field, name in _TOKENS:
        value = data.get(field)
        if type(value) is int:
            attribute(a, name, value)
    reasons = data.get("finish_reasons", data.get("finish_reason"))
    if isinstance(reasons, str):
        reasons = [reasons]
    if isinstance(reasons, list) and reasons:
        attribute(a, "gen_ai.response.finish_reasons", [str(r) for r in reasons])
    conversation = data.get("conversation_id")
    if isinstance(conversation, str) and conversation:  # only a real id, never a made-up one
        attribute(a, "gen_ai.conversation.id", conversation)
    attribute(a, "http.response.status_code", data.get("status"))
    attribute(a, "url.path", data.get("endpoint"))
    if data.get("streamed"):
        attribute(a, "telemetry.llm.streamed", True)
    error = _llm_error(data)
    if error is not None:
        span.status.code = _STATUS_ERROR
        attribute(a, "error.type", error)
    # Content: present in the event only when content capture was on.
    prompt = data.get("prompt")
    if prompt is not None:
        attribute(a, "gen_ai.input.messages", scalar(prompt))
    answer = data.get("answer")
    if answer is not None:
        message = {"role": "assistant", "parts": [{"type": "text", "content": answer}]}
        attribute(a, "gen_ai.output.messages", scalar([message]))


def _llm_error(data: dict[str, Any]) -> str | None:
    status = data.get("status")
    if type(status) is int and status >= 400:
        return str(status)
    error = data.get("error")
    if error:
        return str(error)
    if data.get("cancelled"):
        return "cancelled"
    return None


def _tool_call(span: Span, data: dict[str, Any], end: int) -> None:
    a = span.attributes
    name = str(data.get("tool_name") or "tool")
    span.name = f"execute_tool {name}"
    span.kind = Span.SpanKind.SPAN_KIND_INTERNAL
    span.start_time_unix_nano = _start(end, data.get("duration_ms"))
    attribute(a, "gen_ai.operation.name", "execute_tool")
    attribute(a, "gen_ai.tool.name", name)
    attribute(a, "gen_ai.tool.call.id", data.get("call_id"))
    attribute(a, "gen_ai.tool.call.arguments", scalar(data.get("args")))
    attribute(a, "gen_ai.tool.call.result", scalar(data.get("result")))
    if data.get("error"):
        span.status.code = _STATUS_ERROR
        attribute(a, "error.type", str(data["error"]))
    rest = {k: v for k, v in data.items() if k not in _TOOL_FIELDS}
    if rest:
        attribute(a, "telemetry.data", rest)  # extra fields the app recorded, as a map


_TOOL_FIELDS = frozenset(
    {"tool_name", "call_id", "args", "result", "duration_ms", "error", "run_id", "run_seq"}
)


def _http_request(span: Span, data: dict[str, Any], end: int) -> None:
    a = span.attributes
    method = str(data.get("method") or "HTTP")
    route = data.get("route") if data.get("matched") else None
    span.name = f"{method} {route}" if route else method
    span.kind = Span.SpanKind.SPAN_KIND_SERVER
    span.start_time_unix_nano = _start(end, data.get("duration_ms"))
    attribute(a, "http.request.method", method)
    attribute(a, "http.route", route)
    attribute(a, "url.path", data.get("path"))
    status = data.get("status")
    attribute(a, "http.response.status_code", status)
    if type(status) is int and status >= 500:
        span.status.code = _STATUS_ERROR
        attribute(a, "error.type", str(status))
