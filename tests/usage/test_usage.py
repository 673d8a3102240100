"""Cross-process LLM usage stats: the store, its bounds, the client hook and ``stats``.

Store-level tests inject ``now``; client-level tests emit ``events.LLMCall`` through a real
``TelemetryClient``; the concurrency test runs 8 real writer processes on one spool and
reads the totals back with ``telemetry-client stats --format json``.
"""

from __future__ import annotations

import errno
import io
import logging
import os
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson
import pytest
from _procs.usage_writer import call as writer_call
from conftest import child_env, wait_until

from telemetry_client import Spool, TelemetryClient, TelemetrySettings, cli, events, usage
from telemetry_client._internal import fs as _fs
from telemetry_client._internal.log import RateLimitedLogger
from telemetry_client.usage import series as usage_series
from telemetry_client.usage.recorder import UsageRecorder
from telemetry_client.usage.store import UsageRecord, UsageSnapshot, UsageStore

PROCS = Path(__file__).parent.parent / "_procs"
NOW = 1_763_719_200.0  # 2025-11-21 10:00:00 UTC, a whole minute
WRITERS = 8
CALLS_PER_WRITER = 120
SettingsFactory = Callable[..., TelemetrySettings]


def rec(ts: float, provider: str = "openai", model: str = "gpt-4.1", **fields: Any) -> UsageRecord:
    """A usage record with small default counts (1 byte up, 2 down, 3+4 tokens)."""
    values: dict[str, Any] = {
        "bytes_up": 1,
        "bytes_down": 2,
        "input_tokens": 3,
        "output_tokens": 4,
        "total_tokens": 7,
    }
    values.update(fields)
    return UsageRecord(ts, provider, model, **values)


def llm_call(**overrides: Any) -> events.LLMCall:
    fields: dict[str, Any] = {
        "provider": "openai",
        "model": "gpt-4.1",
        "status": 200,
        "request_bytes": 1000,
        "response_bytes": 3000,
        "input_tokens": 10,
        "output_tokens": 20,
    }
    fields.update(overrides)
    return events.LLMCall(**fields)


@pytest.fixture
def store(tmp_path: Path) -> UsageStore:
    """A usage store in a fresh (not yet created) spool directory."""
    return UsageStore(usage.usage_dir(tmp_path / "spool"))


@pytest.fixture
def make_client(settings_factory: SettingsFactory) -> Iterator[Callable[..., TelemetryClient]]:
    """``make(**settings)`` -> a started client (fsync off, 1 h log cooldown); closed after."""
    made: list[TelemetryClient] = []

    def make(**overrides: Any) -> TelemetryClient:
        overrides.setdefault("fsync", "off")
        overrides.setdefault("log_cooldown_s", 3600)
        client = TelemetryClient(settings_factory(**overrides)).start()
        made.append(client)
        return client

    yield make
    for client in made:
        client.close(timeout=10)


def store_of(client: TelemetryClient) -> UsageStore:
    return UsageStore(usage.usage_dir(client.settings.resolved_spool_dir))


def totals(store: UsageStore, window_s: float = usage.MAX_WINDOW_S, **kw: Any) -> dict[str, Any]:
    summary: dict[str, Any] = usage.summarize(store.read(), window_s, **kw).to_dict()
    return summary


