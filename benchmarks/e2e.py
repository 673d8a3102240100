"""End-to-end benchmark: first ``emit()`` until the collector acknowledged the last event.

Usage::

    python benchmarks/e2e.py [--quick] [--json PATH] [--n N] [--reps R]
    python benchmarks/e2e.py --profile [VARIANT] [--n N]      # where the client's CPU goes

A minimal collector (``benchmarks/_sink.py``: ``http.server`` on 127.0.0.1, decodes
zstd/gzip/identity NDJSON or JSON arrays, counts events, unique ``Idempotency-Key`` s,
distinct ``marker`` values and wire bytes, stores nothing) runs in its own process for the
whole benchmark; its CPU is not counted. Each measured variant runs in a fresh child
process (``--child``), which emits ``N`` events of ``benchmarks/workload.py`` (generated
once by the parent, loaded by each child before timing, then ``gc.freeze()`` d) and waits
until the sink reports all ``N`` delivered. Variants:

* ``telemetry-client``: default settings (spool in a temp dir, ``fsync="batch"``, zstd on
  the wire), ``endpoint`` = the sink, a token set; ``emit()`` everything back to back,
  then ``flush_sync()`` (returns once every batch was acknowledged), then poll the sink;
* ``telemetry-client-gzip``: the same with ``TELEMETRY_UPLOAD_COMPRESSION=gzip``;
* ``baseline``: the naive logger, all on the caller's thread: per event a full envelope
  (uuid4 id, ISO timestamp, session/user/machine ids, app, seq, data) through
  ``json.dumps``; per 1000 events ``gzip.compress`` of the NDJSON at level 6 (zlib's
  default and the client's gzip level; ``--baseline-gzip-level 9`` for Python's
  ``gzip.compress`` default, ~50 µs/event more here) and one ``httpx.post`` (a new client
  per call, as the one-liner does). No disk.

Measured per child, from just before the first ``emit()`` until the sink confirmed the
last event: wall time, process CPU (``getrusage(RUSAGE_SELF)`` user+sys: every thread,
including the child's own polling of the sink, a few ms), CPU per thread
(``pthread_getcpuclockid``), wire bytes (request bodies the sink received) and the
decompressed NDJSON bytes. "raw JSON" is the baseline's uncompressed NDJSON per event:
the reference the wire-size target is stated against.

Three interleaved repetitions by default (variant order rotated each time), medians
reported; ratios are to the baseline's medians of the same run. No timing assertion: the
script prints PASS/MISS against the targets (client CPU <= 30 µs per delivered event;
wire bytes per event <= 1/3 of raw JSON) and writes JSON to ``benchmarks/results/e2e.json``.

``--profile`` runs one child with a CPU-time ``cProfile`` on every thread of the process
(``threading.setprofile`` installs one profiler per thread, timer ``time.thread_time``),
prints the top functions per thread and merged, in µs per delivered event, and writes the
merged ``.prof`` next to the JSON. Profiling roughly triples the CPU figure: read the
shares, not the totals.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import datetime as dt
import gc
import getpass
import gzip
import http.client
import json
import os
import pickle
import pstats
import resource
import select
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from _machine import loadavg, machine_info
from workload import make_events, mean_json_size

HERE = Path(__file__).resolve().parent
SINK_SCRIPT = HERE / "_sink.py"
DEFAULT_JSON = HERE / "results" / "e2e.json"
SEED = 1234
N_DEFAULT, N_QUICK = 100_000, 20_000
REPS = 3
NAIVE_BATCH = 1000
NAIVE_GZIP_LEVEL = 6
TOKEN = "e2e-bench-token"  # noqa: S105 - the sink checks nothing
VARIANTS = ("telemetry-client", "telemetry-client-gzip", "baseline")
CLIENT_VARIANTS = VARIANTS[:2]
SINK_READY_TIMEOUT_S = 15.0
DELIVERY_TIMEOUT_S = 180.0  # child: flush + waiting for the sink
CHILD_TIMEOUT_S = 420.0  # parent: a whole child, loading the events included
POLL_S = 0.005
TARGET_CPU_US = 30.0
TARGET_WIRE_RATIO = 1 / 3

# --- the child: one measured variant ------------------------------------------------------


class SinkPoller:
    """Reads the sink's counters for one run over a kept-alive loopback connection."""

    def __init__(self, port: int, run: str) -> None:
        self.port = port
        self.path = f"/r/{run}/stats"
        self.conn: http.client.HTTPConnection | None = None

    def get(self) -> dict[str, Any]:
        for attempt in range(3):
            try:
                if self.conn is None:
                    self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
                self.conn.request("GET", self.path)
                resp = self.conn.getresponse()
                body = resp.read()
                if resp.status != 200:
                    raise OSError(f"sink answered {resp.status}")
                return dict(json.loads(body))
            except (OSError, http.client.HTTPException):
                self.close()
                if attempt == 2:
                    raise
                time.sleep(0.05)
        raise AssertionError("unreachable")

    def wait_for(self, n: int, deadline: float) -> dict[str, Any]:
        """Poll until the sink counted ``n`` delivered events (or the deadline)."""
        while True:
            stats = self.get()
            if stats["events"] >= n or time.monotonic() >= deadline:
                return stats
            time.sleep(POLL_S)

    def close(self) -> None:
        if self.conn is not None:
            with contextlib.suppress(Exception):
                self.conn.close()
            self.conn = None


