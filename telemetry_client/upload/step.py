"""What one upload step did (:class:`Step`), and the uploader's counters.

A step is a value, so the background loop, ``telemetry-client flush`` and tests share one
implementation and tests assert on it with an injected clock (docs/upload.md).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, fields

from telemetry_client.upload._sender import SendResult

__all__ = ["Outcome", "Step", "UploadCounters"]


class Outcome(str, enum.Enum):
    """How a step ended. A ``str`` enum: ``Outcome.SENT == "sent"`` holds."""

    SENT = "sent"  # the batch left the spool: every destination acknowledged it
    DELIVERED = "delivered"  # ready destinations acknowledged it; kept for a waiting one
    IDLE = "idle"  # nothing claimable (empty, or every batch held by another process)
    RETRY = "retry"  # a destination failed; the batch is kept and retried (backoff, Retry-After)
    DEAD_LETTER = "dead_letter"  # refused for good: moved to the dead-letter area
    AUTH_PAUSE = "auth_pause"  # 401/403: credentials refused, uploads pause
    ENDPOINT_PAUSE = "endpoint_pause"  # 404/405: wrong URL, uploads pause
    PAUSED = "paused"  # an earlier pause is still running: nothing was tried
    KILL_SWITCH = "kill_switch"  # X-Telemetry-Disable is on: nothing was tried
    ERROR = "error"  # the step raised (a bug): the loop logs it and goes on


@dataclass(frozen=True, slots=True)
class Step:
    """What one step did and what comes next."""

    outcome: Outcome
    wait_s: float = 0.0
    hard: bool = False  # True: a flush must not cut the wait short
    events: int = 0
    bytes: int = 0
    result: SendResult | None = None


@dataclass(slots=True)
class UploadCounters:
    """This process's upload counters (merged into ``TelemetryClient.stats()``)."""

    uploaded: int = 0  # events acknowledged by every destination
    uploaded_batches: int = 0
    uploaded_bytes: int = 0  # stored bytes of acknowledged batches
    rejected: int = 0  # events dead-lettered (refused for good)
    retries: int = 0  # failed attempts that will be retried
    drop_reports: int = 0  # telemetry_dropped batches sealed

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}
