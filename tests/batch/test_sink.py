"""The batch stage's seam to the spool: ``BatchSink`` is all the batcher uses.

A recording sink with exactly the Protocol's members (``__slots__``: nothing else to reach)
stands in for the spool; the batcher seals through it, records shutdown losses through it,
and the real ``Spool`` offers every member.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import orjson
import zstandard

from telemetry_client._internal.log import RateLimitedLogger
from telemetry_client.batch import Batcher, BatchSink
from telemetry_client.batch.state import FlushMarker
from telemetry_client.encode import Encoder, Redactor
from telemetry_client.spool import BatchName, SealResult, Spool


class RecordingSink:
    """A ``BatchSink`` that keeps sealed bodies in memory; ``refuse`` makes seals fail."""

    __slots__ = ("bodies", "losses", "opened", "refuse")

    def __init__(self, *, refuse: bool = False) -> None:
        self.bodies: list[tuple[bytes, int]] = []
        self.losses: list[tuple[str, int, int, int, int]] = []
        self.opened = 0
        self.refuse = refuse

    @property
    def root(self) -> Path:
        return Path("/nowhere")

    @property
    def max_bytes(self) -> int:
        return 1 << 30

    def open(self) -> None:
        self.opened += 1

    def seal(self, body: bytes, n_events: int) -> SealResult:
        if self.refuse:
            raise OSError(28, "No space left on device")
        self.bodies.append((body, n_events))
        return SealResult(BatchName(f"{len(self.bodies):032x}", n_events, len(body)))

    def record_loss(
        self, reason: str, events: int, nbytes: int, first_ns: int, last_ns: int
    ) -> None:
        self.losses.append((reason, events, nbytes, first_ns, last_ns))

    def forget_inherited_fds(self) -> None:
        pass


def _batcher(sink: BatchSink, *, batch_max_events: int = 10) -> Batcher:
    def encoder() -> Encoder:
        return Encoder(
            redactor=Redactor(enabled=False),
            app="tests",
            app_version="1",
            machine_id="m",
            user_id="u",
            session_id="s",
        )

    return Batcher(
        spool=sink,
        encoder_factory=encoder,
        batch_max_events=batch_max_events,
        batch_max_bytes=1 << 20,
        linger_s=0.25,
        buffer_max=1_000_000,
        log=RateLimitedLogger(),
    )


def _record(i: int) -> tuple[Any, ...]:
    return ("sink_test", {"i": i}, time.time_ns(), i + 1, None, None)


def test_batcher_seals_through_any_batch_sink() -> None:
    """With no thread running, flush() cuts 25 records into batches of 10, 10 and 5 and seals
    them, in order, through a sink that has only the Protocol's members (opened first)."""
    sink = RecordingSink()
    batcher = _batcher(sink)
    for i in range(25):
        batcher.put(_record(i))  # type: ignore[arg-type]
    assert batcher.flush(timeout=30)
    assert sink.opened == 1
    assert [n for _, n in sink.bodies] == [10, 10, 5]
    lines = b"".join(zstandard.ZstdDecompressor().decompress(b) for b, _ in sink.bodies)
    assert [orjson.loads(line)["data"]["i"] for line in lines.splitlines()] == list(range(25))
    assert batcher.pending_events() == 0
    assert batcher.describe()["spooled"] == 25


def test_refused_writes_at_close_are_recorded_as_shutdown_loss_in_the_sink() -> None:
    """A sink that refuses every write: close() reports the events lost and records them
    through ``record_loss`` (reason ``shutdown``, their time span), nothing left pending."""
    sink = RecordingSink(refuse=True)
    batcher = _batcher(sink)
    records = [_record(i) for i in range(5)]
    for rec in records:
        batcher.put(rec)  # type: ignore[arg-type]
    outcome = batcher.close(timeout=10)
    assert (outcome.written_events, outcome.lost_events, outcome.drained) == (0, 5, False)
    assert len(sink.losses) == 1
    reason, events, nbytes, first_ns, last_ns = sink.losses[0]
    assert (reason, events) == ("shutdown", 5)
    assert nbytes > 0  # encoded at close, then refused: the JSONL size is known
    assert (first_ns, last_ns) == (records[0][2], records[-1][2])
    assert batcher.pending_events() == 0


def test_spool_offers_every_batch_sink_member(tmp_path: Path) -> None:
    """The real Spool has each member the Protocol names (mypy checks the signatures where
    the client passes it to the Batcher)."""
    members = {name for name in vars(BatchSink) if not name.startswith("_")}
    assert members == {"root", "max_bytes", "open", "seal", "record_loss", "forget_inherited_fds"}
    spool = Spool(tmp_path / "spool", max_bytes=1 << 20)
    assert all(hasattr(spool, name) for name in members)


def test_records_after_a_flush_marker_in_the_same_chunk_go_to_the_next_batch() -> None:
    """A flush marker met mid-chunk cuts the batch; the records after it in the same chunk
    start a new batch (they once went into the list the cut already owned: a batch whose
    name said 2 events held 4 lines, unreadable, and its events lost)."""
    sink = RecordingSink()
    batcher = _batcher(sink)
    batcher.put(_record(0))  # type: ignore[arg-type]
    batcher.put(_record(1))  # type: ignore[arg-type]
    marker = FlushMarker()
    batcher.buffer.append(marker)  # as flush() does, while emits go on
    batcher.put(_record(2))  # type: ignore[arg-type]
    batcher.put(_record(3))  # type: ignore[arg-type]
    assert batcher.flush(timeout=30)  # no thread: one chunk takes all four and the marker
    assert marker.done.is_set()
    assert [n for _, n in sink.bodies] == [2, 2]
    for body, n in sink.bodies:
        assert zstandard.ZstdDecompressor().decompress(body).count(b"\n") == n
    lines = b"".join(zstandard.ZstdDecompressor().decompress(b) for b, _ in sink.bodies)
    assert [orjson.loads(line)["data"]["i"] for line in lines.splitlines()] == [0, 1, 2, 3]
