"""LLM-call capture over httpx (``telemetry_client.integrations.httpx``).

End to end with the real ``openai`` and ``anthropic`` SDKs against the local fake in
``tests/_fake_llm.py``; events are read back from the spool of a client with no endpoint.
Parser units cover the Anthropic, Responses API and Gemini formats without their SDKs.

CI runs this module twice: with the newest SDKs (``openai`` 3.x and ``anthropic`` 2.x on
``httpx2``), and in a second virtualenv with older major lines (``openai`` 1.x and
``anthropic`` 0.x on ``httpx`` 0.27), see ``.ci/run``; nothing here depends on the line.
"""

from __future__ import annotations

import asyncio
import gzip
import itertools
import json
import logging
import random
import socket
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, TypeVar

import anthropic
import anyio
import httpx
import openai
import pytest
from _fake_llm import (
    CACHE_READ_TOKENS,
    CACHE_WRITE_TOKENS,
    CACHED_TOKENS,
    REASONING_TOKENS,
    STALL_AFTER,
    FakeLLM,
    answer_chunks,
    prompt_tokens_for,
    serve_app,
    serve_fake_llm,
)
from conftest import spooled_of_type

from telemetry_client import TelemetryClient, TelemetrySettings, session_context
from telemetry_client import llm as _llm
from telemetry_client import usage as usage_store
from telemetry_client.integrations.httpx import (
    AsyncInstrumentedTransport,
    InstrumentedTransport,
    default_should_record,
    detect_provider,
    instrument,
    instrumented_async_http_client,
    instrumented_http_client,
)

_C = TypeVar("_C")
FAKE_HOST = {"127.0.0.1": "openai"}  # the fake is reported as OpenAI
SECRET = "sk-proj-Zx81Qw7TmN2pL4vR9sK3bY6cD0eF5gH1"  # noqa: S105 - fake, shaped like an OpenAI key
MESSAGES = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "hello fake model"},
]
ANSWER = "You said: hello fake model"
PROMPT_TOKENS = prompt_tokens_for(MESSAGES)
ANSWER_TOKENS = len(ANSWER.split())


_OPEN: list[Any] = []


def track(client: _C) -> _C:
    """Close ``client`` (an SDK or httpx client) when the test ends."""
    _OPEN.append(client)
    return client


@pytest.fixture(autouse=True)
def _close_tracked() -> Iterator[None]:
    """Close the clients :func:`track` collected (unclosed sockets fail the run)."""
    yield
    while _OPEN:
        _OPEN.pop().close()


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeLLM]:
    """One fake LLM server for the whole module."""
    with serve_fake_llm() as server:
        yield server


@pytest.fixture
def telemetry(settings_factory: Callable[..., TelemetrySettings]) -> Iterator[TelemetryClient]:
    """A spool-only client (no endpoint) in this test's tmp dir."""
    client = TelemetryClient(settings_factory(fsync="off"))
    yield client
    client.close()


def llm_calls(client: TelemetryClient) -> list[dict[str, Any]]:
    """Every spooled ``llm_call`` envelope, in emit order (after a flush to disk)."""
    return spooled_of_type(client, "llm_call")


def only_call(client: TelemetryClient) -> dict[str, Any]:
    """The one spooled ``llm_call`` payload (fails when there is not exactly one)."""
    calls = llm_calls(client)
    assert len(calls) == 1, calls
    data: dict[str, Any] = calls[0]["data"]
    return data


def sdk(fake: FakeLLM, http_client: Any) -> openai.OpenAI:
    """An ``openai.OpenAI`` on the fake, no retries (every attempt would be one event)."""
    return track(
        openai.OpenAI(
            base_url=fake.base_url, api_key="test-key", max_retries=0, http_client=http_client
        )
    )


def traced(fake: FakeLLM, telemetry: TelemetryClient, **options: Any) -> openai.OpenAI:
    """The SDK on an instrumented ``httpx.Client`` reporting the fake as ``openai``."""
    options.setdefault("provider_overrides", FAKE_HOST)
    return sdk(fake, instrumented_http_client(telemetry, **options))


def chat(llm: openai.OpenAI, **kwargs: Any) -> Any:
    """A chat completion on the fake with the module's conversation."""
    kwargs.setdefault("messages", MESSAGES)
    kwargs.setdefault("model", "fake-model")
    return llm.chat.completions.create(**kwargs)


def stream_chunks(llm: openai.OpenAI, **kwargs: Any) -> list[Any]:
    """Every chunk of a streamed chat completion that asks for the usage chunk."""
    with chat(llm, stream=True, stream_options={"include_usage": True}, **kwargs) as stream:
        return list(stream)


