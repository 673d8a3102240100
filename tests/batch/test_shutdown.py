"""Shutdown: what is in memory at ``close()`` reaches the disk in large batches, or is counted.

``close()`` writes before it uploads, and is not held to the per-batch limits then; what
still cannot be written (deadline, failing disk) is counted as lost persistently (reason
``shutdown``): ``status`` shows it and a later client reports it to the collector. One log
line says how many events are left on disk, and where.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from conftest import CollectorHandle, wait_until

from telemetry_client import Spool, TelemetryClient, TelemetrySettings
from telemetry_client._internal import fs as spool_fs
from telemetry_client._internal.log import RateLimitedLogger
from telemetry_client.batch import Batcher
from telemetry_client.batch.shutdown import SHUTDOWN_BATCH_BYTES
from telemetry_client.cli.main import status_dict
from telemetry_client.encode import Encoder
from telemetry_client.encode.redact import Redactor

SettingsFactory = Callable[..., TelemetrySettings]
_BATCH_TMP = re.compile(r"^[0-9a-f]{32}\.\d+\.tmp$")


def _encoder(spool: Spool) -> Encoder:
    return Encoder(
        redactor=Redactor(enabled=False),
        app="tests",
        app_version="1",
        machine_id="m",
        user_id="u",
        session_id="s",
        put_blob=spool.put_blob,
        inline_max_bytes=1 << 20,
        attachment_max_bytes=1 << 24,
        log=RateLimitedLogger(),
    )


def _batcher(
    spool: Spool, *, batch_max_events: int = 20, batch_max_bytes: int = 1 << 20
) -> Batcher:
    return Batcher(
        spool=spool,
        encoder_factory=lambda: _encoder(spool),
        batch_max_events=batch_max_events,
        batch_max_bytes=batch_max_bytes,
        linger_s=0.25,
        buffer_max=1_000_000,
        log=RateLimitedLogger(),
    )


def _record(i: int, payload: str = "") -> tuple[Any, ...]:
    return ("burst", {"i": i, "payload": payload}, time.time_ns(), i + 1, None, None)


def _spooled(spool: Spool) -> list[tuple[int, list[dict[str, Any]]]]:
    """Every sealed batch as (raw JSONL bytes, events), oldest first."""
    out = [
        (len(raw), [orjson.loads(line) for line in raw.splitlines()])
        for _name, raw in spool.iter_batches_newest_first()
    ]
    return out[::-1]


def _fail_batch_writes(monkeypatch: pytest.MonkeyPatch, failing: threading.Event) -> None:
    """While ``failing`` is set, creating a batch file in ``tmp/`` fails (read-only area).

    The loss ledger (``state/``) stays writable: the disk refuses batches, not the counters.
    """
    real = spool_fs.open_new

    def open_new(path: Path) -> int:
        if failing.is_set() and path.parent.name == "tmp" and _BATCH_TMP.match(path.name):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
        return real(path)

    monkeypatch.setattr(spool_fs, "open_new", open_new)


def _refused_port() -> int:
    """A 127.0.0.1 port nothing listens on (connections are refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


# --- every event on disk or counted -----------------------------------------------------------


def test_burst_of_small_batches_is_all_on_disk_after_close(
    settings_factory: SettingsFactory,
) -> None:
    """TELEMETRY_BATCH_MAX_EVENTS=20, 60,000 events in a burst, default shutdown timeout:
    after close() every event is on disk (each once) and, the disk being healthy, none is
    counted as dropped."""
    n = 60_000
    settings = settings_factory(batch_max_events=20)
    assert settings.shutdown_timeout == 5.0  # the default
    client = TelemetryClient(settings)
    for i in range(n):
        client.emit("burst", {"i": i, "payload": "x" * 40})
    result = client.close()
    print(f"\nclose() after a 60k burst with 20-event batches: {result.elapsed_s:.2f} s")

    spool = client.spool
    on_disk, dropped = spool.pending().events, spool.dropped().events
    assert on_disk + dropped == n
    assert dropped == 0
    assert result.ok
    assert (result.pending_events, result.dropped_events) == (0, 0)
    assert client.stats()["dropped"] == 0
    seen = sorted(e["data"]["i"] for _size, batch in _spooled(spool) for e in batch)
    assert seen == list(range(n))
    assert spool.check() == []


def test_close_seals_the_buffer_in_batches_beyond_the_batch_limit(tmp_path: Path) -> None:
    """What close() finds in memory is sealed in as few batches as the byte bound allows,
    not in batch_max_events pieces: 2,000 buffered events with a 20-event limit -> 1 batch,
    in emission order."""
    spool = Spool(tmp_path / "spool", max_bytes=1 << 30, fsync=True)
    batcher = _batcher(spool, batch_max_events=20)
    for i in range(2000):
        batcher.buffer.append(_record(i))

    outcome = batcher.close(timeout=30)

    assert (outcome.written_events, outcome.written_batches, outcome.lost_events) == (2000, 1, 0)
    assert outcome.drained
    ((_size, events),) = _spooled(spool)
    assert [e["data"]["i"] for e in events] == list(range(2000))
    assert spool.check() == []


def test_shutdown_batches_stay_within_a_quarter_of_a_small_spool_cap(tmp_path: Path) -> None:
    """On a small spool the shutdown batches are bounded by a quarter of the cap, so none
    exceeds the cap alone (and is dropped whole): everything fits, nothing is lost."""
    cap = 1 << 20
    spool = Spool(tmp_path / "spool", max_bytes=cap, fsync=False)
    batcher = _batcher(spool, batch_max_events=20, batch_max_bytes=16 << 10)
    limit = cap // 4
    assert limit < SHUTDOWN_BATCH_BYTES
    n = 600
    for i in range(n):  # ~1 KB of hex each: ~600 KB of JSONL, barely compressible
        batcher.buffer.append(_record(i, os.urandom(500).hex()))

    outcome = batcher.close(timeout=30)

    assert (outcome.written_events, outcome.lost_events) == (n, 0)
    batches = _spooled(spool)
    assert len(batches) >= 3
    longest_line = max(len(orjson.dumps(e)) + 1 for _size, b in batches for e in b)
    assert all(size <= limit + longest_line for size, _events in batches)
    assert sorted(e["data"]["i"] for _size, b in batches for e in b) == list(range(n))
    assert spool.dropped().events == 0
    assert spool.check() == []


# --- what cannot be written is counted, persistently, and reported ------------------------------


def test_events_a_failing_disk_refuses_at_close_are_counted_and_reported(
    settings_factory: SettingsFactory,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    collector: CollectorHandle,
) -> None:
    """The disk refuses batches at close(): the events are counted as dropped (reason
    "shutdown") in the result, stats() and the spool's ledger (status shows them), an error
    is logged, and once the disk is back the next client reports them to the collector as
    a telemetry_dropped event."""
    caplog.set_level(logging.WARNING, logger="telemetry_client")
    failing = threading.Event()
    _fail_batch_writes(monkeypatch, failing)
    # Nothing is cut before close(): below the batch size and within the linger.
    settings = settings_factory(batch_max_events=1000, linger_ms=1000)
    client = TelemetryClient(settings)
    client.start()
    failing.set()
    for i in range(500):
        client.emit("at_shutdown", {"i": i})
    result = client.close()

    assert not result.ok
    assert result.dropped_events == 500
    assert client.stats()["dropped"] == 500
    spool = client.spool
    assert spool.pending().events == 0
    assert spool.dropped().events == 500
    assert list(spool.dropped().by_reason) == ["shutdown"]
    status = status_dict(settings)
    assert status["dropped_events"] == 500
    assert status["dropped_by_reason"]["shutdown"]["events"] == 500
    messages = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert any(
        "500 events could not be written" in m and str(settings.resolved_spool_dir) in m
        for m in messages
    ), messages

    failing.clear()  # the disk is back; the next client (with an endpoint) reports the loss
    later = TelemetryClient(
        settings_factory(endpoint=collector.events_url, token=collector.token)
    ).start()
    try:

        def reports() -> list[dict[str, Any]]:
            found = collector.query()["events"]
            return [e for e in found if e["type"] == "telemetry_dropped"]

        (report,) = wait_until(reports, timeout=30, what="a telemetry_dropped report")
    finally:
        later.close()
    assert report["data"]["reason"] == "shutdown"
    assert report["data"]["events"] == 500


def test_a_write_failing_after_close_gave_up_is_still_counted(tmp_path: Path) -> None:
    """A batch stuck in a disk write past close()'s deadline is not forgotten: when the
    write finally fails, the thread that held it counts its events as lost (reason
    "shutdown"); the events close() drained meanwhile are on disk."""
    spool = Spool(tmp_path / "spool", max_bytes=1 << 30, fsync=False)
    batcher = _batcher(spool, batch_max_events=20)
    entered, release = threading.Event(), threading.Event()
    real_seal = spool.seal

    def seal(body: bytes, n_events: int, **kw: Any) -> Any:
        if threading.current_thread().name == "telemetry-spool-sealer":
            entered.set()
            release.wait(60)
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        return real_seal(body, n_events, **kw)

    spool.seal = seal  # type: ignore[method-assign]
    batcher.start()
    for i in range(20):  # one full batch: cut by the writer, taken by the sealer, stuck
        batcher.buffer.append(_record(i))
    batcher.wake.set()
    assert entered.wait(30)
    for i in range(20, 25):
        batcher.buffer.append(_record(i))

    outcome = batcher.close(timeout=0.5)

    assert (outcome.written_events, outcome.lost_events) == (5, 0)
    assert not outcome.drained  # one batch still in flight
    assert batcher.pending_events() == 20
    release.set()
    wait_until(lambda: spool.dropped().events, what="the stuck batch counted")
    assert spool.dropped().by_reason["shutdown"]["events"] == 20
    assert batcher.pending_events() == 0
    assert batcher.describe()["dropped"] == 20
    assert spool.pending().events == 5


def test_close_waits_for_the_batch_the_sealer_is_writing(tmp_path: Path) -> None:
    """A batch the sealer thread took before close() began is on disk when close() returns:
    close() says drained, nothing is pending, nothing is lost (a fork test caught close()
    returning while that write was still in flight)."""
    spool = Spool(tmp_path / "spool", max_bytes=1 << 30, fsync=False)
    batcher = _batcher(spool, batch_max_events=20)
    entered, release = threading.Event(), threading.Event()
    real_seal = spool.seal

    def seal(body: bytes, n_events: int, **kw: Any) -> Any:
        me = threading.current_thread().name
        if me == "telemetry-spool-sealer" and not entered.is_set():
            entered.set()
            assert release.wait(60)
            writer = batcher._thread
            assert writer is not None
            writer.join(60)  # finish only after the writer thread has drained and ended
        elif me == "telemetry-spool-writer":
            release.set()  # close()'s drain is under way
        return real_seal(body, n_events, **kw)

    spool.seal = seal  # type: ignore[method-assign]
    batcher.start()
    for i in range(20):  # one full batch: cut by the writer, taken by the sealer, held
        batcher.buffer.append(_record(i))
    batcher.wake.set()
    assert entered.wait(30)
    for i in range(20, 25):
        batcher.buffer.append(_record(i))

    outcome = batcher.close(timeout=60)

    assert (outcome.written_events, outcome.lost_events) == (5, 0)
    assert outcome.drained
    assert batcher.pending_events() == 0
    assert spool.pending().events == 25
    assert spool.dropped().events == 0


# --- large shutdown batches and the collector's limits ------------------------------------------


def test_a_shutdown_batch_over_the_collectors_body_limit_is_split_on_upload(
    tmp_path: Path, settings_factory: SettingsFactory, collector_factory: Any
) -> None:
    """A large batch sealed at shutdown that exceeds the collector's request limit (413)
    is split by the uploader: every event is stored once."""
    spool_dir = tmp_path / "spool"
    spool = Spool(spool_dir, max_bytes=1 << 30, fsync=False)
    batcher = _batcher(spool, batch_max_events=20)
    n = 2000
    for i in range(n):  # ~200 KB compressed in one batch
        batcher.buffer.append(_record(i, os.urandom(64).hex()))
    assert batcher.close(timeout=30).written_batches == 1
    ((name, _raw),) = list(spool.iter_batches_newest_first())
    body_limit = 64 << 10
    assert name.n_bytes > body_limit

    collector = collector_factory(max_body_bytes=body_limit)
    client = TelemetryClient(
        settings_factory(spool_dir=spool_dir, endpoint=collector.events_url, token=collector.token)
    ).start()
    try:
        assert client.flush_sync(timeout=60)
    finally:
        client.close()
    stored = [e for e in collector.query()["events"] if e["type"] == "burst"]
    assert sorted(e["data"]["i"] for e in stored) == list(range(n))
    assert client.stats()["split_batches"] >= 1


# --- one line about what is left on disk -----------------------------------------------------


def test_close_logs_how_many_events_are_left_on_disk_and_where(
    settings_factory: SettingsFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """The collector is down at shutdown: one WARNING line says how many events (and
    batches) are left, in which spool directory, and what will send them."""
    caplog.set_level(logging.INFO, logger="telemetry_client")
    settings = settings_factory(
        endpoint=f"http://127.0.0.1:{_refused_port()}/api/v1/events",
        token="t-" + "0" * 20,
        shutdown_timeout=0.3,
    )
    client = TelemetryClient(settings)
    for i in range(3):
        client.emit("left", {"i": i})
    result = client.close()

    assert not result.ok
    lines = [r for r in caplog.records if "left in" in r.getMessage()]
    assert len(lines) == 1
    assert lines[0].levelno == logging.WARNING
    assert lines[0].getMessage() == (
        f"telemetry: 3 events (1 batch) left in {settings.resolved_spool_dir}; they will be"
        " sent by the next client or `telemetry-client flush`"
    )


def test_close_in_spool_only_mode_says_where_events_are_kept(
    settings_factory: SettingsFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """Without an endpoint, keeping events on disk is the expected outcome: one INFO line
    (not a warning) says how many and where."""
    caplog.set_level(logging.INFO, logger="telemetry_client")
    settings = settings_factory(batch_max_events=1000)
    client = TelemetryClient(settings)
    for i in range(1234):
        client.emit("kept", {"i": i})
    assert client.close()

    lines = [r for r in caplog.records if "kept in" in r.getMessage()]
    assert len(lines) == 1
    assert lines[0].levelno == logging.INFO
    message = lines[0].getMessage()
    assert message.startswith("telemetry: 1,234 events (")
    assert str(settings.resolved_spool_dir) in message
    assert "TELEMETRY_ENDPOINT" in message


def test_close_says_nothing_when_everything_was_delivered(
    settings_factory: SettingsFactory,
    caplog: pytest.LogCaptureFixture,
    collector: CollectorHandle,
) -> None:
    """Nothing left on disk after close(): no line about leftovers."""
    caplog.set_level(logging.INFO, logger="telemetry_client")
    settings = settings_factory(endpoint=collector.events_url, token=collector.token)
    client = TelemetryClient(settings)
    for i in range(10):
        client.emit("delivered", {"i": i})
    assert client.close(timeout=30)
    assert client.spool.pending().events == 0
    assert not [r for r in caplog.records if "left in" in r.getMessage()]
