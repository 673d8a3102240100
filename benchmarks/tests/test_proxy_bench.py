"""Smoke test of the proxy benchmark (``benchmarks/proxy.py --quick --no-litellm``).

Runs the whole harness on a few requests: the fake upstream and ``telemetry-client proxy``
as processes, the client at C = 1, 10, 100. Asserts that it completes and prints its
table, the CPU figure and the target line; never a timing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent


def test_proxy_benchmark_runs(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TELEMETRY_")}
    out = tmp_path / "results.json"
    done = subprocess.run(
        [
            sys.executable,
            str(BENCH / "proxy.py"),
            "--quick",
            "--no-litellm",
            "--requests",
            "5",
            "--json",
            str(out),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "LiteLLM not measured: --no-litellm" in done.stdout
    assert "telemetry-client proxy: CPU per request" in done.stdout
    assert "target p50 added TTFB <= 1 ms at C=1" in done.stdout
    results = json.loads(out.read_text())
    targets = {(r["target"], r["concurrency"]) for r in results["rows"]}
    assert targets == {(t, c) for t in ("direct", "telemetry-client proxy") for c in (1, 10, 100)}
