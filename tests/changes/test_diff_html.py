"""``render_diff``: unified diff text -> line records, CSS classes, counts."""

from __future__ import annotations

from telemetry_client._internal.diff_html import render_diff
from telemetry_client.agent.diff import unified_diff


def test_kinds_numbers_and_counts_of_a_real_diff() -> None:
    """Headers are meta, the hunk header sets numbers, a removed line starting with ``--``
    is a removal, and the no-newline note is a note."""
    before = "keep\n-- old dashes\nsame\nend"
    after = "keep\n++ new\nsame\nend!"
    diff, added, removed = unified_diff("f.txt", before, after)
    r = render_diff(diff)
    assert (r.added, r.removed) == (added, removed) == (2, 2)
    kinds = [line.kind for line in r.lines]
    assert kinds[:3] == ["meta", "meta", "hunk"]
    assert "note" in kinds
    dash = next(line for line in r.lines if line.text == "--- old dashes")
    assert (dash.kind, dash.css, dash.old, dash.new) == ("del", "diff-del", 2, None)
    plus = next(line for line in r.lines if line.text == "+++ new")
    assert (plus.kind, plus.new) == ("add", 2)
    ctx = next(line for line in r.lines if line.text == " same")
    assert (ctx.old, ctx.new, ctx.css) == (3, 3, "diff-ctx")


def test_max_lines_cuts_records_but_not_counts_and_odd_input_is_meta() -> None:
    diff, _, _ = unified_diff("f", "", "".join(f"{i}\n" for i in range(50)))
    r = render_diff(diff, max_lines=10, prefix="x-")
    assert len(r.lines) == 10
    assert r.omitted == 43
    assert r.added == 50
    assert r.lines[3].css == "x-add"
    odd = render_diff("Binary files a/x and b/x differ\n@@ garbage\n+not in a hunk\n")
    assert [line.kind for line in odd.lines] == ["meta", "meta", "meta"]
    assert (odd.added, odd.removed) == (0, 0)
    assert render_diff(None).lines == ()
