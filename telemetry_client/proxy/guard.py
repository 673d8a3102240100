"""What the proxy checks before forwarding: the client's key, its rate, its body size.

- Keys: a client presents one as ``Authorization: Bearer <key>`` (OpenAI style) or
  ``x-api-key: <key>`` (Anthropic style); each is compared in constant time with every
  configured key.
- Rate: a token bucket per client (its key, or its address when no keys are configured)
  holding ``rate_limit`` requests and refilled at ``rate_limit`` per minute; an empty
  bucket answers 429 with ``Retry-After`` (whole seconds until the next request fits).
  Idle full buckets are forgotten, so memory stays bounded by the active clients.

The errors the proxy makes itself use OpenAI's shape (:func:`error_body`), so every SDK
reports them as it reports the upstream's. Keys are only held in memory, hashed for the
rate buckets, and never logged or recorded.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import time
from collections.abc import Callable, Iterable

import orjson

__all__ = ["HOP_BY_HOP", "RateLimiter", "client_key", "error_body", "key_allowed", "retry_after"]

#: Headers that belong to one connection (RFC 9110 7.6.1), never forwarded either way.
HOP_BY_HOP = frozenset(
    (
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    )
)
_MAX_BUCKETS = 10_000


def error_body(message: str, kind: str, code: str) -> bytes:
    """OpenAI's error shape: ``{"error": {"message", "type", "code", "param"}}``."""
    return orjson.dumps({"error": {"message": message, "type": kind, "code": code, "param": None}})


def client_key(headers: Iterable[tuple[bytes, bytes]]) -> str | None:
    """The key the client presented (``Authorization: Bearer`` or ``x-api-key``), if any."""
    bearer = api_key = None
    for name, value in headers:
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").strip().partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                bearer = token.strip()
        elif name == b"x-api-key" and value.strip():
            api_key = value.decode("latin-1").strip()
    return bearer or api_key


def key_allowed(presented: str | None, keys: tuple[str, ...]) -> bool:
    """``presented`` is one of ``keys`` (constant time per key; every key is compared)."""
    if presented is None:
        return False
    given = presented.encode()
    found = False
    for key in keys:
        found |= hmac.compare_digest(given, key.encode())
    return found


class RateLimiter:
    """Token buckets per client: ``per_minute`` requests, refilled continuously."""

    def __init__(self, per_minute: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.capacity = float(per_minute)
        self.rate = per_minute / 60.0  # tokens per second
        self._clock = clock
        self._buckets: dict[bytes, tuple[float, float]] = {}  # id -> (tokens, at)

    def check(self, who: str) -> float:
        """Take one request from ``who``'s bucket: 0 when allowed, else seconds to wait."""
        ident = hashlib.blake2b(who.encode(), digest_size=16).digest()  # no key kept as such
        now = self._clock()
        tokens, at = self._buckets.get(ident, (self.capacity, now))
        tokens = min(self.capacity, tokens + (now - at) * self.rate)
        if tokens >= 1.0:
            self._buckets[ident] = (tokens - 1.0, now)
            if len(self._buckets) > _MAX_BUCKETS:
                self._prune(now)
            return 0.0
        self._buckets[ident] = (tokens, now)
        return (1.0 - tokens) / self.rate

    def _prune(self, now: float) -> None:
        """Forget buckets that have refilled (they equal a new one)."""
        full = [
            k
            for k, (tokens, at) in self._buckets.items()
            if tokens + (now - at) * self.rate >= self.capacity
        ]
        for k in full:
            del self._buckets[k]


def retry_after(seconds: float) -> str:
    """``Retry-After`` in whole seconds (at least 1)."""
    return str(max(1, math.ceil(seconds)))
