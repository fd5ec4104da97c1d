"""Single sign-on in Chromium: a real OpenID Connect provider (``oidc-provider-mock``) on 127.0.0.1, the redirect
there and back, the mapped roles and group, a personal token made on the Tokens page that the stock ``mlflow``
client uses, and its revocation, after which the client gets 401."""

from __future__ import annotations

import re
import secrets
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, expect

from tests.browser.helpers import new_context
from tests.e2e.helpers import mlflow_client, use_mlflow
from tests.fixtures.oidc import mock_provider
from tests.fixtures.servers import LiveServer, start_server, stop_server

ROLE_MAP = "ml-eng=engineer,churn-leads=approver,platform=admin"


@pytest.fixture(scope="module")
def provider() -> Iterator[str]:
    with mock_provider() as issuer:
        yield issuer


@pytest.fixture(scope="module")
def sso_server(tmp_path_factory: pytest.TempPathFactory, provider: str) -> Iterator[LiveServer]:
    """Calabi (no Temporal, no tracking: the pages and the registry are enough) signing in through ``provider``."""
    started = start_server(tmp_path_factory.mktemp("sso"), extra_env={
        "CALABI_OIDC_ISSUER": provider, "CALABI_OIDC_CLIENT_ID": "calabi-web",
        "CALABI_OIDC_CLIENT_SECRET": secrets.token_urlsafe(16), "CALABI_OIDC_PROVIDER_NAME": "Acme SSO",
        "CALABI_OIDC_ROLE_MAP": ROLE_MAP,
    })
    yield started
    stop_server(started)


def test_sign_in_through_the_provider_then_a_personal_token_works_with_mlflow_until_revoked(
    browser: Browser, provider: str, sso_server: LiveServer, screenshots: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    subject = f"olivia-{secrets.token_hex(3)}"
    claims = {"preferred_username": subject, "email": f"{subject}@example.test", "groups": ["churn-leads", "sales"]}
    httpx.put(f"{provider}/users/{subject}", json=claims, timeout=10).raise_for_status()

    context = new_context(browser, sso_server)
    page = context.new_page()
    page.goto("/ui/promotions")  # signed out: the sign-in page, coming back here afterwards
    page.get_by_role("link", name="Sign in with Acme SSO").click()
    page.wait_for_url(f"{provider}/oauth2/authorize?*")
    page.get_by_placeholder("sub").fill(subject)
    page.get_by_role("button", name="Authorize").click()
    page.wait_for_url("**/ui/promotions")
    expect(page.locator(".flash")).to_contain_text(f"Signed in as {subject} through Acme SSO")
    expect(page.locator(".nav-user .roles")).to_have_text("approver · viewer")  # churn-leads=approver
    with sqlite3.connect(f"file:{sso_server.data_dir / 'calabi.db'}?mode=ro", uri=True) as db:
        memberships = db.execute("SELECT g.name FROM groups g JOIN group_members m ON m.group_id = g.id "
                                 "JOIN users u ON u.id = m.user_id WHERE u.name = ?", (subject,)).fetchall()
    assert memberships == [("churn-leads",)]  # "sales" is a group neither the role map nor Calabi knows

    page.get_by_role("link", name="Tokens").click()
    page.get_by_label("Name").fill("laptop mlflow client")
    page.get_by_label("Expires in (days)").fill("30")
    page.get_by_role("button", name="Create token").click()
    token = page.locator("#new-token").inner_text().strip()
    assert re.fullmatch(r"\d+\.[\w-]{20,}", token)
    expect(page.locator("#tokens")).to_contain_text("laptop mlflow client")
    page.screenshot(path=str(screenshots / "tokens.png"), full_page=True)

    use_mlflow(monkeypatch, sso_server.url, token)
    client = mlflow_client(sso_server.url)
    assert client.search_registered_models() == []  # authenticated as the provider's user

    page.get_by_role("button", name="Revoke laptop mlflow client").click()
    expect(page.locator(".flash")).to_contain_text("revoked")
    expect(page.locator("#tokens")).to_contain_text("revoked")
    with pytest.raises(Exception, match="401|UNAUTHENTICATED|revoked") as refused:
        client.search_registered_models()
    assert "revoked" in str(refused.value)
    context.close()
