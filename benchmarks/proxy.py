"""Added latency of the recording proxy, against direct calls and LiteLLM's proxy.

Usage::

    python benchmarks/proxy.py [--quick] [--requests N] [--litellm PATH] [--json PATH]

Three processes besides this one: the fake OpenAI upstream (``_proxy_upstream.py``: 20
SSE chunks per stream, no gaps, usage only when asked), ``telemetry-client proxy`` in
front of it (recording every call to a temporary spool, usage option on), and, when it
can be started, LiteLLM's proxy (``litellm --model openai/fake-model --api_base ...``,
from ``--litellm`` or ``.venv-litellm/bin/litellm``; otherwise the reason is printed and
only ours is measured). This process is the client: an ``httpx.AsyncClient`` running C
concurrent streaming chat completions (C = 1, 10, 100), each timed to its first body
byte (TTFB) and to its end (total). Targets are measured in rounds, interleaved, after a
warm-up; percentiles are over every request of a (target, C).

Added latency = percentile(target) - percentile(direct) at the same C. Proxy CPU per
request = the proxy process's user+system CPU over its requests (``psutil``), spool
writer included. Everything shares one machine: on 2 cores the client, the upstream and
the proxy compete, so the figures are upper bounds of what a proxy adds by itself.
Targets (issue 13): p50 added <= 1 ms at C=1, and <= 1/3 of LiteLLM's at every C.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil  # type: ignore[import-untyped]

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
from _machine import machine_info  # noqa: E402

BODY = {
    "model": "fake-model",
    "messages": [{"role": "user", "content": "benchmark the proxy"}],
    "stream": True,
}
KEY = "sk-bench-not-a-real-key"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _env(spool: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TELEMETRY_")}
    env.update(TELEMETRY_SPOOL_DIR=str(spool), NO_PROXY="127.0.0.1", no_proxy="127.0.0.1")
    return env


def _wait_http(url: str, proc: subprocess.Popen[Any], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"exited with {proc.returncode}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=2).status_code < 500:
                return
        time.sleep(0.2)
    raise RuntimeError(f"not ready within {timeout:.0f} s")


@contextlib.contextmanager
def _process(args: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[Any]]:
    with open(log, "wb") as out:
        proc = subprocess.Popen(args, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)


def _litellm_binary(given: str | None) -> str | None:
    for candidate in (given, str(ROOT / ".venv-litellm" / "bin" / "litellm"), "litellm"):
        if candidate and (Path(candidate).exists() or shutil.which(candidate)):
            return candidate
    return None


async def _one(http: httpx.AsyncClient, url: str, headers: dict[str, str]) -> tuple[float, float]:
    t0 = time.perf_counter()
    ttfb = None
    async with http.stream("POST", url, json=BODY, headers=headers) as response:
        async for chunk in response.aiter_raw():
            if ttfb is None and chunk:
                ttfb = time.perf_counter() - t0
        if response.status_code != 200:
            await response.aread()
            raise RuntimeError(f"{url}: HTTP {response.status_code} {response.text[:300]}")
    total = time.perf_counter() - t0
    return (ttfb if ttfb is not None else total), total


async def _round(url: str, concurrency: int, requests: int) -> list[tuple[float, float]]:
    headers = {"authorization": f"Bearer {KEY}"}
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    out: list[tuple[float, float]] = []
    async with httpx.AsyncClient(timeout=60, limits=limits, trust_env=False) as http:
        await asyncio.gather(*(_one(http, url, headers) for _ in range(concurrency)))  # warm
        left = requests

        async def worker() -> None:
            nonlocal left
            while left > 0:
                left -= 1
                out.append(await _one(http, url, headers))

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return out


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="few requests (a smoke run)")
    p.add_argument("--requests", type=int, default=0, help="requests per target and C")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--litellm", help="path of the litellm executable")
    p.add_argument("--no-litellm", action="store_true")
    p.add_argument("--json", type=Path, help="write the results here")
    args = p.parse_args()
    levels = (1, 10, 100)
    tmp = Path(tempfile.mkdtemp(prefix="proxy-bench-"))
    up_port, our_port, lite_port = _free_port(), _free_port(), _free_port()
    upstream = f"http://127.0.0.1:{up_port}/v1"
    env = _env(tmp / "spool")
    targets: dict[str, str] = {"direct": f"{upstream}/chat/completions"}
    why_no_litellm = "--no-litellm" if args.no_litellm else None
    stack = contextlib.ExitStack()
    procs: dict[str, psutil.Process] = {}
    with stack:
        py = sys.executable
        up = stack.enter_context(
            _process([py, str(HERE / "_proxy_upstream.py"), str(up_port)], env, tmp / "up.log")
        )
        _wait_http(f"{upstream}/models", up, 30)
        ours = stack.enter_context(
            _process(
                [
                    py,
                    "-m",
                    "telemetry_client",
                    "proxy",
                    "--upstream",
                    upstream,
                    "--port",
                    str(our_port),
                    "--provider",
                    "openai",
                ],
                env,
                tmp / "proxy.log",
            )
        )
        _wait_http(f"http://127.0.0.1:{our_port}/health", ours, 30)
        targets["telemetry-client proxy"] = f"http://127.0.0.1:{our_port}/v1/chat/completions"
        procs["telemetry-client proxy"] = psutil.Process(ours.pid)
        binary = None if args.no_litellm else _litellm_binary(args.litellm)
        if binary is None and why_no_litellm is None:
            why_no_litellm = "litellm is not installed (pip install 'litellm[proxy]')"
        if binary is not None:
            lite_env = {
                **env,
                "OPENAI_API_KEY": KEY,
                "LITELLM_MASTER_KEY": KEY,
                "LITELLM_LOG": "ERROR",
                "LITELLM_TELEMETRY": "False",
                "LITELLM_LOCAL_MODEL_COST_MAP": "True",
            }
            try:
                lite = stack.enter_context(
                    _process(
                        [
                            binary,
                            "--model",
                            "openai/fake-model",
                            "--api_base",
                            upstream,
                            "--host",
                            "127.0.0.1",
                            "--port",
                            str(lite_port),
                            "--num_workers",
                            "1",
                        ],
                        lite_env,
                        tmp / "litellm.log",
                    )
                )
                _wait_http(f"http://127.0.0.1:{lite_port}/health/liveliness", lite, 180)
                targets["litellm proxy"] = f"http://127.0.0.1:{lite_port}/v1/chat/completions"
                procs["litellm proxy"] = psutil.Process(lite.pid)
            except RuntimeError as exc:
                tail = (tmp / "litellm.log").read_text(errors="replace")[-600:]
                why_no_litellm = f"litellm proxy did not start ({exc}): {tail}"
        if why_no_litellm:
            print(f"LiteLLM not measured: {why_no_litellm}\n")
        per = args.requests or (30 if args.quick else 400)
        rounds = 1 if args.quick else args.rounds
        samples: dict[tuple[str, int], list[tuple[float, float]]] = {}
        cpu: dict[str, list[float]] = {name: [] for name in procs}
        for concurrency in levels:
            n = max(per, concurrency * (2 if args.quick else 4))
            for _ in range(rounds):
                for name, url in targets.items():
                    proc = procs.get(name)
                    before = _cpu(proc)
                    got = asyncio.run(_round(url, concurrency, n))
                    if proc is not None:
                        cpu[name].append((_cpu(proc) - before) / (n + concurrency))
                    samples.setdefault((name, concurrency), []).extend(got)
        results = _report(targets, levels, samples, cpu, why_no_litellm)
    results["machine"] = machine_info(["httpx", "uvicorn", "litellm"])
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


def _cpu(proc: psutil.Process | None) -> float:
    if proc is None:
        return 0.0
    times = proc.cpu_times()
    return float(times.user + times.system)


def _report(
    targets: dict[str, str],
    levels: tuple[int, ...],
    samples: dict[tuple[str, int], list[tuple[float, float]]],
    cpu: dict[str, list[float]],
    why_no_litellm: str | None,
) -> dict[str, Any]:
    rows: list[dict[str, Any]] = []
    print(
        f"{'target':24} {'C':>4} {'n':>6} {'TTFB p50':>9} {'p99':>8} {'total p50':>10} "
        f"{'p99':>8} | added TTFB p50/p99, total p50/p99 (ms)"
    )
    for c in levels:
        base = samples[("direct", c)]
        b_ttfb, b_total = [s[0] for s in base], [s[1] for s in base]
        for name in targets:
            got = samples[(name, c)]
            ttfb, total = [s[0] for s in got], [s[1] for s in got]
            row = {"target": name, "concurrency": c, "requests": len(got)}
            for label, values, ref in (("ttfb", ttfb, b_ttfb), ("total", total, b_total)):
                for q in (0.5, 0.99):
                    key = f"{label}_p{int(q * 100)}_ms"
                    row[key] = round(_pct(values, q) * 1000, 3)
                    row[f"added_{key}"] = round((_pct(values, q) - _pct(ref, q)) * 1000, 3)
            rows.append(row)
            added = (
                f"{row['added_ttfb_p50_ms']:+.2f}/{row['added_ttfb_p99_ms']:+.2f}, "
                f"{row['added_total_p50_ms']:+.2f}/{row['added_total_p99_ms']:+.2f}"
            )
            print(
                f"{name:24} {c:>4} {len(got):>6} {row['ttfb_p50_ms']:>9.2f} "
                f"{row['ttfb_p99_ms']:>8.2f} {row['total_p50_ms']:>10.2f} "
                f"{row['total_p99_ms']:>8.2f} | {'-' if name == 'direct' else added}"
            )
    print()
    cpu_ms = {name: round(statistics.median(v) * 1000, 3) for name, v in cpu.items() if v}
    for name, ms in cpu_ms.items():
        print(f"{name}: CPU per request {ms:.3f} ms (median over rounds and C)")
    verdicts = _targets(rows, levels)
    for line in verdicts:
        print(line)
    return {
        "rows": rows,
        "cpu_ms_per_request": cpu_ms,
        "targets": verdicts,
        "litellm_missing": why_no_litellm,
    }


def _targets(rows: list[dict[str, Any]], levels: tuple[int, ...]) -> list[str]:
    find = {(r["target"], r["concurrency"]): r for r in rows}
    ours = "telemetry-client proxy"
    out = []
    first = find[(ours, 1)]["added_ttfb_p50_ms"]
    out.append(
        f"target p50 added TTFB <= 1 ms at C=1: {first:.2f} ms {'PASS' if first <= 1.0 else 'FAIL'}"
    )
    for c in levels:
        lite = find.get(("litellm proxy", c))
        if lite is None:
            continue
        a, b = find[(ours, c)]["added_ttfb_p50_ms"], lite["added_ttfb_p50_ms"]
        ok = a <= b / 3
        out.append(
            f"target p50 added TTFB <= 1/3 LiteLLM's at C={c}: {a:.2f} vs {b:.2f} ms "
            f"{'PASS' if ok else 'FAIL'}"
        )
    return out


if __name__ == "__main__":
    raise SystemExit(main())
