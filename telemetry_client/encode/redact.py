"""Secret redaction for event payloads, run on the spool writer thread before anything is written.

Why: events carry full prompts, file contents and tool arguments, so API keys, bearer tokens,
private keys and passwords end up in them. Redaction is on by default and sits on the writer's
hot path (>= 50k events/s of ~2.5 KB), where one regex search of a whole event costs ~70 us, so
the work is split in two:

* ``maybe_secret(serialized)``: a byte-level prefilter over the orjson bytes of an event: one
  Aho-Corasick scan for the ``_NEEDLES`` plus ``://`` (~3 us per 2.4 KB event; regex fallback
  ~12 us, see ``_NEEDLES``); a ``://`` hit only counts when ``_URL_CHECK`` finds a user:password
  at it, so ordinary URLs do not send events down the slow path. Contract: when it returns
  False, ``redact`` of the serialized object would change nothing -- no built-in pattern can
  match any string and no dict key, at any depth, is a secret key name. False positives only
  cost time. Always True when extra patterns or a callback are configured (they are opaque);
  always False when disabled.
* ``redact(obj)``: returns a new structure (dict/list/tuple copied, input never mutated, depth
  <= 64; deeper containers become ``[REDACTED:too_deep]``; other types are returned as they are)
  plus the number of redactions. Values under secret key names become ``"[REDACTED]"`` whatever
  their type; in strings each match becomes ``[REDACTED:<kind>]`` (for ``Bearer``/``Basic``
  headers, passwords and ``aws_secret_access_key`` only the value part; the word before is kept;
  for ``scheme://user:password@host`` only the password, so scheme, user and host stay readable).

Rules apply one after another (``_RULES`` order). Case-insensitivity is ASCII-only (``re.ASCII``;
keys lowercased with ASCII rules) so the byte prefilter, which lowercases ASCII only, stays a
superset. Dict keys are checked, never rewritten.
"""

from __future__ import annotations

import re
import string
from collections.abc import Callable, Iterator, Sequence

import orjson

__all__ = ["Redactor"]

MAX_DEPTH = 64  # same bound as the encoder's coercion, so coerced payloads are never cut here
_KEY_CACHE_MAX = 4096
_MASK = "[REDACTED]"

# Prefilter needles: lowercase ASCII strings such that every built-in match, and every secret key
# as orjson writes it (``name":``), contains one of them once ASCII-lowercased.
#
# ``maybe_secret`` finds them with one ahocorasick_rs automaton per Redactor (these needles plus
# the instance's extra-key needles) over ``bytes.lower()``. Measured with
# benchmarks/redact_prefilter.py on a 2-core box (CPython 3.11, ahocorasick-rs 1.0.3): ~1.55 us
# for its 2.3 KB event (lower() 0.7 + scan 0.7) and ~3.3 us mean over 3000 events (2.4 KB) of
# benchmarks/workload.py, where real prose and code give the scan more candidates to verify;
# 0.9% flagged, exactly the events the regex gates flag (~9.5 and ~12.4 us). LeftmostFirst is
# what makes it cheap: leftmost match kinds let the crate use its SIMD "packed" searcher, while
# Standard steps the automaton byte by byte (~5.5 us mean). Whether *some* needle occurs does not
# depend on the match kind. The API has no "any match" call that stops at the first hit: it lists
# every non-overlapping match (~0.08 us each), so an event with hundreds of hits costs tens of us
# here, where the gates stop at the first; such events are flagged and walked by ``redact`` anyway.
#
# Fallback when ahocorasick_rs cannot be imported (and ``redact_str``'s gate, which only runs on
# flagged events): the needles grouped by an "anchor" byte each contains (picked for rarity in
# code/prose), one regex per group jumping from anchor to anchor in C and checking the needles
# around each hit. bytes.lower() + 8 group scans ~= 9.5 us for the 2.3 KB event (~12 us mean over
# the mix), vs ~33 us for the same 25 needles as ``in`` checks and ~95-220 us for a naive regex
# search of the event.
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
_BYTES_NEEDLES = tuple(n.encode() for ns in _NEEDLES.values() for n in ns)

