"""What a request body says: the model, whether it streams, and (captured) the prompt.

Called when the call ends, never before the request is sent: the caller's bytes are only
referenced until then. Formats: OpenAI chat/completions/Responses/embeddings, Anthropic
messages, Gemini (whose model is in the path). Anything unparseable yields ``None``s.
"""

from __future__ import annotations

import re
from typing import Any

import orjson

__all__ = ["parse_request"]

_GEMINI_MODEL = re.compile(r"/(?:models|tunedModels)/([^/:]+):")


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
