"""Attachment blobs: their file names, the reference format, and strict zstd frame decoding.

A string or bytes field too large to stay inline leaves its event (``encode/encoder.py``)
and is stored once, content-addressed, under ``attachments/`` in the spool
(``blob_store.py`` writes, reads and collects blobs; ``cap.py`` evicts them). The event
keeps a reference in place of the value::

    {"$attachment": {"sha256": "<hex of the raw bytes>", "size": <raw bytes>,
                     "content_type": "text/plain; charset=utf-8"}}

Only such a plain reference names a blob the uploader must send first. A reference that
also says ``"truncated": true`` (the field exceeded ``TELEMETRY_ATTACHMENT_MAX_BYTES``)
or ``"stored": false`` (the blob could not be written) names no blob: it carries the size,
the hash and, for text, a ``head``/``tail`` excerpt instead.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, ClassVar

import orjson
import zstandard

__all__ = [
    "BINARY",
    "REF_KEY",
    "TEXT",
    "AttachmentRef",
    "BlobName",
    "BlobRef",
    "attachment_refs",
    "decompress_frame",
    "is_sha256",
]

TEXT = "text/plain; charset=utf-8"
BINARY = "application/octet-stream"
REF_KEY = "$attachment"
_REF_NEEDLE = b'"$attachment"'
_BLOB_RE = re.compile(r"([0-9a-f]{64})\.(\d+)\.(\d+)\.zst")
_SHA_RE = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True, slots=True)
class BlobName:
    """What a blob file name says: ``<sha256>.<raw size>.<stored size>.zst``."""

    PATTERN: ClassVar[re.Pattern[str]] = _BLOB_RE  # group 3: the stored size
    sha256: str
    raw_size: int
    stored_size: int

    @classmethod
    def parse(cls, name: str) -> BlobName | None:
        m = _BLOB_RE.fullmatch(name)
        if m is None:
            return None
        return cls(m.group(1), int(m.group(2)), int(m.group(3)))

    @property
    def filename(self) -> str:
        return f"{self.sha256}.{self.raw_size}.{self.stored_size}.zst"


@dataclass(frozen=True, slots=True)
class BlobRef:
    """What :meth:`BlobStore.put` (``Spool.put_blob``) did with one attachment.

    ``stored`` is False when the blob alone is larger than the spool cap (nothing written).
    """

    sha256: str
    size: int
    content_type: str
    stored: bool = True


@dataclass(frozen=True, slots=True)
class AttachmentRef:
    """A stored attachment an event references (the uploader sends it before the batch)."""

    sha256: str
    size: int
    content_type: str


def is_sha256(value: str) -> bool:
    """True for 64 lowercase hex digits (what blob names and references use)."""
    return _SHA_RE.fullmatch(value) is not None


def attachment_refs(raw_jsonl: bytes) -> list[AttachmentRef]:
    """The unique stored attachment references in a decompressed batch, in order of appearance.

    Cheap for the common batch without any: one substring check. Otherwise only lines
    holding ``"$attachment"`` are parsed; truncated and ``stored: false`` references, and
    anything not shaped like a reference, are skipped.
    """
    if _REF_NEEDLE not in raw_jsonl:
        return []
    found: dict[str, AttachmentRef] = {}
    for line in raw_jsonl.split(b"\n"):
        if _REF_NEEDLE not in line:
            continue
        try:
            event = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        if isinstance(event, dict):
            _collect(event.get("data"), found)
    return list(found.values())


def _collect(obj: Any, found: dict[str, AttachmentRef]) -> None:
    if isinstance(obj, dict):
        ref = obj.get(REF_KEY) if len(obj) == 1 else None
        if isinstance(ref, dict):
            parsed = _parse_ref(ref)
            if parsed is not None:
                found.setdefault(parsed.sha256, parsed)
            return
        for v in obj.values():
            _collect(v, found)
    elif isinstance(obj, list):
        for v in obj:
            _collect(v, found)


def _parse_ref(ref: dict[str, Any]) -> AttachmentRef | None:
    sha, size, ctype = ref.get("sha256"), ref.get("size"), ref.get("content_type")
    if ref.get("truncated") is True or ref.get("stored") is False:
        return None
    if not (isinstance(sha, str) and is_sha256(sha)):
        return None
    if type(size) is not int or size < 0 or not isinstance(ctype, str):
        return None
    return AttachmentRef(sha, size, ctype)


def decompress_frame(
    dctx: zstandard.ZstdDecompressor, body: bytes, max_output: int
) -> tuple[str | None, bytes]:
    """Exactly one whole zstd frame (checksum verified) and nothing after it.

    Returns ``(problem, b"")`` for anything else, ``(None, content)`` when sound. Plain
    one-shot decompression silently ignores bytes after the frame (``allow_extra_data``),
    and ``max_output_size`` only bounds frames that do not declare their size, so a
    declared size is checked first (a corrupt header must not allocate gigabytes).
    """
    try:
        declared = zstandard.frame_content_size(body)
        if declared > max_output:
            return f"frame declares {declared} bytes, over the {max_output} limit", b""
        raw = dctx.decompress(body, max_output_size=max_output, allow_extra_data=False)
    except zstandard.ZstdError as exc:
        return f"not a single valid zstd frame ({exc})", b""
    return None, raw
