"""What the app really sent: the status of an answer given outside the middleware.

See :class:`ResponseObserver`; the request recorder (:mod:`.http`) hands it a deferred
record when an exception leaves the middleware before a response started.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable

from starlette.applications import Starlette
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from telemetry_client.integrations._asgi.failures import failed

__all__ = ["Outcome", "ResponseObserver", "completes", "observe", "outcome_var"]


class Outcome:
    """One request seen by a :class:`ResponseObserver`; ``finish`` is a deferred record."""

    __slots__ = ("finish", "status", "trailers")

    def __init__(self) -> None:
        self.finish: Callable[[int | None], None] | None = None
        self.status: int | None = None
        self.trailers = False


outcome_var: contextvars.ContextVar[Outcome | None] = contextvars.ContextVar(
    "telemetry_response_outcome", default=None
)


_BODY_MESSAGES = frozenset({"http.response.body", "http.response.zerocopysend"})


def completes(message: Message, trailers: bool) -> bool:
    """True when ``message`` (not ``http.response.start``) completes the response."""
    kind = message["type"]
    if kind in _BODY_MESSAGES:
        return not trailers and not message.get("more_body", False)
    if kind == "http.response.trailers":
        return not message.get("more_trailers", False)
    return bool(kind == "http.response.pathsend")


class ResponseObserver:
    """The outermost layer of an instrumented Starlette app's middleware stack.

    ``app.add_middleware`` puts :class:`TelemetryMiddleware` inside Starlette's
    ``ServerErrorMiddleware``, which answers an exception (with the app's
    ``exception_handler(Exception)``, e.g. a 418) after the exception has left the
    telemetry middleware. When that happens the middleware hands its ``http_request``
    record to this observer, which completes it with the status actually sent. Otherwise
    it only forwards messages. Installed around ``app.middleware_stack`` (once per app)
    by the middleware; it keeps ``.app`` so code walking the stack still can.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        outcome = Outcome()

        async def send_observed(message: Message) -> None:
            if outcome.finish is None:
                await send(message)
                return
            if message["type"] == "http.response.start":
                outcome.status = message.get("status")
                outcome.trailers = bool(message.get("trailers", False))
                await send(message)
                return
            await send(message)
            finish = outcome.finish
            if finish is not None and completes(message, outcome.trailers):
                outcome.finish = None
                finish(outcome.status)

        token = outcome_var.set(outcome)
        try:
            await self.app(scope, receive, send_observed)
        finally:
            outcome_var.reset(token)
            finish = outcome.finish
            if finish is not None:  # no complete response went out: the server answers 500
                outcome.finish = None
                finish(outcome.status if outcome.status is not None else 500)


def observe(scope: Scope) -> None:
    """Put a :class:`ResponseObserver` around the built middleware stack of the app."""
    app = scope.get("app")
    if not isinstance(app, Starlette):
        return
    stack = app.middleware_stack
    if stack is None or isinstance(stack, ResponseObserver):
        return
    try:
        app.middleware_stack = ResponseObserver(stack)
    except Exception as exc:
        failed("observer", exc)
