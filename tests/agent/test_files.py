"""File-change tracking: diffs and line counts, binary summaries, tracked writes, decisions."""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import zstandard
from hypothesis import given
from hypothesis import strategies as st

from telemetry_client import TelemetryClient, TelemetrySettings
from telemetry_client.agent import files
from telemetry_client.agent.decisions import normalize_decision
from telemetry_client.agent.diff import describe_change, is_binary, unified_diff

SettingsFactory = Callable[..., TelemetrySettings]


@pytest.fixture
def client(settings_factory: SettingsFactory) -> Iterator[TelemetryClient]:
    """A spool-only client (no endpoint), closed at teardown."""
    c = TelemetryClient(settings_factory(fsync="off", redact=False))
    yield c
    c.close(timeout=10)


def spooled(client: TelemetryClient) -> list[dict[str, Any]]:
    """Every event the client spooled, in emit order."""
    assert client.flush_sync(timeout=10).ok
    lines = [
        orjson.loads(line)
        for _name, raw in client.spool.iter_batches_newest_first()
        for line in raw.splitlines()
    ]
    return sorted(lines, key=lambda e: e["seq"])


def only(client: TelemetryClient) -> dict[str, Any]:
    """The data of the one event spooled."""
    evs = spooled(client)
    assert len(evs) == 1, evs
    data: dict[str, Any] = evs[0]["data"]
    return data


def _lines(text: str) -> list[str]:
    parts = text.split("\n")
    last = parts.pop()
    return [p + "\n" for p in parts] + ([last] if last else [])


def apply_diff(before: str, diff: str) -> str:
    """Apply a unified diff to ``before`` (a minimal ``patch``, strict about context)."""
    if not diff:
        return before
    src, lines = _lines(before), _lines(diff)
    assert lines[0].startswith("--- a/")
    assert lines[1].startswith("+++ b/")
    out: list[str] = []
    pos, i = 0, 2
    while i < len(lines):
        m = re.match(r"@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@", lines[i])
        assert m, lines[i]
        start, length = int(m[1]), int(m[2] if m[2] is not None else 1)
        begin = start - 1 if length else start
        assert begin >= pos
        out.extend(src[pos:begin])
        pos = begin
        i += 1
        while i < len(lines) and not lines[i].startswith("@@"):
            tag, body = lines[i][0], lines[i][1:]
            if i + 1 < len(lines) and lines[i + 1].startswith("\\ No newline at end of file"):
                body = body[:-1]
                i += 1
            if tag in " -":
                assert src[pos] == body
                pos += 1
            if tag in " +":
                out.append(body)
            i += 1
    out.extend(src[pos:])
    return "".join(out)


# -- diffs ------------------------------------------------------------------------------------


def test_edit_has_a_unified_diff_with_a_b_headers_and_line_counts(
    client: TelemetryClient,
) -> None:
    """An edit: before, after, git-style diff, loc_added/loc_removed; the op id is returned."""
    before = "def f():\n    return 1\n"
    after = "def f():\n    # answer\n    return 2\n"
    op_id = client.file_operation("src/app.py", before=before, after=after, tool="edit_file")
    data = only(client)
    assert data["op_id"] == op_id
    assert data["path"] == "src/app.py"
    assert data["op"] == "edit"
    assert data["before"] == before
    assert data["after"] == after
    assert data["diff"] == (
        "--- a/src/app.py\n"
        "+++ b/src/app.py\n"
        "@@ -1,2 +1,3 @@\n"
        " def f():\n"
        "-    return 1\n"
        "+    # answer\n"
        "+    return 2\n"
    )
    assert (data["loc_added"], data["loc_removed"]) == (2, 1)
    assert data["tool"] == "edit_file"
    assert "binary" not in data


def test_create_and_delete_diff_against_nothing(client: TelemetryClient) -> None:
    """before=None is a creation (all lines added); after=None a deletion (all removed)."""
    client.file_operation("new.txt", after="a\nb\nc\n", op="create")
    client.file_operation("old.txt", before="x\ny\n", op="delete")
    create, delete = (e["data"] for e in spooled(client))
    assert create["diff"] == "--- a/new.txt\n+++ b/new.txt\n@@ -0,0 +1,3 @@\n+a\n+b\n+c\n"
    assert (create["loc_added"], create["loc_removed"]) == (3, 0)
    assert "before" not in create
    assert delete["diff"] == "--- a/old.txt\n+++ b/old.txt\n@@ -1,2 +0,0 @@\n-x\n-y\n"
    assert (delete["loc_added"], delete["loc_removed"]) == (0, 2)
    assert delete["op"] == "delete"
    assert "after" not in delete


