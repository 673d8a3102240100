"""The change journal on disk: torn lines, owner-only files, retention, and the hook's
promise never to break the app."""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from telemetry_client import TelemetryClient
from telemetry_client.changes import ChangeJournal, OpRecord, changes_dir
from telemetry_client.errors import ConfigError
from telemetry_client.settings import TelemetrySettings
from telemetry_client.spool import Spool

pytest_plugins = ["_changes_fixtures"]


def _rec(op_id: str, ts: float) -> OpRecord:
    return OpRecord(op_id, f"/w/{op_id}", "edit", ts, "a" * 64, "b" * 64)


def test_files_are_owner_only_and_a_torn_line_is_skipped(tmp_path: Path) -> None:
    """0700/0600 whatever the umask; a half-written last line (a writer killed mid-append)
    is skipped, and the next record starts on a fresh line."""
    j = ChangeJournal(tmp_path / "changes", max_bytes=1 << 20)
    old = os.umask(0o022)
    try:
        j.record(_rec("one", 1.0), b"before", b"diff")
    finally:
        os.umask(old)
    assert stat.S_IMODE(j.dir.stat().st_mode) == 0o700
    for f in j.dir.iterdir():
        assert stat.S_IMODE(f.stat().st_mode) == 0o600, f
    with j.path.open("ab") as out:
        out.write(b'{"k":"op","op_id":"torn","pa')
    assert list(j.load()) == ["one"]
    j.record(_rec("two", 2.0), None, None)
    assert list(j.load()) == ["one", "two"]
    assert j.read_content("one", ".before") == b"before"


def test_prune_drops_old_ops_with_their_contents_and_strays(tmp_path: Path) -> None:
    """prune(cutoff) removes older ops, their kept contents and orphaned files."""
    j = ChangeJournal(tmp_path / "changes", max_bytes=1 << 20)
    j.record(_rec("old", 100.0), b"x", b"d")
    j.record(_rec("new", 200.0), b"y", b"d")
    (j.dir / "0000.before").write_bytes(b"orphan")
    assert j.prune(150.0) == 1
    assert list(j.load()) == ["new"]
    assert j.read_content("old", ".before") is None
    assert not (j.dir / "0000.before").exists()
    assert j.read_content("new", ".before") == b"y"
    assert j.prune(None) == 1
    assert j.load() == {}


def test_the_journal_follows_spool_retention_and_purge(
    client: TelemetryClient, workspace: Path
) -> None:
    """Spool retention (purge_expired) and ``purge --all`` apply to the journal too."""
    client.write_file(workspace / "a.txt", "a\n")
    journal = ChangeJournal(changes_dir(client.settings.resolved_spool_dir), max_bytes=0)
    assert len(journal.load()) == 1
    spool = Spool(client.settings.resolved_spool_dir, max_bytes=1 << 30, retention_days=7)
    spool.purge_expired(now_ns=time.time_ns() + 6 * 86400 * 10**9)
    assert len(journal.load()) == 1
    spool.purge_expired(now_ns=time.time_ns() + 8 * 86400 * 10**9)
    assert journal.load() == {}
    client.write_file(workspace / "b.txt", "b\n")
    spool.purge(everything=True)
    assert journal.load() == {}
    assert not [f for f in journal.dir.iterdir() if f.name.endswith(".before")]


def test_a_broken_journal_never_breaks_the_app(
    make_client: Callable[..., TelemetryClient], workspace: Path
) -> None:
    """The journal's directory unusable: write_file still writes and emits; the failure is
    counted under tracking_errors_by_call['changes_journal']."""
    client = make_client()
    changes_dir(client.settings.resolved_spool_dir).parent.mkdir(parents=True, exist_ok=True)
    changes_dir(client.settings.resolved_spool_dir).write_text("not a directory")
    client.write_file(workspace / "a.txt", "a\n")
    assert (workspace / "a.txt").read_text() == "a\n"
    assert client.tracking_stats()["tracking_errors_by_call"] == {"changes_journal": 1}


def test_a_disabled_client_records_nothing(
    make_client: Callable[..., TelemetryClient], workspace: Path
) -> None:
    client = make_client(enabled=False)
    client.write_file(workspace / "a.txt", "a\n")
    assert not changes_dir(client.settings.resolved_spool_dir).exists()


def test_changes_max_bytes_errors_name_the_variable(
    monkeypatch: pytest.MonkeyPatch, clean_env: None
) -> None:
    monkeypatch.setenv("TELEMETRY_CHANGES_MAX_BYTES", "lots")
    with pytest.raises(ConfigError, match="TELEMETRY_CHANGES_MAX_BYTES='lots'"):
        TelemetrySettings()
    monkeypatch.setenv("TELEMETRY_CHANGES_MAX_BYTES", "2MiB")
    assert TelemetrySettings().changes_max_bytes == 2 * 1024 * 1024
    monkeypatch.delenv("TELEMETRY_CHANGES_MAX_BYTES")
    assert TelemetrySettings().changes_max_bytes == 32 * 1024 * 1024


def test_small_diffs_are_inline_and_large_ones_files_under_the_cap(tmp_path: Path) -> None:
    """A diff up to INLINE_DIFF_MAX lives in the op record; a larger one is a ``.diff``
    file counted against the cap (and not kept when larger than the cap)."""
    j = ChangeJournal(tmp_path / "changes", max_bytes=10_000)
    j.record(_rec("small", 1.0), None, b"@@ -1 +1 @@\n-a\n+b\n")
    j.record(_rec("large", 2.0), None, b"+x\n" * 2000)
    j.record(_rec("huge", 3.0), None, b"+y\n" * 4000)
    ops = j.load()
    assert ops["small"].diff == "@@ -1 +1 @@\n-a\n+b\n"
    assert ops["large"].diff is None
    assert j.read_content("large", ".diff") == b"+x\n" * 2000
    assert ops["huge"].diff is None
    assert j.read_content("huge", ".diff") is None
