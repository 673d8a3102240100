"""Secret redaction for event payloads, run on the spool writer thread before anything is written.

Why: events carry full prompts, file contents and tool arguments, so API keys, bearer tokens,
private keys and passwords end up in them. Redaction is on by default and sits on the writer's
hot path (>= 50k events/s of ~2.5 KB), where one regex search of a whole event costs ~70 us, so
the work is split in two:

* ``maybe_secret(serialized)``: a byte-level prefilter over the orjson bytes of an event (~10 us,
  see ``_NEEDLES``). Contract: when it returns False, ``redact`` of the serialized object would
  change nothing -- no built-in pattern can match any string and no dict key, at any depth, is a
  secret key name. False positives only cost time. Always True when extra patterns or a callback
  are configured (they are opaque); always False when disabled.
* ``redact(obj)``: returns a new structure (dict/list/tuple copied, input never mutated, depth
  <= 64; deeper containers become ``[REDACTED:too_deep]``; other types are returned as they are)
  plus the number of redactions. Values under secret key names become ``"[REDACTED]"`` whatever
  their type; in strings each match becomes ``[REDACTED:<kind>]`` (for ``Bearer``/``Basic``
  headers, passwords and ``aws_secret_access_key`` only the value part; the word before is kept).

Matching is ASCII-only (``re.ASCII``; keys lowercased with ASCII rules) so the byte prefilter,
which lowercases ASCII only, stays a superset. Dict keys are checked, never rewritten.
"""

from __future__ import annotations

import re
import string
from collections.abc import Callable, Sequence

import orjson

__all__ = ["Redactor"]

MAX_DEPTH = 64  # same bound as the encoder's coercion, so coerced payloads are never cut here
_KEY_CACHE_MAX = 4096
_MASK = "[REDACTED]"

# Prefilter needles: lowercase ASCII strings such that every built-in match, and every secret key
# as orjson writes it (``name":``), contains one of them once ASCII-lowercased. Grouped by an
# "anchor" byte each needle contains: one regex per group jumps from anchor to anchor in C and
# checks the needles around each hit, instead of one full ``in`` scan per needle. Measured with
# benchmarks/redact_prefilter.py on ~2.1 KB code+prose events (CPython 3.11): bytes.lower() 0.7 us
# + 8 group scans ~= 9.5 us per event, vs ~33 us for the same 26 needles as ``in`` checks and
# ~70 us for one search of the precise patterns. Anchors are rare bytes in such payloads.
_KEY_NAMES_WITH_K = ('token":', 'cookie":', 'key":')
_NEEDLES: dict[str, tuple[str, ...]] = {
    # sk-: OpenAI/Anthropic; gsk_: Groq; akia: AWS key id; private key: PEM; access(_)key: AWS
    # secret; then *token, *cookie and *key secret key names, as orjson writes keys: name":
    "k": ("sk-", "gsk_", "akia", "private key", "accesskey", "access_key", *_KEY_NAMES_WITH_K),
    "z": ("authorization", "aiza"),  # Authorization: Bearer/Basic (and key); Google API key
    "j": (".eyj",),  # JWT: header.eyJpayload.signature
    "w": ("passw", "pwd"),  # password=/passwd:/pwd= values and password keys
    "b": ("bearer", "github_pat_"),
    "h": ("hf_", "ghp_", "gho_", "ghu_", "ghs_", "ghr_"),  # Hugging Face, GitHub
    "x": ("xox",),  # Slack
    "s": ("asia", 'secret":'),  # AWS temporary key id; *secret keys
}


def _gate(anchor: str, needles: Sequence[str]) -> str:
    """Regex source that matches iff ``any(n in text for n in needles)``; needles hold anchor."""
    alts = []
    for needle in needles:
        i = needle.index(anchor)
        behind = f"(?<={re.escape(needle)})" if i else ""
        alts.append(re.escape(needle[i + 1 :]) + behind)  # suffix first: cheap literal mismatch
    return re.escape(anchor) + "(?:" + "|".join(alts) + ")"


_BYTES_GATES = tuple(re.compile(_gate(a, n).encode()).search for a, n in _NEEDLES.items())
_STR_GATES = tuple(re.compile(_gate(a, n)).search for a, n in _NEEDLES.items())

