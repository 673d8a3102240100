"""The session viewer in a real browser: what a person sees.

One collector under uvicorn on 127.0.0.1 and one headless Chromium serve the module;
events are seeded through the ingest API. Each test checks the page as rendered:
sign-in, each event type's renderer and the order, paging on scroll (groups that span
pages merge), live append that keeps the reader's scroll position, hostile payloads
that stay text, and no request leaving 127.0.0.1. Screenshots for the docs are written
by these tests when TELEMETRY_SCREENSHOTS=1.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _browser import launch
from _viewer_browser import Guard, screenshot, sign_in
from _viewer_seed import BIG, Poster, envelope, hostile, story
from playwright.sync_api import expect

from telemetry_client.collector import CollectorConfig, TokenSpec, running_collector

ADMIN = TokenSpec("tok-admin-viewer-1", "admin", frozenset({"admin"}))
TIMEOUT_MS = 20_000  # a hang bound, not a performance assertion


@pytest.fixture(scope="module")
def collector(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    config = CollectorConfig(data_dir=Path(tmp_path_factory.mktemp("viewer")), principals=[ADMIN])
    with running_collector(config) as running:
        yield running


@pytest.fixture(scope="module")
def poster(collector: Any) -> Iterator[Poster]:
    p = Poster(collector.url, ADMIN.token)
    yield p
    p.close()


@pytest.fixture(scope="module")
def seeded(poster: Poster) -> dict[str, list[dict[str, Any]]]:
    note = poster.attachment(b"hello notes\nsecond line\n")
    sessions = {"s-story": story("s-story", note), "s-evil": hostile("s-evil")}
    for events in sessions.values():
        poster.events(events)
    return sessions


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    yield from launch(required=False)


@pytest.fixture(scope="module")
def signed_in(browser: Any, collector: Any, seeded: Any) -> Iterator[tuple[Any, Guard]]:
    """A browser context signed in as the admin, with the network guard."""
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    context.set_default_timeout(TIMEOUT_MS)
    guard = Guard(context)
    page = context.new_page()
    sign_in(page, collector.url, ADMIN.token)
    page.close()
    yield context, guard
    context.close()


def ids_on(page: Any) -> list[str]:
    result: list[str] = page.eval_on_selector_all(
        "#timeline [data-event-id]", "els => els.map(e => e.dataset.eventId)"
    )
    return result


def test_signed_out_pages_redirect_to_login_and_sign_in_sets_a_strict_cookie(
    browser: Any, collector: Any, seeded: Any
) -> None:
    """Signed out, a session page sends the browser to the login form; a wrong token is
    refused; the right one (typed, then Enter) lands on the page asked for with an
    HttpOnly, SameSite=Strict cookie scripts cannot read; signing out ends it."""
    context = browser.new_context()
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    page.goto(collector.url + "/ui/sessions/s-story")
    assert page.url.startswith(collector.url + "/ui/login?next=")
    page.get_by_label("Collector token").fill("not-a-token")
    page.get_by_role("button", name="Sign in").click()
    assert page.get_by_role("alert").inner_text() == (
        "That token is not accepted by this collector."
    )
    page.get_by_label("Collector token").fill(ADMIN.token)
    page.get_by_label("Collector token").press("Enter")
    page.wait_for_url(collector.url + "/ui/sessions/s-story")
    (cookie,) = context.cookies()
    assert (cookie["httpOnly"], cookie["sameSite"], cookie["path"]) == (True, "Strict", "/ui")
    assert ADMIN.token not in cookie["value"]
    assert page.evaluate("document.cookie") == ""
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url(collector.url + "/ui/login")
    page.goto(collector.url + "/ui/")
    assert page.url.startswith(collector.url + "/ui/login")
    context.close()


def test_sessions_list_shows_each_session_with_its_totals(signed_in: Any, collector: Any) -> None:
    """The list has one row per session with user, app, events, errors and LLM calls."""
    context, guard = signed_in
    page = guard.watch(context.new_page())
    page.goto(collector.url + "/ui/")
    row = page.locator('tr[data-session-id="s-story"]')
    cells = row.locator("td").all_inner_texts()
    assert cells[0] == "s-story"
    assert cells[1:3] == ["alice", "viewer-tests"]
    assert cells[5:8] == ["19", "1", "1"]
    assert page.locator('tr[data-session-id="s-evil"]').count() == 1
    screenshot(page, "viewer-sessions.png")
    page.locator("#main").get_by_role("link", name="s-story").click()
    page.wait_for_url(collector.url + "/ui/sessions/s-story")
    page.close()
    assert guard.leaks == []


def test_every_event_type_has_its_renderer_in_stored_order(
    signed_in: Any, collector: Any, seeded: Any
) -> None:
    """Each event is one element, in stored order; each type reads as a person expects."""
    context, guard = signed_in
    page = guard.watch(context.new_page())
    page.goto(collector.url + "/ui/sessions/s-story")
    screenshot(page, "viewer-timeline.png")
    assert ids_on(page) == [e["id"] for e in seeded["s-story"]]

    def ev(etype: str) -> Any:
        return page.locator(f'#timeline [data-event-type="{etype}"]')

    assert "Fix the greeting" in ev("chat_turn").inner_text()
    llm = ev("llm_call").inner_text()
    for shown in ("anthropic", "claude-sonnet-4", "200", "1.5 s", "900 in / 210 out"):
        assert shown in llm
    # tool_result inside its tool_call (same call id), bash output inside its command
    assert ev("tool_call").locator('[data-event-type="tool_result"]').count() == 1
    assert "print('hello')" in ev("tool_result").inner_text()
    assert (
        "hello, world" in ev("bash_command").locator('[data-event-type="bash_output"]').inner_text()
    )
    # file operation: coloured diff, +/- counts, its decision
    op = ev("file_operation")
    assert op.locator(".added").inner_text() == "+2"
    assert op.locator(".removed").inner_text() == "-1"
    assert op.locator(".d-add").count() == 2
    assert op.locator(".d-del").count() == 1
    added = op.locator(".d-add").first.evaluate("e => getComputedStyle(e).backgroundColor")
    removed = op.locator(".d-del").first.evaluate("e => getComputedStyle(e).backgroundColor")
    assert added != removed
    decision = op.locator('[data-event-type="change_decision"] .decision')
    assert decision.inner_text() == "accept"
    err = ev("error").inner_text()
    assert "ValueError" in err
    assert "bad greeting length" in err
    assert "Traceback" in err
    # chunks: one block, joined text
    assert page.locator("#timeline .chunks").count() == 1
    assert page.locator("#timeline .chunks").inner_text() == "I will edit app.py now."
    # thinking collapsed until opened
    assert not ev("thinking").locator("pre").is_visible()
    ev("thinking").locator("summary").click()
    assert ev("thinking").locator("pre").is_visible()
    # the run groups its events, with status and duration
    run = page.locator("#timeline section.run")
    assert run.locator(".run-status").inner_text() == "success"
    assert run.locator(".run-duration").inner_text() == "4.2 s"
    assert run.locator('[data-event-type="tool_call"]').count() == 1
    # attachment: size, link, preview on demand
    write = ev("file_write")
    write.locator("summary").click()
    assert "24 B" in write.inner_text()
    write.get_by_role("button", name="preview").click()
    expect(write.locator(".preview-text")).to_have_text("hello notes\nsecond line\n")
    # anything else: collapsible JSON
    other = ev("custom_metric")
    assert not other.locator("pre").is_visible()
    other.locator("summary").click()
    assert '"cache_hits"' in other.locator("pre").inner_text()
    page.close()
    assert guard.leaks == []


def test_hostile_payloads_render_as_inert_text(signed_in: Any, collector: Any) -> None:
    """Script tags, event handlers, javascript: URLs, remote images/styles/frames, a
    10 MB string and deeply nested JSON are shown as text: nothing runs, nothing loads,
    CSP has nothing to refuse, no request leaves 127.0.0.1."""
    context, guard = signed_in
    page = guard.watch(context.new_page())
    page.goto(collector.url + "/ui/sessions/s-evil")
    page.locator('[data-event-type="weird"] summary').click()
    page.locator('[data-event-type="deep_thing"] summary').click()
    page.get_by_text("<script>window.__pwned = 1</script>").first.wait_for()
    assert page.evaluate("window.__pwned") is None
    assert page.eval_on_selector_all("script", "s => s.map(x => x.src)") == [
        collector.url + "/ui/static/viewer.js"
    ]
    for tag in (
        "img",
        "iframe",
        "svg",
        "form[action^='https']",
        "marquee",
        "a[href^='javascript']",
    ):
        assert page.locator(f"#timeline {tag}").count() == 0, tag
    assert page.locator("link[rel=stylesheet]").count() == 1
    assert (
        '<img src=x onerror="window.__pwned=2">'
        in page.locator('[data-event-type="chat_turn"]').inner_text()
    )
    message = page.locator('[data-event-type="error"] .msg')
    assert len(message.inner_text()) == 20_000
    omitted = page.locator('[data-event-type="error"] .omitted').first.inner_text()
    assert omitted == f"… {BIG - 20_000} more characters not shown"
    assert '"n": {' in page.locator('[data-event-type="deep_thing"] pre').inner_text()
    page.locator('[data-event-type="tool_call"] code').hover()
    assert page.evaluate("window.__pwned") is None
    assert [m for m in guard.console if "Refused" in m or "Content Security" in m] == []
    assert guard.leaks == []
    page.close()


def test_paging_on_scroll_keeps_order_and_merges_groups_across_pages(
    signed_in: Any, collector: Any, poster: Poster
) -> None:
    """A 450-event session shows 200 first, then loads by page as the reader scrolls,
    in order and without repeats; a run and a block of chunks that cross a page boundary
    are one run and one block."""
    events: list[dict[str, Any]] = []
    for n in range(450):
        if n == 150:
            events.append(envelope("s-long", "started", {"toolchain": "agent"}, n))
        elif 195 <= n < 205:
            events.append(envelope("s-long", "response_chunk", {"content": f"c{n} "}, n))
        elif n == 260:
            events.append(envelope("s-long", "completed", {"status": "success"}, n))
        else:
            events.append(envelope("s-long", "chat_turn", {"user_prompt": f"prompt {n}"}, n))
    poster.events(events)
    context, guard = signed_in
    page = guard.watch(context.new_page())
    page.goto(collector.url + "/ui/sessions/s-long")
    assert len(ids_on(page)) == 200
    assert page.locator("#total").inner_text() == "450"
    while page.locator("#more").is_visible():
        before = len(ids_on(page))
        page.locator("#more").scroll_into_view_if_needed()
        expect(page.locator("#timeline [data-event-id]")).to_have_count(min(450, before + 200))
    assert ids_on(page) == [e["id"] for e in events]
    assert page.locator("#loaded").inner_text() == "450"
    assert page.locator("#timeline section.run").count() == 1
    assert page.locator("#timeline section.run .run-status").inner_text() == "success"
    chunks = page.locator("#timeline .chunks")
    assert chunks.count() == 1
    assert chunks.inner_text() == "".join(f"c{n} " for n in range(195, 205))
    page.close()
    assert guard.leaks == []


def test_live_mode_appends_new_events_without_moving_the_reader(
    signed_in: Any, collector: Any, poster: Poster
) -> None:
    """Events stored after the page opened appear without a reload, the reader's scroll
    position stays, and a marker counts the new events below; clicking it goes there."""
    first = [envelope("s-live", "chat_turn", {"user_prompt": f"turn {n}"}, n) for n in range(40)]
    poster.events(first)
    context, guard = signed_in
    page = guard.watch(context.new_page())
    page.goto(collector.url + "/ui/sessions/s-live?poll=200")
    page.locator("#live-status").get_by_text("live").wait_for()
    page.evaluate("window.scrollTo(0, 900)")
    reading = page.locator(f'[data-event-id="{first[10]["id"]}"]')
    top = reading.evaluate("e => e.getBoundingClientRect().top")
    y = page.evaluate("window.scrollY")
    late = [envelope("s-live", "chat_turn", {"user_prompt": f"late {n}"}, n) for n in range(40, 45)]
    poster.events(late)
    page.locator(f'[data-event-id="{late[-1]["id"]}"]').wait_for(state="attached")
    assert page.evaluate("window.scrollY") == y
    assert reading.evaluate("e => e.getBoundingClientRect().top") == top
    assert ids_on(page) == [e["id"] for e in first + late]
    marker = page.locator("#new-events")
    assert marker.inner_text() == "5 new events ↓"
    screenshot(page, "viewer-live.png")
    marker.click()
    assert page.locator(f'[data-event-id="{late[0]["id"]}"]').is_visible()
    expect(marker).to_be_hidden()
    page.close()
    assert guard.leaks == []


def test_dark_mode_is_readable(browser: Any, collector: Any, seeded: Any) -> None:
    """With a dark system theme the page background is dark and the text light."""
    context = browser.new_context(color_scheme="dark", viewport={"width": 1280, "height": 800})
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    sign_in(page, collector.url, ADMIN.token, "/ui/sessions/s-story")
    bg = page.evaluate("getComputedStyle(document.body).backgroundColor")
    fg = page.evaluate("getComputedStyle(document.body).color")
    assert bg == "rgb(18, 22, 27)"
    assert fg == "rgb(227, 232, 238)"
    screenshot(page, "viewer-timeline-dark.png")
    context.close()


def test_timeline_is_in_ts_order_and_live_events_land_in_place(
    signed_in: Any, collector: Any, poster: Poster
) -> None:
    """A batch of older events uploaded after newer ones shows in (ts, seq) order; live
    events committed out of ts order land at their place among the rendered ones."""

    def turn(n: int) -> dict[str, Any]:
        return envelope("s-order", "chat_turn", {"user_prompt": f"t{n}"}, n)

    newer = [turn(n) for n in range(40, 80, 2)]
    older = [turn(n) for n in range(0, 40, 2)]
    poster.events(newer)
    poster.events(older[::-1])
    context, guard = signed_in
    page = guard.watch(context.new_page())
    page.goto(collector.url + "/ui/sessions/s-order?poll=200")
    assert ids_on(page) == [e["id"] for e in older + newer]
    page.locator("#live-status").get_by_text("live").wait_for()
    late = [turn(n) for n in (81, 41, 1)]
    poster.events(late)
    page.locator(f'[data-event-id="{late[-1]["id"]}"]').wait_for(state="attached")
    page.locator(f'[data-event-id="{late[0]["id"]}"]').wait_for(state="attached")
    everything = sorted(older + newer + late, key=lambda e: e["seq"])
    assert ids_on(page) == [e["id"] for e in everything]
    assert page.locator("#loaded").inner_text() == str(len(everything))
    page.close()
    assert guard.leaks == []
