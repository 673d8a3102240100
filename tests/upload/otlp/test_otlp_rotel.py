"""A real OpenTelemetry collector receives a real run: ``rotel`` (a Rust OTel collector
shipped as a Python wheel, ``pip install --pre rotel``).

``rotel-agent start --otlp-http-endpoint 127.0.0.1:PORT --exporter blackhole --debug-log
traces --debug-log logs --debug-log-verbosity detailed`` prints what it decoded; the test
finds the run's spans (with their trace id and parent) and log records there. Skipped, with
the reason, only when the wheel is not installed.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import wait_until

from telemetry_client import TelemetryClient, TelemetrySettings
from telemetry_client.upload.otlp.spans import run_ids


def _rotel_agent() -> Path | None:
    found = shutil.which("rotel-agent")
    if found:
        return Path(found)
    try:
        import rotel  # type: ignore[import-untyped]
    except ImportError:
        return None
    path = Path(rotel.__file__).parent / "rotel-agent"
    return path if path.is_file() else None


AGENT = _rotel_agent()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _listening(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
        return True
    return False


@pytest.fixture
def rotel(tmp_path: Path) -> Iterator[tuple[str, list[str]]]:
    """A running rotel-agent: (its OTLP/HTTP base URL, the lines it printed so far)."""
    if AGENT is None:
        pytest.skip("rotel is not installed (pip install --pre rotel): no rotel-agent binary")
    http, grpc = _free_port(), _free_port()
    proc = subprocess.Popen(
        [
            str(AGENT),
            "start",
            "--otlp-http-endpoint",
            f"127.0.0.1:{http}",
            "--otlp-grpc-endpoint",
            f"127.0.0.1:{grpc}",
            "--exporter",
            "blackhole",
            "--debug-log",
            "traces",
            "--debug-log",
            "logs",
            "--debug-log-verbosity",
            "detailed",
            "--pid-file",
            str(tmp_path / "rotel.pid"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line.rstrip("\n"))

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    try:
        wait_until(lambda: _listening(http) or proc.poll() is not None, 30, what="rotel up")
        assert proc.poll() is None, "\n".join(lines)
        yield f"http://127.0.0.1:{http}", lines
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        reader.join(10)
        assert proc.stdout is not None
        proc.stdout.close()


def test_rotel_prints_the_spans_and_log_records_of_a_real_run(
    rotel: tuple[str, list[str]], settings_factory: Callable[..., TelemetrySettings]
) -> None:
    base, lines = rotel
    settings = settings_factory(otlp_endpoint=base, fsync="off", linger_ms=10, app="rotel-app")
    with TelemetryClient(settings) as client:
        with client.run(toolchain="claude", model="sonnet") as run:
            run.prompt_sent("find the bug")
            run.tool_call("grep", args={"pattern": "bug"}, duration_ms=4.0)
        assert client.flush_sync(20).ok
    trace, root = run_ids(run.run_id)

    def text() -> str:
        return "\n".join(lines)

    wait_until(lambda: "EventName: prompt_sent" in text(), 20, what="rotel printed the logs")
    wait_until(lambda: "Name           : invoke_agent claude" in text(), 20, what="spans")
    out = text()
    assert "Name           : execute_tool grep" in out
    assert f"Trace ID       : {trace.hex()}" in out
    assert f"Parent ID      : {root.hex()}" in out  # the tool call is the root's child
    assert "EventName: started" in out
    assert "service.name: Str(rotel-app)" in out
    assert "gen_ai.operation.name: Str(invoke_agent)" in out
