"""The README's runnable examples keep working (run as a user would, in a subprocess)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson
from conftest import child_env

ROOT = Path(__file__).resolve().parent.parent


def test_agent_run_example_records_a_run_a_file_edit_and_usage(tmp_path: Path) -> None:
    """examples/agent_run.py exits 0; the spool holds its run stream, the file edit, the
    decision and the LLM call, and `stats` counts the call."""
    env = child_env(tmp_path / "spool")
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "agent_run.py")],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "status=success; flushed ok=True" in done.stdout

    def cli(*args: str) -> str:
        out = subprocess.run(
            [sys.executable, "-m", "telemetry_client", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        return out.stdout

    types = [orjson.loads(line)["type"] for line in cli("tail", "-n", "50", "--json").splitlines()]
    assert types[0] == "started"
    assert "completed" in types
    assert {"response_chunk", "tool_call", "file_operation", "change_decision", "llm_call"} <= set(
        types
    )
    assert types.count("response_chunk") == 1  # five tokens, coalesced
    usage = orjson.loads(cli("stats", "--format", "json"))
    assert usage["total"]["requests"] == 1
    assert usage["total"]["input_tokens"] == 612
