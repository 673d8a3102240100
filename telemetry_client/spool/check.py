"""``check()``: verify a spool's on-disk invariants and say, in words, what is broken.

Modes (0700/0600), every batch in the day of its id and readable (``deep``: one sound
frame of complete envelopes), every blob matching its name, no leftover of a dead writer
in ``tmp/``, usage within the cap (plus the caller's slack for writes in flight) and
readable loss counters. Tests end with ``spool.check() == []``; the invariants are listed
in ``docs/spool.md``.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import orjson

from telemetry_client._internal import fs as _fs
from telemetry_client.events import ENVELOPE_FIELDS
from telemetry_client.spool.blob_store import BlobStore
from telemetry_client.spool.blobs import BlobName
from telemetry_client.spool.cap import Cap
from telemetry_client.spool.layout import BatchName, SpoolDir, being_created, same_file
from telemetry_client.spool.ledger import DropCounts
from telemetry_client.spool.queue import BatchQueue

__all__ = ["check", "disk_usage"]


def check(
    d: SpoolDir,
    *,
    queue: BatchQueue,
    blobs: BlobStore,
    cap: Cap,
    deep: bool = True,
    slack_bytes: int = 0,
) -> list[str]:
    """The problems found (empty = healthy); ``slack_bytes``: batches being written now."""
    problems = _check_modes(d.root)
    for day in d.days():
        problems.extend(_check_day(d, day, queue, deep=deep))
    problems.extend(_check_blobs(d, blobs, deep=deep))
    with contextlib.suppress(FileNotFoundError):
        for fn in os.listdir(d.tmp):
            path = d.tmp / fn
            try:
                fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                continue
            try:
                if _fs.try_lock(fd) and same_file(fd, path) and not being_created(fd):
                    problems.append(f"leftover temporary file of a dead writer: {path}")
            finally:
                os.close(fd)
    used = cap.usage() + _tmp_bytes(d)
    if used > cap.max_bytes + slack_bytes:
        problems.append(f"spool uses {used} bytes, cap {cap.max_bytes} (+{slack_bytes} slack)")
    if d.dropped_path.exists():
        try:
            DropCounts.from_json(d.dropped_path.read_bytes())
        except (ValueError, KeyError, TypeError) as exc:
            problems.append(f"unreadable {d.dropped_path}: {exc}")
    return problems


def disk_usage(root: Path) -> int:
    """Actual sum of file sizes under ``root`` (what tests compare with the cap)."""
    total = 0
    for dirpath, _dirs, files in os.walk(root):
        for fn in files:
            with contextlib.suppress(FileNotFoundError):
                total += os.lstat(Path(dirpath) / fn).st_size
    return total


def _check_modes(root: Path) -> list[str]:
    problems: list[str] = []
    for dirpath, _dirs, filenames in os.walk(root):
        mode = os.stat(dirpath).st_mode & 0o777
        if mode != _fs.DIR_MODE:
            problems.append(f"directory {dirpath} has mode {mode:o}, expected 700")
        for fn in filenames:
            p = Path(dirpath) / fn
            try:
                st = os.lstat(p)
            except FileNotFoundError:
                continue
            if st.st_mode & 0o777 != _fs.FILE_MODE:
                problems.append(f"file {p} has mode {st.st_mode & 0o777:o}, expected 600")
    return problems


def _check_day(d: SpoolDir, day: str, queue: BatchQueue, *, deep: bool) -> list[str]:
    problems: list[str] = []
    folder = d.batches / day
    for fn in os.listdir(folder):
        name = BatchName.parse(fn)
        path = folder / fn
        if name is None:
            problems.append(f"unexpected file in batches: {path}")
            continue
        if name.day != day:
            problems.append(f"batch {fn} is in day {day}, its id says {name.day}")
        try:
            body = path.read_bytes()
        except FileNotFoundError:
            continue  # acked or evicted meanwhile
        if deep:
            problem, raw = queue.validate(name, body)
            if problem is not None:
                problems.append(f"batch {fn}: {problem}")
                continue
            for i, line in enumerate(raw.splitlines()):
                try:
                    ev = orjson.loads(line)
                except orjson.JSONDecodeError:
                    problems.append(f"batch {fn} line {i}: not JSON")
                    break
                missing = [k for k in ENVELOPE_FIELDS if k not in ev]
                if missing:
                    problems.append(f"batch {fn} line {i}: missing {missing}")
                    break
        elif len(body) != name.n_bytes:
            problems.append(f"batch {fn}: size {len(body)} != {name.n_bytes}")
    return problems


def _check_blobs(d: SpoolDir, blobs: BlobStore, *, deep: bool) -> list[str]:
    problems: list[str] = []
    try:
        names = os.listdir(d.attachments)
    except FileNotFoundError:
        return []  # a spool that never stored a blob (or was never opened)
    for fn in names:
        path = d.attachments / fn
        blob = BlobName.parse(fn)
        if blob is None:
            problems.append(f"unexpected file in attachments: {path}")
            continue
        try:
            body = path.read_bytes() if deep else b""
            size = len(body) if deep else os.lstat(path).st_size
        except FileNotFoundError:
            continue  # collected or evicted meanwhile
        if size != blob.stored_size:
            problems.append(f"blob {fn}: size {size} != {blob.stored_size}")
        elif deep:
            problem = blobs.validate(blob, body)
            if problem is not None:
                problems.append(f"blob {fn}: {problem}")
    return problems


def _tmp_bytes(d: SpoolDir) -> int:
    total = 0
    with contextlib.suppress(FileNotFoundError):
        for entry in os.scandir(d.tmp):
            with contextlib.suppress(FileNotFoundError):
                total += entry.stat(follow_symlinks=False).st_size
    return total