def closed_port() -> int:
    """A loopback port nobody listens on (connecting is refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


# -- units: which requests, which provider --------------------------------------------------


@pytest.mark.parametrize(
    ("host", "provider"),
    [
        ("api.openai.com", "openai"),
        ("API.OpenAI.com", "openai"),
        ("api.anthropic.com", "anthropic"),
        ("generativelanguage.googleapis.com", "google"),
        ("api.groq.com", "groq"),
        ("api.mistral.ai", "mistral"),
        ("openrouter.ai", "openrouter"),
        ("my-resource.openai.azure.com", "azure_openai"),
        ("llm.internal.example", "llm.internal.example"),
    ],
)
def test_default_provider_detection(host: str, provider: str) -> None:
    """Known API hosts map to provider names; any other host is reported as itself."""
    assert detect_provider(host) == provider


def test_provider_overrides_take_precedence() -> None:
    """Overrides match ``host:port`` first, then the host, then ``*.domain`` wildcards."""
    overrides = {
        "127.0.0.1:8000": "vllm",
        "127.0.0.1": "openai",
        "*.corp.example": "gateway",
        "api.openai.com": "proxy",
    }
    assert detect_provider("127.0.0.1", 8000, overrides) == "vllm"
    assert detect_provider("127.0.0.1", 9000, overrides) == "openai"
    assert detect_provider("llm.corp.example", None, overrides) == "gateway"
    assert detect_provider("corp.example", None, overrides) == "gateway"
    assert detect_provider("api.openai.com", None, overrides) == "proxy"
    assert detect_provider("api.anthropic.com", None, overrides) == "anthropic"


@pytest.mark.parametrize(
    ("method", "path", "expected"),
    [
        ("POST", "/v1/chat/completions", True),
        ("POST", "/v1/completions", True),
        ("POST", "/v1/responses", True),
        ("POST", "/v1/messages", True),
        ("POST", "/v1/embeddings", True),
        ("POST", "/v1beta/models/gemini-2.0-flash:generateContent", True),
        ("POST", "/v1beta/models/gemini-2.0-flash:streamGenerateContent", True),
        ("GET", "/v1/chat/completions", False),
        ("GET", "/v1/models", False),
        ("POST", "/v1/files", False),
    ],
)
def test_default_predicate(method: str, path: str, expected: bool) -> None:
    """Only POSTs to the LLM API paths count as LLM calls by default."""
    request = httpx.Request(method, f"https://api.example.com{path}?key=x")
    assert default_should_record(request) is expected


def test_public_api_is_curated() -> None:
    """``__all__`` names things that exist, and every public function and class defined by
    the integration (its own modules) or by ``telemetry_client.llm``."""
    from telemetry_client import integrations
    from telemetry_client.integrations import httpx as module

    defined = {
        name
        for name, value in vars(module).items()
        if not name.startswith("_")
        and callable(value)
        and str(getattr(value, "__module__", "")).startswith(
            (integrations.__name__ + ".", _llm.__name__ + ".")
        )
    }
    assert {"InstrumentedTransport", "instrument", "detect_provider"} <= defined
    assert len(set(module.__all__)) == len(module.__all__)  # ruff (RUF022) keeps it sorted
    assert defined <= set(module.__all__)
    assert all(hasattr(module, name) for name in module.__all__)


# -- the openai SDK end to end ----------------------------------------------------------------


def test_sync_chat_completion_records_one_call(fake: FakeLLM, telemetry: TelemetryClient) -> None:
    """A non-streamed completion: provider, model, path, status, tokens, exact body sizes."""
    llm = traced(fake, telemetry)
    raw = chat(llm.with_raw_response)
    assert raw.parse().choices[0].message.content == ANSWER
    data = only_call(telemetry)
    assert data["provider"] == "openai"
    assert data["model"] == "fake-model"
    assert data["endpoint"] == "/v1/chat/completions"
    assert data["status"] == 200
    assert data["streamed"] is False
    assert (data["input_tokens"], data["output_tokens"]) == (PROMPT_TOKENS, ANSWER_TOKENS)
    assert data["total_tokens"] == PROMPT_TOKENS + ANSWER_TOKENS
    assert data["request_bytes"] == len(raw.http_request.content)
    assert data["response_bytes"] == len(raw.http_response.content)
    assert data["latency_ms"] > 0
    assert "error" not in data
    assert "prompt" not in data  # content is not captured unless asked for
    assert "answer" not in data


def test_sync_stream_records_usage_from_the_final_chunk(
    fake: FakeLLM, telemetry: TelemetryClient
) -> None:
    """A streamed completion: tokens from the ``include_usage`` chunk, ``streamed`` set."""
    chunks = stream_chunks(traced(fake, telemetry))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == ANSWER
    data = only_call(telemetry)
    assert data["streamed"] is True
    assert data["status"] == 200
    assert data["model"] == "fake-model"
    assert (data["input_tokens"], data["output_tokens"], data["total_tokens"]) == (
        PROMPT_TOKENS,
        ANSWER_TOKENS,
        PROMPT_TOKENS + ANSWER_TOKENS,
    )
    assert data["response_bytes"] > data["request_bytes"] > 0
    assert "closed_early" not in data


@pytest.mark.parametrize("http_library", ["httpx", "sdk_default"])
def test_async_client_records_streamed_and_plain_calls(
    fake: FakeLLM, telemetry: TelemetryClient, http_library: str
) -> None:
    """``openai.AsyncOpenAI``, on an instrumented ``httpx.AsyncClient`` or with its own
    default client (httpx2 in openai 3.x, httpx in 1.x) instrumented in place: one event
    per call."""
    options: dict[str, Any] = {"provider_overrides": FAKE_HOST, "capture_content": True}

    async def main() -> tuple[Any, list[Any]]:
        llm = openai.AsyncOpenAI(
            base_url=fake.base_url,
            api_key="test-key",
            max_retries=0,
            http_client=(
                instrumented_async_http_client(telemetry, **options)
                if http_library == "httpx"
                else None
            ),
        )
        if http_library == "sdk_default":
            instrument(llm, telemetry, **options)
        async with llm:
            plain = await llm.chat.completions.create(model="fake-model", messages=MESSAGES)
            stream = await llm.chat.completions.create(
                model="fake-model",
                messages=MESSAGES,
                stream=True,
                stream_options={"include_usage": True},
            )
            chunks = [chunk async for chunk in stream]
        return plain, chunks

    plain, chunks = asyncio.run(main())
    assert plain.choices[0].message.content == ANSWER
    assert chunks[-1].usage.total_tokens == PROMPT_TOKENS + ANSWER_TOKENS
    first, second = llm_calls(telemetry)
    for event, streamed in ((first, False), (second, True)):
        data = event["data"]
        assert data["provider"] == "openai"
        assert data["model"] == "fake-model"
        assert data["status"] == 200
        assert data["streamed"] is streamed
        assert (data["input_tokens"], data["output_tokens"]) == (PROMPT_TOKENS, ANSWER_TOKENS)
        assert data["answer"] == ANSWER
        assert data["prompt"] == MESSAGES
        assert data["latency_ms"] > 0


def test_embeddings_record_input_tokens(fake: FakeLLM, telemetry: TelemetryClient) -> None:
    """Embeddings carry ``prompt_tokens``/``total_tokens`` only: no output tokens, no answer."""
    llm = traced(fake, telemetry, capture_content=True)
    result = llm.embeddings.create(model="fake-embed", input=["one two", "three"])
    assert len(result.data) == 2
    data = only_call(telemetry)
    assert data["endpoint"] == "/v1/embeddings"
    assert data["model"] == "fake-embed"
    assert (data["input_tokens"], data["total_tokens"]) == (3, 3)
    assert "output_tokens" not in data
    assert data["prompt"] == ["one two", "three"]
    assert "answer" not in data


def test_capture_content_records_prompt_and_answer_redacted(
    fake: FakeLLM, telemetry: TelemetryClient
) -> None:
    """With ``capture_content`` the prompt and assembled answer are spooled, secrets masked."""
    llm = traced(fake, telemetry, capture_content=True)
    messages = [{"role": "user", "content": f"my key is {SECRET} ok"}]
    chat(llm, messages=messages)
    stream_chunks(llm, messages=messages)
    calls = llm_calls(telemetry)
    assert len(calls) == 2
    for event in calls:
        data = event["data"]
        (message,) = data["prompt"]
        assert message["role"] == "user"
        assert message["content"] == "my key is [REDACTED:openai_key] ok"
        assert data["answer"] == "You said: my key is [REDACTED:openai_key] ok"
    spooled = b"".join(raw for _, raw in telemetry.spool.iter_batches_newest_first())
    assert SECRET.encode() not in spooled


def test_streamed_answer_is_assembled_from_deltas(
    fake: FakeLLM, telemetry: TelemetryClient
) -> None:
    """The answer of a stream is its content deltas joined, in order, whatever the chunking."""
    words = " ".join(f"word{i}" for i in range(200))
    stream_chunks(
        traced(fake, telemetry, capture_content=True),
        messages=[{"role": "user", "content": words}],
    )
    data = only_call(telemetry)
    assert data["answer"] == "You said: " + words
    assert data["output_tokens"] == len(answer_chunks("You said: " + words))


def test_caller_receives_identical_results(fake: FakeLLM, telemetry: TelemetryClient) -> None:
    """Responses, streamed chunks and raw bytes are the same with and without instrumentation."""
    plain = sdk(fake, httpx.Client())
    traced_llm = traced(fake, telemetry, capture_content=True)
    assert chat(traced_llm).model_dump() == chat(plain).model_dump()
    assert [c.model_dump() for c in stream_chunks(traced_llm)] == [
        c.model_dump() for c in stream_chunks(plain)
    ]
    body = {"model": "fake-model", "messages": MESSAGES, "stream": True}
    url = f"{fake.base_url}/chat/completions"
    with httpx.Client() as raw_plain, instrumented_http_client(telemetry) as raw_traced:
        answers = [http.post(url, json=body) for http in (raw_plain, raw_traced)]
    expected, got = answers
    assert got.content == expected.content
    assert got.status_code == expected.status_code
    strip_date = lambda r: [kv for kv in r.headers.multi_items() if kv[0] != "date"]  # noqa: E731
    assert strip_date(got) == strip_date(expected)
    assert len(llm_calls(telemetry)) == 3


def test_telemetry_failure_never_reaches_the_caller(
    fake: FakeLLM, telemetry: TelemetryClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An ``emit`` that raises is counted in ``stats()``; the caller's results are unchanged."""
    http = instrumented_http_client(telemetry, provider_overrides=FAKE_HOST, capture_content=True)
    llm = sdk(fake, http)
    expected = chat(llm).model_dump()
    expected_chunks = [c.model_dump() for c in stream_chunks(llm)]

    def broken_emit(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("telemetry is broken")

    monkeypatch.setattr(telemetry, "emit", broken_emit)
    assert chat(llm).model_dump() == expected
    assert [c.model_dump() for c in stream_chunks(llm)] == expected_chunks
    transport = http._transport
    assert isinstance(transport, InstrumentedTransport)
    assert transport.stats() == {"calls": 4, "errors": 2}


def test_parser_failure_never_reaches_the_caller(
    fake: FakeLLM, telemetry: TelemetryClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A parser that raises mid-body: the caller still gets every chunk; the call is emitted."""
    llm = traced(fake, telemetry, capture_content=True)
    expected = [c.model_dump() for c in stream_chunks(llm)]

    def broken_feed(self: Any, raw: bytes) -> None:
        raise ValueError("parser bug")

    monkeypatch.setattr(_llm.ResponseParser, "feed", broken_feed)
    assert [c.model_dump() for c in stream_chunks(llm)] == expected
    first, second = llm_calls(telemetry)
    assert first["data"]["total_tokens"] == PROMPT_TOKENS + ANSWER_TOKENS
    assert second["data"]["status"] == 200
    assert second["data"]["response_bytes"] == first["data"]["response_bytes"]
    assert "total_tokens" not in second["data"]  # left out, not guessed


def test_connect_error_reaches_the_caller_and_is_recorded(telemetry: TelemetryClient) -> None:
    """A refused connection raises exactly as without telemetry, and an error event is emitted."""
    llm = track(
        openai.OpenAI(
            base_url=f"http://127.0.0.1:{closed_port()}/v1",
            api_key="test-key",
            max_retries=0,
            http_client=instrumented_http_client(telemetry, provider_overrides=FAKE_HOST),
        )
    )
    with pytest.raises(openai.APIConnectionError) as excinfo:
        chat(llm)
    assert isinstance(excinfo.value.__cause__, httpx.ConnectError)
    data = only_call(telemetry)
    assert data["error"].startswith("ConnectError")
    assert "status" not in data
    assert data["model"] == "fake-model"
    assert data["response_bytes"] == 0


def test_transport_exception_object_is_re_raised_unchanged(telemetry: TelemetryClient) -> None:
    """The inner transport's exception is the very object the caller catches."""
    error = httpx.ReadTimeout("the model took too long")

    def handler(request: httpx.Request) -> httpx.Response:
        raise error

    transport = InstrumentedTransport(httpx.MockTransport(handler), client=telemetry)
    with httpx.Client(transport=transport) as http, pytest.raises(httpx.ReadTimeout) as excinfo:
        http.post("https://api.openai.com/v1/responses", json={"model": "m", "input": "hi"})
    assert excinfo.value is error
    data = only_call(telemetry)
    assert data["error"] == "ReadTimeout: the model took too long"
    assert data["provider"] == "openai"
    assert data["model"] == "m"


def test_error_mid_body_reaches_the_caller_and_is_recorded(telemetry: TelemetryClient) -> None:
    """A read error after some chunks propagates unchanged; status and partial answer are kept."""
    error = httpx.RemoteProtocolError("peer closed connection")
    first = b'data: {"model":"m","choices":[{"index":0,"delta":{"content":"Hi"}}]}\n\n'

    class Broken(httpx.SyncByteStream):
        def __iter__(self) -> Iterator[bytes]:
            yield first
            raise error

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"content-type": "text/event-stream"}, stream=Broken())

    transport = InstrumentedTransport(
        httpx.MockTransport(handler), client=telemetry, capture_content=True
    )
    seen = []
    url = "https://api.groq.com/openai/v1/chat/completions"
    with (
        httpx.Client(transport=transport) as http,
        http.stream("POST", url) as response,
        pytest.raises(httpx.RemoteProtocolError) as excinfo,
    ):
        seen.extend(response.iter_raw())
    assert excinfo.value is error
    assert seen == [first]
    data = only_call(telemetry)
    assert (data["provider"], data["status"], data["answer"]) == ("groq", 200, "Hi")
    assert data["error"] == "RemoteProtocolError: peer closed connection"


