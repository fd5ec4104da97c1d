"""The Tokens page: a signed-in user lists, creates (secret shown once) and revokes their own API tokens."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from starlette.concurrency import run_in_threadpool

from calabi.api.pages.web import PageRoute, PageUser, PostedForm, SignedIn, page_services, render, see_other
from calabi.bootstrap import now_ms
from registry_store.errors import InvalidParameterError, NotFoundError
from registry_store.personal_tokens import DEFAULT_EXPIRY_DAYS, MAX_EXPIRY_DAYS

__all__ = ["tokens_router"]

tokens_router = APIRouter(route_class=PageRoute, include_in_schema=False)


async def _page(request: Request, user: PageUser, *, status: int = 200, created: str | None = None,
                error: str = "", name: str = "", days: str = str(DEFAULT_EXPIRY_DAYS)) -> Response:
    tokens = await run_in_threadpool(page_services(request).users.tokens.list_tokens, user.actor)
    return render(request, "tokens.html", user=user, status=status, tokens=tokens, created=created, error=error,
                  name=name, days=days, max_days=MAX_EXPIRY_DAYS, now_ms=now_ms(), nav="tokens")


@tokens_router.get("/ui/tokens", response_model=None)
async def tokens_page(request: Request, user: SignedIn) -> Response:
    """The user's tokens and the form to create one."""
    return await _page(request, user)


@tokens_router.post("/ui/tokens", response_model=None)
async def create_token(request: Request, user: SignedIn, form: PostedForm) -> Response:
    """Create a token and show its secret on this response only (never in a redirect, cookie or URL)."""
    name, days = form.get("name"), form.get("expires_in_days").strip()
    try:
        _token, secret = await run_in_threadpool(
            page_services(request).users.tokens.create_token, user.actor, name=name,
            expires_in_days=int(days) if days.isdigit() else days,
        )
    except InvalidParameterError as exc:
        return await _page(request, user, status=400, error=exc.message, name=name, days=days)
    return await _page(request, user, created=secret)


@tokens_router.post("/ui/tokens/{token_id}/revoke", response_model=None)
async def revoke_token(request: Request, token_id: int, user: SignedIn, _form: PostedForm) -> Response:
    """Revoke one of the user's tokens."""
    try:
        token = await run_in_threadpool(page_services(request).users.tokens.revoke_token, user.actor, token_id)
    except NotFoundError as exc:
        return await _page(request, user, status=404, error=exc.message)
    return see_other(request, "/ui/tokens", flash=f"Token '{token.name}' revoked.")
