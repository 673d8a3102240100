"""A deterministic OpenAI-compatible (and Anthropic-format) fake LLM server on 127.0.0.1.

FastAPI served by uvicorn in a thread on a free port; ``serve_fake_llm()`` yields a
:class:`FakeLLM` once uvicorn reports startup (no sleeps). Everything it answers is a
pure function of the request, so two identical requests get byte-identical answers.

Models with special behaviour (``model`` in the request body):

- ``fake-500`` / ``fake-429``: an OpenAI-style error body with that status.
- ``fake-stall`` (chat) and ``claude-fake-stall`` (messages): a stream that sends the
  start and two words of the answer, then waits until the client disconnects (for
  early-close and cancellation tests).
- ``fake-reasoner`` (chat): ``CACHED_TOKENS`` of the prompt were cached and
  ``REASONING_TOKENS`` more completion tokens were spent reasoning (in the ``*_details``).
- ``claude-fake-cached`` (messages): ``CACHE_READ_TOKENS`` read from and
  ``CACHE_WRITE_TOKENS`` written to the prompt cache, beside ``input_tokens``.

Every other model answers ``"You said: <last user message>"``, one SSE chunk per word
when streamed, with usage: ``prompt_tokens``/``input_tokens`` = words in all messages
(and the system prompt), ``completion_tokens``/``output_tokens`` = words in the answer;
cache and reasoning details are 0, as the real APIs send them.

:func:`serve_app` serves any ASGI app the same way (tests' own relay apps).
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from telemetry_client._internal.serving import Server, bind

CHAT_ID = "chatcmpl-fake-0001"
MESSAGE_ID = "msg_fake_0001"
CREATED = 1_700_000_000
EMBEDDING = [0.25, -0.5, 0.125]
CACHED_TOKENS = 2  # fake-reasoner: prompt tokens served from OpenAI's cache
REASONING_TOKENS = 4  # fake-reasoner: completion tokens spent reasoning
CACHE_READ_TOKENS = 5  # claude-fake-cached: Anthropic cache_read_input_tokens
CACHE_WRITE_TOKENS = 7  # claude-fake-cached: Anthropic cache_creation_input_tokens
STALL_AFTER = 2  # words a stalling stream sends before it waits for the disconnect


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts: [{"type": "text", "text": ...}]
        return " ".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


def answer_for(messages: list[dict[str, Any]]) -> str:
    """The fake model's answer: ``You said: `` and the last user message."""
    user = [m for m in messages if m.get("role") == "user"]
    return "You said: " + (_text_of(user[-1].get("content")) if user else "")


def prompt_tokens_for(messages: list[dict[str, Any]], system: Any = None) -> int:
    """Words in every message (and the system prompt): the fake's token count."""
    words = sum(len(_text_of(m.get("content")).split()) for m in messages)
    return words + len(_text_of(system).split())


def answer_chunks(answer: str) -> list[str]:
    """How a streamed answer is split: one chunk per word (with its leading space)."""
    words = answer.split(" ")
    return [words[0]] + [" " + w for w in words[1:]]


def _sse(obj: Any, event: str | None = None) -> bytes:
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {json.dumps(obj, separators=(',', ':'))}\n\n".encode()


