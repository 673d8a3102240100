"""Reference collector startup work: retention and the 0.1 data dir import.

Retention runs at startup (and hourly) when ``retention_days`` > 0 and deletes what is
older than the cutoff. A data dir written by the 0.1 collector (``journal.jsonl``) is
imported on first start, before the first request is served, and not again unless the
journal changed; ``telemetry-collector import DIR`` does the same from the command line.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest
from conftest import CollectorHandle, collector_event, wait_until

from telemetry_client.collector._decode import validate_envelope
from telemetry_client.collector._lifecycle import IMPORT_MARKER
from telemetry_client.collector.store.files import Storage

NDJSON = {"Content-Type": "application/x-ndjson"}
HANG_BOUND_S = 120
BLOB = b"a 0.1 attachment\n" * 10
SHA = hashlib.sha256(BLOB).hexdigest()
SECRET = "SECRETPW"  # noqa: S105 - a fake password that must never be printed


def rfc3339(when: dt.datetime) -> str:
    return when.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def post(handle: CollectorHandle, events: list[dict[str, Any]]) -> None:
    body = b"".join(orjson.dumps(e) + b"\n" for e in events)
    with handle.client() as http:
        response = http.post("/api/v1/events", content=body, headers=NDJSON)
    assert response.json() == {"accepted": len(events), "duplicate": False}


# -- retention ---------------------------------------------------------------------------


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest) -> str | None:
    """None (SQLite in the data dir) or a fresh PostgreSQL database's URL."""
    if request.param == "sqlite":
        return None
    url: str = request.getfixturevalue("postgres_url")
    return url


def test_retention_deletes_old_events_and_sessions_at_startup(
    collector_factory: Any, caplog: pytest.LogCaptureFixture, database_url: str | None
) -> None:
    """Events (and sessions) older than retention_days go at startup; newer ones stay."""
    caplog.set_level(logging.INFO, logger="telemetry_client.collector")
    now = dt.datetime.now(dt.timezone.utc)
    keep = collector_factory(retention_days=0, database_url=database_url)  # 0: keep forever
    old = [
        collector_event(i, session_id="old", ts=rfc3339(now - dt.timedelta(days=40, seconds=i)))
        for i in range(3)
    ]
    edge = [collector_event(5, session_id="edge", ts=rfc3339(now - dt.timedelta(days=29)))]
    new = [collector_event(9, session_id="new", ts=rfc3339(now))]
    post(keep, old + edge + new)
    assert keep.query()["total"] == 5
    assert keep.state.retention_passes == 0
    keep.stop()

    handle = collector_factory(retention_days=30, database_url=database_url)
    wait_until(lambda: handle.state.retention_passes >= 1, what="the startup retention pass")
    result = handle.state.last_retention
    assert (result.events, result.sessions) == (3, 1)
    assert sorted(e["seq"] for e in handle.query()["events"]) == [5, 9]
    with handle.client() as http:
        sessions = http.get("/api/v1/sessions").json()["sessions"]
    assert sorted(s["session_id"] for s in sessions) == ["edge", "new"]
    assert handle.state.metrics.value("retention_deleted_total", "events") == 3
    assert "retention (30 days, older than" in caplog.text
    assert "deleted 3 events, 1 sessions" in caplog.text
    assert handle.state.store.check() == []


# -- the 0.1 data dir --------------------------------------------------------------------


def write_legacy(path: Path, batches: list[tuple[str | None, list[dict[str, Any]]]]) -> None:
    """Write batches (and BLOB) with the 0.1 file store itself, as a 0.1 collector did."""
    storage = Storage.open(path)
    try:
        if storage.attachments.info(SHA) is None:
            with storage.attachments.stage() as staging:
                staging.write(BLOB)
                assert staging.commit(SHA, "text/plain")
        for key, events in batches:
            decoded = [validate_envelope(e, f"event {i}") for i, e in enumerate(events)]
            assert storage.events.append(decoded, key).accepted == len(events)
    finally:
        storage.close()


LEGACY = [
    (
        "old-key-1",
        [collector_event(1), collector_event(2, data={"f": {"$attachment": {"sha256": SHA}}})],
    ),
    (None, [collector_event(3, session_id="s-2")]),
]


