"""The retry matrix: what the uploader does with each answer (docs/design.md, "Retry matrix").

Pure functions and small value types, so every row is unit-tested without a network.

=====================================================  ==================================
answer                                                 action
=====================================================  ==================================
2xx                                                    ``ACK``
network error, timeout, 408, 425, 429, 500, 502-504    ``RETRY`` (backoff, Retry-After)
413                                                    ``SPLIT``
401, 403                                               ``AUTH_PAUSE`` (nothing dropped)
404, 405                                               ``ENDPOINT_PAUSE`` (nothing dropped)
any other 4xx                                          ``DEAD_LETTER``
any other status (1xx/3xx/other 5xx)                   ``RETRY``
=====================================================  ==================================

401/403 mean the token is refused; 404/405 mean the URL is not an events endpoint (a
wrong path in ``TELEMETRY_ENDPOINT``, or one that does not accept ``POST``). Neither says
anything about the batch, so neither may dead-letter it: uploads pause and say which of
the two settings to check.

Backoff is exponential with full jitter (tenacity's ``wait_random_exponential``):
attempt *n* waits ``uniform(0, min(max, initial * 2**(n-1)))``. ``Retry-After`` (seconds
or an HTTP-date) replaces the backoff for that wait, capped at ``retry_after_max``; one that
comes to zero (``0``, or a date already past) leaves the backoff in place.
"""

from __future__ import annotations

import enum
import math
import random
from dataclasses import dataclass
from email.utils import parsedate_to_datetime

from tenacity import RetryCallState, wait_random_exponential

from telemetry_client.upload._sender import SendResult

__all__ = [
    "MAX_DISABLE_S",
    "Action",
    "Backoff",
    "classify",
    "endpoint_problem",
    "parse_disable",
    "parse_retry_after",
]

RETRYABLE_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})
AUTH_STATUSES = frozenset({401, 403})
ENDPOINT_STATUSES = frozenset({404, 405})  # the URL, not the batch or the token
MAX_DISABLE_S = 30 * 86400.0  # a kill switch longer than 30 days is taken as 30 days


class Action(enum.Enum):
    ACK = "ack"
    RETRY = "retry"
    SPLIT = "split"
    DEAD_LETTER = "dead_letter"
    AUTH_PAUSE = "auth_pause"
    ENDPOINT_PAUSE = "endpoint_pause"


def classify(result: SendResult) -> Action:
    """The row of the matrix ``result`` falls in."""
    status = result.status
    if status is None:
        return Action.RETRY
    if 200 <= status < 300:
        return Action.ACK
    if result.final:  # the destination's own rules refuse a retry (OTLP: not 429/502-504)
        return Action.DEAD_LETTER
    if status == 413:
        return Action.SPLIT
    if status in AUTH_STATUSES:
        return Action.AUTH_PAUSE
    if status in ENDPOINT_STATUSES:
        return Action.ENDPOINT_PAUSE
    if status in RETRYABLE_STATUSES:
        return Action.RETRY
    if 400 <= status < 500:
        return Action.DEAD_LETTER
    return Action.RETRY


def endpoint_problem(status: int, url: str, variable: str = "TELEMETRY_ENDPOINT") -> str:
    """One line for a 404/405 on ``url`` (already without credentials): what to check.

    Shared by the uploader's warning, ``flush`` and ``status``, so all three say the same.
    """
    if status == 405:
        text = f"HTTP 405 at {url} (it does not accept POST): check the path of {variable}"
    else:
        text = f"HTTP {status} at {url}: check the path of {variable}"
    if variable == "TELEMETRY_ENDPOINT":
        text += " (the reference collector's events URL ends in /api/v1/events)"
    return text


def parse_retry_after(value: str | None, *, now: float, ceiling: float) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP-date), capped.

    ``None`` for a missing or unparseable header (the normal backoff applies then).
    """
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if when is None or when.tzinfo is None:
            return None
        seconds = when.timestamp() - now
    if not math.isfinite(seconds):
        return None
    return min(max(0.0, seconds), ceiling)


def parse_disable(value: str | None) -> float | None:
    """Seconds from an ``X-Telemetry-Disable`` header (capped at 30 days); ``None`` if absent/bad.

    ``0`` lifts a kill switch that is on.
    """
    if value is None:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        return None
    if not math.isfinite(seconds) or seconds < 0:
        return None
    return min(seconds, MAX_DISABLE_S)


@dataclass
class Backoff:
    """Exponential backoff with full jitter over consecutive failures (tenacity's strategy)."""

    initial: float
    maximum: float
    rng: random.Random | None = None

    def __post_init__(self) -> None:
        self._wait = wait_random_exponential(multiplier=self.initial, max=self.maximum)
        self._state = RetryCallState(None, None, (), {})  # type: ignore[arg-type]  # only attempt_number is read

    def delay(self, failures: int) -> float:
        """Wait before the next attempt after ``failures`` consecutive failures (>= 1)."""
        self._state.attempt_number = max(1, failures)
        if self.rng is None:
            return float(self._wait(self._state))
        # Same formula, with an injected RNG for deterministic tests. After ~1024 failures
        # (a day offline) 2**(n-1) no longer fits a float: that is the cap, as in tenacity.
        try:
            high = min(self.maximum, self.initial * 2 ** (max(1, failures) - 1))
        except OverflowError:
            high = self.maximum
        return self.rng.uniform(0.0, high)