# Precise value patterns. ``(?P<v>...)`` marks the part to mask; without it the whole match goes.
_SEP = r"""[\\"']{0,3}[ \t]*[:=][ \t]*[\\"']{0,3}"""  # key: value, key="value", {\"key\": ...
_NOT_CODE = (  # password values that are code, types or placeholders, not secrets
    r"(?!(?:str|bytes|int|bool|Any|None|null|nil|undefined|true|false|True|False|Optional"
    r"|SecretStr|string)\b|=|\$\{|\$[A-Z_][A-Z0-9_]*\b|[\w.]*\(|[\w.]*(?i:passw(?:or)?d|pwd)\b"
    r"|(?:self|cls|this|os|env|config|settings|request|args|kwargs|options|opts|params|form)\.)"
)
_PEM_BEGIN = "-----BEGIN[A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----"
_PEM_END = "-----END[A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----"
_CREDENTIAL_VALUE = r"""(?P<v>[^\s"'`,;&(){}\[\]<>\\]+)"""
_RULES: tuple[tuple[str, str], ...] = (
    ("private_key", rf"{_PEM_BEGIN}[\s\S]*?(?:{_PEM_END}|\Z)"),  # no END: mask to the end
    ("jwt", r"\beyJ[\w-]{10,}\.eyJ[\w-]{10,}\.[\w-]*"),
    ("bearer", r"(?i:authorization)" + _SEP + r"(?i:bearer)[ \t]+(?P<v>[\w.~+/-]+=*)"),
    ("basic_auth", r"(?i:authorization)" + _SEP + r"(?i:basic)[ \t]+(?P<v>[A-Za-z0-9+/]+=*)"),
    ("bearer", r"\b(?i:bearer)[ \t]+(?P<v>[\w.~+/-]{16,}=*)"),  # no header: needs a long token
    ("anthropic_key", r"\bsk-ant-[\w-]{20,}"),
    ("openai_key", r"\bsk-(?=[\w-]*\d)[\w-]{20,}"),  # incl. sk-proj-; a digit rules out slugs
    ("google_api_key", r"\bAIza[\w-]{35}"),
    ("groq_key", r"\bgsk_[A-Za-z0-9]{20,}"),
    ("huggingface_token", r"\bhf_[A-Za-z0-9]{30,}"),
    ("github_token", r"\b(?:gh[pousr]_[A-Za-z0-9]{30,}|github_pat_\w{22,})"),
    ("slack_token", r"\bxox[baprs]-[A-Za-z0-9-]{10,}"),
    ("aws_access_key_id", r"\b(?:AKIA|ASIA)[A-Z0-9]{16}\b"),
    ("aws_secret_key", r"(?i:secret_?access_?key)" + _SEP + r"(?P<v>[A-Za-z0-9/+]{40})(?![\w/+=])"),
    ("password", r"(?:(?i:passw(?:or)?d)|[Pp]wd)" + _SEP + _NOT_CODE + _CREDENTIAL_VALUE),
)
# One alternation; group p<i> is rule i and v<i> the part of it to mask.
_SECRET_RE = re.compile(
    "|".join(
        f"(?P<p{i}>{src.replace('(?P<v>', f'(?P<v{i}>')})" for i, (_, src) in enumerate(_RULES)
    ),
    re.ASCII,
)
# outer group index -> (marker, index of the value group or 0 for "mask the whole match")
_RULE_OF: dict[int, tuple[str, int]] = {
    _SECRET_RE.groupindex[f"p{i}"]: (f"[REDACTED:{kind}]", _SECRET_RE.groupindex.get(f"v{i}", 0))
    for i, (kind, _) in enumerate(_RULES)
}
_MIN_LEN = 5  # shortest possible match: "pwd=x"


def _mask(m: re.Match[str]) -> str:
    marker, v = _RULE_OF[m.lastindex or 0]
    if not v:
        return marker
    start, text = m.start(), m.group()
    return text[: m.start(v) - start] + marker + text[m.end(v) - start :]


_SECRET_KEYS = frozenset((
    "authorization", "proxy_authorization", "x_api_key", "api_key", "apikey", "password", "passwd",
    "token", "access_token", "refresh_token", "id_token", "auth_token", "secret", "client_secret",
    "cookie", "set_cookie", "private_key", "session_token", "x_auth_token",
    "secret_key", "secret_access_key", "aws_secret_access_key",  # beyond the spec: AWS, Django
))  # fmt: skip
_SECRET_SUFFIXES = (
    "_token", "_secret", "_password", "_api_key", "_apikey", "_secret_key", "_private_key",
)  # fmt: skip
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")  # apiKey, XApiKey
_KEY_TABLE = str.maketrans(string.ascii_uppercase + "- .", string.ascii_lowercase + "___")


