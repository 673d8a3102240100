"""The panel in a real browser (Playwright driving Debian's Chromium, headless).

With JS: clicking Revert updates the card in place and the file is restored. Without JS:
the form posts, the 303 lands on the page, which shows the outcome. With
``TELEMETRY_SCREENSHOTS=1`` the README's screenshot is written to docs/images/changes.png.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from _browser import launch
from _changes_support import Panel
from playwright.sync_api import Browser, Locator, Page, expect

pytest_plugins = ["_changes_fixtures"]

SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "images" / "changes.png"


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    yield from launch(required=True)


def _card(page: Page, op_id: str) -> Locator:
    return page.locator(f'article.change[data-op-id="{op_id}"]')


def test_clicking_revert_restores_the_file_in_place(panel: Panel, browser: Browser) -> None:
    """JS on: Revert is a fetch; the card says ``revert`` without a reload, Accept and
    Revert are disabled, the file has its old bytes; no console errors (CSP holds)."""
    path = panel.root / "notes.md"
    path.write_text("# Notes\n- keep this line\n")
    op = panel.client.write_file(path, "# Notes\n- the agent rewrote this\n")
    page = browser.new_page()
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(panel.base)
    card = _card(page, op)
    page.evaluate("window.__marker = 'no reload'")
    card.get_by_role("button", name="Revert").click()
    expect(card.locator('[data-role="decision"]')).to_have_text("revert")
    assert page.evaluate("window.__marker") == "no reload"
    expect(card.get_by_role("button", name="Revert")).to_be_disabled()
    expect(card.get_by_role("button", name="Accept")).to_be_disabled()
    assert path.read_text() == "# Notes\n- keep this line\n"
    assert errors == []
    page.close()


def test_forms_work_without_javascript(panel: Panel, browser: Browser) -> None:
    """JS off: Accept posts the form; the page comes back saying so; a conflicting Revert
    says why and leaves the file alone."""
    path = panel.root / "a.txt"
    path.write_text("v1\n")
    op = panel.client.write_file(path, "v2\n")
    context = browser.new_context(java_script_enabled=False)
    page = context.new_page()
    page.goto(panel.base)
    _card(page, op).get_by_role("button", name="Accept").click()
    expect(page.locator("#notice")).to_contain_text("Change accepted.")
    expect(_card(page, op).locator('[data-role="decision"]')).to_have_text("accept")
    path.write_text("v3\n")
    _card(page, op).get_by_role("button", name="Revert").click()
    expect(page.locator("#notice")).to_contain_text("the file changed")
    assert path.read_text() == "v3\n"
    context.close()


@pytest.mark.skipif(os.environ.get("TELEMETRY_SCREENSHOTS") != "1", reason="TELEMETRY_SCREENSHOTS")
def test_screenshot_for_the_readme(panel: Panel, browser: Browser) -> None:
    """Writes docs/images/changes.png: an edit, a new file and an accepted change."""
    c, root = panel.client, panel.root
    (root / "retry.py").write_text(
        "def backoff(attempt):\n    return 2 ** attempt\n\n\nMAX_TRIES = 3\n"
    )
    c.write_file(root / "README.md", "# Demo\nSee retry.py.\n")
    accepted = c.write_file(
        root / "retry.py",
        "import random\n\n\ndef backoff(attempt, cap=60.0):\n"
        "    return min(cap, 2 ** attempt) * random.uniform(0.5, 1.0)\n\n\nMAX_TRIES = 5\n",
    )
    panel.decide(accepted, "accept")
    c.write_file(root / "config.toml", "[retry]\nmax_tries = 5\njitter = true\n")
    page = browser.new_page(viewport={"width": 1000, "height": 900})
    page.goto(panel.base)
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOT), full_page=True)
    assert SCREENSHOT.stat().st_size > 10_000
    page.close()
