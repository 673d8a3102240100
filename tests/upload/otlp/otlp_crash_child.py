"""Child of the crash test: emits a few events and flushes until it is killed.

Settings come from ``TELEMETRY_*`` variables (both endpoints). Prints ``emitted`` once the
events are handed to the client; the flush then blocks on the OTLP receiver, which hangs
the request, and the test kills this process with SIGKILL meanwhile.
"""

from __future__ import annotations

import sys

from telemetry_client import TelemetryClient


def main() -> None:
    client = TelemetryClient().start()
    for i in range(3):
        client.emit("crash_probe", {"i": i})
    print("emitted", flush=True)
    client.flush_sync(timeout=120)
    sys.exit(3)  # never reached: the test kills us while OTLP hangs


if __name__ == "__main__":
    main()
