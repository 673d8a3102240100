"""FastAPI integration end to end: real apps served by uvicorn on 127.0.0.1, real clients
(httpx, the ``websockets`` package), the reference collector as the destination.

The test app's tool helpers (``run_tool``, ``edit_file``) receive neither the client nor a
session id: they call ``current_client()``, so the session ids the collector stores prove
that the contextvars set by the middleware (or ``bind_session``) carried them.
"""

from __future__ import annotations

import contextlib
import difflib
import os
import platform
import signal
import socket
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from conftest import COLLECTOR_TOKEN, CollectorHandle, child_env, wait_until
from fastapi import FastAPI, HTTPException, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import StreamingResponse
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection
from websockets.sync.client import connect as ws_connect

from telemetry_client import Spool, TelemetryClient, TelemetrySettings, events
from telemetry_client.context import current_session_id
from telemetry_client.integrations.fastapi import (
    Telemetry,
    TelemetryMiddleware,
    bind_session,
    current_client,
    get_telemetry,
    instrument_app,
    telemetry_failures,
    telemetry_lifespan,
)

PROCS = Path(__file__).parent.parent / "_procs"
FAST = {"linger_ms": 20, "upload_backoff_initial": "20ms", "upload_backoff_max": "200ms"}


# -- the app under test -------------------------------------------------------------------


def run_tool(name: str, args: dict[str, Any]) -> str:
    """A tool deep in agent code: no client, no session id passed in."""
    result = f"{name} found 3 matches for {args}"
    current_client().emit(
        events.ToolCall(tool_name=name, args=args, result=result, attributes={"pid": os.getpid()})
    )
    return result


def edit_file(path: Path, line: str) -> None:
    """A file edit with before/after and diff; reports through the module-level accessor."""
    before = path.read_text() if path.exists() else ""
    after = before + line + "\n"
    path.write_text(after)
    diff = "".join(difflib.unified_diff(before.splitlines(True), after.splitlines(True), "a", "b"))
    current_client().emit(
        events.FileOperation(
            path=path.name, op="edit", before=before, after=after, diff=diff, loc_added=1
        )
    )


def make_app(
    settings: TelemetrySettings | None = None,
    workdir: Path | None = None,
    *,
    client: TelemetryClient | None = None,
    **middleware: Any,
) -> FastAPI:
    """The agent backend: REST and WebSocket chat, a failing route, a mounted sub-app."""
    app = FastAPI(lifespan=telemetry_lifespan(settings, client=client))
    app.add_middleware(TelemetryMiddleware, **middleware)
    files = workdir or Path.cwd()

    @app.post("/chat/{session_id}")
    async def chat(session_id: str, body: dict[str, str], telemetry: Telemetry) -> dict[str, str]:
        bind_session(session_id=session_id)  # the id is only known from the path
        answer = run_tool("grep", {"q": body["prompt"]})
        telemetry.emit(events.ChatTurn(user_prompt=body["prompt"], assistant_final=answer))
        return {"answer": answer, "session": str(current_session_id())}

    @app.post("/ask")
    async def ask(body: dict[str, str]) -> dict[str, str]:
        return {"answer": run_tool("search", {"q": body["prompt"]})}

    @app.get("/sync/{session_id}")
    def sync_route(session_id: str) -> dict[str, str]:  # runs on a worker thread
        bind_session(session_id=session_id)
        return {"answer": run_tool("sync-tool", {"q": session_id})}

    @app.websocket("/ws/chat")
    async def ws_chat(ws: WebSocket, telemetry: Telemetry) -> None:
        await ws.accept()
        while True:
            try:
                text = await ws.receive_text()
            except WebSocketDisconnect:
                return
            if text == "bye":
                await ws.close(code=1000)
                return
            if text == "crash":
                raise RuntimeError("websocket handler crashed")
            answer = run_tool("search", {"q": text})
            edit_file(files / "notes.txt", text)
            telemetry.emit(events.ChatTurn(user_prompt=text, assistant_final=answer))
            await ws.send_text(answer)

    @app.get("/boom")
    async def boom() -> None:
        raise_deep("kaboom from the route")

    @app.get("/items/{item_id}")
    async def item(item_id: int) -> dict[str, int]:
        return {"item": item_id}

    @app.get("/teapot")
    async def teapot() -> None:
        raise HTTPException(status_code=418, detail="short and stout")

    @app.get("/stream")
    async def stream() -> StreamingResponse:
        async def chunks() -> AsyncIterator[bytes]:
            for i in range(3):
                yield f"chunk {i}\n".encode()

        return StreamingResponse(chunks(), media_type="text/plain")

    @app.get("/whoami")
    async def whoami(request: Request, telemetry: Telemetry) -> dict[str, bool]:
        return {
            "dependency_is_state": telemetry is request.app.state.telemetry,
            "accessor_is_state": current_client() is request.app.state.telemetry,
            "same_as_get_telemetry": get_telemetry(request) is telemetry,
        }

    sub = FastAPI()

    @sub.get("/inner/{name}")
    async def inner(name: str) -> dict[str, str]:
        return {"name": name}

    app.mount("/sub", sub)
    return app