def test_http_error_statuses_are_recorded(fake: FakeLLM, telemetry: TelemetryClient) -> None:
    """500 and 429 answers raise the SDK's errors as usual and record status and message."""
    llm = traced(fake, telemetry)
    with pytest.raises(openai.InternalServerError):
        llm.chat.completions.create(model="fake-500", messages=MESSAGES)
    with pytest.raises(openai.RateLimitError):
        llm.chat.completions.create(model="fake-429", messages=MESSAGES)
    server_error, rate_limited = (e["data"] for e in llm_calls(telemetry))
    assert server_error["status"] == 500
    assert server_error["error"] == "HTTP 500: server_error: fake server_error"
    assert rate_limited["status"] == 429
    assert rate_limited["error"] == "HTTP 429: rate_limit_exceeded: fake rate_limit_exceeded"
    assert rate_limited["model"] == "fake-429"


def test_early_close_records_the_partial_answer(fake: FakeLLM, telemetry: TelemetryClient) -> None:
    """Closing a stream before its end emits at close: status, partial answer, ``closed_early``."""
    llm = traced(fake, telemetry, capture_content=True)
    stream = llm.chat.completions.create(model="fake-stall", messages=MESSAGES, stream=True)
    received = []
    for chunk in stream:  # the fake sends the role chunk and two words, then stalls
        received.append(chunk.choices[0].delta.content)
        if len(received) == 3:
            break
    stream.close()
    assert received == ["", "You", " said:"]
    data = only_call(telemetry)
    assert data["status"] == 200
    assert data["streamed"] is True
    assert data["answer"] == "You said:"
    assert data["closed_early"] is True
    assert data["partial"] is True
    assert "cancelled" not in data  # closed by the caller's own choice
    assert "error" not in data
    assert "total_tokens" not in data


