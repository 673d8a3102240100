"""Turn emitted records into JSONL lines: envelope, total coercion, redaction.

Runs on the spool writer thread (never on the caller's loop). It must be *total*:
whatever the caller passed, a line comes out and nothing raises.

Fast path (almost every event): one walk over containers checking keys and value types
(no string is touched), one ``orjson.dumps`` of the whole envelope, one byte-level
secret prefilter over the result. Anything unusual falls to the slow path, which
rebuilds the payload by the coercion rules below and counts each coercion by kind.

Coercion rules (kind counted in ``stats()["coerced"]``):

====================  ==========================================================
value                  becomes
====================  ==========================================================
NaN, +/-Infinity       ``null``                                  (non_finite)
int beyond 64 bits     its decimal string                         (big_int)
lone surrogates        one U+FFFD each, in strings and keys       (surrogate)
bytes / bytearray      UTF-8 text if valid, else ``{"$base64": "..."}`` (bytes)
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

from . import _ids
from ._redact import Redactor
from .events import Event, payload_of

__all__ = ["Encoder", "Record", "format_ts"]

MAX_DEPTH = 64
_REPR_MAX = 1024
_INT_MIN = -(2**63)
_INT_MAX = 2**64 - 1
_TYPE_RE = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
_CAMEL_RE = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_NON_WORD_RE = re.compile(r"[^a-z0-9_]+")

# (type or Event, data, ts_ns, seq, session_id, user_id)
Record = tuple[Any, Any, int, int, str | None, str | None]

_SIMPLE = frozenset({str, int, bool, type(None)})
_CONTAINERS = frozenset({dict, list, tuple})

_SURROGATE_RE = re.compile("[\ud800-\udfff]")

# (second, prefix), replaced as one object: encoders of several clients run on several threads,
# and a two-slot list could pair one thread's second with another thread's prefix.
_ts_cache: tuple[int, str] = (-1, "")


def format_ts(ts_ns: int) -> str:
    """RFC 3339 UTC with microseconds; the per-second prefix is cached."""
    global _ts_cache  # noqa: PLW0603 - a one-entry cache swapped atomically
    sec, rem = divmod(ts_ns, 1_000_000_000)
    cached_sec, prefix = _ts_cache
    if cached_sec != sec:
        prefix = dt.datetime.fromtimestamp(sec, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
        _ts_cache = (sec, prefix)
    return f"{prefix}.{rem // 1000:06d}Z"


class Encoder:
    """Serialises records for one client. Not thread-safe: callers hold the batch lock."""

    def __init__(
        self,
        *,
        redactor: Redactor,
        app: str,
        app_version: str | None,
        machine_id: str,
        user_id: str,
        session_id: str,
    ) -> None:
        self._redactor = redactor
        self._app = app
        self._app_version = app_version
        self._machine_id = machine_id
        self._user_id = user_id
        self._session_id = session_id
        self._type_ok: set[str] = set()
        self._middle: dict[tuple[str | None, str | None], bytes] = {}
        self.coerced: Counter[str] = Counter()
        self.redacted = 0
        self.failed = 0

    # -- public -------------------------------------------------------------------

    def encode(self, rec: Record) -> bytes:
        """One JSON line (without the newline) for ``rec``; never raises."""
        kind, data, ts_ns, seq, session_id, user_id = rec
        try:
            if isinstance(kind, Event):
                etype = kind.TYPE
                extra = data
                data = payload_of(kind)
                if extra is not None:  # emit(typed, {...}): extra fields, typed ones win
                    for k, v in extra.items() if isinstance(extra, Mapping) else [("value", extra)]:
                        data.setdefault(k, v)
            else:
                etype = kind if kind in self._type_ok else self._check_type(kind)
            return self._encode(etype, data, ts_ns, seq, session_id, user_id)
        except Exception as exc:  # defensive: encoding must be total
            self.failed += 1
            try:
                text = f"{type(exc).__name__}: {exc}"
            except Exception:
                text = type(exc).__name__
            # The ids themselves may be what failed (objects, lone surrogates): coerce them too.
            sid, uid = (
                None if v is None else self._coerce(v, 0, set()) for v in (session_id, user_id)
            )
            body = orjson.dumps({"error": self._coerce(text[:_REPR_MAX], 0, set())})
            return self._line("encode_error", body, ts_ns, seq, sid, uid)

    # -- internals ----------------------------------------------------------------

    def _check_type(self, kind: Any) -> str:
        if isinstance(kind, str) and _TYPE_RE.match(kind):
            if len(self._type_ok) < 4096:
                self._type_ok.add(kind)
            return kind
        self.coerced["type_name"] += 1
        text = kind if isinstance(kind, str) else type(kind).__name__
        text = _NON_WORD_RE.sub("_", _CAMEL_RE.sub("_", text).lower()).strip("_")[:64]
        if not text or not text[0].isalpha():
            return "invalid_type"
        return text

    def _encode(
        self, etype: str, data: Any, ts_ns: int, seq: int, sid: str | None, uid: str | None
    ) -> bytes:
        if data is None:
            data = {}
        elif type(data) is not dict:
            if isinstance(data, Mapping):
                data = dict(data)
            else:
                self.coerced["non_mapping_data"] += 1
                data = {"value": data}
        body: bytes | None = None
        if self._native(data, 0):
            try:
                body = orjson.dumps(data)
            except (TypeError, orjson.JSONEncodeError):
                body = None
        if body is None:
            data = self._coerce(data, 0, set())
            body = orjson.dumps(data)
        # The prefilter also sees every key name (as ``name":``), so secret keys need no walk.
        if self._redactor.maybe_secret(body):
            clean, n = self._redactor.redact(data)
            if n:
                self.redacted += n
                body = orjson.dumps(clean)
        return self._line(etype, body, ts_ns, seq, sid, uid)

    def _line(
        self, etype: str, body: bytes, ts_ns: int, seq: int, sid: str | None, uid: str | None
    ) -> bytes:
        """The envelope around an already serialised ``data``, built as bytes (hot path).

        The per-(session, user) middle of the envelope is serialised once and cached.
        ``etype`` is validated snake_case, ids and timestamps are hex/digits: no escaping.
        """
        key = (sid, uid)
        middle = self._middle.get(key)
        if middle is None:
            middle = orjson.dumps(
                {
                    "session_id": sid or self._session_id,
                    "user_id": uid or self._user_id,
                    "machine_id": self._machine_id,
                    "app": self._app,
                    "app_version": self._app_version,
                }
            )[1:-1]
            if len(self._middle) >= 1024:
                self._middle.clear()
            self._middle[key] = middle
        return b'{"id":"%b","type":"%b","ts":"%b",%b,"seq":%d,"data":%b}' % (
            _ids.event_id(ts_ns).encode(),
            etype.encode(),
            format_ts(ts_ns).encode(),
            middle,
            seq,
            body,
        )

    def _native(self, obj: Any, depth: int) -> bool:
        """True when ``obj`` holds only values orjson writes exactly as our rules want.

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
            elif tv not in _CONTAINERS or not self._native(v, depth + 1):
                return False
        return True

    def _coerce(self, obj: Any, depth: int, seen: set[int]) -> Any:
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
                return self._coerce_container(obj, depth, seen)
            finally:
                seen.discard(oid)
        return self._coerce_scalar(obj, depth, seen)

    def _coerce_container(self, obj: Any, depth: int, seen: set[int]) -> Any:
        if isinstance(obj, Mapping):
            out: dict[str, Any] = {}
            for key, v in obj.items():
                name = key
                if type(key) is not str:
                    self.coerced["non_str_key"] += 1
                    name = self._key_str(key)
                # keys are strings too: lone surrogates (also from str(key)) become U+FFFD
                out[self._coerce(name, 0, seen)] = self._coerce(v, depth + 1, seen)
            return out
        items = list(obj)
        if isinstance(obj, (set, frozenset)):
            self.coerced["set"] += 1
            with contextlib.suppress(TypeError):
                items = sorted(items)
        return [self._coerce(v, depth + 1, seen) for v in items]

    def _key_str(self, key: Any) -> str:
        if isinstance(key, str):
            return self._coerce(str(key), 0, set())  # type: ignore[no-any-return]
        if key is None or isinstance(key, bool):
            return orjson.dumps(key).decode()
        if isinstance(key, (int, float)):
            return repr(float(key)) if isinstance(key, float) else str(int(key))  # any size
        try:
            return str(key)[:_REPR_MAX]
        except Exception:
            return f"<{type(key).__name__}>"

    def _coerce_scalar(self, obj: Any, depth: int, seen: set[int]) -> Any:
        if isinstance(obj, (bytes, bytearray, memoryview)):
            self.coerced["bytes"] += 1
            raw = bytes(obj)
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
            return self._coerce(obj.value, depth + 1, seen)
        if isinstance(obj, (uuid.UUID, PurePath)):
            return str(obj)
        if isinstance(obj, Event):
            return self._coerce(payload_of(obj), depth + 1, seen)
        if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
            fields = {f.name: getattr(obj, f.name, None) for f in dataclasses.fields(obj)}
            return self._coerce(fields, depth + 1, seen)
        dump = getattr(obj, "model_dump", None)
        if callable(dump) and not isinstance(obj, type):
            try:
                return self._coerce(dump(mode="json"), depth + 1, seen)
            except Exception:  # noqa: S110 - fall back to repr below
                pass
        try:
            text = repr(obj)
        except Exception:
            return f"<unrepresentable {type(obj).__name__}>"
        return self._coerce(text[:_REPR_MAX], depth + 1, seen)
