"""RunRecorder: the run event stream, outcomes, chunk coalescing, ordering, threads."""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import orjson
import pytest

from telemetry_client import TelemetryClient, TelemetrySettings, events, session_context

SettingsFactory = Callable[..., TelemetrySettings]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def client(settings_factory: SettingsFactory) -> Iterator[TelemetryClient]:
    """A spool-only client (no endpoint), closed at teardown."""
    c = TelemetryClient(settings_factory(fsync="off", redact=False))
    yield c
    c.close(timeout=10)


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def spooled(client: TelemetryClient) -> list[dict[str, Any]]:
    """Every event the client spooled, in emit order."""
    assert client.flush_sync(timeout=10).ok
    lines = [
        orjson.loads(line)
        for _name, raw in client.spool.iter_batches_newest_first()
        for line in raw.splitlines()
    ]
    return sorted(lines, key=lambda e: e["seq"])


def types_of(evs: list[dict[str, Any]]) -> list[str]:
    return [e["type"] for e in evs]


def test_sync_run_emits_the_stream_in_order_with_run_id_and_sequence(
    client: TelemetryClient,
) -> None:
    """A sync run: started (UUID run id, toolchain, model, extras) ... completed(success)."""
    with client.run(toolchain="claude", model="sonnet", cwd="/repo") as run:
        run.prompt_sent("fix the bug", tokens=12)
        run.response_chunk("Looking ")
        run.response_chunk("at it")
        run.response_complete("Looking at it", tokens=3)
        call_id = run.tool_call("grep", args={"pattern": "TODO"})
        run.tool_result("grep", call_id=call_id, result="3 matches", duration_ms=4.5)
        run.bash_command("pytest -q", cwd="/repo")
        run.bash_output("1 passed\n", exit_code=0)
        run.file_read("a.py", content="x = 1\n")
        run.file_write("b.py", content="y = 2\n", mode="overwrite")
        run.thinking("the fix is in b.py")
    evs = spooled(client)
    assert types_of(evs) == [
        "started",
        "prompt_sent",
        "response_chunk",
        "response_complete",
        "tool_call",
        "tool_result",
        "bash_command",
        "bash_output",
        "file_read",
        "file_write",
        "thinking",
        "completed",
    ]
    data = [e["data"] for e in evs]
    run_id = data[0]["run_id"]
    assert str(uuid.UUID(run_id)) == run_id == run.run_id
    assert all(d["run_id"] == run_id for d in data)
    assert [d["run_seq"] for d in data] == list(range(1, len(evs) + 1))
    assert data[0] == {
        "run_id": run_id,
        "run_seq": 1,
        "toolchain": "claude",
        "model": "sonnet",
        "cwd": "/repo",
    }
    assert data[1]["prompt"] == "fix the bug"
    assert data[1]["tokens"] == 12
    assert data[2]["content"] == "Looking at it"
    assert data[2]["chunks"] == 2
    assert data[2]["index"] == 0
    assert data[3]["content"] == "Looking at it"
    assert data[4]["tool_name"] == "grep"
    assert data[4]["call_id"] == call_id
    assert data[4]["args"] == {"pattern": "TODO"}
    assert data[5]["call_id"] == call_id
    assert data[5]["result"] == "3 matches"
    assert data[6] == {"run_id": run_id, "run_seq": 7, "command": "pytest -q", "cwd": "/repo"}
    assert data[7]["output"] == "1 passed\n"
    assert data[7]["stream"] == "stdout"
    assert data[7]["exit_code"] == 0
    assert data[8]["path"] == "a.py"
    assert data[8]["size"] == 6
    assert data[9]["mode"] == "overwrite"
    assert data[10]["content"] == "the fix is in b.py"
    assert data[11]["status"] == "success"
    assert data[11]["duration_ms"] >= 0
    assert run.finished
    assert run.status == "success"


@pytest.mark.anyio
async def test_async_run_emits_the_same_stream(client: TelemetryClient) -> None:
    """``async with client.run(...)`` records the same events as the sync form."""
    async with client.run(toolchain="codex", model="o3") as run:
        run.prompt_sent("hello")
        await asyncio.sleep(0)  # a real suspension point inside the run
        run.response_chunk("hi")
        run.response_complete("hi")
    evs = spooled(client)
    assert types_of(evs) == [
        "started",
        "prompt_sent",
        "response_chunk",
        "response_complete",
        "completed",
    ]
    assert evs[0]["data"]["toolchain"] == "codex"
    assert {e["data"]["run_id"] for e in evs} == {run.run_id}
    assert [e["data"]["run_seq"] for e in evs] == [1, 2, 3, 4, 5]
    assert evs[-1]["data"]["status"] == "success"


