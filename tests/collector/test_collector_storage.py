"""Collector storage: the app on its SQLite database (hostile ids, a locked database,
private files), and the 0.1 file store the importer reads (safe partition names, crash
recovery, exclusive data dir)."""

from __future__ import annotations

import errno
import os
import sqlite3
from pathlib import Path
from typing import Any

import orjson
import pytest
from conftest import CollectorHandle, collector_event
from hypothesis import given, settings
from hypothesis import strategies as st

from telemetry_client.collector._decode import validate_envelope
from telemetry_client.collector.store import _io as storage_io
from telemetry_client.collector.store.files import EventQuery, Storage, StorageError, partition_name

HOSTILE_IDS = [
    "../../etc",
    "..",
    ".",
    "",
    "a/b",
    "a\\b",
    ".hidden",
    "nul\x00byte",
    "x" * 5000,
    "ユーザー",
    "Alice",
    "alice",
    "ALICE",
    "alice~0123456789abcdef",
    "con",
    " spaced ",
    "a" * 64,
    "a" * 65,
    "a..b",
]


def _decoded(seq: int, **overrides: Any) -> Any:
    return validate_envelope(collector_event(seq, **overrides), f"line {seq}")


def _is_safe_name(name: str) -> bool:
    return (
        0 < len(name) <= 64 + 1 + 16
        and not name.startswith(".")
        and ".." not in name
        and "/" not in name
        and "\\" not in name
        and "\x00" not in name
        and name.isascii()
    )


def test_partition_names_of_hostile_ids_are_safe_and_distinct() -> None:
    """Separators, dots, NUL, unicode, case variants, long ids: safe names, never shared."""
    names = [partition_name(user_id) for user_id in HOSTILE_IDS]
    assert all(_is_safe_name(n) for n in names), names
    assert len(set(names)) == len(HOSTILE_IDS)
    assert partition_name("alice") == "alice"  # safe ids stay readable
    assert partition_name("a" * 64) == "a" * 64
    assert partition_name("../../etc").startswith("_etc~")


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=80), st.text(max_size=80))
def test_partition_names_are_safe_and_injective(a: str, b: str) -> None:
    """For any ids: the name is a safe file name, and different ids get different names."""
    assert _is_safe_name(partition_name(a)), repr(a)
    if a != b:
        assert partition_name(a) != partition_name(b)


def test_hostile_user_ids_are_stored_verbatim_and_found_exactly(
    collector: CollectorHandle,
) -> None:
    """Events of hostile user ids are stored as sent, each found by its exact id (case,
    separators, dots, unicode, long), and nothing is written outside the data dir's
    database; a NUL (which PostgreSQL text cannot hold) is refused with 400."""
    ids = [user_id for user_id in HOSTILE_IDS if "\x00" not in user_id]
    events = [collector_event(i, user_id=user_id) for i, user_id in enumerate(ids)]
    ndjson = {"Content-Type": "application/x-ndjson"}
    with collector.client() as http:
        body = b"".join(orjson.dumps(e) + b"\n" for e in events)
        assert http.post("/api/v1/events", content=body, headers=ndjson).status_code == 200
        nul = orjson.dumps(collector_event(99, user_id="nul\x00byte")) + b"\n"
        response = http.post("/api/v1/events", content=nul, headers=ndjson)
        assert response.status_code == 400
        assert "NUL" in response.json()["detail"]
    for event in events:
        if event["user_id"]:  # an empty user_id parameter means "no filter"
            found = collector.query(user_id=event["user_id"])["events"]
            assert [e["seq"] for e in found] == [event["seq"]], repr(event["user_id"])
    data_dir = collector.data_dir.resolve()
    names = sorted(p.name for p in data_dir.rglob("*"))
    assert all(n.startswith("collector.db") for n in names), names
    assert not (data_dir.parent / "etc").exists()
    assert collector.state.store.check() == []


def _file(data_dir: Path, user: str = "alice", day: str = "2026-11-21") -> Path:
    return data_dir / "events" / day / f"{user}.jsonl"


def test_an_unacknowledged_batch_is_rolled_back_on_open(tmp_path: Path) -> None:
    """Bytes past the committed size, orphan files and a torn journal line vanish on reopen."""
    store = Storage.open(tmp_path)
    assert store.events.append([_decoded(1), _decoded(2)], "k1").accepted == 2
    committed = _file(tmp_path).stat().st_size
    store.close()
    # What a crash between writing a batch and its commit record leaves behind:
    with _file(tmp_path).open("ab") as f:
        f.write(orjson.dumps(collector_event(3)) + b"\n" + b'{"half": ')
    orphan = _file(tmp_path, user="bob")
    orphan.write_bytes(orjson.dumps(collector_event(4, user_id="bob")) + b"\n")
    with (tmp_path / "journal.jsonl").open("ab") as f:
        f.write(b'{"key": "k2", "parts": [["2026-11-21/ali')
    store = Storage.open(tmp_path)
    try:
        assert _file(tmp_path).stat().st_size == committed
        assert not orphan.exists()
        assert store.check() == []
        assert store.events.has_key("k1")
        assert not store.events.has_key("k2")
        # The client retries the unacknowledged batch with its key: stored exactly once.
        assert store.events.append([_decoded(3)], "k2").duplicate is False
        assert store.events.append([_decoded(3)], "k2").duplicate is True
        result = store.events.query(EventQuery())
        assert [e["seq"] for e in result.events] == [1, 2, 3]
        assert store.check() == []
    finally:
        store.close()


