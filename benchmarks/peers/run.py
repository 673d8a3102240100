"""Peer benchmark: telemetry-client against the SDKs users would otherwise pick.

Usage::

    python benchmarks/peers/run.py [--quick] [--n N[,N]] [--reps R] [--only a,b]
                                   [--json PATH] [--chart PATH] [--deadline S]
    python benchmarks/peers/run.py --report benchmarks/results/peers.json [--chart PATH]

Needs the ``peers`` extra (``pip install -e '.[peers]'``): posthog,
segment-analytics-python, opentelemetry-sdk + opentelemetry-exporter-otlp-proto-http and
sentry-sdk. A full run (N = 20,000 and 100,000, 3 repetitions) takes about 15 minutes on
2 cores; ``--quick`` (N = 20,000, 1 repetition) a minute and a half. ``--report`` measures
nothing: it prints a results file's tables and targets again and redraws its chart.

One workload (``workload.py``: ``benchmarks/workload.py``'s LLM-agent event mix, 2.4 KB
of JSON per event, each event numbered under ``bench_marker``) goes through one small
adapter per SDK (``adapters/``): posthog, segment, otel (opentelemetry-sdk logs over
OTLP/HTTP protobuf), sentry, telemetry_client and a naive baseline (json.dumps per event,
gzip + one httpx.post per 1000 events, on the caller). Each adapter runs in every mode it
supports: ``defaults`` (what a user gets), ``nodrop`` (its queue raised so it drops
nothing, so cost columns are comparable) and ``nodrop_compressed`` (the same with its
compression on). Before measuring, every (adapter, mode) is ``make()`` d once in a probe
process: a mode that raises ``NotImplementedError`` is not run, and a mode whose
configuration (its ``notes``) equals an earlier mode's is run once and reported as the
same; telemetry_client and the baseline have one configuration for all three (they never
drop and always compress).

Every run is a fresh child process (``_child.py``) that emits N events back to back (as
fast as possible), calls the adapter's ``finish()``, and waits until the sink confirmed
every event, or made no progress for 1.5 s after ``finish`` returned (5 s if it failed),
or the run's deadline passed (30 s + 0.3 s per 1,000 events from the first emit; then
what was delivered is recorded: sentry's no-drop modes at 100,000, one request per event,
are still sending at the deadline). The sink (``sink.py``) runs in its own process for the
whole benchmark, on loopback, answers every request 200 at once and decodes every body
(``decoders.py``: gzip, zstd, JSON, NDJSON, posthog/segment batches, OTLP protobuf, Sentry
envelopes), counting unique markers and wire bytes per run. Its CPU is not the client's.

Measured per run: ``emit()`` p50/p99/max on the caller (``perf_counter_ns`` around each
call); events delivered vs sent; client CPU per delivered event (``getrusage``, every
thread, until the last event was confirmed; the harness's own work subtracted: building
each event's dict just before its emit, the RSS sampler, polling the sink); delivered
events/s (first emit to the receipt of the last new event); wire bytes (request bodies)
per delivered event; RSS increase (sampled peak minus RSS before the first emit; the dicts
are built fresh per emit, so an SDK that queues them pays for them). Repetitions are
interleaved (the order rotates each time); the tables show medians over repetitions, and
ratios to the baseline are taken within each repetition, then their median. No timing
assertion: PASS/MISS lines against the targets, computed at the largest N of the run,
each ratio per repetition against that repetition's best peer, then the median. Results
go to ``benchmarks/results/peers.json`` and the chart to ``docs/peers.svg`` (a run with
``--quick``, ``--only``, ``--n`` or other ``--reps`` writes
``benchmarks/results/peers-partial.{json,svg}`` unless told otherwise, so a smoke run never
replaces the published chart).
"""

from __future__ import annotations

import argparse
import collections
import concurrent.futures
import contextlib
import gc
import http.client
import json
import os
import pickle
import select
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(1, str(HERE.parent))  # benchmarks/: shared helpers

import adapters  # noqa: E402 - after the path tweak
from _machine import loadavg, machine_info  # noqa: E402
from chart import Row, render  # noqa: E402
from workload import MARKER_FIELD, SEED, make_events, raw_json_bytes  # noqa: E402

