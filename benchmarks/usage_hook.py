"""Cost of the cross-process usage stats on the emit path and in the background merge.

Run: ``python benchmarks/usage_hook.py``. Prints microseconds per ``UsageRecorder.add`` (the
hook ``emit()`` runs for every ``llm_call``) beside a baseline measured in the same run (one
``list.append`` of a tuple, the least such a hook can do), and milliseconds for one merge into a
store already holding ``usage.MAX_CALLS`` entries, beside a merge into an empty store.

These figures used to be wall-clock assertions in tests/usage/test_usage.py; on a busy shared
machine they failed for reasons unrelated to the code, so they live here and are read, not
asserted.
"""

from __future__ import annotations

import tempfile
import threading
import timeit
from pathlib import Path

from telemetry_client import events, usage
from telemetry_client._internal.log import RateLimitedLogger
from telemetry_client.usage.recorder import UsageRecorder
from telemetry_client.usage.store import UsageRecord, UsageStore

NOW = 1_763_719_200.0
ADDS = 20_000


def _llm_call() -> events.LLMCall:
    return events.LLMCall(
        provider="openai",
        model="gpt-4.1",
        status=200,
        request_bytes=1000,
        response_bytes=3000,
        input_tokens=10,
        output_tokens=20,
    )


def _rec(ts: float) -> UsageRecord:
    return UsageRecord(ts, "openai", "gpt-4.1", bytes_up=1, bytes_down=2, input_tokens=3)


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        recorder = UsageRecorder(UsageStore(root / "hook"), RateLimitedLogger())
        recorder._thread = threading.Thread(target=print)  # never started: the hot path only
        ev = _llm_call()
        sink: list[tuple[float, str]] = []

        def add_n() -> None:
            for _ in range(ADDS):
                recorder.add(ev)
            recorder.pending.clear()

        def append_n() -> None:
            for _ in range(ADDS):
                sink.append((NOW, "openai"))
            sink.clear()

        hook = min(timeit.repeat(add_n, number=1, repeat=7)) / ADDS * 1e6
        base = min(timeit.repeat(append_n, number=1, repeat=7)) / ADDS * 1e6
        print(f"UsageRecorder.add  {hook:7.2f} us/call")
        print(f"baseline append    {base:7.2f} us/call   ratio {hook / base:5.1f}x")

        full = UsageStore(root / "full")
        full.merge([_rec(NOW - 80_000 + i * 8) for i in range(usage.MAX_CALLS)], now=NOW)
        empty = UsageStore(root / "empty")
        t_full = min(timeit.repeat(lambda: full.merge([_rec(NOW)], now=NOW), number=1, repeat=7))
        t_empty = min(timeit.repeat(lambda: empty.merge([_rec(NOW)], now=NOW), number=1, repeat=7))
        print(f"merge, full store  {t_full * 1e3:7.2f} ms   ({usage.MAX_CALLS} entries)")
        print(f"merge, empty store {t_empty * 1e3:7.2f} ms   ratio {t_full / t_empty:5.1f}x")


if __name__ == "__main__":
    main()
