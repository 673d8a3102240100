"""Undo a response's ``Content-Encoding`` incrementally, for parsing only.

The caller's own decoder is never touched: this decodes a second time what the caller
reads (the raw chunks), so a parse failure cannot change what the caller receives. One
chunk may decode to at most ``limit`` bytes (a compression bomb makes the parser give up).
"""

from __future__ import annotations

import zlib
from typing import Any

__all__ = ["Decoder", "TooLarge"]


class TooLarge(Exception):
    """One chunk decoded to more than the decoder's limit (a compression bomb?)."""


class Decoder:
    """Identity, gzip, deflate (zlib or raw) and zstd (several frames too), chunk by chunk."""

    __slots__ = ("_deflate_raw", "_kind", "_limit", "_obj")

    def __init__(self, encoding: str, limit: int) -> None:
        self._limit = limit
        kinds = [
            e.strip() for e in encoding.lower().split(",") if e.strip() not in ("", "identity")
        ]
        self._kind = kinds[0] if len(kinds) == 1 else ("identity" if not kinds else "unsupported")
        self._deflate_raw = False
        self._obj: Any = None
        if self._kind == "gzip":
            self._obj = zlib.decompressobj(zlib.MAX_WBITS | 16)
        elif self._kind == "deflate":
            self._obj = zlib.decompressobj()
        elif self._kind == "zstd":
            self._obj = _zstd_decompressobj()

    @property
    def identity(self) -> bool:
        return self._kind == "identity"

    @property
    def supported(self) -> bool:
        return self._kind in ("identity", "gzip", "deflate") or (
            self._kind == "zstd" and self._obj is not None
        )

    def decode(self, data: bytes) -> bytes:
        """The decoded bytes of the next raw chunk; raises :class:`TooLarge` or a codec error."""
        kind = self._kind
        if kind == "identity":
            return data
        if kind == "zstd":
            out = []
            size = 0
            while True:
                out.append(piece := self._obj.decompress(data))
                size += len(piece)
                if size > self._limit:
                    raise TooLarge
                if not self._obj.eof or not self._obj.unused_data:
                    return b"".join(out)
                data = self._obj.unused_data  # another frame follows
                self._obj = _zstd_decompressobj()
        if kind == "deflate" and not self._deflate_raw:
            try:
                return self._zlib(data)
            except zlib.error:  # some servers send raw deflate (as httpx tolerates)
                self._deflate_raw = True
                self._obj = zlib.decompressobj(-zlib.MAX_WBITS)
        return self._zlib(data)

    def _zlib(self, data: bytes) -> bytes:
        out: bytes = self._obj.decompress(data, self._limit)
        if self._obj.unconsumed_tail:
            raise TooLarge
        return out


def _zstd_decompressobj() -> Any:
    try:
        import zstandard
    except ImportError:  # pragma: no cover - a dependency of the package
        return None
    return zstandard.ZstdDecompressor().decompressobj()
