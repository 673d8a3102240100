"""Total coercion: whatever the caller passed becomes JSON-able, and nothing raises.

:func:`is_native` is the fast path's check (one walk over containers, no string touched):
True when orjson writes the value exactly as the rules below want. Anything else goes
through :meth:`Coercer.coerce`, which rebuilds it and counts each coercion by kind.

Rules (kind counted in ``stats()["coerced"]``):

====================  ==========================================================
value                  becomes
====================  ==========================================================
NaN, +/-Infinity       ``null``                                  (non_finite)
int beyond 64 bits     its decimal string                         (big_int)
lone surrogates        one U+FFFD each, in strings and keys       (surrogate)
bytes / bytearray      UTF-8 text if valid, else ``{"$base64": "..."}`` (bytes)
                       (over the inline limit: an attachment, ``attachments.py``)
set / frozenset        list (sorted when sortable)                (set)
datetime/date/time     ISO 8601 string                            (datetime)
Decimal                its exact decimal string                   (decimal)
UUID, Path, Enum       ``str``/``value``                          (object)
dataclass / pydantic   its fields as an object                    (object)
non-str dict key       ``str(key)`` (``null``/``true``/``false``)   (non_str_key)
anything else          ``repr()`` truncated to 1 KiB              (object)
nesting deeper than 64 ``"[max depth exceeded]"``                 (depth)
a cycle                ``"[circular reference]"``                 (cycle)
non-mapping ``data``   ``{"value": data}``                        (non_mapping_data)
bad ``type`` name      snake_cased, else ``"invalid_type"``       (type_name)
====================  ==========================================================

(The last two are the encoder's and the envelope's; they share the counter.)
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import datetime as dt
import enum
import math
import re
import uuid
from collections import Counter
from collections.abc import Mapping
from decimal import Decimal
from pathlib import PurePath
from typing import Any

import orjson

from telemetry_client.encode.attachments import Attachments, BytesRef, Deferred
from telemetry_client.events import Event, payload_of
from telemetry_client.spool.blobs import BINARY

__all__ = ["MAX_DEPTH", "REPR_MAX", "Coercer", "is_native"]

MAX_DEPTH = 64
REPR_MAX = 1024
_INT_MIN = -(2**63)
_INT_MAX = 2**64 - 1
_SIMPLE = frozenset({str, int, bool, type(None)})
_CONTAINERS = frozenset({dict, list, tuple})
_SURROGATE_RE = re.compile("[\ud800-\udfff]")


def is_native(obj: Any, depth: int) -> bool:
    """True when the dict/list/tuple ``obj`` holds only values orjson writes as our rules want.

    Anything else (floats that are not finite, ints beyond 64 bits, non-str keys, other
    types, nesting deeper than ``MAX_DEPTH``) sends the payload to the coercing path.
    """
    if depth > MAX_DEPTH:
        return False
    if type(obj) is dict:
        for k in obj:
            if type(k) is not str:
                return False
        values: Any = obj.values()
    else:
        values = obj  # list / tuple
    for v in values:
        tv = type(v)
        if tv in _SIMPLE:
            if tv is int and not (_INT_MIN <= v <= _INT_MAX):
                return False
        elif tv is float:
            if not math.isfinite(v):
                return False
        elif tv not in _CONTAINERS or not is_native(v, depth + 1):
            return False
    return True


class Coercer:
    """Applies the coercion rules, counting into ``coerced``; bytes over the inline limit
    become attachments through ``attachments``."""

    def __init__(self, attachments: Attachments, coerced: Counter[str]) -> None:
        self._attachments = attachments
        self.coerced = coerced

    def coerce(self, obj: Any, depth: int, seen: set[int]) -> Any:
        """``obj`` as JSON-able values (``BytesRef`` for bytes moved out); never raises
        except :class:`Deferred` (a hand-off met bytes that need a blob)."""
        t = type(obj)
        if t is not str and isinstance(obj, str) and not isinstance(obj, enum.Enum):
            obj, t = str.__str__(obj), str  # str subclasses are text, as int/float ones are numbers
        if t is str:
            try:
                obj.encode("utf-8")
            except UnicodeEncodeError:
                self.coerced["surrogate"] += 1
                return _SURROGATE_RE.sub("\ufffd", obj)  # one U+FFFD per lone surrogate
            return obj
        if obj is None or t is bool:
            return obj
        if t is int or (isinstance(obj, int) and not isinstance(obj, enum.Enum)):
            value = int(obj)
            if _INT_MIN <= value <= _INT_MAX:
                return value
            self.coerced["big_int"] += 1
            return str(value)
        if t is float or isinstance(obj, float):
            if math.isfinite(obj):
                return float(obj)
            self.coerced["non_finite"] += 1
            return None
        if depth > MAX_DEPTH:
            self.coerced["depth"] += 1
            return "[max depth exceeded]"
        if isinstance(obj, (dict, list, tuple, set, frozenset, Mapping)):
            oid = id(obj)
            if oid in seen:
                self.coerced["cycle"] += 1
                return "[circular reference]"
            seen.add(oid)
            try:
                return self._container(obj, depth, seen)
            finally:
                seen.discard(oid)
        return self._scalar(obj, depth, seen)

    def id_text(self, value: Any) -> str | None:
        """A session/user id as envelope text (e.g. non-UTF-8 bytes: their JSON form)."""
        if value is None:
            return None
        out = self.coerce(value, 0, set())
        return out if isinstance(out, str) else orjson.dumps(out).decode()

    def _container(self, obj: Any, depth: int, seen: set[int]) -> Any:
        if isinstance(obj, Mapping):
            out: dict[str, Any] = {}
            for key, v in obj.items():
                name = key
                if type(key) is not str:
                    self.coerced["non_str_key"] += 1
                    name = self._key_str(key)
                # keys are strings too: lone surrogates (also from str(key)) become U+FFFD
                out[self.coerce(name, 0, seen)] = self.coerce(v, depth + 1, seen)
            return out
        items = list(obj)
        if isinstance(obj, (set, frozenset)):
            self.coerced["set"] += 1
            with contextlib.suppress(TypeError):
                items = sorted(items)
        return [self.coerce(v, depth + 1, seen) for v in items]

    def _key_str(self, key: Any) -> str:
        if isinstance(key, str):
            return self.coerce(str(key), 0, set())  # type: ignore[no-any-return]
        if key is None or isinstance(key, bool):
            return orjson.dumps(key).decode()
        if isinstance(key, (int, float)):
            return repr(float(key)) if isinstance(key, float) else str(int(key))  # any size
        try:
            return str(key)[:REPR_MAX]
        except Exception:
            return f"<{type(key).__name__}>"

    def _scalar(self, obj: Any, depth: int, seen: set[int]) -> Any:
        if isinstance(obj, (bytes, bytearray, memoryview)):
            self.coerced["bytes"] += 1
            raw = bytes(obj)
            if len(raw) > self._attachments.inline_max:
                return BytesRef(self._attachments.attach(raw, BINARY))
            try:
                return raw.decode("utf-8")
            except UnicodeDecodeError:
                return {"$base64": base64.b64encode(raw).decode("ascii")}
        if isinstance(obj, (dt.datetime, dt.date, dt.time)):
            self.coerced["datetime"] += 1
            return obj.isoformat()
        if isinstance(obj, Decimal):
            self.coerced["decimal"] += 1
            return str(obj)
        self.coerced["object"] += 1
        if isinstance(obj, enum.Enum):
            return self.coerce(obj.value, depth + 1, seen)
        if isinstance(obj, (uuid.UUID, PurePath)):
            return str(obj)
        if isinstance(obj, Event):
            return self.coerce(payload_of(obj), depth + 1, seen)
        if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
            fields = {f.name: getattr(obj, f.name, None) for f in dataclasses.fields(obj)}
            return self.coerce(fields, depth + 1, seen)
        dump = getattr(obj, "model_dump", None)
        if callable(dump) and not isinstance(obj, type):
            try:
                return self.coerce(dump(mode="json"), depth + 1, seen)
            except Deferred:
                raise
            except Exception:  # noqa: S110 - fall back to repr below
                pass
        try:
            text = repr(obj)
        except Exception:
            return f"<unrepresentable {type(obj).__name__}>"
        return self.coerce(text[:REPR_MAX], depth + 1, seen)
