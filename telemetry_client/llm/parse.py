"""What an LLM call is, which provider it went to, and what its bodies say (no HTTP library here).

The HTTP wrappers (``integrations/httpx.py``) hand this module plain values: the method,
host and path of a request, its body bytes, and the response's status, headers and raw
body chunks as the caller reads them. :class:`Call` turns them into one
:class:`~telemetry_client.events.LLMCall`.

Parsing is incremental and cheap, and it is best effort: the response body is decoded
(``Content-Encoding``) and parsed chunk by chunk as the caller reads it; an SSE event
is parsed only when it can matter (a usage figure, the model, an error, or an answer
delta when content is captured); a JSON body is kept up to ``max_parse_bytes`` (the
chunks are the caller's own ``bytes`` objects, referenced, not copied) and parsed once
at the end; past that limit only a rolling tail is kept, where the ``usage`` object
sits. The request body is parsed when the call ends, never before it is sent. Anything
unparseable is left out of the event.

Formats understood: OpenAI chat/completions/embeddings (``usage.prompt_tokens``...,
streamed with ``stream_options.include_usage``), the OpenAI Responses API
(``usage.input_tokens``..., ``response.*`` stream events), Anthropic messages
(``usage``, ``message_start``/``message_delta``/``content_block_delta`` events) and
Google Gemini (``usageMetadata``, ``candidates``; SSE or a JSON array).

Token counts are normalised across providers, as in the OpenTelemetry GenAI conventions:
``input_tokens`` is every prompt token, cached ones included (OpenAI's ``prompt_tokens``;
Anthropic's ``input_tokens + cache_read_input_tokens + cache_creation_input_tokens``),
``output_tokens`` every generated token, reasoning included (Gemini's
``candidatesTokenCount + thoughtsTokenCount``). The parts are reported beside them:
``cache_read_input_tokens`` (OpenAI ``*_tokens_details.cached_tokens``, Anthropic
``cache_read_input_tokens``, Gemini ``cachedContentTokenCount``),
``cache_creation_input_tokens`` (Anthropic) and ``reasoning_tokens`` (OpenAI
``*_tokens_details.reasoning_tokens``, Gemini ``thoughtsTokenCount``).
"""

from __future__ import annotations

import asyncio
import json
import re
import sys
import time
import zlib
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

import orjson

from telemetry_client.events import LLMCall

__all__ = [
    "DEFAULT_MAX_PARSE_BYTES",
    "DEFAULT_PROVIDERS",
    "LLM_PATH_SUFFIXES",
    "Call",
    "ResponseParser",
    "detect_provider",
    "error_text",
    "is_cancellation",
    "is_llm_path",
    "parse_request",
]

#: Host name -> provider reported in ``LLMCall.provider``.
DEFAULT_PROVIDERS: Mapping[str, str] = {
    "api.openai.com": "openai",
    "api.anthropic.com": "anthropic",
    "generativelanguage.googleapis.com": "google",
    "api.groq.com": "groq",
    "api.mistral.ai": "mistral",
    "openrouter.ai": "openrouter",
}
_SUFFIX_PROVIDERS: tuple[tuple[str, str], ...] = ((".openai.azure.com", "azure_openai"),)

#: A POST to a path ending in one of these is an LLM call (the default predicate).
LLM_PATH_SUFFIXES: tuple[str, ...] = (
    "/chat/completions",
    "/completions",
    "/responses",
    "/messages",
    "/embeddings",
    ":generateContent",
    ":streamGenerateContent",
)

