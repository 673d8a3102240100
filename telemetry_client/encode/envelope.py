"""The event envelope (docs/protocol.md): ``id``, ``type``, ``ts``, ids, ``seq`` around ``data``.

Built as bytes around an already serialised ``data`` (the hot path): the part that depends
only on the (session, user) pair is serialised once and cached, and the id and timestamp
are hex and digits, so nothing needs escaping. A ``type`` that is not snake_case is
snake-cased (counted as a ``type_name`` coercion), else becomes ``"invalid_type"``.
"""

from __future__ import annotations

import datetime as dt
import re
from collections import Counter
from typing import Any

import orjson

from telemetry_client._internal import ids as _ids

__all__ = ["Envelope", "Record", "format_ts"]

# (type or Event, data, ts_ns, seq, session_id, user_id)
Record = tuple[Any, Any, int, int, str | None, str | None]

_TYPE_RE = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
_CAMEL_RE = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_NON_WORD_RE = re.compile(r"[^a-z0-9_]+")
_MAX_KNOWN_TYPES = 4096
_MAX_MIDDLES = 1024

# (second, prefix as text, prefix as bytes), replaced as one object: encoders of several
# clients run on several threads, and a list could pair one thread's second with another's prefix.
_ts_cache: tuple[int, str, bytes] = (-1, "", b"")

# One bytes format per line (hot path): the id's five fields, type, the per-second timestamp
# prefix and microseconds, the cached ids part, seq, then data.
_LINE = (
    b'{"id":"'
    + _ids.EVENT_ID_FORMAT.encode()
    + b'","type":"%b","ts":"%b.%06dZ",%b,"seq":%d,"data":%b}'
)


def _ts_prefix(sec: int) -> tuple[int, str, bytes]:
    global _ts_cache  # noqa: PLW0603 - a one-entry cache swapped atomically
    cached = _ts_cache
    if cached[0] != sec:
        text = dt.datetime.fromtimestamp(sec, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
        cached = _ts_cache = (sec, text, text.encode())
    return cached


def format_ts(ts_ns: int) -> str:
    """RFC 3339 UTC with microseconds; the per-second prefix is cached."""
    sec, rem = divmod(ts_ns, 1_000_000_000)
    return f"{_ts_prefix(sec)[1]}.{rem // 1000:06d}Z"


class Envelope:
    """The envelope fields of one client. Not thread-safe (the encoder's caller locks)."""

    def __init__(
        self,
        *,
        app: str,
        app_version: str | None,
        machine_id: str,
        user_id: str,
        session_id: str,
        coerced: Counter[str],
    ) -> None:
        self._app = app
        self._app_version = app_version
        self._machine_id = machine_id
        self._user_id = user_id
        self._session_id = session_id
        self._coerced = coerced
        self.known_types: set[str] = set()  # valid names seen: one set lookup per event
        self._middle: dict[tuple[str | None, str | None], bytes] = {}

    def type_name(self, kind: Any) -> str:
        """``kind`` as a valid event type (snake_case, at most 64 characters)."""
        if isinstance(kind, str) and _TYPE_RE.match(kind):
            if len(self.known_types) < _MAX_KNOWN_TYPES:
                self.known_types.add(kind)
            return kind
        self._coerced["type_name"] += 1
        text = kind if isinstance(kind, str) else type(kind).__name__
        text = _NON_WORD_RE.sub("_", _CAMEL_RE.sub("_", text).lower()).strip("_")[:64]
        if not text or not text[0].isalpha():
            return "invalid_type"
        return text

    def line(
        self, etype: str, body: bytes, ts_ns: int, seq: int, sid: str | None, uid: str | None
    ) -> bytes:
        """One JSON line (no newline) around ``body``, the serialised ``data``.

        ``etype`` must be valid (:meth:`type_name`); ``sid``/``uid`` are text or None
        (None: the client's defaults).
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
            if len(self._middle) >= _MAX_MIDDLES:
                self._middle.clear()
            self._middle[key] = middle
        sec, rem = divmod(ts_ns, 1_000_000_000)
        cached = _ts_cache  # one read: another thread may swap it
        prefix = cached[2] if cached[0] == sec else _ts_prefix(sec)[2]
        return _LINE % (
            *_ids.event_id_fields(ts_ns),
            etype.encode(),
            prefix,
            rem // 1000,
            middle,
            seq,
            body,
        )
