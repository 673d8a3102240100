"""Process driver of test_fork: a client whose process forks; everyone reports as JSON.

Usage: ``fork_driver.py MODE OUT_DIR [ARGS...]``; settings come from ``TELEMETRY_*``.
Run in its own process so pytest's process never forks. Every event is ``fork_probe``
with ``data = {"who": "parent" | "child<k>", "i": n, "pid": os.getpid(), "pad": ...}``.
The parent prints one JSON report line on stdout; each child writes ``OUT_DIR/<who>.json``
and leaves with ``os._exit`` (no atexit, no inherited buffers flushed twice).

Modes:

``forks PRE CHILD POST FORKS PAD``
    ``FORKS`` times: the parent emits ``PRE`` events (not flushed: its writer is busy with
    them while it forks), then forks a child that emits ``CHILD`` events, flushes (its
    writer thread must have restarted), looks at the spool, emits ``CHILD`` more and
    closes. Then the parent emits ``POST`` events, waits for its children and closes.

``lock-held``
    Fork while the parent's writer thread waits for the spool's global lock (held by
    another open file description, as another process would), then check that neither
    the parent nor the child is wedged by the child's copy of that lock file.

``recover-held``
    Fork while the parent's writer thread recovers a dead writer's tmp file (blocked on
    the global lock while holding the tmp file's lock), then check that the recovered
    batch can be claimed while the child still lives.
"""

from __future__ import annotations

import fcntl
import os
import sys
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import zstandard

from telemetry_client import Spool, TelemetryClient
from telemetry_client._internal import ids as _ids

WRITER_THREAD = "telemetry-spool-writer"


def emit(client: TelemetryClient, who: str, i: int, pad: str = "") -> None:
    client.emit("fork_probe", {"who": who, "i": i, "pid": os.getpid(), "pad": pad})


def spool_fds(root: Path) -> list[str]:
    """Targets of this process's open fds that are inside the spool."""
    out = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith(str(root)):
            out.append(target)
    return sorted(out)


def wait_for(predicate: Callable[[], Any], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        time.sleep(0.001)


def writer_alive() -> bool:
    return any(t.name == WRITER_THREAD and t.is_alive() for t in threading.enumerate())


def in_child(out: Path, body: Callable[[], dict[str, Any]]) -> None:
    """Run ``body`` in a forked child, write its report, and leave with ``os._exit``."""
    code = 0
    try:
        report = body()
    except BaseException:
        report = {"error": traceback.format_exc()}
        code = 4
    try:
        out.write_bytes(orjson.dumps(report))
    finally:
        os._exit(code)


def visible(client: TelemetryClient, who: str) -> int:
    """How many of ``who``'s events (from this pid) sealed batches hold right now."""
    me = os.getpid()
    n = 0
    for _, raw in client.spool.iter_batches_newest_first():
        for line in raw.splitlines():
            data = orjson.loads(line)["data"]
            n += data.get("who") == who and data.get("pid") == me
    return n


def mode_forks(out_dir: Path, pre: int, child_n: int, post: int, forks: int, pad_len: int) -> None:
    client = TelemetryClient().start()
    root = client.spool.root
    pad = "x" * pad_len
    i = 0
    children: dict[str, int] = {}
    writing: list[int] = []
    for k in range(forks):
        for _ in range(pre):
            emit(client, "parent", i, pad)
            i += 1
        who = f"child{k}"
        writing.append(len(os.listdir(root / "tmp")) if (root / "tmp").exists() else 0)
        pid = os.fork()
        if pid == 0:

            def body(who: str = who) -> dict[str, Any]:
                inherited = spool_fds(root)  # the fork hook closed the parent's spool files
                threads_at_start = [t.name for t in threading.enumerate()]
                for j in range(child_n):
                    emit(client, who, j, pad)
                flushed = client.flush_sync(timeout=30)
                alive = writer_alive()
                on_disk = visible(client, who)
                for j in range(child_n, 2 * child_n):
                    emit(client, who, j, pad)
                closed = client.close(timeout=30)
                return {
                    "pid": os.getpid(),
                    "inherited_fds": inherited,
                    "threads_at_start": threads_at_start,
                    "flushed": flushed.ok,
                    "writer_alive_after_emit": alive,
                    "visible_after_flush": on_disk,
                    "closed": closed.ok,
                    "stats": client.stats(),
                }

            in_child(out_dir / f"{who}.json", body)
        children[who] = pid
    for _ in range(post):
        emit(client, "parent", i, pad)
        i += 1
    codes = {who: os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) for who, pid in children.items()}
    closed = client.close(timeout=30)
    report = {
        "pid": os.getpid(),
        "children": children,
        "exit_codes": codes,
        "parent_events": i,
        "tmp_files_at_forks": writing,
        "closed": closed.ok,
        "stats": client.stats(),
    }
    print(orjson.dumps(report).decode(), flush=True)


