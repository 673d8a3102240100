"""Which requests are LLM calls, and which provider a host belongs to.

Pure functions of the method, path and host: the httpx integration and the recording proxy
ask the same questions of different request objects.
"""

from __future__ import annotations

from collections.abc import Mapping

__all__ = ["DEFAULT_PROVIDERS", "LLM_PATH_SUFFIXES", "detect_provider", "is_llm_path"]

#: Host name -> provider reported in ``LLMCall.provider``.
DEFAULT_PROVIDERS: Mapping[str, str] = {
    "api.openai.com": "openai",
    "api.anthropic.com": "anthropic",
    "generativelanguage.googleapis.com": "google",
    "api.groq.com": "groq",
    "api.mistral.ai": "mistral",
    "openrouter.ai": "openrouter",
}
_SUFFIX_PROVIDERS: tuple[tuple[str, str], ...] = ((".openai.azure.com", "azure_openai"),)

#: A POST to a path ending in one of these is an LLM call (the default predicate).
LLM_PATH_SUFFIXES: tuple[str, ...] = (
    "/chat/completions",
    "/completions",
    "/responses",
    "/messages",
    "/embeddings",
    ":generateContent",
    ":streamGenerateContent",
)


def is_llm_path(method: str, path: str) -> bool:
    """The default predicate: ``POST`` to a path ending in one of :data:`LLM_PATH_SUFFIXES`."""
    return method == "POST" and path.endswith(LLM_PATH_SUFFIXES)


def detect_provider(
    host: str, port: int | None = None, overrides: Mapping[str, str] | None = None
) -> str:
    """The provider name for ``host`` (lowercase), else the host name itself.

    ``overrides`` (checked first) maps ``"host"``, ``"host:port"`` or ``"*.domain"`` (the
    domain and every subdomain) to a provider name.
    """
    host = host.lower().rstrip(".")
    if overrides:
        if port is not None and (hit := overrides.get(f"{host}:{port}")) is not None:
            return hit
        if (hit := overrides.get(host)) is not None:
            return hit
        for pattern, provider in overrides.items():
            if pattern.startswith("*.") and (host == pattern[2:] or host.endswith(pattern[1:])):
                return provider
    if (known := DEFAULT_PROVIDERS.get(host)) is not None:
        return known
    for suffix, provider in _SUFFIX_PROVIDERS:
        if host.endswith(suffix):
            return provider
    return host
