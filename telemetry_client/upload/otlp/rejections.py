"""``partial_success`` rejections, counted on disk so that ``status`` shows them.

An OTLP receiver may accept a request and still reject some of its spans or log records
(``partial_success`` in the response). Those items are gone: nothing to retry, so the batch
counts as delivered, and the count (with the receiver's last message) is kept in
``state/otlp_rejections.json``, a few dozen bytes, updated under the spool's lock.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Any

import orjson

from telemetry_client._internal import fs as _fs

__all__ = ["Rejections"]

FILE = "otlp_rejections.json"


class Rejections:
    """The rejection counters of one spool."""

    def __init__(self, spool_root: Path, *, fsync: bool = True) -> None:
        self.root = Path(spool_root)
        self.path = self.root / "state" / FILE
        self._fsync = fsync

    def read(self) -> dict[str, Any]:
        """``{"spans": n, "log_records": n, "message": str, "at": unix seconds}`` (zeros)."""
        try:
            obj = orjson.loads(self.path.read_bytes())
            return {
                "spans": int(obj.get("spans", 0)),
                "log_records": int(obj.get("log_records", 0)),
                "message": str(obj.get("message", "")),
                "at": obj.get("at"),
            }
        except (OSError, ValueError, TypeError, AttributeError):
            return {"spans": 0, "log_records": 0, "message": "", "at": None}

    def add(self, *, spans: int = 0, log_records: int = 0, message: str = "") -> None:
        """Count rejected items (never raises for I/O: counting must not break delivery)."""
        with contextlib.suppress(OSError):
            (self.root / "state").mkdir(parents=True, exist_ok=True, mode=0o700)
            with _fs.flock(self.root / ".lock"):
                now = self.read()
                now["spans"] += spans
                now["log_records"] += log_records
                now["message"] = message[:500] or now["message"]
                now["at"] = time.time()
                _fs.atomic_write(self.path, orjson.dumps(now), fsync=self._fsync)
