"""Incremental parse of one LLM response body: framing, decoding and bounded buffering.

The caller's raw chunks arrive in order as the caller reads them; they are decoded
(``Content-Encoding``) and framed here, and each whole JSON object goes to
:class:`~telemetry_client.llm.formats.ResponseFields`, which knows what the providers'
objects say. Parsing is cheap and best effort:

- **SSE** (``text/event-stream``): split into events as they complete; an event is
  parsed only when it can matter (a usage figure, the model, an error, an end marker, or
  an answer delta when content is captured); an event over 1 MiB is skipped.
- **JSON**: the chunks (the caller's own ``bytes`` objects, referenced, not copied) are
  kept up to ``max_bytes`` and parsed once at the end; past that only a rolling 64 KiB tail
  is kept, where the ``usage`` object sits. A JSON array (Gemini without ``alt=sse``) is a
  list of stream events.

Anything unparseable is left out; an unknown type or encoding is not parsed at all.
"""

from __future__ import annotations

import json
import re
from collections import deque
from collections.abc import Callable

import orjson

from telemetry_client.llm.decode import Decoder
from telemetry_client.llm.formats import ResponseFields

__all__ = ["DEFAULT_MAX_PARSE_BYTES", "ResponseParser"]

#: Response/request bodies larger than this are not parsed whole (8 MiB).
DEFAULT_MAX_PARSE_BYTES = 8 * 1024 * 1024
_TAIL_BYTES = 64 * 1024  # kept of an over-large JSON body: its usage object is at the end
_MAX_SSE_EVENT_BYTES = 1024 * 1024  # a longer SSE event is skipped, not buffered
#: Without content capture, only SSE events holding one of these are parsed (once the
#: model is known): usage figures, errors and end-of-stream markers.
_USEFUL_NEEDLES = (b'"usage', b'"error"', b"message_stop", b"finishReason", b"[DONE]")


def _needle_scan() -> Callable[[bytes], object]:
    """Whether any of :data:`_USEFUL_NEEDLES` occurs: one Aho-Corasick pass (several times
    cheaper than five ``in`` scans), or the ``in`` scans without the crate."""
    try:
        from ahocorasick_rs import BytesAhoCorasick, MatchKind
    except ImportError:  # pragma: no cover - a dependency of the package
        return lambda data: any(needle in data for needle in _USEFUL_NEEDLES)
    scan = BytesAhoCorasick(_USEFUL_NEEDLES, matchkind=MatchKind.LeftmostFirst)
    return scan.find_matches_as_indexes


_USEFUL_EVENT = _needle_scan()
_USAGE_KEY = re.compile(rb'"(?:usage|usageMetadata)"\s*:\s*\{')


