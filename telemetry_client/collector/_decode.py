"""Request bodies: read with a size cap, decompress in bounded steps, parse and validate.

Everything here is synchronous and CPU-bound except :func:`read_body`; the app runs the
rest on a worker thread so the event loop never stalls on a large batch.

Bounded work against decompression bombs: compressed input is fed to the decompressor in
small slices (zstd expands at most ~32768:1, so one 256-byte slice yields at most ~8 MiB;
gzip output is capped per call with ``max_length``), a running total is checked after
every step, and NDJSON lines are validated as they complete, so an oversize line or body
is refused (413) long before it is inflated, and a bad line (400) before the rest is read.
A whole batch is accepted or refused: :func:`decode_events` returns every event or raises.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import AsyncIterable, Iterable, Iterator
from typing import Any, NamedTuple

import orjson
import zstandard

from telemetry_client.collector._errors import Rejected
from telemetry_client.collector._time import parse_rfc3339
from telemetry_client.events import ENVELOPE_FIELDS

__all__ = [
    "DecodedEvent",
    "content_kind",
    "decode_events",
    "encoding_of",
    "iter_decompressed",
    "read_body",
    "validate_envelope",
]

ENCODINGS = ("identity", "gzip", "zstd")
NDJSON_TYPES = ("application/x-ndjson", "application/ndjson", "application/jsonl")
JSON_TYPES = ("application/json",)

_ZSTD_SLICE = 256  # compressed bytes per decompress() call: <= ~8 MiB of output each
_GZIP_STEP = 1 << 20  # decompressed bytes per zlib call
_IDENTITY_STEP = 1 << 20
# Same rule as the client's encoder (telemetry_client/encode/encoder.py).
_TYPE_RE = re.compile(r"[a-z][a-z0-9_]{0,63}")
_SHA256_RE = re.compile(r"[0-9a-fA-F]{64}")
_INT64 = 1 << 63
_INDEXED_TEXT = ("id", "session_id", "user_id", "app")
# A token count above this is not a count (a trillion tokens): recorded as 0, so session
# sums can never overflow the databases' 64-bit integers.
_MAX_TOKENS = 1 << 40

# (field, accepted Python types, name for messages); ENVELOPE_FIELDS order, checked by a test.
_FIELD_TYPES: tuple[tuple[str, tuple[type, ...], str], ...] = (
    ("id", (str,), "a string"),
    ("type", (str,), "a string"),
    ("ts", (str,), "a string"),
    ("session_id", (str,), "a string"),
    ("user_id", (str,), "a string"),
    ("machine_id", (str,), "a string"),
    ("app", (str,), "a string"),
    ("app_version", (str, type(None)), "a string or null"),
    ("seq", (int,), "an integer"),
    ("data", (dict,), "an object"),
)
assert tuple(f for f, _, _ in _FIELD_TYPES) == ENVELOPE_FIELDS


class DecodedEvent(NamedTuple):
    """One validated event: its JSON line and the fields every store indexes.

    ``day`` (UTC day of ``ts``) and ``user_id`` place it in the 0.1 file store; ``ts_us``
    (epoch microseconds), ``session_id``, ``type``, ``app`` and ``seq`` are the database
    columns; ``attachments`` are the sha256s of the ``$attachment`` references anywhere in
    ``data``; ``input_tokens``/``output_tokens`` are an ``llm_call``'s usage (0 otherwise),
    summed into the session aggregates.
    """

    day: str
    user_id: str
    line: bytes  # canonical JSON (orjson) + "\n"
    id: str = ""
    type: str = ""
    ts_us: int = 0
    session_id: str = ""
    app: str = ""
    seq: int = 0
    attachments: tuple[str, ...] = ()
    input_tokens: int = 0
    output_tokens: int = 0


async def read_body(chunks: AsyncIterable[bytes], content_length: str | None, limit: int) -> bytes:
    """The whole request body, refused with 413 as soon as it is known to exceed ``limit``.

    ``Content-Length`` is checked before reading anything; the streamed total is checked
    on every chunk too (chunked uploads, or a client that lies).
    """
    if content_length is not None:
        try:
            declared = int(content_length)
        except ValueError:
            raise Rejected(400, "bad_header", "Content-Length is not a number") from None
        if declared > limit:
            raise Rejected(413, "body_too_large", f"body of {declared} bytes exceeds {limit}")
    parts: list[bytes] = []
    total = 0
    async for chunk in chunks:
        total += len(chunk)
        if total > limit:
            raise Rejected(413, "body_too_large", f"body exceeds {limit} bytes")
        parts.append(chunk)
    return b"".join(parts)


def encoding_of(header: str | None) -> str:
    """The body's ``Content-Encoding`` (absent = identity); 415 for anything else."""
    encoding = (header or "identity").strip().lower()
    if encoding not in ENCODINGS:
        raise Rejected(
            415,
            "unsupported_encoding",
            f"unsupported Content-Encoding {encoding[:40]!r}: use zstd, gzip or identity",
        )
    return encoding