class AgentCrashed(Exception):
    pass


def test_exception_emits_error_and_completed_error_and_propagates_unchanged(
    client: TelemetryClient,
) -> None:
    """A raising block: buffered chunks, error (with run id), completed(error); same exception."""
    boom = AgentCrashed("adapter died")
    run = client.run(toolchain="claude")

    def agent() -> None:
        with run:
            run.response_chunk("partial")
            raise boom

    with pytest.raises(AgentCrashed) as caught:
        agent()
    assert caught.value is boom
    evs = spooled(client)
    assert types_of(evs) == ["started", "response_chunk", "error", "completed"]
    error = evs[2]["data"]
    assert error["run_id"] == run.run_id
    assert error["error_type"] == "AgentCrashed"
    assert error["message"] == "adapter died"
    assert "raise boom" in error["stack_trace"]
    assert evs[3]["data"]["status"] == "error"
    assert run.status == "error"


@pytest.mark.anyio
async def test_async_exception_is_recorded_and_reraised(client: TelemetryClient) -> None:
    """In ``async with`` an exception is recorded the same way and re-raised."""
    with pytest.raises(KeyError):
        async with client.run() as run:
            raise KeyError("missing")
    evs = spooled(client)
    assert types_of(evs) == ["started", "error", "completed"]
    assert evs[1]["data"]["error_type"] == "KeyError"
    assert evs[2]["data"]["status"] == "error"
    assert all(e["data"]["run_id"] == run.run_id for e in evs)


@pytest.mark.anyio
async def test_cancellation_completes_as_cancelled_without_error_event(
    client: TelemetryClient,
) -> None:
    """A task cancelled inside the run: completed(status="cancelled"), CancelledError raised."""
    inside = asyncio.Event()

    async def agent() -> None:
        async with client.run(toolchain="claude") as run:
            run.response_chunk("thinking...")
            inside.set()
            await asyncio.Event().wait()  # blocks until cancelled

    task = asyncio.create_task(agent())
    await inside.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    evs = spooled(client)
    assert types_of(evs) == ["started", "response_chunk", "completed"]
    assert evs[-1]["data"]["status"] == "cancelled"


def test_sync_block_cancelled_by_keyboard_interrupt_is_cancelled(client: TelemetryClient) -> None:
    """KeyboardInterrupt (Ctrl-C) through a sync run also reports status cancelled."""
    with pytest.raises(KeyboardInterrupt), client.run():
        raise KeyboardInterrupt
    assert spooled(client)[-1]["data"]["status"] == "cancelled"


def test_explicit_finish_reports_exit_code_once(client: TelemetryClient) -> None:
    """``finish(status, exit_code=...)`` ends the run; leaving the block adds nothing."""
    clock = FakeClock()
    with client.run(clock=clock) as run:
        clock.now += 1.5
        run.finish("error", exit_code=3, reason="tests failed")
    evs = spooled(client)
    assert types_of(evs) == ["started", "completed"]
    done = evs[-1]["data"]
    assert done["status"] == "error"
    assert done["exit_code"] == 3
    assert done["duration_ms"] == 1500.0
    assert done["reason"] == "tests failed"


def test_exit_code_attribute_is_reported(client: TelemetryClient) -> None:
    """``run.exit_code`` set inside the block goes into completed."""
    with client.run() as run:
        run.exit_code = 0
    assert spooled(client)[-1]["data"]["exit_code"] == 0


def test_thousand_tiny_chunks_become_few_events_split_by_size(client: TelemetryClient) -> None:
    """1000 chunks, coalesce_bytes=1024, frozen clock: 8 events whose concatenation is the input."""
    chunks = [f"tok{i:04d} " for i in range(1000)]  # 8 bytes each
    with client.run(coalesce_bytes=1024, clock=FakeClock()) as run:
        for chunk in chunks:
            run.response_chunk(chunk)
    evs = [e["data"] for e in spooled(client) if e["type"] == "response_chunk"]
    assert len(evs) == 8
    assert "".join(d["content"] for d in evs) == "".join(chunks)
    assert [d["chunks"] for d in evs] == [128] * 7 + [104]
    assert [d["index"] for d in evs] == [128 * i for i in range(8)]
    assert all(len(d["content"]) == 1024 for d in evs[:-1])


def test_default_coalescing_makes_one_event_of_a_fast_token_stream(
    client: TelemetryClient,
) -> None:
    """With the defaults (4 KiB / 250 ms) 1000 one-character tokens are one event."""
    with client.run(clock=FakeClock()) as run:
        for i in range(1000):
            run.response_chunk(str(i % 10))
    chunks = [e["data"] for e in spooled(client) if e["type"] == "response_chunk"]
    assert len(chunks) == 1
    assert chunks[0]["chunks"] == 1000