def raise_deep(message: str) -> None:
    """A frame the error event's stack trace must show."""
    raise RuntimeError(message)


# -- serving -----------------------------------------------------------------------------------


class Served:
    """A uvicorn server running an app in a thread of this process."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self.port = self._sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(
            app,
            log_config=None,
            access_log=False,
            lifespan="on",
            ws="websockets-sansio",
            timeout_graceful_shutdown=5,
        )
        self.server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self._sock]}, daemon=True
        )

    def start(self) -> Served:
        self._thread.start()
        wait_until(
            lambda: self.server.started or not self._thread.is_alive(), what="uvicorn started"
        )
        assert self.server.started, "the app failed to start (see the log)"
        return self

    def stop(self) -> None:
        """Graceful stop: returns after the lifespan's shutdown (the telemetry flush) ran."""
        self.server.should_exit = True
        self._thread.join(30)
        assert not self._thread.is_alive()
        self._sock.close()

    def http(self, **kwargs: Any) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=10, trust_env=False, **kwargs)

    def ws(self, path: str, **kwargs: Any) -> ClientConnection:
        connection: ClientConnection = ws_connect(
            f"ws://127.0.0.1:{self.port}{path}", proxy=None, **kwargs
        )
        return connection


@contextlib.contextmanager
def serving(app: FastAPI) -> Iterator[Served]:
    served = Served(app).start()
    try:
        yield served
    finally:
        if served.server.started and not served.server.should_exit:
            served.stop()


@pytest.fixture
def settings(
    settings_factory: Callable[..., TelemetrySettings], collector: CollectorHandle
) -> TelemetrySettings:
    """Client settings pointing at the test's collector, with short linger and retries."""
    return settings_factory(endpoint=collector.events_url, token=COLLECTOR_TOKEN, **FAST)