def test_a_01_data_dir_is_imported_on_first_start_once(
    collector_factory: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The first start imports the 0.1 events and attachments before serving: a 0.1
    client retrying an old batch is answered duplicate; restarts do not import again
    unless the journal grew, and then only the new batch is stored."""
    caplog.set_level(logging.INFO, logger="telemetry_client.collector")
    data_dir = tmp_path / "collector"
    write_legacy(data_dir, LEGACY)
    handle = collector_factory()
    events = handle.query()["events"]  # no waiting: imported before the first request
    assert [e["seq"] for e in events] == [1, 2, 3]
    assert {orjson.dumps(e["ingest"]) for e in events} == {b'{"token":"imported-0.1","team":null}'}
    with handle.client() as http:
        retry = http.post(
            "/api/v1/events",
            content=orjson.dumps(collector_event(1)) + b"\n",
            headers={**NDJSON, "Idempotency-Key": "old-key-1"},
        )
        assert retry.json() == {"accepted": 0, "duplicate": True}
        blob = http.get(f"/api/v1/attachments/{SHA}")
        assert (blob.content, blob.headers["Content-Type"]) == (BLOB, "text/plain")
    assert (data_dir / IMPORT_MARKER).stat().st_mode & 0o777 == 0o600
    assert "imported the 0.1 data dir" in caplog.text
    handle.stop()

    caplog.clear()
    again = collector_factory()
    assert again.query()["total"] == 3
    assert "importing the 0.1 data dir" not in caplog.text  # the marker says: done
    again.stop()

    write_legacy(data_dir, [("old-key-4", [collector_event(4)])])  # the journal grew
    grown = collector_factory()
    assert [e["seq"] for e in grown.query()["events"]] == [1, 2, 3, 4]
    assert "1 batches (1 events) imported, 2 already imported" in caplog.text
    assert grown.state.store.check() == []


def _cli(*argv: str, **environ: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TELEMETRY_COLLECTOR_")}
    return subprocess.run(
        [sys.executable, "-m", "telemetry_client.collector", "import", *argv],
        capture_output=True,
        text=True,
        env={**env, **environ},
        timeout=HANG_BOUND_S,
        check=False,
    )


def test_the_import_command_imports_once_and_prints_a_summary(
    tmp_path: Path, collector_factory: Any
) -> None:
    """`telemetry-collector import DIR --database-url sqlite:///...`: progress on stderr,
    one summary line on stdout; a second run imports nothing; a collector on that
    database serves the events."""
    legacy = tmp_path / "legacy"
    write_legacy(legacy, LEGACY)
    db = tmp_path / "new" / "events.db"
    first = _cli(str(legacy), "--database-url", f"sqlite://{db}")
    assert first.returncode == 0, first.stderr
    assert first.stdout == (
        f"telemetry-collector import: {legacy}: 2 batches (3 events) imported,"
        " 0 already imported, 1 attachments copied, 0 skipped\n"
    )
    assert "telemetry-collector import: 3 of 3 events" in first.stderr
    second = _cli(str(legacy), TELEMETRY_COLLECTOR_DATABASE_URL=f"sqlite://{db}")
    assert second.returncode == 0, second.stderr
    assert "0 batches (0 events) imported, 2 already imported" in second.stdout
    handle = collector_factory(data_dir=tmp_path / "served", database_url=f"sqlite://{db}")
    assert [e["seq"] for e in handle.query()["events"]] == [1, 2, 3]


def test_the_import_command_into_the_data_dir_by_default(tmp_path: Path) -> None:
    """Without --database-url the target is SQLite in --data-dir, else in DIR itself."""
    legacy = tmp_path / "legacy"
    write_legacy(legacy, LEGACY)
    assert _cli(str(legacy)).returncode == 0
    assert (legacy / "collector.db").is_file()
    assert _cli(str(legacy), "--data-dir", str(tmp_path / "elsewhere")).returncode == 0
    assert (tmp_path / "elsewhere" / "collector.db").is_file()


def test_the_import_command_refuses_a_non_01_dir_and_hides_passwords(tmp_path: Path) -> None:
    """Not a 0.1 data dir: exit 2; an unreachable database: exit 1, password never shown."""
    empty = _cli(str(tmp_path))
    assert empty.returncode == 2
    assert "is not a 0.1 collector data dir" in empty.stderr
    legacy = tmp_path / "legacy"
    write_legacy(legacy, LEGACY)
    url = f"postgresql://u:{SECRET}@127.0.0.1:1/x"
    for done in (
        _cli(str(legacy), "--database-url", url),
        _cli(str(legacy), TELEMETRY_COLLECTOR_DATABASE_URL=url),
        _cli(str(legacy), "--database-url", f"mysql://u:{SECRET}@h/x"),
        _cli(str(legacy), "--database-url", url, "--bogus"),
    ):
        assert done.returncode in (1, 2), done.stderr
        assert done.stdout == ""
        assert SECRET not in done.stderr
        assert "***" in done.stderr or "--bogus" in done.stderr
