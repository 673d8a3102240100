"""Wire decoders for the peer benchmark: every SDK's request body -> (markers, event count).

``extract(path, headers, body) -> (markers, n_events)`` is what the sink calls per request
body. It undoes the ``Content-Encoding`` (gzip, deflate, zstd, br when the ``brotli``
module is importable, identity; gzip and zstd are also recognised by their magic bytes,
since some SDKs compress without saying so), recognises the format, counts the events and
collects the marker of each. Formats:

* JSON: an object (posthog and segment send ``{"batch": [event, ...], ...}``; any
  top-level ``batch`` / ``events`` / ``data`` list is taken as the events, any other
  object is one event), an array of events, or NDJSON (one event a line: the baseline,
  telemetry-client);
* OTLP/HTTP logs: protobuf ``ExportLogsServiceRequest`` (needs ``opentelemetry-proto``)
  or its JSON mapping; one event per log record;
* Sentry envelopes: a header line, then items (``event`` / ``transaction``: one event;
  ``log``: one per entry of its ``items``; anything else, such as ``client_report`` or
  ``session``: none).

Markers are found by key, :data:`MARKER_FIELD` by default, anywhere inside an event (any
depth of dicts and lists, OTLP ``{"key", "value"}`` attribute pairs, Sentry's typed
``{"value", "type"}`` attributes), so an SDK may put the caller's data wherever it likes.
Within one event a marker counts once (an SDK that copies the data into two places does
not deliver it twice); the same marker in two events counts twice, so the sink sees
duplicates. Markers are returned as decimal strings.

``extract`` never raises: a body it cannot read returns ``([], 0)`` and is counted under
a reason in :func:`stats`; :func:`decode` returns that reason with the result, so a sink
can keep per-run counts.
"""

from __future__ import annotations

import io
import json
import re
import threading
import zlib
from collections.abc import Mapping
from typing import Any, NamedTuple

try:
    import orjson  # a telemetry-client dependency; optional here
except ImportError:  # pragma: no cover
    orjson = None

__all__ = ["MARKER_FIELD", "Decoded", "decode", "extract", "reset_stats", "stats"]

#: The key whose integer value numbers each event (``benchmarks/peers/workload.py``).
MARKER_FIELD = "bench_marker"

#: Refuse to inflate past this (a compression bomb, or a broken body): 1 GiB.
MAX_INFLATED = 1 << 30

_GZIP_MAGIC = b"\x1f\x8b"
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_ZSTD_PIECE = 4096  # compressed bytes per decompress() call: bounds each call's output
_EVENT_LISTS = ("batch", "events", "data")  # a top-level list under one of these = events
_SENTRY_EVENT_ITEMS = frozenset({"event", "transaction"})
_OTLP_JSON_VALUE_KEYS = ("intValue", "stringValue", "doubleValue")
_MISSING = object()
_NON_SPACE = re.compile(rb"\S")


class Decoded(NamedTuple):
    """One body: its markers (as strings), its events, and why it failed (None: it did not)."""

    markers: list[str]
    events: int
    error: str | None = None


class _DecodeError(Exception):
    """A body this module cannot read; ``args[0]`` is the reason counted in :func:`stats`."""


class _Stats:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        self.bodies = 0
        self.events = 0
        self.markers = 0
        self.undecodable: dict[str, int] = {}

    def record(self, result: Decoded) -> None:
        with self.lock:
            self.bodies += 1
            self.events += result.events
            self.markers += len(result.markers)
            if result.error is not None:
                self.undecodable[result.error] = self.undecodable.get(result.error, 0) + 1


_STATS = _Stats()


def stats() -> dict[str, Any]:
    """Process-wide counters: bodies, events, markers, and undecodable bodies by reason."""
    with _STATS.lock:
        return {
            "bodies": _STATS.bodies,
            "events": _STATS.events,
            "markers": _STATS.markers,
            "undecodable": sum(_STATS.undecodable.values()),
            "undecodable_by_reason": dict(_STATS.undecodable),
        }


def reset_stats() -> None:
    """Zero the counters of :func:`stats` (tests; a sink between runs)."""
    with _STATS.lock:
        _STATS.reset()


