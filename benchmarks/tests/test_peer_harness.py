"""The peer benchmark's harness (``benchmarks/peers/``): sink, child runner, targets, chart.

The end-to-end test runs the real sink and child processes with the two adapters that
need no peer SDK (the naive baseline and telemetry-client) on a few hundred events; the
rest is pure functions fed with hand-made results.
"""

from __future__ import annotations

import importlib.util
import json
import os
import select
import subprocess
import sys
import time
import xml.dom.minidom
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

PEERS = Path(__file__).resolve().parent.parent / "peers"


def _load(name: str, path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TELEMETRY_")}
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    return env


@pytest.fixture
def sink_port() -> Iterator[int]:
    proc = subprocess.Popen(
        [sys.executable, str(PEERS / "sink.py"), "--port", "0"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=_env(),
    )
    try:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], 15.0)
        assert ready, "the sink did not start"
        line = proc.stdout.readline().decode()
        assert line.startswith("READY "), line
        yield int(line.split()[1])
    finally:
        assert proc.stdin is not None
        proc.stdin.close()  # the sink exits on stdin EOF
        try:
            proc.wait(5.0)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5.0)
        assert proc.stdout is not None
        proc.stdout.close()


@pytest.mark.parametrize("adapter", ["baseline", "telemetry_client"])
def test_child_run_counts_every_event_at_the_sink(sink_port: int, adapter: str) -> None:
    """A child run emits N events, finishes, and the sink confirms N distinct markers."""
    n = 300
    base = f"http://127.0.0.1:{sink_port}/test-{adapter}-{time.monotonic_ns()}"
    proc = subprocess.run(
        [sys.executable, str(PEERS / "_child.py"), adapter, "defaults", str(n), base],
        capture_output=True,
        text=True,
        timeout=90,
        env=_env(),
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    assert (r["sent"], r["delivered"], r["lost"]) == (n, n, 0)
    assert r["stop_reason"] == "all delivered"
    assert r["sink"]["decode_errors"] == 0
    assert r["sink"]["duplicate_markers"] == 0
    assert r["wire_bytes_per_delivered"] > 0
    assert r["cpu_us_per_delivered"] > 0
    assert r["emit"]["max_us"] >= r["emit"]["p99_us"] >= r["emit"]["p50_us"] > 0
    assert r["finish"]["ok"]


def test_child_reports_an_unsupported_mode(
    sink_port: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An adapter raising NotImplementedError for a mode yields ``unsupported``, not a crash."""
    child = _load("peer_child_under_test", PEERS / "_child.py")
    (tmp_path / "nocompress.py").write_text(
        "def make(endpoint_base, mode, marker_field):\n"
        "    raise NotImplementedError('no compression option')\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(child.adapters.ADAPTERS, "nocompress", "nocompress")
    out = child.run(
        "nocompress", "nodrop_compressed", 10, f"http://127.0.0.1:{sink_port}/x", None, 5, 1
    )
    assert out["unsupported"] == "no compression option"


def _result(**kw: Any) -> dict[str, Any]:
    """One child result, reduced to what ``run.figures`` reads."""
    n = kw.get("sent", 1000)
    r = {
        "sent": n,
        "delivered": kw.get("delivered", n),
        "emit": {"p50_us": kw["p50"], "p99_us": kw["p99"], "max_us": kw.get("max", 100.0)},
        "cpu_us_per_delivered": kw["cpu"],
        "events_per_s": 1000.0,
        "wire_bytes_per_delivered": kw["wire"],
        "rss_increase_mb": kw["rss"],
        "wall_s": 1.0,
        "stop_reason": "all delivered",
    }
    r["lost"] = r["sent"] - r["delivered"]
    return r


def test_targets_compare_with_the_best_peer_of_each_repetition() -> None:
    """Ratios are per repetition against the best qualifying peer; a dropping peer does not
    count as the cheapest no-drop peer."""
    run = _load("peer_run_under_test", PEERS / "run.py")
    tc = _result(p50=1.0, p99=10.0, cpu=30.0, wire=600.0, rss=20.0, max=4000.0)
    cheap_but_dropping = _result(p50=5.0, p99=30.0, cpu=10.0, wire=2000.0, rss=5.0, delivered=500)
    nodrop = _result(p50=20.0, p99=100.0, cpu=100.0, wire=700.0, rss=90.0)
    runs = {
        ("telemetry_client", "defaults"): [tc],
        ("posthog", "defaults"): [cheap_but_dropping],
        ("posthog", "nodrop"): [nodrop],
    }
    got = {t["target"]: t for t in run.targets(1000, runs, 1, raw_json=2400.0)}
    cpu = next(t for name, t in got.items() if name.startswith("client CPU"))
    assert cpu["ratio"] == pytest.approx(0.30)
    assert cpu["pass"]
    p50 = next(t for name, t in got.items() if name.startswith("emit p50"))
    assert p50["ratio"] == pytest.approx(0.2)  # against the dropping run: any mode counts
    assert p50["pass"]
    assert next(t for name, t in got.items() if name.startswith("worst single"))["pass"]
    wire = next(t for name, t in got.items() if name.endswith("below every peer's"))
    assert wire["ratio"] == pytest.approx(600 / 700)
    rss = next(t for name, t in got.items() if name.startswith("RSS"))
    assert rss["ratio"] == pytest.approx(20 / 90)
    assert rss["pass"]


def test_targets_not_judged_without_peers() -> None:
    """With no peer run, peer-relative targets are ``None`` (n/a), not MISS."""
    run = _load("peer_run_under_test", PEERS / "run.py")
    tc = _result(p50=1.0, p99=10.0, cpu=30.0, wire=600.0, rss=20.0)
    got = run.targets(1000, {("telemetry_client", "defaults"): [tc]}, 1, raw_json=2400.0)
    verdicts = {t["target"]: t["pass"] for t in got}
    assert verdicts["zero loss with defaults at N=1,000, emitted as fast as possible"] is True
    assert verdicts["emit p50 <= 1/3 of the best peer's"] is None
    assert verdicts["wire bytes per event <= 1/3 of raw JSON"] is True


def test_chart_is_well_formed_svg() -> None:
    """The hand-written SVG parses as XML, with missing values drawn as n/a."""
    chart = _load("peer_chart_under_test", PEERS / "chart.py")
    rows = [
        chart.Row("telemetry-client", "0.1.0", 39.0, 0.0, 9.9, kind="ours"),
        chart.Row("sentry <sdk> & co", "2.75.0", None, 99.9, 309.0),
        chart.Row("naive baseline", "httpx", 123.0, 0.0, 55.0, kind="baseline"),
    ]
    svg = chart.render(rows, title="t", subtitle="s", notes=["n1", "n2"])
    doc = xml.dom.minidom.parseString(svg)  # noqa: S318 - our own output
    texts = [t.firstChild.data for t in doc.getElementsByTagName("text") if t.firstChild]
    assert "n/a" in texts
    assert "sentry <sdk> & co" in texts
    assert "99.9%" in texts
