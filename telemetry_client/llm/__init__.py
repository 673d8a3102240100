"""LLM traffic: provider detection and request/response/SSE parsing into ``LLMCall`` events.

One implementation, with no HTTP library in it, shared by the httpx integration and the
recording proxy.
"""

from telemetry_client.llm.parse import (
    DEFAULT_MAX_PARSE_BYTES,
    DEFAULT_PROVIDERS,
    LLM_PATH_SUFFIXES,
    Call,
    ResponseParser,
    detect_provider,
    error_text,
    is_cancellation,
    is_llm_path,
    parse_request,
)

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
