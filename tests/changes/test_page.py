"""The panel's HTML page: server-rendered diffs, forms, a strict CSP, content as text."""

from __future__ import annotations

from _changes_support import Panel

pytest_plugins = ["_changes_fixtures"]


def test_page_renders_diffs_forms_and_a_strict_csp(panel: Panel) -> None:
    """Lines carry their diff classes; file content is escaped text; each op has three
    forms with the token; the CSP forbids inline script; static files are served."""
    path = panel.root / "evil.html"
    path.write_text("<p>old</p>\n")
    op = panel.client.write_file(path, '<script>alert("x")</script>\n')
    page = panel.http.get("")
    assert page.status_code == 200
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp
    assert "unsafe-inline" not in csp
    assert "default-src 'none'" in csp
    html = page.text
    assert "<script>alert" not in html
    assert "+&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in html
    assert 'class="diff-add"' in html
    assert 'class="diff-del"' in html
    assert f'id="op-{op}"' in html
    for action in ("accept", "reject", "revert"):
        assert f'action="./{op}/{action}"' in html
    assert html.count('name="csrf_token"') == 3
    assert "<script>" not in html.replace('<script src="./static/changes.js" defer></script>', "")
    js = panel.http.get("static/changes.js")
    assert js.status_code == 200
    assert js.headers["content-type"].startswith("text/javascript")
    assert panel.http.get("static/changes.css").status_code == 200
    assert panel.http.get("static/..%2Fpanel.py").status_code == 404


def test_a_form_post_comes_back_to_the_page_with_its_outcome(panel: Panel) -> None:
    """No JS: the 303 lands on the page, which says what happened."""
    path = panel.root / "a.txt"
    path.write_text("v1\n")
    op = panel.client.write_file(path, "v2\n")
    path.write_text("v3\n")
    token = panel.http.get("").text.split('name="csrf-token" content="')[1].split('"')[0]
    response = panel.http.post(f"{op}/revert", data={"csrf_token": token}, follow_redirects=True)
    assert response.status_code == 200
    assert "Not reverted: the file changed since this operation." in response.text
    assert path.read_text() == "v3\n"
