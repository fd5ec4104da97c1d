"""The web pages over plain HTTP (no browser): status codes, sign-in and sessions, CSRF, roles, escaping.

Runs against the session's live server (SQLite, no Temporal).
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.fixtures.servers import LiveServer, start_server, stop_server
from tests.integration.page_session import HTML, Browser, sign_in_form, signed_in


@dataclass(frozen=True)
class World:
    model: str
    engineer: Browser
    viewer: Browser
    approver: Browser
    anonymous: httpx.Client


@pytest.fixture(scope="module")
def world(live_server: LiveServer) -> Iterator[World]:
    model = f"pages-{secrets.token_hex(4)}"
    with live_server.client() as admin:
        admin.post("/api/v1/models", json={"name": model, "description": "<script>alert(1)</script> & co",
                                           "tags": {"owner": "<b>eve</b>"}}).raise_for_status()
        admin.post(f"/api/v1/models/{model}/versions", json={"source": str(live_server.artifact()),
                                                             "run_id": "run-1"}).raise_for_status()
    suffix = secrets.token_hex(3)
    people = {role: signed_in(live_server, live_server.create_user(f"{role}-{suffix}", role))
              for role in ("engineer", "viewer", "approver")}
    anonymous = httpx.Client(base_url=live_server.url, follow_redirects=False, timeout=30)
    yield World(model, people["engineer"], people["viewer"], people["approver"], anonymous)
    for browser in people.values():
        browser.http.close()
    anonymous.close()


def stage(server: LiveServer, model: str, version: int = 1) -> str:
    with server.client() as admin:
        return str(admin.get(f"/api/v1/models/{model}/versions/{version}").json()["current_stage"])


# ---------------------------------------------------------------------------------------------- sign-in


def test_pages_redirect_to_sign_in_without_a_session(world: World) -> None:
    for path in ("/ui/models", f"/ui/models/{world.model}", "/ui/promotions", "/ui/register"):
        response = world.anonymous.get(path, headers=HTML)
        assert response.status_code == 303, path
        assert response.headers["location"].startswith("/ui/sign-in?next=%2Fui%2F"), response.headers["location"]
    response = world.anonymous.post(f"/ui/models/{world.model}/versions/1/stage", data={"stage": "Archived"})
    assert response.status_code == 303 and response.headers["location"].startswith("/ui/sign-in")
    with httpx.Client(base_url=world.anonymous.base_url, cookies={"calabi_session": "forged"}) as forged:
        assert forged.get("/ui/models", headers=HTML).status_code == 303


def session_cookie_attributes(server: LiveServer, token: str, proto: str) -> set[str]:
    """The session cookie's attributes after signing in with ``X-Forwarded-Proto: proto``."""
    with httpx.Client(base_url=server.url, follow_redirects=False) as http:
        nonce = sign_in_form(http)
        response = http.post("/ui/sign-in", data={"sign_in_token": nonce, "token": token, "next": "/ui/promotions"},
                             headers={"x-forwarded-proto": proto})
        assert response.status_code == 303 and response.headers["location"] == "/ui/promotions"
        cookie = next(c for c in response.headers.get_list("set-cookie") if c.startswith("calabi_session="))
        return {part.strip().lower() for part in cookie.split(";")[1:]}


def test_sign_in_sets_an_http_only_session_cookie_secure_over_https(tmp_path: Path) -> None:
    proxied = start_server(tmp_path, extra_env={"CALABI_FORWARDED_ALLOW_IPS": "127.0.0.1"})  # a TLS-ending proxy
    try:
        token = proxied.create_user(f"cookie-{secrets.token_hex(3)}", "viewer")
        for proto, secure in (("http", False), ("https", True)):
            attributes = session_cookie_attributes(proxied, token, proto)
            assert {"httponly", "samesite=lax", "path=/ui"} <= attributes, attributes
            assert ("secure" in attributes) is secure, attributes
    finally:
        stop_server(proxied)


def test_a_forwarded_scheme_from_an_untrusted_peer_is_ignored(live_server: LiveServer) -> None:
    token = live_server.create_user(f"cookie-{secrets.token_hex(3)}", "viewer")

    assert "secure" not in session_cookie_attributes(live_server, token, "https")


