"""Two collector replicas on one PostgreSQL database, end to end (CONTRACT §8.1).

Real parts only: two ``telemetry-collector`` processes (``--database-url`` of one fresh
database), real ``TelemetryClient`` processes (``_procs/mp_emitter.py``, each with its own
spool) and, between them, ``_fault_proxy.HttpFaultProxy``: a loopback load balancer that
routes each request to a replica and sends a retry (same ``Idempotency-Key``) to the
other one. What is proved:

- a batch stored by one replica whose answer never reached the client is answered
  ``{"duplicate": true}`` by the other replica on retry, and every event is stored once;
- a replica SIGKILLed in the middle of a batch's transaction (held there by a table lock
  the test takes, seen in ``pg_stat_activity``) leaves nothing behind: the retry, sent to
  the other replica while the dead one's transaction still holds the key, waits for it
  to abort, then stores the batch, once.

Stored events are read back by cursor paging with an admin token and compared, as
multisets of ids, with the events the clients put on the wire (the proxy keeps the
request bodies).
"""

from __future__ import annotations

import gzip
import io
import os
import signal
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import httpx
import orjson
import pytest
import zstandard
from _fault_proxy import EVENTS_PATH, Exchange, FailoverRouter, HttpFaultProxy
from _postgres import PostgresServer
from conftest import child_env, wait_until

from telemetry_client import Spool
from telemetry_client.collector.store.open import open_store

PROCS = Path(__file__).parent.parent / "_procs"
HANG_BOUND_S = 60.0
INGEST_TOKEN = "replicas-ingest-" + os.urandom(8).hex()
ADMIN_TOKEN = "replicas-admin-" + os.urandom(8).hex()
CLIENT_ENV = {
    "TELEMETRY_TOKEN": INGEST_TOKEN,
    "TELEMETRY_UPLOAD_BACKOFF_INITIAL": "20ms",
    "TELEMETRY_UPLOAD_BACKOFF_MAX": "200ms",
    "TELEMETRY_REPLAY_RATE": "0",
    "TELEMETRY_LINGER_MS": "20",
    "TELEMETRY_UPLOAD_TIMEOUT": "60s",  # a retry comes from the fault, never a slow machine
}


# -- collector replicas ------------------------------------------------------------------


@dataclass
class Replica:
    """One ``telemetry-collector`` process."""

    name: str
    proc: subprocess.Popen[bytes]
    log: Path
    url: str = ""

    def get(self, path: str, **params: Any) -> Any:
        headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        response = httpx.get(self.url + path, params=params, headers=headers, timeout=30)
        assert response.status_code == 200, response.text
        return response.json() if path != "/metrics" else response.text

    def metric(self, series: str) -> float:
        """The value of one Prometheus series, e.g. ``duplicates_total{kind="events"}``."""
        for line in self.get("/metrics").splitlines():
            name, _, value = line.rpartition(" ")
            if name == "telemetry_collector_" + series:
                return float(value)
        return 0.0

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(HANG_BOUND_S)


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.upper().startswith("TELEMETRY_")}


def _first_line(stream: IO[bytes]) -> bytes:
    """The stream's first line, or b"" if none came within the hang bound."""
    line: list[bytes] = []
    reader = threading.Thread(target=lambda: line.append(stream.readline()), daemon=True)
    reader.start()
    reader.join(HANG_BOUND_S)
    return line[0] if line else b""


def _start(replicas: list[Replica]) -> None:
    """Wait for every replica's ready line (they start at once: migrations race too)."""
    prefix = b"telemetry-collector listening on "
    for replica in replicas:
        assert replica.proc.stdout is not None
        line = _first_line(replica.proc.stdout)
        if not line.startswith(prefix):
            replica.kill()
            raise AssertionError(f"{replica.name} did not start:\n{replica.log.read_text()}")
        replica.url = line[len(prefix) :].decode().strip()


