"""Child of test_e2e: emits N marked events, then keeps uploading until it is killed.

Usage: ``e2e_uploader.py N``. Settings come from ``TELEMETRY_*`` variables. Prints
``emitted`` once every event was handed to the client; the test SIGKILLs it mid-upload.
"""

from __future__ import annotations

import sys
import threading

from telemetry_client import TelemetryClient


def main() -> None:
    n = int(sys.argv[1])
    client = TelemetryClient().start()
    for i in range(n):
        client.emit("e2e_probe", {"marker": f"k-{i}", "pad": "x" * 200})
    print("emitted", flush=True)
    threading.Event().wait(120)  # the uploader thread works; the test kills us


if __name__ == "__main__":
    main()