# URL credentials: ``scheme://user:password@host`` (http(s), postgresql, redis, amqp, ...). URLs are
# everywhere in prose and code, so ``://`` alone is no reason to walk an event: the prefilter
# confirms each ``://`` hit with ``_URL_CHECK``, a looser form of the rule over the lowercased
# orjson bytes. Looser where JSON escaping differs (``\`` allowed: escapes only produce ``\``,
# letters and digits; orjson never escapes ``/``), so it is a superset of the rule. The userinfo
# ends at the first ``/ ? #``, whitespace or quote, which keeps ``@`` in a path, a query or an
# e-mail address out of it; inside it the password runs to the last ``@`` (as WHATWG URL parsers
# read a raw ``@`` in a password) and the user to the first ``:`` (an e-mail user name is fine).
_URL_NEEDLE = "://"
_URL_RULE = (  # the user may be empty (redis://:pw@host) or a marker left by an earlier rule
    r"""://(?:\[REDACTED:\w+\]|[^\s/?#:"'`<>\\[\]]*):(?!\[REDACTED)(?P<v>[^\s/?#"'`<>\\]+)@"""
)
_URL_CHECK = re.compile(rb"""://[^\s/?#:"'`<>]*:[^\s/?#"'`<>]+@""")
_Scan = Callable[[bytes], Sequence[tuple[int, int, int]]]  # (needle, start, end); empty: none


def _automaton(needles: Sequence[bytes]) -> _Scan | None:
    """A scan that finds any of ``needles`` (non-empty), or None if ahocorasick_rs is missing."""
    try:
        from ahocorasick_rs import BytesAhoCorasick, MatchKind
    except ImportError:
        return None
    return BytesAhoCorasick(needles, matchkind=MatchKind.LeftmostFirst).find_matches_as_indexes


