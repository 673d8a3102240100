"""Collector storage benchmark: ingest events/s per collector process, and query latency.

Usage::

    python benchmarks/collector.py [--quick] [--n N] [--clients K] [--reps R]
        [--sizes 100000,1000000] [--samples S] [--no-postgres] [--no-query] [--no-ingest]
        [--json PATH]

**Ingest.** The same workload in one run for each variant: ``jsonl`` (the 0.1 JSONL file
store, through ``benchmarks/_legacy_store.py``), ``sqlite`` (the default store, in the
data dir), ``postgres`` (one collector on a PostgreSQL database) and ``postgres-2x`` (two
collector processes, replicas, on one database; clients split between them). Each
variant runs the real collector app (``create_app(config, store=...)``) under uvicorn on
127.0.0.1 in its own process (``benchmarks/_collector_procs.py``), on a fresh data dir or
database. ``K`` client processes each post their share of ``N`` workload events
(``benchmarks/workload.py`` in SDK envelopes, ~2.4 KB each) as zstd NDJSON batches of at
most 1,000 events / 1 MiB with ``Idempotency-Key`` s, one request at a time on a
keep-alive connection (httpx), started together once every client is connected. Measured:
wall time from the first request to the last answer, the collector process's CPU
(``/proc/PID/stat``, all its threads), PostgreSQL's CPU (all its processes), per-request
latency; then the stored events are counted in the store. Repetitions are interleaved
(variant order rotated), medians reported; ratios are to the JSONL store of the same run.

**Queries.** SQLite and PostgreSQL are filled in-process with ``Store.append`` (faster
than HTTP; sessions of varied length from 200 users, ~1 MiB batches, see
``benchmarks/_collector_data.py``) to each size, then served by the collector app under
uvicorn and asked, one request at a time over HTTP: the session page ``GET
/api/v1/events?session_id=S&limit=200`` (S a random session of at least 200 events) and
the sessions list ``GET /api/v1/sessions?limit=100``; p50/p99 after a warm-up (the page
cache is warm: the data was just written). For scale, the 0.1 JSONL store, filled with
the same batches, answers the session page in-process (``FileEventStore.query``: it scans
every file); it had no sessions list.

Targets (from the issue), printed PASS/MISS: SQLite ingest >= 0.8x the JSONL store's;
PostgreSQL >= 15,000 events/s per collector process; two replicas > one; at 1M events a
session page p50 <= 50 ms and the sessions list p50 <= 100 ms. Results go to
``benchmarks/results/collector.json``. No timing assertion anywhere: this is a report.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import math
import pickle
import random
import shutil
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _collector_data import Filler, client_batches
from _collector_run import (
    PgCluster,
    ServerProc,
    run_ingest,
    start_postgres,
)
from _machine import loadavg, machine_info
from workload import make_events, mean_json_size

from telemetry_client.collector.store.base import EventQuery, Ingest
from telemetry_client.collector.store.files import Storage
from telemetry_client.collector.store.open import open_store

HERE = Path(__file__).resolve().parent
DEFAULT_JSON = HERE / "results" / "collector.json"
SEED = 1234
N_DEFAULT, N_QUICK = 100_000, 20_000
SIZES_DEFAULT, SIZES_QUICK = (100_000, 1_000_000), (20_000, 100_000)
SAMPLES_DEFAULT, SAMPLES_QUICK = 200, 50
WARMUP = 10
LEGACY_SAMPLES = 3
CLIENTS = 4
REPS_DEFAULT, REPS_QUICK = 3, 1
POOL = 20_000  # distinct workload payloads cycled through by the fill
PAGE, LIST = 200, 100
VARIANTS = ("jsonl", "sqlite", "postgres", "postgres-2x")
TARGET_SQLITE_RATIO = 0.8
TARGET_PG_EVENTS_S = 15_000
TARGET_PAGE_MS = 50.0
TARGET_LIST_MS = 100.0
FILL_TOKEN = Ingest("bench-fill")


def pct(values: list[float], q: float) -> float:
    """Nearest-rank percentile ``q`` (0-100) of ``values``."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def _f(value: float | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


# --- queries --------------------------------------------------------------------------------


