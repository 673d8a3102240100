"""Writer of test_usage: K LLM calls through a ``TelemetryClient`` into the shared usage store.

Usage: ``usage_writer.py INDEX K GO_FILE``. Settings come from ``TELEMETRY_*`` variables.
Prints ``ready`` once its client runs, waits for ``GO_FILE`` (so every writer merges at
the same time), emits ``call(INDEX, i)`` for ``i`` in ``range(K)``, forcing a merge every
``FLUSH_EVERY`` calls (many merges contend for the store's lock), closes, and prints its
``stats()`` as one JSON line. ``call`` is also what the test computes the totals from.
"""

from __future__ import annotations

import os
import sys
import time

import orjson

from telemetry_client import TelemetryClient, events

MODELS = (("openai", "gpt-4.1"), ("anthropic", "claude-sonnet-4"), ("ollama", "llama3:8b"))
FLUSH_EVERY = 20


def call(index: int, i: int) -> events.LLMCall:
    """The ``i``-th call of writer ``index``: every tenth fails (HTTP 500)."""
    provider, model = MODELS[(index + i) % len(MODELS)]
    return events.LLMCall(
        provider=provider,
        model=model,
        status=500 if i % 10 == 9 else 200,
        request_bytes=100 + 1000 * index + i,
        response_bytes=5000 + 7 * i,
        input_tokens=10 + i % 7,
        output_tokens=20 + index,
    )


def main() -> None:
    index, k, go_file = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    client = TelemetryClient().start()
    print("ready", flush=True)
    deadline = time.monotonic() + 60
    while not os.path.exists(go_file):
        if time.monotonic() > deadline:
            sys.exit("no go signal")
        time.sleep(0.002)
    for i in range(k):
        client.emit(call(index, i))
        if i % FLUSH_EVERY == FLUSH_EVERY - 1:
            client.flush_sync(timeout=30)
    result = client.close(timeout=30)
    print(orjson.dumps({"ok": result.ok, "stats": client.stats()}).decode(), flush=True)
    sys.exit(0 if result.ok else 3)


if __name__ == "__main__":
    main()