# Precise rules: (kind, needles, case-insensitive?, regex). Each rule runs only on strings whose
# lowercase form holds one of its needles, and each starts with a literal so ``re`` can skip
# ahead to it (a single alternation of all rules, or a leading \b, makes ``re`` try every
# position: ~100-300 us per 2 KB). ``(?<!\wX)`` after literal X stands for a leading ``\bX``.
# Case-insensitive rules are written in lowercase and run on ``value.lower()`` when the value is
# ASCII (same positions), else with re.IGNORECASE. ``(?P<v>...)`` is the part to mask (default:
# the whole match).
# key: v, key="v", "key": "v", {\"key\": \"v\"}; a quoted key needs a quoted value (dict literals).
_SEP = r"""(?P<q>\\?["'])?[ \t]*[:=][ \t]*(?(q)\\?["']|\\?["']?)"""
_NOT_CODE = (  # password "values" that are code, types, prose, paths or placeholders
    r"(?!(?:str|bytes|int|bool|any|none|null|nil|undefined|true|false|optional|secretstr|string"
    r"|return|raise|pass|continue|break|await|lambda|if|not|the|an?|is|are|be|must|should|will"
    r"|can|to|for|of|and|or|your|this|that|it)\b|[=%/~]|\$\{|[\w.]*[(\[]|[\w.]+[ \t]+="
    r"|\$?\{?[\w.]*(?:passw(?:or)?d|pwd)\b|[\w.]+,[ \t]*[\w.]*(?:passw(?:or)?d|pwd)\b"
    r"|(?:self|cls|this|os|env|config|settings|request|args|kwargs|options|opts|params|form)\.)"
)
_PASSWORD_TAIL = _SEP + _NOT_CODE + r"""(?P<v>[^\s"'`,;&(){}\[\]<>\\]+)"""
_PEM = "-----BEGIN[A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----[\\s\\S]*?"
_PEM += "(?:-----END[A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----|\\Z)"  # no END: mask to the end
_AUTH = "authorization" + _SEP
_RULES: tuple[tuple[str, tuple[str, ...], bool, str], ...] = (  # applied in this order
    ("private_key", ("private key",), False, _PEM),
    ("bearer", ("authorization",), True, _AUTH + r"bearer[ \t]+(?P<v>[\w.~+/-]+=*)"),
    ("basic_auth", ("authorization",), True, _AUTH + r"basic[ \t]+(?P<v>[a-z0-9+/]+=*)"),
    ("bearer", ("bearer",), True, r"bearer(?<!\wbearer)[ \t]+(?P<v>[\w.~+/-]{16,}=*)"),  # no header
    ("jwt", (".eyj",), False, r"eyJ(?<!\weyJ)[\w-]{10,}\.eyJ[\w-]{10,}\.[\w-]*"),
    ("anthropic_key", ("sk-ant-",), False, r"sk-ant-(?<!\wsk-ant-)[\w-]{20,}"),
    ("openai_key", ("sk-",), False, r"sk-(?<!\wsk-)(?=[\w-]*\d)[\w-]{20,}"),  # a digit: no slugs
    ("google_api_key", ("aiza",), False, r"AIza(?<!\wAIza)[\w-]{35}"),
    ("groq_key", ("gsk_",), False, r"gsk_(?<!\wgsk_)[A-Za-z0-9]{20,}"),
    ("huggingface_token", ("hf_",), False, r"hf_(?<!\whf_)[A-Za-z0-9]{30,}"),
    ("github_token", ("ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_"), False,
     r"g(?<!\wg)(?:h[pousr]_[A-Za-z0-9]{30,}|ithub_pat_\w{22,})"),
    ("slack_token", ("xox",), False, r"xox(?<!\wxox)[baprs]-[A-Za-z0-9-]{10,}"),
    ("aws_access_key_id", ("akia", "asia"), False, r"A(?<!\wA)(?:KIA|SIA)[A-Z0-9]{16}\b"),
    ("aws_secret_key", ("accesskey", "access_key"), True,
     r"secret_?access_?key" + _SEP + r"(?P<v>[a-z0-9/+]{40})(?![\w/+=])"),
    ("password", (_URL_NEEDLE,), False, _URL_RULE),  # before password=: "password:pw@host" urls
    ("password", ("passw",), True, r"passw(?:or)?d" + _PASSWORD_TAIL),
    ("password", ("pwd",), True, r"pwd" + _PASSWORD_TAIL),
)  # fmt: skip
# (needles, case-insensitive?, regex for value.lower(), regex for value, marker, value group)
_Compiled = tuple[tuple[str, ...], bool, re.Pattern[str], re.Pattern[str], str, int]


def _compile(kind: str, needles: tuple[str, ...], folded: bool, src: str) -> _Compiled:
    on_low = re.compile(src, re.ASCII)
    on_value = re.compile(src, re.ASCII | re.IGNORECASE) if folded else on_low
    return needles, folded, on_low, on_value, f"[REDACTED:{kind}]", on_low.groupindex.get("v", 0)


_TABLE = tuple(_compile(*rule) for rule in _RULES)
_MIN_LEN = 5  # shortest possible match: "pwd=x" ("://:x@" is longer)


def _splice(
    value: str, matches: Iterator[re.Match[str]], marker: str, group: int
) -> tuple[str, int]:
    """``value`` with ``group`` of every match replaced by ``marker``, and the match count."""
    parts: list[str] = []
    last = 0
    for m in matches:
        start, end = m.span(group)
        parts += (value[last:start], marker)
        last = end
    if not parts:
        return value, 0
    parts.append(value[last:])
    return "".join(parts), len(parts) // 2


def _apply_rules(value: str, low: str) -> tuple[str, int]:
    """Run every rule whose needles occur in ``low`` (``value.lower()``) over ``value``."""
    count = 0
    ascii_only = value.isascii()  # then value.lower() keeps positions, so rules can run on it
    for needles, folded, on_low, on_value, marker, group in _TABLE:
        for needle in needles:
            if needle in low:
                break
        else:
            continue
        matches = on_low.finditer(low) if folded and ascii_only else on_value.finditer(value)
        value, n = _splice(value, matches, marker, group)
        if n:
            count += n
            low = value.lower()
    return value, count


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


