"""Reader of test_multiprocess: claims, records and acks batches until the spool is drained.

Usage: ``mp_reader.py SPOOL_DIR DONE_FILE RESULT_FILE SEED``. Once ``DONE_FILE`` exists
(every emitter has closed, so every batch is sealed) a ``claim()`` that finds nothing
means the spool is drained. About one claim in ten is given back with ``release()`` (a
failed upload) and must be delivered later, by either reader. Writes what it acked to
``RESULT_FILE`` as JSON: ``{"batches": [[batch_id, [marker, ...]], ...], "released": k}``.
"""

from __future__ import annotations

import os
import random
import sys
import time
from pathlib import Path

import orjson

from telemetry_client import Spool


def main() -> None:
    root, done_file, result_file, seed = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    rng = random.Random(seed)
    spool = Spool(Path(root), max_bytes=int(os.environ["TELEMETRY_SPOOL_MAX_BYTES"]))
    spool.open()  # concurrently with live writers: recover() must leave their tmp files alone
    acked: list[tuple[str, list[str]]] = []
    released = 0
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        done = os.path.exists(done_file)  # read before claiming: see the module docstring
        claim = spool.claim()
        if claim is None:
            if done:
                break
            time.sleep(0.002)  # nothing sealed yet: poll again
            continue
        if rng.random() < 0.1:
            spool.release(claim)
            released += 1
            continue
        markers = [orjson.loads(line)["data"]["marker"] for line in claim.lines()]
        if len(markers) != claim.n_events:
            sys.exit(f"batch {claim.batch_id}: {len(markers)} events, name says {claim.n_events}")
        acked.append((claim.batch_id, markers))
        spool.ack(claim)
    else:
        sys.exit("reader deadline passed before the spool was drained")
    Path(result_file).write_bytes(orjson.dumps({"batches": acked, "released": released}))


if __name__ == "__main__":
    main()