def _thread_cpu() -> dict[str, float]:
    """CPU seconds of every live thread of this process, by thread name."""
    out: dict[str, float] = {}
    for t in threading.enumerate():
        if t.ident is None:
            continue
        try:
            cpu = time.clock_gettime(time.pthread_getcpuclockid(t.ident))
        except (OSError, AttributeError, ValueError):
            continue
        out[t.name] = out.get(t.name, 0.0) + cpu
    return out


def _cpu() -> tuple[float, float]:
    u = resource.getrusage(resource.RUSAGE_SELF)
    return u.ru_utime, u.ru_stime


class ThreadProfiles:
    """One CPU-time cProfile per thread: threads started after ``install`` and the caller."""

    def __init__(self) -> None:
        self.profiles: list[tuple[str, cProfile.Profile]] = []
        self.main = cProfile.Profile(time.thread_time)

    def install(self) -> None:
        def start(frame: Any, event: str, arg: Any) -> None:
            sys.setprofile(None)
            prof = cProfile.Profile(time.thread_time)
            self.profiles.append((threading.current_thread().name, prof))
            prof.enable()

        threading.setprofile(start)

    def stats(self) -> list[tuple[str, pstats.Stats]]:
        """Call after the profiled threads ended (their hooks die with them)."""
        threading.setprofile(None)
        out = [("MainThread", pstats.Stats(self.main))]
        for name, prof in self.profiles:
            prof.create_stats()
            out.append((name, pstats.Stats(prof)))
        return out


def _run_client(
    variant: str,
    events: list[tuple[str, dict[str, Any]]],
    root: Path,
    endpoint: str,
    poller: SinkPoller,
    profiles: ThreadProfiles | None,
) -> dict[str, Any]:
    from telemetry_client import TelemetryClient, TelemetrySettings

    n = len(events)
    settings = TelemetrySettings(spool_dir=root / "spool", endpoint=endpoint, token=TOKEN)
    if variant == "telemetry-client-gzip" and settings.upload_compression != "gzip":
        raise SystemExit("TELEMETRY_UPLOAD_COMPRESSION=gzip did not reach the settings")
    client = TelemetryClient(settings)
    if not client.enabled:
        raise SystemExit("telemetry is disabled (TELEMETRY_ENABLED / DO_NOT_TRACK): unset it")
    if profiles is not None:
        profiles.install()
    client.start()
    ready = root / "spool" / "batches"
    deadline = time.monotonic() + 10.0
    while not ready.is_dir() and time.monotonic() < deadline:
        time.sleep(0.01)  # the writer thread opens the spool
    time.sleep(0.05)  # let the uploader's first (idle) step pass before timing
    emit = client.emit

    threads0 = _thread_cpu()
    u0, s0 = _cpu()
    t0 = time.perf_counter()
    if profiles is not None:
        profiles.main.enable()
    for etype, data in events:
        emit(etype, data)
    t_emitted = time.perf_counter()
    flush = client.flush_sync(timeout=DELIVERY_TIMEOUT_S)
    t_flushed = time.perf_counter()
    sink = poller.wait_for(n, time.monotonic() + max(5.0, DELIVERY_TIMEOUT_S - (t_flushed - t0)))
    t_done = time.perf_counter()
    if profiles is not None:
        profiles.main.disable()
    u1, s1 = _cpu()
    threads1 = _thread_cpu()

    stats = client.stats()
    close = client.close(timeout=10.0)
    pending_after = client.spool.pending()
    return {
        "wall_s": t_done - t0,
        "emit_phase_s": t_emitted - t0,
        "flush_s": t_flushed - t_emitted,
        "confirm_s": t_done - t_flushed,
        "cpu_user_s": u1 - u0,
        "cpu_sys_s": s1 - s0,
        "threads_cpu_s": {k: v - threads0.get(k, 0.0) for k, v in threads1.items()},
        "sink": sink,
        "flush": {"ok": flush.ok, "pending_events": flush.pending_events},
        "close": {"ok": close.ok, "pending_events": close.pending_events},
        "spool_pending_events_after_close": pending_after.events,
        "client_stats": {k: v for k, v in stats.items() if isinstance(v, (int, float))},
        "settings": {
            "batch_max_events": settings.batch_max_events,
            "batch_max_bytes": settings.batch_max_bytes,
            "linger_ms": settings.linger_ms,
            "fsync": settings.fsync,
            "redact": settings.redact,
            "upload_compression": settings.upload_compression,
        },
    }


