"""The spool directory: its folders, file names, listings and the locks every part shares.

Every directory is 0700 and every file 0600, whatever the umask. A batch is named
``<batch id>.<events>.<bytes>.jsonl.zst`` so counting, eviction and the cap need a
listing, never a decompression. ``.lock`` is the one global ``flock``: seal, evict, purge,
blob publication and loss-counter writes decide under it. The layout, the invariants and
the reasons behind them are written up in ``docs/spool.md``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from telemetry_client._internal import fs as _fs
from telemetry_client._internal import ids as _ids
from telemetry_client.spool.blobs import BlobName

__all__ = ["BatchName", "SpoolDir", "batch_bytes_in", "blob_bytes_in", "bytes_in", "day_of"]

_BATCH_RE = re.compile(r"^([0-9a-f]{32})\.(\d+)\.(\d+)\.jsonl\.zst$")
TMP_RE = re.compile(r"^([0-9a-f]{32})\.(\d+)\.tmp$")  # a batch being written
BLOB_TMP_RE = re.compile(r"[0-9a-f]{64}\.\d+\.[0-9a-f]+\.blob\.tmp")  # a blob being written
_DAY_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_N = TypeVar("_N")
# A tmp file exists, empty and unlocked, between its creation and its writer's flock (which
# can take milliseconds when the writer waits for the GIL): recover() and check() leave such
# a file alone this long, so they never tear (or publish twice) a live writer's batch.
_TMP_BIRTH_GRACE_S = 60.0
# The last instant a day directory can name (datetime stops at year 9999).
_LAST_NS = int(dt.datetime(9999, 12, 31, tzinfo=dt.timezone.utc).timestamp()) * 1_000_000_000


@dataclass(frozen=True, slots=True)
class BatchName:
    """What a batch file name says about it."""

    batch_id: str
    n_events: int
    n_bytes: int

    @classmethod
    def parse(cls, name: str) -> BatchName | None:
        m = _BATCH_RE.match(name)
        if m is None:
            return None
        return cls(m.group(1), int(m.group(2)), int(m.group(3)))

    @property
    def filename(self) -> str:
        return f"{self.batch_id}.{self.n_events}.{self.n_bytes}.jsonl.zst"

    @property
    def created_ns(self) -> int:
        return _ids.uuid7_time_ns(self.batch_id)

    @property
    def day(self) -> str:
        return day_of(self.created_ns)


def day_of(ts_ns: int) -> str:
    """The UTC day directory of an instant (instants past year 9999: its last day)."""
    ts = min(ts_ns, _LAST_NS)
    return dt.datetime.fromtimestamp(ts / 1e9, dt.timezone.utc).strftime("%Y-%m-%d")


class SpoolDir:
    """The folders of one spool, the global lock, and the fds a forked child must close.

    Shared by every part of a :class:`~telemetry_client.spool.Spool`; holds no data itself.
    """

    def __init__(self, root: Path, *, fsync: bool) -> None:
        self.root = Path(root)
        self.fsync = fsync
        self.batches = self.root / "batches"
        self.tmp = self.root / "tmp"
        self.quarantine = self.root / "quarantine"
        self.dead = self.root / "dead"
        self.state = self.root / "state"
        self.attachments = self.root / "attachments"
        self.lock_path = self.root / ".lock"
        self.dropped_path = self.state / "dropped.json"
        self.open_fds: set[int] = set()  # closed in a forked child (never written through)

    def create(self) -> None:
        """Create every folder (0700), parents included."""
        for d in (
            self.root,
            self.batches,
            self.tmp,
            self.quarantine,
            self.dead,
            self.state,
            self.attachments,
        ):
            _fs.ensure_dir(d)

    @contextlib.contextmanager
    def global_lock(self) -> Iterator[None]:
        """Hold ``.lock`` (blocking); every cap, purge and publish decision is made under it."""
        with _fs.flock(self.lock_path) as fd:
            self.open_fds.add(fd)
            try:
                yield
            finally:
                self.open_fds.discard(fd)

    def forget_inherited_fds(self) -> None:
        """In a forked child: close (never use) the parent's open spool files."""
        for fd in list(self.open_fds):
            with contextlib.suppress(OSError):
                os.close(fd)
        self.open_fds.clear()

    def days(self) -> list[str]:
        """Day directories under ``batches/``, oldest first."""
        try:
            return sorted(d for d in os.listdir(self.batches) if _DAY_RE.match(d))
        except FileNotFoundError:
            return []

    @staticmethod
    def batches_in(folder: Path) -> list[tuple[Path, BatchName]]:
        """The batch files of ``folder`` (unsorted)."""
        return list_parsed(folder, BatchName.parse)

    @staticmethod
    def blobs_in(folder: Path) -> list[tuple[Path, BlobName]]:
        """The blob files of ``folder`` (unsorted)."""
        return list_parsed(folder, BlobName.parse)

    def move(self, src: Path, dst: Path) -> None:
        """Rename ``src`` to ``dst`` durably; a ``src`` already gone is no error."""
        with contextlib.suppress(FileNotFoundError):
            os.rename(src, dst)
            if self.fsync:
                _fs.fsync_dir(dst.parent)


def bytes_in(folder: Path, name: re.Pattern[str]) -> int:
    """The bytes the files of ``folder`` whose whole names match ``name`` say they hold
    (its group 3), from the names alone: the cap's fast path, no ``Path`` or parsed name
    object per file."""
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        return 0
    match = name.fullmatch
    return sum(int(m.group(3)) for n in names if (m := match(n)) is not None)


def batch_bytes_in(folder: Path) -> int:
    """The bytes of the batch files in ``folder``."""
    return bytes_in(folder, _BATCH_RE)


def blob_bytes_in(folder: Path) -> int:
    """The stored bytes of the blob files in ``folder``."""
    return bytes_in(folder, BlobName.PATTERN)


def list_parsed(folder: Path, parse: Callable[[str], _N | None]) -> list[tuple[Path, _N]]:
    """``(path, parsed name)`` for the files of ``folder`` whose names ``parse`` accepts."""
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        return []
    return [(folder / n, parsed) for n in names if (parsed := parse(n)) is not None]


def same_file(fd: int, path: Path) -> bool:
    """``path`` still names the (not yet unlinked) file open as ``fd``."""
    try:
        st = os.stat(path, follow_symlinks=False)
    except FileNotFoundError:
        return False
    fst = os.fstat(fd)
    return fst.st_nlink > 0 and (st.st_ino, st.st_dev) == (fst.st_ino, fst.st_dev)


def remove_unclaimed(path: Path) -> bool:
    """Unlink ``path`` unless a reader holds it; True when removed by us."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        if not _fs.try_lock(fd) or not same_file(fd, path):
            return False
        os.unlink(path)
        return True
    except FileNotFoundError:
        return False
    finally:
        _fs.close_unlocked(fd)


def being_created(fd: int) -> bool:
    """An empty tmp file young enough that its live writer may still be about to lock it."""
    st = os.fstat(fd)
    return st.st_size == 0 and time.time() - st.st_mtime < _TMP_BIRTH_GRACE_S


def read_fd(fd: int) -> bytes:
    """Everything from ``fd``'s position to its end."""
    chunks = []
    while True:
        chunk = os.read(fd, 1 << 20)
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)
