"""Bearer-token check: constant-time, and the token never leaves this module.

Configured tokens are kept only as sha256 digests; the presented token is hashed the same
way and compared with ``hmac.compare_digest`` against *every* configured digest (no early
exit), so timing tells neither which token nor how much of it matched. A match yields a
principal id (``token-1``, ...) used for rate-limit buckets; nothing logs or echoes the
token itself.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence

__all__ = ["ANONYMOUS", "TokenAuth"]

ANONYMOUS = "anonymous"


def _digest(token: bytes) -> bytes:
    return hashlib.sha256(token).digest()


class TokenAuth:
    """Who a request is, from its ``Authorization`` header; ``None`` means refuse (401)."""

    def __init__(self, tokens: Sequence[str], *, required: bool = True) -> None:
        self._digests = [_digest(t.encode("ascii")) for t in tokens]
        self._required = required

    def principal(self, authorization: str | None) -> str | None:
        """``token-N`` for the N-th configured token, ``anonymous`` when auth is off, else None."""
        if not self._required:
            return ANONYMOUS
        if authorization is None:
            return None
        scheme, _, credentials = authorization.strip().partition(" ")
        if scheme.lower() != "bearer" or not credentials.strip():
            return None
        # Header values arrive latin-1 decoded: encoding back is lossless.
        presented = _digest(credentials.strip().encode("latin-1", "replace"))
        found: int | None = None
        for index, digest in enumerate(self._digests, 1):
            if hmac.compare_digest(presented, digest) and found is None:
                found = index
        return None if found is None else f"token-{found}"
