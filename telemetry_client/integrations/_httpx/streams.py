"""Response body stream wrappers: each chunk goes to the call, then unchanged to the caller.

No extra buffering and no extra reads: the wrapper iterates the inner stream exactly as
the caller does. The call ends when the body is read to its end (``finish``), when the
caller closes the response or abandons the iteration (``finish(closed_early=True)``) or
when reading fails (``fail``, then the exception propagates unchanged).
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx

from telemetry_client.llm import Call

__all__ = ["wrap_stream"]


class _SyncObserver:
    """Yields the inner stream's chunks unchanged, showing each to the call first."""

    def __init__(self, inner: Any, call: Call) -> None:
        self._inner = inner
        self._call = call

    def __iter__(self) -> Iterator[bytes]:
        call = self._call
        try:
            for chunk in self._inner:
                call.feed(chunk)
                yield chunk
        except GeneratorExit:  # the reader abandoned the iteration
            call.finish(closed_early=True)
            raise
        except BaseException as exc:
            call.fail(exc)
            raise
        call.finish()

    def close(self) -> None:
        try:
            self._inner.close()
        finally:
            self._call.finish(closed_early=True)  # no-op when the body was read to its end


class _AsyncObserver:
    """The async twin of :class:`_SyncObserver`."""

    def __init__(self, inner: Any, call: Call) -> None:
        self._inner = inner
        self._call = call

    async def __aiter__(self) -> AsyncIterator[bytes]:
        call = self._call
        try:
            async for chunk in self._inner:
                call.feed(chunk)
                yield chunk
        except GeneratorExit:
            call.finish(closed_early=True)
            raise
        except BaseException as exc:
            call.fail(exc)
            raise
        call.finish()

    async def aclose(self) -> None:
        try:
            await self._inner.aclose()
        finally:
            self._call.finish(closed_early=True)


class _SyncStream(_SyncObserver, httpx.SyncByteStream):
    pass


class _AsyncStream(_AsyncObserver, httpx.AsyncByteStream):
    pass


# Wrappers for another httpx-compatible library's streams (httpx2, which openai>=3 uses):
# its client asserts ``isinstance(response.stream, <its>.SyncByteStream)``.
_FOREIGN_STREAMS: dict[type, type] = {}


def wrap_stream(stream: Any, call: Call, *, is_async: bool) -> Any:
    if is_async:
        if isinstance(stream, httpx.AsyncByteStream):
            return _AsyncStream(stream, call)
    elif isinstance(stream, httpx.SyncByteStream):
        return _SyncStream(stream, call)
    name = "AsyncByteStream" if is_async else "SyncByteStream"
    library = sys.modules.get(type(stream).__module__.partition(".")[0])
    base = getattr(library, name, None)
    if not isinstance(base, type) or not isinstance(stream, base):
        return None
    cls = _FOREIGN_STREAMS.get(base)
    if cls is None:
        observer = _AsyncObserver if is_async else _SyncObserver
        cls = _FOREIGN_STREAMS[base] = type(f"_{name}Observer", (observer, base), {})
    return cls(stream, call)