def of_type(found: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [e for e in found if e["type"] == kind]


# -- tests ----------------------------------------------------------------------------------------


def test_rest_and_websocket_sessions_reach_the_collector_with_their_ids(
    settings: TelemetrySettings, collector: CollectorHandle, tmp_path: Path
) -> None:
    """Path-bound, header, cookie and WebSocket-query sessions: every event emitted by
    helpers that get no ids (tool calls, file edits) carries its own session and user,
    also with two WebSocket conversations interleaved."""
    with serving(make_app(settings, tmp_path)) as served:
        with served.http() as http:
            r = http.post("/chat/rest-1", json={"prompt": "hi"}, headers={"X-User-ID": "alice"})
            assert r.json()["session"] == "rest-1"
            http.post("/ask", json={"prompt": "h"}, headers={"X-Session-ID": "hdr-1"})
            http.post("/ask", json={"prompt": "c"}, headers={"Cookie": "a=1; session_id=cookie-1"})
            http.get("/sync/sync-1")
        with (
            served.ws("/ws/chat?session_id=ws-a&user_id=bob") as a,
            served.ws("/ws/chat", additional_headers={"X-Session-ID": "ws-b"}) as b,
        ):
            for i in range(3):  # interleaved turns of two sessions on one event loop
                a.send(f"a-{i}")
                b.send(f"b-{i}")
                assert a.recv(timeout=10, decode=True).startswith("search")
                assert b.recv(timeout=10, decode=True).startswith("search")
            a.send("bye")
            with pytest.raises(ConnectionClosed):
                a.recv(timeout=10)
        # While the server runs, the background uploader delivers.
        wait_until(lambda: collector.query(session_id="ws-a")["total"] >= 11, what="ws-a")
    by_session = {s: collector.query(session_id=s)["events"] for s in ("rest-1", "hdr-1")}
    by_session |= {s: collector.query(session_id=s)["events"] for s in ("cookie-1", "sync-1")}
    by_session |= {s: collector.query(session_id=s)["events"] for s in ("ws-a", "ws-b")}

    rest = by_session["rest-1"]
    assert Counter(e["type"] for e in rest) == {
        "session_start": 1,
        "tool_call": 1,
        "chat_turn": 1,
        "http_request": 1,
    }
    assert {e["user_id"] for e in rest} == {"alice"}
    (request,) = of_type(rest, "http_request")
    assert request["data"]["route"] == "/chat/{session_id}"
    for sid in ("hdr-1", "cookie-1", "sync-1"):
        (tool,) = of_type(by_session[sid], "tool_call")
        assert tool["data"]["args"]["q"] in {"h", "c", "sync-1"}
        assert len(of_type(by_session[sid], "session_start")) == 1
    assert of_type(by_session["sync-1"], "http_request")[0]["data"]["route"] == "/sync/{session_id}"

    for sid, prefix, user in (("ws-a", "a-", "bob"), ("ws-b", "b-", settings.user_id)):
        found = by_session[sid]
        tools = of_type(found, "tool_call")
        assert sorted(t["data"]["args"]["q"] for t in tools) == [f"{prefix}{i}" for i in range(3)]
        edits = of_type(found, "file_operation")
        assert [e["data"]["after"].splitlines()[-1][:2] for e in edits] == [prefix] * 3
        assert all(e["data"]["diff"].startswith("--- a") for e in edits)
        assert len(of_type(found, "chat_turn")) == 3
        assert len(of_type(found, "session_start")) == 1
        assert {e["user_id"] for e in found} == {user}
    (closed,) = of_type(by_session["ws-a"], "websocket_session")
    assert closed["data"]["route"] == "/ws/chat"
    assert closed["data"]["close_code"] == 1000
    assert closed["data"]["closed_by"] == "server"
    assert closed["data"]["messages_in"] == 4
    assert closed["data"]["messages_out"] == 3
    (left,) = of_type(by_session["ws-b"], "websocket_session")
    assert left["data"]["closed_by"] == "client"


def test_shutdown_flushes_events_emitted_just_before_the_server_stops(
    settings_factory: Callable[..., TelemetrySettings], collector: CollectorHandle, tmp_path: Path
) -> None:
    """With a 1 s linger, the last request's events are still in memory when the server is
    told to stop; they are at the collector once the server thread has ended."""
    settings = settings_factory(
        endpoint=collector.events_url, token=COLLECTOR_TOKEN, linger_ms=1000
    )
    app = make_app(settings, tmp_path)
    with serving(app) as served:
        with served.http() as http:
            for i in range(20):
                http.post("/ask", json={"prompt": f"last-{i}"}, headers={"X-Session-ID": "bye"})
        client: TelemetryClient = app.state.telemetry
        served.stop()
    assert client.closed
    found = collector.query(session_id="bye")["events"]
    assert sorted(e["data"]["args"]["q"] for e in of_type(found, "tool_call")) == sorted(
        f"last-{i}" for i in range(20)
    )
    assert len(of_type(found, "http_request")) == 20
    assert client.stats()["uploaded"] == 41  # 20 tools, 20 requests, 1 session_start


@pytest.mark.parametrize("style", ["telemetry_lifespan", "instrument_app"])
def test_lifespan_composes_with_the_apps_own_lifespan(
    settings: TelemetrySettings, collector: CollectorHandle, style: str
) -> None:
    """Telemetry starts before the app's lifespan and stops after it; the app's state is
    passed through; what the app emits in its own startup and shutdown is delivered."""
    order: list[str] = []

    @contextlib.asynccontextmanager
    async def own(app: FastAPI) -> AsyncIterator[dict[str, str]]:
        client = current_client()
        order.append(f"app startup, client open={client.enabled and not client.closed}")
        client.emit("app_lifecycle", {"phase": "startup"})
        yield {"greeting": "hello"}
        order.append(f"app shutdown, client open={not client.closed}")
        client.emit("app_lifecycle", {"phase": "shutdown"})

    if style == "telemetry_lifespan":
        app = FastAPI(lifespan=telemetry_lifespan(settings, app_lifespan=own))
    else:
        app = instrument_app(FastAPI(lifespan=own), settings)

    @app.get("/greet")
    async def greet(request: Request) -> dict[str, str]:
        return {"greeting": request.state.greeting}

    with serving(app) as served, served.http() as http:
        assert http.get("/greet").json() == {"greeting": "hello"}
    client: TelemetryClient = app.state.telemetry
    order.append(f"after stop, client closed={client.closed}")
    assert order == [
        "app startup, client open=True",
        "app shutdown, client open=True",
        "after stop, client closed=True",
    ]
    phases = [e["data"]["phase"] for e in collector.query(type="app_lifecycle")["events"]]
    assert phases == ["startup", "shutdown"]
    if style == "instrument_app":
        (request,) = collector.query(type="http_request")["events"]
        assert request["data"]["route"] == "/greet"


def test_unhandled_exceptions_become_error_events_and_the_client_still_gets_a_500(
    settings: TelemetrySettings, collector: CollectorHandle, tmp_path: Path
) -> None:
    """HTTP: 500 for the caller, an ``error`` event with the stack trace and the route;
    WebSocket: the connection is closed and the error is recorded the same way."""
    with serving(make_app(settings, tmp_path)) as served:
        with served.http() as http:
            response = http.get("/boom", headers={"X-Session-ID": "err-1"})
        assert response.status_code == 500
        with served.ws("/ws/chat?session_id=err-ws") as ws:
            ws.send("crash")
            with pytest.raises(ConnectionClosed):
                ws.recv(timeout=10)

    found = collector.query(session_id="err-1")["events"]
    (error,) = of_type(found, "error")
    assert error["data"]["error_type"] == "RuntimeError"
    assert error["data"]["message"] == "kaboom from the route"
    trace = error["data"]["stack_trace"]
    assert "in raise_deep" in trace
    assert "in boom" in trace
    assert error["data"]["context"] == {"transport": "http", "route": "/boom", "method": "GET"}
    (request,) = of_type(found, "http_request")
    assert request["data"]["status"] == 500

    ws_found = collector.query(session_id="err-ws")["events"]
    (ws_error,) = of_type(ws_found, "error")
    assert "websocket handler crashed" in ws_error["data"]["stack_trace"]
    assert ws_error["data"]["context"]["route"] == "/ws/chat"
    (session,) = of_type(ws_found, "websocket_session")
    assert session["data"]["closed_by"] == "error"
    assert session["data"]["messages_in"] == 1


def test_middleware_records_route_templates_and_statuses(
    settings: TelemetrySettings, collector: CollectorHandle, tmp_path: Path
) -> None:
    """Templates from the matched route (mount prefixes included), statuses as sent; a
    fixed placeholder, never the raw path, when nothing matched; excluded paths are not
    recorded."""
    app = make_app(settings, tmp_path, exclude_paths={"/items/0"})
    with serving(app) as served, served.http() as http:
        calls = [
            ("GET", "/items/42", 200),
            ("GET", "/items/0", 200),  # excluded
            ("POST", "/items/42", 405),
            ("GET", "/items/not-a-number", 422),
            ("GET", "/teapot", 418),
            ("GET", "/sub/inner/x", 200),
            ("GET", "/no/such/route", 404),
            ("GET", "/stream", 200),
        ]
        for method, path, status in calls:
            assert http.request(method, path).status_code == status, path
    recorded = [
        (e["data"]["method"], e["data"]["route"], e["data"]["status"], e["data"]["matched"])
        for e in collector.query(type="http_request")["events"]
    ]
    assert recorded == [
        ("GET", "/items/{item_id}", 200, True),
        ("POST", "/items/{item_id}", 405, True),
        ("GET", "/items/{item_id}", 422, True),
        ("GET", "/teapot", 418, True),
        ("GET", "/sub/inner/{name}", 200, True),
        ("GET", "<unmatched>", 404, False),
        ("GET", "/stream", 200, True),
    ]
    durations = [e["data"]["duration_ms"] for e in collector.query(type="http_request")["events"]]
    assert all(isinstance(d, float) and d >= 0 for d in durations)


def test_session_start_once_per_session_and_once_per_websocket_connection(
    settings_factory: Callable[..., TelemetrySettings], collector: CollectorHandle, tmp_path: Path
) -> None:
    """Repeated requests of one session: one ``session_start``; each WebSocket connection:
    its own, even for a known session; a WebSocket without an id gets a fresh one. The
    event names the app version, OS, Python version and machine id."""
    settings = settings_factory(
        endpoint=collector.events_url, token=COLLECTOR_TOKEN, app_version="9.9.9", **FAST
    )
    with serving(make_app(settings, tmp_path)) as served:
        with served.http() as http:
            for _ in range(3):
                http.post("/ask", json={"prompt": "x"}, headers={"X-Session-ID": "once"})
        for _ in range(2):
            with served.ws("/ws/chat?session_id=once") as ws:
                ws.send("bye")
                with pytest.raises(ConnectionClosed):
                    ws.recv(timeout=10)
        with served.ws("/ws/chat") as anonymous:
            anonymous.send("hello")
            anonymous.recv(timeout=10)
    starts = collector.query(type="session_start")["events"]
    assert Counter(e["session_id"] for e in starts)["once"] == 3  # 1 REST + 2 connections
    fresh = [e for e in starts if e["session_id"] != "once"]
    assert len(fresh) == 1
    (fresh_tool,) = collector.query(type="tool_call", session_id=fresh[0]["session_id"])["events"]
    assert fresh_tool["data"]["args"] == {"q": "hello"}
    data = starts[0]["data"]
    assert data["app_version"] == "9.9.9"
    assert data["os"] == platform.system()
    assert data["python_version"] == platform.python_version()
    assert data["machine_id"] == starts[0]["machine_id"]
    assert {e["data"]["transport"] for e in starts} == {"http", "websocket"}


MIDDLEWARE_EVENTS = {"session_start", "http_request", "websocket_session", "error"}


class BrokenClient(TelemetryClient):
    """A client that fails on every event the integration emits, as a telemetry bug would
    (the app's own emits still work: they are not the integration's to guard)."""

    def emit(self, event: Any, data: Any = None, **kwargs: Any) -> None:
        kind = event if isinstance(event, str) else event.TYPE
        if kind in MIDDLEWARE_EVENTS:
            raise RuntimeError("telemetry is broken")
        super().emit(event, data, **kwargs)


def test_telemetry_failures_never_change_the_response(
    settings: TelemetrySettings, tmp_path: Path
) -> None:
    """With every emit raising, responses (plain, streamed, errors) and WebSockets are
    exactly what the app produces; the skipped steps are counted."""
    broken = BrokenClient(settings)
    before = telemetry_failures()
    with serving(make_app(client=broken, workdir=tmp_path)) as served:
        with served.http() as http:
            headers = {"X-Session-ID": "broken-1"}
            ok = http.post("/chat/broken-2", json={"prompt": "p"}, headers=headers)
            assert ok.status_code == 200
            assert ok.json()["answer"].startswith("grep found 3 matches")
            assert http.get("/stream").text == "chunk 0\nchunk 1\nchunk 2\n"
            assert http.get("/teapot").json() == {"detail": "short and stout"}
            boom = http.get("/boom")
            assert (boom.status_code, boom.text) == (500, "Internal Server Error")
        with served.ws("/ws/chat?session_id=broken-ws") as ws:
            ws.send("hi")
            assert ws.recv(timeout=10, decode=True).startswith("search found")
    # session_start, request and error events of the middleware, and bind_session's
    assert telemetry_failures() - before >= 8
    assert not broken.closed  # a client passed in is flushed, and left to its owner
    broken.close()


def test_disabled_telemetry_passes_everything_through(tmp_path: Path, clean_env: None) -> None:
    """TELEMETRY_ENABLED=0: the app works, the dependency gives a no-op client, and no
    spool directory is ever created."""
    spool = tmp_path / "spool"
    app = make_app(TelemetrySettings(enabled=False, spool_dir=spool), tmp_path)
    with serving(app) as served, served.http() as http:
        assert http.post("/chat/off", json={"prompt": "p"}).status_code == 200
        assert http.get("/whoami").json() == {
            "dependency_is_state": True,
            "accessor_is_state": True,
            "same_as_get_telemetry": True,
        }
    assert not app.state.telemetry.enabled
    assert not spool.exists()


def test_dependency_and_accessor_resolve_to_the_apps_client(
    settings: TelemetrySettings, tmp_path: Path
) -> None:
    """Inside a request, ``Depends(get_telemetry)`` and ``current_client()`` are the
    lifespan's client; with no app running, ``current_client()`` is a no-op that never
    raises."""
    with serving(make_app(settings, tmp_path)) as served, served.http() as http:
        assert http.get("/whoami").json() == {
            "dependency_is_state": True,
            "accessor_is_state": True,
            "same_as_get_telemetry": True,
        }
    idle = current_client()
    assert not idle.enabled
    idle.emit("nothing", {"goes": "anywhere"})


def test_the_integrations_package_imports_no_optional_dependency() -> None:
    """``import telemetry_client.integrations`` pulls in neither FastAPI nor Starlette."""
    code = (
        "import sys, telemetry_client.integrations; "
        "bad = [m for m in ('fastapi', 'starlette', 'uvicorn') if m in sys.modules]; "
        "sys.exit(str(bad) if bad else 0)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=False
    )
    assert result.returncode == 0, result.stderr


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def test_two_uvicorn_workers_share_one_spool_and_deliver_every_event_once(
    tmp_path: Path, collector: CollectorHandle
) -> None:
    """``uvicorn --workers 2`` on one spool: requests spread over both workers (distinct
    pids in the events); after SIGTERM every event is stored exactly once, none left."""
    spool_dir = tmp_path / "spool"
    port = _free_port()
    env = child_env(
        spool_dir,
        TELEMETRY_ENDPOINT=collector.events_url,
        TELEMETRY_TOKEN=COLLECTOR_TOKEN,
        TELEMETRY_LINGER_MS="20",
        TELEMETRY_UPLOAD_BACKOFF_INITIAL="20ms",
        TELEMETRY_UPLOAD_BACKOFF_MAX="200ms",
        PYTHONPATH=os.pathsep.join([str(PROCS), os.environ.get("PYTHONPATH", "")]),
    )
    log = tmp_path / "uvicorn.log"
    command = [
        sys.executable,
        "-m",
        "uvicorn",
        "fastapi_workers_app:app",
        "--workers",
        "2",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--ws",
        "websockets-sansio",
        "--log-level",
        "warning",
    ]
    with log.open("wb") as out:
        server = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    sent: list[str] = []
    pids_answered: set[int] = set()

    def get(path: str) -> int | None:
        try:  # a new connection per request, so the kernel can hand it to either worker
            with httpx.Client(base_url=base, timeout=10, trust_env=False) as http:
                response = http.get(path)
        except httpx.TransportError:
            return None
        return int(response.json()["pid"]) if response.status_code == 200 else None

    def one_round() -> bool:
        with ThreadPoolExecutor(8) as pool:
            markers = [f"m-{len(sent) + i}" for i in range(8)]
            pids = list(pool.map(lambda m: get(f"/work/{m}"), markers))
        for marker, pid in zip(markers, pids, strict=True):
            if pid is not None:
                sent.append(marker)
                pids_answered.add(pid)
        return len(pids_answered) >= 2 and len(sent) >= 40

    try:
        wait_until(lambda: get("/health"), timeout=30, interval=0.05, what="uvicorn up")
        wait_until(one_round, timeout=30, interval=0, what="both workers answering")
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
    assert server.returncode == 0, log.read_text()[-3000:]

    tools = collector.query(type="tool_call")["events"]
    assert Counter(e["data"]["args"]["marker"] for e in tools) == Counter(sent)
    assert {e["data"]["pid"] for e in tools} == pids_answered
    assert len(pids_answered) == 2
    stored = collector.query()["events"]
    assert len({e["id"] for e in stored}) == len(stored)  # no event stored twice
    assert len(of_type(stored, "http_request")) == len(sent)
    assert Spool(spool_dir, max_bytes=1 << 30).pending().batches == 0
