"""File-change tracking: unified diffs, binary detection, tracked writes, change decisions.

What the client methods do (``client.file_operation``, ``write_file``, ``track_file``,
``change_decision`` are thin wrappers over this module):

- **Text** (``str``, or ``bytes`` that decode with the given encoding, UTF-8 by default,
  and hold no NUL): the event carries ``before``, ``after``, a unified ``diff`` (difflib,
  ``a/<path>``/``b/<path>`` headers, 3 context lines, ``\\ No newline at end of file``
  markers like git) and ``loc_added``/``loc_removed``. An absolute path loses its leading
  ``/`` in the headers only; the event's ``path`` is the path as given. ``before=None``
  diffs against nothing (a new file), ``after=None`` against nothing (a deletion).
- **Binary** (bytes that are not text in that encoding, or text holding NUL, on either
  side): no contents and no line diff, but ``binary: true``, ``before_size``/``after_size``
  (bytes) and ``before_sha256``/``after_sha256``; ``diff`` is git's one-line
  ``Binary files a/<path> and b/<path> differ`` (empty when both sides are equal).
- **Large contents**: the diff is always computed; every string field larger than
  ``TELEMETRY_INLINE_MAX_BYTES`` (``before``, ``after``, a large ``diff``) becomes an
  attachment on the writer thread, as for any event, so the event itself stays small.

Cost, paid on the caller's thread (the contents are the caller's data; the writer thread
only serialises what it is given; measured on a 2-core VM, CPython 3.11): the unchanged
head and tail of the file are found by block compares at memcmp speed and never split
into lines, so difflib only sees the lines from the first to the last change, plus
context. A small edit costs about 40 µs; a one-hunk edit of a 10,000-line file about
0.2 ms; otherwise about 1.5 µs per line between the first and last change (edits near
both ends of a 10,000-line file, or creating it: about 15 ms). difflib's
``SequenceMatcher`` is worse than linear when a large changed region interleaves with
unchanged lines (every other line of a 2,000-line file changed: about 0.3 s); call
``file_operation`` from a worker thread (``anyio.to_thread``) if your edits look like
that. Binary summaries cost one sha256 per side (about 1 GB/s). ``write_file`` and
``track_file`` also read the file's old content whole (``track_file`` the new one too).

Never raises for telemetry reasons: a value that is neither text nor bytes is turned into
text (``str()``), a decision outside accept/reject/revert is coerced; both are counted
(``client.tracking_stats()["coerced"]``) and logged at most once per cooldown. A failure
building an event is counted (``tracking_errors``) and logged; the event is skipped. The
caller's own operations (the write of ``write_file``, the body of ``track_file``) raise
exactly as they would without telemetry.
"""

from __future__ import annotations

import difflib
import hashlib
import os
import re
import threading
import uuid
import weakref
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from telemetry_client._internal.log import RateLimitedLogger
from telemetry_client.events import ChangeDecision, FileOperation

if TYPE_CHECKING:
    from telemetry_client.client import TelemetryClient

__all__ = [
    "CONTEXT_LINES",
    "DECISIONS",
    "TrackedFile",
    "Tracking",
    "change_decision",
    "describe_change",
    "file_operation",
    "is_binary",
    "normalize_decision",
    "tracking",
    "unified_diff",
    "write_file",
]

#: The decisions ``change_decision`` accepts; anything else is coerced (and counted).
DECISIONS = ("accept", "reject", "revert")
#: Unchanged lines shown around each hunk (difflib's and git's default).
CONTEXT_LINES = 3

_DECISION_ALIASES = {"accepted": "accept", "rejected": "reject", "reverted": "revert"}
_INVALID_DECISION = "invalid"
_RAW_MAX = 200  # characters of a coerced decision kept in ``raw_decision``
_HUNK_RE = re.compile(r"^@@ -(\d+)((?:,\d+)?) \+(\d+)((?:,\d+)?) @@")
_NO_EOL = "\n\\ No newline at end of file\n"

PathArg = str | os.PathLike[str]


# -- counters ---------------------------------------------------------------------------------