def test_chunks_are_split_by_age_on_the_next_chunk(client: TelemetryClient) -> None:
    """A buffer older than coalesce_ms goes out with the chunk that finds it old (no timer)."""
    clock = FakeClock()
    chunks = [f"{i}," for i in range(1000)]
    with client.run(coalesce_bytes=1 << 20, coalesce_ms=95, clock=clock) as run:
        for chunk in chunks:
            run.response_chunk(chunk)
            clock.now += 0.010
    evs = [e["data"] for e in spooled(client) if e["type"] == "response_chunk"]
    assert "".join(d["content"] for d in evs) == "".join(chunks)
    # the first chunk at t, the 11th at t + 100 ms >= 95 ms: 11 chunks per event
    assert [d["chunks"] for d in evs] == [11] * 90 + [10]


def test_coalesce_bytes_zero_emits_every_chunk(client: TelemetryClient) -> None:
    """``coalesce_bytes=0`` turns coalescing off."""
    with client.run(coalesce_bytes=0, clock=FakeClock()) as run:
        for chunk in "abc":
            run.response_chunk(chunk)
    evs = [e["data"] for e in spooled(client) if e["type"] == "response_chunk"]
    assert [(d["content"], d["index"], d["chunks"]) for d in evs] == [
        ("a", 0, 1),
        ("b", 1, 1),
        ("c", 2, 1),
    ]


def test_other_events_flush_buffers_first_so_order_is_preserved(client: TelemetryClient) -> None:
    """Tool calls and other kinds flush pending chunks; stdout/stderr coalesce per stream."""
    with client.run(clock=FakeClock()) as run:
        run.response_chunk("a")
        run.response_chunk("b")
        run.tool_call("read_file", args={"path": "x"})
        run.response_chunk("c")
        run.bash_output("o1", stream="stdout")
        run.bash_output("e1", stream="stderr")
        run.bash_output("o2", stream="stdout")
        run.response_chunk("d")
        run.bash_output("o3")
        run.bash_output("", exit_code=2)
    got = [
        (e["type"], e["data"].get("content") or e["data"].get("output"), e["data"].get("stream"))
        for e in spooled(client)
    ]
    assert got == [
        ("started", None, None),
        ("response_chunk", "ab", None),
        ("tool_call", None, None),
        ("response_chunk", "c", None),
        ("bash_output", "o1o2", "stdout"),
        ("bash_output", "e1", "stderr"),
        ("response_chunk", "d", None),
        ("bash_output", "o3", "stdout"),
        ("completed", None, None),
    ]
    evs = spooled(client)
    assert evs[7]["data"]["exit_code"] == 2
    assert evs[7]["data"]["index"] == 2  # third stdout chunk of the run


def test_flush_emits_buffered_chunks_now(client: TelemetryClient) -> None:
    """``run.flush()`` emits what is buffered without waiting for size or age."""
    with client.run(clock=FakeClock()) as run:
        run.response_chunk("so far")
        run.flush()
        assert client.flush_sync(timeout=10).ok
        assert types_of(spooled(client)) == ["started", "response_chunk"]


