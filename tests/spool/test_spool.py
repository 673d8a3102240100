"""The spool (``telemetry_client.spool``): contract, claims, corruption, leftovers, cap, faults.

Storage tests end with ``spool.check() == []`` (the on-disk invariants, ``docs/spool.md``).
Nothing here sleeps to synchronise: tests wait on conditions with a deadline (``wait_until``).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import select
import signal
import stat
import subprocess
import sys
import textwrap
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import orjson
import pytest
import zstandard
from conftest import wait_until

from telemetry_client import TelemetryClient, TelemetrySettings
from telemetry_client._internal import fs as spool_fs
from telemetry_client._internal import ids
from telemetry_client.batch import sealer as _sealer
from telemetry_client.spool import BatchName, Claim, PendingStats, Spool

S = 1_000_000_000  # ns per second
DAY = 86_400 * S
BIG = 1 << 30  # a cap no test reaches unless it means to

SettingsFactory = Callable[..., TelemetrySettings]


# --- helpers --------------------------------------------------------------------------------------


def make_event(seq: int, tag: str = "t", pad: int = 64) -> dict[str, Any]:
    """A complete envelope (``check()`` verifies the keys) with a recognisable payload."""
    return {
        "id": f"{tag}-{seq}",
        "type": "spool_test",
        "ts": "2024-01-01T00:00:00.000000Z",
        "session_id": "s",
        "user_id": "u",
        "machine_id": "m",
        "app": "test",
        "app_version": None,
        "seq": seq,
        "data": {"tag": tag, "n": seq, "text": "héllo ✓ " + "x" * pad, "f": 1.5, "z": None},
    }


def make_body(events: list[dict[str, Any]]) -> bytes:
    """The wire form of a batch: one zstd frame (with checksum) of newline-terminated JSON."""
    raw = b"".join(orjson.dumps(e) + b"\n" for e in events)
    cctx = zstandard.ZstdCompressor(level=3, write_checksum=True, write_content_size=True)
    return cctx.compress(raw)


def seal_n(
    spool: Spool, n: int, *, ts_ns: int | None = None, tag: str = "t", pad: int = 64
) -> tuple[BatchName, list[dict[str, Any]]]:
    """Seal a batch of ``n`` events whose id encodes ``ts_ns``; returns its name and events."""
    events = [make_event(i, tag, pad) for i in range(n)]
    bid = ids.batch_id(ts_ns) if ts_ns is not None else None
    result = spool.seal(make_body(events), n, batch_id=bid)
    assert result.name is not None
    return result.name, events


def batch_path(spool: Spool, name: BatchName) -> Path:
    return spool.root / "batches" / name.day / name.filename


def drain(spool: Spool, limit: int = 10_000) -> list[Claim]:
    """Claim and ack everything claimable; returns the claims in claim order."""
    out = []
    for _ in range(limit):  # bounded: a broken ack must fail the test, not hang it
        claim = spool.claim()
        if claim is None:
            return out
        out.append(claim)
        spool.ack(claim)
    raise AssertionError(f"still claiming after {limit} acks")


def write_file(path: Path, data: bytes) -> None:
    """Create ``path`` owner-only, as the spool would."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        spool_fs.write_all(fd, data)
    finally:
        os.close(fd)


@pytest.fixture
def spool(tmp_path: Path) -> Spool:
    sp = Spool(tmp_path / "spool", max_bytes=BIG, fsync=False)
    sp.open()
    return sp


@contextlib.contextmanager
def running_client(settings: TelemetrySettings) -> Iterator[TelemetryClient]:
    client = TelemetryClient(settings)
    try:
        yield client
    finally:
        client.close(timeout=30)


# --- 1. contract ----------------------------------------------------------------------------------


def test_seal_names_the_file_by_id_events_and_size(spool: Spool) -> None:
    """A sealed batch is batches/<day>/<id>.<events>.<bytes>.jsonl.zst holding exactly the body."""
    events = [make_event(i) for i in range(3)]
    body = make_body(events)
    result = spool.seal(body, 3)
    name = result.name
    assert name is not None
    assert (result.evicted_events, result.evicted_bytes) == (0, 0)
    assert (name.n_events, name.n_bytes) == (3, len(body))
    path = spool.root / "batches" / name.day / f"{name.batch_id}.3.{len(body)}.jsonl.zst"
    assert path.read_bytes() == body
    assert BatchName.parse(path.name) == name
    assert len(name.batch_id) == 32
    assert abs(name.created_ns - time.time_ns()) < 60 * S
    assert os.listdir(spool.root / "tmp") == []
    assert spool.check() == []


def test_claim_returns_oldest_first_and_ack_removes(spool: Spool) -> None:
    """claim() hands out batches oldest id first (across day dirs); ack() deletes the file."""
    now = time.time_ns()
    specs = [(now - 2 * DAY, "a", 2), (now - 3 * S, "b", 3), (now - 1 * S, "c", 4)]
    names = {}
    for ts, tag, n in reversed(specs):  # sealed newest first: order cannot come from insertion
        names[tag], _ = seal_n(spool, n, ts_ns=ts, tag=tag)
    seen = []
    while (claim := spool.claim()) is not None and len(seen) < 10:
        seen.append(claim.batch_id)
        assert claim.path.exists()
        spool.ack(claim)
        assert not claim.path.exists()
    assert seen == [names[t].batch_id for t in "abc"]
    assert spool.pending() == PendingStats(0, 0, 0, None)
    assert spool.dropped().events == 0  # acked is delivered, not lost
    assert spool.check() == []


def test_release_makes_the_batch_claimable_again(spool: Spool) -> None:
    """A released claim goes back unchanged; a held one is not handed out twice."""
    name, _ = seal_n(spool, 2)
    first = spool.claim()
    assert first is not None
    assert first.batch_id == name.batch_id
    assert spool.claim() is None  # held, even for the same Spool instance
    spool.release(first)
    again = spool.claim()
    assert again is not None
    assert again.batch_id == name.batch_id
    assert again.body == first.body
    spool.ack(again)
    assert spool.claim() is None
    assert spool.check() == []