class Tracking:
    """Per-client counters of the run recorder and file tracking (thread-safe)."""

    def __init__(self, log: RateLimitedLogger) -> None:
        self._lock = threading.Lock()
        self._log = log
        self.coerced: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()

    def coerce(self, kind: str, msg: str, *args: object) -> None:
        """Count a coercion of ``kind`` and log ``msg`` (at most once per cooldown)."""
        with self._lock:
            self.coerced[kind] += 1
        self._log.warning(f"tracking-coerce-{kind}", msg, *args)

    def failed(self, where: str, exc: BaseException) -> None:
        """Count a telemetry failure in ``where``; the event concerned is skipped."""
        with self._lock:
            self.errors[where] += 1
        self._log.warning(
            f"tracking-error-{where}",
            "telemetry: %s failed (%s: %s); event skipped",
            where,
            type(exc).__name__,
            exc,
        )

    def snapshot(self) -> dict[str, Any]:
        """``{"coerced": {kind: n}, "tracking_errors": n, "tracking_errors_by_call": {...}}``."""
        with self._lock:
            return {
                "coerced": dict(self.coerced),
                "tracking_errors": sum(self.errors.values()),
                "tracking_errors_by_call": dict(self.errors),
            }


_trackers: weakref.WeakKeyDictionary[TelemetryClient, Tracking] = weakref.WeakKeyDictionary()
_trackers_lock = threading.Lock()


def tracking(client: TelemetryClient) -> Tracking:
    """The :class:`Tracking` counters of ``client`` (created on first use)."""
    found = _trackers.get(client)
    if found is not None:
        return found
    with _trackers_lock:
        found = _trackers.get(client)
        if found is None:
            log = client._log if client.enabled else RateLimitedLogger()
            found = _trackers[client] = Tracking(log)
        return found


def new_op_id() -> str:
    """A fresh operation id (UUID4 string)."""
    return str(uuid.uuid4())


# -- diffing ----------------------------------------------------------------------------------


def _lines(text: str) -> list[str]:
    """Split on ``\\n`` only, keeping it (``str.splitlines`` also splits on ``\\r``, FF, ...)."""
    parts = text.split("\n")
    last = parts.pop()
    lines = [p + "\n" for p in parts]
    if last:
        lines.append(last)
    return lines


def _shift_hunk(header: str, offset: int) -> str:
    """Add ``offset`` to both start lines of a hunk header made on trimmed line lists."""
    m = _HUNK_RE.match(header)
    if m is None:  # pragma: no cover - difflib always writes this form
        return header
    a, a_len, b, b_len = m.groups()
    return f"@@ -{int(a) + offset}{a_len} +{int(b) + offset}{b_len} @@{header[m.end() :]}"


def _common_prefix(a: str, b: str, limit: int) -> int:
    """Length of the common prefix of ``a`` and ``b`` (at most ``limit``), by block compares."""
    i = 0
    step = 4096
    while i < limit:
        j = min(limit, i + step)
        if a[i:j] != b[i:j]:
            lo, hi = i, j  # a[:lo] == b[:lo]; a[lo:hi] != b[lo:hi]
            while hi - lo > 1:
                mid = (lo + hi) // 2
                if a[lo:mid] == b[lo:mid]:
                    lo = mid
                else:
                    hi = mid
            return lo
        i = j
    return limit


def _common_suffix(a: str, b: str, limit: int) -> int:
    """Length of the common suffix of ``a`` and ``b`` (at most ``limit``)."""
    la, lb = len(a), len(b)
    i = 0
    step = 4096
    while i < limit:
        j = min(limit, i + step)
        if a[la - j : la - i] != b[lb - j : lb - i]:
            lo, hi = i, j  # last lo chars equal; the last hi chars are not
            while hi - lo > 1:
                mid = (lo + hi) // 2
                if a[la - mid : la - lo] == b[lb - mid : lb - lo]:
                    lo = mid
                else:
                    hi = mid
            return lo
        i = j
    return limit


