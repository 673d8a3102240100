"""Per-task session/user context, so events emitted deep inside tool code carry the right ids.

Backed by ``contextvars``: each asyncio task (and each thread) sees its own values, and
they flow into tasks created inside the block. Reading them costs ~50 ns in ``emit()``.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator

__all__ = [
    "current_session_id",
    "current_user_id",
    "session_context",
    "session_id_var",
    "user_id_var",
]

#: The current session and user ids. Integrations set and reset them around a request
#: (token-based); applications use :func:`session_context`.
session_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "telemetry_session_id", default=None
)
user_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "telemetry_user_id", default=None
)


@contextlib.contextmanager
def session_context(session_id: str | None = None, user_id: str | None = None) -> Iterator[None]:
    """Within the block, emitted events carry these ids (``None`` keeps the outer value)."""
    tokens = []
    if session_id is not None:
        tokens.append((session_id_var, session_id_var.set(session_id)))
    if user_id is not None:
        tokens.append((user_id_var, user_id_var.set(user_id)))
    try:
        yield
    finally:
        for var, token in reversed(tokens):
            var.reset(token)


def current_session_id() -> str | None:
    """The session id set by the innermost :func:`session_context`, if any."""
    return session_id_var.get()


def current_user_id() -> str | None:
    """The user id set by the innermost :func:`session_context`, if any."""
    return user_id_var.get()
