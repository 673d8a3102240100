"""Per-task session/user context, so events emitted deep inside tool code carry the right ids.

Backed by ``contextvars``: each asyncio task (and each thread) sees its own values, and
they flow into tasks created inside the block. Reading them costs ~50 ns in ``emit()``.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator

__all__ = ["current_session_id", "current_user_id", "session_context"]

_session_id: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "telemetry_session_id", default=None
)
_user_id: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "telemetry_user_id", default=None
)


@contextlib.contextmanager
def session_context(session_id: str | None = None, user_id: str | None = None) -> Iterator[None]:
    """Within the block, emitted events carry these ids (``None`` keeps the outer value)."""
    tokens = []
    if session_id is not None:
        tokens.append((_session_id, _session_id.set(session_id)))
    if user_id is not None:
        tokens.append((_user_id, _user_id.set(user_id)))
    try:
        yield
    finally:
        for var, token in reversed(tokens):
            var.reset(token)


def current_session_id() -> str | None:
    """The session id set by the innermost :func:`session_context`, if any."""
    return _session_id.get()


def current_user_id() -> str | None:
    """The user id set by the innermost :func:`session_context`, if any."""
    return _user_id.get()
