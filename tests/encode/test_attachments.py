"""Attachments, emit side: large fields move out of events into content-addressed blobs.

Covers the encoder rules (``encode/encoder.py``), the blob store of the spool (``spool/store.py``
invariant 6, ``spool/blobs.py``) and the path through ``TelemetryClient``. Storage tests end
with ``spool.check() == []``; nothing sleeps to synchronise.
"""

from __future__ import annotations

import base64
import contextlib
import errno
import hashlib
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import zstandard

from telemetry_client import TelemetryClient, TelemetrySettings
from telemetry_client._internal import fs as spool_fs
from telemetry_client._internal.log import RateLimitedLogger
from telemetry_client.batch import Batcher
from telemetry_client.encode import Encoder
from telemetry_client.encode.attachments import EXCERPT_BYTES
from telemetry_client.encode.redact import Redactor
from telemetry_client.spool import Spool
from telemetry_client.spool.blobs import BINARY, TEXT, AttachmentRef, BlobName, attachment_refs

LIMIT = 1024  # inline limit of these tests
MAX = 64 * 1024  # attachment max of these tests
S = 1_000_000_000
HOUR = 3600 * S
BIG = 1 << 30
OPENAI_KEY = "sk-proj-" + "A1b2C3d4E5f6G7h8I9j0" * 2

SettingsFactory = Callable[..., TelemetrySettings]


# --- helpers --------------------------------------------------------------------------------------


@pytest.fixture
def spool(tmp_path: Path) -> Spool:
    sp = Spool(tmp_path / "spool", max_bytes=BIG, fsync=False)
    sp.open()
    return sp


def make_encoder(spool: Spool | None, *, limit: int = LIMIT, max_bytes: int = MAX) -> Encoder:
    return Encoder(
        redactor=Redactor(),
        app="app",
        app_version="1",
        machine_id="m",
        user_id="u",
        session_id="s",
        put_blob=None if spool is None else spool.put_blob,
        inline_max_bytes=limit,
        attachment_max_bytes=max_bytes,
        log=RateLimitedLogger(),
    )


def record(data: Any, seq: int = 1) -> tuple[Any, ...]:
    return ("thing", data, time.time_ns(), seq, None, None)


def encode(enc: Encoder, data: Any) -> dict[str, Any]:
    """Encode one record; the parsed ``data`` of the line."""
    line = enc.encode(record(data))  # type: ignore[arg-type]
    out = orjson.loads(line)["data"]
    assert isinstance(out, dict)
    return out


def ref_of(value: Any) -> dict[str, Any]:
    """The body of an ``{"$attachment": {...}}`` reference (asserting the shape)."""
    assert isinstance(value, dict)
    assert set(value) == {"$attachment"}
    body = value["$attachment"]
    assert isinstance(body, dict)
    return body


def blob_content(spool: Spool, sha: str) -> bytes:
    body = spool.read_blob(sha)
    assert body is not None
    return zstandard.ZstdDecompressor().decompress(body)


def blob_files(spool: Spool) -> list[Path]:
    return sorted((spool.root / "attachments").iterdir())


def spooled_events(spool: Spool) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for _name, raw in spool.iter_batches_newest_first():
        out.extend(orjson.loads(line) for line in raw.splitlines())
    return out


@contextlib.contextmanager
def running_client(settings: TelemetrySettings) -> Iterator[TelemetryClient]:
    client = TelemetryClient(settings)
    try:
        yield client
    finally:
        client.close(timeout=30)


# --- encoder: what moves out, and how it is referenced --------------------------------------------


def _nest(value: Any, where: str) -> dict[str, Any]:
    if where == "top":
        return {"field": value}
    if where == "list":
        return {"items": [1, "small", value]}
    return {"outer": {"inner": [{"field": value}]}}


def _get(data: dict[str, Any], where: str) -> Any:
    if where == "top":
        return data["field"]
    if where == "list":
        return data["items"][2]
    return data["outer"]["inner"][0]["field"]