def extract(
    path: str, headers: Mapping[str, str], body: bytes, marker_field: str = MARKER_FIELD
) -> tuple[list[str], int]:
    """``(markers found, events in the body)``; ``([], 0)`` for a body it cannot read."""
    result = decode(path, headers, body, marker_field)
    return result.markers, result.events


def decode(
    path: str, headers: Mapping[str, str], body: bytes, marker_field: str = MARKER_FIELD
) -> Decoded:
    """Like :func:`extract`, plus the reason a body could not be read. Never raises."""
    try:
        markers, events = _decode(path, headers, body, marker_field)
        result = Decoded(markers, events)
    except _DecodeError as exc:
        result = Decoded([], 0, str(exc.args[0]))
    except Exception as exc:  # never raise into the sink: count it instead
        result = Decoded([], 0, f"unexpected {type(exc).__name__}")
    _STATS.record(result)
    return result


# --- bodies -----------------------------------------------------------------------------


def _header(headers: Mapping[str, str], name: str) -> str:
    """A header's value, case-insensitively, from any mapping (dict, http.server's, ...)."""
    value = headers.get(name)
    if value is None:
        lower = name.lower()
        value = next((v for k, v in headers.items() if k.lower() == lower), "")
    return str(value).strip().lower()


def _decode(path: str, headers: Mapping[str, str], body: bytes, key: str) -> tuple[list[str], int]:
    raw = _inflate(bytes(body), _header(headers, "Content-Encoding"))
    start = _NON_SPACE.search(raw)  # not raw.strip(): that would copy the whole body
    if start is None:
        return [], 0
    ctype = _header(headers, "Content-Type")
    path = path.split("?", 1)[0].rstrip("/")
    if "sentry-envelope" in ctype or path.endswith("/envelope"):
        return _sentry_envelope(raw, key)
    if "protobuf" in ctype and path.endswith("/v1/traces"):
        return _otlp_traces(raw, key)
    if "protobuf" in ctype:
        return _otlp_protobuf(raw, key)
    if start.group() in (b"{", b"["):
        return _json_body(raw, key, ndjson="ndjson" in ctype)
    if path.endswith("/v1/logs"):
        return _otlp_protobuf(raw, key)
    raise _DecodeError("unknown format")


def _inflate(body: bytes, encoding: str) -> bytes:
    """Undo each ``Content-Encoding`` (last applied first), then any unlabelled gzip/zstd."""
    for coding in reversed([c.strip() for c in encoding.split(",") if c.strip()]):
        body = _inflate_one(body, coding)
    if body[:2] == _GZIP_MAGIC:
        body = _inflate_one(body, "gzip")
    elif body[:4] == _ZSTD_MAGIC:
        body = _inflate_one(body, "zstd")
    return body


def _inflate_one(body: bytes, coding: str) -> bytes:
    try:
        if coding in ("identity", "none"):
            return body
        if coding in ("gzip", "x-gzip"):
            return _bounded(zlib.decompressobj(16 + zlib.MAX_WBITS), body, multi_member=True)
        if coding == "deflate":
            # RFC 9110 says zlib-wrapped; some senders send raw deflate.
            zlib_wrapped = (
                len(body) > 1 and (body[0] & 0x0F) == 8 and (body[0] << 8 | body[1]) % 31 == 0
            )
            wbits = zlib.MAX_WBITS if zlib_wrapped else -zlib.MAX_WBITS
            return _bounded(zlib.decompressobj(wbits), body)
        if coding == "zstd":
            return _unzstd(body)
        if coding == "br":
            try:
                import brotli  # type: ignore[import-not-found]
            except ImportError:
                raise _DecodeError("br without the brotli module") from None
            return bytes(brotli.decompress(body))
    except _DecodeError:
        raise
    except Exception as exc:
        raise _DecodeError(f"bad {coding} body") from exc
    raise _DecodeError(f"unknown Content-Encoding {coding}")


