"""Server-rendered web pages under ``/ui``: registry browsing, the seed's UI flows and the approvals desk.

``api/app.py`` mounts ``pages_static`` at ``/ui/static`` *before* including ``pages_router``,
whose last route is the catch-all 404 page for unknown ``/ui/...`` paths.
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.staticfiles import StaticFiles

from calabi.api.pages.auth import auth_router
from calabi.api.pages.evidence_pack import evidence_pack_router
from calabi.api.pages.experiments import experiments_router
from calabi.api.pages.models import models_router
from calabi.api.pages.oidc import oidc_router
from calabi.api.pages.promotions import promotions_router
from calabi.api.pages.register import register_router
from calabi.api.pages.templating import STATIC_DIR
from calabi.api.pages.tokens import tokens_router
from calabi.api.pages.versions import versions_router
from calabi.api.pages.web import PageRoute, error_page, signed_in
from calabi.api.pages.webhooks import webhooks_router

__all__ = ["pages_router", "pages_static"]

pages_static = StaticFiles(directory=STATIC_DIR)
pages_router = APIRouter(route_class=PageRoute, include_in_schema=False)
for _router in (auth_router, models_router, versions_router, register_router, promotions_router, evidence_pack_router,
                experiments_router, oidc_router, tokens_router, webhooks_router):
    pages_router.include_router(_router)


@pages_router.api_route("/ui/{rest:path}", methods=["GET", "POST"], response_model=None)
async def not_found(request: Request, rest: str) -> Response:
    """Any other page under /ui: the 404 page (signed-in users keep their navigation)."""
    try:
        await signed_in(request)
    except Exception:  # not signed in: the 404 page without navigation
        pass
    return error_page(request, 404, f"There is no page at /ui/{rest}.")
