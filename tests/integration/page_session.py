"""A signed-in web session over plain HTTP: an httpx client that signs in like a browser does."""

from __future__ import annotations

import html
import re
from dataclasses import dataclass

import httpx

from tests.fixtures.servers import LiveServer

HTML = {"accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}


@dataclass
class Browser:
    """An httpx client that keeps cookies like a browser, signed in through the sign-in form."""

    http: httpx.Client
    csrf: str = ""

    def page(self, path: str, status: int = 200) -> str:
        """The HTML of ``path``, which must answer ``status``."""
        response = self.http.get(path, headers=HTML)
        assert response.status_code == status, f"GET {path}: {response.status_code} {response.text[:2000]}"
        assert response.headers["content-type"].startswith("text/html")
        return response.text

    def text(self, path: str, status: int = 200) -> str:
        """:meth:`page` with HTML entities unescaped, for comparing with plain text."""
        return html.unescape(self.page(path, status))

    def post(self, path: str, data: dict[str, str], *, csrf: bool = True) -> httpx.Response:
        """Post a form, with the page's CSRF token unless ``csrf`` is false."""
        return self.http.post(path, data={**data, **({"csrf_token": self.csrf} if csrf else {})}, headers=HTML)


def sign_in_form(http: httpx.Client) -> str:
    """The sign-in form's double-submit token."""
    response = http.get("/ui/sign-in")
    assert response.status_code == 200
    match = re.search(r'name="sign_in_token" value="([^"]+)"', response.text)
    assert match
    return match.group(1)


def signed_in(server: LiveServer, token: str) -> Browser:
    """Sign in with ``token`` the way a browser does (double-submit token, then the session cookie)."""
    http = httpx.Client(base_url=server.url, follow_redirects=False, timeout=60)
    response = http.post("/ui/sign-in", data={"sign_in_token": sign_in_form(http), "token": token,
                                              "next": "/ui/models"})
    assert response.status_code == 303, response.text
    browser = Browser(http)
    match = re.search(r'name="csrf_token" value="([^"]+)"', browser.page("/ui/models"))
    assert match
    browser.csrf = match.group(1)
    return browser