def lock_fds(root: Path) -> int:
    return spool_fds(root).count(str(root / ".lock"))


def hold_global_lock(root: Path) -> int:
    """Take the spool's global lock through our own open file description."""
    fd = os.open(root / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    return fd


def fork_idle_child() -> tuple[int, int]:
    """A child that keeps its inherited fds and waits for one byte on a pipe: a long-lived
    pre-fork worker that has not used telemetry yet. Returns (pid, write end)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(w)
        os.read(r, 1)
        os._exit(0)
    os.close(r)
    return pid, w


def mode_lock_held(out_dir: Path) -> None:
    client = TelemetryClient().start()
    root = client.spool.root
    emit(client, "parent", 0)
    assert client.flush_sync(timeout=10).ok  # spool open, one batch sealed
    blocker = hold_global_lock(root)
    emit(client, "parent", 1)
    # The writer opens .lock for the seal and blocks in flock(): a second fd on .lock.
    wait_for(lambda: lock_fds(root) >= 2, 10, "writer never reached the global lock")
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(w)

        def body() -> dict[str, Any]:
            os.read(r, 1)  # idle until the parent has checked itself
            for j in range(5):
                emit(client, "child0", j)
            closed = client.close(timeout=5)
            return {"pid": os.getpid(), "closed": closed.ok, "stats": client.stats()}

        in_child(out_dir / "child0.json", body)
    os.close(r)
    fcntl.flock(blocker, fcntl.LOCK_UN)
    os.close(blocker)
    emit(client, "parent", 2)
    t0 = time.monotonic()
    parent_flush = client.flush_sync(timeout=5)  # must not wait for the child to exit
    parent_flush_s = time.monotonic() - t0
    os.write(w, b"x")
    os.close(w)
    code = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
    closed = client.close(timeout=10)
    report = {
        "pid": os.getpid(),
        "children": {"child0": pid},
        "exit_codes": {"child0": code},
        "parent_events": 3,
        "parent_flush_while_child_alive": parent_flush.ok,
        "parent_flush_s": parent_flush_s,
        "closed": closed.ok,
        "stats": client.stats(),
    }
    print(orjson.dumps(report).decode(), flush=True)


def mode_recover_held(out_dir: Path) -> None:
    del out_dir
    root = Path(os.environ["TELEMETRY_SPOOL_DIR"])
    max_bytes = int(os.environ["TELEMETRY_SPOOL_MAX_BYTES"])
    reader = Spool(root, max_bytes=max_bytes)
    reader.open()
    # A whole tmp file left by a dead writer: the next client's open() publishes it.
    line = orjson.dumps(
        {
            "id": "0",
            "type": "fork_probe",
            "ts": "2026-01-01T00:00:00.000000Z",
            "session_id": "s",
            "user_id": "u",
            "machine_id": "m",
            "app": "default",
            "app_version": None,
            "seq": 1,
            "data": {"who": "dead", "i": 0},
        }
    )
    body = zstandard.ZstdCompressor(write_checksum=True).compress(line + b"\n")
    leftover = root / "tmp" / f"{_ids.batch_id()}.1.tmp"
    fd = os.open(leftover, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.write(fd, body)
    os.close(fd)
    blocker = hold_global_lock(root)
    client = TelemetryClient().start()  # its writer opens the spool and recovers the leftover
    wait_for(
        lambda: str(leftover) in spool_fds(root) and lock_fds(root) >= 2,
        10,
        "writer never reached recovery's global lock",
    )
    pid, w = fork_idle_child()
    fcntl.flock(blocker, fcntl.LOCK_UN)
    os.close(blocker)
    emit(client, "parent", 0)
    assert client.flush_sync(timeout=10).ok  # so the writer's open() (and recovery) is over
    assert not leftover.exists()
    # The child is still alive and idle: every batch, the recovered one too, is claimable.
    claimed: list[str] = []
    while (claim := reader.claim()) is not None:
        claimed += [orjson.loads(x)["data"]["who"] for x in claim.lines()]
        reader.ack(claim)
    os.write(w, b"x")
    os.close(w)
    code = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
    closed = client.close(timeout=10)
    report = {
        "claimed_while_child_alive": sorted(claimed),
        "exit_codes": {"child": code},
        "closed": closed.ok,
        "pending_after": reader.pending().batches,
    }
    print(orjson.dumps(report).decode(), flush=True)


def main() -> None:
    mode, out_dir, args = sys.argv[1], Path(sys.argv[2]), [int(a) for a in sys.argv[3:]]
    if mode == "forks":
        mode_forks(out_dir, *args)
    elif mode == "lock-held":
        mode_lock_held(out_dir)
    elif mode == "recover-held":
        mode_recover_held(out_dir)
    else:
        sys.exit(f"unknown mode {mode}")


if __name__ == "__main__":
    main()
