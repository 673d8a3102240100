"""Crash guarantee (README): SIGKILL at any instant loses nothing older than linger + 0.5 s.

A real child process (``tests/_procs/crash_emitter.py``) emits continuously into a fresh
spool and reports every event's marker and emit time on its stdout pipe; the parent kills
it with SIGKILL at a seeded random moment. A fresh ``Spool`` on the same directory must
then be healthy (``check() == []``), hold only whole batches (each decompresses to its
announced count: ``check()`` and ``claim()`` verify that), never the same event twice, and
every event emitted more than ``TELEMETRY_LINGER_MS`` + 0.5 s before the kill.

Seeded: set ``CRASH_TEST_SEED`` to replay a run; the seed is printed and in every message.
"""

from __future__ import annotations

import dataclasses
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import orjson
import pytest
from conftest import child_env

from telemetry_client import Spool

EMITTER = Path(__file__).parent.parent / "_procs" / "crash_emitter.py"
LINGER_MS = 100
GRACE_S = LINGER_MS / 1000 + 0.5  # README, "Guarantees"
RUNS = 5
MAX_BYTES = 1 << 30
START_TIMEOUT_S = 30.0


def _seed() -> int:
    raw = os.environ.get("CRASH_TEST_SEED")
    return int(raw) if raw else random.SystemRandom().randrange(2**32)


def _child_env(spool_dir: Path, extra: dict[str, str]) -> dict[str, str]:
    return child_env(
        spool_dir,
        TELEMETRY_LINGER_MS=str(LINGER_MS),
        TELEMETRY_SPOOL_MAX_BYTES=str(MAX_BYTES),
        TELEMETRY_USER_ID="crash-test",
        PYTHONUNBUFFERED="1",
        **extra,
    )


@dataclasses.dataclass
class RunResult:
    """What one kill left behind, as seen by the parent."""

    emitted: dict[int, float]  # marker -> wall time right after its emit() returned
    kill_at: float
    tmp_leftovers: int  # files under tmp/ right after the kill: killed mid-write


def _wait_for_write(tmp: Path, timeout_s: float, then_s: float) -> None:
    """Spin until a batch is being written (a file exists under ``tmp/``), then ``then_s`` more.

    Spinning, not sleeping: a write lasts a few milliseconds.
    """
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if os.listdir(tmp):
                break
        except FileNotFoundError:
            pass
    end = time.perf_counter() + then_s
    while time.perf_counter() < end:
        pass


