"""Turn emitted records into JSONL lines: envelope, total coercion, redaction.

Runs on the spool writer thread (never on the caller's loop). It must be *total*:
whatever the caller passed, a line comes out and nothing raises.

Fast path (almost every event): one walk over containers checking keys and value types
(no string is touched), one ``orjson.dumps`` of the whole envelope, one byte-level
secret prefilter over the result, one length comparison (attachments, below). Anything
unusual falls to the slow path, which rebuilds the payload by the coercion rules below
and counts each coercion by kind.

Attachments: a str whose UTF-8 size, or a bytes value whose size, exceeds
``inline_max_bytes`` (``TELEMETRY_INLINE_MAX_BYTES``) is stored once in the spool as a
content-addressed blob (``spool/blobs.py``) and replaced by a reference. A str can only
be that large if the serialised ``data`` is longer than the limit (JSON never makes a
string shorter), so other events pay one ``len`` comparison. Strings are moved out after
redaction (the blob holds the redacted text, whose size and sha256 the reference gives);
bytes are moved out during coercion, as they are (never decoded, never redacted), behind
a placeholder the redactor does not look into, so its extra patterns and callback never
rewrite a reference. The blob is written before the event's batch is sealed (the order
``Spool.gc_blobs`` relies on). Attachment work is only ever done by the writer thread:
:meth:`Encoder.encode_inline_only` (an emitting thread's backpressure hand-off) returns
``None`` for an event that needs it, leaving it to the writer.

Coercion rules (kind counted in ``stats()["coerced"]``):

====================  ==========================================================
value                  becomes
====================  ==========================================================
NaN, +/-Infinity       ``null``                                  (non_finite)
int beyond 64 bits     its decimal string                         (big_int)
lone surrogates        one U+FFFD each, in strings and keys       (surrogate)
bytes / bytearray      UTF-8 text if valid, else ``{"$base64": "..."}`` (bytes)
                       (over the inline limit: an attachment, below)
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

Attachment rules (counted in ``stats()``: ``attachments``, ``attachments_truncated``,
``attachment_errors``), for a value over the inline limit, anywhere in ``data`` (dict
values, list items; keys stay inline; bytes within the limit stay inline even when their
``$base64`` form is longer):

====================  ==========================================================
value                  becomes ``{"$attachment": {...}}`` with
====================  ==========================================================
str                    ``sha256``/``size`` of its redacted UTF-8 bytes,
                       ``content_type`` ``text/plain; charset=utf-8``; blob stored
bytes-like             ``sha256``/``size`` of the raw bytes, ``content_type``
                       ``application/octet-stream``; blob stored  (also bytes)
over the attachment    ``"truncated": true``; for str a ``head``/``tail`` of about
max (either kind)      1 KiB of text each (bytes: no excerpt); no blob stored
blob not written       ``"stored": false`` and the same excerpts; the event is kept
(disk error, cap)      and the failure counted (attachment_errors) and logged
====================  ==========================================================
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import datetime as dt
import enum
import hashlib
import math
import re
import sys
import uuid
from collections import Counter
from collections.abc import Callable, Mapping
from decimal import Decimal
from pathlib import PurePath
from typing import Any

import orjson

from telemetry_client._internal import ids as _ids
from telemetry_client._internal.log import RateLimitedLogger
from telemetry_client.encode.redact import Redactor
from telemetry_client.events import Event, payload_of
from telemetry_client.spool.blobs import BINARY, REF_KEY, TEXT, BlobRef

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
EXCERPT_BYTES = 1024  # head/tail of a text attachment that is not stored whole

PutBlob = Callable[[bytes, str], BlobRef]


class _Deferred(Exception):
    """Raised inside ``encode_inline_only`` when the record needs attachment work."""


class _Ref:
    """A bytes attachment reference made during coercion, opaque to the redactor."""

    __slots__ = ("ref",)

    def __init__(self, ref: dict[str, Any]) -> None:
        self.ref = ref


def _ref_default(obj: Any) -> Any:
    """``orjson`` ``default=``: writes a ``_Ref`` as its reference object."""
    if type(obj) is _Ref:
        return obj.ref
    raise TypeError


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
    """Serialises records for one client. Not thread-safe: callers hold the batch lock.

    Attachments are on when ``put_blob`` (``Spool.put_blob``) is given; without it large
    fields stay inline.
    """

    def __init__(
        self,
        *,
        redactor: Redactor,
        app: str,
        app_version: str | None,
        machine_id: str,
        user_id: str,
        session_id: str,
        put_blob: PutBlob | None = None,
        inline_max_bytes: int = 64 * 1024,
        attachment_max_bytes: int = 32 * 1024 * 1024,
        log: RateLimitedLogger | None = None,
    ) -> None:
        self._redactor = redactor
        self._app = app
        self._app_version = app_version
        self._machine_id = machine_id
        self._user_id = user_id
        self._session_id = session_id
        self._type_ok: set[str] = set()
        self._middle: dict[tuple[str | None, str | None], bytes] = {}
        self._put_blob = put_blob
        # No sink: a limit no serialised payload reaches keeps the hot path's check false.
        self._inline_max = inline_max_bytes if put_blob is not None else sys.maxsize
        self._attachment_max = attachment_max_bytes
        self._log = log
        self._defer = False
        self.coerced: Counter[str] = Counter()
        self.redacted = 0
        self.failed = 0
        self.attachments = 0  # fields moved out into a stored blob
        self.attachments_truncated = 0  # over the attachment max: marker only
        self.attachment_errors = 0  # blob not written: marker only

    # -- public -------------------------------------------------------------------

    def encode_inline_only(self, rec: Record) -> bytes | None:
        """As :meth:`encode`, but ``None`` (nothing written, nothing counted) when ``rec``
        has a field to move out into an attachment: for a thread that must not do that work.
        """
        if self._put_blob is None:
            return self.encode(rec)
        coerced, redacted = self.coerced.copy(), self.redacted
        self._defer = True
        try:
            return self.encode(rec)
        except _Deferred:
            self.coerced, self.redacted = coerced, redacted
            return None
        finally:
            self._defer = False

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
        except _Deferred:
            raise
        except Exception as exc:  # defensive: encoding must be total
            self.failed += 1
            try:
                text = f"{type(exc).__name__}: {exc}"
            except Exception:
                text = type(exc).__name__
            # The ids themselves may be what failed (objects, lone surrogates): coerce them too,
            # never into attachments (the envelope holds plain values).
            limit, self._inline_max = self._inline_max, sys.maxsize
            try:
                sid, uid = (self._id_text(v) for v in (session_id, user_id))
                body = orjson.dumps({"error": self._coerce(text[:_REPR_MAX], 0, set())})
            finally:
                self._inline_max = limit
            return self._line("encode_error", body, ts_ns, seq, sid, uid)

    # -- internals ----------------------------------------------------------------

    def _id_text(self, value: Any) -> str | None:
        """A session/user id as envelope text (e.g. non-UTF-8 bytes: their JSON form)."""
        if value is None:
            return None
        out = self._coerce(value, 0, set())
        return out if isinstance(out, str) else orjson.dumps(out).decode()

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
            body = orjson.dumps(data, default=_ref_default)
        # The prefilter also sees every key name (as ``name":``), so secret keys need no walk.
        if self._redactor.maybe_secret(body):
            clean, n = self._redactor.redact(data)
            if n:
                self.redacted += n
                data = clean
                body = orjson.dumps(clean, default=_ref_default)
        if len(body) > self._inline_max:  # else no string in it can be over the limit
            moved = self._move_out(data)
            if moved is not data:  # copied on write: unchanged means nothing moved out
                body = orjson.dumps(moved, default=_ref_default)
        return self._line(etype, body, ts_ns, seq, sid, uid)

    # -- attachments --------------------------------------------------------------

    def _move_out(self, obj: Any) -> Any:
        """``obj`` with every str over the inline limit replaced by an attachment reference.

        Walks what coercion/redaction produced (dict, list, tuple, scalars, ``_Ref``);
        containers are copied only when something inside them changed.
        """
        t = type(obj)
        if t is str:
            if len(obj) <= self._inline_max // 4:  # UTF-8 needs at most 4 bytes a character
                return obj
            raw = obj.encode("utf-8")
            return self._attach(raw, TEXT) if len(raw) > self._inline_max else obj
        if t is dict:
            if len(obj) == 1 and "$base64" in obj:
                return obj  # inline form of bytes within the limit (raw size is what counts)
            out = None
            for k, v in obj.items():
                new = self._move_out(v)
                if new is not v:
                    if out is None:
                        out = dict(obj)
                    out[k] = new
            return obj if out is None else out
        if t is list or t is tuple:
            items = [self._move_out(v) for v in obj]
            if all(a is b for a, b in zip(items, obj, strict=True)):
                return obj
            return items
        return obj

    def _attach(self, raw: bytes, content_type: str) -> dict[str, Any]:
        """Store ``raw`` as a blob (unless too large); the ``{"$attachment": ...}`` object."""
        if self._defer:
            raise _Deferred
        size = len(raw)
        if size > self._attachment_max:
            self.attachments_truncated += 1
            ref = self._excerpted(raw, content_type, hashlib.sha256(raw).hexdigest())
            ref["truncated"] = True
            return {REF_KEY: ref}
        assert self._put_blob is not None  # only called with attachments on
        problem = ""
        try:
            blob = self._put_blob(raw, content_type)
            if blob.stored:
                self.attachments += 1
                return {
                    REF_KEY: {"sha256": blob.sha256, "size": size, "content_type": content_type}
                }
            sha = blob.sha256
            problem = "larger than the spool cap"
        except Exception as exc:  # OSError from the disk; anything else must not lose the event
            sha = hashlib.sha256(raw).hexdigest()
            problem = (isinstance(exc, OSError) and exc.strerror) or repr(exc)
        self.attachment_errors += 1
        if self._log is not None:
            self._log.error(
                "attachment-write",
                "telemetry: an attachment of %d bytes was not stored (%s); the event keeps"
                " its size, hash and an excerpt",
                size,
                problem,
            )
        ref = self._excerpted(raw, content_type, sha)
        ref["stored"] = False
        return {REF_KEY: ref}

    @staticmethod
    def _excerpted(raw: bytes, content_type: str, sha: str) -> dict[str, Any]:
        ref: dict[str, Any] = {"sha256": sha, "size": len(raw), "content_type": content_type}
        if content_type == TEXT:  # binary content is never excerpted into the event
            ref["head"] = raw[:EXCERPT_BYTES].decode("utf-8", "ignore")
            ref["tail"] = raw[-EXCERPT_BYTES:].decode("utf-8", "ignore")
        return ref

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
            if len(raw) > self._inline_max:
                return _Ref(self._attach(raw, BINARY))
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
            except _Deferred:
                raise
            except Exception:  # noqa: S110 - fall back to repr below
                pass
        try:
            text = repr(obj)
        except Exception:
            return f"<unrepresentable {type(obj).__name__}>"
        return self._coerce(text[:_REPR_MAX], depth + 1, seen)