def test_garbage_between_journal_records_refuses_to_open(tmp_path: Path) -> None:
    """A corrupt record followed by good ones is not a torn tail: opening fails loudly."""
    store = Storage.open(tmp_path)
    store.events.append([_decoded(1)], "k1")
    store.close()
    journal = tmp_path / "journal.jsonl"
    journal.write_bytes(b"garbage\n" + journal.read_bytes())
    with pytest.raises(StorageError, match="line 1 is not a commit record"):
        Storage.open(tmp_path)
    Storage.open(tmp_path / "other").close()  # the failed open released its lock


def test_a_lost_journal_refuses_to_open_instead_of_deleting_events(tmp_path: Path) -> None:
    """Events on disk without any journal are not an unacknowledged batch: never rolled back."""
    store = Storage.open(tmp_path)
    store.events.append([_decoded(1)], "k1")
    store.close()
    (tmp_path / "journal.jsonl").unlink()
    with pytest.raises(StorageError, match=r"journal\.jsonl is missing"):
        Storage.open(tmp_path)
    assert _file(tmp_path).stat().st_size > 0


def test_a_crash_during_the_very_first_batch_is_rolled_back(tmp_path: Path) -> None:
    """An (empty) journal exists before any batch, so a first batch cut short is undone."""
    Storage.open(tmp_path).close()
    _file(tmp_path).parent.mkdir(parents=True)
    _file(tmp_path).write_bytes(orjson.dumps(collector_event(1)) + b"\n")
    store = Storage.open(tmp_path)
    try:
        assert not _file(tmp_path).exists()
        assert store.check() == []
    finally:
        store.close()


def test_a_data_dir_serves_one_collector_at_a_time(tmp_path: Path) -> None:
    """A second open of a data dir in use fails clearly; after close it opens again."""
    first = Storage.open(tmp_path)
    with pytest.raises(StorageError, match="in use by another collector"):
        Storage.open(tmp_path)
    first.close()
    first.close()  # idempotent
    Storage.open(tmp_path).close()


def test_a_failed_commit_is_undone_and_retried_cleanly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """If the commit record cannot be written (disk full), the batch's bytes are cut back."""
    store = Storage.open(tmp_path)
    try:
        store.events.append([_decoded(1)], "k1")
        real = storage_io.pwrite_all
        journal = (tmp_path / "journal.jsonl").stat().st_ino

        def full_disk(fd: int, data: bytes, offset: int) -> None:
            if os.fstat(fd).st_ino == journal:
                real(fd, data[:5], offset)  # a short write, then ENOSPC
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            real(fd, data, offset)

        monkeypatch.setattr(storage_io, "pwrite_all", full_disk)
        with pytest.raises(OSError, match="No space left"):
            store.events.append([_decoded(2), _decoded(3, user_id="carol")], "k2")
        assert store.check() == []
        assert not _file(tmp_path, user="carol").exists()
        monkeypatch.undo()
        assert store.events.append([_decoded(2), _decoded(3, user_id="carol")], "k2").accepted == 2
        assert store.events.query(EventQuery()).total == 3
        assert store.check() == []
    finally:
        store.close()


def test_a_locked_database_answers_503_and_the_retry_is_stored_once(
    collector: CollectorHandle,
) -> None:
    """Another process holding SQLite's write lock past the busy timeout: 503 with
    Retry-After (nothing stored); once released, the retry with the same key stores once."""
    body = orjson.dumps(collector_event(1)) + b"\n"
    headers = {"Content-Type": "application/x-ndjson", "Idempotency-Key": "b-1"}
    blocker = sqlite3.connect(collector.data_dir / "collector.db", isolation_level=None)
    try:
        with collector.client(timeout=60) as http:
            blocker.execute("BEGIN EXCLUSIVE")
            response = http.post("/api/v1/events", content=body, headers=headers)
            assert response.status_code == 503
            assert response.headers["Retry-After"] == "5"
            assert response.json() == {"detail": "storage unavailable; retry later"}
            blocker.execute("ROLLBACK")
            for duplicate in (False, True):
                response = http.post("/api/v1/events", content=body, headers=headers)
                assert response.json()["duplicate"] is duplicate
    finally:
        blocker.close()
    assert collector.query()["total"] == 1
    assert collector.state.metrics.value("store_errors_total", "append") == 1
    assert collector.state.store.check() == []


def test_files_and_directories_are_private(collector: CollectorHandle) -> None:
    """Stored telemetry is full-content: files 0600 and directories 0700."""
    with collector.client() as http:
        body = orjson.dumps(collector_event(1)) + b"\n"
        http.post("/api/v1/events", content=body, headers={"Content-Type": "application/x-ndjson"})
    for path in [collector.data_dir, *collector.data_dir.rglob("*")]:
        mode = path.stat().st_mode & 0o777
        assert mode == (0o700 if path.is_dir() else 0o600), (path, oct(mode))