#: Response/request bodies larger than this are not parsed whole (8 MiB).
DEFAULT_MAX_PARSE_BYTES = 8 * 1024 * 1024
_TAIL_BYTES = 64 * 1024  # kept of an over-large JSON body: its usage object is at the end
_MAX_SSE_EVENT_BYTES = 1024 * 1024  # a longer SSE event is skipped, not buffered
_MAX_ERROR_CHARS = 1000
# Memory addresses in exception texts (``<Task ... at 0x7f54...>``, anyio's ``cancel scope
# 7f54...``) make every occurrence unique; they are masked so errors group.
_ADDRESS = re.compile(r"\b0x[0-9a-fA-F]{6,}\b|(?<=cancel scope )[0-9a-fA-F]{6,}\b")
_GEMINI_MODEL = re.compile(r"/(?:models|tunedModels)/([^/:]+):")
_RESPONSES_TERMINAL = frozenset(
    ("response.completed", "response.incomplete", "response.failed", "response.done")
)
#: Without content capture, only SSE events holding one of these are parsed (once the
#: model is known): usage figures, errors and end-of-stream markers.
_USEFUL_NEEDLES = (b'"usage', b'"error"', b"message_stop", b"finishReason", b"[DONE]")


def _needle_scan() -> Callable[[bytes], object]:
    """Whether any of :data:`_USEFUL_NEEDLES` occurs: one Aho-Corasick pass (~0.2 us for a
    200-byte event; five ``in`` scans cost ~0.9 us), or the ``in`` scans without the crate."""
    try:
        from ahocorasick_rs import BytesAhoCorasick, MatchKind
    except ImportError:  # pragma: no cover - a dependency of the package
        return lambda data: any(needle in data for needle in _USEFUL_NEEDLES)
    scan = BytesAhoCorasick(_USEFUL_NEEDLES, matchkind=MatchKind.LeftmostFirst)
    return scan.find_matches_as_indexes


_USEFUL_EVENT = _needle_scan()
_USAGE_KEY = re.compile(rb'"(?:usage|usageMetadata)"\s*:\s*\{')


def is_llm_path(method: str, path: str) -> bool:
    """The default predicate: ``POST`` to a path ending in one of :data:`LLM_PATH_SUFFIXES`."""
    return method == "POST" and path.endswith(LLM_PATH_SUFFIXES)


def detect_provider(
    host: str, port: int | None = None, overrides: Mapping[str, str] | None = None
) -> str:
    """The provider name for ``host`` (lowercase), else the host name itself.

    ``overrides`` (checked first) maps ``"host"``, ``"host:port"`` or ``"*.domain"`` (the
    domain and every subdomain) to a provider name.
    """
    host = host.lower().rstrip(".")
    if overrides:
        if port is not None and (hit := overrides.get(f"{host}:{port}")) is not None:
            return hit
        if (hit := overrides.get(host)) is not None:
            return hit
        for pattern, provider in overrides.items():
            if pattern.startswith("*.") and (host == pattern[2:] or host.endswith(pattern[1:])):
                return provider
    if (known := DEFAULT_PROVIDERS.get(host)) is not None:
        return known
    for suffix, provider in _SUFFIX_PROVIDERS:
        if host.endswith(suffix):
            return provider
    return host


# -- request ----------------------------------------------------------------------------


def parse_request(
    body: bytes | None, path: str, *, capture_content: bool, max_bytes: int
) -> tuple[str | None, bool, Any]:
    """``(model, stream, prompt)`` from a JSON request body (``prompt`` only if captured).

    The prompt is the request's conversation: ``messages`` (chat, Anthropic), ``input``
    (Responses API, embeddings), ``contents`` (Gemini) or ``prompt`` (completions), with a
    separate system prompt (``system``, ``instructions``, ``systemInstruction``) put first
    as a ``{"role": "system", "content": ...}`` item.
    """
    model: str | None = None
    if (m := _GEMINI_MODEL.search(path)) is not None:
        model = m.group(1)
    if not body or len(body) > max_bytes or body[:1] != b"{":
        return model, False, None
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError:
        return model, False, None
    if not isinstance(obj, dict):
        return model, False, None
    if isinstance(name := obj.get("model"), str):
        model = name
    stream = obj.get("stream") is True
    return model, stream, _prompt_of(obj) if capture_content else None