def test_claim_is_exclusive_across_instances_and_threads(spool: Spool) -> None:
    """A claimed batch is skipped by another Spool on the same dir and by another thread."""
    now = time.time_ns()
    a, _ = seal_n(spool, 1, ts_ns=now - 3 * S, tag="a")
    b, _ = seal_n(spool, 1, ts_ns=now - 2 * S, tag="b")
    c, _ = seal_n(spool, 1, ts_ns=now - 1 * S, tag="c")
    other = Spool(spool.root, max_bytes=BIG, fsync=False)

    mine = spool.claim()
    assert mine is not None
    assert mine.batch_id == a.batch_id
    theirs = other.claim()
    assert theirs is not None
    assert theirs.batch_id == b.batch_id  # another instance skips a held claim
    with ThreadPoolExecutor(2) as pool:
        threaded = pool.submit(spool.claim).result(timeout=30)
        assert threaded is not None
        assert threaded.batch_id == c.batch_id  # another thread, same instance, skips both
        assert pool.submit(other.claim).result(timeout=30) is None  # everything is held

    spool.release(mine)
    back = other.claim()
    assert back is not None
    assert back.batch_id == a.batch_id  # a release makes it visible to other claimers
    for claim, owner in ((back, other), (theirs, other), (threaded, spool)):
        owner.ack(claim)
    assert spool.pending().batches == 0
    assert spool.check() == []


