"""Registry of the peer benchmark's adapters: one small module per SDK.

Each module exposes ``make(endpoint_base, mode, marker_field) -> Adapter`` (see
:class:`Adapter`); ``mode`` is one of :data:`MODES`, and a module may raise
``NotImplementedError`` for a mode that makes no sense for its SDK (no compression
option, say). ``endpoint_base`` is ``http://127.0.0.1:<port>/<run-id>``: the adapter
points its SDK there, plus whatever path the SDK appends.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType
from typing import Any, Protocol

__all__ = ["ADAPTERS", "MODES", "PEERS", "SINGLE_CONFIG", "Adapter", "available", "load"]

#: name -> module (importable with ``benchmarks/peers`` on ``sys.path``).
ADAPTERS: dict[str, str] = {
    "baseline": "adapters.baseline",
    "telemetry_client": "adapters.telemetry_client",
    "otlp": "adapters.otlp",  # telemetry_client exporting OTLP (docs/otlp.md)
    "posthog": "adapters.posthog",
    "segment": "adapters.segment",
    "otel": "adapters.otel",
    "sentry": "adapters.sentry",
}

#: What a user gets; the queue raised so nothing is dropped; the same plus compression.
MODES = ("defaults", "nodrop", "nodrop_compressed")

#: The SDKs users would otherwise pick (the targets compare telemetry-client to these).
PEERS = ("posthog", "segment", "otel", "sentry")

#: Adapters whose three modes are one configuration (never drops, always compresses):
#: run once, as ``defaults``, and reported under every mode.
SINGLE_CONFIG = frozenset({"baseline", "telemetry_client", "otlp"})


class Adapter(Protocol):
    name: str
    version: str
    notes: str

    def emit(self, event_type: str, data: dict[str, Any]) -> None:
        """The call measured for emit latency (``data`` already carries the marker)."""

    def finish(self, timeout: float) -> None:
        """Flush everything and shut down."""


def available() -> list[str]:
    """Registered adapters whose module file exists."""
    here = Path(__file__).resolve().parent
    return [name for name, mod in ADAPTERS.items() if (here / f"{mod.split('.')[-1]}.py").exists()]


def load(name: str) -> ModuleType:
    """The adapter module of ``name`` (``KeyError`` if unregistered)."""
    return importlib.import_module(ADAPTERS[name])
