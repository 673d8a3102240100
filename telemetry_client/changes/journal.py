"""The change journal of a spool: every recorded file operation, its decision, and what a
revert needs, shared by every process on the spool (design: docs/changes.md).

On-disk layout (directory 0700, files 0600, whatever the umask)::

    <spool_dir>/changes/
      journal.jsonl    one JSON object a line, appended under the lock: ``op`` records
                       (one per file operation) and ``decision`` records (the last wins)
      journal.lock     flock'ed by every writer (append, revert, prune, eviction)
      <key>.before     the bytes before the op (what a revert writes back)
      <key>.diff       its unified diff (what the panel shows), when larger than
                       ``INLINE_DIFF_MAX``; a smaller one is inline in the op record
      usage            the bytes of the kept contents (a hint: recounted when missing,
                       unreadable, or when it says the cap is passed)
      csrf.key         the panel's CSRF secret (shared, so any worker accepts any form)

``<key>`` is a digest of the op id, so no caller string ever becomes a file name. The
``.before``/``.diff`` files together stay within ``max_bytes`` (``TELEMETRY_CHANGES_MAX_BYTES``):
after a record passes the cap the oldest ops lose theirs first, down to 90 % of it, so
the directory listing that eviction needs is paid once per tenth of the cap, not per record
(the panel then says revert is no longer possible). The journal itself is compacted to its
newest records past ``JOURNAL_MAX_BYTES`` and follows the spool's retention
(:meth:`ChangeJournal.prune`).

Readers take no lock: appends are whole lines (a torn last line from a crash is skipped
and a writer starts the next record on a fresh line), compaction replaces the file whole.
Nothing is fsynced on the record path (the recorded write itself is not); reverts are.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from telemetry_client._internal import fs as _fs

__all__ = ["JOURNAL_MAX_BYTES", "ChangeJournal", "OpRecord", "changes_dir"]

#: Past this size the journal is rewritten keeping its newest half.
JOURNAL_MAX_BYTES = 8 * 1024 * 1024
#: A diff up to this size is kept inside the op record (no file to create: file creation
#: is the record's main cost); a larger one is a ``.diff`` file, under the byte cap.
INLINE_DIFF_MAX = 4096
#: Eviction goes down to this share of the cap (hysteresis: not a listing per record).
EVICT_TO = 0.9
LOCK_TIMEOUT_S = 5.0
_LOCK_POLL_S = (0.0005, 0.01)
_SUFFIXES = (".before", ".diff")


def changes_dir(spool_dir: Path) -> Path:
    """The directory holding the change journal of the spool at ``spool_dir``."""
    return Path(spool_dir) / "changes"


def content_key(op_id: str) -> str:
    """The file-name stem of an op's kept contents (a digest: no caller text in names)."""
    return hashlib.sha256(op_id.encode("utf-8", "surrogatepass")).hexdigest()[:40]


@dataclass(slots=True)
class OpRecord:
    """One recorded file operation as the journal holds it (``path``: absolute, resolved)."""

    op_id: str
    path: str
    op: str
    ts: float
    before_sha256: str | None
    after_sha256: str | None
    before_size: int | None = None
    after_size: int | None = None
    loc_added: int | None = None
    loc_removed: int | None = None
    binary: bool = False
    kept: str = "yes"  # yes | too_large | unknown (before unreadable) | none (no before)
    decision: str | None = None
    decided_ts: float | None = None
    decided_by: str | None = None
    diff: str | None = None  # the diff, when small enough to be inline

    def line(self) -> dict[str, Any]:
        return {
            "k": "op",
            "op_id": self.op_id,
            "path": self.path,
            "op": self.op,
            "ts": self.ts,
            "before_sha256": self.before_sha256,
            "after_sha256": self.after_sha256,
            "before_size": self.before_size,
            "after_size": self.after_size,
            "loc_added": self.loc_added,
            "loc_removed": self.loc_removed,
            "binary": self.binary,
            "kept": self.kept,
            "diff": self.diff,
        }

    @classmethod
    def from_line(cls, d: dict[str, Any]) -> OpRecord:
        def opt_int(v: object) -> int | None:
            return v if type(v) is int else None

        def opt_str(v: object) -> str | None:
            return v if isinstance(v, str) else None

        if not isinstance(d.get("op_id"), str) or not isinstance(d.get("path"), str):
            raise ValueError("op record without op_id/path")
        ts = d.get("ts")
        return cls(
            op_id=d["op_id"],
            path=d["path"],
            op=str(d.get("op") or "edit"),
            ts=float(ts) if isinstance(ts, int | float) else 0.0,
            before_sha256=opt_str(d.get("before_sha256")),
            after_sha256=opt_str(d.get("after_sha256")),
            before_size=opt_int(d.get("before_size")),
            after_size=opt_int(d.get("after_size")),
            loc_added=opt_int(d.get("loc_added")),
            loc_removed=opt_int(d.get("loc_removed")),
            binary=d.get("binary") is True,
            kept=str(d.get("kept") or "yes"),
            diff=opt_str(d.get("diff")),
        )