def test_unchanged_content_has_an_empty_diff() -> None:
    """Equal texts: empty diff, zero counts."""
    assert unified_diff("f", "same\n", "same\n") == ("", 0, 0)
    assert unified_diff("f", None, "") == ("", 0, 0)


def test_missing_final_newline_is_marked_like_git() -> None:
    """A last line without newline gets git's ``\\ No newline at end of file`` marker."""
    diff, added, removed = unified_diff("f", "a\nb", "a\nb\n")
    assert diff == ("--- a/f\n+++ b/f\n@@ -1,2 +1,2 @@\n a\n-b\n\\ No newline at end of file\n+b\n")
    assert (added, removed) == (1, 1)


def test_hunks_in_a_large_file_have_absolute_line_numbers() -> None:
    """The trimmed common prefix/suffix do not shift hunk headers (lines 500 and 900)."""
    before = "".join(f"line {i}\n" for i in range(1, 1001))
    after = before.replace("line 500\n", "LINE 500\n").replace("line 900\n", "")
    diff, added, removed = unified_diff("/abs/big.txt", before, after)
    assert diff.startswith("--- a/abs/big.txt\n+++ b/abs/big.txt\n")
    assert "@@ -497,7 +497,7 @@\n" in diff
    assert "@@ -897,7 +897,6 @@\n" in diff
    assert (added, removed) == (1, 2)
    assert apply_diff(before, diff) == after


_PIECES = st.sampled_from(["a\n", "b\n", "c\n", "a", "\r\n", "x\ty\n", "é\n", "\n", ""])


@given(st.lists(_PIECES, max_size=40), st.lists(_PIECES, max_size=40))
def test_diff_applies_back_to_the_new_text(before: list[str], after: list[str]) -> None:
    """Property: patching ``before`` with the diff gives ``after``; counts match the diff."""
    old, new = "".join(before), "".join(after)
    diff, added, removed = unified_diff("p.txt", old, new)
    assert apply_diff(old, diff) == new
    body = _lines(diff)[2:]
    assert added == sum(1 for line in body if line.startswith("+"))
    assert removed == sum(1 for line in body if line.startswith("-"))
    assert added - removed == len(_lines(new)) - len(_lines(old))


@given(
    st.lists(_PIECES, max_size=60),
    st.integers(0, 60),
    st.integers(0, 10),
    st.lists(_PIECES, max_size=6),
    st.sampled_from(["", "\n", "x"]),
)
def test_diff_of_a_local_edit_applies_back(
    pieces: list[str], at: int, cut: int, inserted: list[str], tail: str
) -> None:
    """Property: a local edit (long shared head and tail, cut mid-line) round-trips too."""
    old = "".join(pieces)
    at = min(at, len(old))
    new = old[:at] + "".join(inserted) + old[at + cut :] + tail
    diff, added, removed = unified_diff("p.txt", old, new)
    assert apply_diff(old, diff) == new
    assert added - removed == len(_lines(new)) - len(_lines(old))


def test_bytes_that_are_utf8_text_are_diffed_as_text(client: TelemetryClient) -> None:
    """UTF-8 bytes without NUL are text: decoded and diffed."""
    client.file_operation("t.md", before="héllo\n".encode(), after=b"hello\n")
    data = only(client)
    assert data["before"] == "héllo\n"
    assert (data["loc_added"], data["loc_removed"]) == (1, 1)


# -- binary -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "binary"),
    [
        (b"plain text\n", False),
        ("text with NUL \x00", True),
        (b"\x89PNG\r\n\x1a\n\x00\x00", True),
        (b"\xff\xfe not utf-8", True),
        (b"nul \x00 inside valid utf-8", True),
        ("é ü 漢字\n".encode(), False),
        ("plain str", False),
    ],
)
def test_binary_detection(value: bytes | str, binary: bool) -> None:
    """Binary: bytes that are not UTF-8, or anything containing NUL."""
    assert is_binary(value) is binary


def test_binary_change_is_summarised_not_diffed(client: TelemetryClient) -> None:
    """Binary contents: sizes and sha256 of both sides, binary: true, no contents or line diff."""
    old, new = b"\x89PNG\x00\x01\x02", b"\x89PNG\x00\x03"
    client.file_operation("logo.png", before=old, after=new)
    data = only(client)
    assert data["binary"] is True
    assert data["before_size"] == len(old)
    assert data["after_size"] == len(new)
    assert data["before_sha256"] == hashlib.sha256(old).hexdigest()
    assert data["after_sha256"] == hashlib.sha256(new).hexdigest()
    assert data["diff"] == "Binary files a/logo.png and b/logo.png differ\n"
    assert not {"before", "after", "loc_added", "loc_removed"} & set(data)


