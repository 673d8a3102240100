"""Shared test helpers: clean environments (in-process and for children), a condition waiter."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

from telemetry_client import TelemetrySettings

T = TypeVar("T")


def _is_telemetry_var(name: str) -> bool:
    return name.upper().startswith("TELEMETRY_") or name.upper() == "DO_NOT_TRACK"


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Remove every TELEMETRY_* variable and DO_NOT_TRACK so only explicit settings apply."""
    for name in list(os.environ):
        if _is_telemetry_var(name):
            monkeypatch.delenv(name)


def child_env(spool_dir: Path, **variables: str) -> dict[str, str]:
    """Environment for a child process: ours minus any telemetry settings, plus these."""
    env = {k: v for k, v in os.environ.items() if not _is_telemetry_var(k)}
    env["TELEMETRY_SPOOL_DIR"] = str(spool_dir)
    env.update(variables)
    return env


@pytest.fixture
def settings_factory(tmp_path: Path, clean_env: None) -> Callable[..., TelemetrySettings]:
    """``make(**overrides)`` -> settings with ``spool_dir=tmp_path/"spool"`` and a clean env."""

    def make(**overrides: Any) -> TelemetrySettings:
        overrides.setdefault("spool_dir", tmp_path / "spool")
        return TelemetrySettings(**overrides)

    return make


def wait_until(
    predicate: Callable[[], T], timeout: float = 10.0, *, interval: float = 0.005, what: str = ""
) -> T:
    """Poll ``predicate`` until it returns something truthy (returned); fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise AssertionError(f"condition not met within {timeout} s: {what or predicate!r}")
        time.sleep(interval)
