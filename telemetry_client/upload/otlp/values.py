"""Plain values to OTLP protobuf values, times and deterministic ids (docs/otlp.md).

``any_value`` turns a JSON value (the envelope's ``data``) into an ``AnyValue``: maps
become ``kvlist_value``, lists ``array_value``, so a body keeps its structure and an
attachment reference stays what it is in the spool (``{"$attachment": {...}}``), a
reference and never the content. Ids derive from run and event ids through SHA-256, so a
batch sent again (a retry, another process, after a crash) yields the very same trace and
span ids.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Mapping
from typing import Any

import orjson
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

__all__ = ["any_value", "attribute", "scalar", "span_id", "trace_id", "ts_ns"]


def trace_id(key: str) -> bytes:
    """16 bytes naming the trace of ``key`` (a run id, or an event id outside any run)."""
    return hashlib.sha256(b"trace:" + key.encode()).digest()[:16]


def span_id(key: str) -> bytes:
    """8 bytes naming the span of ``key`` (``run:<id>`` for a run's root, else an event id)."""
    return hashlib.sha256(b"span:" + key.encode()).digest()[:8]


def ts_ns(ts: object) -> int:
    """Nanoseconds since the epoch of an RFC 3339 timestamp (0 when unreadable)."""
    if not isinstance(ts, str):
        return 0
    try:
        when = dt.datetime.fromisoformat(ts)
    except ValueError:
        return 0
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.timezone.utc)
    delta = when - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1000


_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)


def any_value(value: Any, out: AnyValue | None = None) -> AnyValue:
    """``value`` (JSON-shaped) as an ``AnyValue``, written into ``out`` when given."""
    v = AnyValue() if out is None else out
    kind = type(value)
    if kind is str:
        v.string_value = value
    elif kind is bool:
        v.bool_value = value
    elif kind is int:
        if -(1 << 63) <= value < (1 << 63):
            v.int_value = value
        else:
            v.string_value = str(value)
    elif kind is float:
        v.double_value = value
    elif value is None:
        pass  # an empty AnyValue is OTLP's null
    elif isinstance(value, Mapping):
        kvs = v.kvlist_value.values
        for key, item in value.items():
            kv = kvs.add()
            kv.key = str(key)
            any_value(item, kv.value)
    elif isinstance(value, list | tuple):
        items = v.array_value.values
        for item in value:
            any_value(item, items.add())
    else:
        v.string_value = str(value)
    return v


def scalar(value: Any) -> str | bool | int | float | None:
    """An attribute-friendly value: scalars as they are, anything else as compact JSON."""
    if value is None or type(value) in (str, bool, int, float):
        return value  # type: ignore[no-any-return]
    try:
        return orjson.dumps(value).decode()
    except TypeError:
        return str(value)


def attribute(attrs: Any, key: str, value: Any) -> None:
    """Append ``key = value`` to a repeated ``KeyValue`` field (``None`` is left out)."""
    if value is None:
        return
    kv: KeyValue = attrs.add()
    kv.key = key
    any_value(value, kv.value)
