"""What the client receives through the proxy: the upstream's bytes, as they arrive.

Byte identity (with and without usage the proxy asked for), the first chunk before the
upstream sends the second (the fake holds its stream on a gate only the test opens), the
retry without ``stream_options``, pass-through of methods, paths, queries and headers,
upstream errors unchanged, and a client going away cancelling the upstream request.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from _upstream import Upstream
from proxy_kit import RunningProxy, llm_calls, wait_until

from telemetry_client import TelemetryClient

pytest_plugins = ["_proxy_fixtures"]

MESSAGES = [{"role": "user", "content": "one two three"}]
HANG_S = 10.0  # hang bound for reads that must come promptly


def chat_body(model: str = "fake-model", stream: bool = True, **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": MESSAGES, "stream": stream, **extra}


def raw_post(base_url: str, body: dict[str, Any], **headers: str) -> httpx.Response:
    """POST the chat body; the raw (undecoded) bytes are ``response.content``."""
    with httpx.Client(timeout=HANG_S) as http:
        response = http.post(f"{base_url}/chat/completions", json=body, headers=headers)
        response.read()
        return response


@pytest.mark.parametrize("client_asked", [False, True], ids=["proxy-asks", "client-asks"])
def test_stream_bytes_are_the_upstreams(
    fake: Upstream, proxy: RunningProxy, telemetry: TelemetryClient, client_asked: bool
) -> None:
    extra: dict[str, Any] = {"stream_options": {"include_usage": True}} if client_asked else {}
    direct = raw_post(fake.base_url, chat_body(**extra))
    proxied = raw_post(proxy.base_url, chat_body(**extra))
    assert proxied.status_code == direct.status_code == 200
    assert proxied.content == direct.content
    assert (b'"usage":{' in proxied.content) is client_asked
    assert proxied.headers["content-type"] == direct.headers["content-type"]
    sent = json.loads(fake.received[-1]["body"])  # what the proxy sent upstream
    assert sent["stream_options"] == {"include_usage": True}
    [call] = llm_calls(telemetry)
    assert (call["input_tokens"], call["output_tokens"]) == (3, 5)


def test_plain_response_bytes_and_headers_are_the_upstreams(
    fake: Upstream, proxy: RunningProxy
) -> None:
    direct = raw_post(fake.base_url, chat_body(stream=False))
    proxied = raw_post(proxy.base_url, chat_body(stream=False))
    assert proxied.content == direct.content
    assert proxied.headers["content-length"] == direct.headers["content-length"]
    assert json.loads(fake.received[-1]["body"]) == chat_body(stream=False)  # unchanged


def test_first_chunk_reaches_the_client_before_the_upstream_sends_the_second(
    fake: Upstream, proxy: RunningProxy, telemetry: TelemetryClient
) -> None:
    with (
        httpx.Client(timeout=HANG_S) as http,
        http.stream(
            "POST", f"{proxy.base_url}/chat/completions", json=chat_body("fake-gated")
        ) as response,
    ):
        got = b""
        chunks = response.iter_raw()
        while b'"content":"You"' not in got:
            got += next(chunks)  # a buffering proxy hangs here (the read timeout fails it)
        assert not fake.gate.is_set()  # the upstream is still holding its second chunk
        fake.gate.set()
        got += b"".join(chunks)
    assert got.endswith(b"data: [DONE]\n\n")
    assert b'"usage"' not in got
    [call] = llm_calls(telemetry)
    assert call["output_tokens"] == 5
    assert "partial" not in call


def test_upstream_rejecting_stream_options_gets_the_request_as_sent_and_is_remembered(
    fake: Upstream, proxy: RunningProxy, telemetry: TelemetryClient
) -> None:
    fake.reject_stream_options = True
    direct = raw_post(fake.base_url, chat_body())
    fake.received.clear()
    first = raw_post(proxy.base_url, chat_body())
    assert first.status_code == 200
    assert first.content == direct.content
    bodies = [json.loads(r["body"]) for r in fake.received]
    assert ["stream_options" in b for b in bodies] == [True, False]  # tried once, then as sent
    fake.received.clear()
    second = raw_post(proxy.base_url, chat_body())
    assert second.content == direct.content
    assert ["stream_options" in json.loads(r["body"]) for r in fake.received] == [False]
    metrics = httpx.get(f"{proxy.origin}/metrics").text
    assert 'telemetry_proxy_usage_option_total{outcome="rejected"} 1' in metrics
    calls = llm_calls(telemetry)
    assert [c["status"] for c in calls] == [200, 200]


def test_upstream_errors_are_relayed_unchanged(
    fake: Upstream, proxy: RunningProxy, telemetry: TelemetryClient
) -> None:
    for model in ("fake-429", "fake-500"):
        direct = raw_post(fake.base_url, chat_body(model, stream=False))
        proxied = raw_post(proxy.base_url, chat_body(model, stream=False))
        assert proxied.status_code == direct.status_code == int(model[-3:])
        assert proxied.content == direct.content
        assert proxied.headers.get("retry-after") == direct.headers.get("retry-after")
    calls = llm_calls(telemetry)
    assert [c["status"] for c in calls] == [429, 500]
    assert calls[0]["error"] == "HTTP 429: rate: fake rate"


def test_any_method_path_query_and_headers_pass_through(
    proxy_factory: Callable[..., RunningProxy], fake: Upstream, telemetry: TelemetryClient
) -> None:
    proxy = proxy_factory()
    headers = {
        "authorization": "Bearer client-key",
        "x-custom": "kept",
        "connection": "keep-alive, x-hop",
        "x-hop": "dropped: named by Connection",
        "te": "trailers",
        "proxy-authorization": "Basic dropped",
    }
    with httpx.Client(timeout=HANG_S) as http:
        for method in ("GET", "PUT", "PATCH", "DELETE", "POST"):
            response = http.request(
                method,
                f"{proxy.base_url}/echo/files/a%20b?purpose=fine-tune&x=1&x=2",
                content=b"payload" if method != "GET" else None,
                headers=headers,
            )
            assert response.status_code == 200, response.text
            seen = response.json()
            assert seen["method"] == method
            assert seen["path"] == "/v1/echo/files/a b"
            assert seen["query"] == "purpose=fine-tune&x=1&x=2"
            assert seen["body"] == ("payload" if method != "GET" else "")
            names = {k for k, _ in seen["headers"]}
            assert ("x-custom", "kept") in [tuple(h) for h in seen["headers"]]
            assert ("authorization", "Bearer client-key") in [tuple(h) for h in seen["headers"]]
            assert not names & {"x-hop", "te", "proxy-authorization"}
            assert dict(seen["headers"])["host"] == f"127.0.0.1:{fake.port}"
        status = http.get(f"{proxy.base_url}/echo/x?status=418").status_code
        assert status == 418
        assert http.get(f"{proxy.base_url}/models").json()["data"][0]["id"] == "fake-model"
    assert llm_calls(telemetry) == []  # none of these is an LLM call


def test_upstream_api_key_replaces_the_clients(
    proxy_factory: Callable[..., RunningProxy],
) -> None:
    proxy = proxy_factory(upstream_api_key="sk-upstream-secret")
    with httpx.Client(timeout=HANG_S) as http:
        bearer = http.get(f"{proxy.base_url}/echo/a", headers={"authorization": "Bearer mine"})
        anthropic_style = http.get(f"{proxy.base_url}/echo/a", headers={"x-api-key": "mine"})
    assert ["authorization", "Bearer sk-upstream-secret"] in bearer.json()["headers"]
    assert ["x-api-key", "sk-upstream-secret"] in anthropic_style.json()["headers"]
    assert "mine" not in bearer.text + anthropic_style.text


@pytest.mark.parametrize("model", ["fake-stall", "claude-fake-stall"])
def test_client_going_away_cancels_the_upstream_and_records_partial_usage(
    fake: Upstream, proxy: RunningProxy, telemetry: TelemetryClient, model: str
) -> None:
    path = "/messages" if model.startswith("claude") else "/chat/completions"
    with (
        httpx.Client(timeout=HANG_S) as http,
        http.stream("POST", f"{proxy.base_url}{path}", json=chat_body(model)) as response,
    ):
        got = b""
        chunks = response.iter_raw()
        while got.count(b"\n\n") < 3:
            got += next(chunks)
    # leaving the block closed the connection: the proxy must cancel its upstream request
    assert fake.disconnected.wait(HANG_S), "the upstream request was not cancelled"
    [call] = wait_until(lambda: llm_calls(telemetry), what="the call recorded")
    assert call["closed_early"] is True
    assert call["cancelled"] is True
    assert call["partial"] is True
    assert "error" not in call
    if model.startswith("claude"):
        assert call["input_tokens"] == 8  # message_start had arrived
    line = f'telemetry_proxy_requests_total{{status="499",model="{model}"}} 1'
    metrics = wait_until(lambda: (m := httpx.get(f"{proxy.origin}/metrics").text) * (line in m))
    assert "telemetry_proxy_in_flight 0" in metrics
