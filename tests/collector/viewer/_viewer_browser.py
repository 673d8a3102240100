"""Browser plumbing for the viewer's tests: a guard that records every request leaving
127.0.0.1, and sign-in through the login form.

How Chromium is started: tests/_browser.py.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

__all__ = ["Guard", "screenshot", "sign_in"]

IMAGES = Path(__file__).resolve().parents[3] / "docs" / "images"


class Guard:
    """Every request of a browser context: those to another host than 127.0.0.1 are
    aborted and recorded; console messages are kept (CSP reports its refusals there)."""

    def __init__(self, context: Any) -> None:
        self.leaks: list[str] = []
        self.console: list[str] = []
        context.route("**/*", self._route)
        context.on("console", lambda msg: self.console.append(msg.text))

    def _route(self, route: Any) -> None:
        url = route.request.url
        if urlsplit(url).hostname == "127.0.0.1":
            route.continue_()
        else:
            self.leaks.append(url)
            route.abort()

    def watch(self, page: Any) -> Any:
        page.on("console", lambda msg: self.console.append(msg.text))
        return page


def sign_in(page: Any, base: str, token: str, path: str = "/ui/") -> None:
    """Open ``path``, get sent to the login form, sign in with ``token``, land on ``path``."""
    page.goto(base + path)
    page.get_by_label("Collector token").fill(token)
    page.get_by_label("Collector token").press("Enter")
    page.wait_for_url(base + path)


def screenshot(page: Any, name: str) -> None:
    """Save a screenshot to docs/images/ when TELEMETRY_SCREENSHOTS=1 (CI leaves the tree
    alone)."""
    if os.environ.get("TELEMETRY_SCREENSHOTS") == "1":
        IMAGES.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(IMAGES / name), full_page=False)
