"""The naive baseline: what a hand-rolled logger does, all on the caller's thread.

Per event a small envelope (uuid4 id, type, ISO timestamp, session id, seq, data) through
``json.dumps``; every 1000 events the NDJSON batch is gzip'ed (level 6, zlib's default)
and sent with one ``httpx.post`` (a new client per call, as the one-liner does) to
``<endpoint_base>/baseline/events``. Never drops, no disk. The same logger as
``benchmarks/e2e.py``'s baseline, so the two benchmarks' baseline rows agree.
"""

from __future__ import annotations

import datetime as dt
import gzip
import importlib.metadata
import json
import uuid
from typing import Any

import httpx

BATCH = 1000
GZIP_LEVEL = 6
TIMEOUT_S = 30.0


class Baseline:
    name = "baseline"

    def __init__(self, endpoint_base: str) -> None:
        self.version = f"httpx {importlib.metadata.version('httpx')}"
        self.notes = (
            f"json.dumps per event; gzip level {GZIP_LEVEL} + one httpx.post per {BATCH}"
            " events, on the caller; never drops"
        )
        self.url = f"{endpoint_base}/baseline/events"
        self.session_id = uuid.uuid4().hex
        self.lines: list[str] = []
        self.seq = 0
        self.post_errors = 0

    def emit(self, event_type: str, data: dict[str, Any]) -> None:
        self.seq += 1
        envelope = {
            "id": str(uuid.uuid4()),
            "type": event_type,
            "ts": dt.datetime.now(dt.timezone.utc).isoformat(),
            "session_id": self.session_id,
            "seq": self.seq,
            "data": data,
        }
        self.lines.append(json.dumps(envelope))
        if len(self.lines) >= BATCH:
            self._post()

    def _post(self) -> None:
        body = gzip.compress(("\n".join(self.lines) + "\n").encode(), compresslevel=GZIP_LEVEL)
        self.lines.clear()
        headers = {"Content-Type": "application/x-ndjson", "Content-Encoding": "gzip"}
        try:
            r = httpx.post(self.url, content=body, headers=headers, timeout=TIMEOUT_S)
            self.post_errors += r.status_code != 200
        except httpx.HTTPError:
            self.post_errors += 1

    def finish(self, timeout: float) -> None:
        if self.lines:
            self._post()


def make(endpoint_base: str, mode: str, marker_field: str) -> Baseline:
    """One configuration for every mode: it never drops, and it always gzips."""
    return Baseline(endpoint_base)
