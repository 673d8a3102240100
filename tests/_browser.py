"""Debian's Chromium under Playwright, as every browser test and benchmarks/viewer.py run it.

Headless, no sandbox (containers), no GPU, no QUIC and none of Chromium's background
traffic (updates, sync), so the only requests are the ones the page makes. ``playwright
install`` cannot download browsers here: CI installs the ``chromium`` package.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = ["CHROMIUM", "LAUNCH", "launch"]

CHROMIUM = "/usr/bin/chromium"
LAUNCH: dict[str, Any] = {  # keyword arguments of playwright's chromium.launch()
    "executable_path": CHROMIUM,
    "headless": True,
    "args": [
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
    ],
}


def launch(*, required: bool) -> Iterator[Any]:
    """A headless Chromium for a test module's fixture. Without Chromium or Playwright the
    module is skipped, or fails when ``required`` (where CI must have run it)."""
    import pytest  # here: benchmarks/viewer.py imports LAUNCH without pytest

    if not Path(CHROMIUM).exists():
        message = f"{CHROMIUM} not found: apt-get install -y chromium (Debian's package)"
        if required:
            pytest.fail(message)
        pytest.skip(message)
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(**LAUNCH)
        try:
            yield browser
        finally:
            browser.close()
