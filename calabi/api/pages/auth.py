"""Sign-in with a bearer token (single sign-on: ``oidc.py``), sign-out, the root redirect and the catch-all 404 page."""

from __future__ import annotations

import hmac
import secrets

from fastapi import APIRouter, Request, Response
from fastapi.responses import RedirectResponse
from starlette.concurrency import run_in_threadpool

from calabi.api.deps import client_address
from calabi.api.errors import error_response
from calabi.api.pages.oidc import oidc_client
from calabi.api.pages.web import (
    COOKIE_PATH,
    SESSION_COOKIE,
    SIGN_IN_COOKIE,
    PageRoute,
    PostedForm,
    SignedIn,
    error_page,
    is_https,
    page_services,
    read_form,
    render,
    safe_next,
    see_other,
    session_store,
)
from registry_store.errors import RateLimitedError, UnauthenticatedError

__all__ = ["auth_router", "prefers_html"]

auth_router = APIRouter(route_class=PageRoute, include_in_schema=False)
SIGN_IN_COOKIE_AGE_S = 3600


def prefers_html(accept: str) -> bool:
    """Whether an Accept header ranks text/html above JSON (a browser, not an API client)."""
    best_html, best_json = 0.0, 0.0
    for part in accept.split(","):
        media, _, params = part.strip().partition(";")
        quality = 1.0
        for param in params.split(";"):
            key, _, value = param.strip().partition("=")
            if key == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        media = media.strip().lower()
        if media in ("text/html", "application/xhtml+xml"):
            best_html = max(best_html, quality)
        elif media in ("application/json", "*/*"):
            best_json = max(best_json, quality * (0.99 if media == "*/*" else 1.0))
    return best_html > 0 and best_html >= best_json


@auth_router.get("/", response_model=None)
def root(request: Request) -> Response:
    """Browsers go to the models list; API clients keep the JSON 404 they always got."""
    if prefers_html(request.headers.get("accept", "")):
        return RedirectResponse("/ui/models", status_code=303)
    return error_response(404, "ENDPOINT_NOT_FOUND", "Not Found")


@auth_router.get("/ui", response_model=None)
@auth_router.get("/ui/", response_model=None)
def ui_root() -> Response:
    """The pages start at the models list."""
    return RedirectResponse("/ui/models", status_code=303)


def _sign_in_page(request: Request, *, status: int = 200, message: str = "") -> Response:
    """The sign-in form with a fresh double-submit token (cookie + hidden field)."""
    nonce = secrets.token_urlsafe(32)
    client = oidc_client(request)
    response = render(
        request, "sign_in.html", status=status, sign_in_token=nonce, message=message,
        next=safe_next(request.query_params.get("next")), oidc_provider=client.provider_name if client else None,
    )
    response.set_cookie(SIGN_IN_COOKIE, nonce, max_age=SIGN_IN_COOKIE_AGE_S, path="/ui/sign-in", httponly=True,
                        samesite="strict", secure=is_https(request))
    return response


@auth_router.get("/ui/sign-in", response_model=None)
def sign_in_form(request: Request) -> Response:
    """The token sign-in page."""
    return _sign_in_page(request)


@auth_router.post("/ui/sign-in", response_model=None)
async def sign_in(request: Request) -> Response:
    """Check the double-submit token, authenticate the bearer token and open a session."""
    form = await read_form(request)
    cookie = request.cookies.get(SIGN_IN_COOKIE, "")
    field = form.get("sign_in_token")
    if not cookie or not hmac.compare_digest(cookie.encode(), field.encode()):
        return error_page(request, 403, "The sign-in form expired or did not come from this site. "
                          "Open the sign-in page again.", title="Form refused")
    token = form.get("token").strip()
    services = page_services(request)
    try:
        actor, token_id = await run_in_threadpool(services.users.identify, token, client=client_address(request))
        session_id, _ = await run_in_threadpool(session_store(request).create, actor, token_id)
    except RateLimitedError as exc:
        return _sign_in_page(request, status=429, message=exc.message)
    except UnauthenticatedError:
        return _sign_in_page(request, status=401, message="That token is not valid (or it was revoked). "
                             "Check it and try again.")
    old = request.cookies.get(SESSION_COOKIE)
    if old:
        await run_in_threadpool(session_store(request).end, old)
    response = see_other(request, safe_next(form.get("next")), flash=f"Signed in as {actor.name}.")
    response.set_cookie(SESSION_COOKIE, session_id, max_age=session_store(request).ttl_seconds, path=COOKIE_PATH,
                        httponly=True, samesite="lax", secure=is_https(request))
    response.delete_cookie(SIGN_IN_COOKIE, path="/ui/sign-in")
    return response


@auth_router.post("/ui/sign-out", response_model=None)
async def sign_out(request: Request, user: SignedIn, _form: PostedForm) -> Response:
    """End the session and forget the cookie."""
    await run_in_threadpool(session_store(request).end, user.session_id)
    response = see_other(request, "/ui/sign-in", flash="Signed out.")
    response.delete_cookie(SESSION_COOKIE, path=COOKIE_PATH)
    return response
