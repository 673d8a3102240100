"""A fake OpenAI- and Anthropic-compatible upstream for the proxy tests, on 127.0.0.1.

Deterministic (two identical requests get byte-identical bodies) and observable: every
request it receives is logged in :attr:`Upstream.received`, and threading events let a
test hold a stream between two chunks (no sleeps anywhere). As the real APIs:

- ``/v1/chat/completions``: JSON or SSE (one chunk per word); with
  ``stream_options.include_usage`` every chunk carries ``"usage":null`` and one more chunk
  (``"choices":[]`` and the usage) precedes ``[DONE]``; without it, no usage at all.
- ``/v1/messages`` (Anthropic): usage in ``message_start`` and ``message_delta``.
- ``/v1/models``: a model list; ``/v1/echo/...`` (any method): what arrived, as JSON.

Models with behaviour: ``fake-gated`` (stream: the role chunk and first word, then waits
for :attr:`Upstream.gate`), ``fake-slow-head`` (waits for the gate before its head),
``fake-stall`` / ``claude-fake-stall`` (two words, then wait for the client to go away;
:attr:`Upstream.disconnected` is set then), ``fake-500`` / ``fake-429`` (errors, 429 with
``Retry-After``). :attr:`Upstream.reject_stream_options` makes it answer 400 to any
``stream_options``, as some OpenAI-compatible servers do.
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import anyio.to_thread
from _fake_llm import answer_chunks, answer_for, prompt_tokens_for
from proxy_kit import serve_asgi
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

CHAT_ID = "chatcmpl-proxy-0001"
MESSAGE_ID = "msg_proxy_0001"
CREATED = 1_700_000_000
GATE_TIMEOUT_S = 30.0  # a gate never opened must not hang the server forever


def _dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"))


def _sse(obj: Any, event: str | None = None) -> bytes:
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {_dumps(obj)}\n\n".encode()


@dataclass
class Upstream:
    """The fake's observable state (shared with its server thread)."""

    host: str = "127.0.0.1"
    port: int = 0
    received: list[dict[str, Any]] = field(default_factory=list)
    gate: threading.Event = field(default_factory=threading.Event)
    first_sent: threading.Event = field(default_factory=threading.Event)
    disconnected: threading.Event = field(default_factory=threading.Event)
    reject_stream_options: bool = False

    @property
    def origin(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def base_url(self) -> str:
        return f"{self.origin}/v1"

    def reset(self) -> None:
        self.received.clear()
        self.gate = threading.Event()
        self.first_sent = threading.Event()
        self.disconnected = threading.Event()
        self.reject_stream_options = False


async def _wait(event: threading.Event) -> None:
    await anyio.to_thread.run_sync(event.wait, GATE_TIMEOUT_S)


async def _wait_for_disconnect(request: Request, state: Upstream) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass
    state.disconnected.set()


def _error(status: int, kind: str) -> JSONResponse:
    body = {"error": {"message": f"fake {kind}", "type": kind, "param": None, "code": kind}}
    headers = {"retry-after": "7"} if status == 429 else None
    return JSONResponse(body, status_code=status, headers=headers)


def _chunk(model: str, delta: dict[str, Any], finish: str | None, usage: bool) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": CHAT_ID,
        "object": "chat.completion.chunk",
        "created": CREATED,
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    if usage:
        out["usage"] = None  # as OpenAI: every chunk says usage:null when usage was asked for
    return out


def create_app(state: Upstream) -> Starlette:
    async def log(request: Request) -> bytes:
        body = await request.body()
        state.received.append(
            {
                "method": request.method,
                "path": request.url.path,
                "query": request.url.query,
                "headers": [(k.decode(), v.decode()) for k, v in request.headers.raw],
                "body": body,
            }
        )
        return body

    async def chat(request: Request) -> Response:
        body = json.loads(await log(request))
        if state.reject_stream_options and "stream_options" in body:
            return _error(400, "invalid_request_error")
        model = body["model"]
        if model in ("fake-500", "fake-429"):
            return _error(int(model[-3:]), "server_error" if model == "fake-500" else "rate")
        if model == "fake-slow-head":
            await _wait(state.gate)
        messages = body["messages"]
        answer = answer_for(messages)
        prompt, completion = prompt_tokens_for(messages), len(answer.split())
        usage: dict[str, Any] = {"prompt_tokens": prompt, "completion_tokens": completion}
        usage["total_tokens"] = prompt + completion
        usage["prompt_tokens_details"] = {"cached_tokens": 1}
        usage["completion_tokens_details"] = {"reasoning_tokens": 0}
        if not body.get("stream"):
            message = {"role": "assistant", "content": answer}
            choice = {"index": 0, "message": message, "finish_reason": "stop"}
            obj = {"id": CHAT_ID, "object": "chat.completion", "created": CREATED}
            obj |= {"model": model, "choices": [choice], "usage": usage}
            return Response(_dumps(obj), media_type="application/json")
        with_usage = bool((body.get("stream_options") or {}).get("include_usage"))

        async def events() -> AsyncIterator[bytes]:
            yield _sse(_chunk(model, {"role": "assistant", "content": ""}, None, with_usage))
            for i, piece in enumerate(answer_chunks(answer)):
                if i == 1 and model == "fake-gated":
                    state.first_sent.set()
                    await _wait(state.gate)
                if i == 2 and model == "fake-stall":
                    await _wait_for_disconnect(request, state)
                    return
                yield _sse(_chunk(model, {"content": piece}, None, with_usage))
            yield _sse(_chunk(model, {}, "stop", with_usage))
            if with_usage:
                yield _sse({**_chunk(model, {}, None, False), "choices": [], "usage": usage})
            yield b"data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    async def messages(request: Request) -> Response:
        body = json.loads(await log(request))
        model, msgs = body["model"], body["messages"]
        answer = answer_for(msgs)
        input_usage = {
            "input_tokens": prompt_tokens_for(msgs, body.get("system")),
            "cache_creation_input_tokens": 2,
            "cache_read_input_tokens": 3,
        }
        out_tokens = len(answer.split())
        if not body.get("stream"):
            obj = {"id": MESSAGE_ID, "type": "message", "role": "assistant", "model": model}
            obj |= {"content": [{"type": "text", "text": answer}], "stop_reason": "end_turn"}
            obj |= {"stop_sequence": None, "usage": {**input_usage, "output_tokens": out_tokens}}
            return Response(_dumps(obj), media_type="application/json")

        async def events() -> AsyncIterator[bytes]:
            start = {"id": MESSAGE_ID, "type": "message", "role": "assistant", "model": model}
            start |= {"content": [], "stop_reason": None, "stop_sequence": None}
            start["usage"] = {**input_usage, "output_tokens": 1}
            yield _sse({"type": "message_start", "message": start}, "message_start")
            block = {"type": "content_block_start", "index": 0}
            block["content_block"] = {"type": "text", "text": ""}
            yield _sse(block, "content_block_start")
            for i, piece in enumerate(answer_chunks(answer)):
                if i == 2 and model == "claude-fake-stall":
                    await _wait_for_disconnect(request, state)
                    return
                delta = {"type": "content_block_delta", "index": 0}
                delta["delta"] = {"type": "text_delta", "text": piece}
                yield _sse(delta, "content_block_delta")
            yield _sse({"type": "content_block_stop", "index": 0}, "content_block_stop")
            end = {"type": "message_delta", "delta": {"stop_reason": "end_turn"}}
            end["usage"] = {"output_tokens": out_tokens}
            yield _sse(end, "message_delta")
            yield _sse({"type": "message_stop"}, "message_stop")

        return StreamingResponse(events(), media_type="text/event-stream")

    async def models(request: Request) -> Response:
        await log(request)
        data = [{"id": "fake-model", "object": "model", "created": CREATED, "owned_by": "me"}]
        return Response(_dumps({"object": "list", "data": data}), media_type="application/json")

    async def echo(request: Request) -> Response:
        body = await log(request)
        seen = state.received[-1]
        obj = {k: seen[k] for k in ("method", "path", "query", "headers")}
        obj["body"] = body.decode("latin-1")
        return JSONResponse(obj, status_code=int(request.query_params.get("status", "200")))

    methods = ["GET", "POST", "PUT", "PATCH", "DELETE"]
    return Starlette(
        routes=[
            Route("/v1/chat/completions", chat, methods=["POST"]),
            Route("/v1/messages", messages, methods=["POST"]),
            Route("/v1/models", models, methods=["GET"]),
            Route("/v1/echo/{rest:path}", echo, methods=methods),
        ]
    )


@contextlib.contextmanager
def serve_upstream() -> Iterator[Upstream]:
    """Run the fake on a free 127.0.0.1 port until the block ends."""
    state = Upstream()
    with serve_asgi(create_app(state), "fake-upstream") as port:
        state.port = port
        try:
            yield state
        finally:
            state.gate.set()  # release anything still waiting
