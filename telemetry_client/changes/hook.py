"""The recording hook: each ``file_operation`` the client emits goes into the change journal.

Called by :mod:`telemetry_client.agent.files` right after the event is emitted, on the
caller's thread (a lock, two small file writes and one appended line; no fsync), so the
panel lists an operation as soon as the call returns. Never raises: a failure is counted
(``client.tracking_stats()["tracking_errors_by_call"]["changes_journal"]``) and logged.
A disabled client records nothing and has no journal.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
import weakref
from typing import TYPE_CHECKING

from telemetry_client.agent.counters import tracking
from telemetry_client.changes.journal import ChangeJournal, OpRecord, changes_dir
from telemetry_client.events import FileOperation

if TYPE_CHECKING:
    from telemetry_client.client import TelemetryClient

__all__ = ["journal_for", "record_operation"]

_journals: weakref.WeakKeyDictionary[TelemetryClient, ChangeJournal] = weakref.WeakKeyDictionary()
_lock = threading.Lock()


def journal_for(client: TelemetryClient) -> ChangeJournal | None:
    """The change journal on ``client``'s spool; None when the client is disabled."""
    if not client.enabled:
        return None
    found = _journals.get(client)
    if found is None:
        with _lock:
            found = _journals.get(client)
            if found is None:
                s = client.settings
                found = ChangeJournal(
                    changes_dir(s.resolved_spool_dir), max_bytes=s.changes_max_bytes
                )
                _journals[client] = found
    return found


def _raw(value: object, encoding: str) -> bytes | None:
    """The bytes a content argument stands for (as ``describe_change`` reads it)."""
    if value is None:
        return None
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    text = value if isinstance(value, str) else str(value)
    try:
        return text.encode(encoding, "surrogatepass")
    except (LookupError, UnicodeError):
        return text.encode("utf-8", "surrogatepass")


def _sha(data: bytes | None) -> str | None:
    return None if data is None else hashlib.sha256(data).hexdigest()


def record_operation(
    client: TelemetryClient,
    path: str | os.PathLike[str],
    before: object,
    after: object,
    event: FileOperation,
    *,
    encoding: str = "utf-8",
    before_known: bool = True,
) -> None:
    """Put one emitted ``file_operation`` into the journal (see the module docstring)."""
    try:
        journal = journal_for(client)
        if journal is None or event.op_id is None:
            return
        old, new = _raw(before, encoding), _raw(after, encoding)
        rec = OpRecord(
            op_id=event.op_id,
            path=os.path.realpath(os.fspath(path)),
            op=event.op,
            ts=time.time(),
            before_sha256=_sha(old),
            after_sha256=_sha(new),
            before_size=None if old is None else len(old),
            after_size=None if new is None else len(new),
            loc_added=event.loc_added,
            loc_removed=event.loc_removed,
            binary=bool(event.binary),
            kept="yes" if old is not None else "none" if before_known else "unknown",
        )
        diff = event.diff.encode("utf-8", "surrogatepass") if event.diff else None
        journal.record(rec, old if before_known else None, diff)
    except Exception as exc:  # never break the caller for telemetry
        tracking(client).failed("changes_journal", exc)
