"""Child of test_crash: emits until killed, reporting ``<marker> <emit wall time>`` per event.

Usage: ``crash_emitter.py PAD_BYTES BURST``. Settings come from ``TELEMETRY_*`` variables.
Each event carries ``data.marker`` (1, 2, 3, ...) and ``PAD_BYTES`` random bytes as hex, so
big pads make big, slow-to-write batches. After each event the marker and the wall-clock
time *after* ``emit()`` returned go to stdout; the pipe is flushed every ``BURST`` events
(at most a millisecond of lines can be lost with the process, and those are the newest).
"""

from __future__ import annotations

import os
import sys
import time

from telemetry_client import TelemetryClient


def main() -> None:
    pad_bytes, burst = int(sys.argv[1]), int(sys.argv[2])
    client = TelemetryClient().start()
    out = sys.stdout
    pid = os.getpid()
    marker = 0
    while True:
        for _ in range(burst):
            marker += 1
            pad = os.urandom(pad_bytes).hex()
            client.emit("crash_probe", {"marker": marker, "pid": pid, "pad": pad})
            out.write(f"{marker} {time.time():.6f}\n")
        out.flush()
        time.sleep(0.001)  # ~BURST events per millisecond at most: a steady, realistic load


if __name__ == "__main__":
    main()