def test_other_requests_pass_through_unrecorded(fake: FakeLLM, telemetry: TelemetryClient) -> None:
    """Non-LLM requests are not recorded; ``should_record`` replaces the default rule."""
    with instrumented_http_client(telemetry) as http:
        assert http.get(f"{fake.origin}/openapi.json").status_code == 200
    with instrumented_http_client(telemetry, should_record=lambda request: False) as http:
        http.post(f"{fake.base_url}/embeddings", json={"model": "e", "input": "x"})
    assert llm_calls(telemetry) == []
    everything = instrumented_http_client(telemetry, should_record=lambda request: True)
    with everything as http:
        http.get(f"{fake.origin}/openapi.json")
    assert only_call(telemetry)["endpoint"] == "/openapi.json"


def test_events_carry_the_session_context(fake: FakeLLM, telemetry: TelemetryClient) -> None:
    """The event is emitted in the caller's context, so ``session_context`` ids apply."""
    llm = traced(fake, telemetry)
    with session_context(session_id="chat-42", user_id="ada"):
        stream_chunks(llm)
    (event,) = llm_calls(telemetry)
    assert (event["session_id"], event["user_id"]) == ("chat-42", "ada")


def test_disabled_telemetry_passes_everything_through(
    fake: FakeLLM, settings_factory: Callable[..., TelemetrySettings]
) -> None:
    """With telemetry disabled the transport records nothing and changes nothing."""
    disabled = TelemetryClient(settings_factory(enabled=False))
    http = instrumented_http_client(disabled, provider_overrides=FAKE_HOST)
    assert chat(sdk(fake, http)).choices[0].message.content == ANSWER
    transport = http._transport
    assert isinstance(transport, InstrumentedTransport)
    assert transport.stats() == {"calls": 0, "errors": 0}


def test_instrument_wraps_the_openai_default_client(
    fake: FakeLLM, telemetry: TelemetryClient
) -> None:
    """``instrument()`` on an SDK client wraps its own HTTP client (httpx2 for openai>=3,
    httpx for 1.x, where the SDK client also has a ``_transport`` of its own, ``None``)."""
    llm = instrument(
        track(openai.OpenAI(base_url=fake.base_url, api_key="test-key", max_retries=0)),
        telemetry,
        provider_overrides=FAKE_HOST,
        capture_content=True,
    )
    instrument(llm, telemetry)  # a second call leaves the wrapped transport alone
    assert chat(llm).choices[0].message.content == ANSWER
    assert "".join(c.choices[0].delta.content or "" for c in stream_chunks(llm)[:-1]) == ANSWER
    plain, streamed = (e["data"] for e in llm_calls(telemetry))
    assert plain["answer"] == streamed["answer"] == ANSWER
    assert streamed["total_tokens"] == plain["total_tokens"] == PROMPT_TOKENS + ANSWER_TOKENS


def test_async_transport_wraps_mounts_and_closes_inner(telemetry: TelemetryClient) -> None:
    """``instrument`` wraps mounted transports too; closing the client closes the inner ones."""
    closed: list[str] = []

    class Inner(httpx.AsyncBaseTransport):
        def __init__(self, name: str) -> None:
            self.name = name

        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            return httpx.Response(200, json={"model": self.name, "usage": {"input_tokens": 1}})

        async def aclose(self) -> None:
            closed.append(self.name)

    async def main() -> None:
        http = httpx.AsyncClient(
            transport=Inner("default"), mounts={"https://api.mistral.ai": Inner("mounted")}
        )
        instrument(http, telemetry)
        assert isinstance(http._transport, AsyncInstrumentedTransport)
        async with http:
            await http.post("https://api.mistral.ai/v1/chat/completions", json={})
            await http.post("https://api.openai.com/v1/chat/completions", json={})

    asyncio.run(main())
    assert sorted(closed) == ["default", "mounted"]
    mistral, openai_call = (e["data"] for e in llm_calls(telemetry))
    assert (mistral["provider"], mistral["model"]) == ("mistral", "mounted")
    assert (openai_call["provider"], openai_call["model"]) == ("openai", "default")


# -- instrument(): every supported SDK line, and objects it cannot instrument ---------------

CLAUDE_HOST = {"127.0.0.1": "anthropic"}  # the fake reported as Anthropic
SYSTEM, CLAUDE_MESSAGES = "Be brief.", MESSAGES[1:]  # Anthropic takes the system prompt apart


