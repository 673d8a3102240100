"""Coalescing of a run's streamed output: many small chunks become few events.

``response_chunk(text)`` appends to a buffer that becomes *one* ``response_chunk`` event
(``content``: the concatenated text, ``index``: the ordinal of its first chunk,
``chunks``: how many were joined) when it holds ``max_bytes`` (UTF-8) or its first chunk
is ``max_age_s`` old (checked when the next chunk arrives: there is no timer thread, so a
buffer waits for the next chunk or run event), and before any other event of the run, so
the stream keeps its order. ``bash_output`` is coalesced the same way per stream; stdout
and stderr buffers do not flush each other (their relative order is only kept at the
granularity of coalesced events), anything else does. An ``exit_code`` ends a stream:
every other buffer goes out, then this stream's with the exit code. ``max_bytes=0``
emits every chunk.

Not thread-safe by itself: the run recorder calls it under the run's lock.
"""

from __future__ import annotations

from collections.abc import Callable

from telemetry_client.events import BashOutput, ResponseChunk, RunEvent

__all__ = ["RESPONSE", "Coalescer", "Key", "as_text", "utf8_len"]

Key = tuple[str, str | None]  # ("response", None) or ("bash", stream)
RESPONSE: Key = ("response", None)


def as_text(value: object) -> str:
    """A chunk as text: ``str`` as is, bytes decoded (UTF-8, errors replaced), else ``str()``."""
    if isinstance(value, str):
        return value
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).decode("utf-8", "replace")
    return "" if value is None else str(value)


def utf8_len(text: str) -> int:
    """The UTF-8 size of ``text`` (no encoding for ASCII)."""
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))


class _Pending:
    """Chunks waiting to become one event."""

    __slots__ = ("count", "first_at", "index", "parts", "size")

    def __init__(self, first_at: float, index: int) -> None:
        self.first_at = first_at
        self.index = index
        self.parts: list[str] = []
        self.size = 0
        self.count = 0


class Coalescer:
    """The buffers of one run, by kind; whole events go to ``send`` in stream order."""

    __slots__ = ("_chunk_counts", "_max_age", "_max_bytes", "_pending", "_send")

    def __init__(
        self, send: Callable[[RunEvent], None], *, max_bytes: int, max_age_s: float
    ) -> None:
        self._send = send
        self._max_bytes = max_bytes
        self._max_age = max_age_s
        self._pending: dict[Key, _Pending] = {}
        self._chunk_counts: dict[Key, int] = {}

    def append(
        self, key: Key, text: str, now: float, exit_code: int | None, at_once: bool = False
    ) -> None:
        """Buffer ``text`` for ``key`` (``exit_code`` ends a bash stream); ``at_once``: send
        the buffer now (the run is over)."""
        pending = self._pending
        if pending and (len(pending) > 1 or key not in pending):
            # order across kinds: another kind's buffer (and, to end a stream, every
            # other buffer) goes out before this one grows
            for other in list(pending):
                if other != key and (exit_code is not None or other[0] != key[0]):
                    self._send_pending(other, None)
        buf = pending.get(key)
        if buf is None:
            index = self._chunk_counts.get(key, 0)
            buf = pending[key] = _Pending(now, index)
        if text:
            buf.parts.append(text)
            buf.size += utf8_len(text)
            buf.count += 1
            self._chunk_counts[key] = buf.index + buf.count
        if (
            exit_code is not None
            or buf.size >= self._max_bytes
            or now - buf.first_at >= self._max_age
            or at_once
        ):
            self._send_pending(key, exit_code)

    def flush(self) -> None:
        """Send every buffer now."""
        for key in list(self._pending):
            self._send_pending(key, None)

    def _send_pending(self, key: Key, exit_code: int | None) -> None:
        buf = self._pending.pop(key)
        content = "".join(buf.parts) if buf.parts else None
        count = buf.count or None
        if key[0] == "response":
            self._send(ResponseChunk(content=content, index=buf.index, chunks=count))
        else:
            event = BashOutput(
                output=content, stream=key[1], exit_code=exit_code, index=buf.index, chunks=count
            )
            self._send(event)