def _normalise_key(key: str) -> str:
    """``X-Api-Key``/``apiKey``/``API KEY`` -> ``x_api_key``/``api_key``/``api_key`` (ASCII)."""
    return _CAMEL.sub("_", key).translate(_KEY_TABLE)


class Redactor:
    """Masks secrets in event payloads; see the module docstring for the contract.

    ``callback(key, value)`` runs last on every string that ``redact``/``redact_str`` sees:
    ``key`` is the nearest enclosing dict key (``""`` at top level), ``value`` the string after
    built-in and extra-pattern redaction; it returns a replacement or None to keep the string.
    If it raises, the string becomes ``[REDACTED:callback_error]`` (fail closed).
    """

    __slots__ = (
        "_always", "_callback", "_enabled", "_extra", "_extra_keys", "_key_cache", "_key_needles",
    )  # fmt: skip

    def __init__(
        self,
        *,
        enabled: bool = True,
        extra_patterns: Sequence[str] = (),
        extra_keys: Sequence[str] = (),
        callback: Callable[[str, str], str | None] | None = None,
    ) -> None:
        self._enabled = enabled
        self._extra = tuple(re.compile(p) for p in extra_patterns)
        self._callback = callback
        self._extra_keys = frozenset(_normalise_key(k) for k in extra_keys)
        self._key_cache: dict[str, bool] = {}
        # A user key shows up in the bytes as its last segment (ASCII-lowercased, JSON-escaped).
        segments = [next((s for s in reversed(k.split("_")) if s), "") for k in self._extra_keys]
        self._key_needles = tuple(orjson.dumps(s)[1:-1].lower() for s in segments if s)
        self._always = bool(self._extra or callback or "" in segments)

    def is_secret_key(self, key: str) -> bool:
        """True when values under ``key`` are masked whole (always False when disabled)."""
        try:
            return self._key_cache[key]
        except KeyError:
            pass
        norm = _normalise_key(key)
        hit = self._enabled and (
            norm in _SECRET_KEYS or norm.endswith(_SECRET_SUFFIXES) or norm in self._extra_keys
        )
        if len(self._key_cache) >= _KEY_CACHE_MAX:
            self._key_cache.clear()
        self._key_cache[key] = hit
        return hit

    def maybe_secret(self, serialized: bytes) -> bool:
        """Cheap prefilter over orjson bytes: False means ``redact`` would change nothing."""
        if not self._enabled:
            return False
        if self._always:
            return True
        low = serialized.lower()
        for search in _BYTES_GATES:
            if search(low):
                return True
        return any(needle in low for needle in self._key_needles)

    def redact_str(self, value: str, *, key: str = "") -> tuple[str, int]:
        """``value`` with every secret replaced by a marker, and the number of replacements."""
        if not self._enabled:
            return value, 0
        count = 0
        if len(value) >= _MIN_LEN:
            low = value.lower()
            for search in _STR_GATES:
                if search(low):
                    value, count = _SECRET_RE.subn(_mask, value)
                    break
        for pattern in self._extra:
            value, n = pattern.subn("[REDACTED:custom]", value)
            count += n
        if self._callback is not None:
            try:
                new = self._callback(key, value)
            except Exception:
                new = "[REDACTED:callback_error]"
            if new is not None and new != value:
                value, count = new, count + 1
        return value, count

    def redact(self, obj: object) -> tuple[object, int]:
        """A redacted copy of ``obj`` (dict/list/tuple walked, input untouched) and the count."""
        if not self._enabled:
            return obj, 0
        return self._walk(obj, "", 0)

    def _walk(self, obj: object, key: str, depth: int) -> tuple[object, int]:
        if isinstance(obj, str):
            return self.redact_str(obj, key=key)
        if not isinstance(obj, (dict, list, tuple)):
            return obj, 0
        if depth > MAX_DEPTH:
            return "[REDACTED:too_deep]", 1
        total = 0
        if isinstance(obj, dict):
            out: dict[object, object] = {}
            for k, v in obj.items():
                if isinstance(k, str) and self.is_secret_key(k):
                    out[k], n = _MASK, 1
                else:
                    out[k], n = self._walk(v, k if isinstance(k, str) else key, depth + 1)
                total += n
            return out, total
        items = []
        for v in obj:
            new, n = self._walk(v, key, depth + 1)
            items.append(new)
            total += n
        return (tuple(items) if isinstance(obj, tuple) else items), total
