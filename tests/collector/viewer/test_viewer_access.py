"""Who may see the viewer, and the headers every answer carries (over plain HTTP).

A real collector under uvicorn with named tokens: signed out, pages redirect to the login
form and the script's JSON gets 401; the cookie is signed, expiring, HttpOnly,
SameSite=Strict (Secure over https) and never holds the token; an ingest-only token gets
403; a team's reader sees only its team's sessions, events and attachments; a
``--no-auth`` collector needs no sign-in. Every answer has the strict CSP.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from _viewer_seed import Poster, envelope

from telemetry_client.collector import CollectorConfig, TokenSpec, running_collector
from telemetry_client.collector._auth import TokenAuth
from telemetry_client.collector.viewer._access import COOKIE_TTL_S, CookieSigner
from telemetry_client.collector.viewer._pages import CSP

TOKENS = {
    "admin": TokenSpec("tok-admin-acc-1", "admin", frozenset({"admin"})),
    "red-in": TokenSpec("tok-red-in-acc-2", "red-in", frozenset({"ingest"}), "red"),
    "blue-in": TokenSpec("tok-blue-in-acc-3", "blue-in", frozenset({"ingest"}), "blue"),
    "red-read": TokenSpec("tok-red-read-acc-4", "red-read", frozenset({"read"}), "red"),
}

BLUE_SHA = hashlib.sha256(b"blue secret").hexdigest()


@pytest.fixture(scope="module")
def collector(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    config = CollectorConfig(
        data_dir=Path(tmp_path_factory.mktemp("access")), principals=list(TOKENS.values())
    )
    with running_collector(config) as running:
        red = Poster(running.url, TOKENS["red-in"].token)
        blue = Poster(running.url, TOKENS["blue-in"].token)
        ref = blue.attachment(b"blue secret")
        red.events([envelope("s-red", "chat_turn", {"user_prompt": "red"}, 0)])
        blue.events([envelope("s-blue", "file_write", {"path": "x", "content": ref}, 0)])
        red.close()
        blue.close()
        assert ref["$attachment"]["sha256"] == BLUE_SHA
        yield running


def browser_client(collector: Any) -> httpx.Client:
    return httpx.Client(base_url=collector.url, timeout=10, follow_redirects=False)


def login(client: httpx.Client, who: str, **headers: str) -> httpx.Response:
    return client.post(
        "/ui/login",
        data={"token": TOKENS[who].token, "next": "/ui/sessions/s-red"},
        headers=headers,
    )


def test_signed_out_pages_redirect_and_json_answers_401(collector: Any) -> None:
    """Without a cookie: pages 303 to the login form (remembering where to go back), the
    script's endpoints 401, with the CSP on each answer."""
    with browser_client(collector) as client:
        page = client.get("/ui/sessions/s-red")
        assert page.status_code == 303
        assert page.headers["location"] == "/ui/login?next=%2Fui%2Fsessions%2Fs-red"
        api = client.get("/ui/api/events", params={"session": "s-red"})
        assert api.status_code == 401
        form = client.get("/ui/login")
        assert form.status_code == 200
        assert 'type="password"' in form.text
        for response in (page, api, form):
            assert response.headers["content-security-policy"] == CSP


def test_the_cookie_is_signed_strict_http_only_and_holds_no_token(collector: Any) -> None:
    """Signing in sets one cookie with the attributes; it opens the pages; a tampered
    cookie does not; over https (a trusted proxy's header) the cookie is Secure."""
    with browser_client(collector) as client:
        response = login(client, "admin")
        assert response.status_code == 303
        assert response.headers["location"] == "/ui/sessions/s-red"
        cookie = response.headers["set-cookie"]
        for attribute in ("HttpOnly", "SameSite=strict", "Path=/ui", f"Max-Age={COOKIE_TTL_S}"):
            assert attribute in cookie
        assert "Secure" not in cookie
        assert TOKENS["admin"].token not in cookie
        assert client.get("/ui/sessions/s-red").status_code == 200
        value = client.cookies["telemetry_viewer"]
        client.cookies.set("telemetry_viewer", value[:-2] + "xx", path="/ui")
        assert client.get("/ui/").status_code == 303
    with browser_client(collector) as client:
        secure = login(client, "admin", **{"X-Forwarded-Proto": "https"})
        assert "Secure" in secure.headers["set-cookie"]


