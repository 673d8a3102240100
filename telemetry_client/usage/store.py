"""Cross-process LLM usage stats: a small shared store in the spool, its summary and formats.

Every ``events.LLMCall`` a client emits ends up here (via ``_usage_recorder``, at most ~1 s
later), so ``telemetry-client stats`` can say what *every* process on this spool spent on
LLMs over a sliding window: requests, errors, RPM, bytes up/down and tokens (input,
output, total, and of those: cache reads, cache writes, reasoning), in total and per
provider:model.

Chat turns count too. An ``events.ChatTurn`` naming both a ``provider`` and a ``model`` is
one request (its ``input_tokens``/``output_tokens`` when given, no bytes; an error when its
``status`` is ``"error"`` or ``"failed"``), unless that call was already captured as an
``llm_call``: a chat turn is **not** counted when the same process emitted an ``llm_call``
for the same provider and model (case-insensitive), in the same session, since that
session's previous chat turn for that provider and model. So an app that records its
LLM calls (``integrations.httpx``) and also emits chat turns counts each call once, with
the provider's exact figures; an app that only emits chat turns (the README quickstart)
sees them in ``stats``. Calls recorded by another process (a recording proxy on the same
spool) are not matched: such an app should leave ``provider``/``model`` out of its turns.

On-disk layout (directory 0700, files 0600, whatever the umask)::

    <spool_dir>/usage/
      stats.json      the store (replaced atomically: temp file, rename)
      stats.lock      flock'ed by a writer for one read-merge-write (milliseconds)
      stats.corrupt   the last store that could not be read, kept for humans

``stats.json``::

    {"version": 2, "updated": 1763720000.5,
     "series": [
       {"provider": "openai", "model": "gpt-4.1",
        "calls":   [[ts, bytes_up, bytes_down, input_tokens, output_tokens, total_tokens,
                     error, cache_read_tokens, cache_write_tokens, reasoning_tokens], ...],
        "minutes": [[minute_start, requests, errors, bytes_up, bytes_down, input_tokens,
                     output_tokens, total_tokens, cache_read_tokens, cache_write_tokens,
                     reasoning_tokens], ...]}]}

``ts`` is the emit time (Unix seconds, millisecond precision), ``error`` is 1 for a failed
call (HTTP status >= 400 or an error), and a minute bucket adds up the calls coalesced into
it (``minute_start`` is a multiple of 60). Provider and model are separate fields, so a model
name holding ``:`` (``llama3:8b``) is never split wrongly. A version-1 store (without the
last three counts) is read as if they were 0 and rewritten as version 2.

Bounds: calls and buckets older than :data:`RETENTION_S` (24 h, the largest window) are
pruned at every merge; past :data:`MAX_CALLS` per-call entries the oldest are coalesced into
minute buckets (down to :data:`COALESCE_TO`, so it does not happen at every merge), which
keeps every total exact; a series holds at most :data:`MAX_MINUTES` buckets (24 h of them);
past :data:`MAX_SERIES` provider:model pairs the least recently used ones are folded into
``(other):(other)``. The file stays well under 1 MB.

Concurrency: a writer (:meth:`UsageStore.merge`) holds ``stats.lock`` while it reads the
store, adds *its own* new calls, prunes, coalesces and replaces the file, so concurrent
writers never lose each other's updates. Readers (:meth:`UsageStore.read`, the CLI) take
no lock: the file is only ever replaced whole.

A store that cannot be read (garbage, truncated JSON, wrong types) is moved aside to
``stats.corrupt`` by the next writer, which starts over; :class:`MergeResult` says so.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import operator
import os
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import orjson

from telemetry_client._internal import fs as _fs
from telemetry_client._internal.units import parse_duration_s
from telemetry_client.events import ChatTurn, LLMCall

__all__ = [
    "COALESCE_TO",
    "MAX_CALLS",
    "MAX_MINUTES",
    "MAX_SERIES",
    "MAX_WINDOW_S",
    "MIN_WINDOW_S",
    "RETENTION_S",
    "MergeResult",
    "ModelUsage",
    "Series",
    "UsageRecord",
    "UsageSnapshot",
    "UsageStore",
    "UsageSummary",
    "UsageTotals",
    "format_json",
    "format_text",
    "format_tmux",
    "format_window",
    "parse_window",
    "summarize",
    "usage_dir",
]

VERSION = 2
_V1_CALL_FIELDS = 7  # version 1: no cache read/write or reasoning counts
RETENTION_S = 86_400.0  # the largest window: nothing older can ever be shown
MIN_WINDOW_S = 60.0
MAX_WINDOW_S = RETENTION_S
MAX_CALLS = 10_000  # per-call entries, all series together
COALESCE_TO = 7_500  # coalesce down to this many, so it happens once per ~2500 calls
MAX_MINUTES = 1_440  # buckets per series: 24 h of minutes
MAX_SERIES = 256  # provider:model pairs; the least recently used are folded into OTHER
MAX_NAME_CHARS = 128
OTHER = ("(other)", "(other)")
LOCK_POLL_S = (0.0005, 0.01)  # first and longest pause between two tries of the lock

_NUMBER = (int, float)
_SUMS = 10  # requests, errors, up, down, in, out, total, cache read, cache write, reasoning
_MINUTE_FIELDS = 1 + _SUMS  # minute_start + the sums
_CALL_FIELDS = 10
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


# -- the store ------------------------------------------------------------------------------


@dataclass(slots=True)
class Series:
    """One provider:model: recent calls (``[ts, up, down, in, out, total, error, cache_read,
    cache_write, reasoning]``, oldest first) and minute buckets (``minute_start ->
    [requests, errors, up, down, in, out, total, cache_read, cache_write, reasoning]``)."""

    calls: list[list[Any]] = dataclasses.field(default_factory=list)
    minutes: dict[int, list[int]] = dataclasses.field(default_factory=dict)

    def last_ts(self) -> float:
        last = self.calls[-1][0] if self.calls else -math.inf
        return max(last, max(self.minutes, default=-math.inf))

    def absorb(self, other: Series) -> None:
        self.calls.extend(other.calls)
        self.calls.sort(key=_ts)
        for minute, sums in other.minutes.items():
            self._add_bucket(minute, sums)

    def coalesce(self, upto_ts: float) -> int:
        """Move calls with ``ts <= upto_ts`` into their minute buckets; returns how many."""
        n = 0
        for call in self.calls:
            if call[0] > upto_ts:
                break
            ts, up, down, inp, out, total, err, *parts = call
            self._add_bucket(int(ts // 60) * 60, [1, err, up, down, inp, out, total, *parts])
            n += 1
        del self.calls[:n]
        return n

    def _add_bucket(self, minute: int, sums: list[int]) -> None:
        bucket = self.minutes.get(minute)
        if bucket is None:
            self.minutes[minute] = list(sums)
        else:
            for i, v in enumerate(sums):
                bucket[i] += v


_ts = operator.itemgetter(0)  # the sort key of call entries (a C call, no Python frame)


class UsageSnapshot(NamedTuple):
    """The store as read: series by (provider, model); ``problem`` when it was unreadable."""

    series: dict[tuple[str, str], Series]
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


class _Corrupt(ValueError):
    pass


def _valid_rows(
    rows: list[Any], width: int, first: tuple[type, ...], *, unique_first: bool = False
) -> bool:
    """Rows of ``width`` values: a finite number of a ``first`` type, then counts (ints >= 0).

    Column-wise with builtins (a C loop per column): ~10x faster than checking row by row,
    which matters because every merge reads the whole store under the lock.
    """
    if not rows:
        return True
    if set(map(type, rows)) != {list} or set(map(len, rows)) != {width}:
        return False
    cols = list(zip(*rows, strict=True))
    head = cols[0]
    if not set(map(type, head)) <= set(first) or not all(map(math.isfinite, head)):
        return False
    if unique_first and len(set(head)) != len(head):
        return False
    return all(set(map(type, col)) == {int} and min(col) >= 0 for col in cols[1:])


def _parse(raw: bytes) -> dict[tuple[str, str], Series]:
    """Decode and validate a store; raises :class:`_Corrupt` saying what is wrong."""
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise _Corrupt(f"not JSON ({exc})") from None
    if type(doc) is not dict or doc.get("version") not in (1, VERSION):
        raise _Corrupt(f"not a version-{VERSION} usage store")
    pad = [0] * (_CALL_FIELDS - _V1_CALL_FIELDS) if doc["version"] == 1 else []
    items = doc.get("series")
    if type(items) is not list:
        raise _Corrupt("'series' is not a list")
    out: dict[tuple[str, str], Series] = {}
    for item in items:
        if type(item) is not dict:
            raise _Corrupt("a series is not an object")
        key = (item.get("provider"), item.get("model"))
        calls, minutes = item.get("calls"), item.get("minutes")
        if type(key[0]) is not str or type(key[1]) is not str or key in out:
            raise _Corrupt("a series has a bad or repeated provider/model")
        if type(calls) is not list or type(minutes) is not list:
            raise _Corrupt(f"series {key[0]}:{key[1]} has bad calls/minutes")
        if not _valid_rows(calls, _CALL_FIELDS - len(pad), _NUMBER):
            raise _Corrupt(f"series {key[0]}:{key[1]} has a malformed call entry")
        if not _valid_rows(minutes, _MINUTE_FIELDS - len(pad), (int,), unique_first=True):
            raise _Corrupt(f"series {key[0]}:{key[1]} has a malformed minute bucket")
        if pad:  # version 1: no cache or reasoning counts
            calls = [[*c, *pad] for c in calls]
            minutes = [[*m, *pad] for m in minutes]
        buckets = {m[0]: m[1:] for m in minutes}
        calls.sort(key=_ts)  # cheap when sorted already (as written)
        out[key] = Series(calls, buckets)  # type: ignore[index]
    return out


def _dump(series: dict[tuple[str, str], Series], now: float) -> bytes:
    doc = {
        "version": VERSION,
        "updated": round(now, 3),
        "series": [
            {
                "provider": p,
                "model": m,
                "calls": s.calls,
                "minutes": [[k, *v] for k, v in sorted(s.minutes.items())],
            }
            for (p, m), s in series.items()
        ],
    }
    return orjson.dumps(doc)


class UsageStore:
    """The shared usage store of one spool (see the module docstring for the format)."""

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
            return UsageSnapshot(_parse(raw), exists=True)
        except _Corrupt as exc:
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
                series: dict[tuple[str, str], Series] = {}
            else:
                try:
                    series = _parse(raw)
                except _Corrupt as exc:
                    reset = str(exc)
                    series = {}
                    self._quarantine()
            merged = _add(series, records)
            pruned = _prune(series, now)
            coalesced = _coalesce(series)
            _cap_series(series)
            data = _dump(series, now)
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


def _add(series: dict[tuple[str, str], Series], records: Iterable[UsageRecord]) -> int:
    n = 0
    touched: set[tuple[str, str]] = set()
    for r in records:
        key = (r.provider, r.model)
        s = series.get(key)
        if s is None:
            s = series[key] = Series()
        calls = s.calls
        entry = [
            round(r.ts, 3),
            r.bytes_up,
            r.bytes_down,
            r.input_tokens,
            r.output_tokens,
            r.total_tokens,
            1 if r.error else 0,
            r.cache_read_tokens,
            r.cache_write_tokens,
            r.reasoning_tokens,
        ]
        if calls and entry[0] < calls[-1][0]:
            touched.add(key)  # out of order (another process merged newer calls first)
        calls.append(entry)
        n += 1
    for key in touched:
        series[key].calls.sort(key=_ts)
    return n


def _prune(series: dict[tuple[str, str], Series], now: float) -> int:
    """Drop calls and buckets older than the retention; returns how many were dropped."""
    cutoff = now - RETENTION_S
    dropped = 0
    for key in list(series):
        s = series[key]
        i = 0
        while i < len(s.calls) and s.calls[i][0] < cutoff:
            i += 1
        if i:
            del s.calls[:i]
            dropped += i
        old = [m for m in s.minutes if m < cutoff]
        for m in old:
            del s.minutes[m]
        dropped += len(old)
        if len(s.minutes) > MAX_MINUTES:  # only with timestamps from the future
            for m in sorted(s.minutes)[: len(s.minutes) - MAX_MINUTES]:
                del s.minutes[m]
                dropped += 1
        if not s.calls and not s.minutes:
            del series[key]
    return dropped


def _coalesce(series: dict[tuple[str, str], Series]) -> int:
    """Past MAX_CALLS entries, turn the oldest into minute buckets (totals stay exact)."""
    total = sum(len(s.calls) for s in series.values())
    if total <= MAX_CALLS:
        return 0
    stamps = sorted(c[0] for s in series.values() for c in s.calls)
    upto = stamps[total - COALESCE_TO - 1]  # the newest ts to coalesce (ties go too)
    return sum(s.coalesce(upto) for s in series.values())


def _cap_series(series: dict[tuple[str, str], Series]) -> None:
    """Past MAX_SERIES pairs, fold the least recently used ones into ``OTHER``."""
    if len(series) <= MAX_SERIES:
        return
    other = series.pop(OTHER, Series())
    ranked = sorted(series, key=lambda k: series[k].last_ts(), reverse=True)
    for key in ranked[MAX_SERIES - 1 :]:
        other.absorb(series.pop(key))
    series[OTHER] = other


# -- summary -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class UsageTotals:
    """Sums over a window; ``rpm`` is requests per minute averaged over the whole window.

    ``cache_read_tokens`` and ``cache_write_tokens`` are part of ``input_tokens``,
    ``reasoning_tokens`` part of ``output_tokens``.
    """

    requests: int = 0
    errors: int = 0
    bytes_up: int = 0
    bytes_down: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    total_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0
    rpm: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


@dataclass(frozen=True, slots=True)
class ModelUsage:
    """The totals of one provider:model."""

    provider: str
    model: str
    totals: UsageTotals

    @property
    def label(self) -> str:
        return f"{self.provider}:{self.model or '?'}"


@dataclass(frozen=True, slots=True)
class UsageSummary:
    """What ``telemetry-client stats`` shows: the window, the totals and each provider:model."""

    window_s: float
    now: float
    total: UsageTotals
    models: tuple[ModelUsage, ...]  # most requests first
    store: str = ""
    problem: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "window_s": self.window_s,
            "window": format_window(self.window_s),
            "now": round(self.now, 3),
            "since": round(self.now - self.window_s, 3),
            "total": self.total.to_dict(),
            "models": [
                {"provider": m.provider, "model": m.model, "key": m.label, **m.totals.to_dict()}
                for m in self.models
            ],
            "store": self.store,
            "problem": self.problem,
        }


def _totals(sums: list[int], window_s: float) -> UsageTotals:
    requests, errors, up, down, inp, out, total, cache_read, cache_write, reasoning = sums
    return UsageTotals(
        requests,
        errors,
        up,
        down,
        inp,
        out,
        total,
        cache_read,
        cache_write,
        reasoning,
        round(requests * 60.0 / window_s, 4),
    )


def summarize(
    snapshot: UsageSnapshot, window_s: float, *, now: float | None = None, store: str = ""
) -> UsageSummary:
    """Sum the calls with ``ts >= now - window_s`` and the buckets whose minute starts then."""
    now = time.time() if now is None else now
    cutoff = now - window_s
    grand = [0] * _SUMS
    models: list[ModelUsage] = []
    for (provider, model), s in snapshot.series.items():
        sums = [0] * _SUMS
        for ts, up, down, inp, out, total, err, cache_read, cache_write, reasoning in s.calls:
            if ts >= cutoff:
                sums[0] += 1
                sums[1] += err
                sums[2] += up
                sums[3] += down
                sums[4] += inp
                sums[5] += out
                sums[6] += total
                sums[7] += cache_read
                sums[8] += cache_write
                sums[9] += reasoning
        for minute, bucket in s.minutes.items():
            if minute >= cutoff:
                for i, v in enumerate(bucket):
                    sums[i] += v
        if sums[0]:
            models.append(ModelUsage(provider, model, _totals(sums, window_s)))
            for i, v in enumerate(sums):
                grand[i] += v
    models.sort(key=lambda m: (-m.totals.requests, m.label))
    return UsageSummary(
        window_s, now, _totals(grand, window_s), tuple(models), store, snapshot.problem
    )


# -- window --------------------------------------------------------------------------------


def parse_window(text: str) -> float:
    """Seconds from ``15m``, ``90s``, ``6h`` (a bare number is minutes), 1 minute to 24 hours."""
    hint = "expected a duration from 1m to 24h such as 15m, 90s or 6h"
    try:
        seconds = parse_duration_s(text, "m")
    except ValueError:
        raise ValueError(f"{hint}, got {text!r}") from None
    if not MIN_WINDOW_S <= seconds <= MAX_WINDOW_S:
        raise ValueError(f"{hint}, got {text!r}")
    return seconds


def format_window(seconds: float) -> str:
    """``3600`` -> ``1h``, ``900`` -> ``15m``, ``90`` -> ``90s``."""
    s = round(seconds)
    if s % 3600 == 0:
        return f"{s // 3600}h"
    if s % 60 == 0:
        return f"{s // 60}m"
    return f"{s}s"


# -- formats --------------------------------------------------------------------------------


def _si(n: int) -> str:
    """Compact decimal size for one-line displays: ``512B``, ``1.2kB``, ``3.4MB``."""
    if n < 1000:
        return f"{n}B"
    value, units = n / 1000, ["kB", "MB", "GB", "TB"]
    while round(value, 1) >= 1000 and len(units) > 1:
        value /= 1000
        units.pop(0)
    return f"{value:.1f}{units[0]}"


def _compact(n: int) -> str:
    """Compact count: ``950``, ``12.3k``, ``4.5M``."""
    if n < 1000:
        return str(n)
    if n < 999_950:
        return f"{n / 1000:.1f}k"
    return f"{n / 1_000_000:.1f}M"


def format_json(summary: UsageSummary) -> str:
    """One JSON object (``UsageSummary.to_dict``) on one line."""
    return orjson.dumps(summary.to_dict()).decode()


def format_tmux(summary: UsageSummary, *, top: int = 3) -> str:
    """One compact line for a status bar, e.g.
    ``Σ@1h reqs=123 rpm=2.1 ↑1.2MB ↓3.4MB tok=45.6k cached=12.0k | openai:gpt-4.1 reqs=80``
    (``cached``, ``cache_write`` and ``reasoning`` only when not 0)."""
    t = summary.total
    parts = [f"Σ@{format_window(summary.window_s)} reqs={t.requests}"]
    if t.errors:
        parts.append(f"err={t.errors}")
    parts.append(f"rpm={t.rpm:.1f} ↑{_si(t.bytes_up)} ↓{_si(t.bytes_down)}")
    if t.total_tokens:
        parts.append(f"tok={_compact(t.total_tokens)}")
    for label, n in (
        ("cached", t.cache_read_tokens),
        ("cache_write", t.cache_write_tokens),
        ("reasoning", t.reasoning_tokens),
    ):
        if n:
            parts.append(f"{label}={_compact(n)}")
    line = " ".join(parts)
    for m in summary.models[:top]:
        line += f" | {m.label} reqs={m.totals.requests}"
    if len(summary.models) > top:
        line += f" | +{len(summary.models) - top} more"
    return line


_COLUMNS = ("reqs", "errors", "rpm", "sent", "received", "in tokens", "out tokens")
#: Shown only when not 0 over the window: parts of the in/out tokens.
_PART_COLUMNS = (
    ("cache read", "cache_read_tokens"),
    ("cache write", "cache_write_tokens"),
    ("reasoning", "reasoning_tokens"),
)


def _row(label: str, t: UsageTotals, parts: tuple[str, ...]) -> tuple[str, ...]:
    return (
        label,
        str(t.requests),
        str(t.errors),
        f"{t.rpm:.2f}",
        _si(t.bytes_up),
        _si(t.bytes_down),
        str(t.input_tokens),
        str(t.output_tokens),
        *(str(getattr(t, field)) for field in parts),
    )


def format_text(summary: UsageSummary) -> str:
    """A small table: one row for everything, one per provider:model (most requests first).

    The ``cache read``, ``cache write`` and ``reasoning`` columns (parts of the in/out
    tokens) appear when the window has such tokens.
    """
    shown = [(title, field) for title, field in _PART_COLUMNS if getattr(summary.total, field)]
    parts = tuple(field for _, field in shown)
    rows = [("", *_COLUMNS, *(title for title, _ in shown)), _row("all", summary.total, parts)]
    rows += [_row(m.label, m.totals, parts) for m in summary.models]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = [
        f"LLM usage over the last {format_window(summary.window_s)}, every process on this spool"
    ]
    for r in rows:
        cells = [r[0].ljust(widths[0])]
        cells += [c.rjust(w) for c, w in zip(r[1:], widths[1:], strict=True)]
        lines.append("  ".join(cells).rstrip())
    if not summary.models:
        lines.append("(no LLM calls in this window)")
    return "\n".join(lines)