def _trim(a: str, b: str, context: int) -> tuple[int, int, int]:
    """``(start, a_end, b_end)``: the changed middle, widened to whole lines plus context.

    ``a[:start] == b[:start]`` and ``a[a_end:] == b[b_end:]`` are whole unchanged lines
    (memcmp-speed block compares, no per-line Python work), so difflib only sees the
    middle; ``start`` is a line start, ``a_end``/``b_end`` line starts or the ends.
    """
    shortest = min(len(a), len(b))
    k = _common_prefix(a, b, shortest)
    start = a.rfind("\n", 0, k) + 1  # start of the line holding the first difference
    for _ in range(context):
        if start == 0:
            break
        start = a.rfind("\n", 0, start - 1) + 1
    s = _common_suffix(a, b, shortest - k)
    nl = a.find("\n", len(a) - s)  # a newline inside the common suffix ends a changed line
    a_end = len(a) if nl < 0 else nl + 1
    for _ in range(context):
        if a_end == len(a):
            break
        nl = a.find("\n", a_end)
        a_end = len(a) if nl < 0 else nl + 1
    return start, a_end, a_end - len(a) + len(b)


def unified_diff(
    path: str, before: str | None, after: str | None, *, context: int = CONTEXT_LINES
) -> tuple[str, int, int]:
    """``(diff, loc_added, loc_removed)`` of two texts (``None`` = the file does not exist).

    The diff is empty when the texts are equal. Unchanged leading/trailing lines beyond
    the context are cut off before difflib runs (the hunk headers are shifted back), so
    the cost follows the size of the change, not of the file.
    """
    a_text, b_text = before or "", after or ""
    if a_text == b_text:
        return "", 0, 0
    start, a_end, b_end = _trim(a_text, b_text, context)
    offset = a_text.count("\n", 0, start)
    name = path.lstrip("/")
    out: list[str] = []
    added = removed = 0
    hunks = difflib.unified_diff(
        _lines(a_text[start:a_end]),
        _lines(b_text[start:b_end]),
        f"a/{name}",
        f"b/{name}",
        n=context,
    )
    for i, raw in enumerate(hunks):
        line = raw
        if i >= 2:  # after the ---/+++ headers
            first = line[:1]
            if first == "+":
                added += 1
            elif first == "-":
                removed += 1
            elif first == "@" and offset:
                line = _shift_hunk(line, offset)
        out.append(line if line.endswith("\n") else line + _NO_EOL)
    return "".join(out), added, removed


def is_binary(data: bytes | bytearray | memoryview | str, encoding: str = "utf-8") -> bool:
    """True for content that is not text: bytes that do not decode, or anything with NUL."""
    if isinstance(data, str):
        return "\x00" in data
    try:
        text = bytes(data).decode(encoding)
    except (UnicodeDecodeError, LookupError):
        return True
    return "\x00" in text


class _Side:
    """One side of a change: its text, or its raw bytes when binary."""

    __slots__ = ("binary", "raw", "text")

    def __init__(self, text: str | None, raw: bytes | None, binary: bool) -> None:
        self.text = text
        self.raw = raw
        self.binary = binary

    def summary(self) -> tuple[int | None, str | None]:
        """``(size, sha256)`` of the side's bytes (UTF-8 for text), ``(None, None)`` if absent."""
        if self.raw is None and self.text is None:
            return None, None
        raw = self.raw
        if raw is None:
            assert self.text is not None
            raw = self.text.encode("utf-8", "surrogatepass")
        return len(raw), hashlib.sha256(raw).hexdigest()


def _side(value: object, encoding: str, on_coerce: Tracking | None) -> _Side:
    if value is None:
        return _Side(None, None, False)
    if isinstance(value, str):
        return _Side(value, None, "\x00" in value)
    if isinstance(value, bytes | bytearray | memoryview):
        raw = bytes(value)
        try:
            text = raw.decode(encoding)
        except (UnicodeDecodeError, LookupError):
            return _Side(None, raw, True)
        if "\x00" in text:
            return _Side(None, raw, True)
        return _Side(text, raw, False)
    if on_coerce is not None:
        on_coerce.coerce(
            "file_content",
            "telemetry: file content of type %s is neither str nor bytes; recorded as str()",
            type(value).__name__,
        )
    return _Side(str(value), None, False)


