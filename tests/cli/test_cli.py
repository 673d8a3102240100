"""The ``telemetry-client`` CLI run as a real subprocess against a spool a client filled."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from conftest import COLLECTOR_TOKEN, CollectorHandle, child_env

from telemetry_client import Spool, TelemetryClient, TelemetrySettings, events
from telemetry_client._internal import ids as _ids

STATUS_KEYS = {
    "enabled",
    "endpoint",
    "spool_dir",
    "pending_batches",
    "pending_events",
    "pending_bytes",
    "oldest_pending_age_s",
    "dropped_events",
    "dead_letter_batches",
    "disabled_until",
}
ENVELOPE_KEYS = set(events.ENVELOPE_FIELDS)
DAY_NS = 86_400 * 10**9
TYPES = ("alpha", "beta", "gamma")
N_EVENTS = 30  # seq 1..30, type TYPES[(seq - 1) % 3]


@pytest.fixture(autouse=True)
def _no_telemetry_env(clean_env: None) -> None:
    """Only the settings a test passes apply: no TELEMETRY_* or DO_NOT_TRACK from outside."""


def run_cli(
    spool_dir: Path, *args: str, extra_env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``python -m telemetry_client ARGS`` with TELEMETRY_SPOOL_DIR=spool_dir, stdin not a TTY."""
    env = child_env(spool_dir, **(extra_env or {}))
    return subprocess.run(
        [sys.executable, "-m", "telemetry_client", *args],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def free_port() -> int:
    """A port on 127.0.0.1 nobody listens on (bound by the OS, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def status_json(spool_dir: Path) -> dict[str, Any]:
    proc = run_cli(spool_dir, "status", "--json")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == 1, proc.stdout
    info = orjson.loads(lines[0])
    assert isinstance(info, dict)
    return info


def open_spool(spool_dir: Path) -> Spool:
    return Spool(spool_dir, max_bytes=256 * 1024**2, fsync=False)


@pytest.fixture
def spool_dir(tmp_path: Path) -> Path:
    """A spool holding N_EVENTS events (types cycling through TYPES) in several batches."""
    root = tmp_path / "spool"
    settings = TelemetrySettings(
        spool_dir=root,
        endpoint=None,
        enabled=True,
        do_not_track=False,
        fsync="off",
        batch_max_events=7,
        user_id="cli-user",
    )
    with TelemetryClient(settings) as client:
        for seq in range(1, N_EVENTS + 1):
            client.emit(TYPES[(seq - 1) % 3], {"n": seq, "text": f"event number {seq}"})
        assert client.flush_sync(timeout=10).ok
    return root


def age_all_batches(root: Path, days: float) -> None:
    """Re-seal every pending batch under an id (and day directory) ``days`` in the past."""
    spool = open_spool(root)
    claims = []
    while (claim := spool.claim()) is not None:
        claims.append(claim)
    for claim in claims:
        old_id = _ids.batch_id(time.time_ns() - int(days * DAY_NS))
        spool.seal(claim.body, claim.n_events, batch_id=old_id)
        spool.ack(claim)


# --- status ---------------------------------------------------------------------------------------


def test_status_json_has_the_contract_keys_and_counts(spool_dir: Path) -> None:
    """status --json prints one object with the keys of README "CLI" describing the spool."""
    info = status_json(spool_dir)
    assert set(info) >= STATUS_KEYS
    pending = open_spool(spool_dir).pending()
    assert info["enabled"] is True
    assert info["endpoint"] is None
    assert info["spool_dir"] == str(spool_dir)
    assert info["pending_events"] == N_EVENTS
    assert info["pending_batches"] == pending.batches
    assert info["pending_batches"] >= N_EVENTS // 7
    assert info["pending_bytes"] == pending.bytes
    assert info["pending_bytes"] > 0
    assert isinstance(info["oldest_pending_age_s"], (int, float))
    assert 0 <= info["oldest_pending_age_s"] < 600
    assert info["dropped_events"] == 0
    assert info["dead_letter_batches"] == 0
    assert info["disabled_until"] is None


def test_status_human_shows_spool_and_pending(spool_dir: Path) -> None:
    """status without --json prints readable lines: enabled, spool dir and pending counts."""
    proc = run_cli(spool_dir, "status")
    assert proc.returncode == 0, proc.stderr
    assert "enabled" in proc.stdout
    assert str(spool_dir) in proc.stdout
    batches = open_spool(spool_dir).pending().batches
    assert f"{N_EVENTS} events in {batches} batches" in proc.stdout


def test_status_on_a_missing_spool_does_not_create_it(tmp_path: Path) -> None:
    """status, status --json and tail on a spool that does not exist leave it uncreated."""
    missing = tmp_path / "nowhere" / "spool"
    info = status_json(missing)
    assert info["pending_events"] == 0
    assert info["pending_batches"] == 0
    assert info["oldest_pending_age_s"] is None
    for args in (("status",), ("tail", "-n", "5"), ("purge", "--all", "--yes")):
        proc = run_cli(missing, *args)
        assert proc.returncode == 0, (args, proc.stderr)
    assert not missing.exists()
    assert not missing.parent.exists()


# --- tail -----------------------------------------------------------------------------------------


def test_tail_json_prints_the_newest_envelopes_in_order(spool_dir: Path) -> None:
    """tail -n 4 --json prints the 4 newest events, one valid envelope per line, oldest first."""
    proc = run_cli(spool_dir, "tail", "-n", "4", "--json")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == 4
    tail = [orjson.loads(line) for line in lines]
    for event in tail:
        assert set(event) == ENVELOPE_KEYS
        assert event["user_id"] == "cli-user"
    assert [e["seq"] for e in tail] == list(range(N_EVENTS - 3, N_EVENTS + 1))
    assert [e["data"]["n"] for e in tail] == list(range(N_EVENTS - 3, N_EVENTS + 1))


def test_tail_filters_by_type(spool_dir: Path) -> None:
    """tail --type T prints only (the newest) events of type T."""
    proc = run_cli(spool_dir, "tail", "--type", "beta", "-n", "100", "--json")
    assert proc.returncode == 0, proc.stderr
    tail = [orjson.loads(line) for line in proc.stdout.splitlines()]
    expected = [seq for seq in range(1, N_EVENTS + 1) if TYPES[(seq - 1) % 3] == "beta"]
    assert [e["seq"] for e in tail] == expected
    assert {e["type"] for e in tail} == {"beta"}

    proc = run_cli(spool_dir, "tail", "--type", "gamma", "-n", "2", "--json")
    assert [orjson.loads(line)["seq"] for line in proc.stdout.splitlines()] == [27, 30]


def test_tail_human_prints_one_line_per_event(spool_dir: Path) -> None:
    """tail -n 3 (no --json) prints 3 readable lines naming each event's type."""
    proc = run_cli(spool_dir, "tail", "-n", "3")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == 3
    for line, seq in zip(lines, range(N_EVENTS - 2, N_EVENTS + 1), strict=True):
        assert TYPES[(seq - 1) % 3] in line
        assert f"event number {seq}" in line


def test_tail_of_unknown_type_prints_nothing(spool_dir: Path) -> None:
    """tail --type for a type never emitted prints nothing and exits 0."""
    proc = run_cli(spool_dir, "tail", "--type", "nope", "--json")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == ""


def test_tail_says_on_stderr_how_many_are_pending_and_where_uploaded_events_are(
    spool_dir: Path,
) -> None:
    """When the spool holds fewer events than asked for, stderr says how many are pending
    and that uploaded events are at the collector; --json stdout stays pure envelopes."""
    proc = run_cli(spool_dir, "tail", "-n", "100", "--json")
    assert proc.returncode == 0, proc.stderr
    assert len([orjson.loads(line) for line in proc.stdout.splitlines()]) == N_EVENTS
    (hint,) = proc.stderr.splitlines()
    assert f"({N_EVENTS} pending)" in hint
    assert "uploaded events are at the collector" in hint
    assert "tail --collector" in hint

    enough = run_cli(spool_dir, "tail", "-n", "5", "--json")
    assert enough.stderr == ""  # it had all that was asked for: nothing to explain


def test_tail_after_upload_hints_and_tail_collector_reads_the_collector(
    spool_dir: Path, collector: CollectorHandle
) -> None:
    """Once everything is uploaded, tail prints nothing on stdout and says on stderr that
    0 are pending; tail --collector prints the newest events stored at the collector, in
    the same formats (envelopes with --json, readable lines without), --type filtering."""
    env = {"TELEMETRY_ENDPOINT": collector.events_url, "TELEMETRY_TOKEN": COLLECTOR_TOKEN}
    flushed = run_cli(spool_dir, "flush", extra_env=env)
    assert flushed.returncode == 0, flushed.stdout + flushed.stderr

    local = run_cli(spool_dir, "tail", "--json", extra_env=env)
    remote = run_cli(spool_dir, "tail", "--collector", "-n", "4", "--json", extra_env=env)
    typed = run_cli(
        spool_dir, "tail", "--collector", "--type", "gamma", "-n", "2", "--json", extra_env=env
    )
    human = run_cli(spool_dir, "tail", "--collector", "-n", "3", extra_env=env)

    assert local.returncode == 0, local.stderr
    assert local.stdout == ""
    assert "(0 pending)" in local.stderr
    assert "uploaded events are at the collector" in local.stderr
    assert remote.returncode == 0, remote.stderr
    tail = [orjson.loads(line) for line in remote.stdout.splitlines()]
    assert [e["seq"] for e in tail] == list(range(N_EVENTS - 3, N_EVENTS + 1))
    assert all(set(e) - {"ingest"} == ENVELOPE_KEYS for e in tail)  # + the collector stamp
    assert [orjson.loads(line)["seq"] for line in typed.stdout.splitlines()] == [27, 30]
    assert human.returncode == 0, human.stderr
    lines = human.stdout.splitlines()
    assert len(lines) == 3
    assert "event number 30" in lines[-1]
    for proc in (remote, typed, human):
        assert COLLECTOR_TOKEN not in proc.stdout + proc.stderr


def test_tail_collector_failures_exit_1_with_one_line(
    spool_dir: Path, collector: CollectorHandle
) -> None:
    """tail --collector: a refused token, a wrong path and a closed port each give exit 1
    and one stderr line saying what to check; no endpoint at all is a configuration error."""
    cases = {
        "check TELEMETRY_TOKEN": (collector.events_url, "wrong-token"),
        "check the path of TELEMETRY_ENDPOINT": (collector.url, COLLECTOR_TOKEN),
        f"cannot connect to 127.0.0.1:{(port := free_port())}": (
            f"http://127.0.0.1:{port}/api/v1/events",
            COLLECTOR_TOKEN,
        ),
    }
    for words, (url, token) in cases.items():
        env = {"TELEMETRY_ENDPOINT": url, "TELEMETRY_TOKEN": token}
        proc = run_cli(spool_dir, "tail", "--collector", "--json", extra_env=env)
        assert proc.returncode == 1, (words, proc.stderr)
        assert proc.stdout == ""
        (line,) = proc.stderr.splitlines()
        assert words in line
    unset = run_cli(spool_dir, "tail", "--collector")
    assert unset.returncode == 2
    assert "TELEMETRY_ENDPOINT" in unset.stderr


# --- flush ----------------------------------------------------------------------------------------


def test_flush_fails_fast_when_connections_are_refused(spool_dir: Path) -> None:
    """A collector that is down (nothing listens on the port): flush gives up after a few
    refused connections, long before --timeout, naming host and port; exit 1, data kept."""
    port = free_port()
    env = {"TELEMETRY_ENDPOINT": f"http://127.0.0.1:{port}/api/v1/events"}
    proc = run_cli(spool_dir, "flush", "--timeout", "3600", extra_env=env)  # hang bound: 60 s
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert f"cannot connect to 127.0.0.1:{port} (connection refused" in proc.stdout
    assert "--wait" in proc.stdout
    assert f"{N_EVENTS} events" in proc.stdout
    assert "still pending" in proc.stdout
    assert "Traceback" not in proc.stderr
    assert open_spool(spool_dir).pending().events == N_EVENTS


def test_flush_wait_keeps_trying_a_refusing_collector_until_the_timeout(spool_dir: Path) -> None:
    """flush --wait does not give up on refused connections: it says it is waiting and
    keeps trying until --timeout has passed; exit 1, data kept."""
    port = free_port()
    env = {
        "TELEMETRY_ENDPOINT": f"http://127.0.0.1:{port}/api/v1/events",
        "TELEMETRY_UPLOAD_BACKOFF_INITIAL": "20ms",
        "TELEMETRY_UPLOAD_BACKOFF_MAX": "100ms",
    }
    start = time.monotonic()
    proc = run_cli(spool_dir, "flush", "--wait", "--timeout", "2", extra_env=env)
    elapsed = time.monotonic() - start
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert f"cannot connect to 127.0.0.1:{port} (connection refused); waiting" in proc.stdout
    assert "attempts" not in proc.stdout  # never gave up early
    assert "still pending: the endpoint is failing" in proc.stdout
    assert elapsed >= 2.0  # a lower bound: it waited out its whole --timeout
    assert open_spool(spool_dir).pending().events == N_EVENTS


def test_ctrl_c_during_flush_exits_130_with_one_line_saying_what_is_pending(
    spool_dir: Path,
) -> None:
    """SIGINT while flush waits for a collector: exit 130, no traceback, and one stderr
    line saying how many events are still pending (they stay spooled)."""
    env = child_env(spool_dir, TELEMETRY_ENDPOINT=f"http://127.0.0.1:{free_port()}/api/v1/events")
    proc = subprocess.Popen(
        [sys.executable, "-m", "telemetry_client", "flush", "--wait", "--timeout", "600"],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    watchdog = threading.Timer(60, proc.kill)  # hang bound only
    watchdog.start()
    try:
        assert proc.stdout is not None
        seen = []
        for line in proc.stdout:  # synchronise on its output: it is waiting now
            seen.append(line)
            if "waiting for it (--wait)" in line:
                break
        assert seen, "flush exited without output"
        assert "waiting" in seen[-1], seen
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate()
    finally:
        watchdog.cancel()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, (out, err)
    assert "Traceback" not in err
    assert "KeyboardInterrupt" not in err
    *before, line = err.splitlines()
    # Before the interrupt: only the uploader's (rate-limited) warning about the retries.
    assert all(x.startswith("telemetry upload failed") for x in before), before
    assert "interrupted" in line
    assert f"{N_EVENTS} events" in line
    assert "still pending" in line
    assert open_spool(spool_dir).pending().events == N_EVENTS


# --- purge ----------------------------------------------------------------------------------------


def test_purge_all_yes_deletes_everything(spool_dir: Path) -> None:
    """purge --all --yes removes every pending batch."""
    proc = run_cli(spool_dir, "purge", "--all", "--yes")
    assert proc.returncode == 0, proc.stderr
    assert str(N_EVENTS) in proc.stdout
    info = status_json(spool_dir)
    assert info["pending_events"] == 0
    assert info["pending_batches"] == 0
    assert open_spool(spool_dir).claim() is None


def test_purge_without_yes_in_a_non_tty_refuses(spool_dir: Path) -> None:
    """purge --all without --yes and no TTY refuses (non-zero exit) and deletes nothing."""
    before = sorted(p.name for p in spool_dir.rglob("*.jsonl.zst"))
    proc = run_cli(spool_dir, "purge", "--all")
    assert proc.returncode != 0
    assert "refus" in (proc.stdout + proc.stderr).lower()
    assert sorted(p.name for p in spool_dir.rglob("*.jsonl.zst")) == before
    assert status_json(spool_dir)["pending_events"] == N_EVENTS


def test_purge_older_than_deletes_only_old_batches(spool_dir: Path, tmp_path: Path) -> None:
    """purge --older-than 1 --yes removes batches older than a day and keeps recent ones."""
    age_all_batches(spool_dir, days=3)  # within the 7-day retention, older than 1 day
    with TelemetryClient(
        TelemetrySettings(spool_dir=spool_dir, endpoint=None, enabled=True, fsync="off")
    ) as client:
        client.emit("fresh", {"n": 1})
        assert client.flush_sync(timeout=10).ok
    assert status_json(spool_dir)["pending_events"] == N_EVENTS + 1

    proc = run_cli(spool_dir, "purge", "--older-than", "1", "--yes")
    assert proc.returncode == 0, proc.stderr
    info = status_json(spool_dir)
    assert info["pending_events"] == 1
    assert info["pending_batches"] == 1
    tail = run_cli(spool_dir, "tail", "--json").stdout.splitlines()
    assert [orjson.loads(line)["type"] for line in tail] == ["fresh"]


def test_purge_dead_letter_deletes_only_dead_letters(spool_dir: Path) -> None:
    """purge --dead-letter --yes removes dead-lettered batches and keeps pending ones."""
    spool = open_spool(spool_dir)
    claim = spool.claim()
    assert claim is not None
    dead_events = claim.n_events
    spool.dead_letter(claim)
    info = status_json(spool_dir)
    assert info["dead_letter_batches"] == 1
    assert info["pending_events"] == N_EVENTS - dead_events

    proc = run_cli(spool_dir, "purge", "--dead-letter", "--yes")
    assert proc.returncode == 0, proc.stderr
    info = status_json(spool_dir)
    assert info["dead_letter_batches"] == 0
    assert info["pending_events"] == N_EVENTS - dead_events


# --- configuration errors -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [("status",), ("status", "--json"), ("tail", "-n", "3"), ("purge", "--all", "--yes")],
    ids=" ".join,
)
def test_bad_configuration_exits_2_naming_the_variable(spool_dir: Path, args: tuple[str]) -> None:
    """An invalid TELEMETRY_* value makes any command exit 2 with one stderr line naming it."""
    proc = run_cli(spool_dir, *args, extra_env={"TELEMETRY_SPOOL_MAX_BYTES": "banana"})
    assert proc.returncode == 2
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "TELEMETRY_SPOOL_MAX_BYTES" in lines[0]
    assert "banana" in lines[0]
    assert "Traceback" not in proc.stderr
    assert open_spool(spool_dir).pending().events == N_EVENTS


# --- demo -----------------------------------------------------------------------------------------


def test_demo_runs_the_whole_path_on_loopback(tmp_path: Path) -> None:
    """``demo`` spools a session offline, starts the collector, flushes, and reads back
    every event exactly once, with the attachment's hash verified; exit 0."""
    proc = run_cli(tmp_path / "unused-spool", "demo")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert "$ telemetry-client status" in out
    assert "$ telemetry-client flush" in out
    assert "pending:          17 events" in out
    assert "18 events stored for session demo-session-1 (expected 18)" in out
    assert "sha256 verified" in out
    assert "demo OK: every event arrived exactly once" in out
    assert "hunter2" not in out  # the demo's password is redacted before it is spooled
    assert not (tmp_path / "unused-spool").exists()


def test_demo_leaves_its_spool_drained_when_asked_to_keep_it(tmp_path: Path) -> None:
    """demo --spool-dir DIR uses DIR; after the demo nothing is left pending there."""
    target = tmp_path / "demo-spool"
    proc = run_cli(tmp_path / "unused", "demo", "--spool-dir", str(target))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    info = status_json(target)
    assert info["pending_events"] == 0
    assert info["last_upload"]["outcome"] == "ok"
