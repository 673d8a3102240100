"""Envelopes -> OTLP (``upload/otlp/mapping.py``, ``spans.py``): the table in docs/otlp.md.

Pure functions: a batch is mapped on its own, and a batch mapped twice gives identical
bytes (so a resend repeats the same trace and span ids).
"""

from __future__ import annotations

from typing import Any

from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.logs.v1.logs_pb2 import SeverityNumber
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from telemetry_client import __version__
from telemetry_client.upload.otlp.mapping import map_events
from telemetry_client.upload.otlp.spans import run_ids

RUN = "0b9c2f0e-2d1c-4c55-9a1e-4c1f7b0d6a11"


def env(
    i: int, etype: str, data: dict[str, Any], ts: str = "2026-01-02T03:04:05.500000Z"
) -> dict[str, Any]:
    return {
        "id": f"0190000000007000800000000000{i:04d}",
        "type": etype,
        "ts": ts,
        "session_id": "sess-1",
        "user_id": "ana",
        "machine_id": "host-9",
        "app": "agent-app",
        "app_version": "1.4.0",
        "seq": i,
        "data": data,
    }


def value(v: AnyValue) -> Any:
    which = v.WhichOneof("value")
    if which is None:
        return None
    if which == "kvlist_value":
        return {kv.key: value(kv.value) for kv in v.kvlist_value.values}
    if which == "array_value":
        return [value(x) for x in v.array_value.values]
    return getattr(v, which)


def attrs(kvs: Any) -> dict[str, Any]:
    return {kv.key: value(kv.value) for kv in kvs}


def a_run() -> list[dict[str, Any]]:
    base = {"run_id": RUN}
    return [
        env(1, "started", {**base, "run_seq": 1, "toolchain": "claude", "model": "sonnet"}),
        env(2, "prompt_sent", {**base, "run_seq": 2, "prompt": "fix the bug"}),
        env(
            3,
            "tool_call",
            {
                **base,
                "run_seq": 3,
                "tool_name": "grep",
                "call_id": "c1",
                "args": {"pattern": "bug"},
                "duration_ms": 12.5,
            },
        ),
        env(
            4,
            "llm_call",
            {
                "run_id": RUN,
                "provider": "openai",
                "model": "gpt-4.1",
                "endpoint": "/v1/chat/completions",
                "status": 200,
                "latency_ms": 812.0,
                "input_tokens": 120,
                "output_tokens": 30,
                "cache_read_input_tokens": 100,
                "reasoning_tokens": 10,
            },
        ),
        env(
            5,
            "completed",
            {**base, "run_seq": 4, "status": "success", "exit_code": 0, "duration_ms": 2000.0},
            ts="2026-01-02T03:04:06.000000Z",
        ),
    ]


def test_a_run_is_one_trace_with_an_invoke_agent_root_and_its_children() -> None:
    mapped = map_events(a_run())
    assert mapped.traces is not None
    assert mapped.logs is not None
    spans = {s.name: s for s in mapped.traces.resource_spans[0].scope_spans[0].spans}
    assert set(spans) == {"invoke_agent claude", "execute_tool grep", "chat gpt-4.1"}
    trace, root_id = run_ids(RUN)
    root, tool, llm = (
        spans["invoke_agent claude"],
        spans["execute_tool grep"],
        spans["chat gpt-4.1"],
    )
    assert {s.trace_id for s in spans.values()} == {trace}
    assert root.span_id == root_id
    assert root.parent_span_id == b""
    assert tool.parent_span_id == root_id
    assert llm.parent_span_id == root_id
    assert len({s.span_id for s in spans.values()}) == 3
    # Timed: the root ends at completed's ts and lasted duration_ms; the call its latency.
    assert root.end_time_unix_nano - root.start_time_unix_nano == 2_000_000_000
    assert llm.end_time_unix_nano - llm.start_time_unix_nano == 812_000_000
    assert attrs(root.attributes)["gen_ai.operation.name"] == "invoke_agent"
    assert attrs(root.attributes)["gen_ai.agent.name"] == "claude"
    t = attrs(tool.attributes)
    assert (t["gen_ai.operation.name"], t["gen_ai.tool.name"], t["gen_ai.tool.call.id"]) == (
        "execute_tool",
        "grep",
        "c1",
    )
    assert t["gen_ai.tool.call.arguments"] == '{"pattern":"bug"}'


def test_llm_call_is_a_client_span_with_the_genai_attributes() -> None:
    llm = next(
        s
        for s in map_events(a_run()).traces.resource_spans[0].scope_spans[0].spans  # type: ignore[union-attr]
        if s.kind == Span.SpanKind.SPAN_KIND_CLIENT
    )
    a = attrs(llm.attributes)
    assert llm.name == "chat gpt-4.1"
    assert a["gen_ai.operation.name"] == "chat"
    assert a["gen_ai.provider.name"] == "openai"
    assert a["gen_ai.request.model"] == "gpt-4.1"
    assert (a["gen_ai.usage.input_tokens"], a["gen_ai.usage.output_tokens"]) == (120, 30)
    assert a["gen_ai.usage.cache_read.input_tokens"] == 100
    assert a["gen_ai.usage.reasoning.output_tokens"] == 10
    assert "error.type" not in a
    assert "gen_ai.input.messages" not in a
    assert "gen_ai.output.messages" not in a
    assert "gen_ai.conversation.id" not in a  # no real conversation id: none made up