def test_text_to_binary_summarises_both_sides() -> None:
    """One binary side is enough: the text side is summarised by its UTF-8 size and hash."""
    event = describe_change("f", "text\n", b"\x00", op="write")
    assert event.binary is True
    assert event.before_size == 5
    assert event.before_sha256 == hashlib.sha256(b"text\n").hexdigest()
    assert event.before is None


# -- large contents ---------------------------------------------------------------------------


def test_large_contents_become_attachments_and_the_diff_stays(
    settings_factory: SettingsFactory,
) -> None:
    """With a small inline limit, before/after move to attachments; the small diff stays inline."""
    before = "".join(f"row {i:05d}\n" for i in range(1000))
    after = before.replace("row 00500\n", "row 00500 changed\n")
    with TelemetryClient(settings_factory(fsync="off", inline_max_bytes=256)) as client:
        client.file_operation("data.csv", before=before, after=after)
        data = only(client)
        for field, content in (("before", before), ("after", after)):
            ref = data[field]["$attachment"]
            assert ref["size"] == len(content.encode())
            blob = client.spool.read_blob(ref["sha256"])
            assert blob is not None
            assert zstandard.ZstdDecompressor().decompress(blob) == content.encode()
        assert data["diff"].startswith("--- a/data.csv\n")
        assert "+row 00500 changed\n" in data["diff"]
        assert (data["loc_added"], data["loc_removed"]) == (1, 1)


# -- write_file -------------------------------------------------------------------------------


def test_write_file_on_a_new_file_writes_and_emits_write(
    client: TelemetryClient, tmp_path: Path
) -> None:
    """A new file: written as given, op "write", diff against nothing."""
    target = tmp_path / "new.py"
    op_id = client.write_file(target, "print('hi')\n", agent="claude")
    assert target.read_text() == "print('hi')\n"
    data = only(client)
    assert data["op_id"] == op_id
    assert data["op"] == "write"
    assert data["path"] == str(target)
    assert "before" not in data
    assert data["after"] == "print('hi')\n"
    assert (data["loc_added"], data["loc_removed"]) == (1, 0)
    assert data["agent"] == "claude"


def test_write_file_on_an_existing_file_reads_the_old_content(
    client: TelemetryClient, tmp_path: Path
) -> None:
    """An existing file: the old content is read first, op "edit", the diff shows the change."""
    target = tmp_path / "cfg.ini"
    target.write_text("debug = false\nport = 80\n")
    client.write_file(str(target), "debug = true\nport = 80\n")
    assert target.read_text() == "debug = true\nport = 80\n"
    data = only(client)
    assert data["op"] == "edit"
    assert data["before"] == "debug = false\nport = 80\n"
    assert "-debug = false\n+debug = true\n" in data["diff"]


def test_write_file_with_binary_bytes(client: TelemetryClient, tmp_path: Path) -> None:
    """Bytes are written as they are; non-text content is summarised."""
    target = tmp_path / "blob.bin"
    client.write_file(target, b"\x00\x01\x02")
    assert target.read_bytes() == b"\x00\x01\x02"
    data = only(client)
    assert data["binary"] is True
    assert data["after_size"] == 3
    assert "before_size" not in data


def test_write_file_errors_propagate_and_nothing_is_emitted(
    client: TelemetryClient, tmp_path: Path
) -> None:
    """The write is the caller's operation: its OSError propagates; no event for it."""
    with pytest.raises(FileNotFoundError):
        client.write_file(tmp_path / "no" / "such" / "dir.txt", "x")
    with pytest.raises(IsADirectoryError):
        client.write_file(tmp_path, "x")
    with pytest.raises(UnicodeEncodeError):
        client.write_file(tmp_path / "ascii.txt", "é", encoding="ascii")
    assert spooled(client) == []
    assert client.tracking_stats()["tracking_errors"] == 0


