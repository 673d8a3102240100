"""One measured run of the peer benchmark, in a fresh process; prints one JSON line.

Usage::

    python benchmarks/peers/_child.py ADAPTER MODE N ENDPOINT_BASE [--events PATH]
        [--deadline S] [--stall S]

Steps: import the adapter and ``make()`` it (``NotImplementedError`` -> prints
``{"unsupported": ...}``); load the ``N`` events (``--events``: ``(type, pickled data)``
pairs written by ``run.py``, else generated here); start an RSS sampler thread
(``/proc/self/statm`` every 5 ms); then, timed: ``emit()`` every event back to back
(``perf_counter_ns`` around each call), ``finish(timeout)`` (in a helper thread, so an SDK
that ignores its timeout cannot hang the run), then poll the sink's ``GET
/<run-id>/stats`` until it counted ``N`` distinct markers, or made no progress for
``--stall`` seconds (1.5 s once ``finish`` returned without error), or the ``--deadline``
(from the first emit) passed. ``--probe`` only ``make()`` s the adapter and prints its
version and notes.

The events' dicts are built (unpickled) 1,000 at a time just before they are emitted and
the harness drops its references right after: an SDK that keeps the caller's objects
alive in its queue pays for them in RSS, as it would in an app, instead of holding
objects the benchmark keeps alive anyway.

Client CPU is ``getrusage(RUSAGE_SELF)`` user+sys (every thread, exited ones included)
from just before the first emit until the last event was confirmed, minus the harness's
own work over that window, each by its thread CPU clock: building the dicts, the RSS
sampler, polling the sink. RSS increase is the sampled peak minus the RSS just before the
first emit (the SDK initialised, the events loaded); ``maxrss_increase_mb`` is the growth
of ``ru_maxrss`` over the same window, a lower bound the 5 ms sampling cannot miss.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import http.client
import json
import os
import pickle
import resource
import sys
import threading
import time
import urllib.parse
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import adapters  # noqa: E402 - after the path tweak
from workload import MARKER_FIELD, make_events  # noqa: E402

RSS_PERIOD_S = 0.005
POLL_S = 0.02
DEADLINE_S = 120.0
STALL_S = 5.0
FINISHED_STALL_S = 1.5
CHUNK = 1000  # events built per step of the emit loop (and between deadline checks)


class RssSampler(threading.Thread):
    """Peak resident set size, read from ``/proc/self/statm`` every few ms."""

    def __init__(self) -> None:
        super().__init__(name="bench-rss-sampler", daemon=True)
        self._stop_evt = threading.Event()
        self._page = os.sysconf("SC_PAGE_SIZE")
        self._fd = os.open("/proc/self/statm", os.O_RDONLY)
        self.peak = 0
        self.samples = 0
        self.cpu_s = 0.0

    def read(self) -> int:
        return int(os.pread(self._fd, 256, 0).split()[1]) * self._page

    def run(self) -> None:
        while not self._stop_evt.is_set():
            self.peak = max(self.peak, self.read())
            self.samples += 1
            self._stop_evt.wait(RSS_PERIOD_S)
        self.cpu_s = time.thread_time()

    def stop(self) -> int:
        self._stop_evt.set()
        self.join(5.0)
        self.peak = max(self.peak, self.read())
        os.close(self._fd)
        return self.peak


class SinkPoller:
    """Reads the sink's counters for one run over a kept-alive loopback connection."""

    def __init__(self, endpoint_base: str) -> None:
        parts = urllib.parse.urlsplit(endpoint_base)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.run_path = parts.path.rstrip("/")
        self.conn: http.client.HTTPConnection | None = None

    def _request(self, method: str, path: str) -> dict[str, Any]:
        for attempt in range(3):
            try:
                if self.conn is None:
                    self.conn = http.client.HTTPConnection(self.host, self.port, timeout=10)
                self.conn.request(method, path)
                resp = self.conn.getresponse()
                body = resp.read()
                if resp.status != 200:
                    raise OSError(f"sink answered {resp.status}")
                return dict(json.loads(body or b"{}"))
            except (OSError, http.client.HTTPException):
                self.close()
                if attempt == 2:
                    raise
                time.sleep(0.05)
        raise AssertionError("unreachable")

    def stats(self) -> dict[str, Any]:
        return self._request("GET", f"{self.run_path}/stats")

    def forget(self) -> None:
        with contextlib.suppress(OSError, http.client.HTTPException, ValueError):
            self._request("DELETE", self.run_path)

    def wait(self, n: int, deadline: float, stall_s: float) -> tuple[dict[str, Any], str]:
        """Poll until ``n`` delivered, no progress for ``stall_s``, or the deadline."""
        last_key: tuple[int, int, int] | None = None
        last_change = time.monotonic()
        while True:
            stats = self.stats()
            now = time.monotonic()
            if stats["delivered"] >= n:
                return stats, "all delivered"
            key = (stats["delivered"], stats["requests"], stats["queued"])
            if key != last_key:
                last_key, last_change = key, now
            elif stats["queued"] == 0 and now - last_change >= stall_s:
                return stats, f"no progress for {stall_s:g} s"
            if now >= deadline:
                return stats, "deadline"
            time.sleep(POLL_S)

    def close(self) -> None:
        if self.conn is not None:
            with contextlib.suppress(Exception):
                self.conn.close()
            self.conn = None