def describe_change(
    path: PathArg,
    before: object,
    after: object,
    *,
    op: str = "edit",
    op_id: str | None = None,
    encoding: str = "utf-8",
    extra: Mapping[str, Any] | None = None,
    counters: Tracking | None = None,
) -> FileOperation:
    """The ``file_operation`` event of a change from ``before`` to ``after`` (see module doc)."""
    path_s = os.fspath(path) if isinstance(path, os.PathLike) else str(path)
    old = _side(before, encoding, counters)
    new = _side(after, encoding, counters)
    event = FileOperation(
        path=path_s, op=str(op), op_id=op_id, attributes=dict(extra) if extra else None
    )
    if old.binary or new.binary:
        event.binary = True
        event.before_size, event.before_sha256 = old.summary()
        event.after_size, event.after_sha256 = new.summary()
        name = path_s.lstrip("/")
        same = event.before_sha256 == event.after_sha256
        event.diff = "" if same else f"Binary files a/{name} and b/{name} differ\n"
        return event
    event.before, event.after = old.text, new.text
    event.diff, event.loc_added, event.loc_removed = unified_diff(path_s, old.text, new.text)
    return event


# -- client-facing operations -------------------------------------------------------------------


def file_operation(
    client: TelemetryClient,
    path: PathArg,
    *,
    before: object = None,
    after: object = None,
    op: str = "edit",
    op_id: str | None = None,
    extra: Mapping[str, Any] | None = None,
) -> str:
    """Emit a ``file_operation`` for a change the caller made; returns the operation id."""
    op_id = op_id or new_op_id()
    if not client.enabled:
        return op_id
    counters = tracking(client)
    try:
        event = describe_change(
            path, before, after, op=op, op_id=op_id, extra=extra, counters=counters
        )
    except Exception as exc:  # never break the caller for telemetry
        counters.failed("file_operation", exc)
        return op_id
    client.emit(event)
    return op_id


def _read_quietly(path: PathArg) -> tuple[bytes | None, OSError | None]:
    """The file's bytes; ``(None, None)`` if it does not exist, ``(None, exc)`` if unreadable."""
    try:
        return Path(path).read_bytes(), None
    except (FileNotFoundError, NotADirectoryError):
        return None, None
    except OSError as exc:
        return None, exc


def _emit_change(
    client: TelemetryClient,
    where: str,
    path: PathArg,
    before: bytes | None,
    before_error: OSError | None,
    after: object,
    *,
    op: str,
    op_id: str,
    encoding: str,
    extra: Mapping[str, Any] | None,
) -> bool:
    """Build and emit one tracked change; False (counted, logged) when building failed."""
    counters = tracking(client)
    try:
        event = describe_change(
            path,
            before,
            after,
            op=op,
            op_id=op_id,
            encoding=encoding,
            extra=extra,
            counters=counters,
        )
        if before_error is not None:  # old content unknown: no diff against "nothing"
            event.diff = event.loc_added = event.loc_removed = None
            event.attributes = {
                **(event.attributes or {}),
                "before_error": f"{type(before_error).__name__}: {before_error.strerror}",
            }
    except Exception as exc:  # never break the caller for telemetry
        counters.failed(where, exc)
        return False
    client.emit(event)
    return True


def write_file(
    client: TelemetryClient,
    path: PathArg,
    content: str | bytes | bytearray | memoryview,
    *,
    encoding: str = "utf-8",
    op: str | None = None,
    op_id: str | None = None,
    extra: Mapping[str, Any] | None = None,
) -> str:
    """Write ``content`` to ``path`` (its errors propagate), then emit the change; returns op id.

    ``op`` defaults to ``"edit"`` when the file existed, ``"write"`` when it is new. Text is
    encoded with ``encoding`` and written as is (no newline translation).
    """
    op_id = op_id or new_op_id()
    raw = content.encode(encoding) if isinstance(content, str) else bytes(content)
    if not client.enabled:
        Path(path).write_bytes(raw)
        return op_id
    before, before_error = _read_quietly(path)
    Path(path).write_bytes(raw)  # the caller's real operation: an OSError propagates
    existed = before is not None or before_error is not None
    _emit_change(
        client,
        "write_file",
        path,
        before,
        before_error,
        content,
        op=op or ("edit" if existed else "write"),
        op_id=op_id,
        encoding=encoding,
        extra=extra,
    )
    return op_id


