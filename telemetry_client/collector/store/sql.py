"""Helpers both SQL backends share: cursors, row → contract dict, per-batch session sums.

Kept free of any driver so the SQLite and PostgreSQL stores answer byte-for-byte alike:
cursors are opaque (urlsafe base64 of a small JSON list, anything else is
:class:`BadCursor`), timestamps are RFC 3339 UTC with microseconds and ``Z`` (the client's
``ts`` format), and a batch's session aggregates are summed here once so each backend only
upserts them. :func:`recount_sessions` recomputes the aggregates from stored events; the
stores' ``check()`` compares the two (the invariant the ingest upserts must keep).
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import orjson

from telemetry_client.collector._decode import DecodedEvent, validate_envelope
from telemetry_client.collector._errors import Rejected
from telemetry_client.collector.store.base import BadCursor, EventQuery, ReadScope

__all__ = [
    "SessionSums",
    "compare_sessions",
    "decode_cursor",
    "encode_cursor",
    "event_dict",
    "event_filters",
    "llm_tokens",
    "recount_sessions",
    "redact_url",
    "session_dict",
    "session_sums",
    "team_key",
    "ts_text",
]

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
_MAX_CURSOR = 512  # characters: ours are a few dozen


# -- filters ----------------------------------------------------------------------------


def event_filters(query: EventQuery, scope: ReadScope, mark: str) -> tuple[list[str], list[Any]]:
    """The WHERE terms and parameters of an events query (both backends; ``mark`` is the
    driver's placeholder: ``?`` for sqlite3, ``%s`` for psycopg). ``until`` is exclusive."""
    where: list[str] = []
    params: list[Any] = []
    if scope.team is not None:
        where.append(f"ingest_team = {mark}")
        params.append(team_key(scope.team))
    for column, value in (
        ("user_id", query.user_id),
        ("session_id", query.session_id),
        ("type", query.type),
    ):
        if value is not None:
            where.append(f"{column} = {mark}")
            params.append(value)
    if query.since_us is not None:
        where.append(f"ts_us >= {mark}")
        params.append(query.since_us)
    if query.until_us is not None:
        where.append(f"ts_us < {mark}")
        params.append(query.until_us)
    return where, params


# -- cursors ----------------------------------------------------------------------------


def encode_cursor(position: Sequence[int | str]) -> str:
    """An opaque cursor for ``position`` (the last row's sort key)."""
    return base64.urlsafe_b64encode(orjson.dumps(list(position))).decode().rstrip("=")


def decode_cursor(cursor: str, shape: Sequence[type]) -> list[Any]:
    """The position in ``cursor``, whose items must have the types of ``shape``; else
    :class:`BadCursor` (a cursor another endpoint or backend issued, or garbage)."""
    if len(cursor) > _MAX_CURSOR:
        raise BadCursor("cursor is too long")
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        value = orjson.loads(raw)
    except (binascii.Error, ValueError):
        raise BadCursor("cursor is not one this collector issued") from None
    if (
        not isinstance(value, list)
        or len(value) != len(shape)
        or any(type(v) is not t for v, t in zip(value, shape, strict=True))  # bool is not int
    ):
        raise BadCursor("cursor is not one this collector issued")
    return value


# -- rows → contract dicts --------------------------------------------------------------


def team_key(team: str | None) -> str:
    """The ``team`` column value of an ingest or scope team (``''`` for none: a key column)."""
    return team or ""


def ts_text(epoch_us: int) -> str:
    """``2026-11-21T10:00:00.123456Z`` for epoch microseconds (UTC)."""
    t = _EPOCH + dt.timedelta(microseconds=epoch_us)
    return (
        f"{t.year:04d}-{t.month:02d}-{t.day:02d}T{t.hour:02d}:{t.minute:02d}:{t.second:02d}"
        f".{t.microsecond:06d}Z"
    )


def event_dict(body: bytes | str, token: str, team: str | None) -> dict[str, Any]:
    """A stored event as the query API shows it: the envelope plus ``"ingest"``."""
    event: dict[str, Any] = orjson.loads(body)
    event["ingest"] = {"token": token, "team": team or None}
    return event


_SESSION_KEYS = (
    "session_id",
    "user_id",
    "app",
    "first_ts",
    "last_ts",
    "events",
    "errors",
    "llm_calls",
    "input_tokens",
    "output_tokens",
)


def session_dict(row: Sequence[Any]) -> dict[str, Any]:
    """A sessions row ``(session_id, user_id, app, first_us, last_us, events, errors,
    llm_calls, input_tokens, output_tokens)`` as the contract's dict."""
    values = list(row)
    values[3] = ts_text(int(values[3]))
    values[4] = ts_text(int(values[4]))
    for i in range(5, 10):
        values[i] = int(values[i])
    return dict(zip(_SESSION_KEYS, values, strict=True))


# -- session aggregates -----------------------------------------------------------------


@dataclass(slots=True)
class SessionSums:
    """One session's aggregates over some events (a batch's, or a recount)."""

    session_id: str
    team: str
    user_id: str
    app: str
    first_us: int
    last_us: int
    events: int = 0
    errors: int = 0
    llm_calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0

    def add(self, type_: str, ts_us: int, input_tokens: int, output_tokens: int) -> None:
        self.events += 1
        self.errors += type_ == "error"
        self.llm_calls += type_ == "llm_call"
        self.input_tokens += input_tokens
        self.output_tokens += output_tokens
        self.first_us = min(self.first_us, ts_us)
        self.last_us = max(self.last_us, ts_us)

    def row(self) -> tuple[str, str, str, str, int, int, int, int, int, int, int]:
        """``(session_id, team, user_id, app, first_us, last_us, events, errors, llm_calls,
        input_tokens, output_tokens)``: the sessions upsert's parameters."""
        return (
            self.session_id,
            self.team,
            self.user_id,
            self.app,
            self.first_us,
            self.last_us,
            self.events,
            self.errors,
            self.llm_calls,
            self.input_tokens,
            self.output_tokens,
        )


def session_sums(events: Iterable[DecodedEvent], team: str | None) -> list[SessionSums]:
    """A batch's per-session sums, sorted by ``(session_id, team)`` (the upsert order that
    keeps two batches from deadlocking); user and app are the session's first event's."""
    key = team_key(team)
    sums: dict[str, SessionSums] = {}
    for e in events:  # SessionSums.add inlined: this runs once per ingested event
        ts = e.ts_us
        s = sums.get(e.session_id)
        if s is None:
            s = sums[e.session_id] = SessionSums(e.session_id, key, e.user_id, e.app, ts, ts)
        elif ts < s.first_us:
            s.first_us = ts
        elif ts > s.last_us:
            s.last_us = ts
        s.events += 1
        if e.type == "error":
            s.errors += 1
        elif e.type == "llm_call":
            s.llm_calls += 1
        s.input_tokens += e.input_tokens
        s.output_tokens += e.output_tokens
    return [sums[k] for k in sorted(sums)]


def llm_tokens(type_: str, body: bytes | str) -> tuple[int, int]:
    """``(input_tokens, output_tokens)`` of a stored event, by the decoder's own rule."""
    if type_ != "llm_call":
        return 0, 0
    try:
        decoded = validate_envelope(orjson.loads(body), "stored event")
    except (Rejected, orjson.JSONDecodeError):
        return 0, 0
    return decoded.input_tokens, decoded.output_tokens


def recount_sessions(
    rows: Iterable[tuple[str, str, str, int, bytes | str | None]],
) -> dict[tuple[str, str], SessionSums]:
    """Session aggregates recomputed from stored events ``(session_id, team, type, ts_us,
    body)``; ``body`` may be None for types other than ``llm_call`` (it is not needed)."""
    out: dict[tuple[str, str], SessionSums] = {}
    for session_id, team, type_, ts_us, body in rows:
        s = out.get((session_id, team))
        if s is None:
            s = out[(session_id, team)] = SessionSums(session_id, team, "", "", ts_us, ts_us)
        tokens = llm_tokens(type_, body) if body is not None else (0, 0)
        s.add(type_, ts_us, *tokens)
    return out


_SUM_FIELDS = (
    "first_us",
    "last_us",
    "events",
    "errors",
    "llm_calls",
    "input_tokens",
    "output_tokens",
)


def compare_sessions(
    stored: Iterable[Sequence[Any]], recounted: dict[tuple[str, str], SessionSums]
) -> list[str]:
    """Problems where stored sessions rows ``(session_id, team, first_us, last_us, events,
    errors, llm_calls, input_tokens, output_tokens)`` differ from a recount."""
    problems: list[str] = []
    fields = _SUM_FIELDS
    seen: set[tuple[str, str]] = set()
    for row in stored:
        key = (str(row[0]), str(row[1]))
        seen.add(key)
        want = recounted.get(key)
        if want is None:
            problems.append(f"session {key!r}: stored but no event has it")
            continue
        for name, value in zip(fields, row[2:], strict=True):
            if int(value) != getattr(want, name):
                problems.append(
                    f"session {key!r}: {name} {value} != {getattr(want, name)} (recount)"
                )
    problems.extend(f"session {k!r}: events have it, no row" for k in set(recounted) - seen)
    return problems


# -- URLs -------------------------------------------------------------------------------


def redact_url(url: str) -> str:
    """``url`` with its password (userinfo or ``password=`` query option) shown as ``***``;
    everything else is left as written."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparsable URL>"
    userinfo, at, _ = parts.netloc.rpartition("@")
    if at and ":" in userinfo:
        user = userinfo.partition(":")[0]
        url = url.replace(f"//{userinfo}@", f"//{user}:***@", 1)
    if "password" in parts.query.lower():
        pairs = parse_qsl(parts.query, keep_blank_values=True)
        redacted = [(k, "***" if k.lower() == "password" else v) for k, v in pairs]
        url = url.replace(f"?{parts.query}", f"?{urlencode(redacted, safe='*')}", 1)
    return url