def measure_queries(
    port: int,
    sessions: list[tuple[str, int]],
    n_sessions: int,
    samples: int,
    rng: random.Random,
) -> dict[str, Any]:
    """Session pages and sessions lists over HTTP, one request at a time: latencies in ms."""
    import httpx
    from _collector_procs import TOKEN

    out: dict[str, Any] = {"page_ms": [], "list_ms": [], "page_bytes": [], "errors": []}
    with httpx.Client(
        base_url=f"http://127.0.0.1:{port}",
        headers={"Authorization": f"Bearer {TOKEN}"},
        timeout=120.0,
        trust_env=False,
    ) as http:
        for i in range(WARMUP + samples):
            session, size = sessions[rng.randrange(len(sessions))]
            t0 = time.perf_counter()
            r = http.get("/api/v1/events", params={"session_id": session, "limit": PAGE})
            took = (time.perf_counter() - t0) * 1000
            page = r.json() if r.status_code == 200 else {}
            got = page.get("events", [])
            if len(got) != min(PAGE, size) or any(e["session_id"] != session for e in got):
                out["errors"].append(f"page {session}: {r.status_code}, {len(got)} events")
            if i >= WARMUP:
                out["page_ms"].append(took)
                out["page_bytes"].append(len(r.content))
        for i in range(WARMUP + samples):
            t0 = time.perf_counter()
            r = http.get("/api/v1/sessions", params={"limit": LIST})
            took = (time.perf_counter() - t0) * 1000
            listed = r.json().get("sessions", []) if r.status_code == 200 else []
            if r.status_code != 200 or len(listed) != min(LIST, n_sessions):
                out["errors"].append(f"sessions list: {r.status_code}, {len(listed)} sessions")
            if i >= WARMUP:
                out["list_ms"].append(took)
    return out


def query_phase(
    args: argparse.Namespace, tmp: Path, pg: PgCluster | None
) -> tuple[list[dict[str, Any]], dict[str, float]]:
    """Fill each store to every size in turn and measure; returns rows and fill ev/s."""
    t0 = time.perf_counter()
    pool = make_events(POOL, SEED + 1)
    print(f"  query fill: {POOL:,} workload payloads generated in {time.perf_counter() - t0:.1f} s")
    filler = Filler(pool, SEED + 2)
    roots = {"sqlite": tmp / "q-sqlite", "postgres": tmp / "q-postgres", "jsonl": tmp / "q-jsonl"}
    url = pg.new_database() if pg is not None else None
    stores: dict[str, Any] = {"sqlite": open_store(None, roots["sqlite"] / "db")}
    if url is not None:
        stores["postgres"] = open_store(url, roots["postgres"])
    legacy = Storage.open(roots["jsonl"])
    fill_s = dict.fromkeys([*stores, "jsonl"], 0.0)
    gen_s = 0.0
    rows: list[dict[str, Any]] = []
    rng = random.Random(SEED + 3)
    filled = 0
    try:
        for size in args.sizes:
            t_gen = time.perf_counter()
            for key, events in filler.batches(size - filled):
                t_app = time.perf_counter()
                for name, store in stores.items():
                    t = time.perf_counter()
                    store.append(events, key, FILL_TOKEN)
                    fill_s[name] += time.perf_counter() - t
                t = time.perf_counter()
                legacy.events.append(events, key)
                fill_s["jsonl"] += time.perf_counter() - t
                gen_s -= time.perf_counter() - t_app
            gen_s += time.perf_counter() - t_gen
            filled = size
            gc.collect()
            big = sorted((s, n) for s, n in filler.sessions.items() if n >= PAGE)
            if not big:  # a tiny fill (smoke test): the largest sessions instead
                big = sorted(filler.sessions.items(), key=lambda sn: -sn[1])[:10]
            print(
                f"  filled {size:,} events ({len(filler.sessions):,} sessions,"
                f" {len(big):,} of >= {PAGE} events); append s so far: "
                + ", ".join(f"{k} {v:.1f}" for k, v in fill_s.items())
                + f"; generating {gen_s:.1f}"
            )
            for backend in stores:
                server = ServerProc(backend, roots[backend], url if backend == "postgres" else None)
                try:
                    m = measure_queries(server.port, big, len(filler.sessions), args.samples, rng)
                finally:
                    server.stop()
                rows.append(_query_row(backend, size, m))
                print(
                    f"    {backend:<9} session page p50 {rows[-1]['page_p50_ms']:.1f} ms"
                    f" p99 {rows[-1]['page_p99_ms']:.1f}; sessions list"
                    f" p50 {rows[-1]['list_p50_ms']:.1f} ms p99 {rows[-1]['list_p99_ms']:.1f}"
                    + (f"; ERRORS {m['errors'][:3]}" if m["errors"] else "")
                )
            legacy_ms = []
            for _ in range(LEGACY_SAMPLES):
                session, _n = big[rng.randrange(len(big))]
                t = time.perf_counter()
                legacy.events.query(EventQuery(session_id=session, limit=PAGE))
                legacy_ms.append((time.perf_counter() - t) * 1000)
            rows.append(
                {
                    "backend": "jsonl (0.1, in-process)",
                    "events": size,
                    "page_p50_ms": statistics.median(legacy_ms),
                    "page_p99_ms": max(legacy_ms),
                    "samples": LEGACY_SAMPLES,
                }
            )
            print(f"    jsonl     session page (in-process scan) {rows[-1]['page_p50_ms']:.0f} ms")
    finally:
        for store in stores.values():
            store.close()
        legacy.close()
        if pg is not None and url is not None:
            pg.drop(url)
    rates = {k: filled / v for k, v in fill_s.items() if v > 0}
    rates["generate (validate_envelope)"] = filled / gen_s if gen_s > 0 else 0.0
    return rows, rates


