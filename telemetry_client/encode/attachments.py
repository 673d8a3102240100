"""Moving large fields out of events into attachments (content-addressed blobs).

A str whose UTF-8 size, or a bytes value whose size, exceeds ``inline_max_bytes``
(``TELEMETRY_INLINE_MAX_BYTES``) is stored once through :data:`PutBlob` and replaced by a
reference (docs/protocol.md, "Envelope"). Strings move out after redaction (the blob holds
the redacted text); bytes move out during coercion, raw, behind a :class:`BytesRef` placeholder the
redactor does not look into. The blob is written before the event's batch is sealed.
Only the writer thread does this work: with :attr:`Attachments.defer` set (an emitting
thread's hand-off), a field that needs a blob raises :class:`Deferred` instead.

Rules (counted in ``stats()``: ``attachments``, ``attachments_truncated``,
``attachment_errors``), for a value over the inline limit anywhere in ``data`` (dict
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

import hashlib
import sys
from collections.abc import Callable
from typing import Any, Protocol

from telemetry_client._internal.log import RateLimitedLogger
from telemetry_client.spool.blobs import REF_KEY, TEXT

__all__ = ["EXCERPT_BYTES", "Attachments", "BytesRef", "Deferred", "PutBlob", "StoredBlob"]

EXCERPT_BYTES = 1024  # head/tail of a text attachment that is not stored whole


class StoredBlob(Protocol):
    """What the blob store says about one ``put``."""

    @property
    def sha256(self) -> str: ...

    @property
    def stored(self) -> bool:
        """False when nothing was written (the blob alone is larger than the store's cap)."""
        ...


# The blob store as the encoder sees it (``Spool.put_blob``): (raw, content type) -> outcome;
# raises OSError when the disk refuses.
PutBlob = Callable[[bytes, str], StoredBlob]


class Deferred(Exception):
    """Raised while :attr:`Attachments.defer` is set, when a field needs a blob."""


class BytesRef:
    """A bytes attachment reference made during coercion, opaque to the redactor."""

    __slots__ = ("ref",)

    def __init__(self, ref: dict[str, Any]) -> None:
        self.ref = ref


def ref_default(obj: Any) -> Any:
    """``orjson`` ``default=``: writes a :class:`BytesRef` as its reference object."""
    if type(obj) is BytesRef:
        return obj.ref
    raise TypeError


class Attachments:
    """Moves fields over the inline limit into blobs, for one encoder (same lock)."""

    def __init__(
        self,
        put_blob: PutBlob | None,
        *,
        inline_max_bytes: int,
        attachment_max_bytes: int,
        log: RateLimitedLogger | None,
    ) -> None:
        self._put_blob = put_blob
        # No store: a limit no serialised payload reaches keeps the hot path's check false.
        self.inline_max = inline_max_bytes if put_blob is not None else sys.maxsize
        self._attachment_max = attachment_max_bytes
        self._log = log
        self.enabled = put_blob is not None
        self.defer = False  # set during a hand-off: raise Deferred instead of storing
        self.stored = 0  # fields moved out into a stored blob
        self.truncated = 0  # over the attachment max: marker only
        self.errors = 0  # blob not written: marker only

    def move_out(self, obj: Any) -> Any:
        """``obj`` with every str over the inline limit replaced by an attachment reference.

        Walks what coercion/redaction produced (dict, list, tuple, scalars, ``BytesRef``);
        containers are copied only when something inside them changed.
        """
        t = type(obj)
        if t is str:
            if len(obj) <= self.inline_max // 4:  # UTF-8 needs at most 4 bytes a character
                return obj
            raw = obj.encode("utf-8")
            return self.attach(raw, TEXT) if len(raw) > self.inline_max else obj
        if t is dict:
            if len(obj) == 1 and "$base64" in obj:
                return obj  # inline form of bytes within the limit (raw size is what counts)
            out = None
            for k, v in obj.items():
                new = self.move_out(v)
                if new is not v:
                    if out is None:
                        out = dict(obj)
                    out[k] = new
            return obj if out is None else out
        if t is list or t is tuple:
            items = [self.move_out(v) for v in obj]
            if all(a is b for a, b in zip(items, obj, strict=True)):
                return obj
            return items
        return obj

    def attach(self, raw: bytes, content_type: str) -> dict[str, Any]:
        """Store ``raw`` as a blob (unless too large); the ``{"$attachment": ...}`` object."""
        if self.defer:
            raise Deferred
        size = len(raw)
        if size > self._attachment_max:
            self.truncated += 1
            ref = _excerpted(raw, content_type, hashlib.sha256(raw).hexdigest())
            ref["truncated"] = True
            return {REF_KEY: ref}
        assert self._put_blob is not None  # only called with attachments on
        problem = ""
        try:
            blob = self._put_blob(raw, content_type)
            if blob.stored:
                self.stored += 1
                return {
                    REF_KEY: {"sha256": blob.sha256, "size": size, "content_type": content_type}
                }
            sha = blob.sha256
            problem = "larger than the spool cap"
        except Exception as exc:  # OSError from the disk; anything else must not lose the event
            sha = hashlib.sha256(raw).hexdigest()
            problem = (isinstance(exc, OSError) and exc.strerror) or repr(exc)
        self.errors += 1
        if self._log is not None:
            self._log.error(
                "attachment-write",
                "telemetry: an attachment of %d bytes was not stored (%s); the event keeps"
                " its size, hash and an excerpt",
                size,
                problem,
            )
        ref = _excerpted(raw, content_type, sha)
        ref["stored"] = False
        return {REF_KEY: ref}


def _excerpted(raw: bytes, content_type: str, sha: str) -> dict[str, Any]:
    ref: dict[str, Any] = {"sha256": sha, "size": len(raw), "content_type": content_type}
    if content_type == TEXT:  # binary content is never excerpted into the event
        ref["head"] = raw[:EXCERPT_BYTES].decode("utf-8", "ignore")
        ref["tail"] = raw[-EXCERPT_BYTES:].decode("utf-8", "ignore")
    return ref