def test_cookies_expire_and_die_with_their_token() -> None:
    """A cookie is refused after its lifetime, and by a collector whose tokens changed."""
    now = [1_000_000.0]
    auth = TokenAuth([TOKENS["admin"]])
    signer = CookieSigner(auth, clock=lambda: now[0])
    value = signer.issue(auth.principals[0])
    assert signer.principal(value) == auth.principals[0]
    now[0] += COOKIE_TTL_S + 1
    assert signer.principal(value) is None
    now[0] -= COOKIE_TTL_S + 1
    other = CookieSigner(TokenAuth([TOKENS["admin"], TOKENS["red-read"]]), clock=lambda: now[0])
    assert other.principal(value) is None


def test_an_ingest_only_token_is_refused(collector: Any) -> None:
    """Ingest-only tokens cannot sign in (403) nor read with a bearer header (403)."""
    with browser_client(collector) as client:
        response = login(client, "red-in")
        assert response.status_code == 403
        assert "set-cookie" not in response.headers
        bearer = {"Authorization": f"Bearer {TOKENS['red-in'].token}"}
        assert client.get("/ui/", headers=bearer).status_code == 403
        api = client.get("/ui/api/events", params={"session": "s-red"}, headers=bearer)
        assert api.status_code == 403


def test_a_team_reader_sees_only_its_team(collector: Any) -> None:
    """Red's reader lists s-red only, gets 404 for blue's session and attachment; the
    admin sees both."""
    with browser_client(collector) as client:
        login(client, "red-read")
        listing = client.get("/ui/").text
        assert 'data-session-id="s-red"' in listing
        assert "s-blue" not in listing
        assert client.get("/ui/sessions/s-blue").status_code == 404
        assert client.get(f"/ui/attachments/{BLUE_SHA}").status_code == 404
        api = client.get("/ui/api/events", params={"session": "s-blue"}).json()
        assert api["total"] == 0
        assert api["html"] == ""
    with browser_client(collector) as client:
        login(client, "admin")
        listing = client.get("/ui/").text
        assert 'data-session-id="s-red"' in listing
        assert 'data-session-id="s-blue"' in listing
        blob = client.get(f"/ui/attachments/{BLUE_SHA}")
        assert blob.content == b"blue secret"
        assert blob.headers["content-disposition"].startswith("attachment")
        assert "sandbox" in blob.headers["content-security-policy"]


def test_login_only_sends_the_browser_to_viewer_pages(collector: Any) -> None:
    """``next`` that points off the viewer (another site, a scheme-relative URL) is
    replaced by the sessions list: no open redirect."""
    with browser_client(collector) as client:
        for target in ("https://example.org/", "//example.org/ui/", "/api/v1/events"):
            response = client.post(
                "/ui/login", data={"token": TOKENS["admin"].token, "next": target}
            )
            assert response.headers["location"] == "/ui/", target


def test_no_auth_collectors_skip_sign_in(tmp_path: Path) -> None:
    """With --no-auth the pages open directly and the login page sends back to them."""
    with running_collector(CollectorConfig(data_dir=tmp_path, allow_no_auth=True)) as running:
        poster = Poster(running.url, "unused")
        poster.events([envelope("s-open", "chat_turn", {}, 0)])
        poster.close()
        with browser_client(running) as client:
            assert client.get("/ui/").status_code == 200
            assert client.get("/ui/sessions/s-open").status_code == 200
            assert client.get("/ui/login").headers["location"] == "/ui/"


def test_static_files_and_errors_carry_the_policy(collector: Any) -> None:
    """The script and stylesheet are served from the package, with the CSP; unknown
    static names are 404."""
    with browser_client(collector) as client:
        js = client.get("/ui/static/viewer.js")
        css = client.get("/ui/static/viewer.css")
        assert js.headers["content-type"].startswith("text/javascript")
        assert "use strict" in js.text
        assert css.headers["content-type"].startswith("text/css")
        assert client.get("/ui/static/../app.py").status_code == 404
        for response in (js, css):
            assert response.headers["content-security-policy"] == CSP


def test_sessions_list_filters(collector: Any) -> None:
    """User, app, time range and "has errors" narrow the list; a bad date says so."""
    with browser_client(collector) as client:
        login(client, "admin")

        def listed(**params: str) -> list[str]:
            text = client.get("/ui/", params=params).text
            return [s for s in ("s-red", "s-blue") if f'data-session-id="{s}"' in text]

        assert listed() == ["s-red", "s-blue"]
        assert listed(user_id="alice", app="viewer-tests") == ["s-red", "s-blue"]
        assert listed(user_id="bob") == []
        assert listed(since="2026-12-01T09:00", until="2026-12-01T11:00:00") == [
            "s-red",
            "s-blue",
        ]
        assert listed(since="2026-12-02T00:00") == []
        assert listed(errors="1") == []
        bad = client.get("/ui/", params={"since": "yesterday"})
        assert bad.status_code == 200
        assert "since: not a date and time" in bad.text
