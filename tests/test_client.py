"""TelemetryClient: round trip to the spool, typed events, lifecycle, concurrency, backpressure."""

from __future__ import annotations

import asyncio
import dataclasses
import math
import os
import tempfile
import threading
import time
import types
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from _coercion import expected, texts
from _coercion import json_values as _json_values
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import telemetry_client
from telemetry_client import (
    ClientClosedError,
    FlushResult,
    Spool,
    TelemetryClient,
    TelemetrySettings,
    events,
    session_context,
)


@pytest.fixture(autouse=True)
def _no_telemetry_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only the settings a test passes apply: no TELEMETRY_* or DO_NOT_TRACK from outside."""
    for name in list(os.environ):
        if name.upper().startswith("TELEMETRY_") or name.upper() == "DO_NOT_TRACK":
            monkeypatch.delenv(name)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def make_settings(spool_dir: Path | str, **overrides: Any) -> TelemetrySettings:
    values: dict[str, Any] = {
        "spool_dir": spool_dir,
        "endpoint": None,
        "enabled": True,
        "do_not_track": False,
        "redact": False,
        "fsync": "off",
        "app": "tests",
        "user_id": "default-user",
    }
    values.update(overrides)
    return TelemetrySettings(**values)


@pytest.fixture
def client_factory(tmp_path: Path) -> Iterator[Callable[..., TelemetryClient]]:
    """``make(**settings)`` -> a client on a fresh spool under tmp_path; closed at teardown."""
    made: list[TelemetryClient] = []

    def make(**overrides: Any) -> TelemetryClient:
        client = TelemetryClient(make_settings(tmp_path / f"spool{len(made)}", **overrides))
        made.append(client)
        return client

    yield make
    for client in made:
        client.close(timeout=10)


def read_spool(spool: Spool) -> list[dict[str, Any]]:
    """Every spooled event, batch by batch in claim order (claims are released afterwards)."""
    claims = []
    try:
        while (claim := spool.claim()) is not None:
            claims.append(claim)
        return [event for claim in claims for event in claim.events()]
    finally:
        for claim in claims:
            spool.release(claim)


# --- round trip through the real client and spool ------------------------------------------------

json_values = _json_values(max_leaves=12)
event_lists = st.lists(
    st.tuples(
        st.sampled_from(["custom", "chat_turn", "tool_call", "a1_b2"]),
        st.dictionaries(texts, json_values, max_size=4),
    ),
    min_size=1,
    max_size=30,
)


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(event_lists, st.integers(min_value=1, max_value=7))
def test_round_trip_through_client_and_spool(
    emitted: list[tuple[str, dict[str, Any]]], batch_max_events: int
) -> None:
    """Emitted payloads come back from the spool, coerced as documented, in seq order."""
    with tempfile.TemporaryDirectory() as tmp:
        client = TelemetryClient(
            make_settings(Path(tmp) / "spool", batch_max_events=batch_max_events)
        )
        try:
            for etype, data in emitted:
                client.emit(etype, data)
            assert client.flush_sync(timeout=10).ok
            spooled = read_spool(client.spool)
        finally:
            client.close(timeout=10)
    assert [e["seq"] for e in spooled] == list(range(1, len(emitted) + 1))
    assert [e["type"] for e in spooled] == [etype for etype, _ in emitted]
    assert [e["data"] for e in spooled] == [expected(data) for _, data in emitted]


# --- typed events -----------------------------------------------------------------------------

TYPED = [
    events.SessionStart(app_version="1.0", os="linux", python_version="3.11"),
    events.ChatTurn(model="gpt-4.1", user_prompt="hi", assistant_final="hello", latency_ms=812),
    events.LLMCall(provider="openai", model="gpt-4.1", status=200, input_tokens=12),
    events.ToolCall(tool_name="read_file", args={"path": "a.py"}, result="x = 1\n"),
    events.FileOperation(
        path="a.py",
        op="edit",
        before="x = 1\n",
        after="x = 2\n",
        diff="--- a/a.py\n+++ b/a.py\n@@ -1 +1 @@\n-x = 1\n+x = 2\n",
        loc_added=1,
        loc_removed=1,
    ),
    events.ChangeDecision(op_id="op-1", decision="accept"),
    events.Error(error_type="KeyError", message="'k'", stack_trace="Traceback ..."),
    events.Started(run_id="r", toolchain="claude", model="sonnet"),
    events.PromptSent(run_id="r", prompt="do it", tokens=3),
    events.ResponseChunk(run_id="r", content="par", index=0),
    events.ResponseComplete(run_id="r", content="partial", tokens=2),
    events.ToolResult(run_id="r", tool_name="bash", result={"ok": True}, is_error=False),
    events.BashCommand(run_id="r", command="ls -la"),
    events.BashOutput(run_id="r", output="total 0", stream="stdout", exit_code=0),
    events.FileRead(run_id="r", path="a.py", size=6),
    events.FileWrite(run_id="r", path="b.py", content="y = 3\n"),
    events.Thinking(run_id="r", content="hmm"),
    events.Completed(run_id="r", status="success", exit_code=0, duration_ms=4200.5),
    events.TelemetryDropped(events=3, bytes=120, reason="cap"),
]
CONTRACT_TYPES = {
    "session_start",
    "chat_turn",
    "tool_call",
    "file_operation",
    "change_decision",
    "error",
    "started",
    "prompt_sent",
    "response_chunk",
    "response_complete",
    "tool_result",
    "bash_command",
    "bash_output",
    "file_read",
    "file_write",
    "thinking",
    "completed",
}


def non_none_fields(event: events.Event) -> dict[str, Any]:
    return {
        f.name: getattr(event, f.name)
        for f in dataclasses.fields(event)
        if f.name != "attributes" and getattr(event, f.name) is not None
    }


def test_typed_events_cover_the_contract_types() -> None:
    """Every event type docs/protocol.md ("Envelope") lists has a typed event class."""
    assert set(events.EVENT_TYPES) >= CONTRACT_TYPES
    assert {type(e).TYPE for e in TYPED} == set(events.EVENT_TYPES)


def test_typed_events_serialize_with_type_and_non_none_fields(
    client_factory: Callable[..., TelemetryClient],
) -> None:
    """A typed event is spooled with its TYPE and exactly its non-None fields as data."""
    client = client_factory()
    for event in TYPED:
        client.emit(event)
    assert client.flush_sync(timeout=10).ok
    spooled = read_spool(client.spool)
    assert [e["type"] for e in spooled] == [type(e).TYPE for e in TYPED]
    for event, line in zip(TYPED, spooled, strict=True):
        assert line["data"] == non_none_fields(event), type(event).__name__


def test_typed_event_omits_none_fields_and_merges_attributes(
    client_factory: Callable[..., TelemetryClient],
) -> None:
    """None fields are left out of data; attributes add fields without overriding real ones."""
    client = client_factory()
    client.emit(
        events.ChatTurn(model="m", latency_ms=5, attributes={"tenant": "acme", "model": "other"})
    )
    client.emit(events.Error.from_exception(KeyError("missing"), context={"tool": "lookup"}))
    assert client.flush_sync(timeout=10).ok
    chat, error = read_spool(client.spool)
    assert chat["data"] == {"model": "m", "latency_ms": 5, "tenant": "acme"}
    assert "provider" not in chat["data"]
    assert error["type"] == "error"
    assert error["data"]["error_type"] == "KeyError"
    assert error["data"]["context"] == {"tool": "lookup"}
    assert "KeyError" in error["data"]["stack_trace"]


# --- lifecycle ------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_async_with_flushes_and_closes(
    client_factory: Callable[..., TelemetryClient],
) -> None:
    """Leaving ``async with`` puts every emitted event on disk and closes the client."""
    client = client_factory()
    async with client as entered:
        assert entered is client
        for i in range(25):
            client.emit("tick", {"i": i})
    assert client.closed
    assert [e["data"]["i"] for e in read_spool(client.spool)] == list(range(25))


@pytest.mark.anyio
async def test_flush_returns_a_successful_flush_result(
    client_factory: Callable[..., TelemetryClient],
) -> None:
    """flush() returns a truthy FlushResult with nothing pending once events are on disk."""
    async with client_factory() as client:
        for i in range(10):
            client.emit("tick", {"i": i})
        result = await client.flush(timeout=10)
        assert isinstance(result, FlushResult)
        assert result.ok
        assert bool(result)
        assert result.pending_events == 0
        assert client.stats()["pending"] == 0
        assert len(read_spool(client.spool)) == 10


@pytest.mark.anyio
async def test_aclose_is_idempotent(client_factory: Callable[..., TelemetryClient]) -> None:
    """aclose() twice (and close() after it) succeeds and leaves the client closed."""
    client = client_factory()
    client.emit("tick", {})
    first = await client.aclose()
    second = await client.aclose()
    third = client.close()
    assert first.ok
    assert second.ok
    assert third.ok
    assert client.closed
    assert len(read_spool(client.spool)) == 1


@pytest.mark.anyio
async def test_reuse_after_close_raises(client_factory: Callable[..., TelemetryClient]) -> None:
    """start, flush, flush_sync, ``with`` and ``async with`` on a closed client raise."""
    client = client_factory()
    async with client:
        pass
    with pytest.raises(ClientClosedError):
        client.start()
    with pytest.raises(ClientClosedError):
        client.flush_sync(timeout=1)
    with pytest.raises(ClientClosedError):
        await client.flush(timeout=1)
    with pytest.raises(ClientClosedError):
        async with client:
            pass
    with pytest.raises(ClientClosedError), client:
        pass


def test_emit_after_close_is_counted_not_raised(
    client_factory: Callable[..., TelemetryClient],
) -> None:
    """emit() after close does not raise, writes nothing and is counted as dropped."""
    client = client_factory()
    client.emit("before", {})
    client.close(timeout=10)
    client.emit("after", {"x": 1})
    client.emit(events.Thinking(content="late"))
    stats = client.stats()
    assert stats["dropped_after_close"] == 2
    assert stats["dropped"] >= 2
    assert [e["type"] for e in read_spool(client.spool)] == ["before"]


def test_stats_has_the_contract_counters(client_factory: Callable[..., TelemetryClient]) -> None:
    """stats() has emitted, spooled, uploaded, dropped, rejected, retries and pending."""
    client = client_factory()
    for i in range(7):
        client.emit("tick", {"i": i})
    assert client.flush_sync(timeout=10).ok
    stats = client.stats()
    keys = {"emitted", "spooled", "uploaded", "dropped", "rejected", "retries", "pending"}
    assert keys <= set(stats)
    assert stats["emitted"] == 7
    assert stats["spooled"] == 7
    assert stats["pending"] == 0
    assert stats["dropped"] == 0


# --- concurrency ----------------------------------------------------------------------------------


def test_emit_from_threads_spools_every_event_once(
    client_factory: Callable[..., TelemetryClient],
) -> None:
    """8 threads emitting at once: every event is spooled exactly once."""
    client = client_factory(batch_max_events=97, buffer_max_events=500)
    threads_n, per_thread = 8, 2000
    barrier = threading.Barrier(threads_n)

    def produce(t: int) -> None:
        barrier.wait()
        for i in range(per_thread):
            client.emit("thread_event", {"t": t, "i": i})

    threads = [threading.Thread(target=produce, args=(t,)) for t in range(threads_n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not any(thread.is_alive() for thread in threads)
    assert client.flush_sync(timeout=30).ok
    spooled = read_spool(client.spool)
    keys = [(e["data"]["t"], e["data"]["i"]) for e in spooled]
    assert len(keys) == threads_n * per_thread
    assert set(keys) == {(t, i) for t in range(threads_n) for i in range(per_thread)}
    assert sorted(e["seq"] for e in spooled) == list(range(1, threads_n * per_thread + 1))
    assert client.stats()["spooled"] == threads_n * per_thread


@pytest.mark.anyio
async def test_emit_from_coroutines_spools_every_event_once(
    client_factory: Callable[..., TelemetryClient],
) -> None:
    """50 coroutines emitting concurrently: every event is spooled exactly once."""
    tasks_n, per_task = 50, 100

    async def produce(client: TelemetryClient, t: int) -> None:
        for i in range(per_task):
            client.emit("task_event", {"t": t, "i": i})
            await asyncio.sleep(0)

    async with client_factory(batch_max_events=64) as client:
        await asyncio.gather(*(produce(client, t) for t in range(tasks_n)))
        assert (await client.flush(timeout=30)).ok
    keys = [(e["data"]["t"], e["data"]["i"]) for e in read_spool(client.spool)]
    assert len(keys) == tasks_n * per_task
    assert set(keys) == {(t, i) for t in range(tasks_n) for i in range(per_task)}


@pytest.mark.anyio
async def test_session_context_reaches_events_and_child_tasks(
    client_factory: Callable[..., TelemetryClient],
) -> None:
    """Inside session_context, events (also from a task created there) carry its ids."""
    async with client_factory() as client:
        later = asyncio.Event()

        async def emit_later() -> None:
            await later.wait()
            client.emit("from_task", {})

        client.emit("before", {})
        with session_context(session_id="sess-42", user_id="user-7"):
            client.emit("inside", {})
            task = asyncio.create_task(emit_later())
        client.emit("after", {})
        later.set()  # the task emits after the block was left: it kept the context
        await task
        assert (await client.flush(timeout=10)).ok
    by_type = {e["type"]: e for e in read_spool(client.spool)}
    for name in ("inside", "from_task"):
        assert by_type[name]["session_id"] == "sess-42", name
        assert by_type[name]["user_id"] == "user-7", name
    for name in ("before", "after"):
        assert by_type[name]["session_id"] == client.session_id, name
        assert by_type[name]["user_id"] == "default-user", name


def test_session_context_is_per_thread(client_factory: Callable[..., TelemetryClient]) -> None:
    """A session_context in one thread does not leak into events emitted by another thread."""
    client = client_factory()
    entered, done = threading.Event(), threading.Event()

    def other_thread() -> None:
        entered.wait(10)
        client.emit("other_thread", {})
        done.set()

    thread = threading.Thread(target=other_thread)
    thread.start()
    with session_context(session_id="only-here"):
        client.emit("this_thread", {})
        entered.set()
        assert done.wait(10)
    thread.join(10)
    assert client.flush_sync(timeout=10).ok
    by_type = {e["type"]: e for e in read_spool(client.spool)}
    assert by_type["this_thread"]["session_id"] == "only-here"
    assert by_type["other_thread"]["session_id"] == client.session_id


# --- junk in, nothing raised ------------------------------------------------------------------


class ExplodingMapping(Mapping[str, Any]):
    def __getitem__(self, key: str) -> Any:
        raise RuntimeError("boom")

    def __iter__(self) -> Iterator[str]:
        raise RuntimeError("boom")

    def __len__(self) -> int:
        return 1


class Unrepresentable:
    def __repr__(self) -> str:
        raise RuntimeError("no repr")


def test_emit_with_junk_never_raises_and_is_counted(
    client_factory: Callable[..., TelemetryClient],
) -> None:
    """Junk types, non-mapping data and unserializable objects are coerced and counted."""
    client = client_factory()
    junk: list[tuple[Any, Any, dict[str, Any]]] = [
        (42, [1, 2], {}),
        (None, "just text", {}),
        ("Bad Type!", {"n": math.nan}, {}),
        ("ok", {"obj": object(), 7: {3}, "bad": Unrepresentable()}, {}),
        ("ok", {"lock": threading.Lock(), "big": 2**100}, {}),
        ("exploding", ExplodingMapping(), {}),
        ("odd_ids", {}, {"session_id": object(), "user_id": "u\udc80"}),
        (events.Thinking(content="typed, with ignored data"), {"x": 1}, {}),
    ]
    for kind, data, kwargs in junk:
        client.emit(kind, data, **kwargs)
    assert client.flush_sync(timeout=10).ok
    spooled = read_spool(client.spool)
    assert len(spooled) == len(junk)
    assert [e["seq"] for e in spooled] == list(range(1, len(junk) + 1))
    assert spooled[0]["type"] == "int"
    assert spooled[0]["data"] == {"value": [1, 2]}
    assert spooled[2]["type"] == "bad_type"
    assert spooled[2]["data"] == {"n": None}
    assert spooled[3]["data"]["7"] == [3]
    assert spooled[4]["data"]["big"] == str(2**100)
    assert spooled[7]["type"] == "thinking"
    stats = client.stats()
    assert stats["emitted"] == len(junk)
    assert stats["spooled"] == len(junk)
    for kind in ("non_mapping_data", "type_name", "non_finite", "object", "non_str_key", "big_int"):
        assert stats["coerced"].get(kind, 0) >= 1, kind


# --- public API -----------------------------------------------------------------------------------


def test_all_matches_the_public_names() -> None:
    """telemetry_client.__all__ lists exactly its public (non-module) names, plus events."""
    exported = set(telemetry_client.__all__)
    public = {
        name
        for name in dir(telemetry_client)
        if not name.startswith("_")
        and not isinstance(getattr(telemetry_client, name), types.ModuleType)
    }
    assert exported - {"__version__", "events"} == public
    assert {"__version__", "events"} <= exported
    assert telemetry_client.__all__ == sorted(telemetry_client.__all__)
    for name in exported:
        assert hasattr(telemetry_client, name), name


# --- the pipeline (_pipeline.build): what the client is made of ---------------------------------


def test_spool_only_pipeline_has_no_uploader_and_no_kill_switch(tmp_path: Path) -> None:
    """Without an endpoint nothing uploads and emit() checks no kill switch (spool-only mode)."""
    from telemetry_client._pipeline import build

    pipeline = build(make_settings(tmp_path / "spool"))

    assert pipeline.uploader is None
    assert pipeline.kill_switch is None
    assert not (tmp_path / "spool").exists()  # building touches no disk


def test_pipeline_hands_the_writers_sealed_here_hint_to_the_uploader(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch this process sealed without attachment references is claimed as trusted (no
    decompress-and-count check): the batcher's hint reaches the uploader through the pipeline,
    not through a callback into the uploader."""
    from telemetry_client._pipeline import build

    seen: list[bool] = []
    claim = Spool.claim

    def spy(self: Spool, *, trusted: Any = ()) -> Any:
        got = claim(self, trusted=trusted)
        if got is not None:
            seen.append(got.batch_id in trusted)
        return got

    monkeypatch.setattr(Spool, "claim", spy)
    settings = make_settings(tmp_path / "spool", endpoint="http://127.0.0.1:9/api/v1/events")
    pipeline = build(settings)
    assert pipeline.uploader is not None
    pipeline.spool.open()
    pipeline.batcher.put(("probe", {"i": 1}, time.time_ns(), 1, None, None))
    assert pipeline.batcher.flush(10)

    pipeline.uploader.step()  # nothing listens on port 9: the batch is released, unsent
    pipeline.uploader.stop(0)

    assert seen == [True]
