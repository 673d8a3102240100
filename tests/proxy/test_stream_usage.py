"""Units of the usage option: what is added to the request, what is cut from the stream."""

from __future__ import annotations

import json

import pytest

from telemetry_client.proxy.stream_usage import UsageStripper, add_usage_option

pytest_plugins = ["_proxy_fixtures"]

CHUNK = b'data: {"id":"c","choices":[{"index":0,"delta":{"content":"hi"}}]'
WITH_NULL = CHUNK + b',"usage":null}\n\n'
PLAIN = CHUNK + b"}\n\n"
USAGE = b'data: {"id":"c","choices":[],"usage":{"prompt_tokens":1,"completion_tokens":2}}\n\n'
DONE = b"data: [DONE]\n\n"


def test_option_added_only_to_streams_that_did_not_ask() -> None:
    added = add_usage_option(b'{"model":"m","stream":true,"stream_options":{"x":1}}')
    assert added is not None
    assert json.loads(added)["stream_options"] == {"x": 1, "include_usage": True}
    assert add_usage_option(b'{"model":"m","stream":false}') is None
    assert add_usage_option(b'{"stream":true,"stream_options":{"include_usage":true}}') is None
    assert add_usage_option(b"not json") is None
    assert add_usage_option(b'{"stream":true,"stream_options":"odd"}') is None


def strip_all(pieces: list[bytes]) -> bytes:
    stripper = UsageStripper()
    return b"".join(stripper.feed(p) for p in pieces) + stripper.close()


@pytest.mark.parametrize("size", [1, 7, 64, 10_000])
def test_strips_exactly_what_the_option_added_however_the_bytes_are_split(size: int) -> None:
    stream = WITH_NULL * 3 + USAGE + DONE
    pieces = [stream[i : i + size] for i in range(0, len(stream), size)]
    assert strip_all(pieces) == PLAIN * 3 + DONE


def test_other_shapes() -> None:
    first = b'data: {"usage":null,"id":"c","choices":[]}\n\n'
    assert strip_all([first]) == b'data: {"id":"c","choices":[]}\n\n'
    spaced = b'data: {"id": "c", "choices": [{"index": 0}], "usage": null}\r\n\r\n'
    assert strip_all([spaced]) == b'data: {"id": "c", "choices": [{"index": 0}]}\r\n\r\n'
    # "usage" inside a string is content, not the key
    text = b'data: {"choices":[{"delta":{"content":"\\"usage\\": null"}}]}\n\n'
    assert strip_all([text]) == text
    # a chunk with choices and a usage object is not the added one: kept
    both = b'data: {"choices":[{"index":0}],"usage":{"prompt_tokens":1}}\n\n'
    assert strip_all([both]) == both


def test_complete_events_go_out_at_once() -> None:
    stripper = UsageStripper()
    assert stripper.feed(WITH_NULL + b'data: {"id"') == PLAIN  # the partial event waits
    assert stripper.feed(b':"d","usage":null}\n\n') == b'data: {"id":"d"}\n\n'
    assert stripper.close() == b""
