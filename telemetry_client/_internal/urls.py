"""URLs as they may appear in logs and messages: never with credentials, query or fragment."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

__all__ = ["display_url", "host_port"]


def display_url(url: str) -> str:
    """``url`` without user info, query or fragment: safe to put in a log line."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        return "<invalid URL>"
    if ":" in host:
        host = f"[{host}]"
    if port is not None:
        host = f"{host}:{port}"
    return urlunsplit((parts.scheme, host, parts.path or "/", "", ""))


def host_port(url: str) -> str:
    """``host:port`` of ``url``, with the scheme's default port when none is given."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or "?"
        port = parts.port or {"http": 80, "https": 443}.get(parts.scheme)
    except ValueError:
        return "<invalid URL>"
    if ":" in host:
        host = f"[{host}]"
    return f"{host}:{port}" if port is not None else host