def test_sign_in_refuses_bad_tokens_and_forms_from_elsewhere(live_server: LiveServer) -> None:
    with httpx.Client(base_url=live_server.url, follow_redirects=False) as http:
        nonce = sign_in_form(http)
        bad = http.post("/ui/sign-in", data={"sign_in_token": nonce, "token": "wrong"})
        assert bad.status_code == 401 and "not valid" in bad.text
        assert "calabi_session" not in bad.headers.get("set-cookie", "")
    with httpx.Client(base_url=live_server.url, follow_redirects=False) as http:  # no double-submit cookie
        response = http.post("/ui/sign-in", data={"sign_in_token": "x" * 43, "token": live_server.admin_token})
        assert response.status_code == 403 and "Form refused" in response.text
        assert "calabi_session" not in response.headers.get("set-cookie", "")
    with httpx.Client(base_url=live_server.url, follow_redirects=False) as http:  # cookie and field differ
        sign_in_form(http)
        response = http.post("/ui/sign-in", data={"sign_in_token": "y" * 43, "token": live_server.admin_token})
        assert response.status_code == 403


def test_sign_in_only_returns_to_local_pages(live_server: LiveServer) -> None:
    with httpx.Client(base_url=live_server.url, follow_redirects=False) as http:
        response = http.post("/ui/sign-in", data={"sign_in_token": sign_in_form(http),
                                                  "token": live_server.admin_token, "next": "https://evil.example/"})
        assert response.headers["location"] == "/ui/models"


def test_signing_out_ends_the_session(live_server: LiveServer) -> None:
    browser = signed_in(live_server, live_server.admin_token)
    cookie = browser.http.cookies["calabi_session"]
    assert browser.post("/ui/sign-out", {}, csrf=False).status_code == 403  # sign-out needs the CSRF token too
    response = browser.post("/ui/sign-out", {})
    assert response.status_code == 303 and response.headers["location"] == "/ui/sign-in"
    with httpx.Client(base_url=live_server.url, cookies={"calabi_session": cookie}) as replay:
        response = replay.get("/ui/models", headers=HTML)
        assert response.status_code == 303 and response.headers["location"].startswith("/ui/sign-in")


# ---------------------------------------------------------------------------------------------- status codes


def test_missing_models_versions_promotions_and_pages_are_404(world: World) -> None:
    for path in ("/ui/models/no-such-model", f"/ui/models/{world.model}/versions/99",
                 "/ui/models/no-such-model/versions/1", "/ui/promotions/0123456789abcdef", "/ui/no/such/page",
                 f"/ui/models/{world.model}/versions/99/stage?target=Staging",
                 f"/ui/models/{world.model}/versions/99/delete", "/ui/promotions/0123456789abcdef/status.json"):
        text = world.viewer.page(path, status=404)
        assert "Not found" in text and "Error 404" in text, path
    assert "must be an integer" in world.viewer.page(f"/ui/models/{world.model}/versions/abc", status=400)
    response = world.engineer.post("/ui/promotions/0123456789abcdef/sign-off", {"comment": "ok"})
    assert response.status_code == 404


def test_forged_posts_without_the_csrf_token_are_refused(world: World, live_server: LiveServer) -> None:
    path = f"/ui/models/{world.model}/versions/1/stage"
    for csrf in (None, "", "0" * 43):
        data = {"stage": "Archived", **({"csrf_token": csrf} if csrf is not None else {})}
        response = world.engineer.http.post(path, data=data)
        assert response.status_code == 403, response.text
        assert "security token" in response.text and response.headers["content-type"].startswith("text/html")
    assert stage(live_server, world.model) == "None"
    # Another user's token does not work either: tokens are per session.
    response = world.engineer.http.post(path, data={"stage": "Archived", "csrf_token": world.viewer.csrf})
    assert response.status_code == 403
    json_body = world.engineer.http.post(path, json={"stage": "Archived", "csrf_token": world.engineer.csrf})
    assert json_body.status_code == 415
    assert stage(live_server, world.model) == "None"


def test_forbidden_actions_show_the_role_needed(world: World, live_server: LiveServer) -> None:
    for path, data in ((f"/ui/models/{world.model}/versions/1/stage", {"stage": "Staging"}),
                       (f"/ui/models/{world.model}/description", {"description": "mine now"}),
                       (f"/ui/models/{world.model}/versions/1/delete", {}),
                       ("/ui/register", {"model": world.model, "source": "/x"})):
        response = world.viewer.post(path, data)
        assert response.status_code == 403, (path, response.text[:500])
        assert re.search(r"Role needed: <strong[^>]*>engineer</strong>", response.text), response.text
    # An engineer may not move a version into Production directly: that is an admin's break-glass.
    response = world.engineer.post(f"/ui/models/{world.model}/versions/1/stage", {"stage": "Production"})
    assert response.status_code == 403 and re.search(r"Role needed: <strong[^>]*>admin</strong>", response.text)
    assert stage(live_server, world.model) == "None"


