"""The benchmark's fake OpenAI upstream: a raw ASGI app, served by ``python -m`` this module.

``/v1/chat/completions`` answers a stream of ``CHUNKS`` SSE chunks (OpenAI's shape, usage
only when asked, as the API does) or one JSON body; no gaps between chunks, so what is
measured is the path, not the model. ``python benchmarks/_proxy_upstream.py PORT``.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import uvicorn

CHUNKS = 20
_USAGE = {"prompt_tokens": 12, "completion_tokens": CHUNKS, "total_tokens": 12 + CHUNKS}


def _chunk(model: str, content: str, usage: bool) -> bytes:
    obj: dict[str, Any] = {
        "id": "chatcmpl-bench",
        "object": "chat.completion.chunk",
        "created": 1_700_000_000,
        "model": model,
        "choices": [{"index": 0, "delta": {"content": content}, "finish_reason": None}],
    }
    if usage:
        obj["usage"] = None
    return b"data: " + json.dumps(obj, separators=(",", ":")).encode() + b"\n\n"


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    if scope["path"].endswith("/models"):
        data = json.dumps({"object": "list", "data": [{"id": "fake-model", "object": "model"}]})
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": data.encode()})
        return
    request = json.loads(body or b"{}")
    model = request.get("model", "fake-model")
    if not request.get("stream"):
        answer = {
            "id": "chatcmpl-bench",
            "object": "chat.completion",
            "created": 1_700_000_000,
            "model": model,
            "usage": _USAGE,
            "choices": [
                {
                    "index": 0,
                    "finish_reason": "stop",
                    "message": {"role": "assistant", "content": "word " * CHUNKS},
                }
            ],
        }
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": json.dumps(answer).encode()})
        return
    usage = bool((request.get("stream_options") or {}).get("include_usage"))
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"text/event-stream")],
        }
    )
    for _ in range(CHUNKS):
        await send(
            {"type": "http.response.body", "body": _chunk(model, "word ", usage), "more_body": True}
        )
    tail = b""
    if usage:
        last = {
            "id": "chatcmpl-bench",
            "object": "chat.completion.chunk",
            "created": 1_700_000_000,
            "model": model,
            "choices": [],
            "usage": _USAGE,
        }
        tail = b"data: " + json.dumps(last, separators=(",", ":")).encode() + b"\n\n"
    await send({"type": "http.response.body", "body": tail + b"data: [DONE]\n\n"})


if __name__ == "__main__":
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=int(sys.argv[1]),
        log_level="warning",
        access_log=False,
        lifespan="off",
    )