def _run_baseline(
    events: list[tuple[str, dict[str, Any]]],
    endpoint: str,
    poller: SinkPoller,
    profiles: ThreadProfiles | None,
    gzip_level: int,
) -> dict[str, Any]:
    """The naive logger: json.dumps per event, gzip + one httpx.post per 1000, on the caller."""
    import httpx

    n = len(events)
    session_id = uuid.uuid4().hex
    try:
        user_id = getpass.getuser()
    except (KeyError, OSError):
        user_id = "unknown"
    machine_id = f"{uuid.getnode():012x}"
    tt = time.thread_time
    phase = {"gzip_s": 0.0, "post_s": 0.0}
    counts = {"posts": 0, "post_errors": 0, "raw_bytes": 0, "body_bytes": 0}
    lines: list[str] = []

    def post() -> None:
        c0 = tt()
        raw = ("\n".join(lines) + "\n").encode()
        body = gzip.compress(raw, compresslevel=gzip_level)
        c1 = tt()
        headers = {
            "Content-Type": "application/x-ndjson",
            "Content-Encoding": "gzip",
            "Authorization": f"Bearer {TOKEN}",
            "Idempotency-Key": uuid.uuid4().hex,
        }
        try:
            r = httpx.post(endpoint, content=body, headers=headers, timeout=30.0)
            ok = r.status_code == 200
        except httpx.HTTPError:
            ok = False
        c2 = tt()
        phase["gzip_s"] += c1 - c0
        phase["post_s"] += c2 - c1
        counts["posts"] += 1
        counts["post_errors"] += not ok
        counts["raw_bytes"] += len(raw)
        counts["body_bytes"] += len(body)
        lines.clear()

    utc = dt.timezone.utc
    now = dt.datetime.now
    dumps = json.dumps
    threads0 = _thread_cpu()
    u0, s0 = _cpu()
    c0 = tt()
    t0 = time.perf_counter()
    if profiles is not None:
        profiles.main.enable()
    for seq, (etype, data) in enumerate(events, 1):
        envelope = {
            "id": str(uuid.uuid4()),
            "type": etype,
            "ts": now(utc).isoformat(),
            "session_id": session_id,
            "user_id": user_id,
            "machine_id": machine_id,
            "app": "default",
            "app_version": None,
            "seq": seq,
            "data": data,
        }
        lines.append(dumps(envelope))
        if len(lines) >= NAIVE_BATCH:
            post()
    if lines:
        post()
    t_emitted = time.perf_counter()
    c1 = tt()
    sink = poller.wait_for(n, time.monotonic() + DELIVERY_TIMEOUT_S)
    t_done = time.perf_counter()
    if profiles is not None:
        profiles.main.disable()
    u1, s1 = _cpu()
    threads1 = _thread_cpu()
    caller = c1 - c0
    return {
        "wall_s": t_done - t0,
        "emit_phase_s": t_emitted - t0,
        "flush_s": 0.0,
        "confirm_s": t_done - t_emitted,
        "cpu_user_s": u1 - u0,
        "cpu_sys_s": s1 - s0,
        "threads_cpu_s": {k: v - threads0.get(k, 0.0) for k, v in threads1.items()},
        "sink": sink,
        "baseline_phases_cpu_s": {
            "serialise": caller - phase["gzip_s"] - phase["post_s"],
            "gzip": phase["gzip_s"],
            "post": phase["post_s"],
        },
        "baseline": counts,
    }


