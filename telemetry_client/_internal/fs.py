"""Honest-disk helpers: owner-only creation, fsync, atomic replace, advisory locks.

Every ``OSError`` the spool can meet is raised from here and translated once, by the
spool, into a counted and rate-limited log line; nothing in this module swallows errors.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

__all__ = [
    "DIR_MODE",
    "FILE_MODE",
    "atomic_write",
    "close_unlocked",
    "ensure_dir",
    "flock",
    "fsync_dir",
    "lock",
    "open_new",
    "try_lock",
    "write_all",
]

FILE_MODE = 0o600
DIR_MODE = 0o700
_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


def ensure_dir(path: Path) -> None:
    """Create ``path`` (and parents we own) as 0700 whatever the umask."""
    try:
        os.mkdir(path, DIR_MODE)
    except FileExistsError:
        return
    except FileNotFoundError:
        ensure_dir(path.parent)
        try:
            os.mkdir(path, DIR_MODE)
        except FileExistsError:
            return
    os.chmod(path, DIR_MODE)  # mkdir's mode is filtered by the umask; chmod is not


def open_new(path: Path) -> int:
    """Create ``path`` exclusively, owner-only (0600 regardless of umask), for writing."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _O_CLOEXEC | _O_NOFOLLOW, FILE_MODE)
    try:
        os.fchmod(fd, FILE_MODE)
    except BaseException:
        os.close(fd)
        raise
    return fd


def write_all(fd: int, data: bytes | memoryview) -> None:
    """``os.write`` until everything is written (short writes happen on full disks)."""
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def fsync_dir(path: Path) -> None:
    """Make a rename/creation inside ``path`` durable."""
    fd = os.open(path, os.O_RDONLY | _O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes, *, fsync: bool) -> None:
    """Replace ``path`` with ``data`` all-or-nothing (temp file, fsync, rename, fsync dir)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp")
    fd = open_new(tmp)
    try:
        write_all(fd, data)
        if fsync:
            os.fsync(fd)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    os.close(fd)
    try:
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    if fsync:
        fsync_dir(path.parent)


def lock(fd: int) -> None:
    """Blocking exclusive ``flock`` (others only ever hold it for a moment here)."""
    fcntl.flock(fd, fcntl.LOCK_EX)


def try_lock(fd: int) -> bool:
    """Non-blocking exclusive ``flock``; False when another open file description holds it."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return False
        raise
    return True


@contextlib.contextmanager
def flock(path: Path) -> Iterator[int]:
    """Hold a blocking exclusive ``flock`` on ``path`` (created 0600 if missing).

    ``flock`` locks belong to the open file description, so they are released by the
    kernel when the holder dies (SIGKILL included): a dead process never wedges the spool.
    """
    fd = os.open(path, os.O_RDWR | os.O_CREAT | _O_CLOEXEC | _O_NOFOLLOW, FILE_MODE)
    try:
        os.fchmod(fd, FILE_MODE)  # open's mode is filtered by the umask (e.g. 277 -> 0400)
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield fd
    finally:
        close_unlocked(fd)


def close_unlocked(fd: int) -> None:
    """Release our ``flock`` on ``fd`` (if any), then close it.

    Closing alone does not release the lock while a process forked meanwhile holds a copy
    of the fd (the fork may land between ``open`` and the spool recording the fd as one to
    forget in the child); that child would keep the file locked until it exits, wedging
    the spool (``.lock``) or making a batch unclaimable.
    """
    with contextlib.suppress(OSError):
        fcntl.flock(fd, fcntl.LOCK_UN)
    os.close(fd)