def _chunk(model: str, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {
        "id": CHAT_ID,
        "object": "chat.completion.chunk",
        "created": CREATED,
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }


async def _wait_for_disconnect(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


def _openai_error(status: int) -> JSONResponse:
    kind = "rate_limit_exceeded" if status == 429 else "server_error"
    body = {"error": {"message": f"fake {kind}", "type": kind, "param": None, "code": kind}}
    return JSONResponse(body, status_code=status)


def create_app() -> FastAPI:
    """The fake's routes: ``/v1/chat/completions``, ``/v1/embeddings``, ``/v1/messages``."""
    app = FastAPI()

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Response:
        body = await request.json()
        model = body["model"]
        if model in ("fake-500", "fake-429"):
            return _openai_error(int(model[-3:]))
        messages = body["messages"]
        answer = answer_for(messages)
        reasoner = model == "fake-reasoner"
        reasoning = REASONING_TOKENS if reasoner else 0
        usage: dict[str, Any] = {
            "prompt_tokens": prompt_tokens_for(messages),
            "completion_tokens": len(answer.split()) + reasoning,
        }
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        usage["prompt_tokens_details"] = {
            "cached_tokens": CACHED_TOKENS if reasoner else 0,
            "audio_tokens": 0,
        }
        usage["completion_tokens_details"] = {"reasoning_tokens": reasoning, "audio_tokens": 0}
        if not body.get("stream"):
            return JSONResponse(
                {
                    "id": CHAT_ID,
                    "object": "chat.completion",
                    "created": CREATED,
                    "model": model,
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": answer},
                            "finish_reason": "stop",
                        }
                    ],
                    "usage": usage,
                }
            )
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))

        async def events() -> AsyncIterator[bytes]:
            yield _sse(_chunk(model, {"role": "assistant", "content": ""}))
            for i, piece in enumerate(answer_chunks(answer)):
                if model == "fake-stall" and i == STALL_AFTER:
                    await _wait_for_disconnect(request)
                    return
                yield _sse(_chunk(model, {"content": piece}))
            yield _sse(_chunk(model, {}, finish="stop"))
            if include_usage:
                yield _sse({**_chunk(model, {}), "choices": [], "usage": usage})
            yield b"data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    @app.post("/v1/embeddings")
    async def embeddings(request: Request) -> Response:
        body = await request.json()
        inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
        tokens = sum(len(str(text).split()) for text in inputs)
        return JSONResponse(
            {
                "object": "list",
                "data": [
                    {"object": "embedding", "index": i, "embedding": EMBEDDING}
                    for i in range(len(inputs))
                ],
                "model": body["model"],
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            }
        )

    @app.post("/v1/messages")
    async def messages(request: Request) -> Response:
        body = await request.json()
        model, msgs = body["model"], body["messages"]
        answer = answer_for(msgs)
        cached = model == "claude-fake-cached"
        input_usage = {
            "input_tokens": prompt_tokens_for(msgs, body.get("system")),
            "cache_creation_input_tokens": CACHE_WRITE_TOKENS if cached else 0,
            "cache_read_input_tokens": CACHE_READ_TOKENS if cached else 0,
        }
        out_tokens = len(answer.split())
        if not body.get("stream"):
            return JSONResponse(
                {
                    "id": MESSAGE_ID,
                    "type": "message",
                    "role": "assistant",
                    "model": model,
                    "content": [{"type": "text", "text": answer}],
                    "stop_reason": "end_turn",
                    "stop_sequence": None,
                    "usage": {**input_usage, "output_tokens": out_tokens},
                }
            )

        async def events() -> AsyncIterator[bytes]:
            start = {
                "id": MESSAGE_ID,
                "type": "message",
                "role": "assistant",
                "model": model,
                "content": [],
                "stop_reason": None,
                "stop_sequence": None,
                "usage": {**input_usage, "output_tokens": 1},
            }
            yield _sse({"type": "message_start", "message": start}, "message_start")
            block = {"type": "text", "text": ""}
            yield _sse(
                {"type": "content_block_start", "index": 0, "content_block": block},
                "content_block_start",
            )
            for i, piece in enumerate(answer_chunks(answer)):
                if model == "claude-fake-stall" and i == STALL_AFTER:
                    await _wait_for_disconnect(request)
                    return
                delta = {"type": "text_delta", "text": piece}
                yield _sse(
                    {"type": "content_block_delta", "index": 0, "delta": delta},
                    "content_block_delta",
                )
            yield _sse({"type": "content_block_stop", "index": 0}, "content_block_stop")
            yield _sse(
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                    # cumulative, input figures included (as the API sends them since 2025)
                    "usage": {**input_usage, "output_tokens": out_tokens},
                },
                "message_delta",
            )
            yield _sse({"type": "message_stop"}, "message_stop")

        return StreamingResponse(events(), media_type="text/event-stream")

    return app


@dataclass(frozen=True)
class FakeLLM:
    """A running fake: ``base_url`` ends in ``/v1`` (what ``openai.OpenAI`` wants)."""

    host: str
    port: int

    @property
    def origin(self) -> str:
        """``http://host:port``, what ``anthropic.Anthropic(base_url=...)`` wants."""
        return f"http://{self.host}:{self.port}"

    @property
    def base_url(self) -> str:
        return f"{self.origin}/v1"


@contextlib.contextmanager
def serve_asgi(app: Any, name: str = "asgi", *, lifespan: str = "off") -> Iterator[int]:
    """Serve the ASGI ``app`` with uvicorn on a free 127.0.0.1 port (yielded) in a thread
    until the block ends.

    The socket and server are the collector's and the proxy's (``_internal.serving``:
    TCP_NODELAY on accepted connections, no ~40 ms delayed-ACK wait per response).
    """
    sock = bind("127.0.0.1", 0)
    config = uvicorn.Config(
        app,
        log_config=None,
        access_log=False,
        lifespan=lifespan,  # type: ignore[arg-type]
        server_header=False,
        date_header=False,
        ws="none",
        timeout_graceful_shutdown=5,
    )
    started = threading.Event()
    server = Server(config, started.set)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name=name, daemon=True)
    thread.start()
    try:
        if not started.wait(30):
            raise RuntimeError(f"{name} did not start within 30 s")
        yield sock.getsockname()[1]
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()


@contextlib.contextmanager
def serve_app(app: Any) -> Iterator[FakeLLM]:
    """Serve the ASGI ``app`` with uvicorn on 127.0.0.1 (a free port) until the block ends."""
    with serve_asgi(app, "fake-llm") as port:
        yield FakeLLM("127.0.0.1", port)


@contextlib.contextmanager
def serve_fake_llm() -> Iterator[FakeLLM]:
    """Serve :func:`create_app` on 127.0.0.1 (a free port) until the block ends."""
    with serve_app(create_app()) as server:
        yield server