def content_kind(header: str | None) -> str:
    """``"ndjson"`` or ``"json"`` from an events request's ``Content-Type``; 415 otherwise."""
    media = (header or "").split(";", 1)[0].strip().lower()
    if media in NDJSON_TYPES:
        return "ndjson"
    if media in JSON_TYPES:
        return "json"
    raise Rejected(
        415,
        "unsupported_media_type",
        f"unsupported Content-Type {media[:60]!r}:"
        " use application/x-ndjson (one event per line) or application/json (an array)",
    )


def iter_decompressed(body: bytes, encoding: str, limit: int) -> Iterator[bytes]:
    """Decompressed chunks of ``body``; 413 once their total exceeds ``limit``, 400 if corrupt."""
    chunks = {"identity": _identity, "gzip": _gunzip, "zstd": _unzstd}[encoding](body)
    total = 0
    for chunk in chunks:
        total += len(chunk)
        if total > limit:
            raise Rejected(
                413, "decompressed_too_large", f"decompressed body exceeds {limit} bytes"
            )
        if chunk:
            yield chunk


def _identity(body: bytes) -> Iterator[bytes]:
    for start in range(0, len(body), _IDENTITY_STEP):
        yield body[start : start + _IDENTITY_STEP]


def _not_valid(encoding: str, detail: str) -> Rejected:
    return Rejected(400, "bad_encoding", f"body is not valid {encoding} ({detail})")


def _unzstd(body: bytes) -> Iterator[bytes]:
    # decompressobj() (unlike stream_reader) reports whether the frame ended (``eof``), so a
    # truncated body is refused instead of silently accepted as its readable prefix.
    view = memoryview(body)
    dobj = zstandard.ZstdDecompressor().decompressobj()
    fed = False  # has the current frame seen any input?
    pos = 0
    pending = b""  # bytes after the end of a frame: the start of the next one
    while pos < len(view) or pending:
        if pending:
            piece: bytes | memoryview = pending
            pending = b""
        else:
            piece = view[pos : pos + _ZSTD_SLICE]
            pos += len(piece)
        try:
            out = dobj.decompress(piece)
        except zstandard.ZstdError as exc:
            raise _not_valid("zstd", str(exc).removeprefix("zstd decompressor error: ")) from None
        fed = True
        yield out
        if dobj.eof:  # frame complete; a body may hold several concatenated frames
            pending = dobj.unused_data
            dobj = zstandard.ZstdDecompressor().decompressobj()
            fed = False
    if fed:
        raise _not_valid("zstd", "truncated frame")


def _gunzip(body: bytes) -> Iterator[bytes]:
    data = body
    while data:  # one gzip member per iteration (a body may hold several)
        dobj = zlib.decompressobj(16 + zlib.MAX_WBITS)
        try:
            while True:
                out = dobj.decompress(data, _GZIP_STEP)
                data = dobj.unconsumed_tail
                yield out
                if dobj.eof or (not data and len(out) < _GZIP_STEP):
                    break
        except zlib.error as exc:
            raise _not_valid("gzip", str(exc)) from None
        if not dobj.eof:
            raise _not_valid("gzip", "truncated stream")
        data = dobj.unused_data


