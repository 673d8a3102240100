"""Per-thread CPU of a burst into the spool (no endpoint): where the client's time goes.

Usage::

    python benchmarks/threads.py [N]      # default N = 100,000

Creates a client with default settings and no endpoint, emits N workload events back to
back (a ``dict`` copy each, as an app builds them), calls ``flush_sync()`` and prints the
CPU each thread used per event (psutil thread times: 10 ms resolution, so N >= 50,000),
events/s until flushed, the slowest ``emit()`` and RSS growth sampled every 2,000 emits.
The caller's figure includes this script's copy and timer (about 1.5 µs per event).
"""

from __future__ import annotations

import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil  # type: ignore[import-untyped]

sys.path.insert(0, str(Path(__file__).resolve().parent))
from workload import make_events

from telemetry_client import TelemetryClient, TelemetrySettings


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    events = make_events(n)
    root = tempfile.mkdtemp(prefix="tc-threads-")
    client = TelemetryClient(
        TelemetrySettings(spool_dir=os.path.join(root, "spool"), endpoint=None)
    )
    client.start()
    client.emit("warmup", {})
    client.flush_sync(timeout=30)
    proc = psutil.Process()
    names = {t.native_id: t.name for t in threading.enumerate()}
    before = {t.id: (t.user_time, t.system_time) for t in proc.threads()}
    rss0 = peak = proc.memory_info().rss
    worst = 0
    t0 = time.perf_counter()
    for i, (etype, data) in enumerate(events):
        start = time.perf_counter_ns()
        client.emit(etype, dict(data))
        worst = max(worst, time.perf_counter_ns() - start)
        if i % 2000 == 0:
            peak = max(peak, proc.memory_info().rss)
    result = client.flush_sync(timeout=300)
    elapsed = time.perf_counter() - t0
    peak = max(peak, proc.memory_info().rss)
    after = {t.id: (t.user_time, t.system_time) for t in proc.threads()}
    stats = client.stats()
    print(f"N={n:,}: {n / elapsed:,.0f} events/s until flushed (flush ok={result.ok})")
    print(
        f"worst emit {worst / 1e6:.2f} ms; RSS growth {(peak - rss0) / 2**20:.1f} MB;"
        f" spooled {stats['spooled']:,}; hand-offs {stats['backpressure_handoffs']:,}"
    )
    total_user = total_sys = 0.0
    for tid, (user, system) in sorted(after.items()):
        user0, sys0 = before.get(tid, (0.0, 0.0))
        du, ds = user - user0, system - sys0
        total_user += du
        total_sys += ds
        if du + ds > 0.005:
            name = names.get(tid, str(tid))
            print(f"  {name:28} user {du * 1e6 / n:6.2f}  sys {ds * 1e6 / n:6.2f} µs/event")
    total = (total_user + total_sys) * 1e6 / n
    print(
        f"  {'total':28} user {total_user * 1e6 / n:6.2f}  sys {total_sys * 1e6 / n:6.2f}"
        f"  = {total:.2f} µs/event"
    )
    client.close()


if __name__ == "__main__":
    main()