def _unzstd(body: bytes) -> bytes:
    """Inflate zstd frames, fed in small pieces so a bomb stops near :data:`MAX_INFLATED`."""
    import zstandard  # a telemetry-client dependency, so always importable

    dctx = zstandard.ZstdDecompressor()
    parts = []
    total = 0
    data = body
    while data:
        frame = dctx.decompressobj()
        pos = 0
        while not frame.eof and pos < len(data):
            chunk = frame.decompress(data[pos : pos + _ZSTD_PIECE])
            pos += _ZSTD_PIECE
            total += len(chunk)
            if total > MAX_INFLATED:
                raise _DecodeError("inflated body too large")
            parts.append(chunk)
        if not frame.eof:
            raise _DecodeError("truncated compressed body")
        data = frame.unused_data + data[pos:]
        if data[:4] != _ZSTD_MAGIC:
            break  # trailing bytes after the last frame are ignored
    return b"".join(parts)


def _bounded(dec: Any, body: bytes, *, multi_member: bool = False) -> bytes:
    """Inflate with a ``zlib`` decompressobj, refusing more than :data:`MAX_INFLATED` bytes."""
    parts = []
    total = 0
    data = body
    while data:
        chunk = dec.decompress(data, MAX_INFLATED + 1 - total)
        total += len(chunk)
        parts.append(chunk)
        if total > MAX_INFLATED:
            raise _DecodeError("inflated body too large")
        if dec.unconsumed_tail:
            data = dec.unconsumed_tail
            continue
        if not dec.eof:
            raise _DecodeError("truncated compressed body")
        data = dec.unused_data
        if not (multi_member and data[:2] == _GZIP_MAGIC):
            break  # trailing bytes after the stream are ignored, as gzip(1) does
        dec = zlib.decompressobj(16 + zlib.MAX_WBITS)
    return b"".join(parts)


# --- JSON -------------------------------------------------------------------------------


def _loads(data: bytes) -> Any:
    """``orjson.loads`` (2-3x faster here), else ``json.loads``, which also takes NaN."""
    if orjson is not None:
        try:
            return orjson.loads(data)
        except ValueError:
            pass  # NaN / Infinity / huge ints (Python's json.dumps writes them), or not JSON
    return json.loads(data)


def _json_body(raw: bytes, key: str, *, ndjson: bool) -> tuple[list[str], int]:
    if not ndjson:
        try:
            doc = _loads(raw)
        except ValueError:
            ndjson = True  # "Extra data" after the first line: NDJSON
        else:
            return _json_doc(doc, key)
    markers: list[str] = []
    events = 0
    for line in raw.splitlines():
        if not line.strip():
            continue
        try:
            doc = _loads(line)
        except ValueError:
            raise _DecodeError("bad JSON") from None
        events += 1
        markers.extend(_markers_in(doc, key))
    return markers, events


def _json_doc(doc: Any, key: str) -> tuple[list[str], int]:
    if isinstance(doc, dict):
        if "resourceLogs" in doc:
            return _otlp_json(doc, key)
        for name in _EVENT_LISTS:
            if isinstance(doc.get(name), list):
                return _events_of(doc[name], key)
        return _markers_in(doc, key), 1
    if isinstance(doc, list):
        return _events_of(doc, key)
    raise _DecodeError("JSON is neither an object nor an array")


def _events_of(events: list[Any], key: str) -> tuple[list[str], int]:
    markers: list[str] = []
    for event in events:
        markers.extend(_markers_in(event, key))
    return markers, len(events)


def _markers_in(obj: Any, key: str) -> list[str]:
    """The distinct markers anywhere in one event (dicts and lists, any depth)."""
    found: list[str] = []
    if type(obj) is not dict and type(obj) is not list:
        return found
    stack = [obj]
    pop, push = stack.pop, stack.append
    while stack:
        node = pop()
        if type(node) is dict:
            value = node.get(key, _MISSING)
            if value is not _MISSING:
                _add(found, value)
            if node.get("key") == key and "value" in node:  # OTLP JSON {"key", "value"}
                _add(found, node["value"])
            for value in node.values():
                if type(value) is dict or type(value) is list:
                    push(value)
        else:  # a list
            for value in node:
                if type(value) is dict or type(value) is list:
                    push(value)
    return found


def _add(found: list[str], value: Any) -> None:
    marker = _marker_text(value)
    if marker is not None and marker not in found:
        found.append(marker)