@pytest.fixture
def start_replicas(tmp_path: Path, postgres_url: str) -> Iterator[Any]:
    """``start(names, *args)`` -> running replicas on this test's database (each URL
    carries ``application_name=<name>``, which names its sessions in pg_stat_activity)."""
    tokens = tmp_path / "tokens"
    tokens.write_text(
        f"{INGEST_TOKEN} name=apps roles=ingest\n{ADMIN_TOKEN} name=ops roles=admin\n"
    )
    tokens.chmod(0o600)
    started: list[Replica] = []

    def start(names: list[str], *args: str) -> list[Replica]:
        batch = []
        for name in names:
            log = tmp_path / f"{name}.log"
            command = [sys.executable, "-m", "telemetry_client.collector", "--port", "0"]
            command += ["--data-dir", str(tmp_path / name), "--token-file", str(tokens)]
            command += ["--database-url", f"{postgres_url}?application_name={name}"]
            command += ["--retention-days", "0", "--rate-limit-rps", "0", "--no-access-log"]
            with log.open("wb") as err:
                proc = subprocess.Popen(
                    [*command, *args], stdout=subprocess.PIPE, stderr=err, env=_env()
                )
            batch.append(Replica(name, proc, log))
        started.extend(batch)
        _start(batch)
        return batch

    yield start
    for replica in started:
        if replica.proc.poll() is None:
            replica.proc.send_signal(signal.SIGTERM)
            try:
                replica.proc.wait(HANG_BOUND_S)
            except subprocess.TimeoutExpired:
                replica.kill()
        assert replica.proc.stdout is not None
        replica.proc.stdout.close()


# -- clients -----------------------------------------------------------------------------


@pytest.fixture
def start_clients(tmp_path: Path) -> Iterator[Any]:
    """``start(endpoint, n, count, **env)`` -> ``count`` emitter processes (own spools,
    ``spool-<k>``), each ready; they emit ``n`` events (markers ``<k>-<i>``) at once, then
    close (flush) and exit 0 when all was acknowledged. Killed at teardown if still up."""
    started: list[subprocess.Popen[bytes]] = []

    def start(endpoint: str, n: int, count: int, **env: str) -> list[subprocess.Popen[bytes]]:
        go = tmp_path / "go"
        procs = []
        for k in range(count):
            variables = {**CLIENT_ENV, "TELEMETRY_ENDPOINT": endpoint, **env}
            procs.append(
                subprocess.Popen(
                    [sys.executable, str(PROCS / "mp_emitter.py"), str(k), str(n), str(go)],
                    env=child_env(tmp_path / f"spool-{k}", **variables),
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                )
            )
            started.append(procs[-1])
        for p in procs:
            assert p.stdout is not None
            assert _first_line(p.stdout).strip() == b"ready"
        go.touch()
        return procs

    yield start
    for p in started:
        if p.poll() is None:
            p.kill()
        p.communicate()


def finish_clients(procs: list[subprocess.Popen[bytes]]) -> list[dict[str, Any]]:
    """Each client's ``{"ok", "stats"}`` after it exited 0."""
    results = []
    for p in procs:
        out, err = p.communicate(timeout=HANG_BOUND_S)
        assert p.returncode == 0, err.decode()[-3000:]
        results.append(orjson.loads(out.splitlines()[-1]))
    return results


# -- what was sent, what is stored --------------------------------------------------------


def is_batch(e: Exchange) -> bool:
    return e.request.method == "POST" and e.request.path == EVENTS_PATH


def posts(exchanges: list[Exchange]) -> list[Exchange]:
    """The batch uploads (``POST /api/v1/events``), in the order the proxy routed them."""
    return [e for e in exchanges if is_batch(e)]


def _batch_ids(exchange: Exchange) -> list[str]:
    request = exchange.request
    body = request.body
    encoding = request.headers.get("content-encoding", "identity")
    if encoding == "zstd":
        body = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(body)).read()
    elif encoding == "gzip":
        body = gzip.decompress(body)
    return [orjson.loads(line)["id"] for line in body.splitlines() if line.strip()]