def claude(fake: FakeLLM, telemetry: TelemetryClient, **options: Any) -> anthropic.Anthropic:
    """An ``anthropic.Anthropic`` on the fake (no retries), its own HTTP client instrumented
    (anthropic 2.x refuses ``httpx`` clients: it takes ``httpx2`` ones only)."""
    llm = anthropic.Anthropic(base_url=fake.origin, api_key="test-key", max_retries=0)
    return instrument(track(llm), telemetry, provider_overrides=CLAUDE_HOST, **options)


def ask_claude(llm: anthropic.Anthropic, model: str = "claude-fake", **kwargs: Any) -> Any:
    """A message on the fake with the module's conversation (system prompt apart)."""
    return llm.messages.create(
        model=model, max_tokens=64, system=SYSTEM, messages=CLAUDE_MESSAGES, **kwargs
    )


@pytest.mark.parametrize("sdk_class", ["OpenAI", "AsyncOpenAI", "Anthropic", "AsyncAnthropic"])
def test_instrument_records_calls_of_each_sdk_client_it_is_given(
    fake: FakeLLM, telemetry: TelemetryClient, sdk_class: str
) -> None:
    """``instrument(<SDK client>)`` returns that client and records its calls, sync and async,
    on every supported line (openai 1.x sets ``_transport = None`` on the SDK client)."""
    is_openai = "OpenAI" in sdk_class
    cls = getattr(openai if is_openai else anthropic, sdk_class)
    base_url = fake.base_url if is_openai else fake.origin
    overrides = FAKE_HOST if is_openai else CLAUDE_HOST

    async def call(llm: Any) -> Any:
        if is_openai:
            return await llm.chat.completions.create(model="fake-model", messages=MESSAGES)
        return await llm.messages.create(
            model="claude-fake", max_tokens=64, system=SYSTEM, messages=CLAUDE_MESSAGES
        )

    llm = cls(base_url=base_url, api_key="test-key", max_retries=0)
    assert instrument(llm, telemetry, provider_overrides=overrides, capture_content=True) is llm
    if sdk_class.startswith("Async"):

        async def main() -> None:
            async with llm:
                await call(llm)

        asyncio.run(main())
    else:
        track(llm)
        if is_openai:
            chat(llm)
        else:
            ask_claude(llm)
    data = only_call(telemetry)
    assert data["provider"] == ("openai" if is_openai else "anthropic")
    assert data["answer"] == ANSWER
    assert data["total_tokens"] == PROMPT_TOKENS + ANSWER_TOKENS


def test_instrument_finds_the_client_of_an_sdk_whose_own_transport_is_none(
    telemetry: TelemetryClient,
) -> None:
    """An object with ``_transport = None`` and its httpx client in ``_client`` (the shape of
    openai 1.x and anthropic 0.x) has that client instrumented."""

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"model": "m", "usage": {"prompt_tokens": 2}})

    class LegacySDK:
        def __init__(self) -> None:
            self._transport = None  # what the SDK's constructor stores (deprecated argument)
            self._client = httpx.Client(transport=httpx.MockTransport(handler))

    sdk_client = LegacySDK()
    assert instrument(sdk_client, telemetry) is sdk_client
    assert isinstance(sdk_client._client._transport, InstrumentedTransport)
    with sdk_client._client as http:
        http.post("https://api.openai.com/v1/chat/completions", json={"model": "m"})
    assert only_call(telemetry)["input_tokens"] == 2


def test_instrument_on_an_unsupported_object_warns_once_and_returns_it_unchanged(
    telemetry: TelemetryClient, caplog: pytest.LogCaptureFixture
) -> None:
    """Never stops the app (as Sentry/OpenTelemetry integrations): anything it cannot wrap,
    and a wrap that fails midway, log one warning naming the type and come back as is."""

    class ReadOnlyTransport:  # looks like an httpx client, but the transport cannot be set
        def send(self, request: Any) -> Any:
            raise NotImplementedError

        @property
        def _transport(self) -> httpx.BaseTransport:
            return httpx.MockTransport(lambda request: httpx.Response(200))

    caplog.set_level(logging.WARNING, logger="telemetry_client")
    things: list[Any] = [object(), "an httpx client?", None, openai.OpenAI, ReadOnlyTransport()]
    for thing in things:
        caplog.clear()
        assert instrument(thing, telemetry) is thing
        (record,) = caplog.records
        assert record.levelno == logging.WARNING
        assert type(thing).__qualname__ in record.getMessage()
        assert "returned unchanged" in record.getMessage()
    assert llm_calls(telemetry) == []


# -- cache, cache-write and reasoning tokens -------------------------------------------------


def stats_of(telemetry: TelemetryClient) -> dict[str, Any]:
    """The usage totals of the last hour in this client's spool (after a flush merged them)."""
    assert telemetry.flush_sync(timeout=10).ok
    store = usage_store.UsageStore(usage_store.usage_dir(telemetry.settings.resolved_spool_dir))
    total: dict[str, Any] = usage_store.summarize(store.read(), 3600).to_dict()["total"]
    return total


@pytest.mark.parametrize("streamed", [False, True])
def test_anthropic_cache_tokens_are_recorded_and_counted_in_stats(
    fake: FakeLLM, telemetry: TelemetryClient, streamed: bool
) -> None:
    """Anthropic cache reads and writes are recorded and included in the input and total
    tokens (the API's ``input_tokens`` leaves them out), in the event and in ``stats``."""
    llm = claude(fake, telemetry)
    if streamed:
        with ask_claude(llm, "claude-fake-cached", stream=True) as stream:
            kinds = [event.type for event in stream]
        assert kinds[0] == "message_start"
        assert kinds[-1] == "message_stop"
    else:
        reply = ask_claude(llm, "claude-fake-cached")
        assert reply.usage.cache_read_input_tokens == CACHE_READ_TOKENS
    data = only_call(telemetry)
    prompt = PROMPT_TOKENS + CACHE_READ_TOKENS + CACHE_WRITE_TOKENS
    assert data["input_tokens"] == prompt
    assert data["cache_read_input_tokens"] == CACHE_READ_TOKENS
    assert data["cache_creation_input_tokens"] == CACHE_WRITE_TOKENS
    assert data["output_tokens"] == ANSWER_TOKENS
    assert data["total_tokens"] == prompt + ANSWER_TOKENS
    total = stats_of(telemetry)
    assert (total["input_tokens"], total["total_tokens"]) == (prompt, prompt + ANSWER_TOKENS)
    assert (total["cache_read_tokens"], total["cache_write_tokens"]) == (
        CACHE_READ_TOKENS,
        CACHE_WRITE_TOKENS,
    )