@pytest.mark.parametrize("where", ["top", "list", "dict"])
@pytest.mark.parametrize(
    ("kind", "at_limit", "over_limit"),
    [
        ("ascii", "x" * LIMIT, "x" * (LIMIT + 1)),
        # UTF-8 bytes count, not characters: 512 two-byte characters are exactly the limit.
        ("utf8", "é" * (LIMIT // 2), "é" * (LIMIT // 2) + "a"),
        # Not UTF-8, so inline as base64 (longer than the limit): the raw size is what counts.
        ("bytes", b"\xff" * LIMIT, b"\xff" * (LIMIT + 1)),
    ],
)
def test_a_field_moves_out_only_when_over_the_inline_limit(
    spool: Spool, where: str, kind: str, at_limit: Any, over_limit: Any
) -> None:
    """At the limit a str/bytes field stays inline (bytes as base64); one byte more moves out."""
    enc = make_encoder(spool)
    kept = _get(encode(enc, _nest(at_limit, where)), where)
    if kind == "bytes":
        assert kept == {"$base64": base64.b64encode(at_limit).decode()}
    else:
        assert kept == at_limit
    assert blob_files(spool) == []

    moved = ref_of(_get(encode(enc, _nest(over_limit, where)), where))
    raw = over_limit if isinstance(over_limit, bytes) else over_limit.encode()
    assert moved == {
        "sha256": hashlib.sha256(raw).hexdigest(),
        "size": len(raw),
        "content_type": BINARY if kind == "bytes" else TEXT,
    }
    assert blob_content(spool, moved["sha256"]) == raw
    assert (enc.attachments, enc.attachment_errors, enc.attachments_truncated) == (1, 0, 0)
    assert spool.check() == []


def test_a_large_event_of_small_fields_stays_whole(spool: Spool) -> None:
    """Only fields over the limit move out: an event large in total, of small fields, stays."""
    enc = make_encoder(spool)
    data = {f"k{i}": "v" * 100 for i in range(50)} | {"l": ["w" * 500] * 10}
    assert encode(enc, data) == data
    assert (enc.attachments, blob_files(spool)) == (0, [])


def test_the_blob_store_is_any_put_blob_callable() -> None:
    """The encoder reaches the blob store through one callable: a plain function returning
    anything with ``sha256`` and ``stored`` works (a dict here), for text and bytes alike."""
    stored: dict[str, tuple[bytes, str]] = {}

    class Outcome:
        def __init__(self, sha256: str) -> None:
            self.sha256 = sha256
            self.stored = True

    def put_blob(raw: bytes, content_type: str) -> Outcome:
        sha = hashlib.sha256(raw).hexdigest()
        stored[sha] = (raw, content_type)
        return Outcome(sha)

    enc = Encoder(
        redactor=Redactor(enabled=False),
        app="app",
        app_version="1",
        machine_id="m",
        user_id="u",
        session_id="s",
        put_blob=put_blob,
        inline_max_bytes=LIMIT,
    )
    text, raw = "t" * (LIMIT + 1), b"\x00" * (LIMIT + 1)
    data = encode(enc, {"text": text, "raw": raw})
    refs = {k: ref_of(data[k]) for k in ("text", "raw")}
    assert stored[refs["text"]["sha256"]] == (text.encode(), TEXT)
    assert stored[refs["raw"]["sha256"]] == (raw, BINARY)
    assert enc.attachments == 2


def test_blob_is_one_zstd_frame_named_by_hash_and_sizes(spool: Spool) -> None:
    """The blob file is ``<sha256>.<raw>.<stored>.zst``, 0600, and inflates to the raw bytes."""
    raw = os.urandom(3000)
    ref = ref_of(encode(make_encoder(spool), {"payload": raw})["payload"])
    (path,) = blob_files(spool)
    name = BlobName.parse(path.name)
    assert name is not None
    assert (name.sha256, name.raw_size) == (hashlib.sha256(raw).hexdigest(), len(raw))
    assert name.stored_size == path.stat().st_size
    assert path.stat().st_mode & 0o777 == 0o600
    body = path.read_bytes()
    assert spool.read_blob(ref["sha256"]) == body  # the wire body, as stored
    assert zstandard.ZstdDecompressor().decompress(body) == raw
    assert spool.blob_usage() == (1, name.stored_size)
    assert spool.check() == []


def test_text_is_redacted_before_it_is_hashed_and_stored(spool: Spool) -> None:
    """An API key inside a large file content is masked in the blob; redactions are counted."""
    content = "config line\n" * 200 + f"OPENAI_API_KEY={OPENAI_KEY}\n" + "more\n" * 100
    enc = make_encoder(spool)
    ref = ref_of(encode(enc, {"file": {"path": "a.env", "content": content}})["file"]["content"])
    stored = blob_content(spool, ref["sha256"])
    assert OPENAI_KEY.encode() not in stored
    assert b"[REDACTED:openai_key]" in stored
    assert ref["sha256"] == hashlib.sha256(stored).hexdigest()
    assert ref["size"] == len(stored)
    assert enc.redacted == 1
    for path in blob_files(spool):
        assert OPENAI_KEY.encode() not in path.read_bytes()
    assert spool.check() == []


def test_bytes_are_stored_as_they_are(spool: Spool) -> None:
    """bytes are never decoded or redacted: the blob holds exactly what was emitted."""
    raw = f"token={OPENAI_KEY}\n".encode() * 100  # valid UTF-8, still binary content
    ref = ref_of(encode(make_encoder(spool), {"blob": bytearray(raw)})["blob"])
    assert ref["content_type"] == BINARY
    assert blob_content(spool, ref["sha256"]) == raw


def test_extra_patterns_never_rewrite_a_reference(spool: Spool) -> None:
    """A custom pattern matching hex strings masks user text, never the reference's sha256."""
    enc = Encoder(
        redactor=Redactor(extra_patterns=[r"[0-9a-f]{40,}"]),
        app="app",
        app_version="1",
        machine_id="m",
        user_id="u",
        session_id="s",
        put_blob=spool.put_blob,
        inline_max_bytes=LIMIT,
        attachment_max_bytes=MAX,
    )
    raw = os.urandom(LIMIT * 2)
    data = encode(enc, {"bin": raw, "hex": "ab" * 30})
    assert data["hex"] == "[REDACTED:custom]"
    assert ref_of(data["bin"])["sha256"] == hashlib.sha256(raw).hexdigest()


def test_same_content_twice_is_one_blob_with_a_fresh_mtime(spool: Spool) -> None:
    """Content is stored once; emitting it again only refreshes the blob's mtime."""
    enc = make_encoder(spool)
    content = "same content " * 200
    first = ref_of(encode(enc, {"c": content})["c"])
    (path,) = blob_files(spool)
    os.utime(path, ns=(time.time_ns() - 5 * HOUR, time.time_ns() - 5 * HOUR))
    before = path.stat().st_mtime_ns
    second = ref_of(encode(enc, {"c": content, "again": [content]})["again"][0])
    assert first == second
    assert blob_files(spool) == [path]
    assert path.stat().st_mtime_ns > before + 4 * HOUR
    assert enc.attachments == 3
    assert spool.check() == []


@pytest.mark.parametrize("kind", ["str", "bytes"])
def test_over_the_attachment_max_only_a_truncated_marker_is_kept(spool: Spool, kind: str) -> None:
    """Above the attachment max: size, sha256, ``truncated`` and (text) head/tail; no blob."""
    text = "HEAD" + "é" * (MAX // 2) + "TAIL"
    value: Any = text if kind == "str" else text.encode()
    raw = text.encode()
    enc = make_encoder(spool)
    ref = ref_of(encode(enc, {"big": value})["big"])
    assert ref["truncated"] is True
    assert (ref["size"], ref["sha256"]) == (len(raw), hashlib.sha256(raw).hexdigest())
    if kind == "str":
        assert ref["content_type"] == TEXT
        assert ref["head"].startswith("HEAD")
        assert ref["tail"].endswith("TAIL")
        # about 1 KiB of text each, never a broken character
        assert EXCERPT_BYTES - 4 <= len(ref["head"].encode()) <= EXCERPT_BYTES
        assert EXCERPT_BYTES - 4 <= len(ref["tail"].encode()) <= EXCERPT_BYTES
    else:
        assert ref["content_type"] == BINARY
        assert "head" not in ref
        assert "tail" not in ref
    assert blob_files(spool) == []
    assert (enc.attachments, enc.attachments_truncated) == (0, 1)
    assert attachment_refs(enc.encode(record({"big": value}))) == []  # type: ignore[arg-type]
    assert spool.check() == []


def test_a_blob_that_cannot_be_written_keeps_the_event(
    spool: Spool, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Disk full while storing a blob: the event keeps size, hash and excerpt (``stored``
    false), the failure is counted and logged, and nothing is left behind."""

    def full(path: Path) -> int:
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(spool_fs, "open_new", full)
    enc = make_encoder(spool)
    content = "first line\n" + "body " * 400
    data = encode(enc, {"content": content, "n": 1})
    ref = ref_of(data["content"])
    assert ref["stored"] is False
    assert ref["sha256"] == hashlib.sha256(content.encode()).hexdigest()
    assert ref["size"] == len(content)
    assert ref["head"].startswith("first line")
    assert data["n"] == 1
    assert (enc.attachments, enc.attachment_errors) == (0, 1)
    assert any("not stored" in r.getMessage() for r in caplog.records)
    assert blob_files(spool) == []
    assert os.listdir(spool.root / "tmp") == []
    monkeypatch.undo()
    assert spool.check() == []


def test_a_blob_larger_than_the_whole_spool_is_not_stored(tmp_path: Path) -> None:
    """A blob that alone exceeds the cap is not written and evicts nothing: ``stored`` false."""
    spool = Spool(tmp_path / "spool", max_bytes=8 * 1024, fsync=False)
    spool.open()
    enc = make_encoder(spool, max_bytes=BIG)
    ref = ref_of(encode(enc, {"bin": os.urandom(16 * 1024)})["bin"])
    assert ref["stored"] is False
    assert enc.attachment_errors == 1
    assert spool.blob_usage() == (0, 0)
    assert spool.check() == []


def test_without_a_blob_sink_large_fields_stay_inline() -> None:
    """An encoder built without ``put_blob`` (attachments off) keeps every field inline."""
    enc = make_encoder(None)
    assert encode(enc, {"text": "x" * (LIMIT * 4)})["text"] == "x" * (LIMIT * 4)


@pytest.mark.parametrize("session_id", [b"\xff" * (LIMIT * 2), b"\xff"])
def test_envelope_ids_never_become_attachments(spool: Spool, session_id: bytes) -> None:
    """A (bad) bytes session id, however large, is written into the envelope as text by the
    encode_error fallback: no blob, and encoding stays total."""
    enc = make_encoder(spool)
    for encode_fn in (enc.encode, enc.encode_inline_only):
        line = encode_fn(("thing", {"a": 1}, time.time_ns(), 1, session_id, None))
        assert line is not None
        event = orjson.loads(line)
        assert event["type"] == "encode_error"
        assert isinstance(event["session_id"], str)
    assert blob_files(spool) == []
    assert enc.attachments == 0


def test_inline_only_encoding_leaves_attachment_work_untouched(spool: Spool) -> None:
    """``encode_inline_only`` returns None for a record needing a blob: nothing stored or
    counted; small records encode as usual."""
    enc = make_encoder(spool)
    rec = record({"big": "x" * (LIMIT + 1), "when": float("nan"), "key": OPENAI_KEY})
    assert enc.encode_inline_only(rec) is None  # type: ignore[arg-type]
    assert blob_files(spool) == []
    assert (enc.attachments, enc.redacted, dict(enc.coerced)) == (0, 0, {})
    big_bytes = record({"b": os.urandom(LIMIT + 1)})
    assert enc.encode_inline_only(big_bytes) is None  # type: ignore[arg-type]
    assert blob_files(spool) == []
    small = enc.encode_inline_only(record({"small": "x" * 10}))  # type: ignore[arg-type]
    assert small is not None
    assert orjson.loads(small)["data"] == {"small": "x" * 10}
    assert enc.encode(rec) is not None  # type: ignore[arg-type]
    assert (enc.attachments, enc.redacted, dict(enc.coerced)) == (1, 1, {"non_finite": 1})


def test_backpressure_handoff_never_stores_a_blob_on_the_emitting_thread(spool: Spool) -> None:
    """A hand-off encodes the records before a large one, leaves it at the buffer's head for
    the writer and skips it afterwards; the writer's pass stores the blob, in order."""
    batcher = Batcher(
        spool=spool,
        encoder_factory=lambda: make_encoder(spool),
        batch_max_events=1000,
        batch_max_bytes=1 << 20,
        linger_s=0.2,
        buffer_max=10,
        log=RateLimitedLogger(),
    )
    for i in range(3):
        batcher.buffer.append(record({"i": i}, seq=i))  # type: ignore[arg-type]
    big = record({"content": "y" * (LIMIT * 3)}, seq=3)
    batcher.buffer.append(big)  # type: ignore[arg-type]
    batcher.buffer.append(record({"i": 4}, seq=4))  # type: ignore[arg-type]
    batcher.handoff()
    assert batcher.buffer[0] is big
    assert len(batcher.buffer) == 2
    batcher.handoff()  # the writer has not taken it yet: skipped, not re-encoded
    assert len(batcher.buffer) == 2
    assert blob_files(spool) == []
    assert batcher.flush(timeout=10)  # no writer thread: this thread does the writer's work
    events = sorted(spooled_events(spool), key=lambda e: e["seq"])
    assert [e["seq"] for e in events] == [0, 1, 2, 3, 4]
    ref = ref_of(events[3]["data"]["content"])
    assert blob_content(spool, ref["sha256"]) == b"y" * (LIMIT * 3)
    assert batcher.describe()["attachments"] == 1
    assert spool.check() == []


# --- attachment_refs ------------------------------------------------------------------------------


def test_attachment_refs_lists_exactly_the_stored_references() -> None:
    """Unique stored refs in order of appearance; truncated, ``stored: false``, malformed and
    look-alike objects are not references to send."""
    a, b, c = (hashlib.sha256(x).hexdigest() for x in (b"a", b"b", b"c"))

    def ref(sha: str, **extra: Any) -> dict[str, Any]:
        return {"$attachment": {"sha256": sha, "size": 10, "content_type": TEXT, **extra}}

    events = [
        {"type": "t", "data": {"x": 1}},
        {"type": "t", "data": {"f": ref(a), "l": [ref(b), {"deep": ref(a)}]}},
        {"type": "t", "data": {"t": ref(c, truncated=True, head="h", tail="t")}},
        {"type": "t", "data": {"s": ref(c, stored=False)}},
        {"type": "t", "data": {"bad": ref("not-hex"), "neg": ref(c, size=-1)}},
        {"type": "t", "data": {"extra": {**ref(c), "other": 1}}},
        {"type": "t", "data": {"text": 'a string mentioning "$attachment"'}},
        {"type": "t", "data": {"b2": ref(b)}},
    ]
    raw = b"".join(orjson.dumps(e) + b"\n" for e in events)
    assert attachment_refs(raw) == [
        AttachmentRef(a, 10, TEXT),
        AttachmentRef(b, 10, TEXT),
    ]
    assert attachment_refs(b'{"type":"t","data":{}}\n') == []
    assert attachment_refs(b"") == []


def test_attachment_refs_reads_what_the_encoder_writes(spool: Spool) -> None:
    """The refs found in encoded lines are the blobs the encoder stored, each once."""
    enc = make_encoder(spool)
    lines = [
        enc.encode(record({"a": "1" * 2000, "b": b"\x00" * 3000})),  # type: ignore[arg-type]
        enc.encode(record({"a": "1" * 2000, "small": "s"})),  # type: ignore[arg-type]
        enc.encode(record({"small": "s"})),  # type: ignore[arg-type]
    ]
    refs = attachment_refs(b"\n".join(lines) + b"\n")
    assert [(r.size, r.content_type) for r in refs] == [(2000, TEXT), (3000, BINARY)]
    stored = {p.name.split(".")[0] for p in blob_files(spool)}
    assert {r.sha256 for r in refs} == stored


# --- the blob store -------------------------------------------------------------------------------


def test_a_corrupt_blob_is_quarantined_not_sent(
    spool: Spool, caplog: pytest.LogCaptureFixture
) -> None:
    """read_blob() checks size, frame and hash: a damaged blob moves to quarantine/, None."""
    ref = spool.put_blob(b"payload " * 500, TEXT)
    (path,) = blob_files(spool)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    assert spool.read_blob(ref.sha256) is None
    assert not path.exists()
    assert (spool.root / "quarantine" / path.name).exists()
    assert spool.usage() >= len(data)  # still counts toward the cap
    assert any("quarantined attachment" in r.getMessage() for r in caplog.records)
    assert spool.read_blob("../../etc/passwd") is None
    assert spool.read_blob(hashlib.sha256(b"never stored").hexdigest()) is None
    assert spool.check() == []


def test_check_reports_a_blob_whose_content_does_not_match_its_name(spool: Spool) -> None:
    """check() verifies every blob: a frame of other content under a name is a problem."""
    ref = spool.put_blob(b"one content " * 100, TEXT)
    other = zstandard.ZstdCompressor(write_checksum=True).compress(b"two content " * 100)
    name = BlobName(ref.sha256, 1200, len(other))
    for p in blob_files(spool):
        p.unlink()
    (spool.root / "attachments" / name.filename).write_bytes(other)
    os.chmod(spool.root / "attachments" / name.filename, 0o600)
    assert any("does not match the sha256" in p for p in spool.check())


def test_leftover_blob_tmp_of_a_dead_writer_is_removed(spool: Spool) -> None:
    """recover() removes an unlocked, aged blob temp file (its event died with its writer)."""
    sha = hashlib.sha256(b"x").hexdigest()
    leftover = spool.root / "tmp" / f"{sha}.123.abcd.blob.tmp"
    leftover.write_bytes(b"partial")
    os.chmod(leftover, 0o600)
    assert any("leftover temporary file" in p for p in spool.check())
    assert spool.recover() == 1
    assert not leftover.exists()
    assert spool.dropped().events == 0
    assert spool.check() == []


# --- garbage collection ---------------------------------------------------------------------------


def _seal_referencing(spool: Spool, enc: Encoder, content: str) -> dict[str, Any]:
    """Encode an event with a large field (storing its blob), then seal its batch."""
    line = enc.encode(record({"content": content}))  # type: ignore[arg-type]
    body = zstandard.ZstdCompressor(write_checksum=True).compress(line + b"\n")
    assert spool.seal(body, 1).name is not None
    return ref_of(orjson.loads(line)["data"]["content"])


def test_gc_keeps_a_blob_a_pending_batch_references(spool: Spool) -> None:
    """A blob stored just before its batch was sealed survives any amount of waiting while
    the batch is pending, and goes once the batch is acknowledged and the grace has passed."""
    enc = make_encoder(spool)
    ref = _seal_referencing(spool, enc, "referenced " * 300)
    later = time.time_ns() + 48 * HOUR
    assert spool.gc_blobs(grace_s=3600, now_ns=later) == 0
    assert spool.read_blob(ref["sha256"]) is not None
    claim = spool.claim()
    assert claim is not None
    assert attachment_refs(claim.raw) == [AttachmentRef(ref["sha256"], ref["size"], TEXT)]
    spool.ack(claim)
    assert spool.gc_blobs(grace_s=3600) == 0  # just written: an event may still be in memory
    assert spool.read_blob(ref["sha256"]) is not None
    assert spool.gc_blobs(grace_s=3600, now_ns=later) == 1
    assert spool.read_blob(ref["sha256"]) is None
    assert spool.blob_usage() == (0, 0)
    assert spool.check() == []


def test_gc_keeps_the_blobs_of_dead_letters(spool: Spool) -> None:
    """Dead letters keep their blobs (they are listed and may be inspected or replayed)."""
    ref = _seal_referencing(spool, make_encoder(spool), "dead " * 300)
    claim = spool.claim()
    assert claim is not None
    spool.dead_letter(claim)
    assert spool.gc_blobs(grace_s=3600, now_ns=time.time_ns() + 48 * HOUR) == 0
    assert spool.read_blob(ref["sha256"]) is not None
    assert spool.check() == []


def test_gc_removes_only_blobs_older_than_every_batch_by_the_grace(spool: Spool) -> None:
    """With batches pending, only blobs last referenced more than ``grace`` before the oldest
    one go; a blob referenced again later (mtime refreshed) stays."""
    enc = make_encoder(spool)
    now = time.time_ns()
    old = spool.put_blob(b"old " * 500, TEXT)
    refreshed = spool.put_blob(b"refreshed " * 500, TEXT)
    for p in blob_files(spool):
        os.utime(p, ns=(now - 10 * HOUR, now - 10 * HOUR))
    spool.put_blob(b"refreshed " * 500, TEXT)  # referenced again now
    _seal_referencing(spool, enc, "recent " * 300)
    assert spool.gc_blobs(grace_s=3600, now_ns=now + 48 * HOUR) == 1
    assert spool.read_blob(old.sha256) is None
    assert spool.read_blob(refreshed.sha256) is not None
    assert spool.blob_usage()[0] == 2
    assert spool.check() == []


def test_retention_removes_blobs_no_kept_batch_references(spool: Spool) -> None:
    """purge_expired() removes expired batches and dead letters, then blobs they referenced."""
    enc = make_encoder(spool)
    ref = _seal_referencing(spool, enc, "expiring " * 300)
    claim = spool.claim()
    assert claim is not None
    spool.dead_letter(claim)
    (dead,) = spool.dead_letters()
    future = time.time_ns() + int(spool.retention_s * S) + 2 * HOUR
    assert spool.purge_expired(now_ns=future) == 1
    assert spool.dead_letters() == []
    assert spool.read_blob(ref["sha256"]) is None
    assert spool.dropped().by_reason == {"retention": {"events": 1, "bytes": dead.n_bytes}}
    assert spool.check() == []


# --- through the client ---------------------------------------------------------------------------


def test_emit_spools_the_reference_and_the_blob(settings_factory: SettingsFactory) -> None:
    """emit() -> flush: the spooled event holds the reference, the blob is in the spool."""
    content = "def main():\n    return 42\n" * 200
    with running_client(settings_factory(inline_max_bytes=LIMIT)) as client:
        client.emit("file_write", {"path": "main.py", "content": content, "n": 1})
        assert client.flush_sync(timeout=30)
        (event,) = spooled_events(client.spool)
        ref = ref_of(event["data"]["content"])
        assert ref["sha256"] == hashlib.sha256(content.encode()).hexdigest()
        assert blob_content(client.spool, ref["sha256"]) == content.encode()
        assert event["data"]["n"] == 1
        stats = client.stats()
        assert (stats["attachments"], stats["attachment_errors"]) == (1, 0)
        assert client.spool.pending().batches == 1  # blobs are not batches
        assert client.spool.blob_usage()[0] == 1
        assert client.spool.check() == []


def test_a_failing_blob_write_is_counted_and_the_event_still_spooled(
    settings_factory: SettingsFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Through the client: a blob write error is in stats() and the event is on disk."""

    def failing(self: Spool, raw: bytes, content_type: str) -> Any:
        raise OSError(errno.EIO, "I/O error")

    monkeypatch.setattr(Spool, "put_blob", failing)
    with running_client(settings_factory(inline_max_bytes=LIMIT)) as client:
        client.emit("tool_result", {"output": "z" * 5000})
        assert client.flush_sync(timeout=30)
        (event,) = spooled_events(client.spool)
        assert ref_of(event["data"]["output"])["stored"] is False
        assert client.stats()["attachment_errors"] == 1
        assert client.stats()["spooled"] == 1


def test_blobs_count_toward_the_cap(settings_factory: SettingsFactory) -> None:
    """Many large incompressible attachments never push the spool over its cap: the oldest
    data (batches and blobs) is evicted and the evicted blob bytes are counted."""
    cap = 64 * 1024
    settings = settings_factory(
        inline_max_bytes=LIMIT, spool_max_bytes=cap, batch_max_events=4, linger_ms=1
    )
    with running_client(settings) as client:
        for round_no in range(10):
            for i in range(8):
                client.emit("file_read", {"i": i, "content": os.urandom(6000)})
            assert client.flush_sync(timeout=30)
            assert client.spool.usage() <= cap, round_no
            assert client.spool.disk_usage() <= cap, round_no
        dropped = client.spool.dropped()
        assert dropped.by_reason["attachment_cap"]["bytes"] > 0
        assert client.stats()["attachments"] == 80
        assert client.spool.blob_usage()[1] <= cap
        assert client.spool.check() == []


def test_blob_ids_and_batch_ids_keep_the_gc_order(settings_factory: SettingsFactory) -> None:
    """The batch holding an event is sealed (its id minted) after the event's blob was
    stored: every batch id time is at or after the mtime of the blobs it references."""
    with running_client(settings_factory(inline_max_bytes=LIMIT)) as client:
        for i in range(5):
            client.emit("thinking", {"i": i, "text": f"{i} " * 1000})
        assert client.flush_sync(timeout=30)
        mtimes = {
            BlobName.parse(p.name).sha256: p.stat().st_mtime_ns  # type: ignore[union-attr]
            for p in blob_files(client.spool)
        }
        for name, raw in client.spool.iter_batches_newest_first():
            for ref in attachment_refs(raw):
                # batch ids carry milliseconds: allow for the truncation
                assert name.created_ns + 1_000_000 >= mtimes[ref.sha256]
        assert len(mtimes) == 5