def run_child(
    variant: str,
    n: int,
    events_path: Path,
    port: int,
    run: str,
    profile: bool = False,
    gzip_level: int = NAIVE_GZIP_LEVEL,
) -> dict[str, Any]:
    t0 = time.perf_counter()
    with open(events_path, "rb") as f:
        events: list[tuple[str, dict[str, Any]]] = pickle.load(f)[:n]  # noqa: S301 - our own file
    load_s = time.perf_counter() - t0
    gc.collect()
    gc.freeze()  # the workload's objects are not the client's garbage to scan
    endpoint = f"http://127.0.0.1:{port}/r/{run}/api/v1/events"
    poller = SinkPoller(port, run)
    sink0 = poller.get()
    profiles = ThreadProfiles() if profile else None
    root = Path(tempfile.mkdtemp(prefix="tc-e2e-child-"))
    try:
        if variant in CLIENT_VARIANTS:
            result = _run_client(variant, events, root, endpoint, poller, profiles)
        elif variant == "baseline":
            result = _run_baseline(events, endpoint, poller, profiles, gzip_level)
        else:
            raise SystemExit(f"unknown variant {variant!r}")
    finally:
        poller.close()
        shutil.rmtree(root, ignore_errors=True)
    sink = result["sink"]
    result.update(
        variant=variant,
        n=n,
        sent=n,
        load_s=load_s,
        delivered=min(n, int(sink["distinct_markers"])),
        cpu_s=result["cpu_user_s"] + result["cpu_sys_s"],
        sink_cpu_s=float(sink["sink_cpu_s"]) - float(sink0["sink_cpu_s"]),
        maxrss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    )
    if profiles is not None:
        result["profile"] = _profile_report(profiles, result)
    return result


# --- profile report ---------------------------------------------------------------------


def _fn_name(key: tuple[str, int, str]) -> str:
    path, line, name = key
    if path == "~":
        return name
    parts = Path(path).parts
    if "telemetry_client" in parts:
        short = "/".join(parts[parts.index("telemetry_client") :])
    elif "site-packages" in parts:
        short = "/".join(parts[parts.index("site-packages") + 1 :])
    else:
        short = "/".join(parts[-2:])
    return f"{short}:{line}({name})"


def _top(st: pstats.Stats, delivered: int, k: int, by: str) -> list[dict[str, Any]]:
    raw: dict[tuple[str, int, str], tuple[int, int, float, float, Any]] = st.stats  # type: ignore[attr-defined]
    col = 2 if by == "tottime" else 3
    rows = sorted(raw.items(), key=lambda kv: kv[1][col], reverse=True)[:k]
    return [
        {
            "function": _fn_name(key),
            "calls": v[1],
            "self_us_per_event": v[2] / delivered * 1e6,
            "cum_us_per_event": v[3] / delivered * 1e6,
        }
        for key, v in rows
    ]


def _profile_report(profiles: ThreadProfiles, result: dict[str, Any]) -> dict[str, Any]:
    delivered = max(1, result["delivered"])
    per_thread = profiles.stats()
    merged: pstats.Stats | None = None
    out: dict[str, Any] = {"threads": {}}
    for name, st in per_thread:
        total = float(st.total_tt)  # type: ignore[attr-defined]
        if total <= 0:
            continue
        out["threads"][name] = {
            "profiled_cpu_us_per_event": total / delivered * 1e6,
            "top_self": _top(st, delivered, 12, "tottime"),
        }
        if merged is None:
            merged = st
        else:
            merged.add(st)
    if merged is not None:
        out["merged_top_self"] = _top(merged, delivered, 30, "tottime")
        out["merged_top_cumulative"] = _top(merged, delivered, 30, "cumtime")
        out["merged_total_us_per_event"] = float(merged.total_tt) / delivered * 1e6  # type: ignore[attr-defined]
        prof_path = DEFAULT_JSON.with_name(f"e2e-profile-{result['variant']}.prof")
        prof_path.parent.mkdir(parents=True, exist_ok=True)
        merged.dump_stats(str(prof_path))
        out["prof_file"] = str(prof_path)
    return out


