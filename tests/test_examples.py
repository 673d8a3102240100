"""The README's runnable examples keep working (run as a user would, in a subprocess)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import orjson
from conftest import CollectorHandle, child_env

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


_FASTAPI_AGENT_DRIVER = """\
import json, sys
sys.path.insert(0, sys.argv[1])
from fastapi.testclient import TestClient
from app import app

with TestClient(app, raise_server_exceptions=False) as http:
    rest = http.post("/chat", headers={"X-Session-ID": "s-1", "X-User-ID": "alice"},
                     json={"prompt": "retry policy"})
    path = http.post("/sessions/s-2/chat", json={"prompt": "hi"})
    with http.websocket_connect("/ws?session_id=s-3") as ws:
        ws.send_text("hello")
        reply = ws.receive_text()
    fail = http.get("/fail")
print(json.dumps({"rest": rest.status_code, "path": path.status_code, "ws": reply,
                  "fail": fail.status_code}))
"""


def test_fastapi_agent_example_records_sessions_tools_edits_and_errors(
    tmp_path: Path, collector: CollectorHandle
) -> None:
    """examples/fastapi_agent/app.py, driven through TestClient as its README describes
    (REST with a session header, a session from the path, a WebSocket, a failing route)
    against a real collector: the answers are as documented and every session's events,
    the tool call and the file edit from deep in tool code included, reach the collector
    with that session's id; the failing route becomes an error event."""
    env = child_env(
        tmp_path / "spool",
        TELEMETRY_ENDPOINT=collector.events_url,
        TELEMETRY_TOKEN=collector.token,
    )
    driver = tmp_path / "drive.py"
    driver.write_text(_FASTAPI_AGENT_DRIVER)
    done = subprocess.run(
        [sys.executable, str(driver), str(ROOT / "examples" / "fastapi_agent")],
        env=env,
        cwd=tmp_path,  # the example writes its notes under ./workspace
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    answers = orjson.loads(done.stdout)
    assert (answers["rest"], answers["path"], answers["fail"]) == (200, 200, 500)
    assert "hello" in answers["ws"]  # the WebSocket answered the prompt it was sent
    assert "- asked: hi" in (tmp_path / "workspace" / "notes.md").read_text()

    def types(session: str) -> set[str]:
        return {e["type"] for e in collector.query(session_id=session)["events"]}

    rest = collector.query(session_id="s-1")["events"]
    assert {e["user_id"] for e in rest} == {"alice"}
    assert {"session_start", "chat_turn", "tool_call", "file_operation", "http_request"} <= {
        e["type"] for e in rest
    }
    assert {"chat_turn", "tool_call", "file_operation", "http_request"} <= types("s-2")
    assert {"chat_turn", "tool_call", "websocket_session"} <= types("s-3")
    errors = collector.query(type="error")["events"]
    assert any("the agent tripped over a tool" in json.dumps(e["data"]) for e in errors)
