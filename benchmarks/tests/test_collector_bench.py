"""Smoke test of the collector storage benchmark (``benchmarks/collector.py``).

Runs the whole harness on a few hundred events: every variant's collector under uvicorn
(the 0.1 JSONL store, SQLite, PostgreSQL on a real private server, two replicas), client
processes, the in-process fill and the HTTP queries. Asserts that it completes, stores
every event exactly once and prints its figures and targets; never a timing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(BENCH))

from _legacy_store import LegacyJsonlStore  # noqa: E402

from telemetry_client.collector._decode import validate_envelope  # noqa: E402
from telemetry_client.collector.store.base import EventQuery, Ingest, ReadScope  # noqa: E402


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TELEMETRY_")}
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    return env


def test_the_benchmark_runs_end_to_end_and_prints_its_figures(tmp_path: Path) -> None:
    out_json = tmp_path / "collector.json"
    done = subprocess.run(
        [
            sys.executable,
            str(BENCH / "collector.py"),
            *("--n", "300", "--clients", "2", "--reps", "1"),
            *("--sizes", "250,500", "--samples", "3", "--json", str(out_json)),
        ],
        capture_output=True,
        text=True,
        timeout=240,
        env=_env(),
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    text = done.stdout
    for variant in ("jsonl", "sqlite", "postgres", "postgres-2x"):
        assert f"| {variant} |" in text
    assert "events/s per collector" in text
    assert "session page p50" in text
    assert "SQLite ingest >= 0.8x the JSONL store's" in text
    assert "two replicas on one database > one" in text

    results = json.loads(out_json.read_text())
    for variant, runs in results["ingest"].items():
        assert len(runs) == 1, variant
        (run,) = runs
        assert run["stored"] == run["sent"] == 300, variant
        assert run["problems"] == []
        assert run["events_per_s"] > 0
    queries = {(r["backend"], r["events"]) for r in results["queries"]}
    for size in (250, 500):
        assert {("sqlite", size), ("postgres", size), ("jsonl (0.1, in-process)", size)} <= queries
    assert all(not r.get("errors") for r in results["queries"])
    assert len(results["targets"]) == 7
    assert all(t["pass"] in (True, False) for t in results["targets"])


def test_the_legacy_adapter_stores_through_the_01_file_store(tmp_path: Path) -> None:
    store = LegacyJsonlStore(tmp_path)
    try:
        event = validate_envelope(
            {
                "id": "e1",
                "type": "chat_turn",
                "ts": "2026-12-05T10:00:00Z",
                "session_id": "s",
                "user_id": "u",
                "machine_id": "m",
                "app": "a",
                "app_version": None,
                "seq": 1,
                "data": {},
            },
            "e1",
        )
        assert not store.append([event], "k", Ingest("t")).duplicate
        assert store.append([event], "k", Ingest("t")).duplicate
        assert store.has_key("k")
        assert (tmp_path / "events" / "2026-12-05" / "u.jsonl").read_bytes() == event.line
        assert store.check() == []
        with pytest.raises(NotImplementedError):
            store.events(EventQuery(), ReadScope())
    finally:
        store.close()
