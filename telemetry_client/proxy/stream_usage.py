"""Usage on OpenAI streams the client did not ask it for, invisible to the client.

OpenAI-style ``/chat/completions`` and ``/completions`` streams carry token usage only when
the request says ``"stream_options": {"include_usage": true}``; without it a proxy would
record a streamed call as 0 tokens (what users report against proxies). So, as LiteLLM
does, the proxy adds the option upstream (:func:`add_usage_option`) and strips exactly
what the option added from the client's stream (:class:`UsageStripper`):

- the extra last chunk: an SSE event whose JSON has ``"choices": []`` and a ``usage``
  object (dropped whole, with its blank line);
- ``"usage": null`` in every other chunk (the key, its value and one comma are cut out of
  the event's bytes; nothing else is touched).

Everything else passes byte for byte, so the client receives what the upstream would have
sent it without the option. Framing: complete events go out as soon as their blank line
arrives; only an event still being received waits (a client cannot use half an event
anyway), so nothing is buffered beyond the event in progress.
"""

from __future__ import annotations

import re

import orjson

__all__ = ["UsageStripper", "add_usage_option", "wants_usage_option"]

_STREAM_PATHS = ("/chat/completions", "/completions")
# ``"usage": null`` as a key of the chunk object, with the comma that joins it to a neighbour
_USAGE_NULL = re.compile(rb',\s*"usage"\s*:\s*null(?=\s*[,}])|"usage"\s*:\s*null\s*,\s*')
_EVENT_END = re.compile(rb"\r\n\r\n|\n\n|\r\r")
_MAX_EVENT_BYTES = 4 * 1024 * 1024  # an event longer than this is passed on unstripped


def wants_usage_option(method: str, path: str, body: bytes) -> bool:
    """Cheap first test: a POST to a streaming OpenAI path whose body mentions ``stream``."""
    return method == "POST" and path.endswith(_STREAM_PATHS) and b'"stream"' in body


def add_usage_option(body: bytes) -> bytes | None:
    """``body`` with ``stream_options.include_usage`` set, or ``None`` to leave it alone.

    ``None`` when the body is not a streaming request (``"stream": true``) or already asks
    for usage. Other ``stream_options`` keys are kept.
    """
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(obj, dict) or obj.get("stream") is not True:
        return None
    options = obj.get("stream_options")
    if options is None:
        options = {}
    elif not isinstance(options, dict):
        return None
    if options.get("include_usage") is True:
        return None  # the client asked: its stream is the upstream's, unchanged
    obj["stream_options"] = {**options, "include_usage": True}
    return orjson.dumps(obj)


class UsageStripper:
    """Removes from an SSE stream what ``include_usage`` added (see the module docstring).

    ``feed(chunk)`` returns the bytes to send now (possibly empty); ``close()`` the rest.
    ``stripped_events`` counts the usage chunks dropped.
    """

    __slots__ = ("_pending", "stripped_events")

    def __init__(self) -> None:
        self._pending = b""
        self.stripped_events = 0

    def feed(self, chunk: bytes) -> bytes:
        data = self._pending + chunk if self._pending else chunk
        last = None
        for last in _EVENT_END.finditer(data):  # noqa: B007 - the last match is what we need
            pass
        if last is None:
            if len(data) > _MAX_EVENT_BYTES:  # not an SSE stream we understand: pass it on
                self._pending = b""
                return data
            self._pending = data
            return b""
        end = last.end()
        self._pending = data[end:]
        return self._strip(data[:end])

    def close(self) -> bytes:
        rest, self._pending = self._pending, b""
        return self._strip(rest) if rest.strip() else rest

    def _strip(self, events: bytes) -> bytes:
        if b'"usage"' not in events:
            return events  # the usual chunk: nothing to cut, no copy
        out: list[bytes] = []
        pos = 0
        for match in _EVENT_END.finditer(events):
            out.append(self._event(events[pos : match.start()], match.group()))
            pos = match.end()
        if pos < len(events):
            out.append(self._event(events[pos:], b""))
        return b"".join(out)

    def _event(self, event: bytes, end: bytes) -> bytes:
        if b'"usage"' not in event:
            return event + end
        if self._is_usage_chunk(event):
            self.stripped_events += 1
            return b""
        return _USAGE_NULL.sub(b"", event, count=1) + end

    @staticmethod
    def _is_usage_chunk(event: bytes) -> bool:
        """The chunk ``include_usage`` adds: ``"choices": []`` and a usage object."""
        if b'"choices"' not in event:
            return False
        lines = [line[5:] for line in event.splitlines() if line.startswith(b"data:")]
        if len(lines) != 1:
            return False
        try:
            obj = orjson.loads(lines[0])
        except orjson.JSONDecodeError:
            return False
        return (
            isinstance(obj, dict)
            and obj.get("choices") == []
            and isinstance(obj.get("usage"), dict)
        )
