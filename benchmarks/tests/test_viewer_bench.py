"""Smoke test of the session viewer benchmark (``benchmarks/viewer.py``).

Runs the whole harness on a small store (a 300-event session, 1,000 events in all, one
measurement each): the fill, the collector under uvicorn, the HTTP figures and the
browser's Navigation Timing. Asserts that it completes and prints its figures and the
target line; never a timing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent


def test_the_viewer_benchmark_runs_and_prints_its_figures(tmp_path: Path) -> None:
    if not os.path.exists("/usr/bin/chromium"):
        pytest.skip("/usr/bin/chromium not found: apt-get install -y chromium")
    out_json = tmp_path / "viewer.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("TELEMETRY_")}
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    done = subprocess.run(
        [
            sys.executable,
            str(BENCH / "viewer.py"),
            *("--events", "1000", "--session-events", "300", "--reps", "1"),
            *("--json", str(out_json)),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "session of 300 events, first page: server" in done.stdout
    assert "sessions list: server" in done.stdout
    assert "target: first screen <= 1000 ms" in done.stdout
    figures = json.loads(out_json.read_text())
    assert figures["browser_session"]["events"] == 200  # the first page only
    assert figures["browser_list"]["rows"] > 0
