"""Single sign-on for the pages through OpenID Connect: ``/ui/login/oidc`` sends the browser to the provider,
``/ui/auth/callback`` comes back with a code and opens a web session.

The pending sign-in (state, nonce, PKCE verifier, where to go next) waits in a short-lived HttpOnly cookie
scoped to ``/ui/auth``, so any API replica can finish it; the callback's ``state`` must equal the cookie's
(constant-time), and the cookie is dropped whatever the outcome. Roles come from the role map over the groups
claim (``policies/role_map.py``); a person in no mapped group is refused. Group memberships follow the claim
(``registry_store/external_identities.py``).
"""

from __future__ import annotations

import base64
import hmac
import json
import secrets
from dataclasses import dataclass

from fastapi import APIRouter, Request, Response
from fastapi.responses import RedirectResponse
from starlette.concurrency import run_in_threadpool

from calabi.api.deps import request_id
from calabi.api.pages.web import (
    COOKIE_PATH,
    SESSION_COOKIE,
    PageRoute,
    error_page,
    is_https,
    page_services,
    safe_next,
    see_other,
    session_store,
)
from calabi.oidc import OidcClient, OidcError
from policies.role_map import groups_in_claims, parse_role_map, roles_for_groups
from registry_store.errors import InvalidParameterError, PermissionDeniedError
from registry_store.external_identities import display_name

__all__ = ["oidc_client", "oidc_router"]

oidc_router = APIRouter(route_class=PageRoute, include_in_schema=False)
PENDING_COOKIE = "calabi_oidc"
PENDING_PATH = "/ui/auth"
PENDING_AGE_S = 600
CALLBACK_PATH = "/ui/auth/callback"
_MAX_COOKIE_CHARS = 2048


@dataclass(frozen=True)
class Pending:
    """A sign-in between the redirect to the provider and its callback."""

    state: str
    nonce: str
    verifier: str
    next: str

    def encode(self) -> str:
        """The cookie value."""
        raw = json.dumps([self.state, self.nonce, self.verifier, self.next]).encode()
        return base64.urlsafe_b64encode(raw).decode()

    @staticmethod
    def decode(value: str | None) -> Pending | None:
        """The pending sign-in in a cookie value; None when absent or unreadable."""
        if not value or len(value) > _MAX_COOKIE_CHARS:
            return None
        try:
            fields = json.loads(base64.urlsafe_b64decode(value.encode()))
        except ValueError:
            return None
        if not isinstance(fields, list) or len(fields) != 4 or not all(isinstance(f, str) and f for f in fields):
            return None
        return Pending(*fields)


def oidc_client(request: Request) -> OidcClient | None:
    """The provider's client when OpenID Connect is configured (built on first use, shared by requests)."""
    settings = page_services(request).settings
    if not settings.oidc_enabled:
        return None
    client: OidcClient | None = getattr(request.app.state, "oidc_client", None)
    if client is None:
        client = OidcClient(settings)
        request.app.state.oidc_client = client
    return client


def _callback_url(request: Request) -> str:
    return str(request.base_url).rstrip("/") + CALLBACK_PATH


def _not_configured(request: Request) -> Response:
    return error_page(request, 404, "Single sign-on is not configured here; sign in with an API token.")


@oidc_router.get("/ui/login/oidc", response_model=None)
async def start_sign_in(request: Request) -> Response:
    """Send the browser to the provider with a fresh state, nonce and PKCE verifier."""
    client = oidc_client(request)
    if client is None:
        return _not_configured(request)
    pending = Pending(state=secrets.token_urlsafe(32), nonce=secrets.token_urlsafe(32),
                      verifier=secrets.token_urlsafe(48), next=safe_next(request.query_params.get("next")))
    try:
        url = await client.authorization_url(_callback_url(request), state=pending.state, nonce=pending.nonce,
                                             verifier=pending.verifier)
    except OidcError as exc:
        return error_page(request, 503 if exc.unavailable else 502, exc.message, title="Sign-in unavailable")
    response = RedirectResponse(url, status_code=303)
    response.set_cookie(PENDING_COOKIE, pending.encode(), max_age=PENDING_AGE_S, path=PENDING_PATH, httponly=True,
                        samesite="lax", secure=is_https(request))
    return response


@oidc_router.get(CALLBACK_PATH, response_model=None)
async def finish_sign_in(request: Request) -> Response:
    """Check the state, exchange the code, verify the ID token, map the roles and open a session."""
    response = await _finish(request)
    response.delete_cookie(PENDING_COOKIE, path=PENDING_PATH)
    return response


async def _finish(request: Request) -> Response:
    client = oidc_client(request)
    if client is None:
        return _not_configured(request)
    params = request.query_params
    pending = Pending.decode(request.cookies.get(PENDING_COOKIE))
    if pending is None or not hmac.compare_digest(params.get("state", "").encode(), pending.state.encode()):
        return error_page(request, 400, "This sign-in expired or did not start here, so it was refused. "
                          "Sign in again.", title="Sign-in refused")
    if params.get("error"):
        reason = params.get("error_description") or params["error"]
        return error_page(request, 401, f"{client.provider_name} did not sign you in: {reason[:300]}",
                          title="Sign-in refused")
    code = params.get("code")
    if not code:
        return error_page(request, 400, "The identity provider sent no sign-in code.", title="Sign-in refused")
    services = page_services(request)
    settings = services.settings
    try:
        claims = await client.sign_in_claims(code=code, redirect_uri=_callback_url(request),
                                             verifier=pending.verifier, nonce=pending.nonce,
                                             groups_claim=settings.oidc_groups_claim)
        role_map, groups = parse_role_map(settings.oidc_role_map), groups_in_claims(claims, settings.oidc_groups_claim)
        actor, user_id = await run_in_threadpool(
            services.identities.sign_in, issuer=client.issuer, subject=str(claims["sub"]),
            name=display_name(claims), roles=roles_for_groups(role_map, groups), groups=groups,
            mapped_groups=tuple(role_map), request_id=request_id(request),
        )
        session_id, _ = await run_in_threadpool(session_store(request).create_for_user, actor, user_id)
    except OidcError as exc:
        return error_page(request, 503 if exc.unavailable else 401, exc.message, title="Sign-in refused")
    except (PermissionDeniedError, InvalidParameterError) as exc:
        return error_page(request, exc.http_status, exc.message, title="Sign-in refused")
    old = request.cookies.get(SESSION_COOKIE)
    if old:
        await run_in_threadpool(session_store(request).end, old)
    response = see_other(request, safe_next(pending.next),
                         flash=f"Signed in as {actor.name} through {client.provider_name}.")
    response.set_cookie(SESSION_COOKIE, session_id, max_age=session_store(request).ttl_seconds, path=COOKIE_PATH,
                        httponly=True, samesite="lax", secure=is_https(request))
    return response
