"""The proxy's own answers (401, 429, 413, 502, 504, 404), /health, /metrics, keys never
recorded, and configuration errors naming the variable."""

from __future__ import annotations

import json
import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from _upstream import Upstream
from proxy_kit import RunningProxy, llm_calls

from telemetry_client import TelemetryClient, TelemetrySettings
from telemetry_client.errors import ConfigError
from telemetry_client.proxy import ProxyConfig
from telemetry_client.proxy.server import startup_lines

pytest_plugins = ["_proxy_fixtures"]

KEY = "sk-proxy-key-Qw7TmN2pL4vR9sK3"
OTHER_KEY = "sk-proxy-key-other-Zx81bY6cD0"
UPSTREAM_KEY = "sk-upstream-key-eF5gH1aB2cD3"
BODY = {"model": "fake-model", "messages": [{"role": "user", "content": "hi"}]}


def post(proxy: RunningProxy, body: object = BODY, **headers: str) -> httpx.Response:
    with httpx.Client(timeout=30) as http:
        return http.post(f"{proxy.base_url}/chat/completions", json=body, headers=headers)


def assert_openai_error(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code
    assert isinstance(error["message"], str)
    assert isinstance(error["type"], str)


def test_keys_bearer_or_x_api_key_else_401(proxy_factory: Callable[..., RunningProxy]) -> None:
    proxy = proxy_factory(api_keys=(KEY, OTHER_KEY))
    assert_openai_error(post(proxy), 401, "invalid_api_key")
    assert_openai_error(post(proxy, authorization="Bearer wrong"), 401, "invalid_api_key")
    assert_openai_error(post(proxy, authorization=f"Basic {KEY}"), 401, "invalid_api_key")
    assert post(proxy, authorization=f"Bearer {KEY}").status_code == 200
    assert post(proxy, **{"x-api-key": OTHER_KEY}).status_code == 200
    with httpx.Client() as http:  # health and metrics stay open
        assert http.get(f"{proxy.origin}/health").json() == {"status": "ok"}
        assert 'status="401"' in http.get(f"{proxy.origin}/metrics").text


def test_rate_limit_per_key_with_retry_after(
    proxy_factory: Callable[..., RunningProxy], telemetry: TelemetryClient
) -> None:
    proxy = proxy_factory(api_keys=(KEY, OTHER_KEY), rate_limit=2)
    mine = {"authorization": f"Bearer {KEY}"}
    assert [post(proxy, **mine).status_code for _ in range(2)] == [200, 200]
    refused = post(proxy, **mine)
    assert_openai_error(refused, 429, "rate_limit_exceeded")
    assert 1 <= int(refused.headers["retry-after"]) <= 30  # a token every 30 s at 2/min
    assert post(proxy, authorization=f"Bearer {OTHER_KEY}").status_code == 200  # own bucket
    assert len(llm_calls(telemetry)) == 3  # the refused request was not forwarded


def test_rate_limit_per_client_address_without_keys(
    proxy_factory: Callable[..., RunningProxy],
) -> None:
    proxy = proxy_factory(rate_limit=1)
    assert post(proxy, authorization="Bearer a").status_code == 200
    assert_openai_error(post(proxy, authorization="Bearer b"), 429, "rate_limit_exceeded")


def test_body_over_the_limit_is_413(
    proxy_factory: Callable[..., RunningProxy], fake: Upstream
) -> None:
    proxy = proxy_factory(max_body_bytes=200)
    big = {**BODY, "messages": [{"role": "user", "content": "x" * 300}]}
    assert_openai_error(post(proxy, big), 413, "request_too_large")  # by Content-Length

    def chunked() -> Iterator[bytes]:
        yield json.dumps(big).encode()  # no Content-Length: counted while read

    with httpx.Client(timeout=30) as http:
        response = http.post(f"{proxy.base_url}/chat/completions", content=chunked())
    assert_openai_error(response, 413, "request_too_large")
    assert fake.received == []
    assert post(proxy).status_code == 200  # a small one still passes


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_unreachable_upstream_is_502_and_recorded(
    proxy_factory: Callable[..., RunningProxy], telemetry: TelemetryClient
) -> None:
    proxy = proxy_factory(upstream=f"http://127.0.0.1:{_closed_port()}/v1")
    assert_openai_error(post(proxy), 502, "upstream_unreachable")
    [call] = llm_calls(telemetry)
    assert "status" not in call
    assert call["error"].startswith("ConnectError")


def test_upstream_timeout_is_504(
    proxy_factory: Callable[..., RunningProxy], fake: Upstream, telemetry: TelemetryClient
) -> None:
    proxy = proxy_factory(timeout=0.5)
    assert_openai_error(post(proxy, {**BODY, "model": "fake-slow-head"}), 504, "upstream_timeout")
    fake.gate.set()
    [call] = llm_calls(telemetry)
    assert call["error"].startswith("ReadTimeout")
    metrics = httpx.get(f"{proxy.origin}/metrics").text
    assert 'telemetry_proxy_upstream_errors_total{kind="timeout"} 1' in metrics


def test_paths_outside_v1_are_404(proxy: RunningProxy) -> None:
    assert_openai_error(httpx.get(f"{proxy.origin}/chat/completions"), 404, "not_found")


def test_metrics_count_requests_tokens_latency(proxy: RunningProxy) -> None:
    assert post(proxy).status_code == 200
    assert post(proxy, {**BODY, "model": "fake-500"}).status_code == 500
    text = httpx.get(f"{proxy.origin}/metrics").text
    assert 'telemetry_proxy_requests_total{status="200",model="fake-model"} 1' in text
    assert 'telemetry_proxy_requests_total{status="500",model="fake-500"} 1' in text
    assert 'telemetry_proxy_tokens_total{model="fake-model",kind="input"} 1' in text
    assert 'telemetry_proxy_tokens_total{model="fake-model",kind="output"} 3' in text
    assert "telemetry_proxy_upstream_latency_seconds_count 2" in text
    assert "telemetry_proxy_in_flight 0" in text


def test_keys_never_reach_the_spool(
    proxy_factory: Callable[..., RunningProxy],
    telemetry: TelemetryClient,
) -> None:
    proxy = proxy_factory(
        api_keys=(KEY,), upstream_api_key=UPSTREAM_KEY, capture_content=True, rate_limit=100
    )
    with httpx.Client(timeout=30) as http:
        for stream in (False, True):
            body = {**BODY, "stream": stream}
            url = f"{proxy.base_url}/chat/completions?key={KEY}"
            assert http.post(url, json=body, headers={"authorization": f"Bearer {KEY}"})
            assert http.post(url, json=body, headers={"x-api-key": KEY})
        assert http.post(f"{proxy.base_url}/chat/completions", json=BODY).status_code == 401
    calls = llm_calls(telemetry)
    assert len(calls) == 4
    assert all(c["prompt"] == BODY["messages"] for c in calls)  # content was captured
    assert telemetry.close().ok
    found = []
    files = [p for p in Path(telemetry.settings.resolved_spool_dir).rglob("*") if p.is_file()]
    assert files
    for path in files:
        if path.is_file():
            raw = path.read_bytes()
            found += [path for secret in (KEY, UPSTREAM_KEY) if secret.encode() in raw]
    assert found == []
    decoded = b"".join(raw for _name, raw in telemetry.spool.iter_batches_newest_first())
    assert b"llm_call" in decoded
    assert KEY.encode() not in decoded
    assert UPSTREAM_KEY.encode() not in decoded


def test_configuration_errors_name_the_variable_and_hide_keys() -> None:
    with pytest.raises(ConfigError, match=r"TELEMETRY_PROXY_PORT='abc'"):
        ProxyConfig.load(
            environ={"TELEMETRY_PROXY_UPSTREAM": "http://x/v1", "TELEMETRY_PROXY_PORT": "abc"}
        )
    with pytest.raises(ConfigError, match="TELEMETRY_PROXY_UPSTREAM='ftp://x'"):
        ProxyConfig.load(environ={"TELEMETRY_PROXY_UPSTREAM": "ftp://x"})
    with pytest.raises(ConfigError, match="--upstream"):
        ProxyConfig.load(environ={})
    with pytest.raises(ConfigError) as info:
        ProxyConfig.load(
            environ={
                "TELEMETRY_PROXY_UPSTREAM": "http://x/v1",
                "TELEMETRY_PROXY_API_KEYS": "sk-secret with-space",
            }
        )
    assert "TELEMETRY_PROXY_API_KEYS=<redacted>" in str(info.value)
    assert "sk-secret" not in str(info.value)
    with pytest.raises(ConfigError, match="--rate-limit='-1'"):
        ProxyConfig.load(
            {"rate_limit": "-1", "flag_names": {"rate_limit": "--rate-limit"}},
            environ={"TELEMETRY_PROXY_UPSTREAM": "http://x/v1"},
        )
    flags_win = ProxyConfig.load(
        {"port": "9000"},
        environ={"TELEMETRY_PROXY_UPSTREAM": "http://x/v1/", "TELEMETRY_PROXY_PORT": "1"},
    )
    assert (flags_win.port, flags_win.upstream) == (9000, "http://x/v1")
    assert KEY not in repr(ProxyConfig(upstream="http://x/v1", api_keys=(KEY,)))


def test_binding_beyond_loopback_without_keys_warns(
    settings_factory: Callable[..., TelemetrySettings],
) -> None:
    settings = settings_factory()
    open_lines = startup_lines(ProxyConfig(upstream="http://x/v1", host="0.0.0.0"), 1, settings)  # noqa: S104
    assert any("WARNING" in line for line in open_lines)
    keyed = ProxyConfig(upstream="http://x/v1", host="0.0.0.0", api_keys=(KEY,))  # noqa: S104
    assert not any("WARNING" in line for line in startup_lines(keyed, 1, settings))
    local = startup_lines(ProxyConfig(upstream="http://x/v1"), 8788, settings)
    assert not any("WARNING" in line for line in local)
    assert "http://127.0.0.1:8788/v1" in local[0]
