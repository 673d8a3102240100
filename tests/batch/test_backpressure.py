"""Backpressure: a burst is paced to the disk, no emit() writes a batch, memory stays bounded.

The sink's ``seal`` is wrapped to stand in for a slow or a stuck disk (the real spool does
the write). A slow disk must cost nothing but time; a stuck one must keep memory bounded,
with every event it forces out counted (``stats()["dropped"]`` and the loss ledger).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import wait_until

from telemetry_client import TelemetryClient, TelemetrySettings
from telemetry_client.batch.batcher import HANDOFF_WAIT_S, OVERFLOW_FACTOR, STUCK_S


@pytest.fixture
def make_client(
    tmp_path: Path, settings_factory: Callable[..., TelemetrySettings]
) -> Iterator[Callable[..., TelemetryClient]]:
    """``make(**settings)``: a client on its own spool (no endpoint), closed afterwards."""
    made: list[TelemetryClient] = []

    def make(**overrides: Any) -> TelemetryClient:
        settings = settings_factory(
            **{"endpoint": None, "redact": False, "fsync": "off", **overrides},
            spool_dir=tmp_path / f"spool{len(made)}",
        )
        made.append(client := TelemetryClient(settings))
        return client

    yield make
    for client in made:
        client.close(timeout=10)


def _spooled_ids(client: TelemetryClient) -> list[int]:
    spool = client.spool
    claims = []
    try:
        while (claim := spool.claim()) is not None:
            claims.append(claim)
        return [e["data"]["i"] for c in claims for e in c.events()]
    finally:
        for claim in claims:
            spool.release(claim)


def test_a_stuck_disk_keeps_the_buffer_bounded_and_counts_what_it_drops(
    make_client: Callable[..., TelemetryClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Seal blocked: the producer never enters it, the buffer stays within its bound (past
    twice ``buffer_max`` each call waits, for at most STUCK_S, then new events are dropped),
    and every event not spooled in the end is counted, in stats() and in the ledger."""
    bound, total = 100, 800
    hard = OVERFLOW_FACTOR * bound + int(STUCK_S / HANDOFF_WAIT_S) + 1
    client = make_client(buffer_max_events=bound, batch_max_events=20)
    gate = threading.Event()
    entered: set[int] = set()
    original_seal = client.spool.seal

    def stuck_seal(body: bytes, n_events: int, **kwargs: Any) -> Any:
        entered.add(threading.get_ident())
        assert gate.wait(60), "test never released the gate"
        return original_seal(body, n_events, **kwargs)

    monkeypatch.setattr(client.spool, "seal", stuck_seal)
    max_seen = 0
    try:
        for i in range(total):
            client.emit("burst", {"i": i})
            max_seen = max(max_seen, len(client._batcher.buffer))
        assert threading.get_ident() not in entered  # no emit() wrote (or waited in) a seal
        assert max_seen <= hard
        dropped = client.stats()["dropped"]
        assert dropped > 0  # the stuck disk forced drops, each counted at once
    finally:
        gate.set()
    assert client.flush_sync(timeout=60).ok
    ids = _spooled_ids(client)
    assert len(ids) == len(set(ids))
    stats = client.stats()
    assert stats["dropped"] == dropped
    assert len(ids) + dropped == total
    assert stats["spooled"] == len(ids)
    ledger = client.spool.dropped().by_reason
    assert ledger["disk_stalled"]["events"] == dropped


def test_a_slow_disk_costs_time_and_nothing_else(
    make_client: Callable[..., TelemetryClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each seal slowed down (a slow disk, not a stuck one): the burst is paced, the producer
    never writes a batch itself, nothing is dropped, everything arrives in order."""
    bound, total = 200, 3000
    client = make_client(buffer_max_events=bound, batch_max_events=50)
    entered: set[int] = set()
    original_seal = client.spool.seal

    def slow_seal(body: bytes, n_events: int, **kwargs: Any) -> Any:
        entered.add(threading.get_ident())
        time.sleep(0.002)  # the slow disk itself, not a synchronisation
        return original_seal(body, n_events, **kwargs)

    monkeypatch.setattr(client.spool, "seal", slow_seal)
    max_seen = 0
    for i in range(total):
        client.emit("burst", {"i": i})
        max_seen = max(max_seen, len(client._batcher.buffer))
    assert threading.get_ident() not in entered
    # At twice the bound every call waits: past it the buffer grows one record per wait.
    assert max_seen <= OVERFLOW_FACTOR * bound + int(STUCK_S / HANDOFF_WAIT_S) + 1
    assert client.flush_sync(timeout=60).ok
    wait_until(lambda: client.stats()["spooled"] == total, timeout=30, what="all spooled")
    assert _spooled_ids(client) == list(range(total))
    assert client.stats()["dropped"] == 0


def test_a_slow_first_write_after_a_quiet_spell_drops_nothing(
    make_client: Callable[..., TelemetryClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    """An hour without writes, then a burst whose first seal is slow: the buffer passes
    twice its bound while that write is in progress, and nothing is dropped (a write in
    progress for less than STUCK_S is a slow disk, not a stuck one)."""
    bound, total = 100, 1000
    client = make_client(buffer_max_events=bound, batch_max_events=20)
    client.emit("warmup", {"i": -1})
    assert client.flush_sync(timeout=30).ok
    client._batcher._sealer.last_write -= 3600  # the quiet hour
    gate = threading.Event()
    original_seal = client.spool.seal

    def first_seal_slow(body: bytes, n_events: int, **kwargs: Any) -> Any:
        assert gate.wait(30), "test never released the gate"
        return original_seal(body, n_events, **kwargs)

    monkeypatch.setattr(client.spool, "seal", first_seal_slow)

    def produce() -> None:
        for i in range(total):
            client.emit("burst", {"i": i})

    producer = threading.Thread(target=produce)
    producer.start()
    try:
        wait_until(
            lambda: len(client._batcher.buffer) > OVERFLOW_FACTOR * bound + 5,
            timeout=30,
            what="the buffer past twice its bound while the first write is in progress",
        )
        assert client.stats()["dropped"] == 0
    finally:
        gate.set()
    producer.join(60)
    assert not producer.is_alive()
    assert client.flush_sync(timeout=60).ok
    assert client.stats()["dropped"] == 0
    assert sorted(i for i in _spooled_ids(client) if i >= 0) == list(range(total))
