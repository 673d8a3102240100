"""The blob store: attachment bytes stored once, content-addressed, under ``attachments/``.

A blob is one checksummed zstd frame named ``<sha256>.<raw size>.<stored size>.zst``: the
wire body of ``POST /attachments``, sent as-is. Storing content again only refreshes the
file's mtime, so a blob's mtime is the last time an event referenced it; garbage
collection relies on that (the argument is in ``docs/spool.md``). The name format and the
reference format live in :mod:`telemetry_client.spool.blobs`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

import zstandard

from telemetry_client._internal import fs as _fs
from telemetry_client._internal.log import logger as _logger
from telemetry_client.spool.blobs import BlobName, BlobRef, decompress_frame, is_sha256
from telemetry_client.spool.cap import Cap
from telemetry_client.spool.layout import SpoolDir

__all__ = ["BLOB_GRACE_S", "BlobStore"]

# How long an encoded event may wait in memory before its batch is sealed, as far as blob
# garbage collection is concerned (linger is <= 1 s; this also covers a slow disk).
BLOB_GRACE_S = 3600.0
_BLOB_ZSTD_LEVEL = 3
_BLOB_CACHE_MAX = 4096


class BlobStore:
    """Put, read and collect the attachment blobs of one spool.

    ``oldest_batch_ns`` gives the id time of the oldest batch on disk (any folder, tmp/
    included): no blob referenced after it was written may be collected.
    """

    def __init__(self, d: SpoolDir, cap: Cap, oldest_batch_ns: Callable[[], int | None]) -> None:
        self._dir = d
        self._cap = cap
        self._oldest_batch_ns = oldest_batch_ns
        self._names: dict[str, str] = {}  # sha256 -> file name, a hint checked on use
        self._local = threading.local()  # zstd contexts are not thread-safe: one per thread

    def put(self, raw: bytes, content_type: str) -> BlobRef:
        """Store ``raw`` once, content-addressed and compressed, for an event to reference.

        Content already stored only has its mtime refreshed (the encoder calls this before
        the referencing event's batch is sealed). Makes room under the cap like a seal.
        Returns ``stored=False`` when the compressed blob alone exceeds the cap (nothing
        written, nothing evicted). Raises ``OSError`` on disk failure, leaving nothing
        behind. ``content_type`` is not stored: references carry it.
        """
        d = self._dir
        sha = hashlib.sha256(raw).hexdigest()
        ref = BlobRef(sha, len(raw), content_type)
        with d.global_lock():
            if self._touch_locked(sha):
                return ref
        body = self._compressor().compress(raw)
        name = BlobName(sha, len(raw), len(body))
        if name.stored_size > self._cap.max_bytes:
            return dataclasses.replace(ref, stored=False)
        for folder in (d.tmp, d.attachments):  # cheap, and the encoder may run before open()
            _fs.ensure_dir(folder)
        tmp = d.tmp / f"{sha}.{os.getpid()}.{os.urandom(4).hex()}.blob.tmp"
        fd = _fs.open_new(tmp)
        d.open_fds.add(fd)
        try:
            _fs.lock(fd)  # marks the file alive for recover() and check()
            _fs.write_all(fd, body)
            if d.fsync:
                os.fsync(fd)
            with d.global_lock():
                if self._touch_locked(sha):  # another writer stored it meanwhile
                    os.unlink(tmp)
                    return ref
                self._cap.make_room(name.stored_size)
                os.rename(tmp, d.attachments / name.filename)
                self._remember(sha, name.filename)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        finally:
            d.open_fds.discard(fd)
            _fs.close_unlocked(fd)
        if d.fsync:
            _fs.fsync_dir(d.attachments)
        return ref

    def read(self, sha256: str) -> bytes | None:
        """The stored blob (one zstd frame: the wire body of ``POST /attachments``) or None.

        None when no such blob is stored (never written, evicted, collected). A blob whose
        size, frame or hash is wrong is moved to ``quarantine/`` (logged) and None returned.
        """
        if not is_sha256(sha256):
            return None
        for use_hint in (True, False):
            path = self._find(sha256, use_hint=use_hint)
            if path is None:
                return None
            try:
                body = path.read_bytes()
            except FileNotFoundError:
                self._names.pop(sha256, None)
                continue
            name = BlobName.parse(path.name)
            problem = "unparsable name" if name is None else self.validate(name, body)
            if problem is None:
                return body
            self._names.pop(sha256, None)
            self._dir.move(path, self._dir.quarantine / path.name)
            _logger.warning("telemetry spool: quarantined attachment %s: %s", sha256, problem)
            return None
        return None

    def gc(self, grace_s: float = BLOB_GRACE_S, *, now_ns: int | None = None) -> int:
        """Remove blobs no batch on disk and no event in memory can reference; returns how many.

        A blob goes when its mtime is older than ``min(oldest batch, now) - grace_s``.
        ``grace_s`` bounds how long an event waits in memory between the encoder storing
        its blobs and its batch being sealed; it must stay well above that (``grace_s=0``
        would collect the blobs of pending batches, which are sealed just after their
        blobs). Tests move ``now_ns`` instead.
        """
        now = time.time_ns() if now_ns is None else now_ns
        with self._dir.global_lock():
            return self.gc_locked(now, grace_s)

    def gc_locked(self, now_ns: int, grace_s: float) -> int:
        """:meth:`gc` for a caller that holds the global lock."""
        oldest = self._oldest_batch_ns()
        horizon = min(now_ns, now_ns if oldest is None else oldest) - int(grace_s * 1e9)
        return self.remove_older([self._dir.attachments], horizon)

    def usage(self) -> tuple[int, int]:
        """Stored attachment blobs: (count, bytes on disk). Quarantined ones not included."""
        blobs = self._dir.blobs_in(self._dir.attachments)
        return len(blobs), sum(b.stored_size for _, b in blobs)

    def remove_older(self, folders: list[Path], horizon_ns: int) -> int:
        """Unlink blobs whose mtime is older than ``horizon_ns``. Caller holds the global lock."""
        removed = 0
        for folder in folders:
            for path, blob in self._dir.blobs_in(folder):
                try:
                    if os.stat(path).st_mtime_ns >= horizon_ns:
                        continue
                    os.unlink(path)
                except FileNotFoundError:
                    continue
                if folder == self._dir.attachments:
                    self._names.pop(blob.sha256, None)
                removed += 1
        return removed

    def validate(self, name: BlobName, body: bytes) -> str | None:
        """The problem with a stored blob's bytes (size, frame, content hash), or None."""
        if len(body) != name.stored_size:
            return f"size {len(body)} != {name.stored_size} in its name"
        problem, raw = decompress_frame(self._decompressor(), body, name.raw_size)
        if problem is not None:
            return problem
        if len(raw) != name.raw_size:
            return f"{len(raw)} bytes of content, name says {name.raw_size}"
        if hashlib.sha256(raw).hexdigest() != name.sha256:
            return "content does not match the sha256 in its name"
        return None

    def _touch_locked(self, sha: str) -> bool:
        """Refresh the mtime of the stored blob ``sha``; False when none is stored.

        Under the global lock, so a concurrent :meth:`gc` either sees the new mtime or has
        removed the blob before (and then it is written again).
        """
        for use_hint in (True, False):
            path = self._find(sha, use_hint=use_hint)
            if path is None:
                return False
            try:
                os.utime(path)
                return True
            except FileNotFoundError:
                self._names.pop(sha, None)
        return False

    def _find(self, sha: str, *, use_hint: bool) -> Path | None:
        """Path of blob ``sha`` (from the name hint, which may be stale, or a listing)."""
        folder = self._dir.attachments
        if use_hint:
            hint = self._names.get(sha)
            if hint is not None:
                return folder / hint
        prefix = sha + "."
        try:
            names = os.listdir(folder)
        except FileNotFoundError:
            return None
        for fn in names:
            if fn.startswith(prefix) and BlobName.parse(fn) is not None:
                self._remember(sha, fn)
                return folder / fn
        self._names.pop(sha, None)
        return None

    def _remember(self, sha: str, filename: str) -> None:
        if len(self._names) >= _BLOB_CACHE_MAX:
            self._names.clear()
        self._names[sha] = filename

    def _compressor(self) -> zstandard.ZstdCompressor:
        cctx: zstandard.ZstdCompressor | None = getattr(self._local, "cctx", None)
        if cctx is None:
            cctx = self._local.cctx = zstandard.ZstdCompressor(
                level=_BLOB_ZSTD_LEVEL, write_checksum=True, write_content_size=True
            )
        return cctx

    def _decompressor(self) -> zstandard.ZstdDecompressor:
        dctx: zstandard.ZstdDecompressor | None = getattr(self._local, "dctx", None)
        if dctx is None:
            dctx = self._local.dctx = zstandard.ZstdDecompressor()
        return dctx
