"""Events for the viewer's tests, posted through the collector's ingest API.

:func:`story` is a small agent session with one event of every type the viewer renders
(and a run grouping some of them); :func:`hostile` is a session of payloads that try to
run script, inject markup or load remote resources. Helpers post NDJSON with a bearer
token, like the SDK.
"""

from __future__ import annotations

import hashlib
import itertools
from typing import Any

import httpx
import orjson

__all__ = ["Poster", "envelope", "hostile", "story"]

_ids = itertools.count(1)
T0 = "2026-12-01T10:00:00"


def envelope(session: str, etype: str, data: Any, n: int, *, user: str = "alice") -> dict[str, Any]:
    """An envelope number ``n`` of ``session`` (ts ``n`` ms after 10:00 UTC)."""
    uid = next(_ids)
    seconds, ms = divmod(n, 1000)
    minutes, seconds = divmod(seconds, 60)
    return {
        "id": f"0190f000-0000-7000-8000-{uid:012x}",
        "type": etype,
        "ts": f"2026-12-01T10:{minutes:02d}:{seconds:02d}.{ms:03d}000Z",
        "session_id": session,
        "user_id": user,
        "machine_id": "0123456789abcdef",
        "app": "viewer-tests",
        "app_version": "1.0",
        "seq": n,
        "data": data,
    }


class Poster:
    """Posts events and attachments to a collector with one token."""

    def __init__(self, url: str, token: str) -> None:
        self.client = httpx.Client(
            base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=30
        )

    def events(self, events: list[dict[str, Any]]) -> None:
        body = b"".join(orjson.dumps(e) + b"\n" for e in events)
        response = self.client.post(
            "/api/v1/events", content=body, headers={"Content-Type": "application/x-ndjson"}
        )
        assert response.status_code == 200, response.text

    def attachment(self, blob: bytes, content_type: str = "text/plain") -> dict[str, Any]:
        sha = hashlib.sha256(blob).hexdigest()
        response = self.client.post(
            "/api/v1/attachments",
            content=blob,
            headers={"X-Attachment-SHA256": sha, "Content-Type": content_type},
        )
        assert response.status_code in (200, 201), response.text
        return {"$attachment": {"sha256": sha, "size": len(blob), "content_type": content_type}}

    def close(self) -> None:
        self.client.close()


DIFF = """--- a/app.py
+++ b/app.py
@@ -1,3 +1,4 @@
 import os
-print("hello")
+print("hello, world")
+print(os.getcwd())
 # end
"""


def story(session: str, attachment: dict[str, Any]) -> list[dict[str, Any]]:
    """One event of each rendered type, in time order."""
    items: list[tuple[str, Any]] = [
        ("session_start", {"os": "linux", "python_version": "3.11"}),
        (
            "chat_turn",
            {
                "model": "gpt-4.1",
                "provider": "openai",
                "user_prompt": "Fix the greeting",
                "assistant_final": "Done: the greeting now says hello, world.",
                "latency_ms": 812,
                "input_tokens": 120,
                "output_tokens": 40,
            },
        ),
        (
            "llm_call",
            {
                "provider": "anthropic",
                "model": "claude-sonnet-4",
                "status": 200,
                "latency_ms": 1530,
                "input_tokens": 900,
                "output_tokens": 210,
                "endpoint": "/v1/messages",
            },
        ),
        ("started", {"toolchain": "claude-code", "model": "claude-sonnet-4"}),
        ("prompt_sent", {"prompt": "Edit app.py so it greets the world", "tokens": 12}),
        ("thinking", {"content": "The user wants the greeting changed; edit app.py."}),
        ("response_chunk", {"content": "I will "}),
        ("response_chunk", {"content": "edit app.py "}),
        ("response_chunk", {"content": "now."}),
        ("tool_call", {"tool_name": "read_file", "call_id": "call-1", "args": {"path": "app.py"}}),
        (
            "tool_result",
            {"tool_name": "read_file", "call_id": "call-1", "result": "import os\nprint('hello')"},
        ),
        ("bash_command", {"command": "python app.py", "cwd": "/work"}),
        ("bash_output", {"output": "hello, world\n/work\n", "stream": "stdout", "exit_code": 0}),
        (
            "file_operation",
            {
                "path": "app.py",
                "op": "edit",
                "op_id": "op-1",
                "diff": DIFF,
                "loc_added": 2,
                "loc_removed": 1,
            },
        ),
        ("change_decision", {"op_id": "op-1", "decision": "accept"}),
        (
            "error",
            {
                "error_type": "ValueError",
                "message": "bad greeting length",
                "stack_trace": "Traceback (most recent call last):\n"
                '  File "app.py", line 3\nValueError: bad greeting length',
            },
        ),
        ("file_write", {"path": "notes.txt", "size": 31, "content": attachment}),
        ("completed", {"status": "success", "exit_code": 0, "duration_ms": 4200}),
        ("custom_metric", {"name": "cache_hits", "value": 7, "tags": {"tier": "l1"}}),
    ]
    return [envelope(session, t, d, n * 10) for n, (t, d) in enumerate(items)]


BIG = 10 * 1024 * 1024


def hostile(session: str) -> list[dict[str, Any]]:
    """Payloads that must render as inert text."""
    nested: Any = "bottom"
    for _ in range(200):
        nested = {"n": nested}
    xss = "<script>window.__pwned = 1</script>"
    items: list[tuple[str, Any]] = [
        (
            "chat_turn",
            {
                "user_prompt": xss,
                "assistant_final": '<img src=x onerror="window.__pwned=2">',
                "model": "<b>bold</b>",
                "provider": "</pre><script>window.__pwned=3</script>",
            },
        ),
        (
            "tool_call",
            {
                "tool_name": '<a href="javascript:window.__pwned=4">click</a>',
                "call_id": 'x" onmouseover="window.__pwned=5',
                "args": {"url": "javascript:window.__pwned=6"},
            },
        ),
        (
            "bash_output",
            {
                "output": '<img src="http://203.0.113.7/tracker.png">'
                '<link rel="stylesheet" href="https://203.0.113.7/x.css">'
            },
        ),
        (
            "file_operation",
            {
                "path": "<svg onload=window.__pwned=7>",
                "op": "edit",
                "diff": '+<iframe src="https://203.0.113.7/"></iframe>\n-<style>body{display:none}</style>\n',
            },
        ),
        ("error", {"error_type": "<marquee>", "message": "x" * BIG, "stack_trace": xss}),
        ("deep_thing", nested),
        ("weird", {"html": "<form action=https://203.0.113.7><input name=q></form>"}),
    ]
    return [envelope(session, t, d, n * 10) for n, (t, d) in enumerate(items)]