def _cpu_s() -> tuple[float, float]:
    u = resource.getrusage(resource.RUSAGE_SELF)
    return u.ru_utime, u.ru_stime


def _rss_now() -> int:
    with open("/proc/self/statm", "rb") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _maxrss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def _percentiles(lat: list[int]) -> dict[str, float]:
    s = sorted(lat)
    n = len(s)
    if n == 0:
        return {}

    def at(q: float) -> float:
        return s[min(n - 1, round(q * (n - 1)))] / 1000.0

    return {
        "p50_us": at(0.50),
        "p90_us": at(0.90),
        "p99_us": at(0.99),
        "p999_us": at(0.999),
        "max_us": s[-1] / 1000.0,
        "mean_us": sum(s) / n / 1000.0,
        "over_1ms": sum(1 for x in s if x > 1_000_000),
        "over_5ms": sum(1 for x in s if x > 5_000_000),
    }


def _timer_overhead_ns() -> int:
    pc = time.perf_counter_ns
    samples = []
    for _ in range(2000):
        t0 = pc()
        samples.append(pc() - t0)
    return sorted(samples)[len(samples) // 2]


def _load_events(path: str | None, n: int) -> list[tuple[str, bytes]]:
    """``(event_type, pickled data)`` pairs: each ``data`` is built fresh just before its emit."""
    if path is None:
        events = [(t, pickle.dumps(d, pickle.HIGHEST_PROTOCOL)) for t, d in make_events(n)]
    else:
        with open(path, "rb") as f:
            events = pickle.load(f)  # noqa: S301 - run.py's own file
    if len(events) < n:
        raise SystemExit(f"{path} holds {len(events)} events, fewer than N={n}")
    return events[:n]


def _finish_in_thread(adapter: Any, timeout: float) -> dict[str, Any]:
    """``adapter.finish(timeout)``, waited for at most ``timeout`` + 5 s."""
    out: dict[str, Any] = {"ok": False, "error": None}

    def target() -> None:
        try:
            adapter.finish(timeout)
            out["ok"] = True
        except BaseException as exc:
            out["error"] = f"{type(exc).__name__}: {exc}"

    t = threading.Thread(target=target, name="bench-finish", daemon=True)
    t0 = time.perf_counter()
    t.start()
    t.join(timeout + 5.0)
    out["returned"] = not t.is_alive()
    out["s"] = time.perf_counter() - t0
    return out


def run(
    name: str,
    mode: str,
    n: int,
    endpoint_base: str,
    events_path: str | None,
    deadline_s: float,
    stall_s: float,
) -> dict[str, Any]:
    rss_start = _rss_now()
    t_import = time.perf_counter()
    module = adapters.load(name)
    import_s = time.perf_counter() - t_import
    try:
        adapter = module.make(endpoint_base, mode, MARKER_FIELD)
    except NotImplementedError as exc:
        return {"adapter": name, "mode": mode, "n": n, "unsupported": str(exc) or "no such mode"}
    rss_sdk = _rss_now()

    events = _load_events(events_path, n)
    gc.collect()
    gc.freeze()  # the workload's objects are not the SDK's garbage to scan
    poller = SinkPoller(endpoint_base)
    sink0 = poller.stats()
    time.sleep(0.1)  # let the SDK's threads settle into their idle waits
    lat = [0] * n
    emit = adapter.emit
    pc = time.perf_counter_ns
    emit_errors = 0
    first_error = None

    sampler = RssSampler()
    rss_before = sampler.read()
    maxrss_before = _maxrss()
    sampler.start()
    u0, s0 = _cpu_s()
    t0_unix = time.time()
    t0 = time.perf_counter()
    deadline = time.monotonic() + deadline_s
    sent = n
    materialize_cpu = 0.0
    loads, tt = pickle.loads, time.thread_time
    for start in range(0, n, CHUNK):
        # Build this chunk's dicts now, off the emit timer (CPU measured and subtracted), so
        # an SDK that keeps the caller's objects alive pays for them in RSS, as in an app.
        c0 = tt()
        chunk = [(etype, loads(blob)) for etype, blob in events[start : start + CHUNK]]
        materialize_cpu += tt() - c0
        for j, (etype, data) in enumerate(chunk):
            t = pc()
            try:
                emit(etype, data)
            except Exception as exc:
                emit_errors += 1
                first_error = first_error or f"{type(exc).__name__}: {exc}"
            lat[start + j] = pc() - t
        del chunk, data
        if time.monotonic() >= deadline:
            sent = min(start + CHUNK, n)
            break
    t_emitted = time.perf_counter()
    threads_after_emit = threading.active_count()
    finish = _finish_in_thread(adapter, max(5.0, deadline - time.monotonic()))
    t_finished = time.perf_counter()
    poll_cpu0 = time.thread_time()
    # An SDK that says it finished gets less patience than one that timed out or raised.
    patience = min(stall_s, FINISHED_STALL_S) if finish["ok"] else stall_s
    sink, stop_reason = poller.wait(sent, max(deadline, time.monotonic() + 1.0), patience)
    poll_cpu = time.thread_time() - poll_cpu0
    u1, s1 = _cpu_s()
    t_done = time.perf_counter()
    rss_peak = sampler.stop()
    maxrss_after = _maxrss()
    poller.forget()
    poller.close()

    delivered = min(sent, int(sink["delivered"]) - int(sink0.get("delivered", 0)))
    harness_cpu = sampler.cpu_s + poll_cpu + materialize_cpu
    cpu_s = (u1 - u0) + (s1 - s0) - harness_cpu
    last_new = float(sink["last_new_unix"] or 0.0)
    delivery_s = (last_new - t0_unix) if delivered and last_new else None
    return {
        "adapter": name,
        "mode": mode,
        "n": n,
        "sent": sent,
        "delivered": delivered,
        "lost": sent - delivered,
        "sdk_name": getattr(adapter, "name", name),
        "version": str(getattr(adapter, "version", "?")),
        "notes": str(getattr(adapter, "notes", "")),
        "emit": _percentiles(lat[:sent]),
        "emit_errors": emit_errors,
        "first_emit_error": first_error,
        "timer_overhead_ns": _timer_overhead_ns(),
        "emit_phase_s": t_emitted - t0,
        "finish": finish,
        "finish_phase_s": t_finished - t_emitted,
        "wall_s": t_done - t0,
        "delivery_s": delivery_s,
        "events_per_s": delivered / delivery_s if delivery_s else 0.0,
        "stop_reason": stop_reason,
        "cpu_s": cpu_s,
        "cpu_user_s": u1 - u0,
        "cpu_sys_s": s1 - s0,
        "harness_cpu_s": harness_cpu,
        "materialize_cpu_s": materialize_cpu,
        "cpu_us_per_delivered": cpu_s / delivered * 1e6 if delivered else None,
        "wire_bytes": sink["wire_bytes"] - sink0.get("wire_bytes", 0),
        "wire_bytes_per_delivered": (
            (sink["wire_bytes"] - sink0.get("wire_bytes", 0)) / delivered if delivered else None
        ),
        "sink": {k: v for k, v in sink.items() if k not in ("sink_cpu_s", "sink_decoder_cpu_s")},
        "sink_cpu_s": sink["sink_cpu_s"] - sink0["sink_cpu_s"],
        "rss_start_mb": rss_start / 2**20,
        "rss_sdk_init_mb": (rss_sdk - rss_start) / 2**20,
        "rss_before_mb": rss_before / 2**20,
        "rss_peak_mb": rss_peak / 2**20,
        "rss_increase_mb": (rss_peak - rss_before) / 2**20,
        "maxrss_increase_mb": max(0, maxrss_after - maxrss_before) / 2**20,
        "rss_samples": sampler.samples,
        "threads_after_emit": threads_after_emit,
        "import_s": import_s,
    }


def probe(name: str, mode: str, endpoint_base: str) -> dict[str, Any]:
    """``make()`` only: the adapter's version and notes, or why the mode is unsupported."""
    module = adapters.load(name)
    try:
        adapter = module.make(endpoint_base, mode, MARKER_FIELD)
    except NotImplementedError as exc:
        return {"adapter": name, "mode": mode, "unsupported": str(exc) or "no such mode"}
    out: dict[str, Any] = {
        "adapter": name,
        "mode": mode,
        "version": str(getattr(adapter, "version", "?")),
        "notes": str(getattr(adapter, "notes", "")),
    }
    out["finish"] = _finish_in_thread(adapter, 2.0)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("adapter", choices=sorted(adapters.ADAPTERS))
    ap.add_argument("mode", choices=adapters.MODES)
    ap.add_argument("n", type=int)
    ap.add_argument("endpoint_base", help="http://127.0.0.1:<port>/<run-id>")
    ap.add_argument("--events", help="pickled workload written by run.py (default: generate)")
    ap.add_argument("--deadline", type=float, default=DEADLINE_S, help="s from the first emit")
    ap.add_argument("--stall", type=float, default=STALL_S, help="s without sink progress")
    ap.add_argument("--probe", action="store_true", help="make() only: print version and notes")
    args = ap.parse_args(argv)
    if args.probe:
        sys.stdout.write(json.dumps(probe(args.adapter, args.mode, args.endpoint_base)) + "\n")
        sys.stdout.flush()
        os._exit(0)
    result = run(
        args.adapter,
        args.mode,
        args.n,
        args.endpoint_base.rstrip("/"),
        args.events,
        args.deadline,
        args.stall,
    )
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()
    # An SDK's non-daemon threads (or an atexit flush) must not keep a finished run alive.
    os._exit(0)


if __name__ == "__main__":
    raise SystemExit(main())