def _run_and_kill(
    spool_dir: Path,
    delay_s: float,
    *,
    pad_bytes: int,
    burst: int,
    env_extra: dict[str, str],
    mid_write: float | None,
) -> RunResult:
    stderr_path = spool_dir.parent / "emitter.stderr"
    with stderr_path.open("wb") as stderr_file:  # a file: a full pipe would stall the child
        proc = subprocess.Popen(
            [sys.executable, str(EMITTER), str(pad_bytes), str(burst)],
            stdout=subprocess.PIPE,
            stderr=stderr_file,
            env=_child_env(spool_dir, env_extra),
            cwd=spool_dir.parent,
        )

    def stderr_tail() -> str:
        return stderr_path.read_text(errors="replace")[-2000:]

    lines: list[bytes] = []
    first_line = threading.Event()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:  # until EOF: also drains what was still in the pipe
            lines.append(line)
            first_line.set()

    reader = threading.Thread(target=pump, name="crash-test-pump", daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not first_line.wait(0.05):
            if proc.poll() is not None or time.monotonic() > deadline:
                break
        assert first_line.is_set(), f"emitter did not start (rc={proc.poll()}): {stderr_tail()}"
        # The delay starts once events flow; the child is emitting the whole time.
        end = time.monotonic() + delay_s
        while (left := end - time.monotonic()) > 0:
            assert proc.poll() is None, f"emitter died: rc={proc.returncode} {stderr_tail()}"
            time.sleep(min(left, 0.05))
        if mid_write is not None:
            # Writes take a few ms per 100 ms on a fast disk: aim the kill at one, at a
            # random point of it (torn, or whole but not yet renamed, or just published).
            _wait_for_write(spool_dir / "tmp", timeout_s=3.0, then_s=mid_write)
        kill_at = time.time()
        proc.send_signal(signal.SIGKILL)
        rc = proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    reader.join(timeout=30)
    assert not reader.is_alive()
    assert proc.stdout is not None
    proc.stdout.close()
    assert rc == -signal.SIGKILL, f"emitter exited with {rc} before the kill: {stderr_tail()}"
    emitted: dict[int, float] = {}
    for line in lines:
        parts = line.split()
        if len(parts) == 2 and line.endswith(b"\n"):
            emitted[int(parts[0])] = float(parts[1])
    tmp = spool_dir / "tmp"
    leftovers = len(os.listdir(tmp)) if tmp.exists() else 0
    return RunResult(emitted, kill_at, leftovers)


def _verify_spool(spool_dir: Path, run: RunResult, label: str) -> dict[str, int]:
    """Everything README "Guarantees" promises about what a killed process left; returns stats."""
    spool = Spool(spool_dir, max_bytes=MAX_BYTES)
    spool.open()  # what the next client does: recovers or removes the dead writer's tmp file
    assert spool.check() == [], label
    # open() recovered or removed the dead writer's tmp file; only a file the writer died
    # before locking (still empty, hence nothing written) is left for a later recovery.
    left = [(f, (spool_dir / "tmp" / f).stat().st_size) for f in os.listdir(spool_dir / "tmp")]
    assert all(size == 0 for _, size in left), f"{label}: open() left tmp files behind: {left}"
    assert spool.quarantined() == [], f"{label}: a sealed batch was unreadable"

    # Read-only pass: iter_batches_newest_first skips unreadable batches silently, so
    # compare with what the directory listing announces.
    announced = spool.pending()
    seen: list[int] = []
    for name, raw in spool.iter_batches_newest_first():
        rows = [orjson.loads(line) for line in raw.splitlines()]
        assert len(rows) == name.n_events, label
        seen.extend(r["data"]["marker"] for r in rows)
    assert len(seen) == announced.events, f"{label}: some batch was not readable"

    # Delivery pass, as the next uploader would do it: claim, read, ack.
    claimed: list[int] = []
    while (c := spool.claim()) is not None:
        rows = c.events()
        assert len(rows) == c.n_events, label
        claimed.extend(r["data"]["marker"] for r in rows)
        spool.ack(c)
    assert sorted(claimed) == sorted(seen), label
    assert spool.pending().batches == 0, label
    assert spool.quarantined() == [], label
    assert spool.check() == [], label

    assert len(claimed) == len(set(claimed)), f"{label}: an event is in the spool twice"
    emitted_max = max(run.emitted)
    assert all(isinstance(m, int) and m >= 1 for m in claimed), label
    cutoff = run.kill_at - GRACE_S
    required = {m for m, t in run.emitted.items() if t < cutoff}
    missing = sorted(required - set(claimed))
    assert not missing, (
        f"{label}: {len(missing)} of {len(required)} events emitted more than {GRACE_S:.1f} s "
        f"before the kill are not on disk; first missing marker {missing[0]} emitted "
        f"{run.kill_at - run.emitted[missing[0]]:.2f} s before the kill "
        f"(spooled {len(claimed)}, emitted >= {emitted_max}, dropped {spool.dropped()})"
    )
    return {
        "emitted": emitted_max,
        "required": len(required),
        "spooled": len(claimed),
        "torn": spool.dropped().by_reason.get("torn", {}).get("events", 0),
        "empty_tmp_left": len(left),
    }


def _crash_runs(
    tmp_path: Path,
    seed: int,
    *,
    delays: tuple[float, float],
    pad_bytes: int,
    burst: int,
    env_extra: dict[str, str],
    mid_write: bool = False,
) -> list[RunResult]:
    rng = random.Random(seed)
    chosen = [round(rng.uniform(*delays), 3) for _ in range(RUNS)]
    # Mid-write runs: every other kill lands as soon as a write starts (mostly torn
    # frames), the others up to 4 ms later (whole frames not yet renamed, or published).
    jitter = [
        (rng.uniform(0.0, 0.004) if i % 2 else 0.0) if mid_write else None for i in range(RUNS)
    ]
    print(f"crash test seed={seed} (CRASH_TEST_SEED={seed} replays) delays={chosen}")
    results = []
    for i, delay in enumerate(chosen):
        spool_dir = tmp_path / f"run{i}" / "spool"
        spool_dir.parent.mkdir()
        run = _run_and_kill(
            spool_dir,
            delay,
            pad_bytes=pad_bytes,
            burst=burst,
            env_extra=env_extra,
            mid_write=jitter[i],
        )
        label = f"seed={seed} run={i} delay={delay}s"
        stats = _verify_spool(spool_dir, run, label)
        print(f"  {label}: tmp files at kill={run.tmp_leftovers} {stats}")
        results.append(run)
        shutil.rmtree(spool_dir.parent)  # big pads: keep the disk footprint small
    return results


@pytest.mark.slow
def test_sigkill_loses_nothing_older_than_linger(tmp_path: Path) -> None:
    """Small events, batches cut by size and by linger, SIGKILL at a random moment.

    Delays start once events flow and exceed linger + 0.5 s, so every run has events the
    guarantee covers.
    """
    _crash_runs(
        tmp_path,
        _seed(),
        delays=(0.7, 1.7),
        pad_bytes=16,
        burst=10,
        env_extra={"TELEMETRY_BATCH_MAX_EVENTS": "500"},
    )


@pytest.mark.slow
def test_sigkill_mid_write_leaves_no_partial_batch(tmp_path: Path) -> None:
    """Big batches (MBs, cut by linger only); after a random delay the kill waits for a write.

    The dead writer's tmp file is either a whole frame (published by the next ``open()``)
    or removed and counted as ``torn``; no partial batch is ever visible, and the
    guarantee holds as for any other kill.
    """
    runs = _crash_runs(
        tmp_path,
        _seed(),
        delays=(0.3, 1.5),
        pad_bytes=2048,
        burst=5,
        env_extra={
            "TELEMETRY_BATCH_MAX_EVENTS": "100000",
            "TELEMETRY_BATCH_MAX_BYTES": "64MiB",
        },
        mid_write=True,
    )
    mid = sum(r.tmp_leftovers > 0 for r in runs)
    print(f"  killed while a tmp file existed in {mid} of {len(runs)} runs")
    assert mid > 0, "no kill landed during a write: the test did not exercise recovery"
