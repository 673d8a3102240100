"""Disabled mode is a true no-op: no directory, thread, socket or file (README, "Configuration").

``TELEMETRY_ENABLED=0`` and ``DO_NOT_TRACK=1`` (each alone, from the environment or as
arguments) make the whole client lifecycle -- construct, ``start()``, 1000 typed and
free-form ``emit()`` calls, ``flush_sync()``, ``close()``, ``with`` and ``async with`` --
leave no trace: the spool directory (and the default cache directory) is never created,
no thread is started, no socket is created and no file descriptor is left open.

Disabled means disabled: invalid values of the other ``TELEMETRY_*`` variables do not stop the
client, the FastAPI lifespan or the CLI's ``status``/``flush`` (one warning names them).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest
from conftest import child_env

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


# --- bad configuration while disabled: the app still starts, nothing happens ------------------

SECRET = "s3cr3t-TOKEN-value"  # noqa: S105 - a fake token to look for in output
BAD_ENV = {
    "TELEMETRY_SPOOL_MAX_BYTES": "banana",
    "TELEMETRY_TOKEN": f"{SECRET} with spaces",
    "TELEMETRY_ENDPOINT": "ftp://collector/api",
    "TELEMETRY_LINGER_MS": "5s",
}


@pytest.fixture
def bad_env(monkeypatch: pytest.MonkeyPatch, disabled_env: None) -> None:
    """On top of a disabling environment: invalid values, and no "already warned" memory."""
    from telemetry_client import settings as settings_module

    monkeypatch.setattr(settings_module, "_warned", set(), raising=False)
    for name, value in BAD_ENV.items():
        monkeypatch.setenv(name, value)


@pytest.mark.parametrize("disabled_env", DISABLING_ENV, indirect=True)
def test_bad_values_when_disabled_client_starts_and_leaves_no_trace(
    bad_env: None, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """TelemetryClient() and TelemetryClient(TelemetrySettings()) start despite invalid values,
    stay a no-op, and log one warning naming the variables (not the token's value)."""
    with caplog.at_level("WARNING", logger="telemetry_client"), _watch() as trace:
        for client in (TelemetryClient(), TelemetryClient(TelemetrySettings())):
            assert not client.enabled
            client.start()
            _emit_everything(client)
            assert client.flush_sync(timeout=5).ok
            assert client.close().ok
    _assert_no_trace(trace, tmp_path)
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1, warnings
    for name in BAD_ENV:
        assert name in warnings[0]
    assert SECRET not in caplog.text


@pytest.mark.parametrize("disabled_env", DISABLING_ENV[:1] + DISABLING_ENV[2:3], indirect=True)
def test_bad_values_when_disabled_fastapi_app_starts(bad_env: None, tmp_path: Path) -> None:
    """``telemetry_lifespan()`` and ``instrument_app()`` build their settings and start."""
    from fastapi import FastAPI

    from telemetry_client.integrations.fastapi import instrument_app, telemetry_lifespan

    async def main() -> None:
        for app in (FastAPI(lifespan=telemetry_lifespan()), instrument_app(FastAPI())):
            async with app.router.lifespan_context(app):
                assert not app.state.telemetry.enabled
                app.state.telemetry.emit("custom_type", {"x": 1})

    asyncio.run(main())
    assert sorted(os.listdir(tmp_path)) == []


def _run_cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "telemetry_client", *args],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize("switch", [{"TELEMETRY_ENABLED": "0"}, {"DO_NOT_TRACK": "1"}], ids=str)
def test_bad_values_when_disabled_cli_status_and_flush_exit_0(
    tmp_path: Path, switch: dict[str, str]
) -> None:
    """``status`` shows disabled and ``flush`` exits 0; stderr is one warning line per run."""
    env = child_env(tmp_path / "spool", **BAD_ENV, **switch)
    status = _run_cli(env, "status", "--json")
    assert status.returncode == 0, status.stderr
    assert orjson.loads(status.stdout)["enabled"] is False
    text = _run_cli(env, "status")
    assert text.returncode == 0, text.stderr
    assert "enabled:          no" in text.stdout
    flush = _run_cli(env, "flush")
    assert flush.returncode == 0, flush.stderr
    assert "disabled" in flush.stdout
    for proc in (status, text, flush):
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1, proc.stderr
        for name in BAD_ENV:
            assert name in lines[0]
        assert SECRET not in proc.stderr + proc.stdout
        assert "Traceback" not in proc.stderr
    assert not (tmp_path / "spool").exists()


def test_bad_value_when_enabled_cli_exits_2_saying_how_to_disable(tmp_path: Path) -> None:
    """Enabled with a bad value: exit 2, one line naming the variable and the way out."""
    env = child_env(tmp_path / "spool", TELEMETRY_SPOOL_MAX_BYTES="banana")
    proc = _run_cli(env, "status")
    assert proc.returncode == 2
    (line,) = proc.stderr.strip().splitlines()
    assert "TELEMETRY_SPOOL_MAX_BYTES='banana'" in line
    assert line.endswith("(or set TELEMETRY_ENABLED=0 to disable telemetry)")
