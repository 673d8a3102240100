"""``telemetry-client demo``: a simulated LLM-agent session recorded into a spool.

Spool-only for now: it emits what a FastAPI agent backend would (session start, chat
turns, tool calls, a file edit with its diff, an error, a run stream), flushes, and shows
``status`` and ``tail`` of the resulting spool. The upload leg joins when the uploader does.
"""

from __future__ import annotations

import argparse
import difflib
import shutil
import tempfile
import time
from pathlib import Path
from typing import TextIO

from . import events
from .cli import _cmd_status, _cmd_tail
from .client import TelemetryClient
from .context import session_context
from .settings import TelemetrySettings

__all__ = ["run_demo"]

_BEFORE = """def greet(name):
    print("hello " + name)
"""
_AFTER = '''def greet(name: str) -> str:
    """Return a greeting (was: printed it)."""
    return f"hello {name}"
'''


def _simulate(client: TelemetryClient) -> int:
    """Emit one realistic agent session; returns how many events were emitted."""
    n = 0
    with session_context(session_id="demo-session-1"):
        client.emit(events.SessionStart(app_version="demo", os="linux", python_version="3"))
        n += 1
        for turn in range(3):
            client.emit(
                events.ChatTurn(
                    model="gpt-4.1",
                    provider="openai",
                    user_prompt=f"Refactor greet() to return the string (turn {turn})",
                    assistant_final="Done: greet() now returns the greeting. " * (turn + 1),
                    latency_ms=800 + 37 * turn,
                    input_tokens=412,
                    output_tokens=96,
                )
            )
            client.emit(
                events.ToolCall(
                    tool_name="read_file",
                    args={"path": "app/greet.py", "headers": {"Authorization": "Bearer sk-demo"}},
                    result=_BEFORE,
                    duration_ms=3.2,
                )
            )
            n += 2
        diff = "".join(
            difflib.unified_diff(
                _BEFORE.splitlines(keepends=True),
                _AFTER.splitlines(keepends=True),
                "a/app/greet.py",
                "b/app/greet.py",
            )
        )
        client.emit(
            events.FileOperation(
                path="app/greet.py",
                op="edit",
                op_id="op-1",
                before=_BEFORE,
                after=_AFTER,
                diff=diff,
                loc_added=3,
                loc_removed=2,
            )
        )
        client.emit(events.ChangeDecision(op_id="op-1", decision="accept"))
        n += 2
        try:
            config: dict[str, str] = {}
            config["missing"]
        except KeyError as exc:
            client.emit(events.Error.from_exception(exc, context={"tool": "lookup"}))
            n += 1
        run = "run-1"
        client.emit(events.Started(run_id=run, toolchain="claude", model="sonnet"))
        client.emit(events.PromptSent(run_id=run, prompt="Add type hints", tokens=5))
        client.emit(events.BashCommand(run_id=run, command="pytest -q"))
        client.emit(events.BashOutput(run_id=run, output="3 passed", exit_code=0))
        client.emit(events.Completed(run_id=run, status="success", exit_code=0, duration_ms=4200))
        client.emit("custom_metric", {"password": "hunter2", "note": "free-form events work too"})
        n += 6
    return n


def run_demo(out: TextIO, *, spool_dir: str | None = None, keep: bool = False) -> int:
    """Run the demo, printing what happens; returns the exit code."""
    tmp = None
    if spool_dir is None:
        tmp = tempfile.mkdtemp(prefix="telemetry-demo-")
        spool_dir = str(Path(tmp) / "spool")
    settings = TelemetrySettings(
        spool_dir=spool_dir, endpoint=None, enabled=True, do_not_track=False
    )
    out.write(f"telemetry-client demo: spool at {spool_dir}\n\n")
    try:
        started = time.perf_counter()
        with TelemetryClient(settings) as client:
            n = _simulate(client)
            result = client.flush_sync(timeout=10)
            stats = client.stats()
        took = (time.perf_counter() - started) * 1000
        out.write(
            f"emitted {n} events of a simulated agent session; flush ok={result.ok} "
            f"in {took:.0f} ms; spooled={stats['spooled']} redacted={stats['redacted']}\n\n"
        )
        out.write("$ telemetry-client status\n")
        _cmd_status(settings, argparse.Namespace(json=False), out)
        out.write("\n$ telemetry-client tail -n 8\n")
        _cmd_tail(settings, argparse.Namespace(json=False, n=8, type=None), out)
        return 0 if result.ok else 1
    finally:
        if tmp is not None and not keep:
            shutil.rmtree(tmp, ignore_errors=True)