def print_profile(r: dict[str, Any]) -> None:
    prof = r["profile"]
    print(
        f"\nprofile of {r['variant']}: {r['delivered']:,} delivered; process CPU (profiled)"
        f" {r['cpu_s'] / max(1, r['delivered']) * 1e6:.1f} µs/event; profilers saw"
        f" {prof.get('merged_total_us_per_event', 0):.1f} µs/event of thread CPU"
    )

    def rows(title: str, items: list[dict[str, Any]]) -> None:
        print(f"\n{title}")
        print(f"| {'self µs/ev':>10} | {'cum µs/ev':>9} | {'calls':>9} | function |")
        print("| ---: | ---: | ---: | --- |")
        for it in items:
            print(
                f"| {it['self_us_per_event']:10.2f} | {it['cum_us_per_event']:9.2f} |"
                f" {it['calls']:9,} | {it['function']} |"
            )

    for name, t in prof["threads"].items():
        rows(f"thread {name}: {t['profiled_cpu_us_per_event']:.1f} µs/event", t["top_self"])
    if "merged_top_self" in prof:
        rows("all threads, by self time", prof["merged_top_self"])
        rows("all threads, by cumulative time", prof["merged_top_cumulative"][:20])
        print(f"\nmerged profile written to {prof['prof_file']} (python -m pstats)")


# --- the parent ---------------------------------------------------------------------------


class SinkProcess:
    """``_sink.py`` in its own process; it exits when we close its stdin (or die)."""

    def __init__(self, log_path: Path) -> None:
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, str(SINK_SCRIPT), "--port", "0"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
        )
        self.log_path = log_path
        self.port = self._read_port()

    def _read_port(self) -> int:
        assert self.proc.stdout is not None
        deadline = time.monotonic() + SINK_READY_TIMEOUT_S
        buf = b""
        fd = self.proc.stdout.fileno()
        while b"\n" not in buf:
            left = deadline - time.monotonic()
            if left <= 0 or self.proc.poll() is not None:
                self.stop()
                raise SystemExit(f"the sink did not start; see {self.log_path}")
            ready, _, _ = select.select([fd], [], [], min(left, 0.2))
            if ready:
                chunk = os.read(fd, 256)
                if not chunk:
                    continue
                buf += chunk
        line = buf.split(b"\n", 1)[0].decode()
        if not line.startswith("READY "):
            self.stop()
            raise SystemExit(f"unexpected line from the sink: {line!r}")
        return int(line.split()[1])

    def stats(self) -> dict[str, Any]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
        try:
            conn.request("GET", "/stats")
            return dict(json.loads(conn.getresponse().read()))
        finally:
            conn.close()

    def stop(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(OSError):
                if self.proc.stdin is not None:
                    self.proc.stdin.close()  # the sink exits on EOF
            try:
                self.proc.wait(2.0)
            except subprocess.TimeoutExpired:
                self.proc.terminate()
                try:
                    self.proc.wait(2.0)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(2.0)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self._log.close()


def child_env(variant: str) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("TELEMETRY_UPLOAD_COMPRESSION", None)
    if variant == "telemetry-client-gzip":
        env["TELEMETRY_UPLOAD_COMPRESSION"] = "gzip"
    # Loopback never through a proxy (httpx honours *_PROXY / NO_PROXY).
    no_proxy = [x for x in env.get("NO_PROXY", "").split(",") if x]
    env["NO_PROXY"] = ",".join([*no_proxy, "127.0.0.1", "localhost"])
    env["PYTHONHASHSEED"] = "0"
    return env


def spawn(
    variant: str,
    n: int,
    events_path: Path,
    port: int,
    run: str,
    *,
    profile: bool = False,
    gzip_level: int = NAIVE_GZIP_LEVEL,
) -> dict[str, Any]:
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--child",
        variant,
        "--n",
        str(n),
        "--events",
        str(events_path),
        "--port",
        str(port),
        "--run",
        run,
        "--baseline-gzip-level",
        str(gzip_level),
    ]
    if profile:
        cmd.append("--child-profile")
    try:
        proc = subprocess.run(
            cmd,
            capture_output=True,
            text=True,
            timeout=CHILD_TIMEOUT_S * (3 if profile else 1),
            check=False,
            env=child_env(variant),
        )
    except subprocess.TimeoutExpired:
        return {"variant": variant, "error": f"timed out after {CHILD_TIMEOUT_S:.0f} s"}
    if proc.returncode != 0 or not proc.stdout.strip():
        tail = "\n".join(proc.stderr.strip().splitlines()[-15:])
        return {"variant": variant, "error": f"exit code {proc.returncode}:\n{tail}"}
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def derive(r: dict[str, Any], raw_ref: float | None) -> dict[str, Any]:
    """Per-event figures of one child result (``raw_ref``: baseline NDJSON bytes/event)."""
    d = max(1, r["delivered"])
    sink = r["sink"]
    out = {
        "sent": r["sent"],
        "delivered": r["delivered"],
        "lost": r["sent"] - r["delivered"],
        "duplicate_events": sink["duplicate_events"],
        "bad_requests": sink["bad_requests"],
        "requests": sink["requests"],
        "wall_s": r["wall_s"],
        "events_per_s": r["delivered"] / r["wall_s"],
        "cpu_us_per_event": r["cpu_s"] / d * 1e6,
        "cpu_sys_us_per_event": r["cpu_sys_s"] / d * 1e6,
        "wire_bytes_per_event": sink["wire_bytes"] / d,
        "own_ndjson_bytes_per_event": sink["raw_bytes"] / d,
        "sink_cpu_us_per_event": r["sink_cpu_s"] / d * 1e6,
        "emit_phase_s": r["emit_phase_s"],
        "flush_s": r["flush_s"],
        "confirm_s": r["confirm_s"],
    }
    if raw_ref:
        out["raw_json_bytes_per_event"] = raw_ref
        out["wire_over_raw"] = out["wire_bytes_per_event"] / raw_ref
    threads = r.get("threads_cpu_s", {})
    named = {k: v for k, v in threads.items() if v > 0}
    rest = r["cpu_s"] - sum(named.values())
    out["threads_us_per_event"] = {k: v / d * 1e6 for k, v in named.items()}
    out["threads_us_per_event"]["(exited threads / unattributed)"] = max(0.0, rest) / d * 1e6
    if "baseline_phases_cpu_s" in r:
        out["baseline_phases_us_per_event"] = {
            k: v / d * 1e6 for k, v in r["baseline_phases_cpu_s"].items()
        }
    return out


