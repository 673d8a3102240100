"""The peer benchmark's wire decoders (``benchmarks/peers/decoders.py``) and SDK adapters.

Decoder tests build each SDK's wire format by hand and need no peer SDK (OTLP protobuf
needs ``opentelemetry-proto`` and is skipped without it). The adapter tests run each peer
SDK for real, in a subprocess (SDKs keep global state: Sentry's client, atexit and fork
hooks), against a local HTTP server; each is skipped unless its SDK is installed.
"""

from __future__ import annotations

import gzip
import importlib.util
import json
import os
import subprocess
import sys
import zlib
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st

PEERS = Path(__file__).resolve().parent.parent / "peers"


def _load(name: str, path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


dec = _load("peer_decoders_under_test", PEERS / "decoders.py")
M = dec.MARKER_FIELD


def _event(i: int) -> dict[str, Any]:
    return {"run_id": "r1", "args": {"path": "src/a.py", "n": [1, 2]}, "content": "x" * 50, M: i}


def _ndjson(docs: list[Any]) -> bytes:
    return b"".join(json.dumps(d).encode() + b"\n" for d in docs)


def test_marker_field_is_the_workloads() -> None:
    """The decoders look for the key the benchmark workload numbers its events with."""
    source = (PEERS / "workload.py").read_text()
    assert f'MARKER_FIELD = "{M}"' in source


def test_posthog_and_segment_batches() -> None:
    """``{"batch": [...]}``: one event per element, markers under ``properties``."""
    posthog = {"api_key": "k", "batch": [{"event": "e", "properties": _event(i)} for i in (1, 2)]}
    segment = {"writeKey": "k", "batch": [{"type": "track", "properties": _event(3)}]}
    assert dec.extract("/batch/", {}, json.dumps(posthog).encode()) == (["1", "2"], 2)
    assert dec.extract("/v1/batch", {}, json.dumps(segment).encode()) == (["3"], 1)


def test_ndjson_array_and_single_object() -> None:
    """NDJSON counts lines, an array its elements, any other object is one event."""
    lines = _ndjson([{"type": "t", "data": _event(i)} for i in range(3)])
    headers = {"Content-Type": "application/x-ndjson"}
    assert dec.extract("/baseline/events", headers, lines) == (["0", "1", "2"], 3)
    assert dec.extract("/x", {}, lines) == (["0", "1", "2"], 3)  # NDJSON without saying so
    assert dec.extract("/x", {}, json.dumps([_event(4), _event(5)]).encode()) == (["4", "5"], 2)
    assert dec.extract("/x", {}, json.dumps(_event(6)).encode()) == (["6"], 1)
    assert dec.extract("/x", {}, json.dumps({"events": [_event(7)]}).encode()) == (["7"], 1)


@pytest.mark.parametrize(
    ("encoding", "compress"),
    [
        ("gzip", gzip.compress),
        ("x-gzip", gzip.compress),
        ("deflate", zlib.compress),
        ("deflate", lambda b: zlib.compress(b, wbits=-15)),  # raw deflate, seen in the wild
        ("zstd", lambda b: zstandard.ZstdCompressor().compress(b)),
        ("identity", lambda b: b),
        ("", lambda b: b),
    ],
)
def test_content_encodings(encoding: str, compress: Any) -> None:
    """Every Content-Encoding the SDKs use is undone, whatever the header's case."""
    body = compress(_ndjson([_event(1), _event(2)]))
    assert dec.extract("/x", {"content-encoding": encoding}, body) == (["1", "2"], 2)


def test_unlabelled_gzip_and_zstd_are_recognised_by_magic() -> None:
    """Some SDKs compress without a Content-Encoding header."""
    raw = _ndjson([_event(1)])
    assert dec.extract("/x", {}, gzip.compress(raw)) == (["1"], 1)
    assert dec.extract("/x", {}, zstandard.ZstdCompressor().compress(raw)) == (["1"], 1)
    two_members = gzip.compress(raw) + gzip.compress(_ndjson([_event(2)]))
    assert dec.extract("/x", {"Content-Encoding": "gzip"}, two_members) == (["1", "2"], 2)


def test_a_marker_counts_once_per_event_and_once_per_copy_of_an_event() -> None:
    """An SDK copying data inside one event is no duplicate; the same event twice is."""
    doubled = {"properties": _event(1), "extra": {"copy": _event(1)}}
    assert dec.extract("/x", {}, json.dumps(doubled).encode()) == (["1"], 1)
    twice = json.dumps({"batch": [_event(1), _event(1)]}).encode()
    assert dec.extract("/x", {}, twice) == (["1", "1"], 2)


def test_marker_values_in_other_shapes() -> None:
    """Digit strings, integral floats and typed wrappers are markers; other values are not."""
    body = [{M: "12"}, {M: 13.0}, {M: {"value": 14, "type": "integer"}}, {M: True}, {M: "x"}]
    assert dec.extract("/x", {}, json.dumps(body).encode()) == (["12", "13", "14"], 5)


def _envelope(items: list[tuple[dict[str, Any], bytes]], *, lengths: bool = True) -> bytes:
    out = [json.dumps({"event_id": "e1", "sent_at": "2025-01-01T00:00:00Z"}).encode() + b"\n"]
    for headers, payload in items:
        item = dict(headers, length=len(payload)) if lengths else headers
        out.append(json.dumps(item).encode() + b"\n" + payload + b"\n")
    return b"".join(out)


def test_sentry_envelope_events_logs_and_reports() -> None:
    """Event items are one event each, log items one per entry, other items none."""
    event = json.dumps({"message": "m", "contexts": {"agent_event": _event(1)}}).encode()
    logs = {
        "version": 2,
        "items": [{"attributes": {M: {"value": i, "type": "integer"}}} for i in (2, 3)],
    }
    report = json.dumps({"discarded_events": [{"reason": "queue_overflow", "quantity": 5}]})
    body = _envelope(
        [
            ({"type": "event", "content_type": "application/json"}, event),
            ({"type": "log", "item_count": 2}, json.dumps(logs).encode()),
            ({"type": "client_report"}, report.encode()),
            ({"type": "attachment"}, b"\x00\n\xff binary, with a newline"),
        ]
    )
    headers = {"Content-Type": "application/x-sentry-envelope", "Content-Encoding": "gzip"}
    assert dec.extract("/api/1/envelope/", headers, gzip.compress(body)) == (["1", "2", "3"], 3)
    no_lengths = _envelope([({"type": "event"}, event)], lengths=False)
    assert dec.extract("/api/1/envelope/", {}, no_lengths) == (["1"], 1)


def test_otlp_json_logs() -> None:
    """OTLP/JSON: one event per log record, markers in ``{"key", "value"}`` attributes."""
    record = {
        "eventName": "tool_call",
        "attributes": [
            {"key": "tool", "value": {"stringValue": "grep"}},
            {"key": M, "value": {"intValue": "41"}},
        ],
    }
    nested = {"body": {"kvlistValue": {"values": [{"key": M, "value": {"intValue": "42"}}]}}}
    doc = {"resourceLogs": [{"scopeLogs": [{"logRecords": [record, nested, {}]}]}]}
    assert dec.extract("/v1/logs", {}, json.dumps(doc).encode()) == (["41", "42"], 3)


def test_otlp_protobuf_logs() -> None:
    """OTLP/protobuf: markers in top-level or nested attributes, or in the body."""
    pytest.importorskip("opentelemetry.proto")
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue, KeyValueList
    from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, ResourceLogs, ScopeLogs

    def kv(key: str, value: AnyValue) -> KeyValue:
        return KeyValue(key=key, value=value)

    top = LogRecord(
        event_name="e",
        attributes=[kv("a", AnyValue(string_value="x")), kv(M, AnyValue(int_value=1))],
    )
    inner = KeyValueList(values=[kv(M, AnyValue(int_value=2))])
    nested = LogRecord(attributes=[kv("data", AnyValue(kvlist_value=inner))])
    in_body = LogRecord(
        body=AnyValue(kvlist_value=KeyValueList(values=[kv(M, AnyValue(int_value=3))]))
    )
    request = ExportLogsServiceRequest(
        resource_logs=[
            ResourceLogs(scope_logs=[ScopeLogs(log_records=[top, nested, in_body, LogRecord()])])
        ]
    )
    body = request.SerializeToString()
    headers = {"Content-Type": "application/x-protobuf"}
    assert dec.extract("/v1/logs", headers, body) == (["1", "2", "3"], 4)
    gz = {"Content-Type": "application/x-protobuf", "Content-Encoding": "gzip"}
    assert dec.extract("/v1/logs", gz, gzip.compress(body)) == (["1", "2", "3"], 4)


@pytest.mark.parametrize(
    ("headers", "body", "reason"),
    [
        ({}, b"\x00\x01garbage", "unknown format"),
        ({}, b'{"batch": [1, 2', "bad JSON"),
        ({"Content-Encoding": "gzip"}, b"not gzip", "bad gzip body"),
        (
            {"Content-Encoding": "gzip"},
            gzip.compress(b"{}" * 100)[:20],
            "truncated compressed body",
        ),
        ({"Content-Encoding": "zstd"}, b"\x28\xb5\x2f\xfdnope", "truncated compressed body"),
        ({"Content-Encoding": "zstd"}, b"\x28\xb5\x2f\xfd" + b"\xff" * 20, "bad zstd body"),
        ({"Content-Encoding": "compress"}, b"{}", "unknown Content-Encoding compress"),
        (
            {"Content-Type": "application/x-sentry-envelope"},
            b"not json\n{}",
            "bad Sentry envelope header",
        ),
        (
            {"Content-Type": "application/x-sentry-envelope"},
            b'{}\n{"length": 50}\n{}',
            "truncated Sentry envelope item",
        ),
    ],
)
def test_garbage_is_counted_not_raised(headers: dict[str, str], body: bytes, reason: str) -> None:
    """An unreadable body gives ``([], 0)`` and is counted under its reason."""
    before = dec.stats()["undecodable_by_reason"].get(reason, 0)
    assert dec.extract("/x", headers, body) == ([], 0)
    assert dec.decode("/x", headers, body).error == reason
    assert dec.stats()["undecodable_by_reason"][reason] == before + 2


def test_empty_body_is_no_event_and_no_error() -> None:
    """An empty POST (a health probe, say) is not garbage."""
    assert dec.decode("/x", {}, b"") == dec.Decoded([], 0, None)


def test_inflating_past_the_limit_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """A compression bomb stops at ``MAX_INFLATED`` instead of eating the sink's memory."""
    monkeypatch.setattr(dec, "MAX_INFLATED", 1000)
    bomb = gzip.compress(b"[" + b"0," * 10_000 + b"0]")
    assert dec.decode("/x", {"Content-Encoding": "gzip"}, bomb).error == "inflated body too large"
    zbomb = zstandard.ZstdCompressor().compress(b" " * 10_000)
    assert dec.decode("/x", {"Content-Encoding": "zstd"}, zbomb).error == "inflated body too large"


@settings(max_examples=300, deadline=None)
@given(
    body=st.one_of(
        st.binary(max_size=300),
        st.binary(max_size=200).map(gzip.compress),
        st.binary(max_size=200).map(lambda b: b"{" + b),
        st.binary(max_size=200).map(lambda b: b'{"x":1}\n' + b),
    ),
    ctype=st.sampled_from(
        ["", "application/json", "application/x-protobuf", "application/x-sentry-envelope"]
    ),
    encoding=st.sampled_from(["", "gzip", "deflate", "zstd", "br", "weird"]),
    path=st.sampled_from(["/x", "/v1/logs", "/api/1/envelope/", "/batch/"]),
)
def test_extract_never_raises(body: bytes, ctype: str, encoding: str, path: str) -> None:
    """Whatever arrives, ``extract`` returns a list of digit strings and a count."""
    markers, events = dec.extract(path, {"Content-Type": ctype, "Content-Encoding": encoding}, body)
    assert isinstance(events, int)
    assert events >= 0
    assert all(isinstance(m, str) and m.lstrip("-").isdigit() for m in markers)


# --- the adapters, against a local server -----------------------------------------------

_ADAPTER_RUN = r"""
import importlib.util, json, socket, sys, threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

peers, sdk, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
sys.path.insert(0, peers)
import decoders

received = []

class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def setup(self):
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        received.append((self.path, dict(self.headers.items()), body))
        out = b"" if self.path.endswith("/v1/logs") else b'{"status": "Ok"}'
        self.send_response(200)
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    def log_message(self, *args):
        pass

server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
server.daemon_threads = True
threading.Thread(target=server.serve_forever, daemon=True).start()
spec = importlib.util.spec_from_file_location("peer_adapter_" + sdk, f"{peers}/adapters/{sdk}.py")
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
out = {}
for mode in ("defaults", "nodrop", "nodrop_compressed"):
    received.clear()
    base = f"http://127.0.0.1:{server.server_address[1]}/run-{mode}"
    adapter = module.make(base, mode, decoders.MARKER_FIELD)
    for i in range(n):
        data = {"run_id": "r", "args": {"path": "src/a.py"}, "result": "ok\n" * (i % 40)}
        data[decoders.MARKER_FIELD] = i
        adapter.emit("tool_call", data)
    adapter.finish(60.0)
    markers, events, errors = [], 0, []
    for path, headers, body in list(received):
        result = decoders.decode(path.split(f"/run-{mode}", 1)[1], headers, body)
        markers += result.markers
        events += result.events
        errors += [result.error] if result.error else []
    out[mode] = {
        "paths": sorted({p for p, _, _ in received}),
        "encodings": sorted({h.get("Content-Encoding", "identity") for _, h, _ in received}),
        "markers": sorted(int(m) for m in markers), "events": events, "errors": errors,
        "name": adapter.name, "version": adapter.version, "notes": adapter.notes,
    }
print(json.dumps(out))
"""

_EXPECTED = {
    # sdk: (path under the run id, encoding in nodrop, in nodrop_compressed)
    "posthog": ("/batch/", "identity", "gzip"),
    "segment": ("/v1/batch", "identity", "gzip"),
    "otel": ("/v1/logs", "identity", "gzip"),
    "sentry": ("/api/1/envelope/", "gzip", "gzip"),  # Sentry gzips by default
}
_MODULES = {
    "posthog": "posthog",
    "segment": "segment.analytics",
    "otel": "opentelemetry.exporter.otlp.proto.http",
    "sentry": "sentry_sdk",
}


@pytest.mark.parametrize("sdk", sorted(_EXPECTED))
def test_adapter_delivers_every_marker_once(sdk: str, tmp_path: Path) -> None:
    """Each adapter, in each mode, gets 60 events to the server: each marker exactly once."""
    pytest.importorskip(_MODULES[sdk])
    n = 60
    script = tmp_path / "run_adapter.py"
    script.write_text(_ADAPTER_RUN)
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "SENTRY_", "POSTHOG_"))
    }
    proc = subprocess.run(
        [sys.executable, str(script), str(PEERS), sdk, str(n)],
        capture_output=True,
        text=True,
        timeout=110,
        env=env,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    path, plain, compressed = _EXPECTED[sdk]
    for mode, result in results.items():
        assert result["markers"] == list(range(n)), mode
        assert result["events"] == n, mode
        assert result["errors"] == [], mode
        assert result["paths"] == [f"/run-{mode}{path}"], mode
        assert result["encodings"] == [compressed if mode == "nodrop_compressed" else plain], mode
        assert result["name"] == sdk
        assert result["version"]
        assert result["notes"]
