"""The drop ledger: persistent counts of lost events and bytes, by reason.

``state/dropped.json`` holds the totals (what ``status`` shows) and what the collector has
not heard of yet (``unreported``: the batch stage turns it into ``telemetry_dropped``
events, then calls :meth:`DropLedger.forget_reported`). The file counts toward the spool
cap, so a write that grows it first makes room for its own growth (see ``docs/spool.md``).
"""

from __future__ import annotations

import builtins
import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import orjson

from telemetry_client._internal import fs as _fs
from telemetry_client.spool.layout import BatchName, SpoolDir

__all__ = ["DropCounts", "DropLedger", "RoomMaker", "load_counts", "save_counts"]


@dataclass(slots=True)
class DropCounts:
    """Events and bytes lost, by reason; ``unreported`` is what the collector hasn't heard of."""

    events: int = 0
    bytes: int = 0
    by_reason: dict[str, dict[str, int]] = dataclasses.field(default_factory=dict)
    unreported: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)

    def add(self, reason: str, events: int, nbytes: int, first_ns: int, last_ns: int) -> None:
        self.events += events
        self.bytes += nbytes
        r = self.by_reason.setdefault(reason, {"events": 0, "bytes": 0})
        r["events"] += events
        r["bytes"] += nbytes
        u = self.unreported.setdefault(
            reason, {"events": 0, "bytes": 0, "first_ns": first_ns, "last_ns": last_ns}
        )
        u["events"] += events
        u["bytes"] += nbytes
        u["first_ns"] = min(u["first_ns"], first_ns)
        u["last_ns"] = max(u["last_ns"], last_ns)

    def to_json(self) -> builtins.bytes:
        return orjson.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, raw: builtins.bytes) -> DropCounts:
        obj = orjson.loads(raw)
        return cls(
            events=int(obj["events"]),
            bytes=int(obj["bytes"]),
            by_reason=dict(obj.get("by_reason", {})),
            unreported=dict(obj.get("unreported", {})),
        )


def load_counts(path: Path) -> DropCounts:
    """The counters stored at ``path``; empty when absent or unreadable (``check()`` says so)."""
    try:
        return DropCounts.from_json(path.read_bytes())
    except FileNotFoundError:
        return DropCounts()
    except (ValueError, KeyError, TypeError):
        return DropCounts()  # unreadable counters start over; check() reports it


def save_counts(d: SpoolDir, counts: DropCounts) -> None:
    """Replace the counters file all-or-nothing (the caller made room and holds the lock)."""
    _fs.atomic_write(d.dropped_path, counts.to_json(), fsync=d.fsync)


class RoomMaker(Protocol):
    """What the ledger needs from the cap: save counters after making room for them."""

    def make_room(self, incoming: int, counts: DropCounts | None = None) -> tuple[int, int]: ...


class DropLedger:
    """Records losses durably and hands the unreported ones to the loss reports."""

    def __init__(self, d: SpoolDir, room: RoomMaker) -> None:
        self._dir = d
        self._room = room

    def read(self) -> DropCounts:
        """The counters as stored now."""
        return load_counts(self._dir.dropped_path)

    def record(self, drops: Iterable[tuple[str, BatchName]]) -> None:
        """Count whole batches lost for ``reason`` (making room). Caller holds the lock."""
        counts = self.read()
        for reason, name in drops:
            ts = name.created_ns
            counts.add(reason, name.n_events, name.n_bytes, ts, ts)
        self._room.make_room(0, counts)

    def record_loss(
        self, reason: str, events: int, nbytes: int, first_ns: int, last_ns: int
    ) -> None:
        """Persist a loss that happened outside the spool (e.g. a batch that was never written)."""
        with self._dir.global_lock():
            counts = self.read()
            counts.add(reason, events, nbytes, first_ns, last_ns)
            self._room.make_room(0, counts)

    def dropped(self) -> DropCounts:
        """The persistent loss counters."""
        return self.read()

    def peek_unreported(self) -> dict[str, dict[str, Any]]:
        """What the collector has not been told about yet (left in place until reported)."""
        return self.read().unreported

    def forget_reported(self, reported: dict[str, dict[str, Any]]) -> None:
        """Subtract a report that is now sealed in a batch from the unreported counters.

        Losses recorded between :meth:`peek_unreported` and this call stay unreported.
        It only subtracts (the file does not grow), so it makes no room first.
        """
        with self._dir.global_lock():
            counts = self.read()
            for reason, done in reported.items():
                left = counts.unreported.get(reason)
                if left is None:
                    continue
                left["events"] -= done.get("events", 0)
                left["bytes"] -= done.get("bytes", 0)
                if left["events"] <= 0:
                    del counts.unreported[reason]
                elif done.get("last_ns", 0) >= left["first_ns"]:
                    left["first_ns"] = max(left["first_ns"], done.get("last_ns", 0))
            save_counts(self._dir, counts)