def test_write_file_when_old_content_is_unreadable(
    client: TelemetryClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An unreadable old file: the write still happens; the event says why there is no diff."""

    def unreadable(path: Any) -> tuple[None, OSError]:
        return None, PermissionError(13, "Permission denied")

    monkeypatch.setattr(files, "_read_quietly", unreadable)
    target = tmp_path / "locked.txt"
    client.write_file(target, "new\n")
    assert target.read_text() == "new\n"
    data = only(client)
    assert data["op"] == "edit"
    assert data["after"] == "new\n"
    assert "diff" not in data
    assert data["before_error"] == "PermissionError: Permission denied"


def test_disabled_client_still_writes(settings_factory: SettingsFactory, tmp_path: Path) -> None:
    """Telemetry off: the write happens, an op id is returned, nothing is recorded."""
    settings = settings_factory(enabled=False)
    client = TelemetryClient(settings)
    target = tmp_path / "f.txt"
    assert client.write_file(target, "x")
    assert target.read_text() == "x"
    with client.track_file(target) as tracked:
        target.write_text("y")
    assert not tracked.emitted
    client.change_decision("op", "maybe")
    assert client.tracking_stats()["coerced"] == {}
    assert not settings.resolved_spool_dir.exists()


# -- track_file -------------------------------------------------------------------------------


def test_track_file_emits_the_change_made_in_the_block(
    client: TelemetryClient, tmp_path: Path
) -> None:
    """Snapshot on entry, read again on exit: edit, create and delete."""
    edited, created, deleted = tmp_path / "e.txt", tmp_path / "c.txt", tmp_path / "d.txt"
    edited.write_text("one\n")
    deleted.write_text("bye\n")
    with client.track_file(edited, tool="sed") as t_edit:
        edited.write_text("one\ntwo\n")
    with client.track_file(created) as t_create:
        created.write_text("hi\n")
    with client.track_file(deleted):
        deleted.unlink()
    with client.track_file(tmp_path / "never.txt") as t_never:
        pass
    assert t_edit.emitted
    assert t_edit.before == b"one\n"
    assert t_edit.after == b"one\ntwo\n"
    assert not t_never.emitted
    edit, create, delete = (e["data"] for e in spooled(client))
    assert edit["op"] == "edit"
    assert edit["op_id"] == t_edit.op_id
    assert edit["tool"] == "sed"
    assert (edit["loc_added"], edit["loc_removed"]) == (1, 0)
    assert create["op"] == "write"
    assert create["op_id"] == t_create.op_id
    assert create["after"] == "hi\n"
    assert delete["op"] == "delete"
    assert delete["before"] == "bye\n"
    assert "after" not in delete


def test_track_file_records_a_change_even_when_the_block_raises(
    client: TelemetryClient, tmp_path: Path
) -> None:
    """A raising block: the partial change is recorded (with the error type); it propagates."""
    target = tmp_path / "half.txt"
    target.write_text("a\n")

    def edit_then_fail() -> None:
        with client.track_file(target):
            target.write_text("a\nb\n")
            raise RuntimeError("halfway")

    with pytest.raises(RuntimeError, match="halfway"):
        edit_then_fail()
    data = only(client)
    assert data["error"] == "RuntimeError"
    assert data["loc_added"] == 1


# -- change decisions -------------------------------------------------------------------------


def test_change_decisions_close_the_loop(client: TelemetryClient) -> None:
    """accept/reject/revert are emitted as given, with the op id and reason."""
    op_id = client.file_operation("a.py", before="1\n", after="2\n")
    client.change_decision(op_id, "accept")
    client.change_decision(op_id, "reject", reason="wrong approach")
    client.change_decision(op_id, "revert", by="user")
    evs = spooled(client)
    assert [e["type"] for e in evs] == ["file_operation", *["change_decision"] * 3]
    assert [e["data"] for e in evs[1:]] == [
        {"op_id": op_id, "decision": "accept"},
        {"op_id": op_id, "decision": "reject", "reason": "wrong approach"},
        {"op_id": op_id, "decision": "revert", "by": "user"},
    ]
    assert client.tracking_stats()["coerced"] == {}


def test_bad_decision_is_coerced_counted_and_logged(
    client: TelemetryClient, caplog: pytest.LogCaptureFixture
) -> None:
    """A value outside accept/reject/revert never raises: it is coerced, counted and logged."""
    with caplog.at_level(logging.WARNING, logger="telemetry_client"):
        client.change_decision("op-1", "maybe")
        client.change_decision("op-2", " Accepted ")
        client.change_decision("op-3", 42)  # type: ignore[arg-type]
    evs = [e["data"] for e in spooled(client)]
    assert evs == [
        {"op_id": "op-1", "decision": "invalid", "raw_decision": "maybe"},
        {"op_id": "op-2", "decision": "accept", "raw_decision": " Accepted "},
        {"op_id": "op-3", "decision": "invalid", "raw_decision": "42"},
    ]
    assert client.tracking_stats()["coerced"] == {"change_decision": 3}
    assert "change decision 'maybe' is not one of accept/reject/revert" in caplog.text


def test_normalize_decision() -> None:
    """Exact values pass; case, space and past tense are mapped; the rest is invalid."""
    assert normalize_decision("revert") == ("revert", False)
    assert normalize_decision("REJECT") == ("reject", True)
    assert normalize_decision("reverted") == ("revert", True)
    assert normalize_decision(None) == ("invalid", True)


def test_file_operation_never_raises_for_odd_content(client: TelemetryClient) -> None:
    """Content that is neither str nor bytes is recorded as its str(), counted as coerced."""
    op_id = client.file_operation("n.txt", before=1, after=2)  # type: ignore[arg-type]
    assert op_id
    data = only(client)
    assert (data["before"], data["after"]) == ("1", "2")
    assert client.tracking_stats()["coerced"] == {"file_content": 2}
