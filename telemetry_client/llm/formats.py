"""What the providers' response JSON says: model, token usage, answer, error, end of body.

:class:`ResponseFields` holds the results and knows each format's shapes; the parser that
frames a body into JSON objects (:mod:`telemetry_client.llm.response`) hands it a whole
body (``_absorb_body``), a streamed event (``_absorb_event``) or a bare usage object.
Formats: OpenAI chat/completions/embeddings, the OpenAI Responses API, Anthropic messages
and Google Gemini.

Token counts are normalised as in the OpenTelemetry GenAI conventions: ``input_tokens``
counts every prompt token, cached ones included; ``output_tokens`` every generated token,
reasoning included; ``cache_read_input_tokens``, ``cache_creation_input_tokens`` and
``reasoning_tokens`` are the parts. Which provider field maps to which figure:
docs/features.md ("LLM calls").
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["MAX_ERROR_CHARS", "ResponseFields"]

#: Error texts in events are cut to this many characters.
MAX_ERROR_CHARS = 1000
_RESPONSES_TERMINAL = frozenset(
    ("response.completed", "response.incomplete", "response.failed", "response.done")
)


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


class ResponseFields:
    """The results of parsing one response, and the per-format rules that fill them.

    Attributes: ``model``, ``total_tokens``, ``cache_read_input_tokens``,
    ``cache_creation_input_tokens``, ``reasoning_tokens``, ``error_message`` (from an error
    body or SSE error event), ``complete`` (the body's own end was seen: ``[DONE]``,
    ``message_stop``, a whole JSON body...); properties ``input_tokens``, ``output_tokens``
    (normalised as the module docstring says) and ``answer`` (``None`` unless
    ``capture_content``).
    """

    __slots__ = (
        "_answer",
        "_capture",
        "_input",
        "_input_excludes_cache",
        "_output",
        "_output_excludes_reasoning",
        "cache_creation_input_tokens",
        "cache_read_input_tokens",
        "complete",
        "error_message",
        "model",
        "reasoning_tokens",
        "total_tokens",
    )

    def __init__(self, *, capture_content: bool) -> None:
        self._capture = capture_content
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
        self.complete = False
        self._answer: list[str] = []

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
            self.error_message = text[:MAX_ERROR_CHARS]

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