class ChangeJournal:
    """The change journal of one spool (see the module docstring)."""

    def __init__(self, directory: Path, *, max_bytes: int) -> None:
        self.dir = Path(directory)
        self.path = self.dir / "journal.jsonl"
        self.lock_path = self.dir / "journal.lock"
        self.usage_path = self.dir / "usage"
        self.max_bytes = max_bytes

    # -- reading (no lock) ---------------------------------------------------------------

    def load(self) -> dict[str, OpRecord]:
        """Every op, oldest first, with its latest decision applied."""
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return {}
        return _parse(raw)

    def content_path(self, op_id: str, suffix: str) -> Path:
        return self.dir / f"{content_key(op_id)}{suffix}"

    def read_content(self, op_id: str, suffix: str) -> bytes | None:
        """An op's kept ``.before``/``.diff`` bytes; None when not (or no longer) kept."""
        flags = os.O_RDONLY | os.O_CLOEXEC | getattr(os, "O_NOFOLLOW", 0)
        try:
            fd = os.open(self.content_path(op_id, suffix), flags)
        except OSError:
            return None
        try:
            with os.fdopen(fd, "rb") as f:
                return f.read()
        except OSError:
            return None

    def has_content(self, op_id: str, suffix: str) -> bool:
        return self.content_path(op_id, suffix).exists()

    def csrf_key(self) -> bytes:
        """The panel's CSRF secret, created (0600) by the first process that needs it."""
        path = self.dir / "csrf.key"
        with contextlib.suppress(FileNotFoundError):
            key = path.read_bytes()
            if len(key) >= 32:
                return key
        _fs.ensure_dir(self.dir)
        with self.locked():
            with contextlib.suppress(FileNotFoundError):
                key = path.read_bytes()
                if len(key) >= 32:
                    return key
            key = secrets.token_bytes(32)
            _fs.atomic_write(path, key, fsync=False)
            return key

    # -- writing (under the lock) ----------------------------------------------------------

    @contextlib.contextmanager
    def locked(self, timeout: float = LOCK_TIMEOUT_S) -> Iterator[None]:
        """Hold ``journal.lock`` (raises ``TimeoutError`` past ``timeout``)."""
        _fs.ensure_dir(self.dir)
        flags = os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | getattr(os, "O_NOFOLLOW", 0)
        fd = os.open(self.lock_path, flags, _fs.FILE_MODE)
        try:
            os.fchmod(fd, _fs.FILE_MODE)
            deadline = time.monotonic() + timeout
            pause = _LOCK_POLL_S[0]
            while not _fs.try_lock(fd):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"{self.lock_path} stayed locked for {timeout:g} s")
                time.sleep(min(pause, left))
                pause = min(pause * 2, _LOCK_POLL_S[1])
            yield
        finally:
            _fs.close_unlocked(fd)

    def record(self, rec: OpRecord, before: bytes | None, diff: bytes | None) -> None:
        """Append ``rec``, keep its contents (within the cap), evict the oldest past it."""
        with self.locked():
            used = self._usage()
            if before is not None:
                if len(before) <= self.max_bytes:
                    _fs.atomic_write(self.content_path(rec.op_id, ".before"), before, fsync=False)
                    used += len(before)
                else:
                    rec.kept = "too_large"
            if diff and len(diff) <= INLINE_DIFF_MAX:
                rec.diff = diff.decode("utf-8", "replace")
            elif diff and len(diff) <= self.max_bytes:
                _fs.atomic_write(self.content_path(rec.op_id, ".diff"), diff, fsync=False)
                used += len(diff)
            self._append(rec.line())
            if used > self.max_bytes:
                self._evict()
            else:
                self._save_usage(used)
            with contextlib.suppress(FileNotFoundError):
                if self.path.stat().st_size > JOURNAL_MAX_BYTES:
                    self._compact(keep_bytes=JOURNAL_MAX_BYTES // 2)

    def append_decision(self, op_id: str, decision: str, user: str | None) -> float:
        """Append a decision record (the caller holds the lock); returns its time."""
        ts = time.time()
        self._append(
            {"k": "decision", "op_id": op_id, "decision": decision, "ts": ts, "user": user}
        )
        return ts

    def prune(self, cutoff_ts: float | None) -> int:
        """Drop ops older than ``cutoff_ts`` (all when None) and their contents; returns how many.

        Also removes contents no op refers to and temp files of dead writers.
        """
        if not self.dir.is_dir():
            return 0
        with self.locked():
            ops = self.load()
            old = [o for o in ops.values() if cutoff_ts is None or o.ts < cutoff_ts]
            if old:
                self._rewrite({k: v for k, v in ops.items() if v not in old})
            self._remove_strays(set(ops) - {o.op_id for o in old})
            return len(old)

    # -- internals ---------------------------------------------------------------------------

    def _append(self, obj: dict[str, Any]) -> None:
        data = json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"
        flags = os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC | getattr(os, "O_NOFOLLOW", 0)
        fd = os.open(self.path, flags, _fs.FILE_MODE)
        try:
            os.fchmod(fd, _fs.FILE_MODE)
            size = os.fstat(fd).st_size
            if size and os.pread(fd, 1, size - 1) != b"\n":
                data = b"\n" + data  # a writer died mid-line: start ours on a fresh one
            _fs.write_all(fd, data)
        finally:
            os.close(fd)

    def _content_files(self) -> list[tuple[str, int]]:
        out = []
        with os.scandir(self.dir) as it:
            for e in it:
                if e.name.endswith(_SUFFIXES):
                    with contextlib.suppress(OSError):
                        out.append((e.name, e.stat(follow_symlinks=False).st_size))
        return out

    def _usage(self) -> int:
        """The kept contents' bytes: the hint, else a recount (one directory listing)."""
        with contextlib.suppress(OSError, ValueError):
            value = int(self.usage_path.read_bytes())
            if value >= 0:
                return value
        return sum(size for _, size in self._content_files())

    def _save_usage(self, used: int) -> None:
        # Fixed width, written in place: truncating costs more than the rest of a record.
        flags = os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC | getattr(os, "O_NOFOLLOW", 0)
        fd = os.open(self.usage_path, flags, _fs.FILE_MODE)
        try:
            os.pwrite(fd, b"%020d" % used, 0)
        finally:
            os.close(fd)

    def _evict(self) -> None:
        """Recount, then drop the oldest ops' contents until under ``EVICT_TO`` of the cap."""
        files = dict(self._content_files())
        used = sum(files.values())
        target = int(self.max_bytes * EVICT_TO)
        if used > target:
            used = self._drop_oldest(files, used, target)
        self._save_usage(used)

    def _drop_oldest(self, files: dict[str, int], used: int, target: int) -> int:
        for op in self.load().values():  # oldest first
            key = content_key(op.op_id)
            for suffix in _SUFFIXES:
                name = key + suffix
                if name in files:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(self.dir / name)
                    used -= files.pop(name)
            if used <= target:
                break
        return used

    def _compact(self, keep_bytes: int) -> None:
        ops = list(self.load().values())
        kept: dict[str, OpRecord] = {}
        size = 0
        for op in reversed(ops):
            size += len(json.dumps(op.line())) + 100
            if size > keep_bytes:
                break
            kept[op.op_id] = op
        self._rewrite(dict(reversed(kept.items())))
        self._remove_strays(set(kept))

    def _rewrite(self, ops: dict[str, OpRecord]) -> None:
        lines = []
        for op in ops.values():
            lines.append(json.dumps(op.line(), separators=(",", ":"), ensure_ascii=False))
            if op.decision is not None:
                d: dict[str, Any] = {"k": "decision", "op_id": op.op_id}
                d.update(decision=op.decision, ts=op.decided_ts, user=op.decided_by)
                lines.append(json.dumps(d, separators=(",", ":"), ensure_ascii=False))
        body = ("\n".join(lines) + "\n").encode() if lines else b""
        _fs.atomic_write(self.path, body, fsync=False)

    def _remove_strays(self, live: set[str]) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.usage_path)  # recounted by the next record
        keys = {content_key(op_id) for op_id in live}
        with contextlib.suppress(OSError), os.scandir(self.dir) as it:
            for e in it:
                stem = e.name.partition(".")[0]
                stray = e.name.endswith(_SUFFIXES) and stem not in keys
                if stray or (e.name.startswith(".") and e.name.endswith(".tmp")):
                    with contextlib.suppress(OSError):
                        os.unlink(e.path)


def _parse(raw: bytes) -> dict[str, OpRecord]:
    ops: dict[str, OpRecord] = {}
    for line in raw.split(b"\n"):
        if not line.strip():
            continue
        try:
            d = json.loads(line)
            if not isinstance(d, dict):
                continue
            if d.get("k") == "op":
                rec = OpRecord.from_line(d)
                ops.pop(rec.op_id, None)  # the same op id recorded again: the newest counts
                ops[rec.op_id] = rec
            elif d.get("k") == "decision":
                found = ops.get(str(d.get("op_id")))
                if found is not None and isinstance(d.get("decision"), str):
                    found.decision = d["decision"]
                    ts = d.get("ts")
                    found.decided_ts = float(ts) if isinstance(ts, int | float) else None
                    user = d.get("user")
                    found.decided_by = user if isinstance(user, str) else None
        except (ValueError, TypeError):
            continue  # a torn or foreign line: skipped, never fatal
    return ops
