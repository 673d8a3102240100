"""The peer benchmark's workload: ``benchmarks/workload.py``'s event mix, marker renamed.

``make_events(n)`` returns the same ``(event_type, data)`` pairs as
``benchmarks/workload.make_events(n, seed)`` (the mix ``benchmarks/emit.py`` and
``benchmarks/e2e.py`` use), except that each ``data`` carries its unique integer under
:data:`MARKER_FIELD` instead of ``"marker"``: a name no SDK uses for anything of its own,
so a receiver can find it in any wire format (JSON, protobuf attribute, envelope item).
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

__all__ = ["MARKER_FIELD", "SEED", "make_events", "raw_json_bytes"]

MARKER_FIELD = "bench_marker"
SEED = 1234

_SHARED = Path(__file__).resolve().parent.parent / "workload.py"


def _shared_workload() -> Any:
    """``benchmarks/workload.py`` (same module name as this one, so load it by path)."""
    name = "_bench_shared_workload"
    module = sys.modules.get(name)
    if module is None:
        spec = importlib.util.spec_from_file_location(name, _SHARED)
        assert spec is not None
        assert spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return module


def make_events(n: int, seed: int = SEED) -> list[tuple[str, dict[str, Any]]]:
    """``n`` deterministic events; ``data[MARKER_FIELD] == i`` for event ``i``."""
    out = []
    for etype, data in _shared_workload().make_events(n, seed):
        marker = data.pop("marker")
        data[MARKER_FIELD] = marker
        out.append((etype, data))
    return out


def raw_json_bytes(events: list[tuple[str, dict[str, Any]]]) -> float:
    """Mean bytes per event of naive NDJSON: ``json.dumps({"type", "data"})`` plus a newline.

    The reference the wire-size target is stated against: what an event weighs before any
    SDK adds its envelope or compresses it.
    """
    if not events:
        return 0.0
    total = sum(len(json.dumps({"type": t, "data": d}).encode()) + 1 for t, d in events)
    return total / len(events)