def test_batch_acked_between_anothers_open_and_lock_is_not_handed_out(
    spool: Spool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A claimer that opened a batch just before its holder acked it must not claim it again."""
    seal_n(spool, 1)
    first = spool.claim()
    assert first is not None
    real_try_lock = spool_fs.try_lock
    acked = []

    def try_lock_after_ack(fd: int) -> bool:
        if not acked:  # the holder acks (unlink + unlock) between our open() and flock()
            acked.append(first.batch_id)
            spool.ack(first)
        return real_try_lock(fd)

    monkeypatch.setattr(spool_fs, "try_lock", try_lock_after_ack)
    other = Spool(spool.root, max_bytes=BIG, fsync=False)
    assert other.claim() is None  # the lock succeeds, but on a deleted file
    assert acked == [first.batch_id]
    monkeypatch.undo()
    assert spool.check() == []


def test_a_new_day_directory_is_created_under_the_global_lock(
    spool: Spool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The day directory of a seal is made while ``.lock`` is held (a purge removes empty day
    directories under it), so it cannot vanish between its creation and the rename."""
    real = spool_fs.ensure_dir
    held: list[bool] = []

    def ensure_dir(path: Path) -> None:
        if path.parent == spool.root / "batches":
            fd = os.open(spool.root / ".lock", os.O_RDWR)
            try:
                free = spool_fs.try_lock(fd)
                held.append(not free)
            finally:
                os.close(fd)
        real(path)

    monkeypatch.setattr(spool_fs, "ensure_dir", ensure_dir)
    now = time.time_ns()
    seal_n(spool, 1, ts_ns=now + 3 * DAY)  # a day with no directory yet
    assert held == [True]
    monkeypatch.undo()
    assert spool.purge(everything=True) == 1  # and the empty day directory is removed
    assert not (spool.root / "batches" / BatchName(ids.batch_id(now + 3 * DAY), 1, 1).day).exists()
    assert spool.check() == []


def test_one_batch_in_tmp_at_a_time_per_spool(
    spool: Spool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Threads sealing through one Spool write one batch at a time (invariant 2: one in flight)."""
    real_write_all = spool_fs.write_all
    in_first, release_first = threading.Event(), threading.Event()
    tmp_files_seen: list[int] = []

    def write_all(fd: int, data: Any) -> None:
        tmp_files_seen.append(len(os.listdir(spool.root / "tmp")))
        if threading.current_thread().name == "first-sealer":
            in_first.set()
            assert release_first.wait(30)
        real_write_all(fd, data)

    monkeypatch.setattr(spool_fs, "write_all", write_all)
    first = threading.Thread(target=seal_n, args=(spool, 1), name="first-sealer")
    second = threading.Thread(target=seal_n, args=(spool, 2), name="second-sealer")
    first.start()
    try:
        assert in_first.wait(30)
        second.start()
        second.join(timeout=0.5)  # a deadline for what must NOT happen: it waits for the first
        assert second.is_alive(), "a second batch was written while the first was in tmp/"
    finally:
        release_first.set()
        first.join(timeout=30)
        if second.ident is not None:
            second.join(timeout=30)
    assert not first.is_alive()
    assert not second.is_alive()
    assert tmp_files_seen == [1, 1]
    assert spool.pending().events == 3
    assert spool.check() == []


def test_events_round_trip(spool: Spool) -> None:
    """What was sealed comes back from a claim byte for byte and event for event."""
    events = [make_event(i, tag="rt", pad=i * 10) for i in range(5)]
    events.append(
        {**make_event(99), "data": {"nested": [{"a": [1, 2, {"b": "ü€😀"}]}], "big": 2**60}}
    )
    body = make_body(events)
    spool.seal(body, len(events))
    claim = spool.claim()
    assert claim is not None
    assert claim.body == body
    assert claim.n_events == len(events)
    assert claim.events() == events
    assert claim.lines() == [orjson.dumps(e) for e in events]
    spool.ack(claim)
    assert spool.check() == []


def test_pending_counts_sealed_and_claimed_batches_only(spool: Spool) -> None:
    """pending(): batches/events/bytes of unacked batches (claimed included) and the oldest age."""
    now = time.time_ns()
    sealed = [seal_n(spool, n, ts_ns=now - age * S)[0] for n, age in ((2, 30), (3, 20), (5, 10))]
    stats = spool.pending()
    assert (stats.batches, stats.events) == (3, 10)
    assert stats.bytes == sum(n.n_bytes for n in sealed)
    assert stats.oldest_age_s is not None
    assert 29.9 <= stats.oldest_age_s < 30 + 60  # ms precision; generous for slow machines

    claim = spool.claim()
    assert claim is not None
    assert spool.pending().batches == 3  # claimed but not acked: still pending
    spool.dead_letter(claim)  # oldest goes to dead/: no longer pending
    stats = spool.pending()
    assert (stats.batches, stats.events, stats.bytes) == (
        2,
        8,
        sealed[1].n_bytes + sealed[2].n_bytes,
    )
    assert stats.oldest_age_s is not None
    assert stats.oldest_age_s < 29.9
    assert spool.dead_letters() == [sealed[0]]
    assert spool.check() == []


def test_pending_is_pending_before_the_end_of_time(spool: Spool) -> None:
    """pending() counts every sealed batch, a future-dated one too; pending_before(now) not."""
    now = time.time_ns()
    seal_n(spool, 2, ts_ns=now - 10 * S)
    seal_n(spool, 3, ts_ns=now + 3 * DAY)  # a clock that ran ahead
    assert (spool.pending().batches, spool.pending().events) == (2, 5)
    assert (spool.pending_before(now).batches, spool.pending_before(now).events) == (1, 2)
    assert spool.check() == []


def test_claim_says_whether_it_is_still_held(spool: Spool) -> None:
    """claim.held is True from claim() until ack/release/dead_letter/quarantine gives it back."""
    for give_back in (spool.ack, spool.release, spool.dead_letter, spool.quarantine):
        seal_n(spool, 1)
        claim = spool.claim()
        assert claim is not None
        assert claim.held
        give_back(claim)
        assert not claim.held, give_back.__name__
        give_back(claim)  # giving it back twice is harmless
    assert spool.check() == []


def test_the_parts_are_the_spool(spool: Spool) -> None:
    """spool.queue, spool.blobs and spool.ledger act on the same directory as the facade."""
    name, events = seal_n(spool, 2)
    claim = spool.queue.claim()
    assert claim is not None
    assert claim.name == name
    assert claim.events() == events
    spool.queue.ack(claim)
    ref = spool.blobs.put(b"attachment bytes", "text/plain")
    assert spool.read_blob(ref.sha256) == spool.blobs.read(ref.sha256) is not None
    spool.ledger.record_loss("disk_error", 1, 10, 1, 2)
    assert spool.dropped().by_reason == {"disk_error": {"events": 1, "bytes": 10}}
    assert spool.pending().batches == 0
    assert spool.check() == []


# --- 2. a dead claimer ----------------------------------------------------------------------------

CLAIMER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from telemetry_client.spool import Spool

    claim = Spool(Path(sys.argv[1]), max_bytes=1 << 30, fsync=False).claim()
    print(claim.batch_id if claim else "none", flush=True)
    sys.stdin.read()  # hold the claim until killed
    """
)


def test_claim_of_a_killed_process_is_released(spool: Spool) -> None:
    """A batch claimed by a process that is SIGKILLed becomes claimable again."""
    now = time.time_ns()
    held, _ = seal_n(spool, 2, ts_ns=now - 2 * S, tag="held")
    free, _ = seal_n(spool, 3, ts_ns=now - 1 * S, tag="free")
    with subprocess.Popen(
        [sys.executable, "-c", CLAIMER, str(spool.root)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    ) as proc:
        try:
            assert proc.stdout is not None
            ready, _, _ = select.select([proc.stdout], [], [], 60)
            assert ready, "claimer did not report within 60 s"
            assert proc.stdout.readline().strip() == held.batch_id

            mine = spool.claim()  # the child's claim is respected while it lives
            assert mine is not None
            assert mine.batch_id == free.batch_id
            spool.release(mine)

            proc.send_signal(signal.SIGKILL)
            assert proc.wait(timeout=30) == -signal.SIGKILL
        finally:
            if proc.poll() is None:
                proc.kill()
    back = spool.claim()  # the kernel dropped the dead process's flock
    assert back is not None
    assert back.batch_id == held.batch_id
    spool.ack(back)
    assert [c.batch_id for c in drain(spool)] == [free.batch_id]
    assert spool.check() == []


# --- 3. quarantine --------------------------------------------------------------------------------


def _flip_middle(path: Path, name: BatchName) -> BatchName:
    with open(path, "r+b") as f:
        data = bytearray(f.read())
        mid = len(data) // 2
        data[mid - 4 : mid + 4] = bytes(x ^ 0xFF for x in data[mid - 4 : mid + 4])
        f.seek(0)
        f.write(data)
    return name


def _truncate(path: Path, name: BatchName) -> BatchName:
    os.truncate(path, name.n_bytes // 2)
    return name


def _truncate_and_fix_size(path: Path, name: BatchName) -> BatchName:
    """Truncated, and the size in the name agrees: only the frame check can catch it."""
    os.truncate(path, name.n_bytes // 2)
    fixed = BatchName(name.batch_id, name.n_events, name.n_bytes // 2)
    os.rename(path, path.with_name(fixed.filename))
    return fixed


def _appended(path: Path, name: BatchName) -> BatchName:
    """Bytes after the frame (decompression alone ignores them): only the size check sees it."""
    with open(path, "ab") as f:
        f.write(b"trailing junk")
    return name


def _appended_and_fix_size(path: Path, name: BatchName) -> BatchName:
    """Bytes after the frame, and the size in the name agrees: only the frame's end shows it."""
    with open(path, "ab") as f:
        f.write(b"trailing junk")
    fixed = BatchName(name.batch_id, name.n_events, name.n_bytes + len(b"trailing junk"))
    os.rename(path, path.with_name(fixed.filename))
    return fixed


def _second_frame_appended(path: Path, name: BatchName) -> BatchName:
    """A whole second frame after the first (name fixed): one batch is exactly one frame."""
    extra = make_body([make_event(99, "extra")])
    with open(path, "ab") as f:
        f.write(extra)
    fixed = BatchName(name.batch_id, name.n_events, name.n_bytes + len(extra))
    os.rename(path, path.with_name(fixed.filename))
    return fixed


def _wrong_count(path: Path, name: BatchName) -> BatchName:
    wrong = BatchName(name.batch_id, name.n_events + 1, name.n_bytes)
    os.rename(path, path.with_name(wrong.filename))
    return wrong


@pytest.mark.parametrize(
    "corrupt",
    [
        _flip_middle,
        _truncate,
        _truncate_and_fix_size,
        _appended,
        _appended_and_fix_size,
        _second_frame_appended,
        _wrong_count,
    ],
    ids=[
        "flipped-bytes",
        "truncated",
        "truncated-size-fixed",
        "appended",
        "appended-size-fixed",
        "second-frame-size-fixed",
        "wrong-line-count",
    ],
)
def test_corrupt_batch_is_quarantined_not_returned(
    spool: Spool, corrupt: Callable[[Path, BatchName], BatchName], caplog: pytest.LogCaptureFixture
) -> None:
    """claim() moves an unreadable batch to quarantine/ (kept, not deleted) and returns the next."""
    caplog.set_level(logging.WARNING, logger="telemetry_client")
    now = time.time_ns()
    bad, _ = seal_n(spool, 20, ts_ns=now - 2 * S, tag="bad", pad=300)
    good, good_events = seal_n(spool, 4, ts_ns=now - 1 * S, tag="good")
    bad = corrupt(batch_path(spool, bad), bad)
    corrupted = batch_path(spool, bad).read_bytes()

    claim = spool.claim()  # must not raise
    assert claim is not None
    assert claim.batch_id == good.batch_id
    assert claim.events() == good_events
    spool.ack(claim)

    kept = spool.root / "quarantine" / bad.filename
    assert kept.read_bytes() == corrupted  # moved as-is, never deleted
    assert not batch_path(spool, bad).exists()
    assert spool.quarantined() == [bad]
    assert spool.claim() is None  # never handed out
    assert spool.pending().batches == 0
    assert spool.dropped().events == 0  # still on disk: not counted as lost
    assert spool.usage() >= bad.n_bytes  # still counts toward the cap
    assert any(f"quarantined batch {bad.batch_id}" in r.getMessage() for r in caplog.records)
    assert spool.check() == []


# --- 4. tmp/ leftovers ----------------------------------------------------------------------------


def _leftover(spool: Spool, n: int, *, whole: bool) -> tuple[Path, str, bytes]:
    """A tmp/ file as a writer leaves it: the whole body, or the first half (torn)."""
    events = [make_event(i, tag="left", pad=200) for i in range(n)]
    body = make_body(events)
    data = body if whole else body[: len(body) // 2]
    bid = ids.batch_id()
    path = spool.root / "tmp" / f"{bid}.{n}.tmp"
    write_file(path, data)
    return path, bid, data


def _reopen(spool: Spool) -> None:
    Spool(spool.root, max_bytes=BIG, fsync=False).open()


@pytest.mark.parametrize("recover", [_reopen, Spool.recover], ids=["open", "recover"])
def test_torn_tmp_file_is_removed_and_counted(
    spool: Spool, recover: Callable[[Spool], Any]
) -> None:
    """A truncated tmp/ leftover of a dead writer is removed and counted as dropped ("torn")."""
    path, _, data = _leftover(spool, 7, whole=False)
    recover(spool)
    assert not path.exists()
    assert spool.pending().batches == 0
    assert spool.dropped().by_reason == {"torn": {"events": 7, "bytes": len(data)}}
    assert spool.check() == []


@pytest.mark.parametrize("recover", [_reopen, Spool.recover], ids=["open", "recover"])
def test_whole_tmp_file_is_recovered_into_batches(
    spool: Spool, recover: Callable[[Spool], Any]
) -> None:
    """A complete, valid tmp/ leftover is published as a normal batch, nothing counted lost."""
    path, bid, body = _leftover(spool, 5, whole=True)
    recover(spool)
    assert not path.exists()
    name = BatchName(bid, 5, len(body))
    assert batch_path(spool, name).read_bytes() == body
    claim = spool.claim()
    assert claim is not None
    assert claim.name == name
    assert [e["id"] for e in claim.events()] == [f"left-{i}" for i in range(5)]
    spool.ack(claim)
    assert spool.dropped().events == 0
    assert spool.check() == []


def test_tmp_file_locked_by_a_live_writer_is_left_alone(spool: Spool) -> None:
    """recover()/open() skip a tmp/ file whose writer (flock holder) is alive, whole or torn."""
    whole, bid, body = _leftover(spool, 5, whole=True)
    torn, _, _ = _leftover(spool, 3, whole=False)
    holders = []
    for path in (whole, torn):
        fd = os.open(path, os.O_RDONLY)
        holders.append(fd)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    try:
        assert spool.recover() == 0
        _reopen(spool)
        assert whole.read_bytes() == body
        assert torn.exists()
        assert spool.pending().batches == 0
        assert spool.dropped().events == 0
        assert spool.check() == []  # a live writer's file is not a leftover
    finally:
        for fd in holders:
            os.close(fd)  # the writer "dies": its files become leftovers
    assert spool.recover() == 2
    assert [c.name for c in drain(spool)] == [BatchName(bid, 5, len(body))]
    assert spool.dropped().by_reason["torn"]["events"] == 3
    assert spool.check() == []


# --- 5. permissions -------------------------------------------------------------------------------


@pytest.mark.parametrize("umask", [0o000, 0o277], ids=["umask-000", "umask-277"])
def test_every_dir_0700_and_file_0600_whatever_the_umask(
    settings_factory: SettingsFactory, umask: int
) -> None:
    """Under umask 000 (nothing masked) or 277 (owner bits masked) every dir is 0700, file 0600."""
    old = os.umask(umask)
    try:
        settings = settings_factory(
            spool_max_bytes=64 * 1024, batch_max_bytes=4096, linger_ms=5, redact=False
        )
        with running_client(settings) as client:
            for i in range(300):  # ~170 KB compressed: evictions write state/dropped.json too
                client.emit("perm_test", {"i": i, "pad": os.urandom(512).hex()})
            assert client.flush_sync(timeout=30)
            spool = client.spool
    finally:
        os.umask(old)
    root = settings.resolved_spool_dir
    seen_files = []
    for dirpath, _dirs, files in os.walk(root):
        assert stat.S_IMODE(os.stat(dirpath).st_mode) == 0o700, dirpath
        for fn in files:
            p = Path(dirpath) / fn
            assert stat.S_IMODE(os.lstat(p).st_mode) == 0o600, p
            seen_files.append(p.relative_to(root).as_posix())
    assert ".lock" in seen_files
    assert "state/dropped.json" in seen_files
    assert any(f.startswith("batches/") for f in seen_files)
    assert spool.check() == []


# --- 6. the cap -----------------------------------------------------------------------------------


def test_cap_holds_under_a_50mb_burst_and_every_event_is_accounted(
    settings_factory: SettingsFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """50 MB into a 2 MB spool: usage stays under cap + one batch; present + evicted == emitted."""
    cap = 2_000_000
    settings = settings_factory(
        spool_max_bytes=cap,
        batch_max_bytes=64 * 1024,
        batch_max_events=100_000,  # cut by bytes
        buffer_max_events=100,  # the emitting thread does hand-offs too: two writers race
        linger_ms=50,
        fsync="off",  # speed; the cap does not depend on fsync
        redact=False,  # random hex must reach the disk as-is (incompressible-ish)
    )
    n_events, pad_bytes = 6_000, 4096  # 8 KiB of hex each: ~50 MB of JSON, ~27 MB compressed
    client = TelemetryClient(settings)
    spool = client.spool
    largest = [0]
    real_seal = spool.seal

    def recording_seal(body: bytes, n: int, **kw: Any) -> Any:
        largest[0] = max(largest[0], len(body))
        return real_seal(body, n, **kw)

    monkeypatch.setattr(spool, "seal", recording_seal)
    real_open_new = spool_fs.open_new
    tmp_files_at_once = [0]

    def counting_open_new(path: Path) -> int:
        fd = real_open_new(path)
        if path.parent == spool.root / "tmp":  # a batch starts being written: any other?
            tmp_files_at_once[0] = max(tmp_files_at_once[0], len(os.listdir(path.parent)))
        return fd

    monkeypatch.setattr(spool_fs, "open_new", counting_open_new)
    peak, samples, stop = [0], [0], threading.Event()

    def sample() -> None:
        watcher = Spool(spool.root, max_bytes=cap)
        while not stop.is_set():
            peak[0] = max(peak[0], watcher.disk_usage())
            samples[0] += 1

    sampler = threading.Thread(target=sample, name="disk-usage-sampler", daemon=True)
    try:
        client.start()
        wait_until((spool.root / "batches").is_dir, what="spool opened")
        sampler.start()
        for i in range(n_events):
            client.emit("cap_test", {"i": i, "pad": os.urandom(pad_bytes).hex()})
        assert client.flush_sync(timeout=60)
    finally:
        client.close(timeout=30)
        stop.set()
        sampler.join(timeout=30)
    assert not sampler.is_alive()
    assert samples[0] > 100, "the sampler barely ran"
    stats = client.stats()
    evicted = spool.dropped().by_reason.get("cap", {}).get("events", 0)
    present = spool.pending().events
    # The state file only grows (counters), so its final size bounds every version of it; it
    # is replaced through a temp copy, so for an instant two copies exist.
    state_slack = (spool.root / "state" / "dropped.json").stat().st_size
    assert peak[0] <= cap + largest[0] + state_slack, (peak[0], cap, largest[0], state_slack)
    # Invariant 2 allows one batch in flight per process; the writer thread and an emitting
    # thread doing a hand-off must not write two at once (sampling alone can miss that).
    assert tmp_files_at_once[0] == 1
    assert evicted > 0
    assert present + evicted == n_events == stats["emitted"]
    assert stats["evicted"] == evicted
    assert stats["spooled"] == n_events
    assert (stats["write_errors"], stats["pending"], stats["dropped"]) == (0, 0, evicted)
    assert spool.quarantined() == []
    assert spool.check() == []


def noisy_body(n: int, tag: str) -> bytes:
    """A batch of ``n`` events carrying 2 KB of random hex each: compresses poorly."""
    return make_body(
        [{**make_event(i, tag), "data": {"r": os.urandom(1024).hex()}} for i in range(n)]
    )


def test_seal_evicts_the_oldest_unclaimed_data_to_fit(tmp_path: Path) -> None:
    """At the cap, seal evicts oldest-first, skipping claimed batches, and stays within the cap."""
    now = time.time_ns()
    bodies = [noisy_body(4, f"b{k}") for k in range(3)]
    bodies.append(bodies[1])  # as big as the batch it should evict
    headroom = 1024  # room for state/dropped.json, less than a batch
    assert min(map(len, bodies)) > headroom
    cap = len(bodies[0]) + len(bodies[1]) + len(bodies[2]) + headroom
    spool = Spool(tmp_path / "spool", max_bytes=cap, fsync=False)
    spool.open()
    names = []
    for k in range(3):
        res = spool.seal(bodies[k], 4, batch_id=ids.batch_id(now - (10 - k) * S))
        assert res.name is not None
        assert res.evicted_events == 0
        names.append(res.name)
    held = spool.claim()
    assert held is not None
    assert held.name == names[0]  # the oldest is being uploaded: it must not be evicted

    res = spool.seal(bodies[3], 4, batch_id=ids.batch_id(now - 5 * S))
    assert res.name is not None
    assert (res.evicted_events, res.evicted_bytes) == (4, names[1].n_bytes)
    assert batch_path(spool, names[0]).exists()
    assert not batch_path(spool, names[1]).exists()
    assert batch_path(spool, names[2]).exists()
    assert spool.dropped().by_reason["cap"] == {"events": 4, "bytes": names[1].n_bytes}
    assert spool.usage() <= cap
    spool.release(held)
    assert spool.check() == []


def test_eviction_makes_room_for_the_loss_counters_too(tmp_path: Path) -> None:
    """Filled to the byte, an eviction also budgets state/dropped.json: usage stays <= cap."""
    now = time.time_ns()
    first = noisy_body(3, "e0")
    bodies = [first, noisy_body(3, "e1"), first]  # the third as big as the one it evicts
    cap = len(bodies[0]) + len(bodies[1])  # exactly two fit, with no byte to spare
    spool = Spool(tmp_path / "spool", max_bytes=cap, fsync=False)
    spool.open()
    for k, body in enumerate(bodies):
        res = spool.seal(body, 3, batch_id=ids.batch_id(now - (10 - k) * S))
        assert res.name is not None
        assert spool.usage() <= cap
        assert spool.disk_usage() <= cap  # what the contract measures: every file
    assert res.evicted_events > 0
    assert spool.pending().events + spool.dropped().by_reason["cap"]["events"] == 9
    assert spool.check() == []


def test_loss_counters_written_outside_eviction_make_room_too(tmp_path: Path) -> None:
    """Filled to the byte, recording a loss (record_loss, an oversized batch) evicts the
    oldest data to fit the grown state/dropped.json: the spool never exceeds its cap."""
    now = time.time_ns()
    bodies = [noisy_body(3, f"r{k}") for k in range(3)]
    cap = sum(len(b) for b in bodies)  # exactly the three batches, no byte to spare
    spool = Spool(tmp_path / "spool", max_bytes=cap, fsync=False)
    spool.open()
    names = []
    for k, body in enumerate(bodies):
        res = spool.seal(body, 3, batch_id=ids.batch_id(now - (10 - k) * S))
        assert res.name is not None
        names.append(res.name)
    assert spool.disk_usage() == cap
    spool.record_loss("disk_error", 5, 100, now, now)
    assert spool.disk_usage() <= cap
    assert spool.seal(os.urandom(cap + 1), 2).name is None  # grows the counters again
    assert spool.disk_usage() <= cap
    assert not batch_path(spool, names[0]).exists()  # the oldest made room
    evicted = [n for n in names if not batch_path(spool, n).exists()]
    by_reason = spool.dropped().by_reason
    assert by_reason["disk_error"] == {"events": 5, "bytes": 100}
    assert by_reason["cap"]["events"] == 2 + sum(n.n_events for n in evicted)  # all accounted
    assert spool.check() == []


def test_batch_larger_than_the_cap_is_dropped_and_counted(tmp_path: Path) -> None:
    """A batch that alone exceeds the cap is not written (nothing evicted) and counted as cap."""
    spool = Spool(tmp_path / "spool", max_bytes=4096, fsync=False)
    spool.open()
    small, _ = seal_n(spool, 1)
    res = spool.seal(os.urandom(8192), 3)  # never written, so its content does not matter
    assert res.name is None
    assert (res.evicted_events, res.evicted_bytes) == (3, 8192)
    assert spool.pending().batches == 1  # the small batch was not evicted for it
    assert spool.dropped().by_reason["cap"] == {"events": 3, "bytes": 8192}
    assert [c.name for c in drain(spool)] == [small]
    assert spool.check() == []


def test_unreported_losses_are_reported_once_while_totals_persist(tmp_path: Path) -> None:
    """peek_unreported() shows each loss until forget_reported() takes the report off; the
    totals stay, across a reopen (the path the loss reports take)."""
    spool = Spool(tmp_path / "spool", max_bytes=4096, fsync=False)
    spool.open()
    spool.seal(os.urandom(8192), 3)  # dropped: larger than the cap
    spool.record_loss("disk_error", 5, 100, 1_000, 2_000)
    peeked = spool.peek_unreported()
    assert {r: (v["events"], v["bytes"]) for r, v in peeked.items()} == {
        "cap": (3, 8192),
        "disk_error": (5, 100),
    }
    assert (peeked["disk_error"]["first_ns"], peeked["disk_error"]["last_ns"]) == (1_000, 2_000)
    assert spool.peek_unreported() == peeked  # peeking takes nothing
    spool.forget_reported(peeked)
    assert spool.peek_unreported() == {}
    reopened = Spool(tmp_path / "spool", max_bytes=4096, fsync=False).dropped()
    assert (reopened.events, reopened.bytes, reopened.unreported) == (8, 8292, {})
    assert spool.check() == []


def test_a_loss_recorded_after_the_peek_stays_unreported(tmp_path: Path) -> None:
    """forget_reported() subtracts only what was reported: a loss recorded meanwhile stays."""
    spool = Spool(tmp_path / "spool", max_bytes=BIG, fsync=False)
    spool.open()
    spool.record_loss("disk_error", 5, 100, 1_000, 2_000)
    peeked = spool.peek_unreported()
    spool.record_loss("disk_error", 2, 40, 3_000, 4_000)
    spool.forget_reported(peeked)
    left = spool.peek_unreported()["disk_error"]
    assert (left["events"], left["bytes"]) == (2, 40)
    assert spool.dropped().by_reason["disk_error"] == {"events": 7, "bytes": 140}
    assert spool.check() == []


# --- 7. retention ---------------------------------------------------------------------------------


def test_retention_purges_batches_older_than_retention(spool: Spool) -> None:
    """purge_expired(now) removes data older than retention (counted) and empty old day dirs."""
    midnight = (time.time_ns() // DAY) * DAY
    # A quarantined batch ages out as well.
    corrupt = spool.seal(b"not a zstd frame", 6, batch_id=ids.batch_id(midnight - DAY))
    assert corrupt.name is not None
    assert spool.claim() is None  # quarantines it
    assert spool.quarantined() == [corrupt.name]
    old_day, _ = seal_n(spool, 2, ts_ns=midnight - 2 * DAY + 3600 * S, tag="old-day")
    early, _ = seal_n(spool, 3, ts_ns=midnight + 1 * 3600 * S, tag="early")
    late, _ = seal_n(spool, 4, ts_ns=midnight + 20 * 3600 * S, tag="late")
    future, _ = seal_n(spool, 5, ts_ns=midnight + 2 * DAY + 3600 * S, tag="future")

    cutoff = midnight + 12 * 3600 * S  # mid-day: the day dir of "early"/"late" is split
    removed = spool.purge_expired(now_ns=cutoff + int(spool.retention_s) * S)
    assert removed == 6 + 2 + 3
    gone_bytes = corrupt.name.n_bytes + old_day.n_bytes + early.n_bytes
    assert spool.dropped().by_reason == {"retention": {"events": 11, "bytes": gone_bytes}}
    assert not (spool.root / "batches" / old_day.day).exists()  # empty old day dir removed
    assert not batch_path(spool, early).exists()
    assert batch_path(spool, late).exists()  # same day, after the cutoff: kept
    assert (spool.root / "batches" / future.day).is_dir()
    assert spool.quarantined() == []
    assert [c.name for c in drain(spool)] == [late, future]
    assert spool.check() == []


def test_retention_purges_expired_dead_letters(spool: Spool) -> None:
    """Dead letters expire like pending batches: removed and counted after retention."""
    now = time.time_ns()
    old, _ = seal_n(spool, 3, ts_ns=now - 10 * DAY, tag="old-dead")
    recent, _ = seal_n(spool, 4, ts_ns=now - 3600 * S, tag="recent-dead")
    for _ in range(2):
        claim = spool.claim()
        assert claim is not None
        spool.dead_letter(claim)
    assert spool.dead_letters() == [old, recent]
    assert spool.purge_expired(now_ns=now) == 3
    assert spool.dead_letters() == [recent]
    assert spool.dropped().by_reason == {"retention": {"events": 3, "bytes": old.n_bytes}}
    assert spool.check() == []


def test_retention_skips_a_claimed_batch(spool: Spool) -> None:
    """An expired batch that is claimed (being uploaded) is not purged until released."""
    old, _ = seal_n(spool, 3, ts_ns=time.time_ns() - 2 * DAY)
    claim = spool.claim()
    assert claim is not None
    future = time.time_ns() + 30 * DAY
    assert spool.purge_expired(now_ns=future) == 0
    assert batch_path(spool, old).exists()
    spool.release(claim)
    assert spool.purge_expired(now_ns=future) == 3
    assert not batch_path(spool, old).exists()
    assert spool.check() == []


# --- 8. disk faults -------------------------------------------------------------------------------


def _enospc_mid_write(real: Callable[[int, Any], None]) -> Callable[[int, Any], None]:
    def write_all(fd: int, data: Any) -> None:
        view = memoryview(data)
        os.write(fd, view[: len(view) // 2])  # a partial write, then the disk is full
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    return write_all


def _erofs_on_create(real: Callable[[Path], int]) -> Callable[[Path], int]:
    def open_new(path: Path) -> int:
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))

    return open_new


@pytest.mark.parametrize(
    ("target", "fault"),
    [("write_all", _enospc_mid_write), ("open_new", _erofs_on_create)],
    ids=["enospc-mid-write", "erofs-on-create"],
)
def test_disk_fault_is_counted_logged_once_and_survived(
    settings_factory: SettingsFactory,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    target: str,
    fault: Callable[[Any], Any],
) -> None:
    """Disk full / read-only: emit() never raises, errors counted, logged once; nothing lost."""
    caplog.set_level(logging.WARNING, logger="telemetry_client")
    monkeypatch.setattr(_sealer, "RETRY_FAILED_AFTER_S", 0.01)  # many retries, quickly
    real = getattr(spool_fs, target)
    broken = fault(real)
    failing = threading.Event()
    failing.set()

    def maybe_broken(*args: Any) -> Any:
        return (broken if failing.is_set() else real)(*args)

    monkeypatch.setattr(spool_fs, target, maybe_broken)
    # 40 events cut by count into 4 batches: all fit in memory (MAX_FAILED_BATCHES) while failing.
    assert _sealer.MAX_FAILED_BATCHES >= 4
    settings = settings_factory(
        batch_max_events=10, linger_ms=1000, log_cooldown_s=3600, fsync="off"
    )
    with running_client(settings) as client:
        for i in range(40):
            client.emit("disk_fault", {"i": i})  # must not raise
        wait_until(lambda: client.stats()["write_errors"] >= 20, what="20 failed writes")
        partial = client.flush_sync(timeout=0.05)  # bounded: reports, does not raise or hang
        assert not partial
        assert partial.pending_events > 0
        stats = client.stats()
        assert (stats["spooled"], stats["dropped"]) == (0, 0)
        messages = [r.getMessage() for r in caplog.records]
        assert sum("cannot write a batch" in m for m in messages) == 1, messages

        failing.clear()  # the disk is back
        assert client.flush_sync(timeout=30)
        stats = client.stats()
    assert stats["emitted"] == stats["spooled"] == 40
    assert stats["dropped"] == 0
    assert stats["write_errors"] >= 20
    spool = client.spool
    assert os.listdir(spool.root / "tmp") == []  # failed writes left nothing behind
    assert spool.pending().events == 40
    got = sorted(e["data"]["i"] for c in drain(spool) for e in c.events())
    assert got == list(range(40))  # nothing lost, nothing twice
    assert spool.dropped().events == 0
    assert spool.check() == []


def _permissions_enforced(tmp_path: Path) -> bool:
    """False for root (or CAP_DAC_OVERRIDE), which may write into a 0500 directory anyway."""
    probe = tmp_path / "probe"
    probe.mkdir(mode=0o500)
    try:
        (probe / "f").touch()
    except PermissionError:
        return True
    finally:
        probe.chmod(0o700)
    return False


def test_read_only_spool_dir_is_survived(
    settings_factory: SettingsFactory,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    tmp_path: Path,
) -> None:
    """A spool made read-only (0500) mid-run: errors counted and logged once; written once fixed."""
    if not _permissions_enforced(tmp_path):
        pytest.skip("directory permissions are not enforced for this user (root)")
    caplog.set_level(logging.WARNING, logger="telemetry_client")
    monkeypatch.setattr(_sealer, "RETRY_FAILED_AFTER_S", 0.01)
    settings = settings_factory(
        batch_max_events=10, linger_ms=1000, log_cooldown_s=3600, fsync="off"
    )
    with running_client(settings) as client:
        client.start()
        root = settings.resolved_spool_dir
        wait_until((root / "state").is_dir, what="spool opened")
        dirs = [Path(d) for d, _, _ in os.walk(root)]
        for d in dirs:
            os.chmod(d, 0o500)
        try:
            for i in range(40):
                client.emit("read_only", {"i": i})
            wait_until(lambda: client.stats()["write_errors"] >= 20, what="20 failed writes")
            messages = [r.getMessage() for r in caplog.records]
            assert sum("cannot write a batch" in m for m in messages) == 1, messages
        finally:
            for d in dirs:
                os.chmod(d, 0o700)
        assert client.flush_sync(timeout=30)
    assert client.stats()["spooled"] == 40
    assert client.spool.pending().events == 40
    assert client.spool.check() == []


# --- 9. purge -------------------------------------------------------------------------------------


def _purge_fixture(spool: Spool) -> tuple[dict[str, BatchName], Claim]:
    """Quarantined (2 ev, 6 d), dead (3, 5 d), claimed (4, 5 d), old (5, 4 d), recent (6, 1h)."""
    now = time.time_ns()
    names: dict[str, BatchName] = {}
    q = spool.seal(b"garbage, not zstd", 2, batch_id=ids.batch_id(now - 6 * DAY))
    assert q.name is not None
    names["quarantined"] = q.name
    assert spool.claim() is None  # quarantines it
    names["dead"], _ = seal_n(spool, 3, ts_ns=now - 5 * DAY)
    dead = spool.claim()
    assert dead is not None
    spool.dead_letter(dead)
    names["claimed"], _ = seal_n(spool, 4, ts_ns=now - 5 * DAY + 3600 * S)
    names["old"], _ = seal_n(spool, 5, ts_ns=now - 4 * DAY)
    names["recent"], _ = seal_n(spool, 6, ts_ns=now - 3600 * S)
    claim = spool.claim()
    assert claim is not None
    assert claim.name == names["claimed"]
    assert spool.quarantined() == [names["quarantined"]]
    assert spool.dead_letters() == [names["dead"]]
    return names, claim


def _present(spool: Spool) -> set[BatchName]:
    found = set(spool.quarantined()) | set(spool.dead_letters())
    for day in (spool.root / "batches").iterdir():
        found |= {n for f in os.listdir(day) if (n := BatchName.parse(f)) is not None}
    return found


@pytest.mark.parametrize(
    ("kwargs", "removed"),
    [
        ({"everything": True}, {"quarantined", "dead", "old", "recent"}),
        ({"dead_letter": True}, {"dead"}),
        ({"older_than_days": 3}, {"quarantined", "dead", "old"}),
    ],
    ids=["everything", "dead-letter", "older-than-3-days"],
)
def test_purge_removes_counts_and_spares_claimed(
    tmp_path: Path, kwargs: dict[str, Any], removed: set[str]
) -> None:
    """purge() removes what it is asked to, returns and records the events; spares claimed ones."""
    spool = Spool(tmp_path / "spool", max_bytes=BIG, retention_days=365, fsync=False)
    spool.open()
    names, claim = _purge_fixture(spool)
    expected_events = sum(names[k].n_events for k in removed)
    assert spool.purge(**kwargs) == expected_events
    assert _present(spool) == {n for k, n in names.items() if k not in removed}
    dropped = spool.dropped()
    assert dropped.by_reason == {
        "purged": {"events": expected_events, "bytes": sum(names[k].n_bytes for k in removed)}
    }
    assert batch_path(spool, names["claimed"]).exists()
    spool.release(claim)
    assert spool.check() == []


def test_purge_everything_removes_a_batch_once_released(spool: Spool) -> None:
    """A batch spared by purge because it was claimed is purged by the next purge after release."""
    name, _ = seal_n(spool, 4)
    claim = spool.claim()
    assert claim is not None
    assert spool.purge(everything=True) == 0
    spool.release(claim)
    assert spool.purge(everything=True) == 4
    assert not batch_path(spool, name).exists()
    assert not (spool.root / "batches" / name.day).exists()  # empty day dir removed
    assert spool.pending() == PendingStats(0, 0, 0, None)
    assert spool.check() == []


# --- 10. exactly once across threads --------------------------------------------------------------


def test_concurrent_claimers_ack_every_batch_exactly_once(spool: Spool) -> None:
    """4 threads (2 sharing a Spool, 2 with their own) claim/ack concurrently: each batch once."""
    now = time.time_ns()
    sealed = {seal_n(spool, 1, ts_ns=now - (400 - k) * S // 10)[0].batch_id for k in range(300)}
    assert len(sealed) == 300
    spools = [spool, spool, Spool(spool.root, max_bytes=BIG, fsync=False)]
    spools.append(Spool(spool.root, max_bytes=BIG, fsync=False))
    claimed: list[str] = []
    start = threading.Barrier(len(spools))

    def worker(sp: Spool) -> int:
        start.wait(timeout=30)
        done = 0
        while (claim := sp.claim()) is not None and len(claimed) <= 300:
            claimed.append(claim.batch_id)
            assert claim.events()[0]["type"] == "spool_test"
            sp.ack(claim)
            done += 1
        return done

    with ThreadPoolExecutor(len(spools)) as pool:
        counts = [f.result(timeout=60) for f in [pool.submit(worker, sp) for sp in spools]]
    assert sum(counts) == 300
    dupes = [bid for bid, k in Counter(claimed).items() if k > 1]
    assert dupes == []
    assert set(claimed) == sealed
    assert spool.pending().batches == 0
    assert spool.check() == []


def test_cap_usage_from_names_equals_the_listing_total(tmp_path: Path) -> None:
    """The cap's fast count (names only, every seal) is the full listing's total, with
    batches in days, dead letters, quarantine, blobs, state/ and usage/ files all present."""
    spool = Spool(tmp_path / "spool", max_bytes=64 * 2**20, fsync=False)
    spool.open()
    now = time.time_ns()
    for k in range(6):
        body = noisy_body(3, f"u{k}")
        assert spool.seal(body, 3, batch_id=ids.batch_id(now - k * 86_400 * S)).name
    spool.dead_letter(spool.claim())  # type: ignore[arg-type]
    spool.quarantine(spool.claim())  # type: ignore[arg-type]
    spool.put_blob(os.urandom(200_000), "application/octet-stream")
    spool.record_loss("disk_error", 5, 100, now, now)  # state/dropped.json
    usage_dir = spool.root / "usage"
    usage_dir.mkdir(exist_ok=True)
    (usage_dir / "x.json").write_bytes(b"0" * 1234)
    cap = spool._cap  # the same Cap the seals use
    total = cap.listing()[2]
    assert total > 6 * 100
    assert cap.usage() == total == spool.usage()
