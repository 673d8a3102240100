"""The changes panel's HTTP API (CONTRACT §10) on real files in a temp workspace."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from pathlib import Path

from _changes_support import Panel, events_of

from telemetry_client import TelemetryClient

pytest_plugins = ["_changes_fixtures"]


def test_recent_lists_ops_under_root_newest_first_with_relative_paths(panel: Panel) -> None:
    """Each recorded op appears once, newest first, path relative to root, decision null."""
    c, root = panel.client, panel.root
    (root / "a.txt").write_text("one\ntwo\n")
    first = c.write_file(root / "a.txt", "one\nTWO\nthree\n")
    second = c.write_file(root / "sub.txt", "new\n")
    changes = panel.recent()
    assert [ch["op_id"] for ch in changes] == [second, first]
    edit = changes[1]
    assert edit["path"] == "a.txt"
    assert edit["op"] == "edit"
    assert (edit["loc_added"], edit["loc_removed"]) == (2, 1)
    assert edit["decision"] is None
    assert edit["revertable"] is True
    assert edit["ts"].endswith("Z")
    assert changes[0]["op"] == "write"
    assert changes[0]["path"] == "sub.txt"


def test_recent_pages_with_a_cursor(panel: Panel) -> None:
    """``limit`` bounds a page; ``next`` is the ``before`` of the following one."""
    ids = [panel.client.write_file(panel.root / f"f{i}.txt", f"{i}\n") for i in range(5)]
    seen: list[str] = []
    before = None
    while True:
        params: dict[str, str | int] = {"limit": 2}
        if before:
            params["before"] = before
        body = panel.http.get("recent", params=params).json()
        assert len(body["changes"]) <= 2
        seen += [c["op_id"] for c in body["changes"]]
        before = body["next"]
        if before is None:
            break
    assert seen == ids[::-1]
    assert panel.http.get("recent", params={"limit": 0}).status_code == 422


def test_accept_records_once_and_emits_change_decision_with_the_user(panel: Panel) -> None:
    """Accept: 200, decision stored, one change_decision carrying the request's user;
    repeating it answers changed=false and emits nothing; an unknown op is 404."""
    op = panel.client.write_file(panel.root / "a.txt", "x\n")
    first = panel.decide(op, "accept", **{"X-User-ID": "alice"})
    assert first.status_code == 200
    assert first.json()["changed"] is True
    again = panel.decide(op, "accept", **{"X-User-ID": "alice"})
    assert again.status_code == 200
    assert again.json()["changed"] is False
    assert panel.recent()[0]["decision"] == "accept"
    decisions = events_of(panel.client, "change_decision")
    pairs = [(e["data"]["op_id"], e["data"]["decision"]) for e in decisions]
    assert pairs == [(op, "accept")], panel.client.stats()
    assert decisions[0]["user_id"] == "alice"
    assert panel.decide("no-such-op", "accept").status_code == 404
    reject = panel.decide(op, "reject")
    assert reject.status_code == 200
    assert reject.json()["decision"] == "reject"


def test_revert_of_an_edit_restores_bytes_and_keeps_the_mode(panel: Panel) -> None:
    """The file gets its before bytes back via rename (mode kept); a repeat is a no-op; after
    a revert, accept is refused (409)."""
    path = panel.root / "a.txt"
    path.write_bytes(b"before\n\x00binary too")
    path.chmod(0o640)
    op = panel.client.write_file(path, "after\n")
    inode = path.stat().st_ino
    response = panel.decide(op, "revert")
    assert response.status_code == 200, response.text
    assert path.read_bytes() == b"before\n\x00binary too"
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert path.stat().st_ino != inode  # replaced by rename, not rewritten in place
    assert not [p for p in panel.root.iterdir() if p.name.endswith(".tmp")]
    assert panel.decide(op, "revert").json()["changed"] is False
    assert panel.decide(op, "accept").status_code == 409
    decisions = [e["data"]["decision"] for e in events_of(panel.client, "change_decision")]
    assert decisions == ["revert"], panel.client.stats()  # what was spooled, dropped, coerced


def test_revert_deletes_a_created_file_and_recreates_a_deleted_one(panel: Panel) -> None:
    """Created -> deleted; deleted (track_file around an unlink) -> recreated."""
    created = panel.root / "new.txt"
    op_create = panel.client.write_file(created, "hello\n")
    gone = panel.root / "old.txt"
    gone.write_text("keep me\n")
    with panel.client.track_file(gone) as t:
        gone.unlink()
    assert panel.recent()[0]["op"] == "delete"
    assert panel.decide(op_create, "revert").status_code == 200
    assert not created.exists()
    assert panel.decide(t.op_id, "revert").status_code == 200
    assert gone.read_text() == "keep me\n"


def test_revert_conflicts_when_the_file_changed_and_touches_nothing(panel: Panel) -> None:
    """Changed since the op (edited, or recreated after a delete): 409, file untouched."""
    path = panel.root / "a.txt"
    path.write_text("v1\n")
    op = panel.client.write_file(path, "v2\n")
    path.write_text("v3 by the user\n")
    before = path.stat()
    response = panel.decide(op, "revert")
    assert response.status_code == 409
    assert response.json()["code"] == "conflict"
    assert path.read_text() == "v3 by the user\n"
    assert path.stat().st_mtime_ns == before.st_mtime_ns
    assert panel.recent()[0]["decision"] is None
    assert events_of(panel.client, "change_decision") == []
    gone = panel.root / "b.txt"
    gone.write_text("b\n")
    with panel.client.track_file(gone) as t:
        gone.unlink()
    gone.write_text("someone recreated it\n")
    assert panel.decide(t.op_id, "revert").status_code == 409
    assert gone.read_text() == "someone recreated it\n"


def test_ops_outside_root_are_invisible_and_never_written(panel: Panel, tmp_path: Path) -> None:
    """An op on a file outside root (also via ``..``) is not listed and cannot be reverted;
    op ids that look like paths are only ids."""
    outside = tmp_path / "outside.txt"
    outside.write_text("secret\n")
    op1 = panel.client.write_file(outside, "changed\n")
    op2 = panel.client.write_file(panel.root / ".." / "outside.txt", "changed again\n")
    assert panel.recent() == []
    for op in (op1, op2, "..%2F..%2Foutside.txt", "%2e%2e"):
        assert panel.decide(op, "revert").status_code == 404
    assert outside.read_text() == "changed again\n"


def test_symlinks_are_refused(panel: Panel, tmp_path: Path) -> None:
    """The file swapped for a symlink to an outside file with the same bytes, or a directory
    on its path swapped for a symlink: 403, nothing written outside root."""
    target = tmp_path / "target.txt"
    target.write_text("after\n")
    path = panel.root / "a.txt"
    path.write_text("before\n")
    op = panel.client.write_file(path, "after\n")
    path.unlink()
    path.symlink_to(target)
    response = panel.decide(op, "revert")
    assert response.status_code == 403
    assert response.json()["code"] == "symlink"
    assert target.read_text() == "after\n"
    assert path.is_symlink()

    sub = panel.root / "sub"
    sub.mkdir()
    (sub / "b.txt").write_text("before\n")
    op2 = panel.client.write_file(sub / "b.txt", "after\n")
    elsewhere = tmp_path / "elsewhere"
    sub.rename(elsewhere)
    sub.symlink_to(elsewhere, target_is_directory=True)
    assert panel.decide(op2, "revert").status_code == 403
    assert (elsewhere / "b.txt").read_text() == "after\n"


def test_decisions_need_a_token_json_or_same_origin(panel: Panel) -> None:
    """A form post without the token, a bare POST, or any cross-site request: 403 and nothing
    done; the page's token (header or form field) works."""
    path = panel.root / "a.txt"
    path.write_text("v1\n")
    op = panel.client.write_file(path, "v2\n")
    bare = panel.http.post(f"{op}/revert")
    assert bare.status_code == 403
    form = panel.http.post(f"{op}/revert", data={"csrf_token": "wrong"})
    assert form.status_code == 303
    assert "notice=forbidden" in form.headers["location"]
    evil = panel.decide(op, "revert", origin="http://evil.example")
    assert evil.status_code == 403
    fetch_site = panel.decide(op, "revert", **{"sec-fetch-site": "cross-site"})
    assert fetch_site.status_code == 403
    assert path.read_text() == "v2\n"
    page = panel.http.get("")
    token = page.text.split('name="csrf-token" content="')[1].split('"')[0]
    ok = panel.http.post(f"{op}/revert", data={"csrf_token": token})
    assert ok.status_code == 303
    assert "notice=revert" in ok.headers["location"]
    assert path.read_text() == "v1\n"
    op2 = panel.client.write_file(path, "v3\n")
    assert panel.http.post(f"{op2}/accept", headers={"X-CSRF-Token": token}).status_code == 200