def run_cli(spool_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``python -m telemetry_client ARGS`` with TELEMETRY_SPOOL_DIR=spool_dir."""
    return subprocess.run(
        [sys.executable, "-m", "telemetry_client", *args],
        env=child_env(spool_dir),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def warnings_about(caplog: pytest.LogCaptureFixture, text: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if text in r.getMessage()]


@contextmanager
def umask(mask: int) -> Iterator[None]:
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


# --- 1. many processes, exact totals ----------------------------------------------------------


def _expected_totals() -> dict[tuple[str, str], list[int]]:
    """Sums [requests, errors, up, down, in, out, total] per (provider, model) of all writers."""
    out: dict[tuple[str, str], list[int]] = {}
    for index in range(WRITERS):
        for i in range(CALLS_PER_WRITER):
            ev = writer_call(index, i)
            assert ev.model is not None
            assert ev.input_tokens is not None
            assert ev.output_tokens is not None
            assert ev.status is not None
            sums = out.setdefault((ev.provider, ev.model), [0] * 7)
            row = [
                1,
                int(ev.status >= 400),
                ev.request_bytes,
                ev.response_bytes,
                ev.input_tokens,
                ev.output_tokens,
                ev.input_tokens + ev.output_tokens,
            ]
            for j, v in enumerate(row):
                sums[j] += v
    return out


FIELDS = ("requests", "errors", "bytes_up", "bytes_down", "input_tokens", "output_tokens")


def test_eight_processes_updating_concurrently_give_exact_totals(tmp_path: Path) -> None:
    """8 writer processes merge at once (every 20 calls and at close): `stats` totals are exact."""
    spool_dir = tmp_path / "spool"
    go = tmp_path / "go"
    env = child_env(spool_dir, TELEMETRY_FSYNC="off", TELEMETRY_LINGER_MS="50")
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                str(PROCS / "usage_writer.py"),
                str(w),
                str(CALLS_PER_WRITER),
                str(go),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            cwd=tmp_path,
        )
        for w in range(WRITERS)
    ]
    try:
        for w, proc in enumerate(procs):
            assert proc.stdout is not None
            line = proc.stdout.readline()  # "ready", or EOF if the child died
            assert line == b"ready\n", f"writer {w} did not start: {proc.communicate()[1]!r}"
        go.touch()
        for w, proc in enumerate(procs):
            out, err = proc.communicate(timeout=60)
            assert proc.returncode == 0, f"writer {w}: {err.decode()[-2000:]}"
            report = orjson.loads(out.splitlines()[-1])
            stats = report["stats"]
            assert stats["usage_merged"] == CALLS_PER_WRITER, stats
            assert (stats["usage_pending"], stats["usage_errors"]) == (0, 0), stats
            assert stats["usage_merges"] >= CALLS_PER_WRITER // 20, stats
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()

    result = run_cli(spool_dir, "stats", "--format", "json")
    assert result.returncode == 0, result.stderr
    summary = orjson.loads(result.stdout)
    expected = _expected_totals()
    grand = [sum(v[j] for v in expected.values()) for j in range(7)]
    assert summary["total"]["requests"] == WRITERS * CALLS_PER_WRITER
    assert [summary["total"][f] for f in FIELDS] == grand[:6]
    assert summary["total"]["total_tokens"] == grand[6]
    got = {(m["provider"], m["model"]): [m[f] for f in FIELDS] for m in summary["models"]}
    assert got == {k: v[:6] for k, v in expected.items()}
    assert {m["key"] for m in summary["models"]} == {
        "openai:gpt-4.1",
        "anthropic:claude-sonnet-4",
        "ollama:llama3:8b",
    }
    assert Spool(spool_dir, max_bytes=1 << 30).check() == []  # 0700 dirs, 0600 files
    assert [n for n in os.listdir(spool_dir / "usage") if n.endswith(".tmp")] == []


# --- 2. the store: pruning, RPM, coalescing, bounds -----------------------------------------------


def test_merge_prunes_entries_older_than_the_retention(store: UsageStore) -> None:
    """Calls older than 24 h are dropped at the next merge; younger ones stay, summed exactly."""
    first = store.merge([rec(NOW - 90_000), rec(NOW - 86_000), rec(NOW - 10)], now=NOW)
    assert (first.pruned, first.calls) == (1, 2)
    second = store.merge([rec(NOW - 5)], now=NOW)
    assert (second.pruned, second.calls) == (0, 3)
    later = store.merge([], now=NOW + 1_000)  # NOW - 86_000 is now older than 24 h
    assert later.pruned == 1
    assert later.calls == 2
    assert totals(store, now=NOW + 1_000)["total"]["requests"] == 2


def test_summary_counts_only_the_sliding_window(store: UsageStore) -> None:
    """A 1 h window counts calls from the last hour only; 3 h counts the older one too."""
    store.merge([rec(NOW - 7_000), rec(NOW - 1_800), rec(NOW - 1)], now=NOW)
    assert totals(store, 3_600, now=NOW)["total"]["requests"] == 2
    assert totals(store, 3 * 3_600, now=NOW)["total"]["requests"] == 3
    assert totals(store, 60, now=NOW)["total"]["requests"] == 1
    assert totals(store, 3_600, now=NOW + 7_200)["total"]["requests"] == 0


def test_rpm_is_requests_per_minute_over_the_window(store: UsageStore) -> None:
    """120 calls in the last hour: rpm 2.0 over 60 m; 45 of them in the last 15 m: rpm 3.0."""
    records = [rec(NOW - 3_500 + i * 25) for i in range(75)]  # before the last 15 minutes
    records += [rec(NOW - 890 + i * 19) for i in range(45)]  # inside the last 15 minutes
    store.merge(records, now=NOW)
    hour = totals(store, 3_600, now=NOW)["total"]
    assert (hour["requests"], hour["rpm"]) == (120, 2.0)
    quarter = totals(store, 900, now=NOW)["total"]
    assert (quarter["requests"], quarter["rpm"]) == (45, 3.0)


def test_coalescing_past_the_threshold_keeps_totals_exact(store: UsageStore) -> None:
    """12,000 calls over 20 h: the oldest become minute buckets, every total stays exact."""
    n = 12_000
    records = [
        rec(
            NOW - 72_000 + i * 6,
            model=f"m{i % 3}",
            bytes_up=i,
            input_tokens=i % 11,
            error=i % 5 == 0,
        )
        for i in range(n)
    ]
    store.merge(records[:6_000], now=NOW)
    result = store.merge(records[6_000:], now=NOW)
    assert result.coalesced == n - usage.COALESCE_TO
    assert result.calls == usage.COALESCE_TO
    assert 0 < result.minutes <= 3 * usage.MAX_MINUTES
    assert result.bytes < 1_000_000
    snap = store.read()
    oldest_call = min(s.calls[0][0] for s in snap.series.values())
    newest_bucket = max(max(s.minutes) for s in snap.series.values())
    assert newest_bucket <= oldest_call  # the oldest calls were the ones coalesced
    day = totals(store, now=NOW)["total"]
    assert day["requests"] == n
    assert day["errors"] == n // 5
    assert day["bytes_up"] == sum(range(n))
    assert day["input_tokens"] == sum(i % 11 for i in range(n))
    assert day["bytes_down"] == 2 * n
    per_model = {m["model"]: m["requests"] for m in totals(store, now=NOW)["models"]}
    assert per_model == {"m0": n // 3, "m1": n // 3, "m2": n // 3}
    # A bucket counts when its minute starts inside the window; recent calls stay exact.
    assert totals(store, 3_600, now=NOW)["total"]["requests"] == 600


def test_minute_buckets_are_pruned_and_bounded(
    store: UsageStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Buckets older than 24 h go at the next merge; a series never holds more than MAX_MINUTES."""
    key = ("openai", "gpt-4.1")
    store.merge([rec(NOW - 86_000 + i * 7) for i in range(12_000)], now=NOW)
    before = store.read().series[key].minutes  # the oldest 4500 calls, 7 s apart: ~525 buckets
    assert len(before) > 500
    later = NOW + 20_000  # the retention now starts in the middle of the buckets
    result = store.merge([], now=later)
    after = store.read().series[key].minutes
    assert result.pruned == sum(1 for m in before if m < later - usage.RETENTION_S) > 0
    assert after == {m: v for m, v in before.items() if m >= later - usage.RETENTION_S}
    monkeypatch.setattr(usage_series, "MAX_MINUTES", 10)  # the hard bound (clock jumps)
    store.merge([], now=later)
    assert sorted(store.read().series[key].minutes) == sorted(after)[-10:]


def test_too_many_models_fold_into_other_keeping_totals(
    store: UsageStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past MAX_SERIES provider:model pairs, the least recently used fold into (other)."""
    monkeypatch.setattr(usage_series, "MAX_SERIES", 3)
    store.merge([rec(NOW - 100 + i, model=f"m{i}") for i in range(5)], now=NOW)
    snap = store.read()
    assert set(snap.series) == {("openai", "m4"), ("openai", "m3"), usage_series.OTHER}
    assert len(snap.series[usage_series.OTHER].calls) == 3
    assert totals(store, now=NOW)["total"]["requests"] == 5


def test_lock_file_store_and_directory_are_owner_only(store: UsageStore) -> None:
    """Even under a 0277 umask: usage/ is 0700, stats.json and stats.lock are 0600."""
    with umask(0o277):
        store.merge([rec(NOW)], now=NOW)
    assert stat.S_IMODE(os.stat(store.dir).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(store.path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(store.lock_path).st_mode) == 0o600
    assert sorted(os.listdir(store.dir)) == ["stats.json", "stats.lock"]


def test_leftover_temp_file_of_a_dead_writer_is_removed(store: UsageStore) -> None:
    """A temp file a killed writer left behind is removed by the next merge (under the lock)."""
    store.merge([rec(NOW)], now=NOW)
    leftover = store.dir / ".stats.json.12345.deadbeef.tmp"
    leftover.write_bytes(b"half a store")
    store.merge([rec(NOW)], now=NOW)
    assert not leftover.exists()
    assert totals(store, now=NOW)["total"]["requests"] == 2


def test_merge_gives_up_on_a_held_lock_after_its_timeout(store: UsageStore) -> None:
    """Another process holding stats.lock: merge raises TimeoutError, the store is unchanged."""
    store.merge([rec(NOW)], now=NOW)
    before = store.path.read_bytes()
    # Another open file description holds the lock, as another process would.
    with _fs.flock(store.lock_path), pytest.raises(TimeoutError):
        store.merge([rec(NOW)], now=NOW, timeout=0.05)
    assert store.path.read_bytes() == before


def test_record_from_event_is_total_and_flags_failures() -> None:
    """from_event never raises: odd field values count as 0; status >= 400 or error = failed."""
    ok = UsageRecord.from_event(llm_call(total_tokens=None), 5.0)
    assert ok == UsageRecord(5.0, "openai", "gpt-4.1", 1000, 3000, 10, 20, 30, False)
    assert UsageRecord.from_event(llm_call(status=429), 0).error
    assert UsageRecord.from_event(llm_call(status=None, error="timeout"), 0).error
    odd = events.LLMCall(
        provider=None,  # type: ignore[arg-type]
        model=7,  # type: ignore[arg-type]
        status="500",  # type: ignore[arg-type]
        request_bytes=-5,
        response_bytes=float("nan"),  # type: ignore[arg-type]
        input_tokens="12",  # type: ignore[arg-type]
        total_tokens=99,
    )
    assert UsageRecord.from_event(odd, 1.0) == UsageRecord(
        1.0, "unknown", "", 0, 0, 0, 0, 99, False
    )


def test_cache_and_reasoning_tokens_are_kept_through_coalescing_and_shown(
    store: UsageStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Cache reads, cache writes and reasoning tokens of each call are summed exactly (also
    once coalesced into minute buckets) and shown by every format."""
    call = llm_call(
        input_tokens=33,
        output_tokens=9,
        cache_read_input_tokens=5,
        cache_creation_input_tokens=7,
        reasoning_tokens=4,
    )
    record = UsageRecord.from_event(call, NOW - 100)
    assert (record.total_tokens, record.cache_read_tokens) == (42, 5)
    assert (record.cache_write_tokens, record.reasoning_tokens) == (7, 4)
    monkeypatch.setattr(usage_series, "MAX_CALLS", 2)
    monkeypatch.setattr(usage_series, "COALESCE_TO", 1)
    result = store.merge([record._replace(ts=NOW - 100 + i) for i in range(3)], now=NOW)
    assert (result.coalesced, result.calls) == (2, 1)
    summary = usage.summarize(store.read(), 3600, now=NOW)
    total = summary.to_dict()["total"]
    assert (total["input_tokens"], total["output_tokens"], total["total_tokens"]) == (99, 27, 126)
    assert (total["cache_read_tokens"], total["cache_write_tokens"]) == (15, 21)
    assert total["reasoning_tokens"] == 12
    header, everything = usage.format_text(summary).splitlines()[1:3]
    assert header.split()[-5:] == ["cache", "read", "cache", "write", "reasoning"]
    assert everything.split()[-3:] == ["15", "21", "12"]
    assert usage.format_tmux(summary).endswith(
        "tok=126 cached=15 cache_write=21 reasoning=12 | openai:gpt-4.1 reqs=3"
    )


def test_a_version_1_store_is_read_with_zero_cache_counts_and_upgraded(store: UsageStore) -> None:
    """A store written before the cache/reasoning counts (version 1) keeps its totals; the
    next merge rewrites it as version 2."""
    _fs.ensure_dir(store.dir)
    store.path.write_bytes(
        orjson.dumps(
            {
                "version": 1,
                "updated": NOW,
                "series": [
                    {
                        "provider": "openai",
                        "model": "gpt-4.1",
                        "calls": [[NOW - 10, 1, 2, 3, 4, 7, 0]],
                        "minutes": [[int(NOW) - 600, 2, 1, 10, 20, 30, 40, 70]],
                    }
                ],
            }
        )
    )
    before = totals(store, now=NOW)["total"]
    assert (before["requests"], before["errors"], before["total_tokens"]) == (3, 1, 77)
    assert before["cache_read_tokens"] == before["reasoning_tokens"] == 0
    result = store.merge([rec(NOW - 5, cache_read_tokens=2)], now=NOW)
    assert result.reset is None
    assert orjson.loads(store.path.read_bytes())["version"] == 2
    after = totals(store, now=NOW)["total"]
    assert (after["requests"], after["total_tokens"], after["cache_read_tokens"]) == (4, 84, 2)


# --- 3. corrupt stores -------------------------------------------------------------------------

CORRUPT = {
    "garbage": b"\x00\xffnot json at all",
    "truncated": b'{"version": 1, "updated": 1.0, "series": [{"provider": "openai", "mo',
    "empty": b"",
    "wrong_version": b'{"version": 99, "series": []}',
    "series_not_list": b'{"version": 1, "series": {"a": 1}}',
    "call_not_list": (
        b'{"version":1,"series":[{"provider":"p","model":"m","calls":["x"],"minutes":[]}]}'
    ),
    "call_wrong_type": (
        b'{"version":1,"series":[{"provider":"p","model":"m",'
        b'"calls":[[1.5,"12",0,0,0,0,0]],"minutes":[]}]}'
    ),
    "call_negative": (
        b'{"version":1,"series":[{"provider":"p","model":"m",'
        b'"calls":[[1.5,-1,0,0,0,0,0]],"minutes":[]}]}'
    ),
    "call_too_short": (
        b'{"version":1,"series":[{"provider":"p","model":"m","calls":[[1.5,1]],"minutes":[]}]}'
    ),
    "bucket_bool": (
        b'{"version":1,"series":[{"provider":"p","model":"m","calls":[],'
        b'"minutes":[[60,true,0,0,0,0,0,0]]}]}'
    ),
    "provider_not_str": (
        b'{"version":1,"series":[{"provider":1,"model":"m","calls":[],"minutes":[]}]}'
    ),
    "top_level_list": b"[1, 2, 3]",
}


@pytest.mark.parametrize("content", list(CORRUPT.values()), ids=list(CORRUPT))
def test_corrupt_store_starts_over(store: UsageStore, content: bytes) -> None:
    """An unreadable store is moved aside (0600) and started over; merge reports why."""
    _fs.ensure_dir(store.dir)
    store.path.write_bytes(content)
    snap = store.read()
    assert (snap.series, snap.exists) == ({}, True)
    assert snap.problem
    result = store.merge([rec(NOW)], now=NOW)
    assert result.reset
    assert store.corrupt_path.read_bytes() == content
    assert stat.S_IMODE(os.stat(store.corrupt_path).st_mode) == 0o600
    assert store.read().problem is None
    assert totals(store, now=NOW)["total"]["requests"] == 1


def test_corrupt_store_under_a_client_warns_once_and_never_raises(
    make_client: Callable[..., TelemetryClient], caplog: pytest.LogCaptureFixture
) -> None:
    """Corrupted twice: emit/flush/close never raise, counts start over, one warning (cooldown)."""
    caplog.set_level(logging.WARNING, logger="telemetry_client")
    client = make_client()
    st = store_of(client)
    _fs.ensure_dir(st.dir)
    st.path.write_bytes(b"{ truncated")
    client.emit(llm_call())
    client.flush_sync(timeout=10)
    st.path.write_bytes(b"garbage again")
    client.emit(llm_call())
    client.emit(llm_call())
    result = client.close(timeout=10)
    assert result.ok
    stats = client.stats()
    assert (stats["usage_resets"], stats["usage_errors"], stats["usage_merged"]) == (2, 0, 3)
    assert totals(st)["total"]["requests"] == 2  # the second reset dropped the first call
    assert len(warnings_about(caplog, "unreadable")) == 1


def test_stats_cli_on_a_corrupt_store_shows_zeros_and_says_why(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, clean_env: None, capsys: Any
) -> None:
    """`stats` on garbage: exit 0, zeros, one line on stderr; the file is left for the writers."""
    spool_dir = tmp_path / "spool"
    st = UsageStore(usage.usage_dir(spool_dir))
    _fs.ensure_dir(st.dir)
    st.path.write_bytes(b"garbage")
    monkeypatch.setenv("TELEMETRY_SPOOL_DIR", str(spool_dir))
    out = io.StringIO()
    assert cli.main(["stats", "--format", "json"], out=out) == 0
    assert orjson.loads(out.getvalue())["total"]["requests"] == 0
    assert "unreadable" in capsys.readouterr().err
    assert st.path.read_bytes() == b"garbage"


# --- 4. the client hook ------------------------------------------------------------------------


def test_llm_calls_reach_the_store_in_the_background_without_flush(
    make_client: Callable[..., TelemetryClient],
) -> None:
    """Within ~1 s of emit() the call is in the shared store, merged by `telemetry-usage`."""
    client = make_client()
    st = store_of(client)
    client.emit(llm_call(status=503))
    client.emit("chat_turn_like", {"not": "an LLM call"})
    summary = wait_until(
        lambda: totals(st)["total"]["requests"] == 1 and totals(st), what="call merged"
    )
    assert summary["total"]["errors"] == 1
    assert summary["total"]["bytes_up"] == 1000
    names = {t.name for t in threading.enumerate()}
    assert "telemetry-usage" in names
    stats = client.stats()
    assert (stats["usage_merged"], stats["usage_pending"]) == (1, 0)


def test_emit_never_touches_the_store_on_the_callers_thread(
    make_client: Callable[..., TelemetryClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    """emit() only queues: every merge runs on the usage thread or in flush/close."""
    threads: list[str] = []
    real = UsageStore.merge

    def spy(self: UsageStore, *args: Any, **kwargs: Any) -> Any:
        threads.append(threading.current_thread().name)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(UsageStore, "merge", spy)
    client = make_client()
    caller = threading.current_thread().name
    for _ in range(50):
        client.emit(llm_call())
        assert threads.count(caller) == 0
    wait_until(lambda: client.stats()["usage_merged"] == 50, what="50 merged")
    assert set(threads) == {"telemetry-usage"}
    client.emit(llm_call())
    client.flush_sync(timeout=10)  # flush merges on the caller's thread
    assert client.stats()["usage_merged"] == 51


def test_no_usage_thread_or_file_without_llm_calls(
    make_client: Callable[..., TelemetryClient],
) -> None:
    """A client that emits no LLMCall has no usage thread and writes no usage store."""
    client = make_client()
    client.emit("tool_call_like", {"x": 1})
    client.close(timeout=10)
    assert client._usage._thread is None
    assert not usage.usage_dir(client.settings.resolved_spool_dir).exists()


def turn(**fields: Any) -> events.ChatTurn:
    """A chat turn naming provider and model (as in the README quickstart)."""
    values: dict[str, Any] = {"provider": "openai", "model": "gpt-4.1", "user_prompt": "hi"}
    values.update(fields)
    return events.ChatTurn(**values)


def test_chat_turns_naming_provider_and_model_count_in_stats(
    make_client: Callable[..., TelemetryClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The README quickstart's chat turns (provider and model, no recorded LLM call) count as
    requests in ``stats``, with their tokens; turns lacking provider or model do not."""
    client = make_client()
    client.emit(turn(assistant_final="hello", latency_ms=812))
    client.emit(turn(input_tokens=412, output_tokens=96, status="error"))
    client.emit(events.ChatTurn(model="gpt-4.1", user_prompt="no provider"))
    client.emit(events.ChatTurn(provider="openai", user_prompt="no model"))
    assert client.close(timeout=10).ok
    summary = totals(store_of(client))
    total = summary["total"]
    assert (total["requests"], total["errors"]) == (2, 1)
    assert (total["input_tokens"], total["output_tokens"], total["total_tokens"]) == (412, 96, 508)
    assert [m["key"] for m in summary["models"]] == ["openai:gpt-4.1"]
    monkeypatch.setenv("TELEMETRY_SPOOL_DIR", str(client.settings.resolved_spool_dir))
    out = io.StringIO()
    assert cli.main(["stats"], out=out) == 0
    assert "no LLM calls" not in out.getvalue()
    assert "openai:gpt-4.1" in out.getvalue()


def test_chat_turn_already_captured_as_llm_call_is_not_counted_twice(
    make_client: Callable[..., TelemetryClient],
) -> None:
    """A chat turn is skipped when its session recorded an llm_call for the same provider and
    model (any case) since the session's previous turn for them; otherwise it counts."""
    client = make_client()
    client.emit(llm_call(), session_id="a")  # an instrumented call, then its turn: once
    client.emit(turn(provider="OpenAI", model="GPT-4.1", input_tokens=999), session_id="a")
    for _ in range(3):  # a tool loop: three calls, one turn
        client.emit(llm_call(), session_id="b")
    client.emit(turn(input_tokens=999), session_id="b")
    client.emit(llm_call(), session_id="c")  # two sessions interleaved
    client.emit(llm_call(), session_id="d")
    client.emit(turn(input_tokens=999), session_id="c")
    client.emit(turn(input_tokens=999), session_id="d")
    client.emit(turn(input_tokens=7), session_id="a")  # no call of its own since: counts
    client.emit(turn(provider="anthropic", model="claude", input_tokens=8), session_id="b")
    assert client.close(timeout=10).ok
    assert client.stats()["usage_turns_covered"] == 4
    summary = totals(store_of(client))
    assert summary["total"]["requests"] == 6 + 2
    assert summary["total"]["input_tokens"] == 6 * 10 + 7 + 8  # the calls' own figures
    assert {m["key"]: m["requests"] for m in summary["models"]} == {
        "openai:gpt-4.1": 7,
        "anthropic:claude": 1,
    }


def test_chat_turn_rule_remembers_a_bounded_number_of_sessions(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only the most recently used MAX_TRACKED_KEYS (session, provider, model) keys are
    remembered: memory stays bounded; a forgotten session's turn counts."""
    from telemetry_client.usage import recorder as _usage_recorder

    monkeypatch.setattr(_usage_recorder, "MAX_TRACKED_KEYS", 2)
    st = UsageStore(usage.usage_dir(tmp_path / "spool"))
    recorder = UsageRecorder(st, RateLimitedLogger())
    for session in ("s1", "s2", "s3"):
        recorder.add(llm_call(), session)
    recorder.add(turn(), "s1")  # s1 was forgotten: counted
    recorder.add(turn(), "s3")  # still remembered: covered
    recorder.close(timeout=10)
    assert len(recorder._calls_since_turn) <= 2
    assert recorder.describe()["usage_turns_covered"] == 1
    assert totals(st)["total"]["requests"] == 4


def test_disabled_client_records_nothing(settings_factory: SettingsFactory) -> None:
    """TELEMETRY_ENABLED=0: an LLMCall creates no directory, thread or counter."""
    settings = settings_factory(enabled=False)
    client = TelemetryClient(settings)
    client.emit(llm_call())
    client.close()
    assert not settings.resolved_spool_dir.exists()
    assert "usage_merged" not in client.stats()


def test_forked_child_starts_with_no_pending_calls(tmp_path: Path) -> None:
    """after_fork_in_child drops the parent's pending calls and thread; the child starts anew."""
    st = UsageStore(usage.usage_dir(tmp_path / "spool"))
    recorder = UsageRecorder(st, RateLimitedLogger())
    recorder.add(llm_call())
    parent_thread = recorder._thread
    assert parent_thread is not None
    recorder._stop.set()  # a forked child has no copy of the parent's threads
    parent_thread.join(10)
    recorder.after_fork_in_child()
    assert recorder.describe()["usage_pending"] == 0
    assert recorder._thread is None
    recorder.add(llm_call())  # the child's first call starts its own thread
    assert recorder._thread is not None
    recorder.close(timeout=10)
    assert recorder.describe()["usage_merged"] == 1
    assert totals(st)["total"]["requests"] == 1


def _permissions_enforced(tmp_path: Path) -> bool:
    """False for root (or CAP_DAC_OVERRIDE), which may write into a 0500 directory anyway."""
    probe = tmp_path / "probe"
    probe.mkdir(mode=0o500)
    try:
        (probe / "f").touch()
    except PermissionError:
        return True
    finally:
        probe.chmod(0o700)
    return False


def _read_only_usage_dir(client: TelemetryClient, tmp_path: Path) -> Callable[[], None]:
    if not _permissions_enforced(tmp_path):
        pytest.skip("directory permissions are not enforced for this user (root)")
    d = usage.usage_dir(client.settings.resolved_spool_dir)
    _fs.ensure_dir(d)
    os.chmod(d, 0o500)
    return lambda: os.chmod(d, 0o700)


def _usage_path_is_a_file(client: TelemetryClient, tmp_path: Path) -> Callable[[], None]:
    d = usage.usage_dir(client.settings.resolved_spool_dir)
    _fs.ensure_dir(d.parent)
    d.write_bytes(b"not a directory")  # ENOTDIR on every open below it, even for root
    return d.unlink


def _atomic_write_fails(monkeypatch: pytest.MonkeyPatch) -> Callable[..., Callable[[], None]]:
    def install(client: TelemetryClient, tmp_path: Path) -> Callable[[], None]:
        def broken(path: Path, data: bytes, *, fsync: bool) -> None:
            raise OSError(errno.EROFS, "Read-only file system")

        real = _fs.atomic_write
        monkeypatch.setattr(_fs, "atomic_write", broken)
        return lambda: monkeypatch.setattr(_fs, "atomic_write", real)

    return install


@pytest.mark.parametrize("fault", ["read_only_dir", "usage_is_a_file", "erofs"])
def test_store_failure_never_reaches_the_caller_and_recovers(
    make_client: Callable[..., TelemetryClient],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    fault: str,
) -> None:
    """A store that cannot be written: emit/flush/close never raise, one warning, retried later."""
    caplog.set_level(logging.WARNING, logger="telemetry_client")
    client = make_client()
    install = {
        "read_only_dir": _read_only_usage_dir,
        "usage_is_a_file": _usage_path_is_a_file,
        "erofs": _atomic_write_fails(monkeypatch),
    }[fault]
    repair = install(client, tmp_path)
    for _ in range(5):
        client.emit(llm_call())
    assert client.flush_sync(timeout=10).ok  # the events are spooled; usage is best-effort
    client.emit(llm_call())
    client.flush_sync(timeout=10)
    stats = client.stats()
    assert stats["usage_errors"] >= 2
    assert stats["usage_pending"] == 6  # kept for a retry
    assert len(warnings_about(caplog, "cannot update")) == 1
    repair()
    client.emit(llm_call())
    assert client.close(timeout=10).ok
    stats = client.stats()
    assert (stats["usage_merged"], stats["usage_pending"], stats["usage_dropped"]) == (7, 0, 0)
    assert totals(store_of(client))["total"]["requests"] == 7


def test_close_with_a_store_still_failing_drops_and_counts(
    make_client: Callable[..., TelemetryClient], tmp_path: Path
) -> None:
    """Unmergeable at close: close() still succeeds; the calls are counted as usage_dropped."""
    client = make_client()
    _usage_path_is_a_file(client, tmp_path)
    client.emit(llm_call())
    client.emit(llm_call())
    assert client.close(timeout=10).ok
    stats = client.stats()
    assert (stats["usage_dropped"], stats["usage_pending"], stats["usage_merged"]) == (2, 0, 0)


# --- 5. formats and the CLI ----------------------------------------------------------------------


@pytest.fixture
def fixed_store(store: UsageStore) -> UsageStore:
    """Three models over the last hour (one failed call), plus one call 66 minutes ago."""
    store.merge(
        [
            rec(NOW - 100, bytes_up=1_200_000, bytes_down=3_400_000, input_tokens=1000,
                output_tokens=500, total_tokens=1500),
            rec(NOW - 200, bytes_up=800, bytes_down=2000, input_tokens=200, output_tokens=100,
                total_tokens=300),
            rec(NOW - 4000, bytes_up=999, bytes_down=999, input_tokens=9, output_tokens=9,
                total_tokens=18),
            rec(NOW - 50, "anthropic", "claude-sonnet-4", bytes_up=5000, bytes_down=0,
                input_tokens=40, output_tokens=0, total_tokens=40, error=True),
            rec(NOW - 30, "ollama", "llama3:8b", bytes_up=300, bytes_down=700, input_tokens=12,
                output_tokens=34, total_tokens=46),
        ],
        now=NOW,
    )  # fmt: skip
    return store


GOLDEN_TEXT = """\
LLM usage over the last 1h, every process on this spool
                           reqs  errors   rpm   sent  received  in tokens  out tokens
all                           4       1  0.07  1.2MB     3.4MB       1252         634
openai:gpt-4.1                2       0  0.03  1.2MB     3.4MB       1200         600
anthropic:claude-sonnet-4     1       1  0.02  5.0kB        0B         40           0
ollama:llama3:8b              1       0  0.02   300B      700B         12          34"""

GOLDEN_TMUX = (
    "Σ@1h reqs=4 err=1 rpm=0.1 ↑1.2MB ↓3.4MB tok=1.9k | openai:gpt-4.1 reqs=2"
    " | anthropic:claude-sonnet-4 reqs=1 | ollama:llama3:8b reqs=1"
)


def test_text_format_golden(fixed_store: UsageStore) -> None:
    """The text table for a fixed store and clock, byte for byte."""
    summary = usage.summarize(fixed_store.read(), 3600, now=NOW)
    assert usage.format_text(summary) == GOLDEN_TEXT


def test_tmux_format_golden(fixed_store: UsageStore) -> None:
    """The tmux line: totals, then the busiest models; past `top`, the rest are counted."""
    summary = usage.summarize(fixed_store.read(), 3600, now=NOW)
    assert usage.format_tmux(summary) == GOLDEN_TMUX
    assert usage.format_tmux(summary, top=1) == (
        "Σ@1h reqs=4 err=1 rpm=0.1 ↑1.2MB ↓3.4MB tok=1.9k | openai:gpt-4.1 reqs=2 | +2 more"
    )
    empty = usage.summarize(UsageSnapshot({}, exists=False), 900, now=NOW)
    assert usage.format_tmux(empty) == "Σ@15m reqs=0 rpm=0.0 ↑0B ↓0B"


def test_json_format_golden(fixed_store: UsageStore) -> None:
    """The JSON object for a fixed store and clock (one line)."""
    summary = usage.summarize(fixed_store.read(), 3600, now=NOW, store="S")
    text = usage.format_json(summary)
    assert "\n" not in text
    assert orjson.loads(text) == {
        "window_s": 3600,
        "window": "1h",
        "now": NOW,
        "since": NOW - 3600,
        "total": {
            "requests": 4,
            "errors": 1,
            "bytes_up": 1_206_100,
            "bytes_down": 3_402_700,
            "input_tokens": 1252,
            "output_tokens": 634,
            "total_tokens": 1886,
            "cache_read_tokens": 0,
            "cache_write_tokens": 0,
            "reasoning_tokens": 0,
            "rpm": 0.0667,
        },
        "models": [
            {
                "provider": "openai",
                "model": "gpt-4.1",
                "key": "openai:gpt-4.1",
                "requests": 2,
                "errors": 0,
                "bytes_up": 1_200_800,
                "bytes_down": 3_402_000,
                "input_tokens": 1200,
                "output_tokens": 600,
                "total_tokens": 1800,
                "cache_read_tokens": 0,
                "cache_write_tokens": 0,
                "reasoning_tokens": 0,
                "rpm": 0.0333,
            },
            {
                "provider": "anthropic",
                "model": "claude-sonnet-4",
                "key": "anthropic:claude-sonnet-4",
                "requests": 1,
                "errors": 1,
                "bytes_up": 5000,
                "bytes_down": 0,
                "input_tokens": 40,
                "output_tokens": 0,
                "total_tokens": 40,
                "cache_read_tokens": 0,
                "cache_write_tokens": 0,
                "reasoning_tokens": 0,
                "rpm": 0.0167,
            },
            {
                "provider": "ollama",
                "model": "llama3:8b",
                "key": "ollama:llama3:8b",
                "requests": 1,
                "errors": 0,
                "bytes_up": 300,
                "bytes_down": 700,
                "input_tokens": 12,
                "output_tokens": 34,
                "total_tokens": 46,
                "cache_read_tokens": 0,
                "cache_write_tokens": 0,
                "reasoning_tokens": 0,
                "rpm": 0.0167,
            },
        ],
        "store": "S",
        "problem": None,
    }


def test_stats_cli_formats_and_missing_store(tmp_path: Path) -> None:
    """With no store (and no spool): zeros in every format, exit 0, nothing created."""
    spool_dir = tmp_path / "never-created"
    text = run_cli(spool_dir, "stats")
    assert text.returncode == 0, text.stderr
    assert text.stdout.startswith("LLM usage over the last 1h")
    assert "(no LLM calls in this window)" in text.stdout
    tmux = run_cli(spool_dir, "stats", "--format", "tmux", "--window", "15")
    assert (tmux.returncode, tmux.stdout) == (0, "Σ@15m reqs=0 rpm=0.0 ↑0B ↓0B\n")
    js = run_cli(spool_dir, "stats", "--format", "json", "--window", "24h")
    assert js.returncode == 0, js.stderr
    summary = orjson.loads(js.stdout)
    assert (summary["window_s"], summary["total"]["requests"], summary["models"]) == (86400, 0, [])
    assert not spool_dir.exists()


def test_stats_cli_reads_what_a_client_recorded(
    make_client: Callable[..., TelemetryClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`stats --format json` (in-process) shows the calls a closed client recorded."""
    client = make_client()
    for status in (200, 200, 500):
        client.emit(llm_call(status=status))
    client.emit(llm_call(provider="anthropic", model="claude-sonnet-4", error="reset"))
    client.close(timeout=10)
    monkeypatch.setenv("TELEMETRY_SPOOL_DIR", str(client.settings.resolved_spool_dir))
    out = io.StringIO()
    assert cli.main(["stats", "--format", "json", "--window", "5m"], out=out) == 0
    summary = orjson.loads(out.getvalue())
    assert (summary["total"]["requests"], summary["total"]["errors"]) == (4, 2)
    assert [(m["key"], m["requests"]) for m in summary["models"]] == [
        ("openai:gpt-4.1", 3),
        ("anthropic:claude-sonnet-4", 1),
    ]
    assert summary["total"]["rpm"] == 0.8


def test_stats_cli_does_not_wait_for_the_writers_lock(
    store: UsageStore, monkeypatch: pytest.MonkeyPatch, clean_env: None
) -> None:
    """`stats` reads the atomically replaced file: a writer holding stats.lock does not block it."""
    store.merge([rec(time.time() - i) for i in range(5)])
    monkeypatch.setenv("TELEMETRY_SPOOL_DIR", str(store.dir.parent))
    out = io.StringIO()
    with _fs.flock(store.lock_path):
        assert cli.main(["stats", "--format", "json", "--window", "24h"], out=out) == 0
    assert orjson.loads(out.getvalue())["total"]["requests"] == 5


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("1m", 60), ("15m", 900), ("90s", 90), ("60", 3600), ("6h", 21600), ("24h", 86400)],
)
def test_window_accepts_1m_to_24h(text: str, seconds: float) -> None:
    """--window takes 1 minute to 24 hours; a bare number is minutes."""
    assert usage.parse_window(text) == seconds


@pytest.mark.parametrize("bad", ["0m", "59s", "25h", "1441", "banana", "-5m", ""])
def test_bad_window_exits_2_naming_the_option(
    bad: str, capsys: pytest.CaptureFixture[str], clean_env: None
) -> None:
    """A window outside 1m..24h (or not a duration) exits 2 with a message naming --window."""
    with pytest.raises(SystemExit) as exc:
        cli.main(["stats", f"--window={bad}"], out=io.StringIO())
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "--window" in err
    assert "1m to 24h" in err


def test_bad_window_exits_2_as_a_process(tmp_path: Path) -> None:
    """The same through the real console entry point: exit status 2, one clear message."""
    proc = run_cli(tmp_path / "spool", "stats", "--window", "2d")
    assert proc.returncode == 2
    assert "argument --window: expected a duration from 1m to 24h" in proc.stderr
    assert "'2d'" in proc.stderr
    assert proc.stdout == ""