def _prompt_of(obj: dict[str, Any]) -> Any:
    for key in ("messages", "input", "contents", "prompt"):
        if key in obj:
            conversation = obj[key]
            break
    else:
        return None
    system = obj.get("system", obj.get("instructions"))
    if system is None:
        system = obj.get("systemInstruction", obj.get("system_instruction"))
    if system is None:
        return conversation
    if isinstance(conversation, str):
        conversation = [{"role": "user", "content": conversation}]
    if isinstance(conversation, list):
        return [{"role": "system", "content": system}, *conversation]
    return {"system": system, key: conversation}


# -- response ---------------------------------------------------------------------------


def _as_int(value: Any) -> int | None:
    return value if type(value) is int else None


def _first_int(usage: Mapping[str, Any], *keys: str) -> int | None:
    for key in keys:
        if (n := _as_int(usage.get(key))) is not None:
            return n
    return None


def _first(items: Any) -> Any:
    if isinstance(items, list) and items:
        return items[0]
    return None


class _TooLarge(Exception):
    """One chunk decoded to more than the decoder's limit (a compression bomb?)."""


class _Decoder:
    """Undo ``Content-Encoding`` (identity, gzip, deflate, zstd) incrementally.

    One chunk may decode to at most ``limit`` bytes, else :class:`_TooLarge` (the parser
    gives up; the caller's own decoder is not affected).
    """

    __slots__ = ("_deflate_raw", "_kind", "_limit", "_obj")

    def __init__(self, encoding: str, limit: int = 4 * DEFAULT_MAX_PARSE_BYTES) -> None:
        self._limit = limit
        kinds = [
            e.strip() for e in encoding.lower().split(",") if e.strip() not in ("", "identity")
        ]
        self._kind = kinds[0] if len(kinds) == 1 else ("identity" if not kinds else "unsupported")
        self._deflate_raw = False
        self._obj: Any = None
        if self._kind == "gzip":
            self._obj = zlib.decompressobj(zlib.MAX_WBITS | 16)
        elif self._kind == "deflate":
            self._obj = zlib.decompressobj()
        elif self._kind == "zstd":
            self._obj = _zstd_decompressobj()

    @property
    def identity(self) -> bool:
        return self._kind == "identity"

    @property
    def supported(self) -> bool:
        return self._kind in ("identity", "gzip", "deflate") or (
            self._kind == "zstd" and self._obj is not None
        )

    def decode(self, data: bytes) -> bytes:
        kind = self._kind
        if kind == "identity":
            return data
        if kind == "zstd":
            out = []
            size = 0
            while True:
                out.append(piece := self._obj.decompress(data))
                size += len(piece)
                if size > self._limit:
                    raise _TooLarge
                if not self._obj.eof or not self._obj.unused_data:
                    return b"".join(out)
                data = self._obj.unused_data  # another frame follows
                self._obj = _zstd_decompressobj()
        if kind == "deflate" and not self._deflate_raw:
            try:
                return self._zlib(data)
            except zlib.error:  # some servers send raw deflate (as httpx tolerates)
                self._deflate_raw = True
                self._obj = zlib.decompressobj(-zlib.MAX_WBITS)
        return self._zlib(data)

    def _zlib(self, data: bytes) -> bytes:
        out: bytes = self._obj.decompress(data, self._limit)
        if self._obj.unconsumed_tail:
            raise _TooLarge
        return out


def _zstd_decompressobj() -> Any:
    try:
        import zstandard
    except ImportError:  # pragma: no cover - a dependency of the package
        return None
    return zstandard.ZstdDecompressor().decompressobj()