class ResponseParser(ResponseFields):
    """Incremental parse of one response body: model, token usage, answer, error message.

    ``feed`` takes the raw (still encoded) chunks in order; ``close`` ends the body
    (call it once, also after a partial body). The results are the attributes of
    :class:`~telemetry_client.llm.formats.ResponseFields`; ``dead`` is True when the body
    is not parsed (unknown type or encoding, or the parser gave up).
    """

    __slots__ = (
        "_cr",
        "_decoder",
        "_head",
        "_head_len",
        "_identity",
        "_max_bytes",
        "_pending",
        "_pending_len",
        "_skip_event",
        "_sse",
        "_tail",
        "_tail_len",
        "dead",
    )

    def __init__(
        self,
        *,
        content_type: str,
        content_encoding: str = "",
        capture_content: bool = False,
        max_bytes: int = DEFAULT_MAX_PARSE_BYTES,
    ) -> None:
        super().__init__(capture_content=capture_content)
        ctype = content_type.split(";", 1)[0].strip().lower()
        self._sse = ctype == "text/event-stream"
        self._decoder = Decoder(content_encoding, 4 * max(max_bytes, _MAX_SSE_EVENT_BYTES))
        self._identity = self._decoder.identity
        #: True when the body is not parsed (unknown type or encoding, or gave up).
        self.dead = not self._decoder.supported or not (self._sse or ctype.endswith("json"))
        self._max_bytes = max_bytes
        # JSON body: head chunks until max_bytes, then a rolling tail
        self._head: list[bytes] = []
        self._head_len = 0
        self._tail: deque[bytes] = deque()
        self._tail_len = 0
        # SSE: the parts of the current (partial) event
        self._pending: list[bytes] = []
        self._pending_len = 0
        self._skip_event = False
        self._cr = False

    @property
    def streamed(self) -> bool:
        return self._sse

    def feed(self, raw: bytes) -> None:
        """Observe the next raw body chunk."""
        if self.dead or not raw:
            return
        if self._identity:
            data = raw
        else:
            try:
                data = self._decoder.decode(raw)
            except Exception:  # TooLarge, or not what the header said: give up
                self.dead = True
                return
        if not data:
            return
        if self._sse:
            self._feed_sse(data)
        else:
            self._feed_json(data)

    def feed_decoded(self, data: bytes) -> None:
        """Observe an already decoded body (a response the transport read whole)."""
        if self.dead or not data:
            return
        if self._sse:
            self._feed_sse(data)
        else:
            self._feed_json(data)

    def close(self) -> None:
        """The body ended (or the caller stopped reading): parse what is pending."""
        if self.dead:
            return
        self.dead = True
        if self._sse:
            if self._pending and not self._skip_event:  # a last event without its blank line
                self._sse_event(b"".join(self._pending).strip(b"\n"))
        else:
            self._finish_json()

    # -- JSON -----------------------------------------------------------------------------

    def _feed_json(self, data: bytes) -> None:
        if self._head_len + len(data) <= self._max_bytes and not self._tail:
            self._head.append(data)
            self._head_len += len(data)
            return
        if self._head:  # over the limit: keep only the end, where usage sits
            self._tail.extend(self._head)
            self._tail_len += self._head_len
            self._head = []
            self._head_len = 0
        self._tail.append(data)
        self._tail_len += len(data)
        while self._tail_len - len(self._tail[0]) >= _TAIL_BYTES:
            self._tail_len -= len(self._tail.popleft())

    def _finish_json(self) -> None:
        if self._head:
            try:
                obj = orjson.loads(b"".join(self._head))
            except orjson.JSONDecodeError:
                return
            self.complete = True
            if isinstance(obj, dict):
                self._absorb_body(obj)
            elif isinstance(obj, list):  # Gemini's streamGenerateContent without alt=sse
                for item in obj:
                    if isinstance(item, dict):
                        self._absorb_event(item)
        elif self._tail:
            self._usage_from_tail(b"".join(self._tail))

    def _usage_from_tail(self, tail: bytes) -> None:
        matches = list(_USAGE_KEY.finditer(tail))
        if not matches:
            return
        start = matches[-1].end() - 1
        try:
            usage, _ = json.JSONDecoder().raw_decode(tail[start:].decode("utf-8", "replace"))
        except ValueError:
            return
        if isinstance(usage, dict):
            self._usage(usage)

    # -- SSE ------------------------------------------------------------------------------

    def _feed_sse(self, data: bytes) -> None:
        """Split the stream into events (blank-line separated) and handle each whole one.

        Work per chunk is a few C-level scans; Python touches each event once. A partial
        event waits as a list of parts (joined once, when its end arrives).
        """
        if self._cr:  # a CRLF split across chunks
            data = b"\r" + data
            self._cr = False
        if b"\r" in data:
            if data.endswith(b"\r"):
                data = data[:-1]
                self._cr = True
            data = data.replace(b"\r\n", b"\n")
            if not data:
                return
        pending = self._pending
        if pending:
            if b"\n\n" not in data and not (data[:1] == b"\n" and pending[-1][-1:] == b"\n"):
                pending.append(data)  # the event goes on
                self._pending_len += len(data)
                if self._pending_len > _MAX_SSE_EVENT_BYTES:  # too large to keep: skip it
                    self._pending = [b"\n"]
                    self._pending_len = 0
                    self._skip_event = True
                return
            pending.append(data)
            data = b"".join(pending)
            self._pending = []
            self._pending_len = 0
        end = data.rfind(b"\n\n")
        if end < 0:
            if data:
                self._pending = [data]
                self._pending_len = len(data)
            return
        events = data[:end].split(b"\n\n")
        if self._skip_event:
            self._skip_event = False
            events[0] = b""
        for event in events:
            self._sse_event(event)
        if end + 2 < len(data):
            rest = data[end + 2 :]
            self._pending = [rest]
            self._pending_len = len(rest)

    def _sse_event(self, event: bytes) -> None:
        """One SSE event's text (``event:``/``data:``/``id:`` lines): parse its data if useful."""
        if not self._capture and self.model is not None and not _USEFUL_EVENT(event):
            return  # nothing in it the call needs: no JSON parse
        if event.startswith(b"data:") and b"\n" not in event:
            payload = event[5:]  # the usual shape: one data line
        else:
            data = [line[5:] for line in event.split(b"\n") if line.startswith(b"data:")]
            if not data:
                return
            payload = b"\n".join(d[1:] if d[:1] == b" " else d for d in data)
        payload = payload.strip()
        if payload[:1] != b"{":  # [DONE], pings, empty data
            if payload == b"[DONE]":
                self.complete = True
            return
        try:
            obj = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return
        if isinstance(obj, dict):
            self._absorb_event(obj)
