"""``CollectorConfig``: everything the reference collector is told at startup, validated once.

The CLI (``_serve.py``) builds one from flags and environment variables; tests and the
demo build one directly. Validation happens in ``__post_init__`` so a bad value fails
before any file or socket is opened, with a message naming the field.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = ["MIB", "CollectorConfig", "split_tokens"]

MIB = 1024 * 1024


def split_tokens(text: str, *, separator: str | None = ",") -> list[str]:
    """Tokens from a comma-separated variable (or, with ``separator=None``, a token file).

    Blank entries are dropped; in a file, lines starting with ``#`` are comments.
    """
    if separator is None:
        parts = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    else:
        parts = text.split(separator)
    return [p.strip() for p in parts if p.strip()]


def _check_token(token: str) -> None:
    # A token travels in an HTTP header: visible ASCII only, or clients could never send it.
    # The message never contains the token itself.
    if not token or any(not 0x21 <= ord(ch) <= 0x7E for ch in token):
        raise ValueError("tokens: every token must be non-empty visible ASCII (no spaces)")


@dataclass(eq=False)
class CollectorConfig:
    """Configuration of one collector process.

    ``tokens`` are the accepted bearer tokens (at least one unless ``allow_no_auth``, which
    is meant for local development only). Limits are in bytes: ``max_body_bytes`` caps the
    request body as sent (compressed), ``max_decompressed_bytes`` the decompressed events
    body, ``max_event_bytes`` one NDJSON line (so a decompression bomb is refused after at
    most that much memory), ``max_attachment_bytes`` one attachment's raw size. The rate
    limit is a token bucket per bearer token (``rate_limit_rps`` 0 = off).
    ``disable_seconds`` turns on the kill switch: every response of the events and
    attachments endpoints carries ``X-Telemetry-Disable: <seconds>`` (``None`` = off; it can
    be changed at runtime through the app's ``CollectorState``).
    """

    data_dir: Path
    tokens: Sequence[str] = ()
    allow_no_auth: bool = False
    max_body_bytes: int = 32 * MIB
    max_decompressed_bytes: int = 256 * MIB
    max_event_bytes: int = 16 * MIB
    max_attachment_bytes: int = 64 * MIB
    rate_limit_rps: float = 200.0
    rate_limit_burst: int = 400
    disable_seconds: int | None = None

    def __post_init__(self) -> None:
        self.data_dir = Path(os.fspath(self.data_dir))
        if isinstance(self.tokens, str):  # a lone string would be split into characters
            raise TypeError("tokens: expected a sequence of strings, got one string")
        self.tokens = tuple(self.tokens)
        for token in self.tokens:
            _check_token(token)
        if not self.tokens and not self.allow_no_auth:
            raise ValueError(
                "no token configured: give at least one bearer token"
                " (or allow_no_auth=True, for local development only)"
            )
        for name in (
            "max_body_bytes",
            "max_decompressed_bytes",
            "max_event_bytes",
            "max_attachment_bytes",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name}: expected a positive number of bytes, got {value!r}")
        if not self.rate_limit_rps >= 0:  # also refuses NaN
            raise ValueError(f"rate_limit_rps: expected >= 0, got {self.rate_limit_rps!r}")
        if self.rate_limit_rps and self.rate_limit_burst < 1:
            raise ValueError(f"rate_limit_burst: expected >= 1, got {self.rate_limit_burst!r}")
        if self.disable_seconds is not None and self.disable_seconds < 0:
            raise ValueError(f"disable_seconds: expected >= 0, got {self.disable_seconds!r}")

    @property
    def max_attachment_body_bytes(self) -> int:
        """Largest attachment request body: the raw cap plus the worst framing overhead.

        zstd and gzip add well under 1/1024 (plus a small header) to incompressible data,
        so an attachment of exactly ``max_attachment_bytes`` always fits on the wire.
        """
        return self.max_attachment_bytes + self.max_attachment_bytes // 1024 + 4096