def test_openai_cached_and_reasoning_tokens_are_recorded_and_counted_in_stats(
    fake: FakeLLM, telemetry: TelemetryClient
) -> None:
    """OpenAI ``prompt_tokens_details.cached_tokens`` and ``completion_tokens_details.
    reasoning_tokens`` are recorded (parts of input and output), JSON and streamed."""
    llm = traced(fake, telemetry)
    reply = chat(llm, model="fake-reasoner")
    assert reply.usage.completion_tokens == ANSWER_TOKENS + REASONING_TOKENS
    stream_chunks(llm, model="fake-reasoner")
    for event in llm_calls(telemetry):
        data = event["data"]
        assert data["input_tokens"] == PROMPT_TOKENS
        assert data["cache_read_input_tokens"] == CACHED_TOKENS
        assert data["output_tokens"] == ANSWER_TOKENS + REASONING_TOKENS
        assert data["reasoning_tokens"] == REASONING_TOKENS
        assert "cache_creation_input_tokens" not in data
    total = stats_of(telemetry)
    assert (total["requests"], total["cache_read_tokens"], total["reasoning_tokens"]) == (
        2,
        2 * CACHED_TOKENS,
        2 * REASONING_TOKENS,
    )


# -- cancellation: the caller stopped waiting ------------------------------------------------


def delta_text(item: Any) -> str:
    """The text an OpenAI chunk or an Anthropic stream event adds to the answer ('' if none)."""
    choices = getattr(item, "choices", None)
    if choices:
        return choices[0].delta.content or ""
    delta = getattr(item, "delta", None)
    return getattr(delta, "text", None) or ""


async def stalling_stream(llm: Any) -> Any:
    """A streamed answer that stalls after ``STALL_AFTER`` words (until disconnected)."""
    if isinstance(llm, openai.AsyncOpenAI):
        return await llm.chat.completions.create(model="fake-stall", messages=MESSAGES, stream=True)
    return await llm.messages.create(
        model="claude-fake-stall",
        max_tokens=64,
        system=SYSTEM,
        messages=CLAUDE_MESSAGES,
        stream=True,
    )


def async_sdk(provider: str, fake: FakeLLM, telemetry: TelemetryClient) -> Any:
    """``AsyncOpenAI`` on an instrumented ``httpx.AsyncClient``, or ``AsyncAnthropic`` with
    its own client instrumented; content captured."""
    options: dict[str, Any] = {
        "provider_overrides": {"127.0.0.1": provider},
        "capture_content": True,
    }
    if provider == "openai":
        http = instrumented_async_http_client(telemetry, **options)
        return openai.AsyncOpenAI(
            base_url=fake.base_url, api_key="test-key", max_retries=0, http_client=http
        )
    llm = anthropic.AsyncAnthropic(base_url=fake.origin, api_key="test-key", max_retries=0)
    return instrument(llm, telemetry, **options)


def assert_cancelled_partial_call(data: dict[str, Any], provider: str) -> None:
    """Closed early, cancelled and partial, with the words that had arrived; not an error;
    the usage that had arrived (Anthropic's start event has the input tokens)."""
    assert (data["status"], data["streamed"]) == (200, True)
    assert data["closed_early"] is data["cancelled"] is data["partial"] is True
    assert "error" not in data
    assert data["answer"] == "".join(answer_chunks(ANSWER)[:STALL_AFTER])
    if provider == "anthropic":
        assert data["input_tokens"] == PROMPT_TOKENS
    else:
        assert "input_tokens" not in data  # OpenAI sends usage at the end only


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_cancelled_stream_is_recorded_as_closed_early_and_partial_not_as_an_error(
    fake: FakeLLM, telemetry: TelemetryClient, provider: str
) -> None:
    """An anyio cancel scope cancelled mid-answer (what a server does when its client
    leaves): the call is cancelled/closed early with the partial answer, no ``error``."""
    received: list[str] = []

    async def main() -> bool:
        async with async_sdk(provider, fake, telemetry) as llm:
            with anyio.CancelScope() as scope:
                stream = await stalling_stream(llm)
                async for item in stream:
                    if text := delta_text(item):
                        received.append(text)
                    if len(received) == STALL_AFTER:
                        scope.cancel()
            return scope.cancelled_caught

    assert asyncio.run(main())
    assert received == answer_chunks(ANSWER)[:STALL_AFTER]
    assert_cancelled_partial_call(only_call(telemetry), provider)


def test_client_disconnect_from_a_streaming_endpoint_records_a_cancelled_call(
    fake: FakeLLM, telemetry: TelemetryClient
) -> None:
    """A FastAPI endpoint relays a streamed answer; its HTTP client disconnects mid-answer.
    The server cancels the relay (anyio cancel scope): the ``llm_call`` is closed early,
    cancelled and partial, with no error text holding memory addresses."""
    from fastapi import FastAPI
    from fastapi.responses import StreamingResponse

    relay_done = threading.Event()
    app = FastAPI()

    @app.get("/relay")
    async def relay() -> StreamingResponse:
        llm = async_sdk("openai", fake, telemetry)
        stream = await stalling_stream(llm)

        async def words() -> AsyncIterator[bytes]:
            try:
                async for chunk in stream:
                    yield delta_text(chunk).encode()
            finally:
                with anyio.CancelScope(shield=True):  # clean up although cancelled
                    await llm.close()
                relay_done.set()

        return StreamingResponse(words(), media_type="text/plain")

    with serve_app(app) as server, httpx.Client(timeout=30) as http:
        with http.stream("GET", f"{server.origin}/relay") as response:
            seen = b""
            for piece in response.iter_raw():
                seen += piece
                if seen == "".join(answer_chunks(ANSWER)[:STALL_AFTER]).encode():
                    break  # leaving the block closes the connection mid-answer
        assert relay_done.wait(30), "the server never cancelled the relay"
    assert_cancelled_partial_call(only_call(telemetry), "openai")


def test_error_texts_have_memory_addresses_masked(telemetry: TelemetryClient) -> None:
    """An error whose text holds memory addresses is recorded with them masked, so
    occurrences of the same error group together."""
    text = "<Task pending name='Task-7' coro=<main() running at app.py:3> at 0x7f54a1b2c3d0>"
    error = RuntimeError(f"Cancelled via cancel scope 7f54a1b2c3d0 by {text}")

    def handler(request: httpx.Request) -> httpx.Response:
        raise error

    transport = InstrumentedTransport(httpx.MockTransport(handler), client=telemetry)
    with httpx.Client(transport=transport) as http, pytest.raises(RuntimeError):
        http.post("https://api.openai.com/v1/chat/completions", json={"model": "m"})
    recorded = only_call(telemetry)["error"]
    assert "7f54a1b2c3d0" not in recorded
    assert recorded == (
        "RuntimeError: Cancelled via cancel scope … by "
        "<Task pending name='Task-7' coro=<main() running at app.py:3> at …>"
    )


