"""Session viewer benchmark: first screen of a big session, and the sessions list of a
big store, as the server answers them and as a browser shows them.

    python benchmarks/viewer.py                      # 10,000-event session, 100,000 events
    python benchmarks/viewer.py --events 1000000     # the sessions list at 1M events

The store (SQLite in a temporary data dir) is filled in-process: one session of
``--session-events`` events of the workload's mix (~2.4 KB each, ``benchmarks/
workload.py``), plus sessions of varied length (``_collector_data.Filler``) up to
``--events`` in all. Then the real collector runs under uvicorn on 127.0.0.1 and:

* server: ``GET /ui/sessions/{id}`` and ``GET /ui/`` over HTTP (median of ``--reps``);
* browser: headless Chromium (Debian's, through Playwright) opens each page; the figures
  are the page's own Navigation Timing: response end, DOMContentLoaded, load, and first
  contentful paint, from the start of navigation (median of ``--reps``).

Target (docs/viewer.md): the first screen of a 10,000-event session within 1 s here.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(BENCH.parent / "tests"))  # _browser: Chromium as the tests run it

from _browser import LAUNCH  # noqa: E402
from _collector_data import EPOCH_US, Filler, ts_text  # noqa: E402
from _machine import machine_info  # noqa: E402
from workload import make_events  # noqa: E402

from telemetry_client.collector import CollectorConfig, TokenSpec, running_collector  # noqa: E402
from telemetry_client.collector._decode import DecodedEvent, validate_envelope  # noqa: E402
from telemetry_client.collector.store.base import Ingest  # noqa: E402
from telemetry_client.collector.store.open import open_store  # noqa: E402

SEED = 20261201
TOKEN = TokenSpec("bench-viewer-admin-token", "bench", frozenset({"admin"}))
BIG_SESSION = "bench-big-session"
TARGET_MS = 1000.0


def big_session(pool: list[tuple[str, dict[str, Any]]], n: int) -> list[list[DecodedEvent]]:
    """``n`` events of one session in batches of 400, a few hundred ms apart."""
    rng = random.Random(SEED)
    us = EPOCH_US
    batches: list[list[DecodedEvent]] = []
    for start in range(0, n, 400):
        batch = []
        for seq in range(start, min(n, start + 400)):
            etype, data = pool[seq % len(pool)]
            us += rng.randint(50_000, 800_000)
            envelope = {
                "id": f"0190f000-0000-7000-8000-{seq:012x}",
                "type": etype,
                "ts": ts_text(us),
                "session_id": BIG_SESSION,
                "user_id": "bench-user",
                "machine_id": "0123456789abcdef",
                "app": "bench-agent",
                "app_version": "0.2.0",
                "seq": seq,
                "data": data,
            }
            batch.append(validate_envelope(envelope, "bench"))
        batches.append(batch)
    return batches


def fill(data_dir: Path, events: int, session_events: int) -> float:
    """Fill the store; returns seconds taken."""
    t0 = time.perf_counter()
    pool = make_events(2000, SEED)
    store = open_store(None, data_dir)
    who = Ingest("bench", None)
    try:
        for i, batch in enumerate(big_session(pool, session_events)):
            store.append(batch, f"big-{i}", who)
        rest = max(0, events - session_events)
        filler = Filler(pool, SEED + 1)
        for key, batch in filler.batches(rest):
            store.append(batch, key, who)
    finally:
        store.close()
    return time.perf_counter() - t0


def server_ms(client: Any, path: str, reps: int) -> tuple[float, int]:
    """Median milliseconds of ``GET path`` (after one warm-up) and the body size."""
    client.get(path).raise_for_status()
    times: list[float] = []
    size = 0
    for _ in range(reps):
        t = time.perf_counter()
        response = client.get(path)
        times.append((time.perf_counter() - t) * 1000)
        response.raise_for_status()
        size = len(response.content)
    return statistics.median(times), size


_TIMING = """() => {
  const nav = performance.getEntriesByType("navigation")[0];
  const fcp = performance.getEntriesByName("first-contentful-paint")[0];
  return {response: nav.responseEnd, dcl: nav.domContentLoadedEventEnd, load: nav.loadEventEnd,
          fcp: fcp ? fcp.startTime : null,
          events: document.querySelectorAll("[data-event-id]").length,
          rows: document.querySelectorAll("tr[data-session-id]").length};
}"""


def browser_ms(url: str, paths: list[str], reps: int) -> dict[str, dict[str, float]]:
    """Median Navigation Timing figures per path, in a fresh page each time."""
    from playwright.sync_api import sync_playwright

    out: dict[str, dict[str, float]] = {}
    with sync_playwright() as pw:
        browser = pw.chromium.launch(**LAUNCH)
        context = browser.new_context(
            extra_http_headers={"Authorization": f"Bearer {TOKEN.token}"},
            viewport={"width": 1280, "height": 800},
        )
        for path in paths:
            samples: list[dict[str, float]] = []
            for i in range(reps + 1):
                page = context.new_page()
                page.goto(url + path, wait_until="load", timeout=60_000)
                timing = page.evaluate(_TIMING)
                page.close()
                if i:  # the first load warms the cache (script, stylesheet)
                    samples.append(timing)
            out[path] = {
                key: statistics.median(s[key] for s in samples)
                for key in ("response", "dcl", "load", "fcp", "events", "rows")
                if all(s[key] is not None for s in samples)
            }
        browser.close()
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=100_000, help="events in the store")
    parser.add_argument("--session-events", type=int, default=10_000, help="the big session's")
    parser.add_argument("--reps", type=int, default=5, help="measurements per figure")
    parser.add_argument("--no-browser", action="store_true", help="server figures only")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)

    import httpx

    results: dict[str, Any] = {
        "machine": machine_info(["jinja2", "playwright", "fastapi"]),
        "args": vars(args) | {"json": None},
    }
    with tempfile.TemporaryDirectory(prefix="viewer-bench-") as tmp:
        data_dir = Path(tmp)
        took = fill(data_dir, args.events, args.session_events)
        print(f"filled {max(args.events, args.session_events):,} events in {took:.1f} s")
        config = CollectorConfig(data_dir=data_dir, principals=[TOKEN], retention_days=0)
        with running_collector(config) as running:
            headers = {"Authorization": f"Bearer {TOKEN.token}"}
            paths = {"session": f"/ui/sessions/{BIG_SESSION}", "list": "/ui/"}
            with httpx.Client(base_url=running.url, headers=headers, timeout=60) as client:
                for name, path in paths.items():
                    ms, size = server_ms(client, path, args.reps)
                    results[f"server_{name}_ms"] = round(ms, 1)
                    results[f"server_{name}_bytes"] = size
            if not args.no_browser:
                timings = browser_ms(running.url, list(paths.values()), args.reps)
                for name, path in paths.items():
                    results[f"browser_{name}"] = {k: round(v, 1) for k, v in timings[path].items()}
    report(results, args)
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


def report(r: dict[str, Any], args: argparse.Namespace) -> None:
    print(f"machine: {r['machine']}")
    print(f"store: {max(args.events, args.session_events):,} events (SQLite)")
    print(
        f"session of {args.session_events:,} events, first page: server"
        f" {r['server_session_ms']} ms ({r['server_session_bytes']:,} bytes)"
    )
    print(f"sessions list: server {r['server_list_ms']} ms ({r['server_list_bytes']:,} bytes)")
    for name in ("session", "list"):
        b = r.get(f"browser_{name}")
        if b:
            paint = f", first contentful paint {b['fcp']} ms" if "fcp" in b else ""
            print(
                f"browser {name}: response {b['response']} ms, DOMContentLoaded {b['dcl']} ms,"
                f" load {b['load']} ms{paint}"
            )
    b = r.get("browser_session")
    if b:
        verdict = "meets" if b["load"] <= TARGET_MS else "MISSES"
        print(f"target: first screen <= {TARGET_MS:.0f} ms: {verdict} ({b['load']} ms to load)")


if __name__ == "__main__":
    sys.exit(main())