class ResponseParser:
    """Incremental parse of one response body: model, token usage, answer, error message.

    ``feed`` takes the raw (still encoded) chunks in order; ``close`` ends the body
    (call it once, also after a partial body). Results are the attributes ``model``,
    ``input_tokens``, ``output_tokens``, ``total_tokens``, ``cache_read_input_tokens``,
    ``cache_creation_input_tokens``, ``reasoning_tokens`` (normalised as the module
    docstring says), ``answer`` (``None`` unless ``capture_content``) and ``error_message``
    (from an error body or SSE error event).
    """

    __slots__ = (
        "_answer",
        "_capture",
        "_cr",
        "_decoder",
        "_head",
        "_head_len",
        "_identity",
        "_input",
        "_input_excludes_cache",
        "_max_bytes",
        "_output",
        "_output_excludes_reasoning",
        "_pending",
        "_pending_len",
        "_skip_event",
        "_sse",
        "_tail",
        "_tail_len",
        "cache_creation_input_tokens",
        "cache_read_input_tokens",
        "complete",
        "dead",
        "error_message",
        "model",
        "reasoning_tokens",
        "total_tokens",
    )

    def __init__(
        self,
        *,
        content_type: str,
        content_encoding: str = "",
        capture_content: bool = False,
        max_bytes: int = DEFAULT_MAX_PARSE_BYTES,
    ) -> None:
        ctype = content_type.split(";", 1)[0].strip().lower()
        self._sse = ctype == "text/event-stream"
        self._decoder = _Decoder(content_encoding, 4 * max(max_bytes, _MAX_SSE_EVENT_BYTES))
        self._identity = self._decoder.identity
        #: True when the body is not parsed (unknown type or encoding, or gave up).
        self.dead = not self._decoder.supported or not (self._sse or ctype.endswith("json"))
        self._capture = capture_content
        self._max_bytes = max_bytes
        self.model: str | None = None
        self._input: int | None = None  # the provider's own prompt/input figure
        self._output: int | None = None
        self._input_excludes_cache = False  # Anthropic: input_tokens leaves cache reads/writes out
        self._output_excludes_reasoning = False  # Gemini: candidates leave thoughts out
        self.total_tokens: int | None = None
        self.cache_read_input_tokens: int | None = None
        self.cache_creation_input_tokens: int | None = None
        self.reasoning_tokens: int | None = None
        self.error_message: str | None = None
        #: True once the body's own end was seen ([DONE], message_stop, a whole JSON...).
        self.complete = False
        self._answer: list[str] = []
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
    def input_tokens(self) -> int | None:
        """Every prompt token, cached ones included."""
        n = self._input
        if n is None or not self._input_excludes_cache:
            return n
        return n + (self.cache_read_input_tokens or 0) + (self.cache_creation_input_tokens or 0)

    @property
    def output_tokens(self) -> int | None:
        """Every generated token, reasoning included."""
        n = self._output
        if n is None or not self._output_excludes_reasoning:
            return n
        return n + (self.reasoning_tokens or 0)

    @property
    def answer(self) -> str | None:
        return "".join(self._answer) if self._answer else None

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
            except Exception:  # _TooLarge, or not what the header said: give up
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

    def _absorb_body(self, obj: dict[str, Any]) -> None:
        """A whole JSON response (OpenAI, Responses API, Anthropic, Gemini)."""
        err = obj.get("error")
        if err is not None:
            self._error(err)
        self._model(obj.get("model") or obj.get("modelVersion"))
        usage = obj.get("usage") or obj.get("usageMetadata")
        if isinstance(usage, dict):
            self._usage(usage)
        if not self._capture:
            return
        choice = _first(obj.get("choices"))
        if isinstance(choice, dict):
            message = choice.get("message")
            text = message.get("content") if isinstance(message, dict) else choice.get("text")
            self._text(text)
        elif obj.get("type") == "message":  # Anthropic
            self._blocks(obj.get("content"), "text", "text")
        elif obj.get("object") == "response":  # OpenAI Responses API
            for item in obj.get("output") or ():
                if isinstance(item, dict) and item.get("type") == "message":
                    self._blocks(item.get("content"), "output_text", "text")
        else:
            self._gemini_parts(obj)

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

    def _absorb_event(self, obj: dict[str, Any]) -> None:
        """One streamed chunk: an SSE event (any format) or a Gemini array item."""
        kind = obj.get("type")
        if isinstance(kind, str):
            if kind == "content_block_delta":  # Anthropic
                delta = obj.get("delta")
                if self._capture and isinstance(delta, dict) and delta.get("type") == "text_delta":
                    self._text(delta.get("text"))
                return
            if kind == "message_start":
                message = obj.get("message")
                if isinstance(message, dict):
                    self._model(message.get("model"))
                    if isinstance(usage := message.get("usage"), dict):
                        self._usage(usage)
                return
            if kind == "message_delta":
                if isinstance(usage := obj.get("usage"), dict):
                    self._usage(usage)
                return
            if kind == "message_stop":
                self.complete = True
                return
            if kind == "error":
                self._error(obj.get("error"))
                return
            if kind == "response.output_text.delta":  # OpenAI Responses API
                if self._capture:
                    self._text(obj.get("delta"))
                return
            if kind.startswith("response."):
                if kind in _RESPONSES_TERMINAL:
                    self.complete = True
                response = obj.get("response")
                if isinstance(response, dict):
                    self._model(response.get("model"))
                    if isinstance(usage := response.get("usage"), dict):
                        self._usage(usage)
                    if response.get("error") is not None:
                        self._error(response.get("error"))
                elif kind == "response.error":
                    self._error(obj)
                return
        # OpenAI chat/completions chunks and Gemini chunks
        self._model(obj.get("model") or obj.get("modelVersion"))
        usage = obj.get("usage") or obj.get("usageMetadata")
        if isinstance(usage, dict):
            self._usage(usage)
        if obj.get("error") is not None:
            self._error(obj.get("error"))
        candidate = _first(obj.get("candidates"))
        if isinstance(candidate, dict) and candidate.get("finishReason"):
            self.complete = True  # Gemini streams have no end marker but this
        if not self._capture:
            return
        choice = _first(obj.get("choices"))
        if isinstance(choice, dict):
            if choice.get("index", 0) != 0:
                return
            delta = choice.get("delta")
            self._text(delta.get("content") if isinstance(delta, dict) else choice.get("text"))
        else:
            self._gemini_parts(obj)

    # -- shared pieces --------------------------------------------------------------------

    def _model(self, value: Any) -> None:
        if self.model is None and isinstance(value, str) and value:
            self.model = value

    def _usage(self, usage: Mapping[str, Any]) -> None:
        """OpenAI ``prompt_/completion_``, Responses/Anthropic ``input_/output_``, Gemini.

        A later usage object updates only the figures it holds (Anthropic's
        ``message_delta`` carries the final ``output_tokens``; its input figures, when
        present, are cumulative too).
        """
        n = _first_int(usage, "prompt_tokens", "input_tokens", "promptTokenCount")
        if n is not None:
            self._input = n
        n = _first_int(usage, "completion_tokens", "output_tokens", "candidatesTokenCount")
        if n is not None:
            self._output = n
        n = _first_int(usage, "total_tokens", "totalTokenCount")
        if n is not None:
            self.total_tokens = n
        details = usage.get("prompt_tokens_details") or usage.get("input_tokens_details")
        n = _as_int(details.get("cached_tokens")) if isinstance(details, dict) else None
        if n is None:
            n = _first_int(usage, "cache_read_input_tokens", "cachedContentTokenCount")
        if n is not None:
            self.cache_read_input_tokens = n
        n = _as_int(usage.get("cache_creation_input_tokens"))
        if n is not None:
            self.cache_creation_input_tokens = n
        if "prompt_tokens" not in usage and (
            "cache_read_input_tokens" in usage or "cache_creation_input_tokens" in usage
        ):
            self._input_excludes_cache = True  # Anthropic's shape (gateways' OpenAI shape: not)
        details = usage.get("completion_tokens_details") or usage.get("output_tokens_details")
        n = _as_int(details.get("reasoning_tokens")) if isinstance(details, dict) else None
        if n is None and (n := _as_int(usage.get("thoughtsTokenCount"))) is not None:
            self._output_excludes_reasoning = True  # Gemini
        if n is not None:
            self.reasoning_tokens = n

    def _error(self, err: Any) -> None:
        text: str | None = None
        if isinstance(err, dict):
            message = err.get("message")
            kind = err.get("type") or err.get("status") or err.get("code")
            if isinstance(message, str) and message:
                text = f"{kind}: {message}" if isinstance(kind, str) and kind else message
            else:
                text = str(kind) if kind is not None else None
        elif isinstance(err, str):
            text = err
        if text:
            self.error_message = text[:_MAX_ERROR_CHARS]

    def _text(self, value: Any) -> None:
        if isinstance(value, str) and value:
            self._answer.append(value)

    def _blocks(self, blocks: Any, kind: str, field: str) -> None:
        if isinstance(blocks, list):
            for block in blocks:
                if isinstance(block, dict) and block.get("type") == kind:
                    self._text(block.get(field))

    def _gemini_parts(self, obj: Mapping[str, Any]) -> None:
        candidate = _first(obj.get("candidates"))
        if isinstance(candidate, dict) and isinstance(content := candidate.get("content"), dict):
            for part in content.get("parts") or ():
                if isinstance(part, dict) and not part.get("thought"):
                    self._text(part.get("text"))


