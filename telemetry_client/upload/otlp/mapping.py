"""A batch of envelopes -> one OTLP traces request and one OTLP logs request (docs/otlp.md).

Spans for the types in :data:`~.spans.SPAN_TYPES`; every other event is a log record:
``event_name`` = the type, severity by type, ``body`` = ``data`` (structure kept; an
attachment reference stays a reference), the envelope fields as attributes, and the run's
trace and root span ids when the event belongs to a run. Resource per (app, version,
machine): ``service.name``, ``service.version``, ``host.id``, ``telemetry.sdk.*``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.logs.v1.logs_pb2 import ScopeLogs, SeverityNumber
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ScopeSpans, Span

from telemetry_client._version import __version__
from telemetry_client.upload.otlp.spans import SPAN_TYPES, fill_span, run_ids
from telemetry_client.upload.otlp.values import any_value, attribute, ts_ns

__all__ = ["Mapped", "map_events", "severity_of"]

SCOPE = "telemetry_client"
_SEVERITY: dict[str, tuple[int, str]] = {
    "error": (SeverityNumber.SEVERITY_NUMBER_ERROR, "ERROR"),
    "telemetry_dropped": (SeverityNumber.SEVERITY_NUMBER_WARN, "WARN"),
    "response_chunk": (SeverityNumber.SEVERITY_NUMBER_DEBUG, "DEBUG"),
    "bash_output": (SeverityNumber.SEVERITY_NUMBER_DEBUG, "DEBUG"),
    "thinking": (SeverityNumber.SEVERITY_NUMBER_DEBUG, "DEBUG"),
}
_INFO = (SeverityNumber.SEVERITY_NUMBER_INFO, "INFO")
# Envelope fields -> attribute names; app, app_version, machine_id go to the resource.
_ENVELOPE = {
    "id": "telemetry.event.id",
    "session_id": "session.id",
    "user_id": "user.id",
    "seq": "telemetry.event.seq",
}
_RESOURCE_FIELDS = frozenset({"type", "ts", "data", "app", "app_version", "machine_id"})


def severity_of(event_type: str) -> tuple[int, str]:
    """(severity number, text) of a log record of ``event_type``."""
    return _SEVERITY.get(event_type, _INFO)


@dataclass(slots=True)
class Mapped:
    """One batch as OTLP: the requests (``None`` when it has nothing of that signal)."""

    traces: ExportTraceServiceRequest | None
    logs: ExportLogsServiceRequest | None
    spans: int
    log_records: int


class _Groups:
    """Resource groups of one request pair, created on first use."""

    def __init__(self) -> None:
        self.traces = ExportTraceServiceRequest()
        self.logs_request = ExportLogsServiceRequest()
        self._spans: dict[tuple[str, str, str], ScopeSpans] = {}
        self._logs: dict[tuple[str, str, str], ScopeLogs] = {}

    def spans(self, key: tuple[str, str, str]) -> ScopeSpans:
        scope = self._spans.get(key)
        if scope is None:
            rs = self.traces.resource_spans.add()
            _resource(rs.resource, key)
            scope = rs.scope_spans.add()
            scope.scope.name, scope.scope.version = SCOPE, __version__
            self._spans[key] = scope
        return scope

    def logs(self, key: tuple[str, str, str]) -> ScopeLogs:
        scope = self._logs.get(key)
        if scope is None:
            rl = self.logs_request.resource_logs.add()
            _resource(rl.resource, key)
            scope = rl.scope_logs.add()
            scope.scope.name, scope.scope.version = SCOPE, __version__
            self._logs[key] = scope
        return scope


def _resource(resource: Resource, key: tuple[str, str, str]) -> None:
    app, version, machine = key
    a = resource.attributes
    attribute(a, "service.name", app or "unknown_service")
    attribute(a, "service.version", version or None)
    attribute(a, "host.id", machine or None)
    attribute(a, "telemetry.sdk.name", "telemetry-client")
    attribute(a, "telemetry.sdk.language", "python")
    attribute(a, "telemetry.sdk.version", __version__)


def map_events(events: Iterable[dict[str, Any]]) -> Mapped:
    """Map one batch's envelopes (in batch order)."""
    groups = _Groups()
    n_spans = n_logs = 0
    events = list(events)
    agents = _agents(events)
    for event in events:
        data = event.get("data")
        if not isinstance(data, dict):
            data = {"value": data}
        key = (
            str(event.get("app") or ""),
            str(event.get("app_version") or ""),
            str(event.get("machine_id") or ""),
        )
        etype = str(event.get("type") or "")
        if etype in SPAN_TYPES:
            span = groups.spans(key).spans.add()
            if fill_span(span, event, data):
                _envelope_attributes(span.attributes, event)
                if etype == "completed":
                    own = data if data.get("toolchain") else None  # completed names its run
                    _name_agent(span, own or agents.get(str(data.get("run_id"))))
                n_spans += 1
                continue
            del groups.spans(key).spans[-1]  # not a span after all (completed outside a run)
        _log_record(groups.logs(key), event, etype, data)
        n_logs += 1
    return Mapped(
        traces=groups.traces if n_spans else None,
        logs=groups.logs_request if n_logs else None,
        spans=n_spans,
        log_records=n_logs,
    )


def _agents(events: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """``started`` data by run id (names the run's root span when in the same batch)."""
    out: dict[str, dict[str, Any]] = {}
    for event in events:
        if event.get("type") == "started":
            data = event.get("data")
            if isinstance(data, dict) and isinstance(data.get("run_id"), str):
                out[data["run_id"]] = data
    return out


def _name_agent(span: Span, started: dict[str, Any] | None) -> None:
    if not started:
        return
    agent = started.get("toolchain")
    if isinstance(agent, str) and agent:
        span.name = f"invoke_agent {agent}"
        attribute(span.attributes, "gen_ai.agent.name", agent)
    attribute(span.attributes, "gen_ai.request.model", started.get("model"))


def _envelope_attributes(attrs: Any, event: dict[str, Any]) -> None:
    for field, value in event.items():
        if field in _RESOURCE_FIELDS or value is None:
            continue
        attribute(attrs, _ENVELOPE.get(field) or f"telemetry.{field}", value)


def _log_record(scope: ScopeLogs, event: dict[str, Any], etype: str, data: dict[str, Any]) -> None:
    record = scope.log_records.add()
    when = ts_ns(event.get("ts"))
    record.time_unix_nano = when
    record.observed_time_unix_nano = when
    record.event_name = etype
    record.severity_number, record.severity_text = severity_of(etype)
    any_value(data, record.body)
    _envelope_attributes(record.attributes, event)
    run_id = data.get("run_id")
    if isinstance(run_id, str) and run_id:
        record.trace_id, record.span_id = run_ids(run_id)
