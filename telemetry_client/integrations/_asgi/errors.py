"""Unhandled exceptions as ``error`` events; the exception itself is re-raised unchanged.

An exception group is reported as its first leaf exception (with the group's type and
leaf count in ``context``); a WebSocket the client closed normally (1000/1001) is not an
error. The integration's own frames are left out of the stack trace: every module of this
package (the middleware and its parts) is hidden, so a trace starts in the app.
"""

from __future__ import annotations

import os
import traceback
from typing import Any

from starlette.types import Scope
from starlette.websockets import WebSocketDisconnect

from telemetry_client.events import Error
from telemetry_client.integrations._asgi.connection import Connection
from telemetry_client.integrations._asgi.failures import failed
from telemetry_client.integrations._asgi.routes import RouteNamer

__all__ = ["NORMAL_CLOSE_CODES", "error_event", "first_leaf", "normal_close", "record_error"]

#: ``WebSocketDisconnect`` codes that end a connection normally: not an ``error``.
NORMAL_CLOSE_CODES = frozenset({1000, 1001})
# Frames of files in this directory are the middleware's own.
_OWN_DIR = os.path.dirname((lambda: None).__code__.co_filename)


def _group_members(exc: BaseException) -> tuple[BaseException, ...] | None:
    """The members of an exception group (builtin or the ``exceptiongroup`` backport)."""
    members = getattr(exc, "exceptions", None)
    if (
        isinstance(members, tuple)
        and members
        and all(isinstance(m, BaseException) for m in members)
    ):
        return members
    return None


def first_leaf(exc: BaseException) -> tuple[BaseException, int]:
    """The first non-group exception inside ``exc`` and how many leaves it holds."""
    members = _group_members(exc)
    if members is None:
        return exc, 1
    first: BaseException | None = None
    count = 0
    todo: list[tuple[BaseException, int]] = [(m, 1) for m in reversed(members)]
    while todo:
        current, depth = todo.pop()
        inner = _group_members(current) if depth < 64 else None
        if inner is None:
            count += 1
            if first is None:
                first = current
        else:
            todo.extend((m, depth + 1) for m in reversed(inner))
    return (first if first is not None else exc), count


def normal_close(exc: BaseException) -> bool:
    """A WebSocket the client closed normally (1000/1001), possibly alone in a group."""
    leaf, count = first_leaf(exc)
    return count == 1 and isinstance(leaf, WebSocketDisconnect) and leaf.code in NORMAL_CLOSE_CODES


def _own(filename: str) -> bool:
    return os.path.dirname(filename) == _OWN_DIR


def _drop_own_frames(formatted: traceback.TracebackException) -> None:
    """Leave the middleware's frames out of every traceback in the chain."""
    seen: set[int] = set()
    todo = [formatted]
    while todo:
        current = todo.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        if any(_own(frame.filename) for frame in current.stack):
            current.stack = traceback.StackSummary.from_list(
                [frame for frame in current.stack if not _own(frame.filename)]
            )
        todo.extend(t for t in (current.__cause__, current.__context__) if t is not None)
        todo.extend(getattr(current, "exceptions", None) or ())


def error_event(exc: BaseException, context: dict[str, Any]) -> Error:
    """An ``error`` for ``exc``: an exception group as its first leaf, with the count."""
    leaf, count = first_leaf(exc)
    if count > 1:
        context["exception_group"] = {"type": type(exc).__qualname__, "exceptions": count}
    formatted = traceback.TracebackException(type(leaf), leaf, leaf.__traceback__, compact=True)
    _drop_own_frames(formatted)
    return Error(
        error_type=type(leaf).__qualname__,
        message=str(leaf),
        stack_trace="".join(formatted.format()),
        context=context,
    )


def record_error(
    conn: Connection, scope: Scope, root_path: str, routes: RouteNamer, exc: Exception
) -> None:
    """Emit an ``error`` event with the stack trace (redacted by the client's writer)."""
    try:
        route, _ = routes.route(scope, root_path)
        context: dict[str, Any] = {"transport": conn.transport, "route": route}
        if conn.transport == "http":
            context["method"] = scope.get("method")
        conn.client.emit(
            error_event(exc, context), session_id=conn.session_id, user_id=conn.user_id
        )
    except Exception as failure:
        failed("middleware", failure)