def sent_ids(exchanges: list[Exchange]) -> Counter[str]:
    """The ids of every batch put on the wire, each batch once (all its attempts must
    carry the same events)."""
    by_key: dict[str, list[str]] = {}
    for e in exchanges:
        if is_batch(e):
            key = e.request.key
            assert key is not None, "a client batch without an Idempotency-Key"
            ids = _batch_ids(e)
            assert by_key.setdefault(key, ids) == ids, f"retry of {key} carried other events"
    return Counter(i for ids in by_key.values() for i in ids)


def stored_events(replica: Replica, limit: int = 97) -> list[dict[str, Any]]:
    """Every stored event, paged by cursor (an admin token)."""
    events: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        page = replica.get("/api/v1/events", limit=limit, **({"cursor": cursor} if cursor else {}))
        events += page["events"]
        cursor = page["next_cursor"]
        if cursor is None:
            return events


def stored_once(replica: Replica, expected: int) -> list[dict[str, Any]]:
    """The stored events once ``expected`` are visible (committed batches reach cursors
    when every older transaction has finished)."""

    def visible() -> list[dict[str, Any]]:
        events = stored_events(replica)
        return events if len(events) >= expected else []  # [] (falsy): poll again

    return wait_until(visible, timeout=HANG_BOUND_S, what=f"{expected} on {replica.name}")


def check_store(url: str, tmp_path: Path) -> None:
    store = open_store(url, tmp_path / "check")
    try:
        assert store.check() == []  # session aggregates == a recount, references intact
    finally:
        store.close()


def markers(events: list[dict[str, Any]]) -> Counter[str]:
    return Counter(str(e["data"].get("marker")) for e in events)


# -- the tests ---------------------------------------------------------------------------


def test_lost_answers_retried_on_the_other_replica_store_every_event_once(
    tmp_path: Path, start_replicas: Any, start_clients: Any, postgres_url: str
) -> None:
    """4 clients x 240 events in batches of 20 through the proxy to two replicas; every
    4th batch's answer is dropped after the replica stored it, and the retry goes to the
    other replica, which answers duplicate. Every event is stored exactly once."""
    clients, n = 4, 240
    a, b = start_replicas(["replica-a", "replica-b"])
    with HttpFaultProxy([a.url, b.url], FailoverRouter(drop_every=4)) as proxy:
        procs = start_clients(proxy.events_url, n, clients, TELEMETRY_BATCH_MAX_EVENTS="20")
        results = finish_clients(procs)
        exchanges = proxy.exchanges()
    assert all(r["ok"] and r["stats"]["uploaded"] == n for r in results)
    assert sum(r["stats"]["retries"] for r in results) >= proxy.count("dropped")

    batches = posts(exchanges)
    dropped = [e for e in batches if e.outcome == "dropped"]
    assert dropped, "no answer was dropped: the fault path was not exercised"
    assert all(e.status == 200 and e.duplicate is False for e in dropped)  # it was stored
    for lost in dropped:  # ... and its retry, on the other replica, was told so
        later = [e for e in batches if e.request.key == lost.request.key and e is not lost]
        assert any(
            e.upstream != lost.upstream and e.outcome == "answered" and e.duplicate is True
            for e in later
        ), f"batch {lost.request.key}: no duplicate answer from the other replica"
    stores = Counter(e.request.key for e in batches if e.duplicate is False)
    assert set(stores.values()) == {1}  # each key stored by exactly one answer
    assert {e.upstream for e in batches if e.duplicate is False} == {0, 1}  # both stored

    expected = Counter({f"{k}-{i}": 1 for k in range(clients) for i in range(n)})
    sent = sent_ids(exchanges)
    assert sum(sent.values()) == sum(expected.values())
    assert set(sent.values()) == {1}
    for replica in (a, b):  # every replica serves every event, once
        events = stored_once(replica, len(expected))
        assert Counter(e["id"] for e in events) == sent
        assert markers(events) == expected
    duplicates = sum(r.metric('duplicates_total{kind="events"}') for r in (a, b))
    assert duplicates == sum(1 for e in batches if e.duplicate is True) >= len(dropped)
    assert sum(r.metric("events_stored_total") for r in (a, b)) == len(expected)
    check_store(postgres_url, tmp_path)


