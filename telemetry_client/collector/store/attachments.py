"""The attachment store: blobs kept once under their sha256, whatever the event backend.

``attachments/<sha[:2]>/<sha256>`` holds the raw bytes and ``<sha256>.json`` their
content type and size. An upload is written to ``tmp/`` (hashed as it arrives), fsync'ed,
and renamed into place once the caller verified the hash: the blob's presence is the
commit, so a crash leaves only ``tmp/`` debris, removed at open.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import threading
from pathlib import Path
from types import TracebackType

import orjson

from telemetry_client._internal import fs as _fs
from telemetry_client.collector.store.base import AttachmentInfo

__all__ = ["AttachmentStore", "Staging"]

_SHA256_RE = re.compile(r"[0-9a-f]{64}")


class Staging:
    """An attachment upload being written to ``tmp/``: hashed and sized as it is written."""

    def __init__(self, store: AttachmentStore, path: Path) -> None:
        self._store = store
        self.path = path
        self._fd = _fs.open_new(path)
        self._hash = hashlib.sha256()
        self.size = 0
        self.committed = False

    def write(self, chunk: bytes) -> None:
        _fs.write_all(self._fd, chunk)
        self._hash.update(chunk)
        self.size += len(chunk)

    def hexdigest(self) -> str:
        return self._hash.hexdigest()

    def commit(self, sha256: str, content_type: str) -> bool:
        """Store the bytes as ``sha256`` (the caller verified it); False if already stored."""
        os.fsync(self._fd)
        os.close(self._fd)
        self._fd = -1
        stored = self._store._publish(self.path, sha256, content_type, self.size)
        self.committed = True
        return stored

    def discard(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        if not self.committed:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()

    def __enter__(self) -> Staging:
        return self

    def __exit__(
        self, typ: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.discard()


class AttachmentStore:
    """Content-addressed blobs: stored once, verified by the caller before they are published."""

    def __init__(self, data_dir: Path) -> None:
        self._root = data_dir / "attachments"
        self._tmp = data_dir / "tmp"
        self._lock = threading.Lock()
        _fs.ensure_dir(self._root)
        _fs.ensure_dir(self._tmp)
        for leftover in self._tmp.iterdir():  # uploads cut short by a crash: never acked
            with contextlib.suppress(OSError):
                leftover.unlink()

    def _blob_path(self, sha256: str) -> Path:
        assert _SHA256_RE.fullmatch(sha256), "callers validate the hash"
        return self._root / sha256[:2] / sha256

    def info(self, sha256: str) -> AttachmentInfo | None:
        """The stored attachment ``sha256`` (lowercase hex), or None."""
        path = self._blob_path(sha256)
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            return None
        content_type = "application/octet-stream"
        with contextlib.suppress(OSError, orjson.JSONDecodeError, AttributeError):
            meta = orjson.loads(path.with_name(f"{sha256}.json").read_bytes())
            content_type = str(meta.get("content_type") or content_type)
        return AttachmentInfo(path, size, content_type)

    def stage(self) -> Staging:
        """A new upload in ``tmp/``; ``with`` it so an abandoned upload leaves nothing."""
        return Staging(self, self._tmp / f"{os.urandom(12).hex()}.part")

    def _publish(self, tmp: Path, sha256: str, content_type: str, size: int) -> bool:
        path = self._blob_path(sha256)
        with self._lock:
            if path.exists():
                tmp.unlink()
                return False
            shard = path.parent
            if not shard.is_dir():
                _fs.ensure_dir(shard)
                _fs.fsync_dir(self._root)
            meta = orjson.dumps({"content_type": content_type, "size": size})
            _fs.atomic_write(path.with_name(f"{sha256}.json"), meta, fsync=True)
            os.replace(tmp, path)  # the blob's presence is the commit
            _fs.fsync_dir(shard)
        return True

    def check(self) -> list[str]:
        """Problems with stored blobs (name != sha256 of content) and leftovers in ``tmp/``."""
        problems = [f"tmp/{p.name}: leftover upload" for p in self._tmp.iterdir()]
        for shard in sorted(self._root.iterdir()):
            for path in sorted(shard.iterdir()):
                if path.name.endswith(".json"):
                    continue
                if hashlib.sha256(path.read_bytes()).hexdigest() != path.name:
                    problems.append(f"attachments/{shard.name}/{path.name}: content mismatch")
        return problems
