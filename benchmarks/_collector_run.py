"""Process plumbing of ``benchmarks/collector.py``: PostgreSQL, collectors, clients, CPU.

PostgreSQL is the tests' own private cluster (``tests/_postgres.py``: the Debian server
binaries, loopback only, password authentication over TCP, fsync and synchronous commit
at their defaults). CPU comes from ``/proc/PID/stat`` (user + system, every thread); for
PostgreSQL the postmaster, its live children and the children it already reaped.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, Any

HERE = Path(__file__).resolve().parent
PROCS = HERE / "_collector_procs.py"
TESTS = HERE.parent / "tests"
READY_TIMEOUT_S = 60.0
RUN_TIMEOUT_S = 900.0
_TICK = os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> list[str]:
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()  # fields from 3 (state) on


def proc_cpu(pid: int, *, reaped_children: bool = False) -> float:
    """CPU seconds (user + system) of ``pid``; with its reaped children's too."""
    fields = _stat(pid)
    ticks = int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15)
    if reaped_children:
        ticks += int(fields[13]) + int(fields[14])  # cutime, cstime
    return ticks / _TICK


class PgCluster:
    """The private PostgreSQL server: fresh databases, and the CPU of all its processes."""

    def __init__(self, server: Any) -> None:
        self.server = server
        self._names: dict[str, str] = {}

    def describe(self) -> str:
        with self.server.admin() as conn:
            version = conn.execute("SHOW server_version").fetchone()[0]
            fsync = conn.execute("SHOW fsync").fetchone()[0]
            sync = conn.execute("SHOW synchronous_commit").fetchone()[0]
            buffers = conn.execute("SHOW shared_buffers").fetchone()[0]
        return (
            f"PostgreSQL {version} (tests/_postgres.py private cluster on 127.0.0.1, fsync={fsync},"
            f" synchronous_commit={sync}, shared_buffers={buffers})"
        )

    def new_database(self) -> str:
        name = self.server.create_database()
        url: str = self.server.url(name)
        self._names[url] = name
        return url

    def drop(self, url: str) -> None:
        self.server.drop_database(self._names.pop(url))

    def count(self, url: str) -> int:
        import psycopg

        with psycopg.connect(url) as conn:
            row = conn.execute("SELECT count(*) FROM events").fetchone()
        return int(row[0]) if row else 0

    def cpu(self) -> float:
        master = int((self.server.data / "postmaster.pid").read_text().split()[0])
        total = proc_cpu(master, reaped_children=True)
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                with contextlib.suppress(OSError, IndexError, ValueError):
                    if int(_stat(int(entry))[1]) == master:
                        total += proc_cpu(int(entry))
        return total

    def destroy(self) -> None:
        self.server.destroy()


def start_postgres() -> PgCluster:
    sys.path.insert(0, str(TESTS))
    from _postgres import PostgresServer

    server = PostgresServer()
    try:
        server.start()
    except BaseException:
        server.destroy()
        raise
    return PgCluster(server)


def _env(url: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TELEMETRY_")}
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HERE), env.get("PYTHONPATH")]))
    if url is not None:
        from _collector_procs import URL_ENV

        env[URL_ENV] = url
    return env


class _Child:
    """A child process talking line by line on stdout; stderr goes to a log file."""

    def __init__(self, argv: list[str], log: Path, url: str | None = None) -> None:
        self.log_path = log
        self._log = open(log, "wb")  # noqa: SIM115 - closed in close()
        self.proc = subprocess.Popen(
            [sys.executable, str(PROCS), *argv],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            env=_env(url),
        )
        self._buf = b""

    def line(self, timeout: float) -> str:
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise RuntimeError(f"no answer from {self.log_path.stem}; see {self._tail()}")
            ready, _, _ = select.select([fd], [], [], min(left, 0.5))
            if ready:
                chunk = os.read(fd, 1 << 20)
                if not chunk:
                    raise RuntimeError(f"{self.log_path.stem} exited: {self._tail()}")
                self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        return line.decode()

    def _tail(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")[-2000:] or str(self.log_path)

    def send(self, text: str) -> None:
        stdin: IO[bytes] | None = self.proc.stdin
        assert stdin is not None
        stdin.write(text.encode())
        stdin.flush()

    def close(self, timeout: float = 20.0) -> None:
        with contextlib.suppress(OSError):
            if self.proc.stdin is not None:
                self.proc.stdin.close()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.terminate()
            try:
                self.proc.wait(5.0)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5.0)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self._log.close()


