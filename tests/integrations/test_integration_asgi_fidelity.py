"""What the ASGI middleware records matches what the app did (issue 9, item 6).

Real apps under uvicorn on 127.0.0.1, real clients, the reference collector as the
destination (helpers from ``test_integration_fastapi``): the status an exception handler
sent, route templates for every kind of route (never the raw path), durations that end
with the response, normal WebSocket closes that are not errors, exception groups reported
as the exception inside, and stack traces without the middleware's own frames.
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from conftest import COLLECTOR_TOKEN, CollectorHandle, wait_until
from fastapi import APIRouter, BackgroundTasks, FastAPI, Request, WebSocket
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse
from fastapi.staticfiles import StaticFiles
from starlette.applications import Starlette
from starlette.routing import Route, WebSocketRoute
from test_integration_fastapi import FAST, of_type, serving
from websockets.exceptions import ConnectionClosed

from telemetry_client import TelemetrySettings
from telemetry_client.integrations.fastapi import (
    UNMATCHED_ROUTE,
    TelemetryMiddleware,
    telemetry_lifespan,
)


@pytest.fixture
def settings(
    settings_factory: Callable[..., TelemetrySettings], collector: CollectorHandle
) -> TelemetrySettings:
    """Client settings pointing at the test's collector, with short linger and retries."""
    return settings_factory(endpoint=collector.events_url, token=COLLECTOR_TOKEN, **FAST)


def instrumented(settings: TelemetrySettings, **middleware: Any) -> FastAPI:
    """An app as the README sets it up: the telemetry lifespan and ``add_middleware``."""
    app = FastAPI(lifespan=telemetry_lifespan(settings))
    app.add_middleware(TelemetryMiddleware, **middleware)
    return app


def requests_recorded(collector: CollectorHandle) -> list[dict[str, Any]]:
    return [e["data"] for e in collector.query(type="http_request")["events"]]


def fail_here(message: str) -> None:
    """The frame every stack trace below must show."""
    raise RuntimeError(message)


# -- status ---------------------------------------------------------------------------------


@pytest.mark.parametrize("handler_kind", ["async", "sync", "failing"])
def test_status_sent_by_an_exception_handler_is_the_status_recorded(
    settings: TelemetrySettings, collector: CollectorHandle, handler_kind: str
) -> None:
    """``exception_handler(Exception)`` answering 418 (async or sync handler): the client
    gets 418 and ``http_request`` says 418, not 500; the exception is still an ``error``.
    A handler that itself fails: the server answers 500, and 500 is recorded."""
    app = instrumented(settings)

    async def async_handler(request: Request, exc: Exception) -> JSONResponse:
        return JSONResponse({"handled": type(exc).__name__}, status_code=418)

    def sync_handler(request: Request, exc: Exception) -> JSONResponse:
        return JSONResponse({"handled": type(exc).__name__}, status_code=418)

    def failing_handler(request: Request, exc: Exception) -> JSONResponse:
        raise KeyError("the handler failed too")

    handler = {"async": async_handler, "sync": sync_handler, "failing": failing_handler}
    app.add_exception_handler(Exception, handler[handler_kind])

    @app.get("/boom")
    async def boom() -> None:
        fail_here("boom behind a handler")

    expected = 500 if handler_kind == "failing" else 418
    with serving(app) as served:
        for _ in range(2):  # a connection per request: the server closes it after a 500
            with served.http() as http:
                assert http.get("/boom").status_code == expected
    recorded = requests_recorded(collector)
    assert [(r["route"], r["status"]) for r in recorded] == [("/boom", expected)] * 2
    errors = collector.query(type="error")["events"]
    assert [e["data"]["message"] for e in errors] == ["boom behind a handler"] * 2


# -- route templates ----------------------------------------------------------------------------


