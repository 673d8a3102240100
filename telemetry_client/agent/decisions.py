"""Change decisions: the user accepted, rejected or reverted a file operation.

``change_decision`` closes the loop on an ``op_id``; a decision outside accept/reject/revert
is coerced (counted in ``client.tracking_stats()["coerced"]``), never refused.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from telemetry_client.agent.counters import tracking
from telemetry_client.events import ChangeDecision

if TYPE_CHECKING:
    from telemetry_client.client import TelemetryClient

__all__ = ["DECISIONS", "change_decision", "normalize_decision"]

#: The decisions ``change_decision`` accepts; anything else is coerced (and counted).
DECISIONS = ("accept", "reject", "revert")

_DECISION_ALIASES = {"accepted": "accept", "rejected": "reject", "reverted": "revert"}
_INVALID_DECISION = "invalid"
_RAW_MAX = 200  # characters of a coerced decision kept in ``raw_decision``


def normalize_decision(value: object) -> tuple[str, bool]:
    """``(decision, coerced)``: one of :data:`DECISIONS`, or ``"invalid"``.

    Exact values pass unchanged. Otherwise case and surrounding space are ignored and the
    past tense (``"Accepted"``) maps to its decision; anything else becomes ``"invalid"``.
    Both of these are coercions (``coerced`` is True).
    """
    if type(value) is str and value in DECISIONS:
        return value, False
    text = value.strip().lower() if isinstance(value, str) else ""
    text = _DECISION_ALIASES.get(text, text)
    return (text if text in DECISIONS else _INVALID_DECISION), True


def change_decision(
    client: TelemetryClient,
    op_id: str,
    decision: object,
    *,
    reason: str | None = None,
    extra: Mapping[str, Any] | None = None,
) -> None:
    """Emit a ``change_decision`` closing the loop on the operation ``op_id``."""
    if not client.enabled:
        return
    counters = tracking(client)
    try:
        value, coerced = normalize_decision(decision)
        event = ChangeDecision(
            op_id=str(op_id),
            decision=value,
            reason=reason,
            attributes=dict(extra) if extra else None,
        )
        if coerced:
            raw = decision if isinstance(decision, str) else repr(decision)
            event.raw_decision = raw[:_RAW_MAX]
            counters.coerce(
                "change_decision",
                "telemetry: change decision %r is not one of accept/reject/revert; recorded as %r",
                event.raw_decision,
                value,
            )
    except Exception as exc:  # never break the caller for telemetry
        counters.failed("change_decision", exc)
        return
    client.emit(event)
