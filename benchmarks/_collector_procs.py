"""The processes of ``benchmarks/collector.py``: a collector under uvicorn, a posting client.

Usage (started by the benchmark, not by hand)::

    python benchmarks/_collector_procs.py serve VARIANT DIR       # jsonl | sqlite | postgres
    python benchmarks/_collector_procs.py client BATCHES.pickle PORT

``serve`` runs the real collector app (``create_app(config, store=...)``, rate limit and
retention off, one token) under uvicorn on 127.0.0.1, on a socket it binds itself, prints
``READY <port>`` once uvicorn has started, and stops gracefully when its stdin reaches EOF.
The PostgreSQL URL comes from ``BENCH_DATABASE_URL`` (never the command line, where
``ps`` would show its password). ``client`` loads its batches, opens one keep-alive
connection, prints ``READY``, waits for a line on stdin, posts every batch (zstd NDJSON,
``Idempotency-Key``) one after the other as the SDK's uploader does, and prints one JSON
line: its start/end (``time.monotonic``, system-wide), events accepted, per-request
latencies, errors and 503 retries.
"""

from __future__ import annotations

import json
import os
import pickle
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any

TOKEN = "collector-bench-token-0123456789"  # noqa: S105 - a throwaway local collector
URL_ENV = "BENCH_DATABASE_URL"
RETRY_PAUSE_S = 0.05
MAX_RETRIES = 100


def serve(variant: str, root: Path) -> int:
    import uvicorn

    from telemetry_client.collector import CollectorConfig
    from telemetry_client.collector.app import create_app
    from telemetry_client.collector.store.base import Store
    from telemetry_client.collector.store.open import open_store

    config = CollectorConfig(
        data_dir=root / "app",  # not the JSONL dir: the app would import a 0.1 journal
        tokens=[TOKEN],
        rate_limit_rps=0,
        retention_days=0,
    )
    store: Store
    if variant == "jsonl":
        from _legacy_store import LegacyJsonlStore

        store = LegacyJsonlStore(root / "jsonl")
    elif variant == "sqlite":
        store = open_store(None, root / "db")
    elif variant == "postgres":
        store = open_store(
            os.environ[URL_ENV],
            root,
            pool_size=config.db_pool_size,
            statement_timeout_s=config.db_statement_timeout_s,
        )
    else:
        raise SystemExit(f"unknown variant {variant!r}")
    # IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY only on sockets whose proto says
    # TCP; with proto 0, Nagle + delayed ACK add ~40 ms to every small response.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]

    class Server(uvicorn.Server):
        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            await super().startup(sockets=sockets)
            if self.started:
                print(f"READY {port}", flush=True)

    server = Server(
        uvicorn.Config(
            create_app(config, store=store),
            log_config=None,
            log_level="warning",
            access_log=False,
            lifespan="on",
            ws="none",
            timeout_graceful_shutdown=5,
        )
    )

    def stop_on_eof() -> None:
        sys.stdin.buffer.read()
        server.should_exit = True

    threading.Thread(target=stop_on_eof, daemon=True).start()
    try:
        server.run(sockets=[sock])
    finally:
        store.close()
    return 0


def client(batches_path: Path, port: int) -> int:
    import httpx

    with open(batches_path, "rb") as f:
        batches: list[tuple[str, bytes, int]] = pickle.load(f)  # noqa: S301 - our own file
    headers = {
        "Authorization": f"Bearer {TOKEN}",
        "Content-Type": "application/x-ndjson",
        "Content-Encoding": "zstd",
    }
    latencies: list[float] = []
    accepted = errors = retries = duplicates = 0
    last_error = ""
    with httpx.Client(
        base_url=f"http://127.0.0.1:{port}", headers=headers, timeout=120.0, trust_env=False
    ) as http:
        http.get("/api/v1/health").raise_for_status()  # connected before the start
        print("READY", flush=True)
        sys.stdin.readline()
        start = time.monotonic()
        for key, body, n in batches:
            for _attempt in range(MAX_RETRIES):
                t0 = time.perf_counter()
                try:
                    r = http.post("/api/v1/events", content=body, headers={"Idempotency-Key": key})
                except httpx.HTTPError as exc:
                    errors += 1
                    last_error = repr(exc)
                    break
                latencies.append(time.perf_counter() - t0)
                if r.status_code == 503:
                    retries += 1
                    time.sleep(RETRY_PAUSE_S)
                    continue
                if r.status_code != 200:
                    errors += 1
                    last_error = f"{r.status_code} {r.text[:200]}"
                    break
                answer = r.json()
                duplicates += bool(answer["duplicate"])
                accepted += int(answer["accepted"])
                if not answer["duplicate"] and answer["accepted"] != n:
                    errors += 1
                    last_error = f"accepted {answer['accepted']} of {n}"
                break
        end = time.monotonic()
    result: dict[str, Any] = {
        "start": start,
        "end": end,
        "batches": len(batches),
        "events": sum(n for _, _, n in batches),
        "accepted": accepted,
        "duplicates": duplicates,
        "errors": errors,
        "retries": retries,
        "last_error": last_error,
        "wire_bytes": sum(len(body) for _, body, _ in batches),
        "latencies_s": latencies,
    }
    print(json.dumps(result), flush=True)
    return 0


def main(argv: list[str]) -> int:
    if len(argv) == 3 and argv[0] == "serve":
        return serve(argv[1], Path(argv[2]))
    if len(argv) == 3 and argv[0] == "client":
        return client(Path(argv[1]), int(argv[2]))
    raise SystemExit(__doc__)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
