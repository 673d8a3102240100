"""A deterministic, realistic LLM-agent event mix for benchmarks.

``make_events(n, seed)`` returns ``n`` ``(type, data)`` pairs, generated up front (never
inside a timed region). Each ``data`` carries a unique ``"marker": i`` so a receiver can
count deliveries. The mix, by count:

=================  ======  ==========================================================
type               share   content (mean compact JSON of ``{"type", "data"}``)
=================  ======  ==========================================================
chat_turn          14%     prompt 0.2-2 KB (+ code) and answer 0.4-4 KB (+ code), ~4.4 KB
tool_call          20%     args dict + result (file slice, grep hits, prose), ~2.4 KB
file_operation      9%     before/after source (20-60 lines) + difflib diff, ~4 KB
error               5%     exception type, message, 4-16 frame stack trace, ~1.3 KB
response_chunk     25%     streamed model output (prose or code), ~1 KB
bash_output        17%     pytest-like or cat-like output, ~2.2 KB
thinking           10%     reasoning prose, ~2.3 KB
=================  ======  ==========================================================

Mean: ~2.4 KB per event (the SDK's envelope adds ~250 bytes on the wire).

Texts are slices of two corpora so the compression ratio is realistic, not absurd:

* code: the CPython standard library's own ``*.py`` files on this machine, test suites
  excluded (about 11 MB);
* prose: English-like sentences from a ~270-word vocabulary with a Zipf distribution,
  sprinkled with identifiers taken from the code corpus (about 12 MB, built once per
  seed from ``random.Random(seed)``).

Slices are taken at random offsets of corpora much larger than a spool batch, so a batch
rarely contains the same text twice. (Real agent traffic repeats more than this: the
same file read several times, prompts quoting earlier answers.) The corpora depend on the
interpreter's stdlib, so the exact bytes are deterministic per Python version.

Run ``python benchmarks/workload.py`` to print the mix statistics.
"""

from __future__ import annotations

import bisect
import difflib
import functools
import itertools
import json
import random
import re
import sysconfig
from collections import Counter
from pathlib import Path
from typing import Any

__all__ = ["EVENT_MIX", "make_events", "mean_json_size", "mix_summary"]

#: (type, weight) of the event mix.
EVENT_MIX: tuple[tuple[str, int], ...] = (
    ("chat_turn", 14),
    ("tool_call", 20),
    ("file_operation", 9),
    ("error", 5),
    ("response_chunk", 25),
    ("bash_output", 17),
    ("thinking", 10),
)

_PROSE_CHARS = 12_000_000
_VOCAB_TEXT = """
the of and to a in is that it for as with be on not this are by or from at which an have
we can if you will but all they one has more when there their so would should use may
function value file code test call return error data object type list string class method
module request response model user agent session token context result output input change
line run build parse check update read write open close create delete path name key field
first second next last new old other same different current previous following each every
because however therefore also only just then now here where while after before during
into over under between through without within against about above below around instead
make take give show find look need want try keep let see know think seem become leave
simple small large long short clear likely possible important specific general common
problem issue case example reason approach solution step option behaviour performance
memory thread process loop event queue buffer batch spool disk network server client
handle handler callback config setting default timeout retry limit size count number
fix bug patch refactor rename move split merge add remove replace extend wrap cache
it's don't doesn't can't won't isn't we'll I'll let's that's there's here's you're
looks works fails passes returns raises calls reads writes sends receives expects
correctly properly quickly safely directly already still again once never always often
Python JSON HTTP API CLI SDK async await import export schema payload envelope header
sure right yes no maybe probably actually basically exactly roughly nearly almost
"""
_VOCAB = _VOCAB_TEXT.split()
_SENTENCE_END = (". ", ". ", ". ", ". ", "? ", ": ", ".\n\n", ".\n\n", ". ", "! ")
_SKIP_DIRS = frozenset({"test", "tests", "idle_test", "site-packages", "lib2to3"})
_IDENT_RE = re.compile(r"\b[a-z_][a-z0-9_]{3,24}\b")
_MODELS = ("claude-sonnet-4", "gpt-4.1", "claude-opus-4", "gpt-4o-mini", "o3")
_PROVIDERS = {"claude-sonnet-4": "anthropic", "claude-opus-4": "anthropic"}
_EXC = (
    ("KeyError", "'{}'"),
    ("ValueError", "invalid literal for int() with base 10: '{}'"),
    ("TypeError", "{}() missing 1 required positional argument: 'timeout'"),
    ("AttributeError", "'NoneType' object has no attribute '{}'"),
    ("FileNotFoundError", "[Errno 2] No such file or directory: 'src/{}.py'"),
    ("TimeoutError", "operation {} timed out after 30.0 s"),
    ("RuntimeError", "{}: event loop is closed"),
)


