"""Who is looking: the signed sign-in cookie, a bearer header, or a ``--no-auth`` collector.

The cookie holds the token's *name* and an expiry, signed with HMAC-SHA256 under a key
derived from every configured token (:meth:`TokenAuth.derive_key`): replicas and restarts
with the same tokens accept it, and changing the token set signs everyone out. The token
itself is never stored in the cookie. It is ``HttpOnly``, ``SameSite=Strict``, scoped to
``/ui``, and ``Secure`` when the request came over https. A name that is no longer
configured, a bad signature or an expired cookie count as signed out.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import Callable

import orjson
from fastapi import Request
from fastapi.responses import Response

from telemetry_client.collector._auth import Principal, TokenAuth

__all__ = ["COOKIE", "COOKIE_TTL_S", "CookieSigner", "who"]

COOKIE = "telemetry_viewer"
COOKIE_TTL_S = 12 * 3600
UI_PATH = "/ui"


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class CookieSigner:
    """Issues and checks sign-in cookies for the principals of ``auth``."""

    def __init__(self, auth: TokenAuth, clock: Callable[[], float] = time.time) -> None:
        self._auth = auth
        self._key = auth.derive_key(b"viewer-cookie-v1")
        self._clock = clock

    def _sign(self, payload: str) -> str:
        return _b64(hmac.new(self._key, payload.encode(), hashlib.sha256).digest())

    def issue(self, principal: Principal) -> str:
        """A cookie value naming ``principal``, valid for :data:`COOKIE_TTL_S`."""
        payload = _b64(orjson.dumps({"n": principal.name, "e": int(self._clock()) + COOKIE_TTL_S}))
        return f"{payload}.{self._sign(payload)}"

    def principal(self, value: str | None) -> Principal | None:
        """The configured principal a valid, unexpired cookie names; else None."""
        if not value or len(value) > 512 or "." not in value:
            return None
        payload, _, signature = value.partition(".")
        if not hmac.compare_digest(signature, self._sign(payload)):
            return None
        try:
            claims = orjson.loads(_unb64(payload))
        except ValueError:
            return None
        if not isinstance(claims, dict) or not isinstance(claims.get("e"), int):
            return None
        if claims["e"] <= self._clock():
            return None
        for principal in self._auth.principals:
            if principal.name == claims.get("n"):
                return principal
        return None

    def set(self, response: Response, request: Request, principal: Principal) -> None:
        """Sign ``principal`` in on ``response``."""
        response.set_cookie(
            COOKIE,
            self.issue(principal),
            max_age=COOKIE_TTL_S,
            path=UI_PATH,
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
        )

    def clear(self, response: Response, request: Request) -> None:
        """Sign out on ``response``."""
        response.delete_cookie(
            COOKIE,
            path=UI_PATH,
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
        )


def who(auth: TokenAuth, signer: CookieSigner, request: Request) -> Principal | None:
    """The request's principal: anonymous on a ``--no-auth`` collector, else from a bearer
    header (scripts, benchmarks) or the sign-in cookie; None when signed out."""
    if not auth.required:
        return auth.principal(None)
    header = request.headers.get("authorization")
    if header is not None:
        return auth.principal(header)
    return signer.principal(request.cookies.get(COOKIE))
