"""The real ``openai`` (Python, sync and async; Node) and ``anthropic`` clients through the
proxy give the same results as directly against the upstream, and each call is recorded
once with its usage."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest
from _upstream import Upstream
from proxy_kit import RunningProxy, llm_calls

from telemetry_client import TelemetryClient

pytest_plugins = ["_proxy_fixtures"]

MESSAGES: Any = [{"role": "user", "content": "hello proxy world"}]
KEY = "sk-test-client-key-0123456789"
NODE_DIR = Path(__file__).parent / "node"


def _chat_sync(base_url: str, stream: bool) -> Any:
    with openai.OpenAI(base_url=base_url, api_key=KEY, max_retries=0) as llm:
        if not stream:
            return llm.chat.completions.create(model="fake-model", messages=MESSAGES).model_dump()
        chunks = llm.chat.completions.create(model="fake-model", messages=MESSAGES, stream=True)
        return [c.model_dump() for c in chunks]


async def _chat_async(base_url: str, stream: bool) -> Any:
    async with openai.AsyncOpenAI(base_url=base_url, api_key=KEY, max_retries=0) as llm:
        if not stream:
            done = await llm.chat.completions.create(model="fake-model", messages=MESSAGES)
            return done.model_dump()
        chunks = await llm.chat.completions.create(
            model="fake-model", messages=MESSAGES, stream=True
        )
        return [c.model_dump() async for c in chunks]


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
@pytest.mark.parametrize("mode", ["sync", "async"])
def test_openai_python_same_results_through_the_proxy(
    fake: Upstream, proxy: RunningProxy, telemetry: TelemetryClient, mode: str, stream: bool
) -> None:
    def run(base_url: str) -> Any:
        if mode == "sync":
            return _chat_sync(base_url, stream)
        return asyncio.run(_chat_async(base_url, stream))

    direct = run(fake.base_url)
    proxied = run(proxy.base_url)
    assert proxied == direct
    if stream:
        assert all(chunk.get("usage") is None for chunk in proxied)  # none asked, none seen
        assert "".join(c["choices"][0]["delta"]["content"] or "" for c in proxied[:-1]) == (
            "You said: hello proxy world"
        )
    [call] = llm_calls(telemetry)
    assert call["provider"] == "openai"
    assert call["model"] == "fake-model"
    assert call["endpoint"] == "/v1/chat/completions"
    assert call["status"] == 200
    assert call["streamed"] is stream
    # usage is recorded for the stream too: the proxy asked for it upstream
    assert (call["input_tokens"], call["output_tokens"], call["total_tokens"]) == (3, 5, 8)
    assert call["cache_read_input_tokens"] == 1
    assert ("ttft_ms" in call) is stream
    assert "prompt" not in call  # content capture is off
    assert "answer" not in call


def test_anthropic_messages_usage_from_message_start_and_delta(
    fake: Upstream, proxy: RunningProxy, telemetry: TelemetryClient
) -> None:
    def run(origin: str, stream: bool) -> Any:
        with anthropic.Anthropic(base_url=origin, api_key=KEY, max_retries=0) as llm:
            if not stream:
                return llm.messages.create(
                    model="claude-fake", max_tokens=50, messages=MESSAGES
                ).model_dump()
            with llm.messages.stream(
                model="claude-fake", max_tokens=50, messages=MESSAGES
            ) as events:
                return [e.model_dump() for e in events]

    for stream in (False, True):
        assert run(proxy.origin, stream) == run(fake.origin, stream)
    calls = llm_calls(telemetry)
    assert [c["streamed"] for c in calls] == [False, True]
    for call in calls:
        assert call["endpoint"] == "/v1/messages"
        assert call["model"] == "claude-fake"
        # input counts cache reads and writes (3 + 2) beside the 3 uncached tokens
        assert (call["input_tokens"], call["output_tokens"]) == (8, 5)
        assert call["cache_read_input_tokens"] == 3
        assert call["cache_creation_input_tokens"] == 2
    # the proxy adds nothing to Anthropic requests
    assert all(b"stream_options" not in r["body"] for r in fake.received)


def _node_ready() -> str | None:
    """Why the Node test cannot run (``None``: it can); installs ``openai`` once."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        return "node or npm not found on PATH"
    if (NODE_DIR / "node_modules" / "openai" / "package.json").exists():
        return None  # installed by an earlier run: the cache
    done = subprocess.run(
        [npm, "install", "--no-audit", "--no-fund", "--loglevel=error"],
        cwd=NODE_DIR,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if done.returncode != 0:
        pytest.fail(f"npm install failed in {NODE_DIR}: {done.stderr[-2000:]}")
    return None


def test_openai_node_package_through_the_proxy(
    fake: Upstream, proxy: RunningProxy, telemetry: TelemetryClient
) -> None:
    reason = _node_ready()
    if reason is not None:
        print(f"SKIPPED the Node openai test: {reason}")
        pytest.skip(reason)

    def run(base_url: str) -> Any:
        done = subprocess.run(
            ["node", "calls.mjs"],
            cwd=NODE_DIR,
            env={**os.environ, "BASE_URL": base_url, "OPENAI_API_KEY": KEY},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    direct = run(fake.base_url)
    proxied = run(proxy.base_url)
    assert proxied == direct
    assert proxied["plain"]["choices"][0]["message"]["content"] == "You said: hello proxy world"
    assert "".join(proxied["streamed"]) == "You said: hello proxy world"
    calls = llm_calls(telemetry)
    assert [c["streamed"] for c in calls] == [False, True]
    assert all(c["output_tokens"] == 5 for c in calls)


def test_content_capture_records_prompt_and_answer(
    proxy_factory: Callable[..., RunningProxy], telemetry: TelemetryClient
) -> None:
    proxy = proxy_factory(capture_content=True)
    assert _chat_sync(proxy.base_url, stream=True)
    [call] = llm_calls(telemetry)
    assert call["prompt"] == MESSAGES
    assert call["answer"] == "You said: hello proxy world"