def _key_forms(key: str) -> tuple[str, str]:
    """ASCII-lowercased with ``-``/space/``.`` as ``_``, with and without camelCase splitting.

    ``X-Api-Key``, ``x.api.key`` -> ``x_api_key``; ``accessToken`` -> ``access_token``,
    ``accesstoken``. A key is secret if either form is.
    """
    return _CAMEL.sub("_", key).translate(_KEY_TABLE), key.translate(_KEY_TABLE)


class Redactor:
    """Masks secrets in event payloads; see the module docstring for the contract.

    ``callback(key, value)`` runs last on every string that ``redact``/``redact_str`` sees:
    ``key`` is the nearest enclosing dict key (``""`` at top level), ``value`` the string after
    built-in and extra-pattern redaction; it returns a replacement or None to keep the string.
    If it raises, the string becomes ``[REDACTED:callback_error]`` (fail closed).
    """

    __slots__ = (
        "_always", "_callback", "_enabled", "_extra", "_extra_keys", "_key_cache", "_key_needles",
        "_scan", "_slash_needles", "_url_index",
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
        self._extra_keys = frozenset(form for k in extra_keys for form in _key_forms(k))
        self._key_cache: dict[str, bool] = {}
        # A user key shows up in the bytes as its last segment (ASCII-lowercased, JSON-escaped).
        segments = [next((s for s in reversed(k.split("_")) if s), "") for k in self._extra_keys]
        self._key_needles = tuple(orjson.dumps(s)[1:-1].lower() for s in segments if s)
        self._always = bool(self._extra or callback or "" in segments)
        # Per instance: the key needles depend on the configuration (build ~0.15 ms).
        needed = enabled and not self._always
        needles = (*_BYTES_NEEDLES, *self._key_needles, _URL_NEEDLE.encode())
        self._url_index = len(needles) - 1  # a hit on this needle still needs _URL_CHECK
        # A needle starting with "/" can hide inside a "://" match (matches do not overlap);
        # no built-in one does, a user key's segment might: those are checked on their own.
        self._slash_needles = tuple(n for n in self._key_needles if n.startswith(b"/"))
        self._scan = _automaton(needles) if needed else None

    def is_secret_key(self, key: str) -> bool:
        """True when values under ``key`` are masked whole (always False when disabled)."""
        try:
            return self._key_cache[key]
        except KeyError:
            pass
        hit = self._enabled and any(
            form in _SECRET_KEYS or form.endswith(_SECRET_SUFFIXES) or form in self._extra_keys
            for form in _key_forms(key)
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
        if self._scan is not None:
            # Leftmost-first matches do not overlap: every "://" is listed unless an earlier
            # match (another needle: True anyway) covers it; a needle starting inside one (with
            # "/") may be hidden, hence _slash_needles.
            hits = self._scan(low)
            if not hits:
                return False
            url = self._url_index
            for index, start, _ in hits:
                if index != url or _URL_CHECK.match(low, start):
                    return True
            return bool(self._slash_needles) and any(n in low for n in self._slash_needles)
        for search in _BYTES_GATES:  # fallback: ahocorasick_rs not importable
            if search(low):
                return True
        if any(needle in low for needle in self._key_needles):
            return True
        return b"@" in low and _URL_CHECK.search(low) is not None  # memchr first: ~0.05 us

    def redact_str(self, value: str, *, key: str = "") -> tuple[str, int]:
        """``value`` with every secret replaced by a marker, and the number of replacements."""
        if not self._enabled:
            return value, 0
        count = 0
        if len(value) >= _MIN_LEN:
            low = value.lower()
            for search in _STR_GATES:
                if search(low):
                    value, count = _apply_rules(value, low)
                    break
            else:  # "@" first: a one-character search is a memchr, "://" is not
                if "@" in low and _URL_NEEDLE in low:
                    value, count = _apply_rules(value, low)
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
                    out[k], n = _MASK, 0 if (isinstance(v, str) and v == _MASK) else 1
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
