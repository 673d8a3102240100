"""``telemetry-client proxy`` as a process: startup line, events in ``tail`` and ``stats``,
exit 2 on bad configuration, and SIGTERM draining an in-flight stream before it stops."""

from __future__ import annotations

import io
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from _upstream import Upstream
from proxy_kit import wait_until

from telemetry_client.cli.main import main

pytest_plugins = ["_proxy_fixtures"]

BODY = {"model": "fake-gated", "messages": [{"role": "user", "content": "one two"}]}


def _env(spool: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("TELEMETRY_")}
    env.pop("DO_NOT_TRACK", None)
    env.update(TELEMETRY_SPOOL_DIR=str(spool), TELEMETRY_FSYNC="off", **extra)
    return env


@pytest.fixture
def spool(tmp_path: Path) -> Path:
    return tmp_path / "spool"


def _start(spool: Path, upstream: str, *args: str) -> tuple[subprocess.Popen[str], int]:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "telemetry_client",
            "proxy",
            "--upstream",
            upstream,
            "--port",
            "0",
            "--provider",
            "openai",
            *args,
        ],
        env=_env(spool),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()  # blocks until ready (or the process died: empty)
    match = re.search(r"listening on http://127\.0\.0\.1:(\d+)/v1", line)
    if match is None:
        proc.kill()
        raise AssertionError(f"no startup line: {line!r} {proc.communicate()[1]}")
    return proc, int(match.group(1))


@pytest.fixture
def stopper() -> Iterator[list[subprocess.Popen[str]]]:
    procs: list[subprocess.Popen[str]] = []
    yield procs
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def _refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return True
    return False


def test_sigterm_lets_the_stream_finish_then_flushes(
    fake: Upstream,
    spool: Path,
    stopper: list[subprocess.Popen[str]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    proc, port = _start(spool, fake.base_url)
    stopper.append(proc)
    got: list[bytes] = []

    def stream() -> None:
        with (
            httpx.Client(timeout=30) as http,
            http.stream(
                "POST",
                f"http://127.0.0.1:{port}/v1/chat/completions",
                json={**BODY, "stream": True},
            ) as response,
        ):
            got.extend(response.iter_raw())

    reader = threading.Thread(target=stream)
    reader.start()
    assert fake.first_sent.wait(30)  # the stream is in flight, held by the upstream
    proc.send_signal(signal.SIGTERM)
    wait_until(lambda: _refused(port), what="the proxy stopped accepting")
    assert proc.poll() is None  # still serving the stream
    fake.gate.set()
    reader.join(30)
    assert b"".join(got).endswith(b"data: [DONE]\n\n")
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "stopped" in out
    # the call is in the spool: tail and stats (every process on the spool) show it
    for name, value in _env(spool).items():
        if name.startswith("TELEMETRY_"):
            monkeypatch.setenv(name, value)
    tail = io.StringIO()
    assert main(["tail", "--json", "--type", "llm_call"], out=tail) == 0
    [event] = [json.loads(line) for line in tail.getvalue().splitlines()]
    assert event["data"]["model"] == "fake-gated"
    assert event["data"]["output_tokens"] == 4
    stats = io.StringIO()
    assert main(["stats", "--format", "json"], out=stats) == 0
    summary = json.loads(stats.getvalue())
    assert summary["total"]["requests"] == 1
    assert summary["total"]["output_tokens"] == 4
    assert [m["key"] for m in summary["models"]] == ["openai:fake-gated"]


def test_bad_configuration_exits_2_with_one_line(spool: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "telemetry_client", "proxy"],
        env=_env(
            spool,
            TELEMETRY_PROXY_UPSTREAM="http://127.0.0.1:1/v1",
            TELEMETRY_PROXY_RATE_LIMIT="lots",
        ),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "TELEMETRY_PROXY_RATE_LIMIT='lots'" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
