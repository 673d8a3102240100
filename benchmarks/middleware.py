"""Per-request overhead of ``TelemetryMiddleware``, in-process, no network.

Usage::

    python benchmarks/middleware.py [--quick] [--requests N] [--json PATH]

Two apps, each called directly as an ASGI callable from one asyncio loop (a pre-built
scope, a ``receive`` that returns the request, a ``send`` that drops the messages):

* ``fastapi``: a minimal FastAPI app, ``GET /chat/{session_id}`` answering a small JSON;
* ``asgi``: an ASGI callable that answers at once, so the middleware's own cost is not
  hidden in FastAPI's (no routing: the event records the route ``<unmatched>`` with
  ``matched: false``, and no path).

Each app runs bare, wrapped by the middleware with a *disabled* client (pass-through),
and wrapped with an *enabled* spool-only client (every request emits an ``http_request``
event, its session id comes from an ``X-Session-ID`` header, so the session LRU and the
contextvars are exercised too). Variants are interleaved in rounds so drift hits them
alike; after an enabled round the writer is drained (``flush_sync``) so its work does not
spill into the next variant's timings. Per request: wall time (``perf_counter_ns``) and
CPU of the loop thread (``thread_time_ns``); per round: CPU of the whole process
(``process_time_ns``, which adds the writer thread encoding, compressing and fsyncing the
events, the drain included) divided by the requests.

Caveat for the ``asgi`` app: a request every ~5 µs emits events faster than the writer
encodes them, so ``emit()`` takes over some of the writer's work (backpressure hand-offs,
counted below the table): that is the client's designed behaviour, and it shows in p99.

Overhead = median(variant) - median(bare) of the same app; PASS when the enabled
middleware's median wall-time overhead is <= 30 µs on both apps.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from starlette.types import ASGIApp, Receive, Scope, Send

from telemetry_client import TelemetryClient, TelemetrySettings
from telemetry_client.integrations.fastapi import TelemetryMiddleware

TARGET_US = 30.0
ASGI = Callable[[dict[str, Any], Any, Any], Awaitable[None]]


def fastapi_app() -> FastAPI:
    app = FastAPI()

    @app.get("/chat/{session_id}")
    async def chat(session_id: str) -> dict[str, str]:
        return {"session": session_id, "answer": "ok"}

    return app


async def asgi_app(scope: Scope, receive: Receive, send: Send) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


def scope_for(path: str) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [
            (b"host", b"127.0.0.1"),
            (b"user-agent", b"bench/1"),
            (b"accept", b"*/*"),
            (b"x-session-id", b"bench-session"),
        ],
        "client": ("127.0.0.1", 40000),
        "server": ("127.0.0.1", 8000),
    }


async def receive() -> dict[str, Any]:
    return {"type": "http.request", "body": b"", "more_body": False}


async def send(message: dict[str, Any]) -> None:
    return None


class Variant:
    def __init__(self, app_name: str, mode: str, app: Any, client: TelemetryClient | None):
        self.name = f"{app_name}/{mode}"
        self.app_name, self.mode = app_name, mode
        self.app: ASGI = app
        self.client = client
        self.wall: list[int] = []
        self.cpu: list[int] = []
        self.process_cpu_ns = 0
        self.requests = 0

    async def run(self, n: int, path: str) -> None:
        app, perf, thread_cpu = self.app, time.perf_counter_ns, time.thread_time_ns
        wall, cpu = self.wall, self.cpu
        p0 = time.process_time_ns()
        for _ in range(n):
            scope = scope_for(path)  # routing mutates the scope: a fresh one per request
            c0 = thread_cpu()
            t0 = perf()
            await app(scope, receive, send)
            t1 = perf()
            c1 = thread_cpu()
            wall.append(t1 - t0)
            cpu.append(c1 - c0)
        if self.client is not None and self.client.enabled:
            # Drain the writer before the next variant runs, so its work does not land on
            # the others' timings; its CPU is still charged to this variant's process CPU.
            self.client.flush_sync(timeout=60)
        self.process_cpu_ns += time.process_time_ns() - p0
        self.requests += n


def build(root: Path) -> tuple[list[Variant], list[TelemetryClient]]:
    disabled = TelemetryClient(TelemetrySettings(enabled=False))
    enabled = TelemetryClient(TelemetrySettings(spool_dir=root / "spool", endpoint=None)).start()
    if not enabled.enabled:
        raise SystemExit("telemetry is disabled (TELEMETRY_ENABLED / DO_NOT_TRACK): unset it")
    variants: list[Variant] = []
    makers: tuple[tuple[str, Callable[[], ASGIApp]], ...] = (
        ("fastapi", fastapi_app),
        ("asgi", lambda: asgi_app),
    )
    for app_name, make in makers:
        variants.append(Variant(app_name, "bare", make(), None))
        variants.append(
            Variant(app_name, "disabled", TelemetryMiddleware(make(), client=disabled), disabled)
        )
        variants.append(
            Variant(app_name, "enabled", TelemetryMiddleware(make(), client=enabled), enabled)
        )
    return variants, [disabled, enabled]


def pct(values: list[int], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] / 1000.0


def summarize(variants: list[Variant]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for v in variants:
        out[v.name] = {
            "requests": v.requests,
            "wall_p50_us": statistics.median(v.wall) / 1000.0,
            "wall_p99_us": pct(v.wall, 0.99),
            "cpu_p50_us": statistics.median(v.cpu) / 1000.0,
            "cpu_p99_us": pct(v.cpu, 0.99),
            "process_cpu_per_request_us": v.process_cpu_ns / v.requests / 1000.0,
        }
    for v in variants:
        bare = out[f"{v.app_name}/bare"]
        row = out[v.name]
        row["overhead_wall_p50_us"] = row["wall_p50_us"] - bare["wall_p50_us"]
        row["overhead_wall_p99_us"] = row["wall_p99_us"] - bare["wall_p99_us"]
        row["overhead_cpu_p50_us"] = row["cpu_p50_us"] - bare["cpu_p50_us"]
        row["overhead_process_cpu_us"] = (
            row["process_cpu_per_request_us"] - bare["process_cpu_per_request_us"]
        )
        row["ratio_wall_p50"] = row["wall_p50_us"] / bare["wall_p50_us"]
    return out


def report(results: dict[str, Any]) -> bool:
    head = (
        f"{'variant':<18} {'wall p50':>9} {'wall p99':>9} {'cpu p50':>8} {'proc cpu':>9}"
        f" | {'+wall p50':>9} {'+wall p99':>9} {'+cpu p50':>8} {'+proc cpu':>9} {'ratio':>6}"
    )
    print(head)
    print("-" * len(head))
    for name, r in results.items():
        print(
            f"{name:<18} {r['wall_p50_us']:>9.2f} {r['wall_p99_us']:>9.2f}"
            f" {r['cpu_p50_us']:>8.2f} {r['process_cpu_per_request_us']:>9.2f}"
            f" | {r['overhead_wall_p50_us']:>+9.2f} {r['overhead_wall_p99_us']:>+9.2f}"
            f" {r['overhead_cpu_p50_us']:>+8.2f} {r['overhead_process_cpu_us']:>+9.2f}"
            f" {r['ratio_wall_p50']:>5.2f}x"
        )
    print("(µs per request; '+' columns: minus the bare app; proc cpu includes the writer thread)")
    ok = True
    for app_name in ("fastapi", "asgi"):
        over = results[f"{app_name}/enabled"]["overhead_wall_p50_us"]
        verdict = "PASS" if over <= TARGET_US else "MISS"
        ok = ok and over <= TARGET_US
        print(
            f"{verdict}: {app_name} app, enabled middleware median overhead {over:.2f} µs"
            f" (target <= {TARGET_US:.0f} µs)"
        )
    return ok


async def main_async(requests: int, rounds: int) -> tuple[dict[str, Any], dict[str, Any]]:
    with tempfile.TemporaryDirectory(prefix="bench-middleware-") as tmp:
        variants, clients = build(Path(tmp))
        per_round = max(1, requests // rounds)
        for v in variants:  # warm-up: imports, caches, the session LRU, the writer thread
            await v.run(200, "/chat/warm-up")
            v.wall.clear()
            v.cpu.clear()
            v.process_cpu_ns = v.requests = 0
        gc.collect()
        gc.freeze()
        for _ in range(rounds):
            for v in variants:
                await v.run(per_round, "/chat/bench-session")
        enabled = clients[1]
        flushed = enabled.flush_sync(timeout=60)
        stats = enabled.stats()
        for c in clients:
            c.close()
        return summarize(variants), {
            "events_emitted": stats["emitted"],
            "spooled": stats["spooled"],
            "dropped": stats["dropped"],
            "flushed": flushed.ok,
            "backpressure_handoffs": stats.get("backpressure_handoffs", 0),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=30_000, help="per variant")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--quick", action="store_true", help="3,000 requests per variant")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    requests = 3_000 if args.quick else args.requests
    for name in list(os.environ):
        if name.startswith("TELEMETRY_"):
            del os.environ[name]  # measure the defaults, not the caller's environment
    print(
        f"python {platform.python_version()} on {platform.machine()}, {os.cpu_count()} CPUs;"
        f" {requests} requests per variant in {args.rounds} interleaved rounds"
    )
    results, client_stats = asyncio.run(main_async(requests, args.rounds))
    ok = report(results)
    print(
        f"enabled client: {client_stats['events_emitted']} events emitted,"
        f" {client_stats['spooled']} spooled, {client_stats['dropped']} dropped,"
        f" {client_stats['backpressure_handoffs']} backpressure hand-offs"
    )
    if args.json:
        args.json.write_text(
            json.dumps({"results": results, "client": client_stats, "pass": ok}, indent=2) + "\n"
        )
    sys.exit(0)


if __name__ == "__main__":
    main()