# -- one call ---------------------------------------------------------------------------


def is_cancellation(exc: BaseException) -> bool:
    """``exc`` says the caller stopped waiting (task cancelled, Ctrl-C), not that the call failed.

    asyncio's ``CancelledError`` (also what anyio raises on asyncio), trio's ``Cancelled``
    and ``KeyboardInterrupt``.
    """
    if isinstance(exc, asyncio.CancelledError | KeyboardInterrupt):
        return True
    trio = sys.modules.get("trio")  # never imported here: only if the app uses it
    cancelled = getattr(trio, "Cancelled", None)
    return isinstance(cancelled, type) and isinstance(exc, cancelled)


def error_text(exc: BaseException) -> str:
    """``"Type: message"`` for an event, memory addresses masked (so errors group), bounded."""
    text = _ADDRESS.sub("…", str(exc))
    name = type(exc).__name__
    return (f"{name}: {text}" if text else name)[:_MAX_ERROR_CHARS]


class Call:
    """One recorded LLM call, from request to emitted :class:`LLMCall`.

    Every method is safe to call from the caller's path: failures are reported through
    ``on_error(where, exc)`` and swallowed, never raised. ``finish`` emits exactly once.

    A call that ends before its body's own end (``finish(closed_early=True)``: the caller
    closed the response; or ``fail`` with a cancellation: the caller's task was cancelled,
    e.g. its client disconnected) is emitted with ``closed_early`` (and ``cancelled``), no
    ``error``, and ``partial``: the answer and usage are what had arrived. A read error
    after the head is an ``error`` with ``partial`` set the same way.
    """

    __slots__ = (
        "_body",
        "_cancelled",
        "_capture",
        "_closed_early",
        "_emit",
        "_error",
        "_max_bytes",
        "_on_error",
        "_parser",
        "_partial",
        "_t0",
        "done",
        "endpoint",
        "provider",
        "request_bytes",
        "response_bytes",
        "status",
    )

    def __init__(
        self,
        *,
        provider: str,
        endpoint: str,
        body: bytes | None,
        request_bytes: int,
        emit: Callable[[LLMCall], None],
        on_error: Callable[[str, BaseException], None],
        capture_content: bool = False,
        max_parse_bytes: int = DEFAULT_MAX_PARSE_BYTES,
    ) -> None:
        self._t0 = time.perf_counter()
        self.provider = provider
        self.endpoint = endpoint
        self._body = body  # the caller's own bytes object; parsed when the call ends
        self.request_bytes = request_bytes
        self._emit = emit
        self._on_error = on_error
        self._capture = capture_content
        self._max_bytes = max_parse_bytes
        self.status: int | None = None
        self.response_bytes = 0
        self._parser: ResponseParser | None = None
        self._error: str | None = None
        self._closed_early = False
        self._cancelled = False
        self._partial = False
        self.done = False

    def on_response(self, status: int, content_type: str, content_encoding: str) -> None:
        """The response head arrived."""
        try:
            self.status = status
            self._parser = ResponseParser(
                content_type=content_type,
                content_encoding=content_encoding,
                capture_content=self._capture,
                max_bytes=self._max_bytes,
            )
        except Exception as exc:
            self._on_error("response", exc)

    def feed(self, chunk: bytes) -> None:
        """The caller read this raw body chunk."""
        try:
            self.response_bytes += len(chunk)
            parser = self._parser
            if parser is not None and not parser.dead:
                parser.feed(chunk)
        except Exception as exc:
            self._parser = None  # a parser that failed once is not trusted again
            self._on_error("parse", exc)

    def feed_decoded(self, body: bytes) -> None:
        """The transport had already read the whole (decoded) body."""
        try:
            self.response_bytes += len(body)
            if self._parser is not None:
                self._parser.feed_decoded(body)
        except Exception as exc:
            self._parser = None
            self._on_error("parse", exc)

    def fail(self, exc: BaseException) -> None:
        """The request or the body read ended with ``exc`` (the caller sees it unchanged).

        A cancellation (:func:`is_cancellation`) is not an error: the call is emitted as
        closed early and cancelled.
        """
        if self.done:
            return
        try:
            if is_cancellation(exc):
                self._cancelled = True
                self.finish(closed_early=True)
                return
            self._error = error_text(exc)
        except Exception as err:
            self._on_error("fail", err)
        self.finish()

    def finish(self, *, closed_early: bool = False) -> None:
        """The call ended: emit its event (only the first call does anything)."""
        if self.done:
            return
        self.done = True
        parser = self._parser
        if parser is not None:
            try:
                parser.close()
            except Exception as exc:
                self._parser = parser = None
                self._on_error("parse", exc)
        try:
            complete = parser is not None and parser.complete
            self._closed_early = closed_early and self._error is None and not complete
            self._cancelled = self._cancelled and self._closed_early
            # What arrived is only part of the answer (an answer had started: a status).
            self._partial = (
                self.status is not None
                and not complete
                and (self._closed_early or self._error is not None)
            )
            self._emit(self._event())
        except Exception as exc:
            self._on_error("emit", exc)

    def _event(self) -> LLMCall:
        latency_ms = round((time.perf_counter() - self._t0) * 1000.0, 3)
        parser = self._parser
        model, stream, prompt = None, False, None
        try:
            model, stream, prompt = parse_request(
                self._body, self.endpoint, capture_content=self._capture, max_bytes=self._max_bytes
            )
        except Exception as exc:
            self._on_error("request", exc)
        self._body = None
        answer = None
        inp = out = total = cache_read = cache_creation = reasoning = None
        error = self._error
        if parser is not None:
            stream = stream or parser.streamed
            model = model or parser.model
            inp, out, total = parser.input_tokens, parser.output_tokens, parser.total_tokens
            if total is None and inp is not None and out is not None:
                total = inp + out
            cache_read = parser.cache_read_input_tokens
            cache_creation = parser.cache_creation_input_tokens
            reasoning = parser.reasoning_tokens
            answer = parser.answer
            if error is None and self.status is not None and self.status >= 400:
                msg = parser.error_message
                error = f"HTTP {self.status}: {msg}" if msg else f"HTTP {self.status}"
        elif error is None and self.status is not None and self.status >= 400:
            error = f"HTTP {self.status}"
        return LLMCall(
            provider=self.provider,
            model=model,
            endpoint=self.endpoint,
            status=self.status,
            error=error,
            latency_ms=latency_ms,
            streamed=stream,
            request_bytes=self.request_bytes,
            response_bytes=self.response_bytes,
            input_tokens=inp,
            output_tokens=out,
            total_tokens=total,
            cache_read_input_tokens=cache_read,
            cache_creation_input_tokens=cache_creation,
            reasoning_tokens=reasoning,
            prompt=prompt,
            answer=answer if self._capture else None,
            closed_early=True if self._closed_early else None,
            cancelled=True if self._cancelled else None,
            partial=True if self._partial else None,
        )
