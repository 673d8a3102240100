"""Emit-path benchmark: telemetry-client vs a naive in-line baseline, same run, same events.

Usage::

    python benchmarks/emit.py [--quick] [--json PATH]

Measures, for both implementations:

* ``emit()`` cost per call (p50/p99/p99.9/max, µs), timed with ``perf_counter_ns`` around
  each call from inside an asyncio loop, in two regimes: *paced* (bursts of 50 events,
  then ``await asyncio.sleep(0.005)``) and *burst* (every event back to back);
* sustained events/s of the burst: first emit until ``flush_sync()`` returned;
* compression: raw JSONL bytes (the spooled batches, decompressed) / bytes on disk, and
  the same stream compressed by zstd level 3 as one frame, for comparison;
* peak RSS growth during the burst (a sampler thread reads ``/proc/self/statm`` every
  ~1 ms; growth = peak minus the value just before the first emit);
* loss: emitted vs spooled (``stats()``, ``Spool.pending()``) and the distinct
  ``marker`` values actually found on disk.

Every (regime, implementation) pair runs in a fresh subprocess (``--child``) so RSS, heap
and GIL effects don't leak between measurements. Events come from
``benchmarks/workload.py`` and are generated before timing; the generated objects are
moved out of the garbage collector's reach (``gc.freeze()``) so their scan is not charged
to whichever ``emit()`` happens to trigger a collection (same for both implementations).

The baseline is what a hand-rolled logger does on the caller's thread: ``json.dumps`` per
event into a list; every 1000 events, gzip (default level 9) the newline-joined batch and
write it to a new file (open/write/close, no fsync). Its per-emit latency includes the
occasional batch write: that is the point. The client runs with default settings
(``fsync="batch"``: every sealed batch is fsync'ed).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import gzip
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import zstandard
from _machine import loadavg, machine_info
from workload import make_events, mean_json_size

from telemetry_client import TelemetryClient, TelemetrySettings

SEED = 1234
PACED_N, BURST_N = 20_000, 100_000
QUICK_PACED_N, QUICK_BURST_N = 2_000, 5_000
PACE_EVENTS, PACE_SLEEP_S = 50, 0.005
NAIVE_BATCH = 1000
RSS_PERIOD_S = 0.001
CHILD_TIMEOUT_S = 300
IMPLS = ("telemetry-client", "baseline")
REGIMES = ("paced", "burst")

Emit = Callable[[str, dict[str, Any]], None]


# --- the two implementations --------------------------------------------------------------


class ClientSink:
    """telemetry-client with default settings, spooling into ``root``."""

    name = "telemetry-client"

    def __init__(self, root: Path) -> None:
        self.settings = TelemetrySettings(spool_dir=root / "spool", endpoint=None)
        self.client = TelemetryClient(self.settings)
        if not self.client.enabled:
            raise SystemExit("telemetry is disabled (TELEMETRY_ENABLED / DO_NOT_TRACK): unset it")
        self.client.start()
        ready = root / "spool" / "batches"
        deadline = time.monotonic() + 5.0
        while not ready.is_dir() and time.monotonic() < deadline:
            time.sleep(0.01)  # the writer thread opens the spool
        self.emit: Emit = self.client.emit

    def flush(self) -> dict[str, Any]:
        r = self.client.flush_sync(timeout=CHILD_TIMEOUT_S)
        return {"ok": r.ok, "pending_events": r.pending_events}

    def collect(self) -> dict[str, Any]:
        stats = self.client.stats()
        pending = self.client.spool.pending()
        batches = list(self.client.spool.iter_batches_newest_first())
        batches.reverse()  # oldest first: the order they were written
        out = _read_back([raw for _, raw in batches], sum(n.n_bytes for n, _ in batches))
        out.update(
            emitted=stats["emitted"],
            spooled=stats["spooled"],
            dropped=stats["dropped"],
            spool_pending_events=pending.events,
            spool_pending_bytes=pending.bytes,
            batches=pending.batches,
            backpressure_handoffs=stats.get("backpressure_handoffs", 0),
            redacted=stats.get("redacted", 0),
        )
        self.client.close()
        return out


class NaiveSink:
    """The baseline: json.dumps per event; gzip + write a file per 1000 events, all inline."""

    name = "baseline"

    def __init__(self, root: Path) -> None:
        self.dir = root / "naive"
        self.dir.mkdir()
        self.lines: list[str] = []
        self.seq = 0
        self.files = 0
        self.emit: Emit = self._emit

    def _emit(self, etype: str, data: dict[str, Any]) -> None:
        self.seq += 1
        self.lines.append(
            json.dumps({"type": etype, "ts": time.time(), "seq": self.seq, "data": data})
        )
        if len(self.lines) >= NAIVE_BATCH:
            self._write()

    def _write(self) -> None:
        body = gzip.compress(("\n".join(self.lines) + "\n").encode())
        self.files += 1
        with open(self.dir / f"{self.files:08d}.jsonl.gz", "wb") as f:
            f.write(body)
        self.lines = []

    def flush(self) -> dict[str, Any]:
        if self.lines:
            self._write()
        return {"ok": True, "pending_events": 0}

    def collect(self) -> dict[str, Any]:
        paths = sorted(self.dir.iterdir())
        raws = [gzip.decompress(p.read_bytes()) for p in paths]
        out = _read_back(raws, sum(p.stat().st_size for p in paths))
        spooled = sum(raw.count(b"\n") for raw in raws)
        out.update(
            emitted=self.seq,
            spooled=spooled,
            dropped=0,
            spool_pending_events=spooled,
            spool_pending_bytes=out["stored_bytes"],
            batches=len(paths),
        )
        return out


def _read_back(raws: list[bytes], stored: int) -> dict[str, Any]:
    """Raw size, stored size, zstd-3 of the whole stream (one frame), distinct markers."""
    cobj = zstandard.ZstdCompressor(level=3).compressobj()
    whole = sum(len(cobj.compress(raw)) for raw in raws) + len(cobj.flush())
    markers: set[int] = set()
    lines = 0
    for raw in raws:
        for line in raw.splitlines():
            lines += 1
            data = orjson.loads(line).get("data")
            if isinstance(data, dict) and isinstance(data.get("marker"), int):
                markers.add(data["marker"])
    raw_bytes = sum(len(r) for r in raws)
    return {
        "raw_bytes": raw_bytes,
        "stored_bytes": stored,
        "zstd3_whole_bytes": whole,
        "lines": lines,
        "markers_found": len(markers),
    }


# --- measuring ------------------------------------------------------------------------------


class RssSampler(threading.Thread):
    """Samples this process's RSS every ~1 ms; keeps the peak."""

    def __init__(self) -> None:
        super().__init__(name="rss-sampler", daemon=True)
        self._stop_evt = threading.Event()
        self._page = os.sysconf("SC_PAGE_SIZE")
        try:
            self._fd: int | None = os.open("/proc/self/statm", os.O_RDONLY)
        except OSError:
            self._fd = None
        self.peak = self.read()
        self.samples = 0

    def read(self) -> int:
        if self._fd is not None:
            return int(os.pread(self._fd, 128, 0).split()[1]) * self._page
        import psutil

        return int(psutil.Process().memory_info().rss)

    def run(self) -> None:
        while not self._stop_evt.is_set():
            rss = self.read()
            self.samples += 1
            self.peak = max(rss, self.peak)
            time.sleep(RSS_PERIOD_S)

    def stop(self) -> int:
        self._stop_evt.set()
        self.join()
        if self._fd is not None:
            os.close(self._fd)
        return self.peak


