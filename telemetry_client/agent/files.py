"""Recording file changes: ``client.file_operation``, ``write_file`` and ``track_file``.

Each emits one ``file_operation`` event described by :mod:`telemetry_client.agent.diff`
(text diffs, binary summaries) with an ``op_id`` that a later ``change_decision`` refers
to. ``write_file`` and ``track_file`` read the file's old content whole (``track_file`` the
new one too).

Never raises for telemetry reasons: a value that is neither text nor bytes is turned into
text (``str()``) and counted (``client.tracking_stats()["coerced"]``); a failure building
an event is counted (``tracking_errors``) and logged, and the event is skipped. The
caller's own operations (the write of ``write_file``, the body of ``track_file``) raise
exactly as they would without telemetry.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from telemetry_client.agent.counters import tracking
from telemetry_client.agent.diff import PathArg, describe_change
from telemetry_client.changes.hook import record_operation

if TYPE_CHECKING:
    from telemetry_client.client import TelemetryClient

__all__ = [
    "TrackedFile",
    "file_operation",
    "new_op_id",
    "write_file",
]


def new_op_id() -> str:
    """A fresh operation id (UUID4 string)."""
    return str(uuid.uuid4())


def file_operation(
    client: TelemetryClient,
    path: PathArg,
    *,
    before: object = None,
    after: object = None,
    op: str = "edit",
    op_id: str | None = None,
    extra: Mapping[str, Any] | None = None,
) -> str:
    """Emit a ``file_operation`` for a change the caller made; returns the operation id."""
    op_id = op_id or new_op_id()
    if not client.enabled:
        return op_id
    counters = tracking(client)
    try:
        event = describe_change(
            path, before, after, op=op, op_id=op_id, extra=extra, counters=counters
        )
    except Exception as exc:  # never break the caller for telemetry
        counters.failed("file_operation", exc)
        return op_id
    client.emit(event)
    record_operation(client, path, before, after, event)  # the changes panel; never raises
    return op_id


def _read_quietly(path: PathArg) -> tuple[bytes | None, OSError | None]:
    """The file's bytes; ``(None, None)`` if it does not exist, ``(None, exc)`` if unreadable."""
    try:
        return Path(path).read_bytes(), None
    except (FileNotFoundError, NotADirectoryError):
        return None, None
    except OSError as exc:
        return None, exc


def _emit_change(
    client: TelemetryClient,
    where: str,
    path: PathArg,
    before: bytes | None,
    before_error: OSError | None,
    after: object,
    *,
    op: str,
    op_id: str,
    encoding: str,
    extra: Mapping[str, Any] | None,
) -> bool:
    """Build and emit one tracked change; False (counted, logged) when building failed."""
    counters = tracking(client)
    try:
        event = describe_change(
            path,
            before,
            after,
            op=op,
            op_id=op_id,
            encoding=encoding,
            extra=extra,
            counters=counters,
        )
        if before_error is not None:  # old content unknown: no diff against "nothing"
            event.diff = event.loc_added = event.loc_removed = None
            event.attributes = {
                **(event.attributes or {}),
                "before_error": f"{type(before_error).__name__}: {before_error.strerror}",
            }
    except Exception as exc:  # never break the caller for telemetry
        counters.failed(where, exc)
        return False
    client.emit(event)
    record_operation(  # the changes panel; never raises
        client, path, before, after, event, encoding=encoding, before_known=before_error is None
    )
    return True


def write_file(
    client: TelemetryClient,
    path: PathArg,
    content: str | bytes | bytearray | memoryview,
    *,
    encoding: str = "utf-8",
    op: str | None = None,
    op_id: str | None = None,
    extra: Mapping[str, Any] | None = None,
) -> str:
    """Write ``content`` to ``path`` (its errors propagate), then emit the change; returns op id.

    ``op`` defaults to ``"edit"`` when the file existed, ``"write"`` when it is new. Text is
    encoded with ``encoding`` and written as is (no newline translation).
    """
    op_id = op_id or new_op_id()
    raw = content.encode(encoding) if isinstance(content, str) else bytes(content)
    if not client.enabled:
        Path(path).write_bytes(raw)
        return op_id
    before, before_error = _read_quietly(path)
    Path(path).write_bytes(raw)  # the caller's real operation: an OSError propagates
    existed = before is not None or before_error is not None
    _emit_change(
        client,
        "write_file",
        path,
        before,
        before_error,
        content,
        op=op or ("edit" if existed else "write"),
        op_id=op_id,
        encoding=encoding,
        extra=extra,
    )
    return op_id


class TrackedFile:
    """``with client.track_file(path) as t:`` snapshots the file, emits its change after.

    The snapshot is taken on entry and the file is read again on exit, even when the block
    raises (the file may be half-changed; the event then carries ``error`` with the
    exception's type name, and the exception propagates unchanged). ``op`` defaults to
    ``"write"`` (the file appeared), ``"edit"`` (it existed and still does) or ``"delete"``
    (it is gone); nothing is emitted when it existed neither before nor after.
    ``t.op_id`` is known inside the block; ``t.before``/``t.after`` hold the raw bytes
    (``None``: no such file) and ``t.emitted`` says whether an event was emitted.
    """

    def __init__(
        self,
        client: TelemetryClient,
        path: PathArg,
        *,
        op: str | None = None,
        op_id: str | None = None,
        encoding: str = "utf-8",
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        self.client = client
        self.path = path
        self.op = op
        self.op_id = op_id or new_op_id()
        self.encoding = encoding
        self.extra = dict(extra) if extra else None
        self.before: bytes | None = None
        self.after: bytes | None = None
        self.emitted = False
        self._before_error: OSError | None = None

    def __enter__(self) -> TrackedFile:
        if self.client.enabled:
            self.before, self._before_error = _read_quietly(self.path)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if not self.client.enabled:
            return
        try:
            self.after, after_error = _read_quietly(self.path)
            existed = self.before is not None or self._before_error is not None
            exists = self.after is not None or after_error is not None
            if after_error is not None:
                raise after_error
            if not existed and not exists:
                return
            op = self.op or ("delete" if not exists else "edit" if existed else "write")
            extra = self.extra
            if exc_type is not None:
                extra = {**(extra or {}), "error": exc_type.__qualname__}
        except Exception as err:  # never break the caller for telemetry
            tracking(self.client).failed("track_file", err)
            return
        self.emitted = _emit_change(
            self.client,
            "track_file",
            self.path,
            self.before,
            self._before_error,
            self.after,
            op=op,
            op_id=self.op_id,
            encoding=self.encoding,
            extra=extra,
        )
