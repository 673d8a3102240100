"""Two uvicorn worker processes on one spool: each lists, decides and reverts the other's ops."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path

import httpx
import orjson
import pytest
from conftest import child_env, wait_until

from telemetry_client.spool import Spool

pytest_plugins = ["_changes_fixtures"]


HERE = Path(__file__).resolve().parent


def _spawn(env: dict[str, str], log: Path) -> tuple[subprocess.Popen[bytes], str]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    port = sock.getsockname()[1]
    command = [sys.executable, "-m", "uvicorn", "_panel_app:app", "--fd", str(sock.fileno())]
    command += ["--log-level", "warning", "--ws", "none"]
    with log.open("wb") as out:
        proc = subprocess.Popen(
            command, env=env, stdout=out, stderr=subprocess.STDOUT, pass_fds=[sock.fileno()]
        )
    sock.close()  # the child has its own copy
    return proc, f"http://127.0.0.1:{port}"


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[tuple[list[httpx.Client], Path, Path, Callable[[], None]]]:
    spool, root = tmp_path / "spool", tmp_path / "ws"
    root.mkdir()
    paths = [str(HERE), str(HERE.parent), os.environ.get("PYTHONPATH", "")]
    env = child_env(spool, CHANGES_ROOT=str(root), PYTHONPATH=os.pathsep.join(paths))
    procs = [_spawn(env, tmp_path / f"w{i}.log") for i in range(2)]
    clients = [httpx.Client(base_url=base, timeout=10, trust_env=False) for _, base in procs]
    try:
        for http in clients:
            wait_until(partial(_up, http), timeout=30, interval=0.05, what="worker up")

        def stop() -> None:
            """SIGTERM both; each shuts down gracefully (its lifespan flushes the events into
            the spool), then uvicorn re-raises the signal: exit 0 or -SIGTERM."""
            for proc, _ in procs:
                proc.send_signal(signal.SIGTERM)
            for i, (proc, _) in enumerate(procs):
                code = proc.wait(timeout=30)
                assert code in (0, -signal.SIGTERM), (tmp_path / f"w{i}.log").read_text()[-2000:]

        yield clients, root, spool, stop
    finally:
        for http in clients:
            http.close()
        for proc, _ in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def _up(http: httpx.Client) -> int | None:
    try:
        return int(http.get("/health").json()["pid"])
    except httpx.TransportError:
        return None


def _decide(http: httpx.Client, op: str, decision: str, user: str) -> httpx.Response:
    headers = {"content-type": "application/json", "X-User-ID": user}
    return http.post(f"/api/changes/{op}/{decision}", headers=headers)


def test_two_workers_share_the_journal_and_serialise_decisions(
    workers: tuple[list[httpx.Client], Path, Path, Callable[[], None]],
) -> None:
    """An op written in worker A is listed and reverted by worker B; A sees the decision;
    the same revert sent to both at once is done once (one changed=true, one
    change_decision event), the other answered as a repeat."""
    (a, b), root, spool, stop = workers
    assert _up(a) != _up(b)
    (root / "x.txt").write_text("v1\n")
    op = a.post("/write/x.txt", params={"text": "v2\n"}).json()["op_id"]
    listed = b.get("/api/changes/recent").json()["changes"]
    assert [c["op_id"] for c in listed] == [op]
    assert _decide(b, op, "revert", "bob").status_code == 200
    assert (root / "x.txt").read_text() == "v1\n"
    assert a.get("/api/changes/recent").json()["changes"][0]["decision"] == "revert"

    ops = [a.post("/write/y.txt", params={"text": f"{i}\n"}).json()["op_id"] for i in range(3)]
    race = ops[-1]
    with ThreadPoolExecutor(2) as pool:
        answers = list(pool.map(lambda h: _decide(h, race, "revert", "carol"), (a, b)))
    assert [r.status_code for r in answers] == [200, 200]
    assert sorted(r.json()["changed"] for r in answers) == [False, True]
    assert (root / "y.txt").read_text() == "1\n"

    stop()
    assert _spooled_decisions(spool) == {(op, "revert", "bob"), (race, "revert", "carol")}


def _spooled_decisions(spool: Path) -> set[tuple[str, str, str]]:
    found = set()
    for _name, raw in Spool(spool, max_bytes=1 << 30).iter_batches_newest_first():
        for line in raw.splitlines():
            e = orjson.loads(line)
            if e["type"] == "change_decision":
                found.add((e["data"]["op_id"], e["data"]["decision"], e["user_id"]))
    return found