def _query_row(backend: str, size: int, m: dict[str, Any]) -> dict[str, Any]:
    return {
        "backend": backend,
        "events": size,
        "page_p50_ms": pct(m["page_ms"], 50),
        "page_p99_ms": pct(m["page_ms"], 99),
        "list_p50_ms": pct(m["list_ms"], 50),
        "list_p99_ms": pct(m["list_ms"], 99),
        "page_kb": statistics.mean(m["page_bytes"]) / 1024,
        "samples": len(m["page_ms"]),
        "errors": m["errors"],
    }


# --- report ---------------------------------------------------------------------------------


def ingest_report(runs: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, float]]:
    keys = ("events_per_s", "per_process_events_per_s", "cpu_us_per_event", "db_cpu_us_per_event")
    keys += ("wall_s", "req_p50_ms", "req_p99_ms")
    med = {
        v: {k: statistics.median(r[k] for r in rs) for k in keys} for v, rs in runs.items() if rs
    }
    base = med.get("jsonl", {}).get("events_per_s")
    print(
        "| variant | collectors | events stored | wall s | events/s | events/s per collector"
        " | vs jsonl | collector CPU µs/ev | PostgreSQL CPU µs/ev | request p50 / p99 ms |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for v in VARIANTS:
        if v not in med:
            print(f"| {v} | not run | | | | | | | | |")
            continue
        m, last = med[v], runs[v][-1]
        lo = min(r["events_per_s"] for r in runs[v])
        hi = max(r["events_per_s"] for r in runs[v])
        ratio = m["events_per_s"] / base if base else None
        db = m["db_cpu_us_per_event"] if v.startswith("postgres") else None
        print(
            f"| {v} | {last['replicas']} | {last['stored']:,} | {m['wall_s']:.2f}"
            f" | {m['events_per_s']:,.0f} ({lo:,.0f}-{hi:,.0f})"
            f" | {m['per_process_events_per_s']:,.0f} | {_f(ratio, '.2f')}x"
            f" | {m['cpu_us_per_event']:.1f} | {_f(db, '.1f')}"
            f" | {m['req_p50_ms']:.1f} / {m['req_p99_ms']:.1f} |"
        )
    return med


def query_report(rows: list[dict[str, Any]]) -> None:
    print(
        "| store | events stored | session page p50 ms | p99 ms | page KB"
        " | sessions list p50 ms | p99 ms |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        print(
            f"| {r['backend']} | {r['events']:,} | {r['page_p50_ms']:.1f} | {r['page_p99_ms']:.1f}"
            f" | {_f(r.get('page_kb'), '.0f')} | {_f(r.get('list_p50_ms'), '.1f')}"
            f" | {_f(r.get('list_p99_ms'), '.1f')} |"
        )


def targets(
    med: dict[str, dict[str, float]], rows: list[dict[str, Any]], sizes: list[int]
) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []

    def add(target: str, value: str, ok: bool | None) -> None:
        out.append({"target": target, "value": value, "pass": ok})

    def eps(v: str) -> float | None:
        return med[v]["events_per_s"] if v in med else None

    jsonl, sqlite, pg, pg2 = (eps(v) for v in VARIANTS)
    ratio = sqlite / jsonl if sqlite and jsonl else None
    add(
        f"SQLite ingest >= {TARGET_SQLITE_RATIO}x the JSONL store's",
        f"{_f(ratio, '.2f')}x",
        None if ratio is None else ratio >= TARGET_SQLITE_RATIO,
    )
    add(
        f"PostgreSQL >= {TARGET_PG_EVENTS_S:,} events/s per collector process",
        f"{_f(pg, ',.0f')} events/s",
        None if pg is None else pg >= TARGET_PG_EVENTS_S,
    )
    add(
        "two replicas on one database > one",
        f"{_f(pg2, ',.0f')} vs {_f(pg, ',.0f')} events/s",
        None if pg is None or pg2 is None else pg2 > pg,
    )
    top = max(sizes) if sizes else 0
    for r in rows:
        if r["events"] != top or "list_p50_ms" not in r:
            continue
        add(
            f"{r['backend']}: session page p50 <= {TARGET_PAGE_MS:.0f} ms at {top:,} events",
            f"{r['page_p50_ms']:.1f} ms",
            r["page_p50_ms"] <= TARGET_PAGE_MS and not r["errors"],
        )
        add(
            f"{r['backend']}: sessions list p50 <= {TARGET_LIST_MS:.0f} ms at {top:,} events",
            f"{r['list_p50_ms']:.1f} ms",
            r["list_p50_ms"] <= TARGET_LIST_MS and not r["errors"],
        )
    print("\n| target | value | |")
    print("| --- | ---: | --- |")
    for t in out:
        verdict = "not run" if t["pass"] is None else ("PASS" if t["pass"] else "MISS")
        print(f"| {t['target']} | {t['value']} | {verdict} |")
    if top and top < 1_000_000:
        print(f"(the query targets are stated at 1M events; this run's largest size is {top:,})")
    return out


# --- main -----------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="20k events, sizes 20k and 100k, 1 rep")
    ap.add_argument("--n", type=int, help=f"ingest events per variant (default {N_DEFAULT:,})")
    ap.add_argument("--clients", type=int, default=CLIENTS, help=f"default {CLIENTS}")
    ap.add_argument("--reps", type=int, help=f"repetitions (default {REPS_DEFAULT})")
    ap.add_argument("--sizes", help="events stored for the queries, comma-separated")
    ap.add_argument("--samples", type=int, help="requests per query kind and size")
    ap.add_argument("--no-postgres", action="store_true", help="skip the PostgreSQL variants")
    ap.add_argument("--no-ingest", action="store_true", help="skip the ingest part")
    ap.add_argument("--no-query", action="store_true", help="skip the query part")
    ap.add_argument("--json", default=str(DEFAULT_JSON), help="results JSON path")
    args = ap.parse_args(argv)
    n = args.n or (N_QUICK if args.quick else N_DEFAULT)
    reps = max(1, args.reps or (REPS_QUICK if args.quick else REPS_DEFAULT))
    args.sizes = (
        [int(s) for s in args.sizes.split(",")]
        if args.sizes
        else list(SIZES_QUICK if args.quick else SIZES_DEFAULT)
    )
    args.samples = args.samples or (SAMPLES_QUICK if args.quick else SAMPLES_DEFAULT)

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    started = time.perf_counter()
    info = machine_info(("telemetry-client", "uvicorn", "fastapi", "httpx", "psycopg"))
    print("collector storage benchmark" + (" (--quick)" if args.quick else ""))
    print(f"  cpu:      {info['cpu']} ({info['cores']} cores, {info['usable_cores']} usable)")
    print(f"  python:   {info['python']} on {info['platform']}")
    print("  packages: " + ", ".join(f"{k} {v}" for k, v in info["packages"].items()))
    print(f"  data fs:  {info['tmp_fs']}; load avg {info['loadavg_start']} at start")
    print(
        f"  ingest:   {n:,} events per variant from {args.clients} client processes"
        f" (zstd NDJSON, <= 1,000 events / 1 MiB per batch, Idempotency-Key);"
        f" {reps} interleaved repetition(s); collector = create_app under uvicorn"
        " (asyncio, h11), rate limit and retention off, one process per replica"
    )
    tmp = Path(tempfile.mkdtemp(prefix="tc-collector-bench-"))
    pg: PgCluster | None = None
    out: dict[str, Any] = {"machine": info, "n": n, "reps": reps, "clients": args.clients}
    try:
        if not args.no_postgres:
            pg = start_postgres()
            print(f"  postgres: {pg.describe()}")
        runs: dict[str, list[dict[str, Any]]] = {v: [] for v in VARIANTS}
        med: dict[str, dict[str, float]] = {}
        if not args.no_ingest:
            t0 = time.perf_counter()
            events = make_events(n, SEED)
            print(
                f"  workload: {n:,} events, mean {mean_json_size(events):,.0f} B of"
                f" {{type, data}} JSON; generated in {time.perf_counter() - t0:.1f} s\n"
            )
            paths = []
            for i, batches in enumerate(client_batches(events, args.clients, SEED)):
                paths.append(tmp / f"client-{i}.pickle")
                with open(paths[-1], "wb") as f:
                    pickle.dump(batches, f, protocol=pickle.HIGHEST_PROTOCOL)
            del events
            variants = [v for v in VARIANTS if pg is not None or not v.startswith("postgres")]
            for rep in range(reps):
                order = variants[rep % len(variants) :] + variants[: rep % len(variants)]
                for v in order:
                    r = run_ingest(v, tmp / f"ingest-{rep}-{v}", paths, pg)
                    runs[v].append(r)
                    print(
                        f"  rep {rep + 1} {v:<12} {r['stored']:,}/{n:,} stored in"
                        f" {r['wall_s']:.2f} s: {r['events_per_s']:,.0f} events/s,"
                        f" collector CPU {r['cpu_us_per_event']:.1f} µs/event"
                        + (f"; ERRORS: {r['problems']}" if r["problems"] else "")
                    )
            print()
            med = ingest_report(runs)
            print(
                "\n(events/s: median, min-max over the repetitions in brackets; CPU per stored"
                " event; the JSONL store runs behind the same 0.2 app as the others.)"
            )
        rows: list[dict[str, Any]] = []
        fill_rates: dict[str, float] = {}
        if not args.no_query:
            print(
                f"\nqueries: fill by Store.append in-process (not HTTP) to"
                f" {', '.join(f'{s:,}' for s in args.sizes)} events; {args.samples} requests"
                f" per kind after {WARMUP} warm-up, one at a time over HTTP"
            )
            rows, fill_rates = query_phase(args, tmp, pg)
            print()
            query_report(rows)
            print(
                "\n(in-process fill rates, events/s: "
                + ", ".join(f"{k} {v:,.0f}" for k, v in fill_rates.items())
                + ")"
            )
        out["targets"] = targets(med, rows, args.sizes if not args.no_query else [])
        out.update(ingest=runs, ingest_medians=med, queries=rows, fill_rates=fill_rates)
        info["loadavg_end"] = loadavg()
        elapsed = time.perf_counter() - started
        out["elapsed_s"] = elapsed
        print(f"\ntotal benchmark time {elapsed:.0f} s; load avg at end {info['loadavg_end']}")
        path = Path(args.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        for rs in runs.values():
            for r in rs:
                r.pop("latencies_ms", None)
        path.write_text(json.dumps(out, indent=2) + "\n")
        print(f"results written to {path}")
        failed = any(r["problems"] for rs in runs.values() for r in rs) or any(
            r.get("errors") for r in rows
        )
        return 1 if failed else 0
    finally:
        if pg is not None:
            with contextlib.suppress(Exception):
                pg.destroy()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