class ServerProc(_Child):
    """A collector (``_collector_procs.py serve``) on ``root``; ``port`` once it is up."""

    def __init__(self, variant: str, root: Path, url: str | None, name: str = "") -> None:
        root.mkdir(parents=True, exist_ok=True)
        super().__init__(["serve", variant, str(root)], root / f"server{name}.log", url)
        line = self.line(READY_TIMEOUT_S)
        if not line.startswith("READY "):
            raise RuntimeError(f"unexpected line from the collector: {line!r}")
        self.port = int(line.split()[1])
        self.pid = self.proc.pid

    def stop(self) -> None:
        self.close()


def _stored(variant: str, root: Path, url: str | None, pg: PgCluster | None) -> int:
    if variant == "jsonl":
        journal = (root / "jsonl" / "journal.jsonl").read_bytes().splitlines()
        return sum(int(json.loads(line)["events"]) for line in journal)
    if variant == "sqlite":
        with contextlib.closing(sqlite3.connect(root / "db" / "collector.db")) as conn:
            return int(conn.execute("SELECT count(*) FROM events").fetchone()[0])
    assert pg is not None
    assert url is not None
    return pg.count(url)


def run_ingest(variant: str, root: Path, batch_paths: list[Path], pg: PgCluster | None) -> Any:
    """One ingest run of ``variant``: fresh store, collectors, clients; the figures."""
    replicas = 2 if variant == "postgres-2x" else 1
    url = pg.new_database() if variant.startswith("postgres") and pg is not None else None
    kind = "postgres" if variant.startswith("postgres") else variant
    servers: list[ServerProc] = []
    clients: list[_Child] = []
    try:
        for i in range(replicas):
            servers.append(ServerProc(kind, root, url, name=str(i)))
        for i, path in enumerate(batch_paths):
            port = servers[i % replicas].port
            clients.append(_Child(["client", str(path), str(port)], root / f"client{i}.log"))
        for c in clients:
            if c.line(READY_TIMEOUT_S) != "READY":
                raise RuntimeError("a client did not get ready")
        cpu0 = [proc_cpu(s.pid) for s in servers]
        db0 = pg.cpu() if url is not None and pg is not None else 0.0
        for c in clients:
            c.send("go\n")
        results = [json.loads(c.line(RUN_TIMEOUT_S)) for c in clients]
        cpu = sum(proc_cpu(s.pid) - c0 for s, c0 in zip(servers, cpu0, strict=True))
        db = (pg.cpu() - db0) if url is not None and pg is not None else 0.0
    finally:
        for c in clients:
            c.close()
        for s in servers:
            s.stop()
    stored = _stored(kind, root, url, pg)
    if url is not None and pg is not None:
        pg.drop(url)
    wall = max(r["end"] for r in results) - min(r["start"] for r in results)
    sent = sum(r["events"] for r in results)
    latencies = sorted(x * 1000 for r in results for x in r["latencies_s"])
    problems = [
        f"client {i}: {r['errors']} errors ({r['last_error']})"
        for i, r in enumerate(results)
        if r["errors"]
    ]
    if stored != sent:
        problems.append(f"{stored:,} events stored of {sent:,} sent")
    return {
        "variant": variant,
        "replicas": replicas,
        "sent": sent,
        "accepted": sum(r["accepted"] for r in results),
        "stored": stored,
        "batches": sum(r["batches"] for r in results),
        "retries_503": sum(r["retries"] for r in results),
        "wire_bytes": sum(r["wire_bytes"] for r in results),
        "wall_s": wall,
        "events_per_s": stored / wall,
        "per_process_events_per_s": stored / wall / replicas,
        "collector_cpu_s": cpu,
        "cpu_us_per_event": cpu / max(1, stored) * 1e6,
        "db_cpu_s": db,
        "db_cpu_us_per_event": db / max(1, stored) * 1e6,
        "req_p50_ms": latencies[len(latencies) // 2] if latencies else 0.0,
        "req_p99_ms": latencies[max(0, int(len(latencies) * 0.99) - 1)] if latencies else 0.0,
        "problems": problems,
    }
