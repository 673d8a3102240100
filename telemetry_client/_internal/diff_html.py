"""Unified diff text -> line records with a kind, a CSS class and line numbers.

A pure function shared by the HTML views (the changes panel, the session viewer): it does no
escaping and builds no markup, so templates keep autoescaping and each view its own layout.
Hunk headers are read for their line counts, so a removed line whose text starts with
``--`` is still a removal, not a ``---`` file header. Counting covers every line even when
``max_lines`` cuts what is returned.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["DiffLine", "DiffRender", "render_diff"]

_HUNK = re.compile(r"^@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@")
#: kind -> CSS class suffix (the class is ``prefix + suffix``)
KINDS = {
    "add": "add",
    "del": "del",
    "ctx": "ctx",
    "hunk": "hunk",
    "meta": "meta",
    "note": "note",
}


@dataclass(frozen=True, slots=True)
class DiffLine:
    """One line of a diff: ``kind`` is add, del, ctx, hunk, meta (file headers, binary
    notices) or note (``\\ No newline at end of file``); ``old``/``new`` are line numbers."""

    kind: str
    css: str
    text: str
    old: int | None = None
    new: int | None = None


@dataclass(frozen=True, slots=True)
class DiffRender:
    """The records of a diff and its ``+added -removed`` counts; ``omitted`` lines were cut."""

    lines: tuple[DiffLine, ...]
    added: int
    removed: int
    omitted: int = 0


def render_diff(
    diff: str | None, *, max_lines: int | None = None, prefix: str = "diff-"
) -> DiffRender:
    """Split ``diff`` (unified format, as ``difflib``/git write it) into :class:`DiffLine`s.

    Never raises on odd input: a line that fits no hunk is ``meta``. ``max_lines`` bounds the
    records returned (the rest is counted in ``omitted``); ``prefix`` starts every CSS class.
    """
    out: list[DiffLine] = []
    added = removed = omitted = 0
    old_left = new_left = 0
    old_no = new_no = 0
    raw = (diff or "").split("\n")
    if raw and raw[-1] == "":
        raw.pop()
    for line in raw:
        text = line.rstrip("\r")
        kind = "meta"
        old: int | None = None
        new: int | None = None
        if old_left > 0 or new_left > 0:
            first = text[:1]
            if first == "-" and old_left > 0:
                kind, old = "del", old_no
                old_no += 1
                old_left -= 1
                removed += 1
            elif first == "+" and new_left > 0:
                kind, new = "add", new_no
                new_no += 1
                new_left -= 1
                added += 1
            elif first in (" ", "") and old_left > 0 and new_left > 0:
                kind, old, new = "ctx", old_no, new_no
                old_no += 1
                new_no += 1
                old_left -= 1
                new_left -= 1
            elif first == "\\":
                kind = "note"
            else:  # malformed hunk: stop trusting its counts
                old_left = new_left = 0
        elif text.startswith("\\"):
            kind = "note"  # after the last line of a hunk
        if kind == "meta" and (m := _HUNK.match(text)):
            kind = "hunk"
            old_no, new_no = int(m.group(1)), int(m.group(3))
            old_left = 1 if m.group(2) is None else int(m.group(2))
            new_left = 1 if m.group(4) is None else int(m.group(4))
            old_no = max(old_no, 1) if old_left else old_no
            new_no = max(new_no, 1) if new_left else new_no
        if max_lines is not None and len(out) >= max_lines:
            omitted += 1
            continue
        out.append(DiffLine(kind, prefix + KINDS[kind], text, old, new))
    return DiffRender(tuple(out), added, removed, omitted)
