"""``telemetry-client demo``: the whole data path on one machine, on loopback.

A simulated LLM-agent session (chat turns, tool calls, a file edit with its diff, a large
tool output that becomes an attachment, an error, a run stream) is recorded while the
collector is down, so it piles up in the spool; then the reference collector starts
in-process on a free loopback port, ``flush`` drains the spool, a live client uploads in
the background, and the demo reads back what the collector stored (and verifies the
attachment's hash).
"""

from __future__ import annotations

import argparse
import difflib
import hashlib
import os
import secrets
import shutil
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any, TextIO

import httpx
import orjson

from telemetry_client import events
from telemetry_client.cli._common import EXIT_CONFIG, EXIT_OK
from telemetry_client.cli.flush import run_flush
from telemetry_client.cli.status import show_status
from telemetry_client.client import TelemetryClient
from telemetry_client.context import session_context
from telemetry_client.settings import TelemetrySettings

__all__ = ["command", "run_demo"]

_SESSION = "demo-session-1"

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
    with session_context(session_id=_SESSION):
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


def _big_log() -> str:
    """A realistic large tool output (~200 KB): goes out of the event as an attachment."""
    return "".join(
        f"2026-11-21T10:{i // 60 % 60:02d}:{i % 60:02d}Z test_case_{i} PASSED in 0.{i % 97:02d}s\n"
        for i in range(4000)
    )


def _step(out: TextIO, text: str) -> None:
    out.write(f"\n== {text}\n")


def command(settings: TelemetrySettings, args: argparse.Namespace, out: TextIO) -> int:
    """``demo`` as parsed by ``cli.main``: its own settings, never the app's spool."""
    return run_demo(out, spool_dir=args.spool_dir, keep=args.keep)


def run_demo(out: TextIO, *, spool_dir: str | None = None, keep: bool = False) -> int:
    """Run the end-to-end demo on loopback, printing what happens; returns the exit code."""
    try:
        from telemetry_client.collector import CollectorConfig, running_collector
    except ImportError as exc:  # the [collector] extra is missing
        out.write(
            f"the demo needs the collector extra: pip install 'telemetry-client[collector]'"
            f" ({exc})\n"
        )
        return EXIT_CONFIG
    tmp = tempfile.mkdtemp(prefix="telemetry-demo-")
    spool_dir = spool_dir or str(Path(tmp) / "spool")
    token = secrets.token_urlsafe(24)
    offline = TelemetrySettings(
        spool_dir=spool_dir, endpoint=None, enabled=True, do_not_track=False
    )
    out.write(f"telemetry-client demo\nspool: {spool_dir}\n")
    try:
        _step(out, "1. an agent session while the collector is unreachable (spool only)")
        with TelemetryClient(offline) as client:
            n = _simulate(client)
            client.emit(
                events.ToolCall(
                    tool_name="run_tests",
                    args={"path": "tests/"},
                    result=_big_log(),
                    duration_ms=5312.0,
                ),
                session_id=_SESSION,
            )
            n += 1
            client.flush_sync(timeout=10)
            stats = client.stats()
        out.write(
            f"emitted {n} events; spooled={stats['spooled']} redacted={stats['redacted']}"
            f" attachments={stats.get('attachments', 0)}\n\n$ telemetry-client status\n"
        )
        show_status(offline, out)

        _step(out, "2. the collector comes up (reference collector on loopback)")
        config = CollectorConfig(data_dir=Path(tmp) / "collector", tokens=[token])
        with running_collector(config) as collector:
            out.write(f"collector listening on {collector.url}\n")
            online = TelemetrySettings(
                spool_dir=spool_dir,
                endpoint=collector.events_url,
                token=token,
                enabled=True,
                do_not_track=False,
            )
            out.write("\n$ telemetry-client flush\n")
            code = run_flush(online, 30.0, out, out)
            if code != EXIT_OK:
                return code

            _step(out, "3. the app keeps running: live events are uploaded in the background")
            with TelemetryClient(online) as client, session_context(session_id=_SESSION):
                client.emit(
                    events.ChatTurn(
                        model="gpt-4.1",
                        provider="openai",
                        user_prompt="Thanks! Anything else?",
                        assistant_final="All tests pass.",
                        latency_ms=640,
                    )
                )
                n += 1
                result = client.flush_sync(timeout=10)
            out.write(f"flush ok={result.ok} (acknowledged by the collector)\n")

            _step(out, "4. what the collector stored")
            code = _summary(out, collector, token, expected=n)
            _viewer(out, collector.url, Path(tmp), token, keep=keep)
            return code
    finally:
        if not keep:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            out.write(f"\nkept {tmp}\n")


def _viewer(out: TextIO, url: str, tmp: Path, token: str, *, keep: bool) -> None:
    """Print the session viewer's URL of the demo session; with ``keep``, serve it until
    Ctrl-C. The token is never printed: it is written to an owner-only file to sign in."""
    viewer = f"{url}/ui/sessions/{_SESSION}"
    if not keep:
        out.write(f"\nviewer: {viewer}\n  (stops with the demo; `--keep` keeps it running)\n")
        return
    token_file = tmp / "collector-token"
    fd = os.open(token_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    out.write(
        f"\nviewer: {viewer}\n  sign in with the token in {token_file}\n"
        "  the collector keeps running; Ctrl-C stops it\n"
    )
    out.flush()
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        out.write("stopped\n")


def _summary(out: TextIO, collector: Any, token: str, *, expected: int) -> int:
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=collector.url, headers=headers, timeout=10) as http:
        stored: list[dict[str, Any]] = []
        offset = 0
        while True:
            page = http.get(
                "/api/v1/events", params={"session_id": _SESSION, "offset": offset, "limit": 1000}
            ).json()
            stored.extend(page["events"])
            offset += len(page["events"])
            if not page["events"] or offset >= page["total"]:
                break
        by_type = Counter(e["type"] for e in stored)
        out.write(f"{len(stored)} events stored for session {_SESSION} (expected {expected}):\n")
        for kind, count in sorted(by_type.items()):
            out.write(f"  {kind:<18} {count}\n")
        verified = 0
        for event in stored:
            for ref in _refs(event.get("data")):
                blob = http.get(f"/api/v1/attachments/{ref['sha256']}")
                ok = (
                    blob.status_code == 200
                    and hashlib.sha256(blob.content).hexdigest() == (ref["sha256"])
                )
                verified += ok
                out.write(
                    f"  attachment {ref['sha256'][:12]}… {ref['size']} bytes,"
                    f" sha256 {'verified' if ok else 'MISMATCH'}\n"
                )
        custom = [e for e in stored if e["type"] == "custom_metric"]
        if custom:
            out.write(f"  redacted on the client: {orjson.dumps(custom[0]['data']).decode()}\n")
    ok = len(stored) == expected and verified >= 1
    out.write("\ndemo " + ("OK: every event arrived exactly once" if ok else "FAILED") + "\n")
    return 0 if ok else 1


def _refs(obj: Any) -> list[dict[str, Any]]:
    if isinstance(obj, dict):
        ref = obj.get("$attachment")
        if isinstance(ref, dict) and "sha256" in ref and not ref.get("truncated"):
            return [ref]
        return [r for v in obj.values() for r in _refs(v)]
    if isinstance(obj, list):
        return [r for v in obj for r in _refs(v)]
    return []