# -- units: response formats without their SDKs ---------------------------------------------


def parse(body: bytes, content_type: str, *, step: int = 0, encoding: str = "") -> Any:
    """Feed ``body`` to a capturing parser in ``step``-byte chunks (0: whole), then close."""
    parser = _llm.ResponseParser(
        content_type=content_type, content_encoding=encoding, capture_content=True
    )
    step = step or len(body) or 1
    for i in range(0, len(body), step):
        parser.feed(body[i : i + step])
    parser.close()
    return parser


def sse(*events: dict[str, Any], crlf: bool = False) -> bytes:
    """An SSE body with an ``event:`` line per event (as Anthropic sends them)."""
    nl = "\r\n" if crlf else "\n"
    out = "".join(f"event: {e['type']}{nl}data: {json.dumps(e)}{nl}{nl}" for e in events)
    return out.encode()


ANTHROPIC_EVENTS = (
    {
        "type": "message_start",
        "message": {"model": "claude-x", "usage": {"input_tokens": 12, "output_tokens": 1}},
    },
    {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
    {"type": "ping"},
    {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Héllo"}},
    {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": " you"}},
    {"type": "content_block_stop", "index": 0},
    {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 7}},
    {"type": "message_stop"},
)


@pytest.mark.parametrize("step", [0, 1, 7, 64])
@pytest.mark.parametrize("crlf", [False, True])
def test_anthropic_sse_parser(step: int, crlf: bool) -> None:
    """Anthropic SSE: model and input from ``message_start``, output from ``message_delta``."""
    parser = parse(sse(*ANTHROPIC_EVENTS, crlf=crlf), "text/event-stream", step=step)
    assert parser.model == "claude-x"
    assert (parser.input_tokens, parser.output_tokens) == (12, 7)
    assert parser.answer == "Héllo you"
    assert parser.complete


def parse_split(body: bytes, content_type: str, cuts: list[int]) -> tuple[Any, ...]:
    """Parse ``body`` fed in pieces cut at ``cuts``; the parser's results as a tuple."""
    parser = _llm.ResponseParser(content_type=content_type, capture_content=True)
    bounds = [0, *sorted(cuts), len(body)]
    for start, stop in itertools.pairwise(bounds):
        parser.feed(body[start:stop])
    parser.close()
    return (
        parser.model,
        parser.input_tokens,
        parser.output_tokens,
        parser.total_tokens,
        parser.answer,
        parser.complete,
    )


def test_sse_results_do_not_depend_on_chunking() -> None:
    """Any split of an SSE body (LF or CRLF, any format) parses to the same results."""
    openai_chunks = [
        {"model": "gpt-x", "choices": [{"index": 0, "delta": {"content": piece}}]}
        for piece in answer_chunks(ANSWER)
    ]
    usage = {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}
    openai_body = "".join(f"data: {json.dumps(c)}\n\n" for c in openai_chunks)
    openai_body += f"data: {json.dumps({'choices': [], 'usage': usage})}\n\ndata: [DONE]\n\n"
    bodies = [
        openai_body.encode(),
        openai_body.replace("\n", "\r\n").encode(),
        sse(*ANTHROPIC_EVENTS),
        sse(*ANTHROPIC_EVENTS, crlf=True),
    ]
    rng = random.Random(1234)
    for body in bodies:
        whole = parse_split(body, "text/event-stream", [])
        assert whole[-2:] in ((ANSWER, True), ("Héllo you", True))
        for _ in range(200):
            cuts = rng.sample(range(1, len(body)), rng.randint(1, 40))
            assert parse_split(body, "text/event-stream", cuts) == whole, cuts


def test_anthropic_json_parser_and_errors() -> None:
    """Anthropic JSON: usage (cache reads counted in the input) and text blocks; an error
    body gives the error message."""
    body = {
        "type": "message",
        "model": "claude-x",
        "content": [{"type": "text", "text": "A"}, {"type": "tool_use"}, {"type": "text"}],
        "usage": {"input_tokens": 5, "output_tokens": 2, "cache_read_input_tokens": 9},
    }
    parser = parse(json.dumps(body).encode(), "application/json", step=3)
    assert (parser.model, parser.input_tokens, parser.output_tokens) == ("claude-x", 14, 2)
    assert (parser.cache_read_input_tokens, parser.cache_creation_input_tokens) == (9, None)
    assert parser.answer == "A"
    error = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    parser = parse(json.dumps(error).encode(), "application/json")
    assert parser.error_message == "overloaded_error: Overloaded"
    stream_error = sse(ANTHROPIC_EVENTS[0], {"type": "error", "error": error["error"]})
    assert parse(stream_error, "text/event-stream").error_message == "overloaded_error: Overloaded"


def test_anthropic_calls_end_to_end(fake: FakeLLM, telemetry: TelemetryClient) -> None:
    """Anthropic-format calls through httpx (JSON and SSE) record tokens, answer and system."""
    body = {"model": "claude-fake", "system": "Be brief.", "messages": MESSAGES[1:]}
    http = instrumented_http_client(
        telemetry, provider_overrides={"127.0.0.1": "anthropic"}, capture_content=True
    )
    with http:
        http.post(f"{fake.base_url}/messages", json=body).raise_for_status()
        with http.stream("POST", f"{fake.base_url}/messages", json={**body, "stream": True}) as r:
            assert r.read().count(b"content_block_delta") == 2 * len(ANSWER.split())
    for event, streamed in zip(llm_calls(telemetry), (False, True), strict=True):
        data = event["data"]
        assert (data["provider"], data["model"], data["streamed"]) == (
            "anthropic",
            "claude-fake",
            streamed,
        )
        assert (data["input_tokens"], data["output_tokens"]) == (PROMPT_TOKENS, ANSWER_TOKENS)
        assert data["total_tokens"] == PROMPT_TOKENS + ANSWER_TOKENS
        assert data["answer"] == ANSWER
        assert data["prompt"] == [{"role": "system", "content": "Be brief."}, *MESSAGES[1:]]


def test_responses_api_parser() -> None:
    """OpenAI Responses API: ``input_tokens``/``output_tokens`` in JSON and stream events."""
    usage = {"input_tokens": 4, "output_tokens": 3, "total_tokens": 7}
    body = {
        "object": "response",
        "model": "gpt-r",
        "output": [
            {"type": "reasoning", "summary": []},
            {"type": "message", "content": [{"type": "output_text", "text": "Fine."}]},
        ],
        "usage": usage,
    }
    parser = parse(json.dumps(body).encode(), "application/json; charset=utf-8")
    assert (parser.model, parser.total_tokens, parser.answer) == ("gpt-r", 7, "Fine.")
    stream = sse(
        {"type": "response.created", "response": {"model": "gpt-r", "usage": None}},
        {"type": "response.output_text.delta", "delta": "Fi"},
        {"type": "response.output_text.delta", "delta": "ne."},
        {"type": "response.completed", "response": {**body, "output": []}},
    )
    parser = parse(stream, "text/event-stream", step=5)
    assert (parser.model, parser.input_tokens, parser.output_tokens) == ("gpt-r", 4, 3)
    assert parser.answer == "Fine."
    assert parser.complete


def test_gemini_parser() -> None:
    """Gemini: ``usageMetadata`` and candidate parts, as SSE and as a streamed JSON array."""
    chunks = [
        {
            "candidates": [{"content": {"parts": [{"text": "Hi"}]}}],
            "modelVersion": "gemini-x",
        },
        {
            "candidates": [{"content": {"parts": [{"text": " there"}]}, "finishReason": "STOP"}],
            "usageMetadata": {
                "promptTokenCount": 3,
                "candidatesTokenCount": 2,
                "totalTokenCount": 5,
            },
        },
    ]
    as_sse = b"".join(b"data: " + json.dumps(c).encode() + b"\r\n\r\n" for c in chunks)
    for parser in (
        parse(as_sse, "text/event-stream", step=9),
        parse(json.dumps(chunks).encode(), "application/json", step=9),
    ):
        assert (parser.model, parser.total_tokens, parser.answer) == ("gemini-x", 5, "Hi there")
        assert parser.complete
    model, stream, _ = _llm.parse_request(
        b"{}", "/v1beta/models/gemini-x:generateContent", capture_content=False, max_bytes=100
    )
    assert (model, stream) == ("gemini-x", False)


def test_compressed_and_oversized_bodies() -> None:
    """gzip bodies are decoded; past ``max_bytes`` usage still comes from the body's tail."""
    body = json.dumps(
        {"model": "m", "data": ["x" * 1000] * 50, "usage": {"prompt_tokens": 8, "total_tokens": 8}}
    ).encode()
    parser = parse(gzip.compress(body), "application/json", step=100, encoding="gzip")
    assert (parser.model, parser.input_tokens, parser.total_tokens) == ("m", 8, 8)
    small = _llm.ResponseParser(content_type="application/json", max_bytes=1000)
    for i in range(0, len(body), 333):
        small.feed(body[i : i + 333])
    small.close()
    assert (small.model, small.input_tokens) == (None, 8)
    bomb = gzip.compress(b" " * (20 * 1024 * 1024))  # 20 MiB of blanks in ~20 KiB
    for encoded in (bomb, b"not gzip at all"):
        parser = _llm.ResponseParser(
            content_type="application/json", content_encoding="gzip", max_bytes=1000
        )
        parser.feed(encoded)
        assert parser.dead  # gave up at once (no 20 MiB decoded), did not raise
    unknown = parse(b"\x00garbage", "application/octet-stream")
    assert (unknown.model, unknown.input_tokens, unknown.answer) == (None, None, None)
    broken = parse(b'data: {"model": \n\ndata: [DONE]\n\n', "text/event-stream")
    assert broken.model is None
    assert broken.complete


def test_already_read_mock_responses_are_recorded(telemetry: TelemetryClient) -> None:
    """A transport answering with a fully read body (``MockTransport``) is still parsed."""
    answer = {"model": "m", "choices": [], "usage": {"prompt_tokens": 2, "completion_tokens": 1}}

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=answer)

    transport = InstrumentedTransport(httpx.MockTransport(handler), client=telemetry)
    with httpx.Client(transport=transport) as http:
        reply = http.post("https://openrouter.ai/api/v1/chat/completions", json={})
    assert reply.json() == answer
    data = only_call(telemetry)
    assert (data["provider"], data["total_tokens"], data["response_bytes"]) == (
        "openrouter",
        3,
        len(reply.content),
    )


def test_token_details_are_normalised_across_formats() -> None:
    """Input counts every prompt token (cache reads and writes too), output every generated
    token (reasoning too), in every format; parts are kept beside them."""
    anthropic_stream = sse(
        {
            "type": "message_start",
            "message": {
                "model": "claude-x",
                "usage": {
                    "input_tokens": 21,
                    "cache_read_input_tokens": 5,
                    "cache_creation_input_tokens": 3,
                    "output_tokens": 1,
                },
            },
        },
        {"type": "message_delta", "usage": {"output_tokens": 9}},
        {"type": "message_stop"},
    )
    responses_api = {
        "object": "response",
        "usage": {
            "input_tokens": 30,
            "input_tokens_details": {"cached_tokens": 20},
            "output_tokens": 12,
            "output_tokens_details": {"reasoning_tokens": 8},
            "total_tokens": 42,
        },
    }
    gemini = {
        "usageMetadata": {
            "promptTokenCount": 10,
            "cachedContentTokenCount": 4,
            "candidatesTokenCount": 6,
            "thoughtsTokenCount": 5,
            "totalTokenCount": 21,
        }
    }
    # A gateway's OpenAI shape with Anthropic-style extras: prompt_tokens already has them.
    gateway = {
        "usage": {"prompt_tokens": 50, "completion_tokens": 2, "cache_read_input_tokens": 40}
    }
    cases = [
        (anthropic_stream, "text/event-stream", (29, 9, None, 5, 3, None)),
        (json.dumps(responses_api).encode(), "application/json", (30, 12, 42, 20, None, 8)),
        (json.dumps(gemini).encode(), "application/json", (10, 11, 21, 4, None, 5)),
        (json.dumps(gateway).encode(), "application/json", (50, 2, None, 40, None, None)),
    ]
    for body, content_type, expected in cases:
        parser = parse(body, content_type, step=7)
        assert (
            parser.input_tokens,
            parser.output_tokens,
            parser.total_tokens,
            parser.cache_read_input_tokens,
            parser.cache_creation_input_tokens,
            parser.reasoning_tokens,
        ) == expected, body