def route_zoo(settings: TelemetrySettings, static_dir: Path, **middleware: Any) -> FastAPI:
    """Every kind of route a FastAPI app can hold, most of them not FastAPI ``APIRoute``s."""
    app = instrumented(settings, **middleware)

    async def user(request: Request) -> PlainTextResponse:
        return PlainTextResponse(request.path_params["user_id"])

    async def inner(request: Request) -> PlainTextResponse:
        return PlainTextResponse("inner")

    async def room(ws: WebSocket) -> None:
        await ws.accept()
        await ws.send_text("joined")
        await ws.close()

    app.router.routes.append(Route("/users/{user_id}", user))
    app.router.routes.append(WebSocketRoute("/rooms/{room_id}", room))

    api = APIRouter()

    @api.get("/orders/{order_id}")
    async def order(order_id: str) -> dict[str, str]:
        return {"order": order_id}

    app.include_router(api, prefix="/api/v1")
    app.mount("/legacy", Starlette(routes=[Route("/inner/{item}", inner)]))
    app.mount("/org/{org}", Starlette(routes=[Route("/members/{member}", inner)]))
    app.mount("/static", StaticFiles(directory=static_dir))
    return app


def test_routes_that_are_not_api_routes_are_recorded_as_templates(
    settings: TelemetrySettings, collector: CollectorHandle, tmp_path: Path
) -> None:
    """Starlette ``Route``/``WebSocketRoute``, ``include_router`` prefixes, mounted
    Starlette apps (a parametrized mount too), ``StaticFiles``, ``/openapi.json``, ``/docs``:
    each recorded as its template; an unmatched path as the placeholder; no id reaches
    any ``http_request``/``websocket_session`` event."""
    static = tmp_path / "static"
    static.mkdir()
    (static / "logo-u-77.txt").write_text("logo")
    app = route_zoo(settings, static)
    calls = [
        ("/users/u-12345", "/users/{user_id}", 200),
        ("/api/v1/orders/o-999", "/api/v1/orders/{order_id}", 200),
        ("/legacy/inner/i-31337", "/legacy/inner/{item}", 200),
        ("/org/acme-42/members/m-4242", "/org/{org}/members/{member}", 200),
        ("/static/logo-u-77.txt", "/static/{path}", 200),
        ("/openapi.json", "/openapi.json", 200),
        ("/docs", "/docs", 200),
        ("/users/u-12345/secret-777/x", UNMATCHED_ROUTE, 404),
        ("/legacy/no/such/item-555", UNMATCHED_ROUTE, 404),
    ]
    with serving(app) as served:
        with served.http() as http:
            for path, _, status in calls:
                assert http.get(path).status_code == status, path
        with served.ws("/rooms/r-8080") as ws:
            assert ws.recv(timeout=10, decode=True) == "joined"
    recorded = requests_recorded(collector)
    assert [(r["route"], r["matched"]) for r in recorded] == [
        (route, status != 404) for _, route, status in calls
    ]
    (session,) = collector.query(type="websocket_session")["events"]
    assert session["data"]["route"] == "/rooms/{room_id}"
    recorded_text = repr(recorded) + repr(session["data"])
    for raw in ("u-12345", "o-999", "i-31337", "acme-42", "m-4242", "secret-777", "r-8080"):
        assert raw not in recorded_text


def test_unmatched_paths_are_kept_redacted_only_when_asked(
    settings: TelemetrySettings, collector: CollectorHandle, tmp_path: Path
) -> None:
    """``record_unmatched_paths=True``: an unmatched request also carries its path, with
    segments that may be ids (digits, an @, long) as ``{id}``; matched ones carry none."""
    app = route_zoo(settings, tmp_path, record_unmatched_paths=True)
    with serving(app) as served, served.http() as http:
        assert http.get("/users/u-12345").status_code == 200
        assert http.get("/wp-admin/setup.php").status_code == 404
        assert http.get("/v2/accounts/a@b.example/" + "x" * 30).status_code == 404
    recorded = requests_recorded(collector)
    assert [(r["route"], r.get("path")) for r in recorded] == [
        ("/users/{user_id}", None),
        (UNMATCHED_ROUTE, "/wp-admin/setup.php"),
        (UNMATCHED_ROUTE, "/{id}/accounts/{id}/{id}"),
    ]