class TrackedFile:
    """``with client.track_file(path) as t:`` snapshots the file, emits its change after.

    The snapshot is taken on entry and the file is read again on exit, even when the block
    raises (the file may be half-changed; the event then carries ``error`` with the
    exception's type name, and the exception propagates unchanged). ``op`` defaults to
    ``"write"`` (the file appeared), ``"edit"`` (it existed and still does) or ``"delete"``
    (it is gone); nothing is emitted when it existed neither before nor after.
    ``t.op_id`` is known inside the block; ``t.before``/``t.after`` hold the raw bytes
    (``None``: no such file) and ``t.emitted`` says whether an event was emitted.
    """

    def __init__(
        self,
        client: TelemetryClient,
        path: PathArg,
        *,
        op: str | None = None,
        op_id: str | None = None,
        encoding: str = "utf-8",
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        self.client = client
        self.path = path
        self.op = op
        self.op_id = op_id or new_op_id()
        self.encoding = encoding
        self.extra = dict(extra) if extra else None
        self.before: bytes | None = None
        self.after: bytes | None = None
        self.emitted = False
        self._before_error: OSError | None = None

    def __enter__(self) -> TrackedFile:
        if self.client.enabled:
            self.before, self._before_error = _read_quietly(self.path)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if not self.client.enabled:
            return
        try:
            self.after, after_error = _read_quietly(self.path)
            existed = self.before is not None or self._before_error is not None
            exists = self.after is not None or after_error is not None
            if after_error is not None:
                raise after_error
            if not existed and not exists:
                return
            op = self.op or ("delete" if not exists else "edit" if existed else "write")
            extra = self.extra
            if exc_type is not None:
                extra = {**(extra or {}), "error": exc_type.__qualname__}
        except Exception as err:  # never break the caller for telemetry
            tracking(self.client).failed("track_file", err)
            return
        self.emitted = _emit_change(
            self.client,
            "track_file",
            self.path,
            self.before,
            self._before_error,
            self.after,
            op=op,
            op_id=self.op_id,
            encoding=self.encoding,
            extra=extra,
        )


# -- decisions ----------------------------------------------------------------------------------


def normalize_decision(value: object) -> tuple[str, bool]:
    """``(decision, coerced)``: one of :data:`DECISIONS`, or ``"invalid"``.

    Exact values pass unchanged. Otherwise case and surrounding space are ignored and the
    past tense (``"Accepted"``) maps to its decision; anything else becomes ``"invalid"``.
    Both of these are coercions (``coerced`` is True).
    """
    if type(value) is str and value in DECISIONS:
        return value, False
    text = value.strip().lower() if isinstance(value, str) else ""
    text = _DECISION_ALIASES.get(text, text)
    return (text if text in DECISIONS else _INVALID_DECISION), True


def change_decision(
    client: TelemetryClient,
    op_id: str,
    decision: object,
    *,
    reason: str | None = None,
    extra: Mapping[str, Any] | None = None,
) -> None:
    """Emit a ``change_decision`` closing the loop on the operation ``op_id``."""
    if not client.enabled:
        return
    counters = tracking(client)
    try:
        value, coerced = normalize_decision(decision)
        event = ChangeDecision(
            op_id=str(op_id),
            decision=value,
            reason=reason,
            attributes=dict(extra) if extra else None,
        )
        if coerced:
            raw = decision if isinstance(decision, str) else repr(decision)
            event.raw_decision = raw[:_RAW_MAX]
            counters.coerce(
                "change_decision",
                "telemetry: change decision %r is not one of accept/reject/revert; recorded as %r",
                event.raw_decision,
                value,
            )
    except Exception as exc:  # never break the caller for telemetry
        counters.failed("change_decision", exc)
        return
    client.emit(event)