async def _drive(
    emit: Emit, events: list[tuple[str, dict[str, Any]]], lat: list[int], paced: bool
) -> tuple[int, int]:
    """Emit everything, timing each call; returns (first emit start, last emit end) in ns."""
    pc = time.perf_counter_ns
    n = len(events)
    step = PACE_EVENTS if paced else n
    t_start = pc()
    for start in range(0, n, step):
        for i in range(start, min(start + step, n)):
            etype, data = events[i]
            t0 = pc()
            emit(etype, data)
            lat[i] = pc() - t0
        if paced:
            await asyncio.sleep(PACE_SLEEP_S)
    return t_start, pc()


def _percentiles(lat: list[int]) -> dict[str, float]:
    s = sorted(lat)
    n = len(s)

    def at(q: float) -> float:
        return s[min(n - 1, round(q * (n - 1)))] / 1000.0

    return {
        "p50_us": at(0.50),
        "p99_us": at(0.99),
        "p999_us": at(0.999),
        "max_us": s[-1] / 1000.0,
        "mean_us": sum(s) / n / 1000.0,
        "over_1ms": sum(1 for x in s if x > 1_000_000),
    }


def _timer_overhead_ns() -> int:
    pc = time.perf_counter_ns
    samples = []
    for _ in range(2000):
        t0 = pc()
        samples.append(pc() - t0)
    return sorted(samples)[len(samples) // 2]


def run_child(regime: str, impl: str, n: int) -> dict[str, Any]:
    t0 = time.perf_counter()
    events = make_events(n, SEED)
    gen_s = time.perf_counter() - t0
    mean_size = mean_json_size(events)
    gc.collect()
    gc.freeze()
    root = Path(tempfile.mkdtemp(prefix="tc-bench-"))
    try:
        sink: ClientSink | NaiveSink = ClientSink(root) if impl == IMPLS[0] else NaiveSink(root)
        lat = [0] * n
        sampler = RssSampler()
        rss_before = sampler.read()
        sampler.start()
        paced = regime == "paced"
        t_start, t_emitted = asyncio.run(_drive(sink.emit, events, lat, paced))
        flush = sink.flush()
        t_flushed = time.perf_counter_ns()
        rss_peak = sampler.stop()
        result: dict[str, Any] = {
            "regime": regime,
            "impl": impl,
            "n": n,
            "generate_s": gen_s,
            "mean_json_bytes": mean_size,
            "timer_overhead_ns": _timer_overhead_ns(),
            "emit": _percentiles(lat),
            "emit_phase_s": (t_emitted - t_start) / 1e9,
            "flush_s": (t_flushed - t_emitted) / 1e9,
            "wall_s": (t_flushed - t_start) / 1e9,
            "flush": flush,
            "rss_before_mb": rss_before / 2**20,
            "rss_peak_mb": rss_peak / 2**20,
            "rss_growth_mb": (rss_peak - rss_before) / 2**20,
            "rss_samples": sampler.samples,
        }
        result["events_per_s"] = n / result["wall_s"]
        result["emit_phase_events_per_s"] = n / result["emit_phase_s"]
        result.update(sink.collect())
        return result
    finally:
        shutil.rmtree(root, ignore_errors=True)


def spawn(regime: str, impl: str, n: int) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--child", regime, impl, "--n", str(n)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=CHILD_TIMEOUT_S, check=False)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr)
        raise SystemExit(f"child {regime}/{impl} failed with exit code {proc.returncode}")
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


# --- machine info and report ----------------------------------------------------------------


def _fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if unit == "µs":
        return f"{value:,.2f} µs" if value < 100 else f"{value:,.0f} µs"
    if unit == "ev/s":
        return f"{value:,.0f} ev/s"
    if unit == "ms":
        return f"{value:,.1f} ms"
    if unit == "MB":
        return f"{value:,.1f} MB"
    if unit == "x":
        return f"{value:.2f}x"
    if unit == "%":
        return f"{value:+.1f}%"
    if unit == "B":
        return f"{value:,.0f} B"
    return f"{value:,.0f}"


def _ratio(a: float | None, b: float | None) -> str:
    if a is None or b is None or b == 0:
        return "-"
    return f"{a / b:.3g}"


def report(results: dict[str, dict[str, dict[str, Any]]], info: dict[str, Any]) -> dict[str, Any]:
    tc, base = results["telemetry-client"], results["baseline"]

    def vs_zstd(r: dict[str, Any]) -> float:
        return (r["stored_bytes"] / r["zstd3_whole_bytes"] - 1.0) * 100.0

    def lost(r: dict[str, Any]) -> int:
        return int(r["n"] - r["markers_found"])

    rows: list[tuple[str, str, Callable[[dict[str, dict[str, Any]]], float]]] = []
    for regime in REGIMES:
        for key, label in (
            ("p50_us", "p50"),
            ("p99_us", "p99"),
            ("p999_us", "p99.9"),
            ("max_us", "max"),
        ):
            rows.append(
                (f"emit {label} ({regime})", "µs", lambda r, reg=regime, k=key: r[reg]["emit"][k])
            )
    rows += [
        ("emit calls > 1 ms (burst)", "", lambda r: r["burst"]["emit"]["over_1ms"]),
        (
            "caller emit rate (burst, emits only)",
            "ev/s",
            lambda r: r["burst"]["emit_phase_events_per_s"],
        ),
        ("flush after last emit (burst)", "ms", lambda r: r["burst"]["flush_s"] * 1e3),
        ("sustained: first emit -> flushed (burst)", "ev/s", lambda r: r["burst"]["events_per_s"]),
        ("raw JSONL per event (burst)", "B", lambda r: r["burst"]["raw_bytes"] / r["burst"]["n"]),
        ("stored per event (burst)", "B", lambda r: r["burst"]["stored_bytes"] / r["burst"]["n"]),
        (
            "compression ratio raw/stored",
            "x",
            lambda r: r["burst"]["raw_bytes"] / r["burst"]["stored_bytes"],
        ),
        (
            "zstd-3 whole stream ratio (same raw)",
            "x",
            lambda r: r["burst"]["raw_bytes"] / r["burst"]["zstd3_whole_bytes"],
        ),
        ("stored vs zstd-3 whole stream", "%", lambda r: vs_zstd(r["burst"])),
        ("peak RSS growth (burst)", "MB", lambda r: r["burst"]["rss_growth_mb"]),
        ("emitted (burst)", "", lambda r: r["burst"]["emitted"]),
        ("spooled (stats / files)", "", lambda r: r["burst"]["spooled"]),
        ("spool pending().events", "", lambda r: r["burst"]["spool_pending_events"]),
        ("dropped (stats)", "", lambda r: r["burst"]["dropped"]),
        ("distinct markers on disk (burst)", "", lambda r: r["burst"]["markers_found"]),
        ("lost (burst)", "", lambda r: lost(r["burst"])),
        ("lost (paced)", "", lambda r: lost(r["paced"])),
    ]

    w0 = max(len(label) for label, _, _ in rows) + 2
    header = f"{'metric':<{w0}}| {'telemetry-client':>18} | {'baseline':>18} | {'tc/baseline':>11}"
    lines = [header, "-" * len(header)]
    table: list[dict[str, Any]] = []
    for label, unit, get in rows:
        a, b = float(get(tc)), float(get(base))
        lines.append(
            f"{label:<{w0}}| {_fmt(a, unit):>18} | {_fmt(b, unit):>18} | {_ratio(a, b):>11}"
        )
        table.append({"metric": label, "unit": unit, "telemetry_client": a, "baseline": b})

    def targets_for(r: dict[str, dict[str, Any]]) -> list[tuple[str, str, bool]]:
        out = []
        for regime in REGIMES:
            e = r[regime]["emit"]
            out += [
                (f"emit p50 <= 3 µs ({regime})", _fmt(e["p50_us"], "µs"), e["p50_us"] <= 3),
                (f"emit p99 <= 20 µs ({regime})", _fmt(e["p99_us"], "µs"), e["p99_us"] <= 20),
                (f"emit max <= 5 ms ({regime})", _fmt(e["max_us"], "µs"), e["max_us"] <= 5000),
            ]
        b = r["burst"]
        out += [
            (
                "sustained >= 50,000 events/s",
                _fmt(b["events_per_s"], "ev/s"),
                b["events_per_s"] >= 50_000,
            ),
            (
                "compression within 5% of zstd-3 whole stream",
                _fmt(vs_zstd(b), "%"),
                vs_zstd(b) <= 5.0,
            ),
            (f"burst of {b['n']:,} loses nothing", f"{lost(b)} lost", lost(b) == 0),
            ("burst RSS growth <= 40 MB", _fmt(b["rss_growth_mb"], "MB"), b["rss_growth_mb"] <= 40),
        ]
        return out

    t_tc, t_base = targets_for(tc), targets_for(base)
    wt = max(len(name) for name, _, _ in t_tc) + 2
    tlines = [f"{'target':<{wt}}| {'telemetry-client':>24} | {'baseline':>24}", "-" * (wt + 54)]
    for (name, va, oka), (_, vb, okb) in zip(t_tc, t_base, strict=True):
        sa = f"{'PASS' if oka else 'FAIL'} {va}"
        sb = f"{'PASS' if okb else 'FAIL'} {vb}"
        tlines.append(f"{name:<{wt}}| {sa:>24} | {sb:>24}")
    print("\n".join(lines))
    print()
    print("\n".join(tlines))
    passed = sum(ok for _, _, ok in t_tc)
    print(f"\ntelemetry-client: {passed}/{len(t_tc)} targets met")
    return {
        "machine": info,
        "table": table,
        "targets": [{"target": n, "value": v, "pass": ok} for n, v, ok in t_tc],
        "baseline_targets": [{"target": n, "value": v, "pass": ok} for n, v, ok in t_base],
        "runs": results,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small N: a smoke run")
    ap.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    ap.add_argument("--child", nargs=2, metavar=("REGIME", "IMPL"), help=argparse.SUPPRESS)
    ap.add_argument("--n", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.child:
        regime, impl = args.child
        print(json.dumps(run_child(regime, impl, args.n)))
        return 0

    started = time.perf_counter()
    info = machine_info(("telemetry-client", "orjson", "zstandard", "psutil"))
    sizes = {"paced": QUICK_PACED_N if args.quick else PACED_N}
    sizes["burst"] = QUICK_BURST_N if args.quick else BURST_N
    # What ClientSink will get: defaults, unless TELEMETRY_* variables override them.
    used = TelemetrySettings(spool_dir=Path(tempfile.gettempdir()), endpoint=None)
    overrides = sorted(k for k in os.environ if k.startswith("TELEMETRY_") or k == "DO_NOT_TRACK")
    print("telemetry-client emit benchmark" + (" (--quick)" if args.quick else ""))
    print(f"  cpu:      {info['cpu']} ({info['cores']} cores, {info['usable_cores']} usable)")
    print(f"  python:   {info['python']} on {info['platform']}")
    print("  packages: " + ", ".join(f"{k} {v}" for k, v in info["packages"].items()))
    print(f"  spool fs: {info['tmp_fs']}")
    print(f"  load avg: {info['loadavg_start']} (1/5/15 min) at start")
    print(
        f"  client:   {'settings' if overrides else 'default settings'}:"
        f" batch_max_events={used.batch_max_events}, batch_max_bytes={used.batch_max_bytes},"
        f" linger_ms={used.linger_ms}, buffer_max_events={used.buffer_max_events},"
        f" fsync={used.fsync}, redact={used.redact}"
    )
    if overrides:
        print(f"  WARNING:  not default settings, environment sets {', '.join(overrides)}")
    print(
        f"  baseline: json.dumps per emit; gzip level 9 + new file per {NAIVE_BATCH} events,"
        " inline, no fsync"
    )
    print(
        f"  regimes:  paced = {sizes['paced']:,} events, {PACE_EVENTS} per burst then"
        f" asyncio.sleep({PACE_SLEEP_S}); burst = {sizes['burst']:,} events back to back"
    )
    print("  each (regime, implementation) runs in a fresh subprocess\n")

    results: dict[str, dict[str, dict[str, Any]]] = {impl: {} for impl in IMPLS}
    for regime in REGIMES:
        for impl in IMPLS:
            t0 = time.perf_counter()
            r = spawn(regime, impl, sizes[regime])
            results[impl][regime] = r
            print(
                f"  ran {regime:<5} {impl:<16} in {time.perf_counter() - t0:5.1f} s"
                f" (workload generated in {r['generate_s']:.1f} s; emit timer overhead"
                f" {r['timer_overhead_ns']} ns, included in the figures)"
            )
    burst = results[IMPLS[0]]["burst"]
    print(
        f"\nworkload: seed {SEED}, measured mean JSON size {burst['mean_json_bytes']:,.0f} B"
        f" per event ({{type, data}}, compact; first {burst['n']:,} events);"
        f" client JSONL incl. envelope {burst['raw_bytes'] / burst['n']:,.0f} B\n"
    )
    info["loadavg_end"] = loadavg()
    out = report(results, info)
    out["sizes"] = sizes
    out["elapsed_s"] = time.perf_counter() - started
    print(f"total benchmark time {out['elapsed_s']:.0f} s; load avg at end {info['loadavg_end']}")
    if info["loadavg_start"] and info["loadavg_start"][0] > 0.5 * (info["cores"] or 1):
        print("NOTE: the machine was already busy when the run started; figures may be noisy")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
        print(f"results written to {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
