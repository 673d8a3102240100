"""Request plumbing shared by the routes: admission (auth, role, rate limit), parameters.

:func:`admit` answers 401 for a missing or wrong token, 403 for a valid token without the
role the endpoint needs, and 429 over the token's rate limit, in that order, before a byte
of the body is read. Parameter parsers raise :class:`Rejected` 400 naming the parameter.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import orjson
from fastapi import Request
from fastapi.responses import Response

from telemetry_client.collector._auth import ADMIN, Principal
from telemetry_client.collector._errors import Rejected
from telemetry_client.collector._ratelimit import TokenBuckets
from telemetry_client.collector._state import CollectorState
from telemetry_client.collector._time import parse_rfc3339
from telemetry_client.collector.store.base import ReadScope

__all__ = [
    "admit",
    "bounded_int",
    "cursor_param",
    "json_response",
    "read_scope",
    "sha256_param",
    "timestamp_param",
]

_SHA256_RE = re.compile(r"[0-9a-fA-F]{64}")
_CURSOR_RE = re.compile(r"[A-Za-z0-9_=-]{1,512}")


def json_response(
    payload: Any, status: int = 200, headers: Mapping[str, str] | None = None
) -> Response:
    return Response(orjson.dumps(payload), status, headers, media_type="application/json")


def admit(state: CollectorState, request: Request, role: str | None) -> Principal:
    """Authenticate (401), check ``role`` (403; None: any valid token) and rate-limit (429)."""
    principal = state.auth.principal(request.headers.get("authorization"))
    if principal is None:
        raise Rejected(
            401,
            "unauthorized",
            "missing or invalid bearer token",
            headers={"WWW-Authenticate": 'Bearer realm="telemetry-collector"'},
        )
    if role is not None and not principal.may(role):
        raise Rejected(
            403, "forbidden", f"this token lacks the {role} role (it has {_roles(principal)})"
        )
    if state.buckets is not None:
        wait = state.buckets.acquire(principal.name)
        if wait > 0:
            raise Rejected(
                429,
                "rate_limited",
                "rate limit exceeded for this token; retry later",
                headers={"Retry-After": TokenBuckets.retry_after(wait)},
            )
    return principal


def _roles(principal: Principal) -> str:
    return ", ".join(sorted(principal.roles)) or "none"


def read_scope(principal: Principal) -> ReadScope:
    """What ``principal`` may read: everything for admin or a token without a team, else
    what tokens of its team ingested."""
    if ADMIN in principal.roles or principal.team is None:
        return ReadScope(None)
    return ReadScope(principal.team)


def bounded_int(params: Mapping[str, str], name: str, default: int, high: int | None) -> int:
    """Integer parameter ``name`` in [0, high] (no upper bound when ``high`` is None)."""
    raw = params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        value = -1
    if value < 0 or (high is not None and value > high):
        bound = f"between 0 and {high}" if high is not None else "0 or more"
        raise Rejected(400, "bad_query", f"{name} must be an integer {bound}")
    return value


def timestamp_param(params: Mapping[str, str], name: str) -> int | None:
    """RFC 3339 parameter ``name`` as epoch microseconds (None when absent or empty)."""
    raw = params.get(name)
    if not raw:
        return None
    instant = parse_rfc3339(raw)
    if instant is None:
        raise Rejected(400, "bad_query", f"{name} must be an RFC 3339 timestamp with offset")
    return instant.epoch_us


def cursor_param(params: Mapping[str, str]) -> str | None:
    """The opaque ``cursor`` parameter; its shape is checked here, its meaning by the store."""
    raw = params.get("cursor")
    if not raw:
        return None
    if not _CURSOR_RE.fullmatch(raw):
        raise Rejected(400, "bad_cursor", "cursor is not one this collector issued")
    return raw


def sha256_param(value: str | None, what: str) -> str:
    """A sha256 in hex (64 digits), lower-cased; 400 naming ``what`` otherwise."""
    if value is None:
        raise Rejected(400, "bad_header", f"{what} is missing")
    if not _SHA256_RE.fullmatch(value):
        raise Rejected(400, "bad_header", f"{what} must be 64 hex digits (sha256 of the raw bytes)")
    return value.lower()