def test_a_new_client_on_the_spool_sees_ops_and_decisions(
    panel: Panel, make_client: Callable[..., TelemetryClient], serve_panel: Callable[..., Panel]
) -> None:
    """The journal survives the process: a new client (same spool) lists and reverts."""
    path = panel.root / "a.txt"
    path.write_text("v1\n")
    op = panel.client.write_file(path, "v2\n")
    op2 = panel.client.write_file(panel.root / "b.txt", "b\n")
    assert panel.decide(op2, "reject").status_code == 200
    panel.client.close()
    again = serve_panel(make_client(), panel.root)
    assert [(c["op_id"], c["decision"]) for c in again.recent()] == [(op2, "reject"), (op, None)]
    assert again.decide(op, "revert").status_code == 200
    assert path.read_text() == "v1\n"


def test_oldest_lose_revert_first_within_the_byte_cap(
    make_client: Callable[..., TelemetryClient],
    serve_panel: Callable[..., Panel],
    workspace: Path,
) -> None:
    """With a small TELEMETRY_CHANGES_MAX_BYTES the oldest ops lose their before-content
    first: listed as not revertable (and why), revert answers 410, the newest still revert."""
    p = serve_panel(make_client(changes_max_bytes=3000), workspace)
    ops = []
    for i in range(6):
        path = workspace / f"f{i}.txt"
        path.write_text(f"{i}" * 800 + "\n")
        ops.append(p.client.write_file(path, "changed\n"))
    by_id = {c["op_id"]: c for c in p.recent()}
    assert by_id[ops[0]]["revertable"] is False
    assert "TELEMETRY_CHANGES_MAX_BYTES" in by_id[ops[0]]["revert_unavailable"]
    assert by_id[ops[-1]]["revertable"] is True
    assert p.decide(ops[0], "revert").status_code == 410
    assert (workspace / "f0.txt").read_text() == "changed\n"
    assert p.decide(ops[-1], "revert").status_code == 200
    assert (workspace / "f5.txt").read_text() == "5" * 800 + "\n"
    assert "Revert unavailable" in p.http.get("").text
    kept = list(os.listdir(p.client.settings.resolved_spool_dir / "changes"))
    sizes = sum(
        (p.client.settings.resolved_spool_dir / "changes" / f).stat().st_size
        for f in kept
        if f.endswith((".before", ".diff"))
    )
    assert sizes <= 3000
