"""The ingest side of the API: ``POST /api/v1/events``, the events probe, attachments in.

A batch is decoded and stored in one worker-thread job (``has_key`` first, so a retry of
a stored batch skips decoding), stamped with ``Ingest(token name, team)`` of the
principal that posted it. A client cannot set that stamp: a top-level ``"ingest"`` field
in an event is dropped before storing (counted in ``ingest_fields_stripped_total``,
logged at debug) rather than refused, so a client that re-sends exported events (which
carry the query API's ``"ingest"``) is not stuck on a 400 it can never fix.

Attachments are decompressed into memory with the bounded ``iter_decompressed``, their
sha256 verified, then stored whole with ``put_attachment``.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Sequence

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response

from telemetry_client.collector._auth import INGEST
from telemetry_client.collector._decode import (
    DecodedEvent,
    content_kind,
    decode_events,
    encoding_of,
    iter_decompressed,
    read_body,
)
from telemetry_client.collector._errors import Rejected
from telemetry_client.collector._http import admit, json_response, sha256_param
from telemetry_client.collector._state import CollectorState
from telemetry_client.collector.store.base import AppendResult, Ingest

__all__ = ["ATTACHMENTS_PATH", "EVENTS_PATH", "strip_ingest", "write_router"]

_log = logging.getLogger("telemetry_client.collector")

EVENTS_PATH = "/api/v1/events"
ATTACHMENTS_PATH = "/api/v1/attachments"
_KEY_RE = re.compile(r"[\x21-\x7e]{1,256}")
_CONTENT_TYPE_RE = re.compile(r"[\x20-\x7e]{1,255}")


def _idempotency_key(value: str | None) -> str | None:
    if value is None:
        return None
    if not _KEY_RE.fullmatch(value):
        raise Rejected(400, "bad_header", "Idempotency-Key must be 1-256 visible ASCII characters")
    return value


def strip_ingest(events: Sequence[DecodedEvent]) -> tuple[list[DecodedEvent], int]:
    """``events`` without any client-sent top-level ``"ingest"`` field; how many had one."""
    out: list[DecodedEvent] = []
    stripped = 0
    for event in events:
        kept = event
        if b'"ingest"' in event.line:  # cheap test first: almost no event has the word
            obj = orjson.loads(event.line)
            if "ingest" in obj:
                del obj["ingest"]
                kept = event._replace(line=orjson.dumps(obj) + b"\n")
                stripped += 1
        out.append(kept)
    return out, stripped


def write_router(state: CollectorState) -> APIRouter:
    config = state.config
    store = state.store
    metrics = state.metrics
    router = APIRouter()

    def ingest(
        body: bytes, encoding: str, kind: str, key: str | None, stamp: Ingest
    ) -> tuple[AppendResult, int]:
        if key is not None and state.timed("has_key", store.has_key, key):
            return AppendResult(0, duplicate=True), 0  # a retry: skip decoding entirely
        decoded = decode_events(
            body,
            encoding=encoding,
            kind=kind,
            max_decompressed=config.max_decompressed_bytes,
            max_event=config.max_event_bytes,
        )
        events, stripped = strip_ingest(decoded)
        if stripped:
            metrics.inc("ingest_fields_stripped_total", by=stripped)
            _log.debug('dropped a client-sent "ingest" field from %d event(s)', stripped)
        result = state.timed("append", store.append, events, key, stamp)
        return result, (0 if result.duplicate else sum(len(e.line) for e in events))

    def store_attachment(
        body: bytes, encoding: str, sha256: str, content_type: str
    ) -> tuple[bool, int]:
        data = b"".join(iter_decompressed(body, encoding, config.max_attachment_bytes))
        actual = hashlib.sha256(data).hexdigest()
        if actual != sha256:
            raise Rejected(
                400,
                "sha256_mismatch",
                f"X-Attachment-SHA256 does not match the body (its sha256 is {actual})",
            )
        stored = state.timed("put_attachment", store.put_attachment, sha256, content_type, data)
        return stored, len(data)

    @router.post(EVENTS_PATH)
    async def post_events(request: Request) -> Response:
        """Store one batch (NDJSON or JSON array; zstd, gzip or identity), once per key."""
        principal = admit(state, request, INGEST)
        headers = request.headers
        key = _idempotency_key(headers.get("idempotency-key"))
        encoding = encoding_of(headers.get("content-encoding"))
        kind = content_kind(headers.get("content-type"))
        body = await read_body(
            request.stream(), headers.get("content-length"), config.max_body_bytes
        )
        stamp = Ingest(principal.name, principal.team)
        result, size = await state.run_sync(ingest, body, encoding, kind, key, stamp)
        if result.duplicate:
            metrics.inc("duplicates_total", "events")
        else:
            metrics.inc("events_stored_total", by=result.accepted)
            metrics.inc("stored_bytes_total", "events", by=size)
        return json_response({"accepted": result.accepted, "duplicate": result.duplicate})

    @router.options(EVENTS_PATH)
    async def probe_events(request: Request) -> Response:
        """A probe of the events endpoint (``telemetry-client status``): 204 and ``Allow``.

        Checks the token like every endpoint but health (401; any valid token, whatever its
        roles), so the probe tells a wrong token from a wrong path (404); it reads no body
        and stores nothing.
        """
        admit(state, request, None)
        return Response(status_code=204, headers={"Allow": "GET, OPTIONS, POST"})

    @router.post(ATTACHMENTS_PATH)
    async def post_attachment(request: Request) -> Response:
        """Store one blob under the sha256 of its raw bytes (verified), once."""
        admit(state, request, INGEST)
        headers = request.headers
        sha256 = sha256_param(headers.get("x-attachment-sha256"), "X-Attachment-SHA256")
        content_type = headers.get("content-type") or "application/octet-stream"
        if not _CONTENT_TYPE_RE.fullmatch(content_type):
            raise Rejected(
                400, "bad_header", "Content-Type must be 1-255 printable ASCII characters"
            )
        encoding = encoding_of(headers.get("content-encoding"))
        body = await read_body(
            request.stream(), headers.get("content-length"), config.max_attachment_body_bytes
        )
        stored, size = await state.run_sync(store_attachment, body, encoding, sha256, content_type)
        if stored:
            metrics.inc("attachments_stored_total")
            metrics.inc("stored_bytes_total", "attachments", by=size)
        else:
            metrics.inc("duplicates_total", "attachments")
        return json_response({"sha256": sha256, "size": size, "duplicate": not stored})

    @router.head(ATTACHMENTS_PATH + "/{sha256}")
    async def head_attachment(request: Request, sha256: str) -> Response:
        """200 with the size and type when the blob is stored, else 404; no body.

        Needs ``ingest`` (the uploader asks before posting); it tells only whether a hash
        is stored, never its content.
        """
        admit(state, request, INGEST)
        sha = sha256_param(sha256, "the sha256 in the path")
        meta = await state.store_call("attachment_meta", store.attachment_meta, sha)
        if meta is None:
            return Response(status_code=404)
        return Response(
            status_code=200,
            headers={"Content-Length": str(meta.size), "Content-Type": meta.content_type},
        )

    return router