class _Corpus:
    """The two text corpora and helpers to cut realistic slices from them."""

    def __init__(self, seed: int) -> None:
        root = Path(sysconfig.get_paths()["stdlib"])
        files = []
        for path in sorted(root.rglob("*.py")):
            if _SKIP_DIRS & set(path.relative_to(root).parts):
                continue
            try:
                text = path.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError):
                continue
            if len(text) > 2000:
                files.append((path.relative_to(root).as_posix(), text))
        if not files:  # pragma: no cover - a Python without its sources
            files = [("workload.py", Path(__file__).read_text(encoding="utf-8"))]
        self.file_names = [name for name, _ in files]
        self.file_lines = [text.splitlines() for _, text in files]
        self.code = "\n".join(text for _, text in files)
        idents = sorted(set(_IDENT_RE.findall(self.code[:2_000_000])))
        rng = random.Random(seed ^ 0x5EED)
        self.idents = rng.sample(idents, min(3000, len(idents)))
        self.prose = self._make_prose(rng)

    def _make_prose(self, rng: random.Random) -> str:
        # Zipf-like: vocabulary word k has weight 1/(k+1); identifiers are rare tokens.
        words = list(_VOCAB)
        rng.shuffle(words)
        weights = [1.0 / (k + 1) for k in range(len(words))]
        cum = list(itertools.accumulate(weights))
        n_words = _PROSE_CHARS // 6
        drawn = rng.choices(words, cum_weights=cum, k=n_words)
        for pos in rng.sample(range(n_words), n_words // 25):
            drawn[pos] = f"`{rng.choice(self.idents)}`"
        parts: list[str] = []
        i = 0
        while i < n_words:
            k = rng.randint(6, 22)
            sentence = drawn[i : i + k]
            i += k
            if sentence:
                sentence[0] = sentence[0].capitalize()
                parts.append(" ".join(sentence))
                parts.append(rng.choice(_SENTENCE_END))
        return "".join(parts)

    @staticmethod
    def _slice(text: str, rng: random.Random, size: int, sep: str) -> str:
        start = rng.randrange(0, max(1, len(text) - size - 200))
        cut = text.find(sep, start)
        start = start if cut < 0 else cut + len(sep)
        return text[start : start + size]

    def prose_text(self, rng: random.Random, size: int) -> str:
        return self._slice(self.prose, rng, size, ". ").strip()

    def code_text(self, rng: random.Random, size: int) -> str:
        text = self._slice(self.code, rng, size, "\n")
        end = text.rfind("\n")
        return text[: end + 1] if end > 0 else text

    def code_lines(self, rng: random.Random, n: int) -> tuple[str, int, list[str]]:
        f = rng.randrange(len(self.file_lines))
        lines = self.file_lines[f]
        start = rng.randrange(max(1, len(lines) - n))
        return self.file_names[f], start + 1, lines[start : start + n]


@functools.lru_cache(maxsize=2)
def _corpus(seed: int) -> _Corpus:
    return _Corpus(seed)


def _hex(rng: random.Random, nbits: int = 128) -> str:
    return f"{rng.getrandbits(nbits):0{nbits // 4}x}"


def _project_path(rng: random.Random, c: _Corpus) -> str:
    pkg = rng.choice(("src/agent", "src/agent/tools", "src/server", "tests", "src/agent/llm"))
    return f"{pkg}/{rng.choice(c.idents)}.py"


def _chat_turn(rng: random.Random, c: _Corpus, run_id: str) -> dict[str, Any]:
    prompt = c.prose_text(rng, rng.randint(200, 2000))
    if rng.random() < 0.3:
        prompt += "\n\n```python\n" + c.code_text(rng, rng.randint(200, 1000)) + "```\n"
    answer = c.prose_text(rng, rng.randint(400, 4000))
    if rng.random() < 0.5:
        code = c.code_text(rng, rng.randint(200, 2000))
        answer += "\n\n```python\n" + code + "```\n\n" + c.prose_text(rng, rng.randint(80, 400))
    model = rng.choice(_MODELS)
    return {
        "model": model,
        "provider": _PROVIDERS.get(model, "openai"),
        "user_prompt": prompt,
        "assistant_final": answer,
        "latency_ms": round(rng.uniform(400, 25_000), 1),
        "input_tokens": len(prompt) // 4 + rng.randint(500, 30_000),
        "output_tokens": len(answer) // 4,
        "status": "ok",
        "run_id": run_id,
    }


def _tool_call(rng: random.Random, c: _Corpus, run_id: str) -> dict[str, Any]:
    kind = rng.random()
    if kind < 0.45:
        name, first, lines = c.code_lines(rng, rng.randint(30, 120))
        tool = "read_file"
        args: dict[str, Any] = {
            "path": f"lib/{name}",
            "start_line": first,
            "end_line": first + len(lines) - 1,
        }
        result = "\n".join(lines)
    elif kind < 0.75:
        tool = "grep"
        pattern = rng.choice(c.idents)
        args = {"pattern": pattern, "path": "src/", "max_results": 50, "case_sensitive": True}
        hits = []
        for _ in range(rng.randint(6, 40)):
            name, first, lines = c.code_lines(rng, 1)
            hits.append(f"lib/{name}:{first}:{(lines or [''])[0].strip()[:160]}")
        result = "\n".join(hits)
    else:
        tool = rng.choice(("web_search", "ask_docs", "summarise"))
        args = {"query": c.prose_text(rng, rng.randint(30, 120)), "top_k": rng.randint(3, 10)}
        result = c.prose_text(rng, rng.randint(500, 4000))
    return {
        "tool_name": tool,
        "call_id": "call_" + _hex(rng, 64),
        "args": args,
        "result": result,
        "duration_ms": round(rng.uniform(2, 4000), 2),
        "run_id": run_id,
    }


def _file_operation(rng: random.Random, c: _Corpus, run_id: str) -> dict[str, Any]:
    _, _, lines = c.code_lines(rng, rng.randint(20, 60))
    after = list(lines)
    for _ in range(rng.randint(1, 4)):
        if not after:
            break
        pos = rng.randrange(len(after))
        action = rng.random()
        indent = after[pos][: len(after[pos]) - len(after[pos].lstrip())]
        if action < 0.4:
            after[pos] = after[pos].replace(" ", "  ", 1) + f"  # {c.prose_text(rng, 40)}"
        elif action < 0.7:
            extra = [indent + line for line in c.code_text(rng, 200).splitlines()[:4]]
            after[pos:pos] = extra
        else:
            del after[pos : pos + rng.randint(1, 3)]
    path = _project_path(rng, c)
    before_text = "\n".join(lines) + "\n"
    after_text = "\n".join(after) + "\n"
    diff = list(
        difflib.unified_diff(
            before_text.splitlines(True),
            after_text.splitlines(True),
            fromfile=f"a/{path}",
            tofile=f"b/{path}",
        )
    )
    added = sum(1 for d in diff if d.startswith("+") and not d.startswith("+++"))
    removed = sum(1 for d in diff if d.startswith("-") and not d.startswith("---"))
    return {
        "path": path,
        "op": "edit",
        "op_id": "op_" + _hex(rng, 64),
        "before": before_text,
        "after": after_text,
        "diff": "".join(diff),
        "loc_added": added,
        "loc_removed": removed,
        "run_id": run_id,
    }


def _error(rng: random.Random, c: _Corpus, run_id: str) -> dict[str, Any]:
    etype, template = rng.choice(_EXC)
    message = template.format(rng.choice(c.idents))
    frames = ["Traceback (most recent call last):\n"]
    for _ in range(rng.randint(4, 16)):
        name, lineno, lines = c.code_lines(rng, 1)
        func = rng.choice(c.idents)
        code = (lines or ["pass"])[0].strip() or "pass"
        frames.append(
            f'  File "/usr/lib/python3.11/{name}", line {lineno}, in {func}\n    {code}\n'
        )
    frames.append(f"{etype}: {message}\n")
    return {
        "error_type": etype,
        "message": message,
        "stack_trace": "".join(frames),
        "context": {"tool": rng.choice(c.idents), "attempt": rng.randint(1, 3)},
        "run_id": run_id,
    }


def _response_chunk(rng: random.Random, c: _Corpus, run_id: str) -> dict[str, Any]:
    size = rng.randint(80, 1600)
    text = c.code_text(rng, size) if rng.random() < 0.25 else c.prose_text(rng, size)
    return {"run_id": run_id, "content": text, "index": rng.randint(0, 400)}


def _bash_output(rng: random.Random, c: _Corpus, run_id: str) -> dict[str, Any]:
    if rng.random() < 0.5:
        lines = []
        for _ in range(rng.randint(10, 60)):
            status = "PASSED" if rng.random() < 0.93 else rng.choice(("FAILED", "SKIPPED"))
            lines.append(
                f"tests/test_{rng.choice(c.idents)}.py::test_{rng.choice(c.idents)} {status}"
                f" [{rng.randint(0, 100):3d}%]"
            )
        lines.append(f"==== {rng.randint(10, 400)} passed in {rng.uniform(0.2, 60):.2f}s ====")
        output = "\n".join(lines) + "\n"
        exit_code = 0
    else:
        output = c.code_text(rng, rng.randint(300, 4000))
        exit_code = rng.choice((0, 0, 0, 1, 2))
    return {
        "run_id": run_id,
        "output": output,
        "stream": "stdout" if exit_code == 0 else rng.choice(("stdout", "stderr")),
        "exit_code": exit_code,
    }


def _thinking(rng: random.Random, c: _Corpus, run_id: str) -> dict[str, Any]:
    return {"run_id": run_id, "content": c.prose_text(rng, rng.randint(400, 4000))}


_MAKERS = {
    "chat_turn": _chat_turn,
    "tool_call": _tool_call,
    "file_operation": _file_operation,
    "error": _error,
    "response_chunk": _response_chunk,
    "bash_output": _bash_output,
    "thinking": _thinking,
}


def make_events(n: int, seed: int = 1234) -> list[tuple[str, dict[str, Any]]]:
    """``n`` deterministic ``(type, data)`` events; ``data["marker"] == i`` for event ``i``."""
    c = _corpus(seed)
    rng = random.Random(seed)
    types = [t for t, _ in EVENT_MIX]
    cum = list(itertools.accumulate(w for _, w in EVENT_MIX))
    runs = [_hex(rng) for _ in range(max(1, n // 200))]
    out: list[tuple[str, dict[str, Any]]] = []
    for i in range(n):
        etype = types[bisect.bisect_right(cum, rng.random() * cum[-1])]
        data = _MAKERS[etype](rng, c, runs[i * len(runs) // n])
        data["marker"] = i
        out.append((etype, data))
    return out


def _dumps(etype: str, data: dict[str, Any]) -> str:
    return json.dumps({"type": etype, "data": data}, ensure_ascii=False, separators=(",", ":"))


def mean_json_size(events: list[tuple[str, dict[str, Any]]]) -> float:
    """Mean UTF-8 size in bytes of ``{"type": ..., "data": ...}`` as compact JSON.

    The SDK's envelope (id, ts, session/user/machine ids, app, seq) adds ~250 bytes.
    """
    if not events:
        return 0.0
    return sum(len(_dumps(t, d).encode()) for t, d in events) / len(events)


def mix_summary(events: list[tuple[str, dict[str, Any]]]) -> dict[str, dict[str, float]]:
    """Per type: share of events and mean compact JSON size."""
    counts: Counter[str] = Counter()
    sizes: Counter[str] = Counter()
    for t, d in events:
        counts[t] += 1
        sizes[t] += len(_dumps(t, d).encode())
    total = len(events) or 1
    return {
        t: {"share": counts[t] / total, "mean_bytes": sizes[t] / counts[t]}
        for t, _ in EVENT_MIX
        if counts[t]
    }


if __name__ == "__main__":
    import time
    import zlib

    t0 = time.perf_counter()
    evs = make_events(20_000)
    took = time.perf_counter() - t0
    print(f"generated {len(evs)} events in {took:.2f} s; mean JSON {mean_json_size(evs):.0f} B")
    for name, s in mix_summary(evs).items():
        print(f"  {name:<15} {s['share']:6.1%}  {s['mean_bytes']:7.0f} B")
    blob = "\n".join(_dumps(t, d) for t, d in evs).encode()
    print(f"zlib-6 ratio over the stream: {len(blob) / len(zlib.compress(blob, 6)):.2f}")
