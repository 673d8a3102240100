"""Turn emitted records into JSONL lines: envelope, total coercion, redaction, attachments.

Runs on the spool writer thread (never on the caller's loop). It must be *total*: whatever
the caller passed, a line comes out and nothing raises (a failure becomes an
``encode_error`` event, counted in ``stats()["encode_errors"]``).

Fast path (almost every event): one walk checking keys and value types
(:func:`~telemetry_client.encode.coerce.is_native`), one ``orjson.dumps`` of ``data``, one
byte-level secret prefilter over the result, one length comparison (a str can only be
over the inline limit if the serialised ``data`` is: JSON never makes a string shorter),
then the envelope around the bytes. Anything unusual takes the coercing path. The rules:
``coerce.py`` (coercion), ``redact.py`` (redaction), ``attachments.py`` (large fields),
``envelope.py`` (the envelope).
"""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Mapping
from typing import Any

import orjson

from telemetry_client._internal.log import RateLimitedLogger
from telemetry_client.encode.attachments import Attachments, Deferred, PutBlob, ref_default
from telemetry_client.encode.coerce import REPR_MAX, Coercer, is_native
from telemetry_client.encode.envelope import Envelope, Record, format_ts
from telemetry_client.encode.redact import Redactor
from telemetry_client.events import Event, payload_of

__all__ = ["Encoder", "PutBlob", "Record", "format_ts"]


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
        self.coerced: Counter[str] = Counter()  # by kind, shared with the parts below
        self.redacted = 0
        self.failed = 0
        self._redactor = redactor
        self._attachments = Attachments(
            put_blob,
            inline_max_bytes=inline_max_bytes,
            attachment_max_bytes=attachment_max_bytes,
            log=log,
        )
        self._coercer = Coercer(self._attachments, self.coerced)
        envelope = Envelope(
            app=app,
            app_version=app_version,
            machine_id=machine_id,
            user_id=user_id,
            session_id=session_id,
            coerced=self.coerced,
        )
        # Bound once: the hot path pays no lookups through the parts.
        self._type_ok = envelope.known_types
        self._type_name = envelope.type_name
        self._line = envelope.line
        self._coerce = self._coercer.coerce
        self._move_out = self._attachments.move_out
        self._inline_max = self._attachments.inline_max

    @property
    def attachments(self) -> int:
        """Fields moved out into a stored blob."""
        return self._attachments.stored

    @property
    def attachments_truncated(self) -> int:
        """Fields over the attachment maximum: a marker only, no blob."""
        return self._attachments.truncated

    @property
    def attachment_errors(self) -> int:
        """Blobs that could not be written: a marker only."""
        return self._attachments.errors

    def encode_inline_only(self, rec: Record) -> bytes | None:
        """As :meth:`encode`, but ``None`` (nothing written, nothing counted) when ``rec``
        has a field to move out into an attachment: for a thread that must not do that work.
        """
        attachments = self._attachments
        if not attachments.enabled:
            return self.encode(rec)
        coerced, redacted = dict(self.coerced), self.redacted  # dict(): ~5x a Counter copy
        attachments.defer = True
        try:
            return self.encode(rec)
        except Deferred:
            self.coerced.clear()  # in place: the parts hold the same counter
            self.coerced.update(coerced)
            self.redacted = redacted
            return None
        finally:
            attachments.defer = False

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
                etype = kind if kind in self._type_ok else self._type_name(kind)
            return self._encode(etype, data, ts_ns, seq, session_id, user_id)
        except Deferred:
            raise
        except Exception as exc:  # defensive: encoding must be total
            return self._error_line(exc, ts_ns, seq, session_id, user_id)

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
        if is_native(data, 0):
            try:
                body = orjson.dumps(data)
            except (TypeError, orjson.JSONEncodeError):
                body = None
        if body is None:
            data = self._coerce(data, 0, set())
            body = orjson.dumps(data, default=ref_default)
        # The prefilter also sees every key name (as ``name":``), so secret keys need no walk.
        if self._redactor.maybe_secret(body):
            clean, n = self._redactor.redact(data)
            if n:
                self.redacted += n
                data = clean
                body = orjson.dumps(clean, default=ref_default)
        if len(body) > self._inline_max:  # else no string in it can be over the limit
            moved = self._move_out(data)
            if moved is not data:  # copied on write: unchanged means nothing moved out
                body = orjson.dumps(moved, default=ref_default)
        return self._line(etype, body, ts_ns, seq, sid, uid)

    def _error_line(
        self, exc: Exception, ts_ns: int, seq: int, session_id: Any, user_id: Any
    ) -> bytes:
        """An ``encode_error`` event in place of the record that could not be encoded."""
        self.failed += 1
        try:
            text = f"{type(exc).__name__}: {exc}"
        except Exception:
            text = type(exc).__name__
        # The ids themselves may be what failed (objects, lone surrogates): coerce them too,
        # never into attachments (the envelope holds plain values).
        attachments = self._attachments
        limit, attachments.inline_max = attachments.inline_max, sys.maxsize
        try:
            coercer = self._coercer
            sid, uid = (coercer.id_text(v) for v in (session_id, user_id))
            body = orjson.dumps({"error": coercer.coerce(text[:REPR_MAX], 0, set())})
        finally:
            attachments.inline_max = limit
        return self._line("encode_error", body, ts_ns, seq, sid, uid)
