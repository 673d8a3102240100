"""``Rejected``: a request the collector refuses, with the status, a metrics reason and why.

Raised anywhere on the request path (auth, limits, decoding, validation) and turned into
a JSON response ``{"detail": message}`` at exactly one place, the app's exception handler.
The message is precise (``line 3: missing field "ts"``) but never contains a credential.
"""

from __future__ import annotations

from collections.abc import Mapping

__all__ = ["Rejected"]


class Rejected(Exception):
    """The request is refused with ``status``; ``reason`` is a fixed label for metrics."""

    def __init__(
        self,
        status: int,
        reason: str,
        message: str,
        *,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.message = message
        self.headers = dict(headers or {})
