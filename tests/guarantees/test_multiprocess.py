"""Several processes share one spool: every event is delivered exactly once across readers.

4 emitter processes write 5000 uniquely marked events each into one spool at the same
time, in small batches, while 2 reader processes claim, record and ack (sometimes give
back) batches concurrently. Each acked event must appear exactly once across the readers,
none may be missing, and the spool must end empty and healthy.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import orjson
import pytest
from conftest import child_env

from telemetry_client import Spool

PROCS = Path(__file__).parent.parent / "_procs"
EMITTERS = 4
READERS = 2
EVENTS_PER_EMITTER = 5000
MAX_BYTES = 64 * 1024 * 1024
DEADLINE_S = 90.0


def _env(spool_dir: Path) -> dict[str, str]:
    return child_env(
        spool_dir,
        TELEMETRY_SPOOL_MAX_BYTES=str(MAX_BYTES),
        TELEMETRY_BATCH_MAX_EVENTS="50",  # ~400 batches: many seals, claims and acks interleave
        TELEMETRY_LINGER_MS="20",
        TELEMETRY_USER_ID="mp-test",
    )


def _wait(proc: subprocess.Popen[bytes], deadline: float, what: str) -> tuple[str, str]:
    try:
        out, err = proc.communicate(timeout=max(0.1, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        pytest.fail(f"{what} did not finish in time: {err.decode()[-2000:]}")
    assert proc.returncode == 0, f"{what} exited {proc.returncode}: {err.decode()[-2000:]}"
    return out.decode(), err.decode()


def test_concurrent_emitters_and_readers_deliver_each_event_once(tmp_path: Path) -> None:
    """4 emitters and 2 claiming readers on one spool: each event acked exactly once."""
    spool_dir = tmp_path / "spool"
    spool = Spool(spool_dir, max_bytes=MAX_BYTES)
    spool.open()
    go, done = tmp_path / "go", tmp_path / "done"
    env = _env(spool_dir)
    deadline = time.monotonic() + DEADLINE_S
    procs: list[subprocess.Popen[bytes]] = []
    try:
        readers = [
            subprocess.Popen(
                [
                    sys.executable,
                    str(PROCS / "mp_reader.py"),
                    str(spool_dir),
                    str(done),
                    str(tmp_path / f"reader{r}.json"),
                    str(1000 + r),
                ],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=env,
                cwd=tmp_path,
            )
            for r in range(READERS)
        ]
        procs += readers
        emitters = [
            subprocess.Popen(
                [
                    sys.executable,
                    str(PROCS / "mp_emitter.py"),
                    str(e),
                    str(EVENTS_PER_EMITTER),
                    str(go),
                ],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=env,
                cwd=tmp_path,
            )
            for e in range(EMITTERS)
        ]
        procs += emitters
        for e, proc in enumerate(emitters):
            assert proc.stdout is not None
            line = proc.stdout.readline()  # blocks until "ready" or EOF (the child died)
            assert line == b"ready\n", f"emitter {e} did not start: {proc.communicate()[1]!r}"
        go.touch()  # all emitters write at once

        for e, proc in enumerate(emitters):
            out, _ = _wait(proc, deadline, f"emitter {e}")
            report = orjson.loads(out.splitlines()[-1])
            assert report["ok"], report
            stats = report["stats"]
            assert stats["spooled"] == EVENTS_PER_EMITTER, stats
            assert stats["dropped"] == 0, stats
        done.touch()  # every batch is sealed: an empty claim now means drained

        results = []
        for r, proc in enumerate(readers):
            _wait(proc, deadline, f"reader {r}")
            results.append(orjson.loads((tmp_path / f"reader{r}.json").read_bytes()))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()

    batch_ids = Counter(bid for res in results for bid, _ in res["batches"])
    assert [b for b, n in batch_ids.items() if n > 1] == [], "a batch was acked twice"
    markers = Counter(m for res in results for _, ms in res["batches"] for m in ms)
    duplicates = sorted(m for m, n in markers.items() if n > 1)
    assert duplicates == [], f"{len(duplicates)} events read twice, e.g. {duplicates[:5]}"
    expected = {f"{e}-{i}" for e in range(EMITTERS) for i in range(EVENTS_PER_EMITTER)}
    missing = sorted(expected - set(markers))
    assert missing == [], f"{len(missing)} events never read, e.g. {missing[:5]}"
    assert set(markers) == expected
    for r, res in enumerate(results):
        print(f"reader {r}: {len(res['batches'])} batches acked, {res['released']} given back")
    assert all(res["batches"] for res in results), "a reader got nothing: no concurrency tested"

    assert spool.pending().batches == 0
    assert spool.quarantined() == []
    assert spool.dropped().events == 0
    assert os.listdir(spool_dir / "tmp") == []
    assert spool.check() == []