def test_failed_llm_call_has_error_type_and_content_only_when_captured() -> None:
    failed = env(
        1,
        "llm_call",
        {
            "provider": "anthropic",
            "model": "claude-x",
            "endpoint": "/v1/messages",
            "status": 429,
            "latency_ms": 5,
        },
    )
    captured = env(
        2,
        "llm_call",
        {
            "provider": "openai",
            "model": "m",
            "status": 200,
            "endpoint": "/v1/chat/completions",
            "prompt": [{"role": "user", "content": "hi"}],
            "answer": "hello",
        },
    )
    spans = map_events([failed, captured]).traces.resource_spans[0].scope_spans[0].spans  # type: ignore[union-attr]
    a = attrs(spans[0].attributes)
    assert a["error.type"] == "429"
    assert spans[0].status.code == Status.StatusCode.STATUS_CODE_ERROR
    assert a["gen_ai.provider.name"] == "anthropic"
    b = attrs(spans[1].attributes)
    assert b["gen_ai.input.messages"] == '[{"role":"user","content":"hi"}]'
    assert "hello" in b["gen_ai.output.messages"]
    assert spans[0].trace_id != spans[1].trace_id  # outside a run: a trace per call


def test_other_events_are_log_records_with_the_envelope_and_the_run_ids() -> None:
    attachment = {"$attachment": {"sha256": "ab" * 32, "size": 99999, "content_type": "text/plain"}}
    events = [
        *a_run(),
        env(6, "error", {"error_type": "ValueError", "message": "boom", "run_id": RUN}),
        env(7, "chat_turn", {"model": "m", "user_prompt": attachment}),
    ]
    mapped = map_events(events)
    assert mapped.logs is not None
    records = {r.event_name: r for r in mapped.logs.resource_logs[0].scope_logs[0].log_records}
    assert set(records) == {"started", "prompt_sent", "error", "chat_turn"}
    trace, root = run_ids(RUN)
    prompt = records["prompt_sent"]
    assert (prompt.trace_id, prompt.span_id) == (trace, root)
    assert value(prompt.body) == {"run_id": RUN, "run_seq": 2, "prompt": "fix the bug"}
    assert prompt.severity_number == SeverityNumber.SEVERITY_NUMBER_INFO
    assert records["error"].severity_number == SeverityNumber.SEVERITY_NUMBER_ERROR
    assert records["error"].severity_text == "ERROR"
    a = attrs(prompt.attributes)
    assert a == {
        "telemetry.event.id": events[1]["id"],
        "session.id": "sess-1",
        "user.id": "ana",
        "telemetry.event.seq": 2,
    }
    assert prompt.time_unix_nano == 1767323045_500000000
    chat = records["chat_turn"]
    assert chat.trace_id == b""  # not in a run
    assert value(chat.body)["user_prompt"] == attachment  # referenced, not inlined


def test_resource_names_the_service_host_and_sdk() -> None:
    mapped = map_events(a_run())
    assert mapped.traces is not None
    assert mapped.logs is not None
    for resource in (
        mapped.traces.resource_spans[0].resource,
        mapped.logs.resource_logs[0].resource,
    ):
        assert attrs(resource.attributes) == {
            "service.name": "agent-app",
            "service.version": "1.4.0",
            "host.id": "host-9",
            "telemetry.sdk.name": "telemetry-client",
            "telemetry.sdk.language": "python",
            "telemetry.sdk.version": __version__,
        }


def test_http_request_is_a_server_span() -> None:
    event = env(
        1,
        "http_request",
        {
            "method": "GET",
            "route": "/items/{id}",
            "matched": True,
            "status": 503,
            "duration_ms": 4.0,
        },
    )
    span = map_events([event]).traces.resource_spans[0].scope_spans[0].spans[0]  # type: ignore[union-attr]
    assert span.name == "GET /items/{id}"
    assert span.kind == Span.SpanKind.SPAN_KIND_SERVER
    a = attrs(span.attributes)
    assert (a["http.request.method"], a["http.route"], a["http.response.status_code"]) == (
        "GET",
        "/items/{id}",
        503,
    )
    assert span.status.code == Status.StatusCode.STATUS_CODE_ERROR


def test_the_same_batch_maps_to_the_same_bytes() -> None:
    """Ids come from run and event ids: a resend (retry, other process) repeats them."""
    first, again = map_events(a_run()), map_events(a_run())
    assert first.traces is not None
    assert again.traces is not None
    assert first.traces.SerializeToString() == again.traces.SerializeToString()
    assert first.logs is not None
    assert again.logs is not None
    assert first.logs.SerializeToString() == again.logs.SerializeToString()


def test_a_completed_event_outside_a_run_is_a_log_record() -> None:
    mapped = map_events([env(1, "completed", {"status": "success"})])
    assert mapped.traces is None
    assert mapped.logs is not None
    assert mapped.log_records == 1