def _median_dict(items: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in items[0]:
        values = [it[key] for it in items if key in it]
        if isinstance(values[0], dict):
            out[key] = _median_dict(values)
        elif all(isinstance(v, (int, float)) for v in values):
            out[key] = statistics.median(values)
    return out


def _f(value: float | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def report(
    medians: dict[str, dict[str, Any]],
    spreads: dict[str, dict[str, tuple[float, float]]],
) -> list[dict[str, Any]]:
    base = medians.get("baseline")

    def ratio(v: str, key: str) -> float | None:
        if base is None or v not in medians or not base.get(key):
            return None
        return float(medians[v][key]) / float(base[key])

    print(
        "| variant | sent | delivered | lost | wall s | delivered ev/s | client CPU µs/ev"
        " | wire B/ev | raw JSON B/ev | wire/raw | CPU vs baseline | ev/s vs baseline |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for v in VARIANTS:
        m = medians.get(v)
        if m is None:
            print(f"| {v} | failed | | | | | | | | | | |")
            continue
        lo, hi = spreads[v]["cpu_us_per_event"]
        print(
            f"| {v} | {m['sent']:,.0f} | {m['delivered']:,.0f} | {m['lost']:,.0f}"
            f" | {m['wall_s']:.2f} | {m['events_per_s']:,.0f}"
            f" | {m['cpu_us_per_event']:.1f} ({lo:.1f}-{hi:.1f})"
            f" | {m['wire_bytes_per_event']:,.0f} | {_f(m.get('raw_json_bytes_per_event'), ',.0f')}"
            f" | {_f(m.get('wire_over_raw'), '.3f')}"
            f" | {_f(ratio(v, 'cpu_us_per_event'), '.2f')}x"
            f" | {_f(ratio(v, 'events_per_s'), '.2f')}x |"
        )
    print(
        "\n(CPU: median, min-max over the repetitions in brackets. raw JSON = the baseline's"
        " uncompressed NDJSON per event, json.dumps of the full envelope.)"
    )

    print("\nwhere the client CPU goes (µs per delivered event, medians; per thread):\n")
    print("| variant | thread | CPU µs/ev |")
    print("| --- | --- | ---: |")
    for v in VARIANTS:
        m = medians.get(v)
        if m is None:
            continue
        for name, us in sorted(m["threads_us_per_event"].items(), key=lambda kv: -kv[1]):
            if us >= 0.05:
                print(f"| {v} | {name} | {us:.1f} |")
        for name, us in m.get("baseline_phases_us_per_event", {}).items():
            print(f"| {v} | caller: {name} | {us:.1f} |")

    print("\nother figures (medians):\n")
    print(
        "| variant | own NDJSON B/ev | own raw/wire | sys CPU µs/ev | emit phase s | flush s"
        " | requests | duplicates | sink CPU µs/ev |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for v in VARIANTS:
        m = medians.get(v)
        if m is None:
            continue
        print(
            f"| {v} | {m['own_ndjson_bytes_per_event']:,.0f}"
            f" | {m['own_ndjson_bytes_per_event'] / m['wire_bytes_per_event']:.2f}x"
            f" | {m['cpu_sys_us_per_event']:.1f} | {m['emit_phase_s']:.2f} | {m['flush_s']:.2f}"
            f" | {m['requests']:,.0f} | {m['duplicate_events']:,.0f}"
            f" | {m['sink_cpu_us_per_event']:.1f} |"
        )

    targets: list[dict[str, Any]] = []
    for v in CLIENT_VARIANTS:
        m = medians.get(v)
        cpu = None if m is None else m["cpu_us_per_event"]
        wire = None if m is None else m.get("wire_over_raw")
        lost = None if m is None else m["lost"]
        targets += [
            {
                "variant": v,
                "target": f"client CPU <= {TARGET_CPU_US:.0f} µs per delivered event",
                "value": f"{_f(cpu, '.1f')} µs",
                "pass": cpu is not None and cpu <= TARGET_CPU_US,
            },
            {
                "variant": v,
                "target": "wire bytes per event <= 1/3 of raw JSON",
                "value": _f(wire, ".3f"),
                "pass": wire is not None and wire <= TARGET_WIRE_RATIO,
            },
            {
                "variant": v,
                "target": "every event delivered",
                "value": f"{_f(lost, ',.0f')} lost",
                "pass": lost == 0,
            },
        ]
    print("\n| variant | target | value | |")
    print("| --- | --- | ---: | --- |")
    for t in targets:
        print(
            f"| {t['variant']} | {t['target']} | {t['value']} | {'PASS' if t['pass'] else 'MISS'} |"
        )
    return targets


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help=f"N = {N_QUICK:,} (a smoke run)")
    ap.add_argument("--n", type=int, help=f"events per variant (default {N_DEFAULT:,})")
    ap.add_argument("--reps", type=int, default=REPS, help=f"repetitions (default {REPS})")
    ap.add_argument("--json", metavar="PATH", default=str(DEFAULT_JSON), help="results JSON")
    ap.add_argument(
        "--profile",
        nargs="?",
        const=VARIANTS[0],
        choices=VARIANTS,
        help="profile one child of VARIANT (default telemetry-client) instead of benchmarking",
    )
    ap.add_argument(
        "--baseline-gzip-level",
        type=int,
        default=NAIVE_GZIP_LEVEL,
        choices=range(1, 10),
        metavar="1-9",
        help=f"the baseline's gzip level (default {NAIVE_GZIP_LEVEL})",
    )
    ap.add_argument("--child", choices=VARIANTS, help=argparse.SUPPRESS)
    ap.add_argument("--events", help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--run", help=argparse.SUPPRESS)
    ap.add_argument("--child-profile", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    n = args.n or (N_QUICK if args.quick else N_DEFAULT)

    if args.child:
        r = run_child(
            args.child,
            n,
            Path(args.events),
            args.port,
            args.run,
            args.child_profile,
            args.baseline_gzip_level,
        )
        print(json.dumps(r))
        return 0

    # SIGTERM runs the cleanup below (subprocess.run kills a running child, the sink stops).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    started = time.perf_counter()
    info = machine_info(("telemetry-client", "httpx", "zstandard", "orjson"))
    overrides = sorted(
        k
        for k in os.environ
        if (k.startswith("TELEMETRY_") and k != "TELEMETRY_UPLOAD_COMPRESSION")
        or k == "DO_NOT_TRACK"
    )
    title = "telemetry-client end-to-end benchmark" + (" (--quick)" if args.quick else "")
    print(title)
    print(f"  cpu:      {info['cpu']} ({info['cores']} cores, {info['usable_cores']} usable)")
    print(f"  python:   {info['python']} on {info['platform']}")
    print("  packages: " + ", ".join(f"{k} {v}" for k, v in info["packages"].items()))
    print(f"  spool fs: {info['tmp_fs']}")
    print(f"  load avg: {info['loadavg_start']} (1/5/15 min) at start")
    if overrides:
        print(f"  WARNING:  not default settings, environment sets {', '.join(overrides)}")
    reps = 1 if args.profile else max(1, args.reps)
    print(
        f"  events:   {n:,} per variant (benchmarks/workload.py, seed {SEED});"
        f" {reps} interleaved repetition(s), each variant in a fresh process"
    )
    print(
        f"  baseline: json.dumps per event (full envelope); gzip level {args.baseline_gzip_level}"
        f" + one httpx.post per {NAIVE_BATCH} events, on the caller; no disk"
    )
    print(
        "  sink:     benchmarks/_sink.py (http.server, 127.0.0.1) in its own process;"
        " its CPU is not counted"
    )

    tmp = Path(tempfile.mkdtemp(prefix="tc-e2e-"))
    sink: SinkProcess | None = None
    try:
        t0 = time.perf_counter()
        events = make_events(n, SEED)
        mean_size = mean_json_size(events)
        events_path = tmp / "events.pickle"
        with open(events_path, "wb") as f:
            pickle.dump(events, f, protocol=pickle.HIGHEST_PROTOCOL)
        del events
        gc.collect()
        print(
            f"  workload: mean {mean_size:,.0f} B of compact JSON per event ({{type, data}});"
            f" generated in {time.perf_counter() - t0:.1f} s\n"
        )
        sink = SinkProcess(tmp / "sink.log")

        if args.profile:
            r = spawn(args.profile, n, events_path, sink.port, "profile", profile=True)
            if "error" in r:
                raise SystemExit(f"profile child failed: {r['error']}")
            d = derive(r, None)
            print(
                f"{args.profile}: {d['delivered']:,} delivered in {d['wall_s']:.2f} s"
                f" ({d['events_per_s']:,.0f} ev/s), {d['cpu_us_per_event']:.1f} µs CPU/event"
                " under the profiler"
            )
            print_profile(r)
            return 0

        results: dict[str, list[dict[str, Any]]] = {v: [] for v in VARIANTS}
        failures: list[dict[str, Any]] = []
        for rep in range(reps):
            order = VARIANTS[rep % len(VARIANTS) :] + VARIANTS[: rep % len(VARIANTS)]
            for v in order:
                t1 = time.perf_counter()
                run = f"{rep}-{v}-{uuid.uuid4().hex[:8]}"
                r = spawn(v, n, events_path, sink.port, run, gzip_level=args.baseline_gzip_level)
                took = time.perf_counter() - t1
                if "error" in r:
                    failures.append({"rep": rep, **r})
                    print(f"  rep {rep + 1} {v:<22} FAILED after {took:.1f} s: {r['error']}")
                    continue
                results[v].append(r)
                cpu = r["cpu_s"] / max(1, r["delivered"]) * 1e6
                print(
                    f"  rep {rep + 1} {v:<22} {r['delivered']:>7,}/{n:,} delivered in"
                    f" {r['wall_s']:6.2f} s, {cpu:6.1f} µs CPU/event (child ran {took:.1f} s)"
                )

        raw_refs = [r["sink"]["raw_bytes"] / max(1, r["delivered"]) for r in results["baseline"]]
        raw_ref = statistics.median(raw_refs) if raw_refs else None
        derived = {v: [derive(r, raw_ref) for r in rs] for v, rs in results.items() if rs}
        medians = {v: _median_dict(ds) for v, ds in derived.items()}
        spreads = {
            v: {
                k: (min(d[k] for d in ds), max(d[k] for d in ds))
                for k in ("cpu_us_per_event", "events_per_s", "wire_bytes_per_event")
            }
            for v, ds in derived.items()
        }
        info["loadavg_end"] = loadavg()
        client_settings = next((r["settings"] for r in results[VARIANTS[0]]), None)
        if client_settings:
            print(
                "\n  client settings: "
                + ", ".join(f"{k}={v}" for k, v in client_settings.items())
                + " (+ TELEMETRY_UPLOAD_COMPRESSION=gzip for the -gzip variant)"
            )
        print()
        targets = report(medians, spreads)
        elapsed = time.perf_counter() - started
        print(f"\ntotal benchmark time {elapsed:.0f} s; load avg at end {info['loadavg_end']}")
        if info["loadavg_start"] and info["loadavg_start"][0] > 0.5 * (info["cores"] or 1):
            print("NOTE: the machine was already busy when the run started; figures may be noisy")
        out = {
            "machine": info,
            "n": n,
            "reps": reps,
            "baseline_gzip_level": args.baseline_gzip_level,
            "client_settings": client_settings,
            "mean_json_bytes": mean_size,
            "raw_json_bytes_per_event": raw_ref,
            "targets": targets,
            "medians": medians,
            "spreads": spreads,
            "runs": results,
            "failures": failures,
            "elapsed_s": elapsed,
        }
        path = Path(args.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(out, indent=2) + "\n")
        print(f"results written to {path}")
        return 1 if failures else 0
    finally:
        if sink is not None:
            sink.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