def _marker_text(value: Any) -> str | None:
    """A marker value as a decimal string: int, integral float, digit string, or wrapped."""
    kind = type(value)
    if kind is int:
        return str(value)
    if kind is str:
        text = value.strip()
        return text if text.lstrip("-").isdigit() else None
    if kind is float:
        return str(int(value)) if value.is_integer() else None
    if kind is dict:  # Sentry's {"value": 5, "type": "integer"}, OTLP JSON {"intValue": "5"}
        for name in ("value", *_OTLP_JSON_VALUE_KEYS):
            if name in value:
                return _marker_text(value[name])
    return None


def _otlp_json(doc: dict[str, Any], key: str) -> tuple[list[str], int]:
    markers: list[str] = []
    events = 0
    for resource_logs in doc.get("resourceLogs") or ():
        for scope_logs in resource_logs.get("scopeLogs") or ():
            for record in scope_logs.get("logRecords") or ():
                events += 1
                markers.extend(_markers_in(record, key))
    return markers, events


# --- OTLP protobuf ----------------------------------------------------------------------


def _otlp_protobuf(raw: bytes, key: str) -> tuple[list[str], int]:
    try:
        from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
            ExportLogsServiceRequest,
        )
    except ImportError:
        raise _DecodeError("protobuf without opentelemetry-proto") from None
    try:
        request = ExportLogsServiceRequest.FromString(raw)
    except Exception:
        raise _DecodeError("bad OTLP protobuf") from None
    markers: list[str] = []
    events = 0
    for resource_logs in request.resource_logs:
        for scope_logs in resource_logs.scope_logs:
            for record in scope_logs.log_records:
                events += 1
                found: list[str] = []
                _proto_kvs(record.attributes, key, found)
                if record.HasField("body"):
                    _proto_value(record.body, key, found)
                markers.extend(found)
    return markers, events


def _otlp_traces(raw: bytes, key: str) -> tuple[list[str], int]:
    """OTLP/HTTP traces: one event per span, markers in its attributes (the otlp variant)."""
    try:
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
            ExportTraceServiceRequest,
        )
    except ImportError:
        raise _DecodeError("protobuf without opentelemetry-proto") from None
    try:
        request = ExportTraceServiceRequest.FromString(raw)
    except Exception:
        raise _DecodeError("bad OTLP protobuf") from None
    markers: list[str] = []
    events = 0
    for resource_spans in request.resource_spans:
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                events += 1
                found: list[str] = []
                _proto_kvs(span.attributes, key, found)
                markers.extend(found)
    return markers, events


def _proto_kvs(kvs: Any, key: str, found: list[str]) -> None:
    for kv in kvs:
        value = kv.value
        if kv.key == key:
            which = value.WhichOneof("value")
            if which in ("int_value", "string_value", "double_value"):
                _add(found, getattr(value, which))
        _proto_value(value, key, found)


def _proto_value(value: Any, key: str, found: list[str]) -> None:
    which = value.WhichOneof("value")
    if which == "kvlist_value":
        _proto_kvs(value.kvlist_value.values, key, found)
    elif which == "array_value":
        for item in value.array_value.values:
            _proto_value(item, key, found)


# --- Sentry envelopes -------------------------------------------------------------------


def _sentry_envelope(raw: bytes, key: str) -> tuple[list[str], int]:
    stream = io.BytesIO(raw)
    try:
        _loads(stream.readline())  # the envelope header: event_id, sent_at, dsn, ...
    except ValueError:
        raise _DecodeError("bad Sentry envelope header") from None
    markers: list[str] = []
    events = 0
    while True:
        line = stream.readline()
        if not line:
            break
        if not line.strip():
            continue
        try:
            item = _loads(line)
            length = item.get("length")
            if length is None:
                payload = stream.readline().rstrip(b"\n")
            else:
                payload = stream.read(int(length))
                if len(payload) < int(length):
                    raise _DecodeError("truncated Sentry envelope item")
                stream.readline()
            kind = item.get("type")
            if kind in _SENTRY_EVENT_ITEMS:
                events += 1
                markers.extend(_markers_in(_loads(payload), key))
            elif kind == "log":
                doc = _loads(payload)
                logs = doc.get("items") if isinstance(doc, dict) else None
                if isinstance(logs, list):
                    found, n = _events_of(logs, key)
                    markers.extend(found)
                    events += n
        except (ValueError, TypeError) as exc:
            raise _DecodeError("bad Sentry envelope item") from exc
    return markers, events
