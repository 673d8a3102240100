"""Small file helpers shared by the collector's file stores (positioned writes, prefixes)."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["O_CLOEXEC", "O_NOFOLLOW", "pwrite_all", "read_prefix"]

O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


def pwrite_all(fd: int, data: bytes, offset: int) -> None:
    """``os.pwrite`` until all of ``data`` is at ``offset`` (short writes happen)."""
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, offset)
        view = view[n:]
        offset += n


def read_prefix(path: Path, size: int) -> bytes:
    """The first ``size`` bytes of ``path`` (its committed part)."""
    with path.open("rb") as f:
        return f.read(size)