REPO = HERE.parent.parent
CHILD = HERE / "_child.py"
SINK = HERE / "sink.py"
RESULTS = HERE.parent / "results"
DEFAULT_JSON = RESULTS / "peers.json"
DEFAULT_CHART = REPO / "docs" / "peers.svg"
PARTIAL_JSON = RESULTS / "peers-partial.json"
PARTIAL_CHART = RESULTS / "peers-partial.svg"
NS, QUICK_NS = (20_000, 100_000), (20_000,)
REPS = 3
SINK_READY_TIMEOUT_S = 15.0
PROBE_TIMEOUT_S = 60.0
CHILD_GRACE_S = 90.0  # beyond the child's delivery deadline: startup, loading, finish
ORDER = ("telemetry_client", "otlp", "posthog", "segment", "otel", "sentry", "baseline")
DISPLAY = {
    "telemetry_client": "telemetry-client",
    "otlp": "telemetry-client (OTLP export)",
    "posthog": "posthog",
    "segment": "segment-analytics-python",
    "otel": "opentelemetry-sdk (OTLP/HTTP)",
    "sentry": "sentry-sdk",
    "baseline": "naive baseline",
}
MODE_LABEL = {
    "defaults": "defaults",
    "nodrop": "no-drop",
    "nodrop_compressed": "no-drop + compression",
}
PACKAGES = (
    "telemetry-client",
    "posthog",
    "segment-analytics-python",
    "opentelemetry-api",
    "opentelemetry-sdk",
    "opentelemetry-exporter-otlp-proto-http",
    "opentelemetry-proto",
    "protobuf",
    "sentry-sdk",
    "httpx",
    "requests",
    "urllib3",
    "zstandard",
    "orjson",
)
#: Environment variables that would change an SDK's defaults (or route loopback via a proxy).
ENV_PREFIXES = ("TELEMETRY_", "OTEL_", "POSTHOG_", "SEGMENT_", "SENTRY_")
ENV_NAMES = ("DO_NOT_TRACK", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY")
# Targets: telemetry-client against the peers, same run (see README "Performance").
T_CPU, T_P50, T_P99, T_MAX_US, T_WIRE_RAW, T_RSS = 1 / 3, 1 / 3, 1 / 2, 5000.0, 1 / 3, 1.0
T_CPU_US = 26.0  # issue 16: and at most 26 µs per delivered event, whatever the peers do
T_RSS_MB_100K = 40.0  # issue 16: RSS increase at N = 100,000

_children: set[subprocess.Popen[bytes]] = set()


# --- processes --------------------------------------------------------------------------


def _kill(proc: subprocess.Popen[Any]) -> None:
    """End a child we started (its own session: the whole group, by its id)."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(5.0)


class SinkProcess:
    """``sink.py`` in its own process; it exits when we close its stdin (or die)."""

    def __init__(self, log_path: Path, env: dict[str, str]) -> None:
        self.log_path = log_path
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, str(SINK), "--port", "0"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            env=env,
            start_new_session=True,
        )
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
                buf += os.read(fd, 256)
        line = buf.split(b"\n", 1)[0].decode()
        if not line.startswith("READY "):
            self.stop()
            raise SystemExit(f"unexpected line from the sink: {line!r}")
        return int(line.split()[1])

    def decoder(self) -> str:
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline:
            for line in self.log_path.read_text(errors="replace").splitlines():
                if line.startswith("sink: decoding with "):
                    return line.removeprefix("sink: decoding with ")
            time.sleep(0.05)
        return "unknown"

    def health(self) -> bool:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
        try:
            conn.request("GET", "/health")
            return conn.getresponse().status == 200
        except (OSError, http.client.HTTPException):
            return False
        finally:
            conn.close()

    def stop(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(OSError):
                if self.proc.stdin is not None:
                    self.proc.stdin.close()  # the sink exits on EOF
            try:
                self.proc.wait(3.0)
            except subprocess.TimeoutExpired:
                _kill(self.proc)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self._log.close()


def child_env() -> tuple[dict[str, str], list[str]]:
    """The children's environment: SDK defaults untouched by this shell's settings."""
    env = dict(os.environ)
    removed = sorted(k for k in env if k.startswith(ENV_PREFIXES) or k.upper() in ENV_NAMES)
    for k in removed:
        del env[k]
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    env["PYTHONHASHSEED"] = "0"
    return env, removed


def spawn(
    name: str,
    mode: str,
    n: int,
    events_path: Path,
    port: int,
    run_id: str,
    deadline: float,
    env: dict[str, str],
    log_dir: Path,
) -> dict[str, Any]:
    cmd = [
        sys.executable,
        str(CHILD),
        name,
        mode,
        str(n),
        f"http://127.0.0.1:{port}/{run_id}",
        "--events",
        str(events_path),
        "--deadline",
        f"{deadline:g}",
    ]
    err_path = log_dir / f"{run_id}.stderr"
    with open(err_path, "wb") as err:
        proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=err, env=env, start_new_session=True
        )
        _children.add(proc)
        try:
            out, _ = proc.communicate(timeout=deadline + CHILD_GRACE_S)
        except subprocess.TimeoutExpired:
            _kill(proc)
            return {"error": f"killed after {deadline + CHILD_GRACE_S:.0f} s"}
        finally:
            _kill(proc)
            _children.discard(proc)
    stderr = err_path.read_text(errors="replace").splitlines()
    lines = out.decode(errors="replace").strip().splitlines()
    if proc.returncode != 0 or not lines:
        tail = "\n".join(stderr[-12:])
        return {"error": f"exit code {proc.returncode}:\n{tail}"}
    result = dict(json.loads(lines[-1]))
    result["stderr_lines"] = len(stderr)
    result["stderr_tail"] = stderr[-3:]
    return result


@dataclass
class Plan:
    """What runs: every (adapter, mode) row, and why a row is not measured on its own."""

    rows: list[Key] = field(default_factory=list)  # shown, in display order
    run: list[Key] = field(default_factory=list)  # measured
    unsupported: dict[Key, str] = field(default_factory=dict)
    alias: dict[Key, Key] = field(default_factory=dict)  # same configuration as
    meta: dict[str, dict[str, dict[str, str]]] = field(default_factory=dict)


def probe(key: Key, port: int, env: dict[str, str]) -> dict[str, Any]:
    name, mode = key
    run_id = f"probe-{name}-{mode}-{uuid.uuid4().hex[:6]}"
    cmd = [sys.executable, str(CHILD), name, mode, "1", f"http://127.0.0.1:{port}/{run_id}"]
    proc = subprocess.Popen(
        [*cmd, "--probe"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        start_new_session=True,
    )
    _children.add(proc)
    try:
        out, err = proc.communicate(timeout=PROBE_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return {"error": f"probe timed out after {PROBE_TIMEOUT_S:.0f} s"}
    finally:
        _kill(proc)
        _children.discard(proc)
    lines = out.decode(errors="replace").strip().splitlines()
    if proc.returncode != 0 or not lines:
        tail = "\n".join(err.decode(errors="replace").strip().splitlines()[-8:])
        return {"error": f"probe exit code {proc.returncode}:\n{tail}"}
    return dict(json.loads(lines[-1]))


def make_plan(names: list[str], port: int, env: dict[str, str]) -> Plan:
    """``make()`` every (adapter, mode) once, two at a time: versions, notes, unsupported
    modes, and modes whose configuration (notes) equals an earlier mode's, run only once."""
    plan = Plan()
    for name in names:
        modes = ("defaults",) if name in adapters.SINGLE_CONFIG else adapters.MODES
        plan.rows += [(name, mode) for mode in modes]
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        probes = dict(
            zip(plan.rows, pool.map(lambda k: probe(k, port, env), plan.rows), strict=True)
        )
    for key in plan.rows:
        name, mode = key
        p = probes[key]
        if "unsupported" in p:
            plan.unsupported[key] = p["unsupported"]
            continue
        if "error" in p:  # measure it anyway: the run will say what fails
            print(f"- probe of {name} {mode} failed: {p['error']}")
            plan.run.append(key)
            continue
        known = plan.meta.setdefault(name, {})
        same = next((m for m, v in known.items() if v["notes"] == p["notes"]), None)
        known[mode] = {"version": p["version"], "notes": p["notes"]}
        if same is not None:
            plan.alias[key] = (name, same)
        else:
            plan.run.append(key)
    return plan


# --- figures ----------------------------------------------------------------------------

METRICS = (
    "sent",
    "delivered",
    "lost",
    "loss_pct",
    "p50_us",
    "p99_us",
    "max_us",
    "cpu_us",
    "events_per_s",
    "wire_b",
    "rss_mb",
    "wall_s",
)
RATIO_METRICS = ("p50_us", "p99_us", "cpu_us", "events_per_s", "wire_b", "rss_mb")


def figures(r: dict[str, Any]) -> dict[str, Any]:
    """The per-run figures the tables, ratios and targets use."""
    sent = r["sent"]
    return {
        "sent": sent,
        "delivered": r["delivered"],
        "lost": r["lost"],
        "loss_pct": 100.0 * r["lost"] / sent if sent else 0.0,
        "p50_us": r["emit"].get("p50_us"),
        "p99_us": r["emit"].get("p99_us"),
        "max_us": r["emit"].get("max_us"),
        "cpu_us": r["cpu_us_per_delivered"],
        "events_per_s": r["events_per_s"],
        "wire_b": r["wire_bytes_per_delivered"],
        "rss_mb": r["rss_increase_mb"],
        "wall_s": r["wall_s"],
    }


def _median(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


Key = tuple[str, str]  # (adapter, mode)


def summarise(runs: dict[Key, list[dict[str, Any] | None]], reps: int) -> dict[Key, dict[str, Any]]:
    """Medians over repetitions of every figure, and of each figure's ratio to the baseline."""
    base_runs = runs.get(("baseline", "defaults"), [])
    out: dict[Key, dict[str, Any]] = {}
    for key, results in runs.items():
        figs = [figures(r) if r else None for r in results]
        ok = [f for f in figs if f is not None]
        if not ok:
            continue
        med: dict[str, Any] = {m: _median([f[m] for f in ok]) for m in METRICS}
        med["reps_ok"] = len(ok)
        med["max_us_worst"] = max(f["max_us"] or 0.0 for f in ok)
        med["lost_max"] = max(f["lost"] for f in ok)
        med["stop_reasons"] = dict(collections.Counter(r["stop_reason"] for r in results if r))
        ratios: dict[str, float | None] = {}
        for m in RATIO_METRICS:
            per_rep = []
            for rep in range(reps):
                b = base_runs[rep] if rep < len(base_runs) else None
                f = figs[rep] if rep < len(figs) else None
                if b and f and f[m] is not None:
                    bv = figures(b)[m]
                    if bv:
                        per_rep.append(f[m] / bv)
            ratios[m] = _median(per_rep)
        med["vs_baseline"] = ratios
        out[key] = med
    return out


def _fmt_us(v: float | None) -> str:
    if v is None:
        return "-"
    if v >= 100:
        return f"{v:,.0f}"
    if v >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


def _fmt_x(v: float | None) -> str:
    if v is None:
        return "-"
    return f"{v:.3f}x" if v < 0.1 else f"{v:.2f}x" if v < 10 else f"{v:,.0f}x"


def _fmt(v: float | None, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def _mode_label(key: Key) -> str:
    if key[0] in adapters.SINGLE_CONFIG:
        return "one config (never drops, compresses)"
    return MODE_LABEL[key[1]]


def table(
    n: int,
    runs: dict[Key, list[dict[str, Any] | None]],
    summary: dict[Key, dict[str, Any]],
    plan: Plan,
) -> list[str]:
    lines = [
        f"### N = {n:,} events, emitted back to back\n",
        "| SDK | mode | delivered / sent | lost | emit p50 µs | p99 µs | max µs"
        " | CPU µs / delivered ev | CPU vs baseline | delivered ev/s | wire B / ev"
        " | RSS increase MB |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    notes: list[str] = []
    for key in plan.rows:
        name = key[0]
        label = DISPLAY.get(name, name)
        mode_label = _mode_label(key)
        if key in plan.unsupported:
            why = plan.unsupported[key].replace("|", "/")
            lines.append(f"| {label} | {mode_label} | not run: {why} |" + " |" * 9)
            continue
        if key in plan.alias:
            same = MODE_LABEL[plan.alias[key][1]]
            lines.append(f"| {label} | {mode_label} | = {same} (same configuration) |" + " |" * 9)
            continue
        m = summary.get(key)
        if m is None:
            lines.append(f"| {label} | {mode_label} | failed |" + " |" * 9)
            continue
        flags = ""
        reasons = collections.Counter(
            r["stop_reason"] for r in runs[key] if r and r["stop_reason"] != "all delivered"
        )
        if reasons:
            flags = f" [{len(notes) + 1}]"
            notes.append(
                f"[{len(notes) + 1}] {label}, {mode_label}: stopped waiting: "
                + ", ".join(f"{why} ({k}x)" for why, k in reasons.items())
            )
        vs = m["vs_baseline"]
        lines.append(
            f"| {label} | {mode_label}{flags} | {m['delivered']:,.0f} / {m['sent']:,.0f}"
            f" | {m['loss_pct']:.1f}% | {_fmt_us(m['p50_us'])} | {_fmt_us(m['p99_us'])}"
            f" | {_fmt_us(m['max_us'])} | {_fmt(m['cpu_us'], ',.1f')}"
            f" | {_fmt_x(vs['cpu_us']) if name != 'baseline' else '1x'}"
            f" | {_fmt(m['events_per_s'], ',.0f')} | {_fmt(m['wire_b'], ',.0f')}"
            f" | {_fmt(m['rss_mb'], ',.1f')} |"
        )
    lines += ["", *notes] if notes else []
    lines += [
        "",
        f"Ratios to the naive baseline at N = {n:,} (each repetition against the baseline's"
        " run of the same repetition, then the median):",
        "",
        "| SDK | mode | emit p50 | emit p99 | CPU / delivered ev | delivered ev/s | wire B / ev"
        " | RSS increase |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for key in plan.run:
        m = summary.get(key)
        if m is None or key[0] == "baseline":
            continue
        vs = m["vs_baseline"]
        lines.append(
            f"| {DISPLAY.get(key[0], key[0])} | {_mode_label(key)} | "
            + " | ".join(_fmt_x(vs[k]) for k in RATIO_METRICS)
            + " |"
        )
    return lines


# --- targets ------------------------------------------------------------------------------


def _per_rep(runs: list[dict[str, Any] | None], reps: int) -> list[dict[str, Any] | None]:
    return [figures(r) if r else None for r in (runs + [None] * reps)[:reps]]


def targets(
    n: int,
    runs: dict[Key, list[dict[str, Any] | None]],
    reps: int,
    raw_json: float,
) -> list[dict[str, Any]]:
    """PASS/MISS of each target at ``n``: per repetition ratios, then their median."""
    tc = _per_rep(runs.get(("telemetry_client", "defaults"), []), reps)
    peers = {k: _per_rep(v, reps) for k, v in runs.items() if k[0] in adapters.PEERS}
    out: list[dict[str, Any]] = []

    def best_peer(metric: str, rep: int, *, nodrop: bool) -> tuple[float, str] | None:
        cands = []
        for (name, mode), figs in peers.items():
            f = figs[rep]
            if f is None or f[metric] is None or (nodrop and f["lost"] > 0):
                continue
            if metric in ("cpu_us", "wire_b") and not f["delivered"]:
                continue
            cands.append((f[metric], f"{DISPLAY[name]} {MODE_LABEL[mode]}"))
        return min(cands) if cands else None

    def ratio_target(name: str, metric: str, limit: float, *, nodrop: bool, unit: str) -> None:
        ratios, refs, values, who = [], [], [], []
        for rep in range(reps):
            f = tc[rep]
            best = best_peer(metric, rep, nodrop=nodrop)
            if f is None or f[metric] is None or best is None or not best[0]:
                continue
            ratios.append(f[metric] / best[0])
            values.append(f[metric])
            refs.append(best[0])
            who.append(best[1])
        r = _median(ratios)
        ref_name = collections.Counter(who).most_common(1)[0][0] if who else "no peer run"
        out.append(
            {
                "target": name,
                "value": f"{_fmt(_median(values), ',.2f')} {unit}",
                "reference": f"{ref_name}: {_fmt(_median(refs), ',.2f')} {unit}",
                "ratio": r,
                "limit": limit,
                "pass": None if r is None else r <= limit,
            }
        )

    def ceiling_target(name: str, metric: str, ceiling: float, *, unit: str) -> None:
        """The median over the repetitions at most ``ceiling``, whatever the peers do."""
        value = _median([f[metric] for f in tc if f is not None and f[metric] is not None])
        out.append(
            {
                "target": f"{name} <= {ceiling:g} {unit}",
                "value": f"{_fmt(value, ',.2f')} {unit}",
                "reference": f"{ceiling:g} {unit}",
                "ratio": None if value is None else value / ceiling,
                "limit": 1.0,
                "pass": value is not None and value <= ceiling,
            }
        )

    lost = [f["lost"] for f in tc if f is not None]
    out.append(
        {
            "target": f"zero loss with defaults at N={n:,}, emitted as fast as possible",
            "value": f"{max(lost) if lost else '-'} lost (worst of {len(lost)} reps)",
            "reference": "0",
            "ratio": None,
            "limit": 0,
            "pass": bool(lost) and max(lost) == 0,
        }
    )
    ratio_target(
        "client CPU per delivered event <= 1/3 of the cheapest no-drop peer",
        "cpu_us",
        T_CPU,
        nodrop=True,
        unit="µs",
    )
    ceiling_target("client CPU per delivered event", "cpu_us", T_CPU_US, unit="µs")
    ratio_target("emit p50 <= 1/3 of the best peer's", "p50_us", T_P50, nodrop=False, unit="µs")
    ratio_target("emit p99 <= 1/2 of the best peer's", "p99_us", T_P99, nodrop=False, unit="µs")
    worst = max((f["max_us"] for f in tc if f is not None), default=None)
    out.append(
        {
            "target": "worst single emit <= 5 ms",
            "value": f"{_fmt(worst, ',.0f')} µs (worst of the reps)",
            "reference": "5,000 µs",
            "ratio": None if worst is None else worst / T_MAX_US,
            "limit": 1.0,
            "pass": worst is not None and worst <= T_MAX_US,
        }
    )
    wire = _median([f["wire_b"] for f in tc if f is not None])
    out.append(
        {
            "target": "wire bytes per event <= 1/3 of raw JSON",
            "value": f"{_fmt(wire, ',.0f')} B",
            "reference": f"raw JSON {raw_json:,.0f} B",
            "ratio": None if wire is None else wire / raw_json,
            "limit": T_WIRE_RAW,
            "pass": wire is not None and wire / raw_json <= T_WIRE_RAW,
        }
    )
    ratio_target("wire bytes per event below every peer's", "wire_b", 1.0, nodrop=False, unit="B")
    if out[-1]["ratio"] is not None:
        out[-1]["pass"] = out[-1]["ratio"] < 1.0
    ratio_target(
        f"RSS increase at N={n:,} <= the best no-drop peer's",
        "rss_mb",
        T_RSS,
        nodrop=True,
        unit="MB",
    )
    if n >= 100_000:
        ceiling_target(f"RSS increase at N={n:,}", "rss_mb", T_RSS_MB_100K, unit="MB")
    return out


def print_targets(tlist: list[dict[str, Any]], n: int) -> None:
    print(f"\n### Targets (telemetry-client vs the peers, N = {n:,}, same run)\n")
    print("| target | telemetry-client | reference | ratio | result |")
    print("| --- | ---: | --- | ---: | --- |")
    for t in tlist:
        ratio = "-" if t["ratio"] is None else f"{t['ratio']:.3f}"
        print(f"| {t['target']} | {t['value']} | {t['reference']} | {ratio} | {_verdict(t)} |")
    print()
    for t in tlist:
        print(f"{_verdict(t)}: {t['target']} ({t['value']}; {t['reference']})")
    met = sum(t["pass"] is True for t in tlist)
    judged = sum(t["pass"] is not None for t in tlist)
    print(f"\ntelemetry-client: {met}/{judged} targets met", end="")
    print(f" ({len(tlist) - judged} not judged: no peer run)" if judged < len(tlist) else "")


def _verdict(t: dict[str, Any]) -> str:
    return "n/a" if t["pass"] is None else "PASS" if t["pass"] else "MISS"


# --- chart ------------------------------------------------------------------------------


#: adapter -> (chart label, distribution whose version the chart shows, detail)
CHART_LABELS = {
    "telemetry_client": ("telemetry-client", "telemetry-client", ""),
    "otlp": ("telemetry-client", "telemetry-client", " · OTLP export"),
    "posthog": ("posthog", "posthog", ""),
    "segment": ("segment", "segment-analytics-python", ""),
    "otel": ("opentelemetry-sdk", "opentelemetry-sdk", " · OTLP/HTTP logs"),
    "sentry": ("sentry-sdk", "sentry-sdk", ""),
    "baseline": ("naive baseline", "httpx", " · json + gzip"),
}


def chart_rows(
    summary: dict[Key, dict[str, Any]], names: list[str], packages: dict[str, str]
) -> list[Row]:
    rows = []
    for name in names:
        label, dist, detail = CHART_LABELS.get(name, (name, name, ""))
        d = summary.get((name, "defaults"))
        cpu, how = None, ""
        if name in adapters.SINGLE_CONFIG:
            cpu = d["cpu_us"] if d else None
        else:
            best = [
                (m["cpu_us"], mode)
                for mode in ("nodrop", "nodrop_compressed")
                if (m := summary.get((name, mode))) and m["lost_max"] == 0 and m["cpu_us"]
            ]
            # No no-drop run delivered everything (sentry at 100k: one request per event, still
            # sending at the deadline): its CPU per delivered event, with what it delivered.
            partial = [
                (m["cpu_us"], mode, m)
                for mode in ("nodrop", "nodrop_compressed")
                if (m := summary.get((name, mode))) and m["cpu_us"]
            ]
            if best:
                cpu, mode = min(best)
                how = "" if mode == "nodrop" else f" · CPU: {MODE_LABEL[mode]}"
            elif partial:
                cpu, mode, m = min(partial, key=lambda c: c[0])
                why = " by the deadline" if "deadline" in m["stop_reasons"] else ""
                how = f" · CPU: {100 - m['loss_pct']:.0f}% delivered{why}"
            else:
                how = " · CPU: no no-drop run"
        kind = (
            "ours" if name == "telemetry_client" else "baseline" if name == "baseline" else "peer"
        )
        version = packages.get(dist, "?")
        rows.append(
            Row(
                label=label,
                sublabel=f"{dist if dist != label else ''} {version}{detail}{how}".strip(),
                cpu_us=cpu,
                loss_pct=d["loss_pct"] if d else None,
                p99_us=d["p99_us"] if d else None,
                kind=kind,
            )
        )
    return rows


# --- machine ----------------------------------------------------------------------------


# --- main ---------------------------------------------------------------------------------


def _k(key: Key) -> str:
    return f"{key[0]}/{key[1]}"


def _key(text: str) -> Key:
    name, _, mode = text.partition("/")
    return name, mode


def report(
    out: dict[str, Any], chart_path: Path | None
) -> tuple[dict[int, dict[Key, dict[str, Any]]], list[dict[str, Any]]]:
    """Tables, configurations, targets and the chart, from the results of :func:`main`
    (or their JSON file): medians by N, and the targets at the largest N."""
    cfg, info = out["config"], out["machine"]
    ns, reps, names = [int(n) for n in cfg["ns"]], int(cfg["reps"]), list(cfg["adapters"])
    runs = {int(n): {_key(k): list(v) for k, v in rs.items()} for n, rs in out["runs"].items()}
    plan = Plan(
        unsupported={_key(k): v for k, v in out["unsupported"].items()},
        alias={_key(k): _key(v) for k, v in out["same_configuration"].items()},
        meta=out["adapters"],
    )
    for name in names:
        modes = ("defaults",) if name in adapters.SINGLE_CONFIG else adapters.MODES
        plan.rows += [(name, mode) for mode in modes]
    plan.run = [key for key in plan.rows if key in runs[ns[0]]]
    summaries = {n: summarise(runs[n], reps) for n in ns}
    for n in ns:
        print("\n".join(table(n, runs[n], summaries[n], plan)))
        print()
    print("### What each adapter configured\n")
    print("| SDK | version | mode | configuration |")
    print("| --- | --- | --- | --- |")
    for name in names:
        for mode, m in plan.meta.get(name, {}).items():
            notes = m["notes"].replace("|", "/")
            print(f"| {DISPLAY.get(name, name)} | {m['version']} | {mode} | {notes} |")
    n_max = max(ns)
    for n in sorted(ns):  # issue 16 states targets at N = 20,000 and N = 100,000
        raw = float(out["workload"][str(n)]["raw_json_bytes"])
        tlist = targets(n, runs[n], reps, raw)
        print_targets(tlist, n)
    if chart_path is not None:
        chart_notes = [
            "Lower is better in every panel. Each SDK emits N events back to back in a fresh"
            " process; a loopback sink decodes every body and counts unique events.",
            f"N = {n_max:,}, median of {reps} interleaved repetition(s); CPU = getrusage,"
            " all threads, first emit until the last event was confirmed, per delivered event.",
            f"{info['cpu']}, {info['cores']} cores; {info['python']}; {info['date']}."
            " Generated by benchmarks/peers/run.py.",
        ]
        svg = render(
            chart_rows(summaries[n_max], names, info["packages"]),
            title="telemetry-client vs the SDKs users would otherwise pick",
            subtitle=(
                f"LLM-agent event mix (~{raw / 1000:.1f} KB of JSON per event),"
                f" N = {n_max:,} events, loopback collector"
            ),
            notes=chart_notes,
        )
        chart_path.parent.mkdir(parents=True, exist_ok=True)
        chart_path.write_text(svg)
    return summaries, tlist


def deadline_for(n: int) -> float:
    """A run's delivery deadline: ample for every peer but sentry's no-drop modes at 100k
    (one request per event, ~1,000 events/s here), which would double the run's length."""
    return 30.0 + 0.3 * n / 1000.0


def _parse_ns(text: str) -> tuple[int, ...]:
    return tuple(sorted({int(x.replace("_", "")) for x in text.split(",") if x.strip()}))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="N = 20,000 only, 1 repetition")
    ap.add_argument("--n", type=_parse_ns, help="events per run, comma-separated")
    ap.add_argument("--reps", type=int, help=f"interleaved repetitions (default {REPS})")
    ap.add_argument("--only", help="adapters to run, comma-separated (default: all present)")
    ap.add_argument("--json", metavar="PATH", help=f"results JSON (default {DEFAULT_JSON})")
    ap.add_argument("--chart", metavar="PATH", help=f"SVG chart (default {DEFAULT_CHART})")
    ap.add_argument(
        "--deadline",
        type=float,
        help="s from a run's first emit until it stops waiting for deliveries"
        " (default 30 s + 0.3 s per 1,000 events: 60 s at N = 100,000)",
    )
    ap.add_argument(
        "--report",
        metavar="JSON",
        help="measure nothing: print the tables and targets of a results file, redraw its chart",
    )
    args = ap.parse_args(argv)
    if args.report:
        saved = json.loads(Path(args.report).read_text())
        partial = saved["config"].get("partial", True)
        chart = Path(args.chart) if args.chart else (PARTIAL_CHART if partial else DEFAULT_CHART)
        report(saved, chart)
        print(f"\nchart written to {chart}")
        return 0
    ns = args.n or (QUICK_NS if args.quick else NS)
    reps = max(1, args.reps or (1 if args.quick else REPS))
    present = adapters.available()
    if args.only:
        wanted = [x.strip().replace("-", "_") for x in args.only.split(",") if x.strip()]
        unknown = [x for x in wanted if x not in adapters.ADAPTERS]
        if unknown:
            ap.error(f"unknown adapters {unknown}; known: {', '.join(adapters.ADAPTERS)}")
        missing = [x for x in wanted if x not in present]
        if missing:
            ap.error(f"adapter modules not present yet: {', '.join(missing)}")
        names = [x for x in ORDER if x in wanted]
    else:
        names = [x for x in ORDER if x in present]
    partial = bool(args.quick or args.only or args.n or reps != REPS)
    json_path = Path(args.json) if args.json else (PARTIAL_JSON if partial else DEFAULT_JSON)
    chart_path = Path(args.chart) if args.chart else (PARTIAL_CHART if partial else DEFAULT_CHART)

    # SIGTERM runs the cleanup below (children killed, the sink stopped).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    started = time.perf_counter()
    info = machine_info(PACKAGES)
    env, removed = child_env()
    print("# telemetry-client vs peer SDKs" + (" (--quick)" if args.quick else ""))
    print()
    print(f"- machine: {info['cpu']} ({info['cores']} cores, {info['usable_cores']} usable),")
    print(f"  {info['python']} on {info['platform']}; load avg {info['loadavg_start']} at start")
    print("- packages: " + ", ".join(f"{k} {v}" for k, v in info["packages"].items()))
    print(
        f"- runs: N = {', '.join(f'{n:,}' for n in ns)}; {reps} interleaved repetition(s);"
        f" adapters {', '.join(names)}; each run a fresh process"
    )
    absent = [x for x in ORDER if x not in present]
    if absent and not args.only:
        print(f"- not present (skipped): {', '.join(absent)}")
    if removed:
        print(f"- removed from the children's environment: {', '.join(removed)}")

    tmp = Path(tempfile.mkdtemp(prefix="peers-bench-"))
    sink: SinkProcess | None = None
    try:
        events_paths: dict[int, Path] = {}
        workload: dict[int, dict[str, float]] = {}
        for n in ns:
            t0 = time.perf_counter()
            events = make_events(n, SEED)
            events_paths[n] = tmp / f"events-{n}.pickle"
            blobs = [(t, pickle.dumps(d, pickle.HIGHEST_PROTOCOL)) for t, d in events]
            with open(events_paths[n], "wb") as f:
                pickle.dump(blobs, f, protocol=pickle.HIGHEST_PROTOCOL)
            del blobs
            workload[n] = {"raw_json_bytes": raw_json_bytes(events)}
            del events
            gc.collect()
            print(
                f"- workload N={n:,}: raw JSON {workload[n]['raw_json_bytes']:,.0f} B per event"
                f" (json.dumps of {{type, data}} + newline), seed {SEED}, marker"
                f" '{MARKER_FIELD}'; generated in {time.perf_counter() - t0:.1f} s"
            )
        sink = SinkProcess(tmp / "sink.log", env)
        decoder = sink.decoder()
        print(f"- sink: {SINK.name} on 127.0.0.1:{sink.port}, decoding with {decoder}\n")

        t0 = time.perf_counter()
        plan = make_plan(names, sink.port, env)
        for key, why in plan.unsupported.items():
            print(f"- {key[0]} {key[1]}: not run ({why})")
        for key, same in plan.alias.items():
            print(f"- {key[0]} {key[1]}: same configuration as {same[1]}, run once")
        print(f"- probed every adapter's make() in {time.perf_counter() - t0:.1f} s\n")
        runs: dict[int, dict[Key, list[dict[str, Any] | None]]] = {
            n: {v: [] for v in plan.run} for n in ns
        }
        failures: list[dict[str, Any]] = []
        variants = plan.run
        for n in ns:
            deadline = args.deadline or deadline_for(n)
            for rep in range(reps):
                k = rep % max(1, len(variants))
                for key in variants[k:] + variants[:k]:
                    name, mode = key
                    run_id = f"{name}-{mode}-n{n}-r{rep}-{uuid.uuid4().hex[:6]}"
                    t1 = time.perf_counter()
                    r = spawn(name, mode, n, events_paths[n], sink.port, run_id, deadline, env, tmp)
                    took = time.perf_counter() - t1
                    head = f"  N={n:,} rep {rep + 1} {name + ' ' + mode:<32}"
                    if "error" in r or "unsupported" in r:
                        why = r.get("error") or f"unsupported: {r['unsupported']}"
                        failures.append({"n": n, "rep": rep, "adapter": name, "mode": mode, **r})
                        runs[n][key].append(None)
                        print(f"{head} FAILED ({took:.0f} s): {why}")
                        if not sink.health():
                            raise SystemExit("the sink died; see " + str(sink.log_path))
                        continue
                    runs[n][key].append(r)
                    plan.meta.setdefault(name, {})[mode] = {
                        "version": r["version"],
                        "notes": r["notes"],
                    }
                    cpu = r["cpu_us_per_delivered"]
                    sink_info = r["sink"]
                    extra = ""
                    if sink_info.get("decode_errors"):
                        extra += f"; {sink_info['decode_errors']} undecodable bodies"
                    if r["emit_errors"]:
                        extra += f"; {r['emit_errors']} emit errors ({r['first_emit_error']})"
                    if not r["finish"].get("returned", True) or r["finish"].get("error"):
                        extra += f"; finish: {r['finish'].get('error') or 'did not return'}"
                    print(
                        f"{head} {r['delivered']:>7,}/{r['sent']:,}"
                        f" delivered, {_fmt(cpu, '7.1f')} µs CPU/ev,"
                        f" p99 {_fmt_us(r['emit']['p99_us'])} µs, {r['stop_reason']}"
                        f" ({took:.0f} s){extra}"
                    )

        info["loadavg_end"] = loadavg()
        out: dict[str, Any] = {
            "machine": info,
            "config": {
                "ns": list(ns),
                "reps": reps,
                "adapters": names,
                "partial": partial,
                "marker_field": MARKER_FIELD,
                "seed": SEED,
                "deadline_s": {str(n): args.deadline or deadline_for(n) for n in ns},
                "sink_decoder": decoder,
                "env_removed": removed,
            },
            "workload": {str(n): w for n, w in workload.items()},
            "adapters": plan.meta,
            "unsupported": {_k(key): why for key, why in plan.unsupported.items()},
            "same_configuration": {_k(key): _k(same) for key, same in plan.alias.items()},
            "runs": {str(n): {_k(key): v for key, v in rs.items()} for n, rs in runs.items()},
            "failures": failures,
        }
        print()
        summaries, tlist = report(out, chart_path)
        elapsed = time.perf_counter() - started
        out["medians"] = {
            str(n): {_k(key): v for key, v in s.items()} for n, s in summaries.items()
        }
        out["targets"] = tlist
        out["elapsed_s"] = elapsed
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(out, indent=2) + "\n")
        print(f"\ntotal time {elapsed:.0f} s; load avg at end {info['loadavg_end']}")
        if info["loadavg_start"] and info["loadavg_start"][0] > 0.5 * (info["cores"] or 1):
            print("NOTE: the machine was already busy when the run started; figures may be noisy")
        print(f"results written to {json_path}; chart written to {chart_path}")
        return 1 if failures else 0
    finally:
        for proc in list(_children):
            _kill(proc)
        if sink is not None:
            sink.stop()
        with contextlib.suppress(OSError):
            for p in tmp.iterdir():
                p.unlink()
            tmp.rmdir()


if __name__ == "__main__":
    raise SystemExit(main())
