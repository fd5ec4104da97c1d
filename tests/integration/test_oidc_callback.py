"""The single sign-on callback refuses what it must (a forged, unsigned, expired or misaddressed ID token, a wrong
nonce or issuer, a state that is not the browser's, a person in no mapped group) with a 4xx page, never a 500,
and signs in a valid one: the app in process, a provider on 127.0.0.1 answering the ID token each case sets."""

from __future__ import annotations

import secrets
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from joserfc.jwk import RSAKey
from pydantic import SecretStr

from calabi.api.app import create_app
from calabi.bootstrap import Services, build_services, prepare
from calabi.settings import Settings
from tests.fixtures.oidc import HostileProvider, hostile_provider, unsigned

HTML = {"accept": "text/html"}
CLIENT_ID = "calabi-web"


@dataclass
class Site:
    services: Services
    provider: HostileProvider
    transport: httpx.ASGITransport

    def browser(self) -> httpx.AsyncClient:
        """A fresh cookie jar, as a new browser."""
        return httpx.AsyncClient(transport=self.transport, base_url="http://testserver", headers=HTML)


@pytest.fixture(scope="module")
async def site(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Site]:
    with hostile_provider() as provider:
        tmp = tmp_path_factory.mktemp("oidc")
        settings = Settings(data_dir=tmp / "data", database_url=f"sqlite:///{tmp / 'registry.db'}",
                            admin_token=SecretStr(secrets.token_urlsafe(16)), oidc_issuer=provider.issuer,
                            oidc_client_id=CLIENT_ID, oidc_client_secret=SecretStr("s3cret"),
                            oidc_role_map="ml-eng=engineer")
        prepare(settings)
        services = build_services(settings)
        yield Site(services, provider, httpx.ASGITransport(app=create_app(services)))
        services.close()


async def start(browser: httpx.AsyncClient) -> dict[str, str]:
    """Begin a sign-in; the authorization request's parameters."""
    response = await browser.get("/ui/login/oidc", params={"next": "/ui/tokens"})
    assert response.status_code == 303, response.text
    return {k: v[0] for k, v in parse_qs(urlsplit(response.headers["location"]).query).items()}


def claims(site: Site, expected_nonce: str, /, **changes: Any) -> dict[str, Any]:
    now = int(time.time())
    base = {"iss": site.provider.issuer, "sub": "p-1", "aud": CLIENT_ID, "exp": now + 300, "iat": now,
            "nonce": expected_nonce, "preferred_username": "admin", "groups": ["ml-eng"]}
    return {k: v for k, v in {**base, **changes}.items() if v is not None}


def user_count(site: Site) -> int:
    with site.services.db.engine.connect() as connection:
        return int(connection.exec_driver_sql("SELECT count(*) FROM users").scalar_one())


REFUSED: list[tuple[str, int, Callable[[Site, str], str]]] = [
    ("unsigned", 401, lambda s, n: unsigned(claims(s, n))),
    ("forged", 401, lambda s, n: s.provider.sign(claims(s, n), RSAKey.generate_key(2048, parameters={"kid": "k1"}))),
    ("wrong audience", 401, lambda s, n: s.provider.sign(claims(s, n, aud="another-app"))),
    ("several audiences, another party", 401,
     lambda s, n: s.provider.sign(claims(s, n, aud=[CLIENT_ID, "x"], azp="x"))),
    ("wrong nonce", 401, lambda s, n: s.provider.sign(claims(s, "replayed"))),
    ("no nonce", 401, lambda s, n: s.provider.sign(claims(s, n, nonce=None))),
    ("wrong issuer", 401, lambda s, n: s.provider.sign(claims(s, n, iss="https://evil.example"))),
    ("expired", 401, lambda s, n: s.provider.sign(claims(s, n, exp=int(time.time()) - 3600))),
    ("not a JWT", 401, lambda s, n: "not-a-jwt"),
    ("no mapped group", 403, lambda s, n: s.provider.sign(claims(s, n, groups=["marketing"]))),
]


async def test_the_callback_refuses_bad_id_tokens_and_foreign_states_then_signs_in_a_good_one(site: Site) -> None:
    users_before = user_count(site)
    async with site.browser() as browser:
        params = await start(browser)
        assert params["code_challenge_method"] == "S256" and len(params["code_challenge"]) == 43
        assert params["client_id"] == CLIENT_ID and params["redirect_uri"] == "http://testserver/ui/auth/callback"
        assert "openid" in params["scope"].split() and params["nonce"] and params["state"]
        site.provider.id_token = site.provider.sign(claims(site, params["nonce"]))
        wrong_state = await browser.get("/ui/auth/callback", params={"code": "c", "state": params["state"] + "x"})
        assert wrong_state.status_code == 400 and "Sign-in refused" in wrong_state.text
        replayed = await browser.get("/ui/auth/callback", params={"code": "c", "state": params["state"]})
        assert replayed.status_code == 400  # the pending sign-in was used up by the refused attempt

    async with site.browser() as stranger:  # a callback this browser never started
        response = await stranger.get("/ui/auth/callback", params={"code": "c", "state": params["state"]})
        assert response.status_code == 400 and "calabi_session" not in response.cookies

    outcomes = {}
    for case, _status, make in REFUSED:
        async with site.browser() as browser:
            params = await start(browser)
            site.provider.id_token = make(site, params["nonce"])
            response = await browser.get("/ui/auth/callback", params={"code": "c", "state": params["state"]})
            outcomes[case] = response.status_code
            assert "calabi_session" not in response.cookies, case
    assert outcomes == {case: status for case, status, _ in REFUSED}
    async with site.browser() as browser:
        params = await start(browser)
        response = await browser.get("/ui/auth/callback", params={"error": "access_denied", "state": params["state"]})
        assert response.status_code == 401 and "did not sign you in: access_denied" in response.text
    assert user_count(site) == users_before

    async with site.browser() as browser:
        params = await start(browser)
        site.provider.id_token = site.provider.sign(claims(site, params["nonce"]))
        response = await browser.get("/ui/auth/callback", params={"code": "c", "state": params["state"]})
        assert response.status_code == 303 and response.headers["location"] == "/ui/tokens"
        page = await browser.get("/ui/tokens")
        assert page.status_code == 200 and "admin-2" in page.text and "engineer" in page.text
