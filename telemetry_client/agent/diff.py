"""Describing a file change: unified diffs, binary detection, the ``file_operation`` event.

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
- **Large contents**: the diff is always computed; string fields larger than
  ``TELEMETRY_INLINE_MAX_BYTES`` become attachments on the writer thread, as for any event.

The work is paid on the caller's thread and follows the size of the change, not of the
file: the unchanged head and tail are found by block compares and never split into lines.
One case is worse than linear (difflib): a large changed region interleaved with unchanged
lines; describe such edits from a worker thread (``anyio.to_thread``). Figures:
docs/features.md ("File changes").
"""

from __future__ import annotations

import difflib
import hashlib
import os
import re
from collections.abc import Mapping
from typing import Any, Protocol

from telemetry_client.events import FileOperation

__all__ = ["CONTEXT_LINES", "Coercions", "PathArg", "describe_change", "is_binary", "unified_diff"]

#: Unchanged lines shown around each hunk (difflib's and git's default).
CONTEXT_LINES = 3

_HUNK_RE = re.compile(r"^@@ -(\d+)((?:,\d+)?) \+(\d+)((?:,\d+)?) @@")
_NO_EOL = "\n\\ No newline at end of file\n"

PathArg = str | os.PathLike[str]


class Coercions(Protocol):
    """Where a coerced value is counted and logged (``Tracking`` of the client)."""

    def coerce(self, kind: str, msg: str, *args: object) -> None: ...


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


def _side(value: object, encoding: str, on_coerce: Coercions | None) -> _Side:
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
    counters: Coercions | None = None,
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
