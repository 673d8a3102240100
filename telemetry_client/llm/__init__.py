"""LLM traffic: provider detection and request/response/SSE parsing into ``LLMCall`` events.

One implementation, with no HTTP library in it, shared by the httpx integration and the
recording proxy: ``providers`` (is it an LLM call, which provider), ``request`` (model,
stream flag, prompt), ``response`` (body framing and decoding) over ``formats`` (what each
provider's JSON says) and ``call`` (one call, from request to emitted event). Design
notes: docs/features.md ("LLM calls").
"""

from telemetry_client.llm.call import Call, error_text, is_cancellation
from telemetry_client.llm.providers import (
    DEFAULT_PROVIDERS,
    LLM_PATH_SUFFIXES,
    detect_provider,
    is_llm_path,
)
from telemetry_client.llm.request import parse_request
from telemetry_client.llm.response import DEFAULT_MAX_PARSE_BYTES, ResponseParser

__all__ = [
    "DEFAULT_MAX_PARSE_BYTES",
    "DEFAULT_PROVIDERS",
    "LLM_PATH_SUFFIXES",
    "Call",
    "ResponseParser",
    "detect_provider",
    "error_text",
    "is_cancellation",
    "is_llm_path",
    "parse_request",
]