def validate_envelope(obj: Any, where: str) -> DecodedEvent:
    """Check one event against the envelope (docs/protocol.md, "Envelope"); 400 names a fault.

    Fields beyond the envelope are kept (a newer client may send more); ``ts`` must be
    RFC 3339 because it decides the partition.
    """
    if not isinstance(obj, dict):
        raise Rejected(400, "bad_envelope", f"{where}: not a JSON object")
    for name, types, expected in _FIELD_TYPES:
        if name not in obj:
            raise Rejected(400, "bad_envelope", f'{where}: missing field "{name}"')
        value = obj[name]
        if not isinstance(value, types) or isinstance(value, bool):
            raise Rejected(
                400,
                "bad_envelope",
                f'{where}: field "{name}" must be {expected}, got {_json_type(value)}',
            )
    if not _TYPE_RE.fullmatch(obj["type"]):
        raise Rejected(
            400,
            "bad_envelope",
            f'{where}: field "type" must be snake_case ([a-z][a-z0-9_]*, at most 64 characters)',
        )
    for name in _INDEXED_TEXT:
        if "\x00" in obj[name]:
            # Stored in text columns, which cannot hold NUL (PostgreSQL refuses it).
            raise Rejected(400, "bad_envelope", f'{where}: field "{name}" contains a NUL character')
    if not -_INT64 <= obj["seq"] < _INT64:
        raise Rejected(
            400, "bad_envelope", f'{where}: field "seq" must fit in a signed 64-bit integer'
        )
    if not obj["id"]:
        raise Rejected(400, "bad_envelope", f'{where}: field "id" must not be empty')
    instant = parse_rfc3339(obj["ts"])
    if instant is None:
        raise Rejected(
            400, "bad_envelope", f'{where}: field "ts" is not an RFC 3339 timestamp with offset'
        )
    data = obj["data"]
    input_tokens = output_tokens = 0
    if obj["type"] == "llm_call":
        input_tokens = _count(data.get("input_tokens"))
        output_tokens = _count(data.get("output_tokens"))
    return DecodedEvent(
        instant.day,
        obj["user_id"],
        orjson.dumps(obj) + b"\n",
        id=obj["id"],
        type=obj["type"],
        ts_us=instant.epoch_us,
        session_id=obj["session_id"],
        app=obj["app"],
        seq=obj["seq"],
        attachments=tuple(sorted(_attachment_refs(data))),
        input_tokens=input_tokens,
        output_tokens=output_tokens,
    )


def _count(value: Any) -> int:
    """A token count as sent, or 0 when it is missing or not an integer in [0, 2**40)."""
    valid = isinstance(value, int) and not isinstance(value, bool) and 0 <= value < _MAX_TOKENS
    return value if valid else 0


def _attachment_refs(value: Any, found: set[str] | None = None) -> set[str]:
    """The sha256s of every ``{"$attachment": {"sha256": ...}}`` inside ``value``."""
    found = set() if found is None else found
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            ref = item.get("$attachment")
            if isinstance(ref, dict):
                sha = ref.get("sha256")
                if isinstance(sha, str) and _SHA256_RE.fullmatch(sha):
                    found.add(sha.lower())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return found


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def _parse_json(raw: bytes | str, where: str) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise Rejected(400, "bad_json", f"{where}: not valid JSON ({exc})") from None


def _lines(chunks: Iterable[bytes], max_line: int) -> Iterator[tuple[int, bytes]]:
    """``(line number, line)`` from a chunk stream; 413 as soon as one line exceeds ``max_line``."""
    partial: list[bytes] = []
    partial_len = 0
    lineno = 0
    for chunk in chunks:
        start = 0
        while True:
            end = chunk.find(b"\n", start)
            if end < 0:
                if start < len(chunk):
                    partial.append(chunk[start:])
                    partial_len += len(chunk) - start
                    if partial_len > max_line:
                        raise _line_too_long(lineno + 1, max_line)
                break
            lineno += 1
            line = chunk[start:end]
            if partial:
                partial.append(line)
                line = b"".join(partial)
                partial, partial_len = [], 0
            if len(line) > max_line:
                raise _line_too_long(lineno, max_line)
            yield lineno, line
            start = end + 1
    if partial:
        yield lineno + 1, b"".join(partial)


def _line_too_long(lineno: int, max_line: int) -> Rejected:
    return Rejected(413, "event_too_large", f"line {lineno}: event exceeds {max_line} bytes")


def decode_events(
    body: bytes,
    *,
    encoding: str,
    kind: str,
    max_decompressed: int,
    max_event: int,
) -> list[DecodedEvent]:
    """Every event of a request body, validated; raises :class:`Rejected` for the first fault.

    ``kind`` is ``"ndjson"`` (one object per line, blank lines ignored) or ``"json"`` (one
    array of objects). A body without any event is refused (400): an empty batch is a
    client bug, and answering 2xx would hide it.
    """
    chunks = iter_decompressed(body, encoding, max_decompressed)
    events: list[DecodedEvent] = []
    if kind == "ndjson":
        for lineno, line in _lines(chunks, max_event):
            if not line.strip():
                continue
            where = f"line {lineno}"
            events.append(validate_envelope(_parse_json(line, where), where))
    else:
        text = b"".join(chunks)
        document = _parse_json(text, "body") if text.strip() else []
        if not isinstance(document, list):
            raise Rejected(400, "bad_json", "body: not a JSON array (application/json)")
        events = [validate_envelope(item, f"item {i}") for i, item in enumerate(document, 1)]
    if not events:
        raise Rejected(400, "empty_body", "body holds no events")
    return events
