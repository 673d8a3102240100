"""Disabled mode is a true no-op: no directory, no thread, no socket, no file (CONTRACT §3).

``TELEMETRY_ENABLED=0`` and ``DO_NOT_TRACK=1`` (each alone, from the environment or as
arguments) make the whole client lifecycle -- construct, ``start()``, 1000 typed and
free-form ``emit()`` calls, ``flush_sync()``, ``close()``, ``with`` and ``async with`` --
leave no trace: the spool directory (and the default cache directory) is never created,
no thread is started, no socket is created and no file descriptor is left open.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from telemetry_client import TelemetryClient, TelemetrySettings, events

N_EVENTS = 1000

DISABLING_ENV = [
    pytest.param({"TELEMETRY_ENABLED": "0"}, id="TELEMETRY_ENABLED=0"),
    pytest.param({"TELEMETRY_ENABLED": "off"}, id="TELEMETRY_ENABLED=off"),
    pytest.param({"DO_NOT_TRACK": "1"}, id="DO_NOT_TRACK=1"),
    pytest.param({"DO_NOT_TRACK": "1", "TELEMETRY_ENABLED": "1"}, id="DO_NOT_TRACK-wins"),
]


@dataclass
class Trace:
    """What the watched thread did while being watched."""

    threads_started: list[str] = field(default_factory=list)
    sockets_created: int = 0
    new_threads: list[str] = field(default_factory=list)
    new_fds: list[str] = field(default_factory=list)


def _fds() -> dict[str, str]:
    out = {}
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):  # the fd listing the directory is gone already
            out[fd] = os.readlink(f"/proc/self/fd/{fd}")
    return out


@contextlib.contextmanager
def _watch() -> Iterator[Trace]:
    """Record thread starts and socket creations made by this thread, and new fds/threads.

    Socket creation from this thread also fails outright, so a swallowed attempt cannot
    go unnoticed either way.
    """
    trace = Trace()
    me = threading.get_ident()
    real_start = threading.Thread.start
    real_socket_init = socket.socket.__init__

    def start(self: threading.Thread) -> None:
        if threading.get_ident() == me:
            trace.threads_started.append(self.name)
        real_start(self)

    def socket_init(self: socket.socket, *args: Any, **kwargs: Any) -> None:
        if threading.get_ident() == me:
            trace.sockets_created += 1
            raise OSError("test_disabled: a disabled client must not create sockets")
        real_socket_init(self, *args, **kwargs)

    threads_before = set(threading.enumerate())
    fds_before = _fds()
    threading.Thread.start = start  # type: ignore[method-assign]
    socket.socket.__init__ = socket_init  # type: ignore[method-assign]
    try:
        yield trace
    finally:
        threading.Thread.start = real_start  # type: ignore[method-assign]
        socket.socket.__init__ = real_socket_init  # type: ignore[method-assign]
        trace.new_threads = [t.name for t in threading.enumerate() if t not in threads_before]
        trace.new_fds = sorted(
            target for fd, target in _fds().items() if fds_before.get(fd) != target
        )


def _assert_no_trace(trace: Trace, tmp_path: Path) -> None:
    assert trace.threads_started == []
    assert trace.new_threads == []
    assert trace.sockets_created == 0
    assert trace.new_fds == []
    assert sorted(os.listdir(tmp_path)) == [], "something was created on disk"


def _emit_everything(client: TelemetryClient) -> None:
    """N_EVENTS emits: typed events and free-form ones, with and without overrides."""
    for i in range(N_EVENTS // 4):
        client.emit(
            events.ChatTurn(
                model="gpt-4.1",
                provider="openai",
                user_prompt=f"prompt {i}",
                assistant_final="answer",
                latency_ms=812,
            )
        )
        client.emit(events.ToolCall(tool_name="bash", args={"cmd": "ls"}, result="ok"))
        client.emit("custom_type", {"i": i, "nested": {"list": [1, 2, 3]}})
        client.emit("custom_type", {"i": i}, session_id="s", user_id="u")


@pytest.fixture
def disabled_env(
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    clean_env: None,
) -> None:
    """The spool dir, the default cache dir and HOME all point inside the (empty) tmp_path.

    An endpoint is configured too: even with somewhere to send to, nothing connects.
    """
    monkeypatch.setenv("TELEMETRY_SPOOL_DIR", str(tmp_path / "spool"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("TELEMETRY_ENDPOINT", "http://127.0.0.1:9/api/v1/events")
    for name, value in request.param.items():
        monkeypatch.setenv(name, value)


@pytest.mark.parametrize("disabled_env", DISABLING_ENV, indirect=True)
def test_sync_lifecycle_leaves_no_trace(disabled_env: None, tmp_path: Path) -> None:
    """Construct, start, emit 1000 events, flush_sync, close, emit after close, ``with``."""
    with _watch() as trace:
        client = TelemetryClient()
        assert not client.enabled
        assert client.start() is client
        _emit_everything(client)
        flushed = client.flush_sync(timeout=5)
        assert flushed.ok
        assert flushed.pending_events == 0
        stats = client.stats()
        assert stats["spooled"] == 0
        assert stats["pending"] == 0
        assert client.close().ok
        assert client.closed
        client.emit("after_close", {"x": 1})  # still a silent no-op
        with TelemetryClient() as again:
            _emit_everything(again)
        assert again.closed
    _assert_no_trace(trace, tmp_path)


@pytest.mark.parametrize("disabled_env", DISABLING_ENV, indirect=True)
def test_async_lifecycle_leaves_no_trace(disabled_env: None, tmp_path: Path) -> None:
    """``async with``, ``await flush()`` and ``await aclose()``: no thread (not even anyio's)."""

    async def main() -> Trace:
        # Watch from inside the running loop: the loop's own self-pipe socket is not ours.
        with _watch() as trace:
            async with TelemetryClient() as client:
                assert not client.enabled
                _emit_everything(client)
                assert (await client.flush(timeout=5)).ok
            assert client.closed
            other = TelemetryClient()
            _emit_everything(other)
            assert (await other.aclose()).ok
            assert (await other.aclose()).ok  # idempotent
        return trace

    trace = asyncio.run(main())
    _assert_no_trace(trace, tmp_path)


@pytest.mark.parametrize(
    "arguments",
    [{"enabled": False}, {"do_not_track": True}],
    ids=["enabled=False", "do_not_track=True"],
)
def test_disabled_by_arguments_leaves_no_trace(
    arguments: dict[str, Any], tmp_path: Path, clean_env: None
) -> None:
    """Disabling through ``TelemetrySettings(...)`` arguments works the same way."""
    settings = TelemetrySettings(spool_dir=tmp_path / "spool", **arguments)
    assert not settings.active
    with _watch() as trace:
        client = TelemetryClient(settings)
        client.start()
        _emit_everything(client)
        assert client.flush_sync().ok
        assert client.close().ok
    _assert_no_trace(trace, tmp_path)