def test_an_engineer_changes_things_through_the_forms(world: World, live_server: LiveServer) -> None:
    base = f"/ui/models/{world.model}"
    response = world.engineer.post(f"{base}/versions/1/stage", {"stage": "Staging"})
    assert response.status_code == 303 and response.headers["location"] == f"{base}/versions/1"
    assert stage(live_server, world.model) == "Staging"
    assert "Version 1 is now in Staging" in world.engineer.page(f"{base}/versions/1")
    assert world.engineer.post(f"{base}/versions/1/aliases", {"alias": "challenger"}).status_code == 303
    assert world.engineer.post(f"{base}/versions/1/tags", {"key": "validated", "value": "no"}).status_code == 303
    page = world.engineer.page(f"{base}/versions/1")
    assert "@challenger" in page and "validated" in page
    bad = world.engineer.post(f"{base}/versions/1/aliases", {"alias": "latest"})
    assert bad.status_code == 400 and "reserved" in bad.text
    assert world.engineer.post(f"{base}/versions/1/stage", {"stage": "Bogus"}).status_code == 400


def test_a_viewer_sees_no_write_buttons(world: World) -> None:
    for path in (f"/ui/models/{world.model}", f"/ui/models/{world.model}/versions/1", "/ui/models",
                 "/ui/promotions"):
        text = world.viewer.page(path)
        main = text.split('<main id="main"', 1)[1]
        assert 'method="post"' not in main, path
        for marker in ('id="stage-menu"', "Transition to", "Delete version", "Delete model", "Register a",
                       "Roll back", "Edit description", "Add or change a tag", "Set alias", "<dialog"):
            assert marker not in main, (path, marker)
    engineer = world.engineer.page(f"/ui/models/{world.model}/versions/1")
    assert 'method="post"' in engineer.split('<main id="main"', 1)[1]
    assert "Transition to Production" in engineer and "Delete version" in engineer
    # The no-JavaScript confirmation pages offer a viewer nothing to submit either.
    for path in (f"/ui/models/{world.model}/versions/1/stage?target=Archived",
                 f"/ui/models/{world.model}/versions/1/delete", f"/ui/models/{world.model}/delete"):
        assert 'method="post"' not in world.viewer.page(path).split('<main id="main"', 1)[1], path


def test_text_from_the_registry_is_escaped(world: World) -> None:
    text = world.viewer.page(f"/ui/models/{world.model}")
    assert "<script>alert(1)</script>" not in text and "&lt;script&gt;alert(1)&lt;/script&gt; &amp; co" in text
    assert "<b>eve</b>" not in text


def test_pages_send_security_headers_and_the_api_is_unchanged(world: World, live_server: LiveServer) -> None:
    response = world.viewer.http.get("/ui/models", headers=HTML)
    assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
    assert response.headers["x-frame-options"] == "DENY" and response.headers["cache-control"] == "no-store"
    root = httpx.get(f"{live_server.url}/", headers=HTML, follow_redirects=False)
    assert root.status_code == 303 and root.headers["location"] == "/ui/models"
    api_root = httpx.get(f"{live_server.url}/", headers={"accept": "application/json"})
    assert api_root.status_code == 404 and api_root.json()["error_code"] == "ENDPOINT_NOT_FOUND"
    with live_server.client() as api:
        missing = api.get("/api/v1/models/no-such-model")
        assert missing.status_code == 404 and missing.json()["error_code"] == "RESOURCE_DOES_NOT_EXIST"
    # The API does not accept the session cookie: it wants a bearer token.
    with httpx.Client(base_url=live_server.url,
                      cookies={"calabi_session": world.viewer.http.cookies["calabi_session"]}) as cookie_only:
        assert cookie_only.get("/api/v1/models").status_code == 401
    assert httpx.get(f"{live_server.url}/health").json() == {"status": "ok"}
    css = httpx.get(f"{live_server.url}/ui/static/calabi.css")
    assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")


def test_search_errors_are_shown_on_the_page(world: World) -> None:
    text = world.viewer.page("/ui/models?q=name%20LIKE", status=400)
    assert "not understood" in text
    assert world.model in world.viewer.page(f"/ui/models?q={world.model[:9]}")
    assert "No model matches" in world.viewer.page("/ui/models?q=zzz-nothing-here")
    assert "Unknown promotion status" in world.viewer.page("/ui/promotions?status=bogus", status=400)