def test_threads_appending_chunks_lose_nothing(client: TelemetryClient) -> None:
    """8 threads x 500 chunks into one run: every chunk once, run_seq contiguous, in order."""
    threads_n, per_thread = 8, 500
    barrier = threading.Barrier(threads_n)

    with client.run(coalesce_bytes=256) as run:

        def worker(t: int) -> None:
            barrier.wait()
            for i in range(per_thread):
                run.response_chunk(f"<{t}-{i}>")
                if i % 100 == 0:
                    run.thinking(f"t{t} step {i}")

        threads = [threading.Thread(target=worker, args=(t,)) for t in range(threads_n)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
    evs = spooled(client)
    assert [e["data"]["run_seq"] for e in evs] == list(range(1, len(evs) + 1))
    chunks = [e["data"] for e in evs if e["type"] == "response_chunk"]
    text = "".join(d["content"] for d in chunks)
    tokens = text[1:-1].split("><")
    assert sorted(tokens) == sorted(f"{t}-{i}" for t in range(threads_n) for i in range(per_thread))
    assert sum(d["chunks"] for d in chunks) == threads_n * per_thread
    assert len(chunks) < threads_n * per_thread / 10
    # each thread's own chunks stay in its order
    for t in range(threads_n):
        mine = [int(tok.split("-")[1]) for tok in tokens if tok.startswith(f"{t}-")]
        assert mine == sorted(mine)


def test_every_event_of_concurrent_runs_carries_its_own_run_id(client: TelemetryClient) -> None:
    """Two interleaved runs: each event names its run; each run counts from 1."""
    a = client.run(toolchain="a").start()
    b = client.run(toolchain="b").start()
    a.prompt_sent("pa")
    b.prompt_sent("pb")
    b.finish()
    with pytest.raises(RuntimeError), a:
        raise RuntimeError("x")
    evs = spooled(client)
    by_run: dict[str, list[dict[str, Any]]] = {}
    for e in evs:
        by_run.setdefault(e["data"]["run_id"], []).append(e)
    assert set(by_run) == {a.run_id, b.run_id}
    assert types_of(by_run[a.run_id]) == ["started", "prompt_sent", "error", "completed"]
    assert types_of(by_run[b.run_id]) == ["started", "prompt_sent", "completed"]
    for run_events in by_run.values():
        assert [e["data"]["run_seq"] for e in run_events] == list(range(1, len(run_events) + 1))


def test_run_events_carry_the_session_where_the_run_began(client: TelemetryClient) -> None:
    """Chunks emitted from another thread still carry the run's session and user ids."""
    with session_context(session_id="sess-9", user_id="bob"):
        run = client.run(coalesce_bytes=0)
    with run:
        th = threading.Thread(target=run.response_chunk, args=("from a thread",))
        th.start()
        th.join()
    evs = spooled(client)
    assert {(e["session_id"], e["user_id"]) for e in evs} == {("sess-9", "bob")}


def test_helpers_never_raise_for_telemetry_failures(
    client: TelemetryClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """If emitting itself fails, helpers swallow it, count it, and the block still runs."""

    def broken_emit(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("emit broke")

    monkeypatch.setattr(client, "emit", broken_emit)
    with client.run(coalesce_bytes=0) as run:
        run.prompt_sent("p")
        run.response_chunk("c")
        run.bash_output("o")
        run.flush()
        call_id = run.tool_call("t")
    assert call_id
    stats = client.tracking_stats()
    assert stats["tracking_errors"] >= 5
    assert stats["tracking_errors_by_call"]["run.prompt_sent"] == 1
    assert stats["tracking_errors_by_call"]["run.finish"] == 1


def test_disabled_client_gives_a_no_op_recorder(settings_factory: SettingsFactory) -> None:
    """With telemetry disabled the recorder does nothing, the block runs, errors propagate."""
    settings = settings_factory(enabled=False)
    client = TelemetryClient(settings)
    run = client.run(toolchain="x")

    def agent() -> None:
        with run:
            run.response_chunk("ignored")
            assert run.tool_call("t", call_id="c1") == "c1"
            raise ValueError("real")

    with pytest.raises(ValueError, match="real"):
        agent()
    assert run.status == "error"
    assert not settings.resolved_spool_dir.exists()
    assert client.stats()["emitted"] == 0


# -- the RunEvent base -----------------------------------------------------------------------

#: The wire types a run emits (the run stream in docs/protocol.md, plus tool calls and errors).
RUN_STREAM_TYPES = (
    "started",
    "prompt_sent",
    "response_chunk",
    "response_complete",
    "tool_call",
    "tool_result",
    "bash_command",
    "bash_output",
    "file_read",
    "file_write",
    "thinking",
    "completed",
    "error",
)
_REQUIRED: dict[str, dict[str, Any]] = {
    "tool_call": {"tool_name": "grep"},
    "error": {"error_type": "KeyError", "message": "k"},
    "bash_command": {"command": "ls"},
    "file_read": {"path": "a.py"},
    "file_write": {"path": "a.py"},
}


@pytest.mark.parametrize("type_", RUN_STREAM_TYPES)
def test_run_stream_types_share_the_run_event_base(type_: str) -> None:
    """Each run-stream type is a ``RunEvent``: ``run_id``/``run_seq`` are constructor
    keywords, in ``data`` when set and absent when not (the wire format of 0.1)."""
    cls = events.EVENT_TYPES[type_]
    assert issubclass(cls, events.RunEvent)
    required = _REQUIRED.get(type_, {})
    stamped = events.payload_of(cls(run_id="r-1", run_seq=3, **required))
    assert (stamped["run_id"], stamped["run_seq"]) == ("r-1", 3)
    assert stamped == {**required, "run_id": "r-1", "run_seq": 3}
    assert "run_id" not in events.payload_of(cls(**required))


def test_only_run_stream_types_are_run_events() -> None:
    """Session, chat, LLM-call, file and loss events carry no run fields."""
    others = {t for t, cls in events.EVENT_TYPES.items() if not issubclass(cls, events.RunEvent)}
    assert others == set(events.EVENT_TYPES) - set(RUN_STREAM_TYPES)
    assert others == {
        "session_start",
        "chat_turn",
        "llm_call",
        "file_operation",
        "change_decision",
        "telemetry_dropped",
    }