# -- duration -----------------------------------------------------------------------------------


def test_duration_ends_with_the_response_not_with_background_tasks(
    settings: TelemetrySettings, collector: CollectorHandle
) -> None:
    """A background task that runs until the test sees the ``http_request`` event at the
    collector: the event was recorded when the response was complete, so its duration
    cannot include the task (had it waited for the task, it would never arrive)."""
    released = threading.Event()
    task_done = threading.Event()

    def slow_task() -> None:
        released.wait(60)
        task_done.set()

    app = instrumented(settings)

    @app.get("/reply")
    async def reply(tasks: BackgroundTasks) -> dict[str, bool]:
        tasks.add_task(slow_task)
        return {"ok": True}

    with serving(app) as served, served.http() as http:
        try:
            assert http.get("/reply").json() == {"ok": True}
            (request,) = wait_until(
                lambda: requests_recorded(collector), what="http_request while the task runs"
            )
            assert not task_done.is_set()
        finally:
            released.set()
        wait_until(task_done.is_set, what="the background task ended")
    assert (request["route"], request["status"]) == ("/reply", 200)


# -- WebSockets ------------------------------------------------------------------------------


def echo_app(settings: TelemetrySettings) -> FastAPI:
    """An echo endpoint that, like most, lets ``WebSocketDisconnect`` propagate."""
    app = instrumented(settings)

    @app.websocket("/echo")
    async def echo(ws: WebSocket) -> None:
        await ws.accept()
        while True:
            text = await ws.receive_text()
            if text == "crash":
                fail_here("echo crashed")
            await ws.send_text(text)

    return app


@pytest.mark.parametrize("code", [1000, 1001])
def test_normal_websocket_close_is_not_an_error(
    settings: TelemetrySettings, collector: CollectorHandle, code: int
) -> None:
    """The client closes with 1000 or 1001 while the endpoint waits for a message: the
    ``WebSocketDisconnect`` that ends the endpoint is not recorded as an ``error``; the
    session says who closed it and how."""
    with serving(echo_app(settings)) as served, served.ws(f"/echo?session_id=ws-{code}") as ws:
        ws.send("hello")
        assert ws.recv(timeout=10, decode=True) == "hello"
        ws.close(code=code)
    found = collector.query(session_id=f"ws-{code}")["events"]
    assert of_type(found, "error") == []
    (session,) = of_type(found, "websocket_session")
    assert (session["data"]["close_code"], session["data"]["closed_by"]) == (code, "client")


def test_abnormal_websocket_close_and_exceptions_remain_errors(
    settings: TelemetrySettings, collector: CollectorHandle
) -> None:
    """An application close code (4000) that the endpoint does not handle, and an
    exception in the endpoint, are still ``error`` events."""
    with serving(echo_app(settings)) as served:
        with served.ws("/echo?session_id=ws-4000") as ws:
            ws.send("hello")
            ws.recv(timeout=10)
            ws.close(code=4000)
        with served.ws("/echo?session_id=ws-crash") as ws:
            ws.send("crash")
            with pytest.raises(ConnectionClosed):
                ws.recv(timeout=10)
    (closed,) = collector.query(type="error", session_id="ws-4000")["events"]
    assert closed["data"]["error_type"] == "WebSocketDisconnect"
    (crashed,) = collector.query(type="error", session_id="ws-crash")["events"]
    assert (crashed["data"]["error_type"], crashed["data"]["message"]) == (
        "RuntimeError",
        "echo crashed",
    )


# -- exception groups and stack traces ------------------------------------------------------


