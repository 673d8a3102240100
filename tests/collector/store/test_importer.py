"""Importing a 0.1 data dir (store/importer.py) into SQLite and PostgreSQL.

The 0.1 data dir is written by the 0.1 file store itself (``files.Storage``: journal,
day/user partitions, attachments with their sidecars), then imported into a real
database: every event once with the same bytes, session aggregates recounted, a second
run stores nothing, a run cut short (an exception, or the process killed inside a
transaction) resumes to exactly once, and the 0.1 dir is never modified.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import sqlite3
import subprocess
import sys
import textwrap
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import orjson
import psycopg
import pytest
from conftest import collector_event

from telemetry_client.collector._decode import DecodedEvent, validate_envelope
from telemetry_client.collector.store import importer
from telemetry_client.collector.store.base import (
    AppendResult,
    EventQuery,
    Ingest,
    ReadScope,
    SessionQuery,
    StorageError,
    Store,
)
from telemetry_client.collector.store.files import Storage
from telemetry_client.collector.store.importer import ImportResult, derived_key, import_data_dir
from telemetry_client.collector.store.open import open_store

ALL = ReadScope()
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4
TEXT = b"a log file\n" * 50


@dataclass
class Legacy:
    """A 0.1 data dir and what was committed to it."""

    path: Path
    batches: list[tuple[str | None, list[bytes]]] = field(default_factory=list)
    attachments: dict[str, tuple[str, bytes]] = field(default_factory=dict)

    @property
    def lines(self) -> list[bytes]:
        return [line for _, lines in self.batches for line in lines]

    def append(self, storage: Storage, key: str | None, events: list[dict[str, Any]]) -> None:
        decoded = [validate_envelope(e, f"event {i}") for i, e in enumerate(events)]
        assert storage.events.append(decoded, key).accepted == len(events)
        self.batches.append((key, [d.line for d in decoded]))

    def attach(self, storage: Storage, content_type: str, data: bytes) -> str:
        sha = hashlib.sha256(data).hexdigest()
        with storage.attachments.stage() as staging:
            staging.write(data)
            assert staging.commit(sha, content_type)
        self.attachments[sha] = (content_type, data)
        return sha


def _ev(n: int, **overrides: Any) -> dict[str, Any]:
    return collector_event(n, **overrides)


def _ts(day: int, second: int) -> str:
    return f"2026-11-{day:02d}T23:59:{second:02d}.000000Z"


def build_legacy(path: Path, *, many: int = 0) -> Legacy:
    """A 0.1 data dir with keyed and key-less batches over several days, users and
    sessions, attachments, and (``many``) extra one-event batches."""
    legacy = Legacy(path)
    storage = Storage.open(path)
    try:
        shot = legacy.attach(storage, "image/png", PNG)
        log = legacy.attach(storage, "text/plain; charset=utf-8", TEXT)
        legacy.append(
            storage,
            "key-1",
            [
                _ev(1, session_id="s-a", ts=_ts(20, 1)),
                _ev(
                    2,
                    type="llm_call",
                    session_id="s-a",
                    ts=_ts(20, 2),
                    data={"model": "m", "input_tokens": 120, "output_tokens": 30},
                ),
                _ev(3, type="error", session_id="s-a", ts=_ts(20, 3), data={"message": "boom"}),
            ],
        )
        # No key (a 0.1 client that sent none), two users and two days in one batch.
        legacy.append(
            storage,
            None,
            [
                _ev(4, session_id="s-b", user_id="bob", ts=_ts(20, 58)),
                _ev(5, session_id="s-b", user_id="bob", ts="2026-11-21T00:00:01.5Z"),
                _ev(6, session_id="s-a", ts="2026-11-21T00:00:02.000000+00:00"),
            ],
        )
        legacy.append(
            storage,
            "key-3",
            [
                _ev(
                    7,
                    type="tool_call",
                    session_id="s-b",
                    user_id="bob",
                    ts="2026-11-21T00:00:03Z",
                    data={"shot": {"$attachment": {"sha256": shot, "size": len(PNG)}}},
                ),
                _ev(
                    8,
                    session_id="s-c",
                    user_id="../Carol",  # a hostile id: its partition name is hashed
                    ts="2026-11-22T10:00:00Z",
                    data={"log": {"$attachment": {"sha256": log}}, "text": "héllo\nwörld"},
                ),
            ],
        )
        legacy.append(storage, None, [_ev(9, session_id="s-c", user_id="../Carol")])
        for i in range(many):
            key = f"many-{i}" if i % 2 else None
            legacy.append(storage, key, [_ev(100 + i, session_id=f"s-{i % 5}", seq=i)])
        assert storage.check() == []
    finally:
        storage.close()
    return legacy


def add_crash_debris(legacy: Legacy) -> None:
    """What a 0.1 collector killed mid-batch leaves: bytes past the committed end of a
    partition and a torn journal record. Neither was acknowledged; neither is imported."""
    partition = legacy.path / "events" / "2026-11-20" / "alice.jsonl"
    with partition.open("ab") as f:
        f.write(orjson.dumps(_ev(999, ts=_ts(20, 9))) + b"\n" + b'{"half": ')
    with (legacy.path / "journal.jsonl").open("ab") as f:
        f.write(b'{"key":"key-torn","parts":[["2026-11-20/alice.jsonl",')


def snapshot(root: Path) -> dict[str, tuple[int, int, str]]:
    """Every path under ``root`` with its mode, mtime and content hash."""
    out: dict[str, tuple[int, int, str]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [*dirnames, *filenames]:
            path = Path(dirpath) / name
            st = path.lstat()
            digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else ""
            out[str(path.relative_to(root))] = (st.st_mode, st.st_mtime_ns, digest)
    return out


# -- backends -------------------------------------------------------------------------------


@dataclass
class Backend:
    """A database the importer writes to: opens stores on it, reads raw rows back."""

    kind: str
    url: str

    def open(self) -> Store:
        return open_store(self.url, Path("/nonexistent-unused"))

    def rows(self, sql: str) -> list[tuple[Any, ...]]:
        if self.kind == "sqlite":
            with contextlib.closing(sqlite3.connect(self.url.removeprefix("sqlite://"))) as conn:
                return conn.execute(sql).fetchall()
        with psycopg.connect(self.url) as conn:
            return conn.execute(sql).fetchall()

    def bodies(self) -> list[bytes]:
        return [bytes(body) for (body,) in self.rows("SELECT body FROM events ORDER BY pk")]


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    if request.param == "sqlite":
        return Backend("sqlite", f"sqlite://{tmp_path / 'db' / 'collector.db'}")
    return Backend("postgres", request.getfixturevalue("postgres_url"))


@pytest.fixture
def store(backend: Backend) -> Iterator[Store]:
    opened = backend.open()
    try:
        yield opened
    finally:
        opened.close()


def expected_sessions(lines: Sequence[bytes]) -> dict[str, dict[str, Any]]:
    """The sessions aggregates recounted from the imported lines."""
    out: dict[str, dict[str, Any]] = {}
    for line in lines:
        d = validate_envelope(orjson.loads(line), "expected")
        s = out.setdefault(
            d.session_id,
            {"events": 0, "errors": 0, "llm_calls": 0, "input_tokens": 0, "output_tokens": 0},
        )
        s["events"] += 1
        s["errors"] += d.type == "error"
        s["llm_calls"] += d.type == "llm_call"
        s["input_tokens"] += d.input_tokens
        s["output_tokens"] += d.output_tokens
        s["user_id"] = d.user_id
    return out


def assert_imported_once(backend: Backend, store: Store, legacy: Legacy) -> None:
    assert Counter(backend.bodies()) == Counter(legacy.lines)
    assert store.check() == []
    sessions = store.sessions(SessionQuery(limit=1000), ALL).sessions
    got = {s["session_id"]: s for s in sessions}
    for session_id, want in expected_sessions(legacy.lines).items():
        assert {k: got[session_id][k] for k in want} == want, session_id
    assert len(got) == len(expected_sessions(legacy.lines))
    for key, _ in legacy.batches:
        if key is not None:
            assert store.has_key(key)
    for sha, (content_type, data) in legacy.attachments.items():
        blob = store.attachment(sha, ALL)
        assert blob is not None
        assert (blob.content_type, blob.data) == (content_type, data)


# -- tests ----------------------------------------------------------------------------------


def test_every_committed_event_is_imported_once_with_its_bytes(
    tmp_path: Path, backend: Backend, store: Store
) -> None:
    """Keyed and key-less batches, several days/users/sessions, attachments; the crash
    debris of the 0.1 collector is not imported; the 0.1 dir is left byte for byte."""
    legacy = build_legacy(tmp_path / "v01")
    add_crash_debris(legacy)
    before = snapshot(legacy.path)

    result = import_data_dir(legacy.path, store)

    assert result == ImportResult(batches=4, events=9, duplicates=0, attachments=2, skipped=0)
    assert_imported_once(backend, store, legacy)
    assert not store.has_key("key-torn")
    # Original keys are kept: a 0.1 client retrying an old batch is answered "duplicate".
    retry = [validate_envelope(_ev(1, session_id="s-a", ts=_ts(20, 1)), "retry")]
    assert store.append(retry, "key-1", Ingest("tok")).duplicate
    # A key-less batch got a key derived from its journal record.
    journal = (legacy.path / "journal.jsonl").read_bytes().splitlines(keepends=True)
    assert store.has_key(derived_key(journal[1]))
    page = store.events(EventQuery(limit=100), ALL).events
    assert {e["ingest"]["token"] for e in page} == {"imported-0.1"}
    assert snapshot(legacy.path) == before


def test_a_second_import_stores_nothing_new(tmp_path: Path, backend: Backend, store: Store) -> None:
    legacy = build_legacy(tmp_path / "v01", many=6)
    first = import_data_dir(legacy.path, store)
    assert (first.batches, first.events, first.duplicates) == (10, 15, 0)

    second = import_data_dir(legacy.path, store)

    assert second == ImportResult(batches=0, events=0, duplicates=10, attachments=0, skipped=0)
    assert_imported_once(backend, store, legacy)


class CrashingStore:
    """A store whose ``append`` fails (as a dying process would) after ``after`` batches."""

    def __init__(self, inner: Store, after: int) -> None:
        self._inner = inner
        self._left = after

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def append(
        self, events: Sequence[DecodedEvent], key: str | None, ingest: Ingest
    ) -> AppendResult:
        if self._left == 0:
            raise RuntimeError("crash injected")
        self._left -= 1
        return self._inner.append(events, key, ingest)


def test_an_import_cut_short_resumes_to_exactly_once(
    tmp_path: Path, backend: Backend, store: Store
) -> None:
    legacy = build_legacy(tmp_path / "v01", many=8)
    with pytest.raises(RuntimeError, match="crash injected"):
        import_data_dir(legacy.path, cast(Store, CrashingStore(store, after=5)))
    assert len(backend.bodies()) == sum(len(lines) for _, lines in legacy.batches[:5])

    result = import_data_dir(legacy.path, store)

    assert (result.batches, result.duplicates, result.skipped) == (12 - 5, 5, 0)
    assert_imported_once(backend, store, legacy)


_KILLED_CHILD = textwrap.dedent(
    """
    import os, signal, sys
    from pathlib import Path
    from telemetry_client.collector.store import sqlite
    from telemetry_client.collector.store.importer import import_data_dir
    from telemetry_client.collector.store.open import open_store

    after = int(sys.argv[3])
    real = sqlite.SqliteStore._store_batch

    def store_batch(self, conn, *args):
        global after
        real(self, conn, *args)
        if after == 0:  # rows written, transaction open: die before COMMIT
            os.kill(os.getpid(), signal.SIGKILL)
        after -= 1

    sqlite.SqliteStore._store_batch = store_batch
    import_data_dir(Path(sys.argv[1]), open_store(sys.argv[2], Path(sys.argv[1])))
    """
)


def test_a_process_killed_inside_a_transaction_resumes_to_exactly_once(tmp_path: Path) -> None:
    """SQLite: the importer's process is SIGKILLed with a batch's rows written but not
    committed; the next run stores that batch and the rest, each once."""
    legacy = build_legacy(tmp_path / "v01", many=8)
    backend = Backend("sqlite", f"sqlite://{tmp_path / 'db' / 'collector.db'}")
    done = subprocess.run(
        [sys.executable, "-c", _KILLED_CHILD, str(legacy.path), backend.url, "6"],
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == -9, done.stderr.decode()
    assert len(backend.bodies()) == sum(len(lines) for _, lines in legacy.batches[:6])

    store = backend.open()
    try:
        result = import_data_dir(legacy.path, store)
        assert (result.batches, result.duplicates) == (12 - 6, 6)
        assert_imported_once(backend, store, legacy)
    finally:
        store.close()


def test_a_damaged_batch_is_skipped_and_imported_once_repaired(
    tmp_path: Path, backend: Backend, store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    legacy = build_legacy(tmp_path / "v01")
    partition = (
        legacy.path
        / "events"
        / "2026-11-22"
        / next(p.name for p in (legacy.path / "events" / "2026-11-22").iterdir())
    )
    good = partition.read_bytes()
    partition.write_bytes(good.replace(b'"type":"chat_turn"', b'"type":"Chat_Turn"'))

    result = import_data_dir(legacy.path, store)

    assert (result.batches, result.skipped) == (3, 1)
    assert not store.has_key("key-3")  # batch 3 has the bad line (event 8)
    assert 'field "type" must be snake_case' in caplog.text
    assert "2026-11-22/" in caplog.text

    partition.write_bytes(good)
    again = import_data_dir(legacy.path, store)
    assert (again.batches, again.duplicates, again.skipped) == (1, 3, 0)
    assert_imported_once(backend, store, legacy)


def test_a_batch_missing_on_disk_is_skipped(tmp_path: Path, store: Store) -> None:
    legacy = build_legacy(tmp_path / "v01")
    bob = legacy.path / "events" / "2026-11-20" / "bob.jsonl"
    bob.unlink()
    result = import_data_dir(legacy.path, store)
    assert (result.batches, result.skipped) == (3, 1)  # the key-less batch 2 wrote bob's file


def test_garbage_between_journal_records_refuses_to_import(tmp_path: Path, store: Store) -> None:
    legacy = build_legacy(tmp_path / "v01")
    journal = legacy.path / "journal.jsonl"
    journal.write_bytes(b"garbage\n" + journal.read_bytes())
    with pytest.raises(StorageError, match="line 1 is not a commit record"):
        import_data_dir(legacy.path, store)
    with pytest.raises(StorageError, match=r"not a 0\.1 collector data dir"):
        import_data_dir(tmp_path / "nothing-here", store)


def test_import_alongside_a_running_01_collector(
    tmp_path: Path, backend: Backend, store: Store
) -> None:
    """The 0.1 collector holds its lock and keeps accepting batches: the import reads
    what is committed, and the next run picks up what came since."""
    legacy = build_legacy(tmp_path / "v01")
    running = Storage.open(legacy.path)
    try:
        before = snapshot(legacy.path)
        assert import_data_dir(legacy.path, store).batches == 4
        assert snapshot(legacy.path) == before
        legacy.append(running, "key-late", [_ev(50, session_id="s-late")])
        result = import_data_dir(legacy.path, store)
        assert (result.batches, result.duplicates) == (1, 4)
    finally:
        running.close()
    assert_imported_once(backend, store, legacy)


def test_progress_reports_every_n_events_and_at_the_end(
    tmp_path: Path, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    legacy = build_legacy(tmp_path / "v01", many=40)
    monkeypatch.setattr(importer, "PROGRESS_EVERY", 10)
    calls: list[tuple[int, int]] = []
    import_data_dir(legacy.path, store, progress=lambda done, total: calls.append((done, total)))
    total = len(legacy.lines)
    assert total == 49
    assert calls[-1] == (total, total)
    assert {t for _, t in calls} == {total}
    assert [d // 10 for d, _ in calls] == [1, 2, 3, 4, 4]