def _backend_waiting(admin: Any, application: str, statement: str) -> int | None:
    """The pid of ``application``'s session waiting on a lock in ``statement...``."""
    row = admin.execute(
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
        " AND application_name = %s AND wait_event_type = 'Lock' AND query LIKE %s",
        (application, statement + "%"),
    ).fetchone()
    return None if row is None else int(row[0])


def test_a_replica_killed_mid_batch_leaves_the_batch_to_the_other_replica_once(
    tmp_path: Path,
    start_replicas: Any,
    start_clients: Any,
    postgres_url: str,
    postgres_server: PostgresServer,
    postgres_db: str,
) -> None:
    """Replica A is inside a batch's transaction (key inserted, events copied, waiting
    on the sessions table the test locked) when it is SIGKILLed. The client's retry goes
    to B, whose insert of the same key waits on A's open transaction; the lock is let go,
    A's orphaned transaction aborts, B stores the batch. All events once, none lost."""
    n = 1500
    a, b = start_replicas(["replica-a", "replica-b"], "--db-statement-timeout", "60")
    with (
        postgres_server.admin(postgres_db) as locker,
        postgres_server.admin(postgres_db) as watcher,
        HttpFaultProxy([a.url, b.url], FailoverRouter(round_robin=False)) as proxy,
    ):
        with locker.transaction():
            locker.execute("LOCK TABLE sessions IN SHARE MODE")  # blocks every batch insert
            procs = start_clients(proxy.events_url, n, 1, TELEMETRY_BATCH_MAX_EVENTS="500")
            wait_until(
                lambda: _backend_waiting(watcher, a.name, "INSERT INTO sessions"),
                timeout=HANG_BOUND_S,
                what="replica A mid-batch, waiting on the sessions lock",
            )
            assert a.get("/api/v1/events")["total"] == 0  # nothing committed yet
            a.kill()
            assert a.proc.returncode == -signal.SIGKILL
            wait_until(
                lambda: _backend_waiting(watcher, b.name, "INSERT INTO batches"),
                timeout=HANG_BOUND_S,
                what="the retry on replica B waiting on A's open transaction (same key)",
            )
        results = finish_clients(procs)
        exchanges = proxy.exchanges()
    assert results[0]["ok"]
    assert results[0]["stats"]["uploaded"] == n
    assert Spool(tmp_path / "spool-0", max_bytes=1 << 30).pending().batches == 0

    batches = posts(exchanges)
    killed = batches[0]
    assert (killed.upstream, killed.outcome, killed.attempt) == (0, "upstream_failed", 1)
    retries = [e for e in batches if e.request.key == killed.request.key][1:]
    assert [(e.upstream, e.status, e.duplicate) for e in retries] == [(1, 200, False)]
    assert all(e.upstream == 1 for e in batches[1:])
    # A later batch (if close() did not merge everything into the first one) was sent to
    # A first, refused, and failed over: A is marked down.
    assert proxy.down == ({0} if len(batches) > 2 else set())

    events = stored_once(b, n)
    sent = sent_ids(exchanges)
    assert Counter(e["id"] for e in events) == sent
    assert sum(sent.values()) == n
    assert set(sent.values()) == {1}
    assert markers(events) == Counter({f"0-{i}": 1 for i in range(n)})
    assert b.metric('duplicates_total{kind="events"}') == 0  # A's transaction stored nothing
    check_store(postgres_url, tmp_path)