async def fan_out(failures: int) -> None:
    """Work in a task group, as streaming endpoints do: ``failures`` tasks fail (the
    first raises once the others wait; they fail while being cancelled)."""
    waiting = anyio.Event()

    async def first() -> None:
        if failures > 1:
            await waiting.wait()
        raise ValueError("the first source failed")

    async def other(n: int) -> None:
        try:
            waiting.set()
            await anyio.sleep_forever()
        finally:
            raise KeyError(f"source {n} failed while cancelled")

    async with anyio.create_task_group() as tg:
        tg.start_soon(first)
        for n in range(failures - 1):
            tg.start_soon(other, n)


@pytest.mark.parametrize("failures", [1, 3])
def test_exception_in_a_streaming_generator_is_recorded_as_itself(
    settings: TelemetrySettings, collector: CollectorHandle, failures: int
) -> None:
    """A ``StreamingResponse`` generator failing inside a task group raises an
    ``ExceptionGroup``: the ``error`` names the exception inside (type, message, its stack
    trace); with several, the first, and the context says how many there were."""
    app = instrumented(settings)

    @app.get("/stream")
    async def stream() -> StreamingResponse:
        async def chunks() -> AsyncIterator[bytes]:
            yield b"first chunk\n"
            await fan_out(failures)

        return StreamingResponse(chunks(), media_type="text/plain")

    with serving(app) as served, served.http() as http, pytest.raises(httpx.HTTPError):
        http.get("/stream").read()  # the response breaks off after its first chunk
    (error,) = collector.query(type="error")["events"]
    data = error["data"]
    assert (data["error_type"], data["message"]) == ("ValueError", "the first source failed")
    assert "in first" in data["stack_trace"]
    if failures == 1:
        assert "exception_group" not in data["context"]
    else:
        assert data["context"]["exception_group"] == {
            "type": "ExceptionGroup",
            "exceptions": failures,
        }
    (request,) = requests_recorded(collector)
    assert (request["route"], request["status"]) == ("/stream", 200)


def sse_endpoint_app(settings: TelemetrySettings) -> FastAPI:
    """FastAPI's own server-sent events (a generator endpoint), which runs the generator
    in a task group: an exception in it leaves the app as an ``ExceptionGroup``."""
    sse = pytest.importorskip("fastapi.sse")
    app = instrumented(settings)

    @app.get("/events", response_class=sse.EventSourceResponse)
    async def events() -> AsyncIterator[dict[str, int]]:
        yield {"n": 1}
        raise LookupError("the event source ran dry")

    return app


def test_exception_in_a_server_sent_events_endpoint_is_recorded_as_itself(
    settings: TelemetrySettings, collector: CollectorHandle
) -> None:
    """The ``ExceptionGroup`` around a failing SSE generator is unwrapped: the ``error``
    is the ``LookupError`` with its message."""
    app = sse_endpoint_app(settings)
    with serving(app) as served, served.http() as http, pytest.raises(httpx.HTTPError):
        http.get("/events").read()
    (error,) = collector.query(type="error")["events"]
    assert (error["data"]["error_type"], error["data"]["message"]) == (
        "LookupError",
        "the event source ran dry",
    )


def test_stack_traces_leave_out_the_middlewares_frames(
    settings: TelemetrySettings, collector: CollectorHandle
) -> None:
    """HTTP and WebSocket errors: the trace shows the app's frames down to the raise,
    and not one frame of the telemetry middleware (it used to start with one)."""
    app = echo_app(settings)

    @app.get("/boom")
    async def boom() -> None:
        fail_here("kaboom")

    with serving(app) as served:
        with served.http() as http:
            assert http.get("/boom").status_code == 500
        with served.ws("/echo") as ws:
            ws.send("crash")
            with pytest.raises(ConnectionClosed):
                ws.recv(timeout=10)
    errors = collector.query(type="error")["events"]
    assert len(errors) == 2
    for error in errors:
        trace: str = error["data"]["stack_trace"]
        assert trace.startswith("Traceback (most recent call last):\n")
        assert "in fail_here" in trace
        assert "telemetry_client" not in trace
