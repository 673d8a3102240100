"""Putting a file back as it was before an operation, safely.

Every step works through a descriptor of the file's directory, opened only after checking
that its real path is the recorded one and lies under ``root``; the file itself is opened
with ``O_NOFOLLOW``. So a symlink (as the file or anywhere on its path) or a path that
resolves outside ``root`` is refused (:class:`Refused`, 403) and nothing is touched.

A revert happens only when the file is exactly as the op left it (its bytes hash to the
op's after-content; for a deletion: it is still absent), else :class:`Refused` 409. Writes
are atomic: a temp file in the same directory (the current file's mode), fsync, rename,
fsync of the directory. A created file is deleted; a deleted one is recreated (mode from
the umask, as a new file would get).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import stat
from collections.abc import Iterator

__all__ = ["Refused", "restore", "within"]

_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)


class Refused(Exception):
    """A revert that cannot be done; ``status`` is the HTTP status, ``code`` a short word."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def within(path: str, root: str) -> bool:
    """``path`` equals ``root`` or lies under it (both absolute, normalised)."""
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


@contextlib.contextmanager
def _parent_fd(path: str, root: str) -> Iterator[int]:
    parent = os.path.dirname(path)
    if not within(path, root) or path == root:
        raise Refused(403, "outside_root", "the file is outside the panel's root")
    if os.path.realpath(parent) != parent:
        raise Refused(403, "symlink", "a directory on the file's path is now a symlink")
    try:
        fd = os.open(parent, os.O_RDONLY | os.O_DIRECTORY | _CLOEXEC | _NOFOLLOW)
    except FileNotFoundError:
        raise Refused(409, "conflict", "the file's directory no longer exists") from None
    except OSError as exc:
        raise Refused(403, "symlink", f"cannot open the file's directory: {exc.strerror}") from None
    try:
        if not os.path.samestat(os.fstat(fd), os.stat(parent, follow_symlinks=False)):
            raise Refused(403, "symlink", "the file's directory changed while reverting")
        yield fd
    finally:
        os.close(fd)


def _current(dir_fd: int, name: str) -> tuple[str | None, int | None]:
    """``(sha256, mode)`` of the file now; ``(None, None)`` when absent; refuses non-files."""
    try:
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None, None
    if stat.S_ISLNK(st.st_mode):
        raise Refused(403, "symlink", "the file is a symlink; refusing to write through it")
    if not stat.S_ISREG(st.st_mode):
        raise Refused(409, "conflict", "the path is no longer a regular file")
    try:
        fd = os.open(name, os.O_RDONLY | _CLOEXEC | _NOFOLLOW, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise Refused(403, "symlink", "the file is a symlink") from None
        raise
    h = hashlib.sha256()
    with os.fdopen(fd, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest(), stat.S_IMODE(st.st_mode)


def _write_atomic(dir_fd: int, name: str, data: bytes, mode: int | None) -> None:
    tmp = f".{name[:64]}.revert-{os.urandom(4).hex()}.tmp"
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | _CLOEXEC | _NOFOLLOW
    fd = os.open(tmp, flags, 0o666, dir_fd=dir_fd)  # the umask applies, as to any new file
    try:
        try:
            if mode is not None:
                os.fchmod(fd, mode)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp, dir_fd=dir_fd)
        raise
    os.fsync(dir_fd)


def restore(
    path: str, root: str, *, after_sha256: str | None, before: bytes | None, existed: bool
) -> None:
    """Put ``path`` back to ``before`` (``existed`` False: delete it); see the module doc.

    ``after_sha256`` is what the op left (None: it deleted the file). Raises
    :class:`Refused` with nothing touched; ``OSError`` for a failing disk.
    """
    name = os.path.basename(path)
    with _parent_fd(path, root) as dir_fd:
        sha, mode = _current(dir_fd, name)
        if sha != after_sha256:
            raise Refused(409, "conflict", "the file changed since this operation")
        if not existed:
            os.unlink(name, dir_fd=dir_fd)
            os.fsync(dir_fd)
            return
        assert before is not None
        _write_atomic(dir_fd, name, before, mode)
