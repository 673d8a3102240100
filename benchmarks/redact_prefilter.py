"""Cost of the redaction prefilter vs. the work it avoids, on one ~2.5 KB code+prose event.

Run: ``python benchmarks/redact_prefilter.py``. Prints microseconds per call of
``Redactor.maybe_secret`` (the writer's per-event cost) side by side for the ahocorasick_rs
automaton and the regex-gate fallback (used when ahocorasick_rs cannot be imported), on one
event and as a mean over the benchmarks/workload.py mix; then the same needles as plain ``in``
checks, ``Redactor.redact``, and naive full-regex searches over the serialized event.
"""

from __future__ import annotations

import inspect
import json.decoder
import re
import sys
import timeit
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import orjson
from workload import make_events

from telemetry_client.encode import redact as _redact
from telemetry_client.encode.redact import Redactor

PROSE = (
    "The user asked why the retry loop never backs off. Looking at the decoder, the scanner "
    "is rebuilt on every call, which explains the latency spike in the flame graph. I will "
    "cache it on the instance, add a regression test, and rerun the suite before the commit. "
)
MIX_EVENTS = 3000


def payload(secret: str = "") -> dict[str, object]:
    """A tool-call event: a source file slice, chat prose, ids and a usage block."""
    source = inspect.getsource(json.decoder)[2000:3400]
    return {
        "tool": "write_file",
        "args": {"path": "src/app/decoder.py", "content": source + secret},
        "messages": [
            {"role": "user", "content": PROSE},
            {"role": "assistant", "content": PROSE[:300]},
        ],
        "run_id": "4f9c2a1e-8b7d-4c3a-9e2f-1a2b3c4d5e6f",
        "digest": "9f86d081884c7d659a2feaeb86ea4d2c6f1e4a1d9f0b7e2a3c5d6e7f8a9b0c1d",
        "usage": {"prompt_tokens": 1834, "completion_tokens": 412, "total_tokens": 2246},
        "model": "gpt-4o-mini",
    }


def us_per_call(fn: Callable[[], object], number: int) -> float:
    """Best of 7 runs of ``number`` calls (after one warm-up run), in microseconds per call."""
    fn()
    return min(timeit.repeat(fn, number=number, repeat=7)) / number * 1e6


def unique_groups(i: int, src: str) -> str:
    """``src`` with its group names suffixed by ``i`` so rules can share one alternation."""
    return re.sub(r"(\(\?P<|\(\?\()(\w+)", lambda m: f"{m[1]}{m[2]}{i}", src)


@contextmanager
def without_ahocorasick() -> Iterator[None]:
    """Make ``import ahocorasick_rs`` fail, so Redactors built inside use the regex gates."""
    saved = sys.modules.get("ahocorasick_rs")
    sys.modules["ahocorasick_rs"] = None  # type: ignore[assignment]
    try:
        yield
    finally:
        if saved is None:
            del sys.modules["ahocorasick_rs"]
        else:
            sys.modules["ahocorasick_rs"] = saved


def mix_us(r: Redactor, bodies: list[bytes]) -> float:
    """Mean microseconds of ``maybe_secret`` per event over ``bodies`` (best of 5 passes)."""

    def run() -> None:
        for body in bodies:
            r.maybe_secret(body)

    return us_per_call(run, 1) / len(bodies)


def main() -> None:
    """Print the timings."""
    r = Redactor()
    with without_ahocorasick():
        fallback = Redactor()
    assert r._scan is not None, "ahocorasick_rs is not importable"
    assert fallback._scan is None
    clean = payload()
    dirty = payload("\nOPENAI_API_KEY=sk-proj-" + "aB3dE5fG7h" * 4 + "\n")
    raw, raw_dirty = orjson.dumps(clean), orjson.dumps(dirty)
    text = raw.decode()
    needles = [n.encode() for group in _redact._NEEDLES.values() for n in group]
    rules = [re.compile(src, re.ASCII | re.IGNORECASE * ci) for _, _, ci, src in _redact._RULES]
    sources = [unique_groups(i, rule[3]) for i, rule in enumerate(_redact._RULES)]
    alternation = re.compile("|".join(sources), re.ASCII | re.IGNORECASE)
    for impl in (r, fallback):
        assert not impl.maybe_secret(raw)
        assert impl.maybe_secret(raw_dirty)
    bodies = [orjson.dumps({"type": t, "data": d}) for t, d in make_events(MIX_EVENTS)]
    flags = [r.maybe_secret(body) for body in bodies]
    assert flags == [fallback.maybe_secret(body) for body in bodies], "implementations disagree"

    def naive_in() -> bool:
        low = raw.lower()
        return any(n in low for n in needles)

    mean = sum(map(len, bodies)) / len(bodies)
    print(f"event: {len(raw)} bytes serialized; {len(needles)} needles")
    print(f"mix: {len(bodies)} events of benchmarks/workload.py, mean {mean:.0f} bytes,")
    print(f"     {sum(flags) / len(flags):.1%} flagged, same events flagged by both")
    print(f"{'maybe_secret':<34}{'automaton':>12}{'regex gates':>14}")
    side_by_side: list[tuple[str, Callable[[Redactor], float]]] = [
        ("clean event", lambda x: us_per_call(lambda: x.maybe_secret(raw), 20000)),
        ("event with a key", lambda x: us_per_call(lambda: x.maybe_secret(raw_dirty), 20000)),
        ("mean over the mix", lambda x: mix_us(x, bodies)),
    ]
    for label, measure in side_by_side:
        print(f"  {label:<32}{measure(r):9.2f} us{measure(fallback):11.2f} us")
    rows: list[tuple[str, Callable[[], object], int]] = [
        ("same needles as `in` checks", naive_in, 20000),
        ("redact, clean event", lambda: r.redact(clean), 5000),
        ("redact, event with a key", lambda: r.redact(dirty), 5000),
        ("naive: each rule .search(event)", lambda: [p.search(text) for p in rules], 500),
        ("naive: one alternation .search", lambda: alternation.search(text), 100),
    ]
    for label, fn, number in rows:
        print(f"{label:<34}{us_per_call(fn, number):9.2f} us")


if __name__ == "__main__":
    main()
