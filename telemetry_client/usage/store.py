"""The cross-process LLM usage store of a spool: read it, merge new calls into it.

Every ``events.LLMCall`` (and counted ``events.ChatTurn``) a client emits ends up here
(via :mod:`telemetry_client.usage.recorder`, at most ~1 s later), so
``telemetry-client stats`` can say what *every* process on this spool spent on LLMs over
a sliding window: requests, errors, RPM, bytes up/down and tokens (input, output, total,
and of those: cache reads, cache writes, reasoning), in total and per provider:model.

On-disk layout (directory 0700, files 0600, whatever the umask)::

    <spool_dir>/usage/
      stats.json      the store (replaced atomically: temp file, rename), format in
                      :mod:`telemetry_client.usage.stats_file`, bounds in
                      :mod:`telemetry_client.usage.series`
      stats.lock      flock'ed by a writer for one read-merge-write (milliseconds)
      stats.corrupt   the last store that could not be read, kept for humans

Concurrency: a writer (:meth:`UsageStore.merge`) holds ``stats.lock`` while it reads the
store, adds *its own* new calls, prunes, coalesces and replaces the file, so concurrent
writers never lose each other's updates. Readers (:meth:`UsageStore.read`, the CLI) take
no lock: the file is only ever replaced whole. A store that cannot be read (garbage,
truncated JSON, wrong types) is moved aside to ``stats.corrupt`` by the next writer, which
starts over; :class:`MergeResult` says so.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from telemetry_client._internal import fs as _fs
from telemetry_client.events import ChatTurn, LLMCall
from telemetry_client.usage.series import (
    SeriesMap,
    add_records,
    cap_series,
    coalesce,
    prune,
)
from telemetry_client.usage.stats_file import Corrupt, dump, parse

__all__ = ["MergeResult", "UsageRecord", "UsageSnapshot", "UsageStore", "usage_dir"]

MAX_NAME_CHARS = 128
LOCK_POLL_S = (0.0005, 0.01)  # first and longest pause between two tries of the lock

_TURN_ERRORS = frozenset(("error", "failed"))


def usage_dir(spool_dir: Path) -> Path:
    """The directory holding the usage store of the spool at ``spool_dir``."""
    return Path(spool_dir) / "usage"


# -- records ------------------------------------------------------------------------------


def _count(value: object) -> int:
    """A byte or token count from an event field: a non-negative int, 0 for anything else."""
    if type(value) is int:
        return value if value > 0 else 0
    if isinstance(value, float) and math.isfinite(value) and value > 0:
        return int(value)
    return 0


def _name(value: object) -> str:
    return value[:MAX_NAME_CHARS] if isinstance(value, str) else ""


class UsageRecord(NamedTuple):
    """One LLM call as the store counts it (cache and reasoning counts are parts of in/out)."""

    ts: float
    provider: str
    model: str
    bytes_up: int = 0
    bytes_down: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    total_tokens: int = 0
    error: bool = False
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0

    @classmethod
    def from_event(cls, event: LLMCall | ChatTurn, ts: float) -> UsageRecord:
        """Extract what the store keeps; never raises, whatever the fields hold.

        A :class:`ChatTurn` has no bytes; it failed when its ``status`` is ``"error"`` or
        ``"failed"``.
        """
        inp, out = _count(event.input_tokens), _count(event.output_tokens)
        provider, model = _name(event.provider) or "unknown", _name(event.model)
        if isinstance(event, ChatTurn):
            outcome = event.status
            failed = isinstance(outcome, str) and outcome.lower() in _TURN_ERRORS
            return cls(ts, provider, model, 0, 0, inp, out, inp + out, failed)
        total = _count(event.total_tokens) or inp + out
        status = event.status
        failed = event.error is not None or (
            isinstance(status, int) and not isinstance(status, bool) and status >= 400
        )
        return cls(
            ts,
            provider,
            model,
            _count(event.request_bytes),
            _count(event.response_bytes),
            inp,
            out,
            total,
            failed,
            _count(event.cache_read_input_tokens),
            _count(event.cache_creation_input_tokens),
            _count(event.reasoning_tokens),
        )


class UsageSnapshot(NamedTuple):
    """The store as read: series by (provider, model); ``problem`` when it was unreadable."""

    series: SeriesMap
    exists: bool
    problem: str | None = None


@dataclass(frozen=True, slots=True)
class MergeResult:
    """Outcome of one :meth:`UsageStore.merge`."""

    merged: int  # records added
    calls: int  # per-call entries in the store afterwards
    minutes: int  # minute buckets afterwards
    series: int
    coalesced: int  # entries turned into buckets by this merge
    pruned: int  # entries and buckets dropped as older than the retention
    bytes: int  # size of the file written
    reset: str | None  # why the previous store was unreadable and started over, if it was


class UsageStore:
    """The shared usage store of one spool (see the module docstring)."""

    def __init__(self, directory: Path, *, fsync: bool = False) -> None:
        self.dir = Path(directory)
        self.path = self.dir / "stats.json"
        self.lock_path = self.dir / "stats.lock"
        self.corrupt_path = self.dir / "stats.corrupt"
        self.fsync = fsync
        self.lock_fd: int | None = None  # held during a merge; closed in a forked child

    # -- reading (no lock) ---------------------------------------------------------------

    def read(self) -> UsageSnapshot:
        """The store as it is now; an empty snapshot if missing or unreadable (``problem``)."""
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return UsageSnapshot({}, exists=False)
        except OSError as exc:
            return UsageSnapshot({}, exists=True, problem=f"cannot read: {exc.strerror or exc}")
        try:
            return UsageSnapshot(parse(raw), exists=True)
        except Corrupt as exc:
            return UsageSnapshot({}, exists=True, problem=str(exc))

    # -- writing (under the lock) ----------------------------------------------------------

    def merge(
        self,
        records: Iterable[UsageRecord],
        *,
        now: float | None = None,
        timeout: float = 5.0,
    ) -> MergeResult:
        """Add ``records`` to the store, prune, coalesce, replace the file; all under the lock.

        Raises ``OSError`` (``TimeoutError`` when the lock is not had within ``timeout``);
        the store on disk is then unchanged.
        """
        now = time.time() if now is None else now
        _fs.ensure_dir(self.dir)
        with self._locked(timeout):
            self._remove_leftovers()
            reset = None
            try:
                raw = self.path.read_bytes()
            except FileNotFoundError:
                series: SeriesMap = {}
            else:
                try:
                    series = parse(raw)
                except Corrupt as exc:
                    reset = str(exc)
                    series = {}
                    self._quarantine()
            merged = add_records(series, records)
            pruned = prune(series, now)
            coalesced = coalesce(series)
            cap_series(series)
            data = dump(series, now)
            _fs.atomic_write(self.path, data, fsync=self.fsync)
        return MergeResult(
            merged=merged,
            calls=sum(len(s.calls) for s in series.values()),
            minutes=sum(len(s.minutes) for s in series.values()),
            series=len(series),
            coalesced=coalesced,
            pruned=pruned,
            bytes=len(data),
            reset=reset,
        )

    @contextlib.contextmanager
    def _locked(self, timeout: float) -> Iterator[int]:
        flags = os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | getattr(os, "O_NOFOLLOW", 0)
        fd = os.open(self.lock_path, flags, _fs.FILE_MODE)
        self.lock_fd = fd
        try:
            os.fchmod(fd, _fs.FILE_MODE)  # open's mode is filtered by the umask
            deadline = time.monotonic() + max(0.0, timeout)
            pause = LOCK_POLL_S[0]
            while not _fs.try_lock(fd):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"{self.lock_path} stayed locked for {timeout:g} s")
                time.sleep(min(pause, left))
                pause = min(pause * 2, LOCK_POLL_S[1])
            yield fd
        finally:
            self.lock_fd = None
            _fs.close_unlocked(fd)

    def forget_inherited_fd(self) -> None:
        """In a forked child: close (never unlock) the parent's lock fd, if it held one."""
        fd, self.lock_fd = self.lock_fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)

    def _quarantine(self) -> None:
        """Keep the unreadable store for humans (one file: the last one), owner-only."""
        with contextlib.suppress(OSError):
            os.replace(self.path, self.corrupt_path)
            os.chmod(self.corrupt_path, _fs.FILE_MODE)

    def _remove_leftovers(self) -> None:
        """Temp files of writers that died mid-write (every live writer holds the lock)."""
        prefix = f".{self.path.name}."
        with contextlib.suppress(OSError):
            for name in os.listdir(self.dir):
                if name.startswith(prefix) and name.endswith(".tmp"):
                    with contextlib.suppress(OSError):
                        os.unlink(self.dir / name)
