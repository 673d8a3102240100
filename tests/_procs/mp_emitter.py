"""Emitter of test_multiprocess: N events with markers ``<index>-<i>`` into the shared spool.

Usage: ``mp_emitter.py INDEX N GO_FILE``. Settings come from ``TELEMETRY_*`` variables.
Prints ``ready`` once its client runs, waits for ``GO_FILE`` (so every emitter writes at
the same time), emits, closes, and prints its ``stats()`` as one JSON line.
"""

from __future__ import annotations

import os
import sys
import time

import orjson

from telemetry_client import TelemetryClient


def main() -> None:
    index, n, go_file = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    client = TelemetryClient().start()
    print("ready", flush=True)
    deadline = time.monotonic() + 60
    while not os.path.exists(go_file):
        if time.monotonic() > deadline:
            sys.exit("no go signal")
        time.sleep(0.005)
    pid = os.getpid()
    for i in range(n):
        client.emit("mp_probe", {"marker": f"{index}-{i}", "pid": pid})
        if i % 100 == 99:
            time.sleep(0.001)  # spread the load so writers and readers interleave
    result = client.close(timeout=60)
    print(orjson.dumps({"ok": result.ok, "stats": client.stats()}).decode(), flush=True)
    sys.exit(0 if result.ok else 3)


if __name__ == "__main__":
    main()
